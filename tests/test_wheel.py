"""Issue 20: the built wheel is the product. It is built from (a copy of) the checkout, installed
into a fresh virtualenv, and used there as a user would: `cnnexport list`, `python -m cnnexport`,
and a user's own `models.py` exported and verified through the console script, from a folder
whose `models.py` and `exporter.py` would shadow the old top-level names.

No mocks. The fresh virtualenv gets the project's dependencies without downloading them again:
a .pth file appends the dev virtualenv's site-packages to its sys.path. A .pth line only appends a
directory (its own .pth files do not run), so the dev virtualenv's editable install of cnnexport
(`__editable__*`) is not active there, which the tests check. Every command in the fresh
virtualenv runs with no PYTHON* variable from outside (no PYTHONPATH), its cwd outside the
checkout and a $TMPDIR of the test's own.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO

BUILD_TIMEOUT = 600   # the isolated build environment downloads setuptools
COMMAND_TIMEOUT = 300
# What the wheel is built from: the checkout without its environments, build outputs and artifacts.
# A build in the checkout itself would write build/ and *.egg-info into it, and a stale build/lib
# (say, of the old top-level packages) would end up in the wheel.
NOT_SOURCE = {".git", ".venv", "build", "dist", "artifacts", "runs", ".whl", ".pytest_cache"}
# Printed on import by the user's exporter.py (which then fails), and by the user's models.py.
USER_EXPORTER_MARK = "USER-EXPORTER-PY-IMPORTED"
USER_MODELS_MARK = "USER-MODELS-PY-IMPORTED"

USER_MODELS_PY = f'''\
"""A user's own models.py: a small CNN with BatchNorm, its statistics and affines random but seeded."""
import sys

import numpy as np
import paddle
from paddle import nn

sys.stderr.write("{USER_MODELS_MARK}\\n")


def build(num_classes=10):
    paddle.seed(7)
    model = nn.Sequential(
        nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
        nn.Conv2D(8, 16, 3, stride=2, padding=1), nn.BatchNorm2D(16), nn.ReLU(),
        nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(16, num_classes),
    )
    rng = np.random.default_rng(1234)
    for layer in model.sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            n = layer.weight.shape[0]
            layer._mean.set_value(rng.normal(0.0, 0.5, n).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 2.0, n).astype("float32"))
            layer.weight.set_value(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.bias.set_value(rng.normal(0.0, 0.2, n).astype("float32"))
    return model
'''

USER_EXPORTER_PY = f'''\
import sys

sys.stderr.write("{USER_EXPORTER_MARK}\\n")
raise ImportError("the user's exporter.py must not be imported")
'''

# Run by the fresh virtualenv's python from a neutral folder: where cnnexport and its dependencies
# come from, and whether anything of the checkout (other than the dependencies in its .venv) or of
# the editable install is loaded.
INSPECT = f'''\
import importlib.metadata, importlib.util, json, sys, sysconfig
import cnnexport, cnnexport.cli, cnnexport.models, paddle
repo = {str(REPO)!r}
dev_sites = {sorted(set(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))!r}
print(json.dumps({{
    "cnnexport": cnnexport.__file__,
    "cnnexport.models": cnnexport.models.__file__,
    "paddle": paddle.__file__,
    "purelib": sysconfig.get_paths()["purelib"],
    "sys.path": sys.path,
    "version": importlib.metadata.version("cnnexport"),
    "dist": str(importlib.metadata.distribution("cnnexport").locate_file("")),
    "top_level_models": importlib.util.find_spec("models") is not None,
    "top_level_exporter": importlib.util.find_spec("exporter") is not None,
    "editable": sorted([n for n in sys.modules if "editable" in n]
                       + [repr(f) for f in sys.meta_path if "editable" in repr(f).lower()]),
    "from_checkout": sorted(n for n, m in list(sys.modules.items())
                            if (f := getattr(m, "__file__", None) or "").startswith(repo + "/")
                            and not any(f.startswith(d + "/") for d in dev_sites)),
}}))
'''


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _run(cmd: list, *, cwd: Path, env: dict, timeout: int = COMMAND_TIMEOUT) -> subprocess.CompletedProcess:
    cmd = [str(c) for c in cmd]
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"`{' '.join(cmd)}` (cwd {cwd}) ran past {timeout}s\n--- stdout\n{_text(err.stdout)[-3000:]}"
                    f"\n--- stderr\n{_text(err.stderr)[-6000:]}")


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (f"`{' '.join(proc.args)}` exited {proc.returncode}\n--- stdout\n"
                                  f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def _clean_env(tmpdir: Path, venv: Path | None = None) -> dict:
    """os.environ without any PYTHON* variable (no PYTHONPATH, PYTHONHOME, PYTHONSAFEPATH, ...) or
    virtualenv of the caller's, with unbuffered output, no user site-packages and $TMPDIR = tmpdir."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "__PYVENV_LAUNCHER__")}
    env.update(PYTHONUNBUFFERED="1", PYTHONNOUSERSITE="1", TMPDIR=str(tmpdir))
    if venv is not None:
        env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return env


@dataclass
class Fresh:
    root: Path
    site: Path        # its site-packages (purelib)
    listing: list     # the top-level entries of site, after the install
    inspect: dict     # INSPECT's answer
    neutral: Path     # an empty folder outside the checkout, the cwd of commands that need none

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def script(self) -> Path:
        return self.root / "bin" / "cnnexport"

    def env(self, tmpdir: Path) -> dict:
        return _clean_env(tmpdir, self.root)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps . -w DIR` on a copy of the checkout's sources (build isolation on)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=lambda d, names: [
        n for n in names if (Path(d) == REPO and n in NOT_SOURCE) or n == "__pycache__" or n.endswith(".egg-info")])
    _ok(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", ".",
              "-w", root / "dist"], cwd=src, env=_clean_env(root / "tmp"), timeout=BUILD_TIMEOUT))
    wheels = sorted((root / "dist").glob("*.whl"))
    assert len(wheels) == 1 and wheels[0].name.startswith("cnnexport-"), wheels
    return wheels[0]


@pytest.fixture(scope="module")
def fresh(wheel, tmp_path_factory) -> Fresh:
    """A fresh virtualenv with the wheel installed (--no-deps, --no-index), then the dev
    virtualenv's site-packages appended to its sys.path through a .pth file."""
    root = tmp_path_factory.mktemp("fresh")
    venv, neutral = root / "venv", root / "elsewhere"
    neutral.mkdir()
    assert not root.is_relative_to(REPO), f"{root}: the test's folders must lie outside the checkout"
    env = _clean_env(root / "tmp", venv)
    _ok(_run([sys.executable, "-m", "venv", venv], cwd=neutral, env=env))
    python = venv / "bin" / "python"
    _ok(_run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", wheel],
             cwd=neutral, env=env))
    site = Path(_ok(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=neutral, env=env)).stdout.strip())
    assert site.is_dir() and site.is_relative_to(venv), site
    # Only after the install: with the dev site-packages visible, pip would take the editable
    # install's cnnexport-0.1.0.dist-info for the wheel's own and might not install it.
    dev_sites = list(dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib")))
    (site / "_cnnexport_test_dev_deps.pth").write_text("".join(f"{p}\n" for p in dev_sites))
    listing = sorted(os.listdir(site))
    print(f"\nfresh site-packages {site}:\n  " + "\n  ".join(listing))
    inspect = json.loads(_ok(_run([python, "-c", INSPECT], cwd=neutral, env=env)).stdout.strip().splitlines()[-1])
    return Fresh(venv, site, listing, inspect, neutral)


@pytest.fixture(scope="module")
def user_project(tmp_path_factory) -> Path:
    """A user's folder with its own models.py (`build`) and an exporter.py that must not be imported."""
    project = tmp_path_factory.mktemp("user_project")
    assert not project.is_relative_to(REPO), f"{project}: the user's folder must lie outside the checkout"
    (project / "models.py").write_text(USER_MODELS_PY)
    (project / "exporter.py").write_text(USER_EXPORTER_PY)
    return project


@pytest.fixture(scope="module")
def exported(fresh, user_project, tmp_path_factory):
    """`cnnexport models:build --img-size 32 --fuse --onnx --out OUT`, then `cnnexport verify OUT
    --no-bench`, through the fresh virtualenv's console script, from the user's folder."""
    out = tmp_path_factory.mktemp("artifacts") / "mynet-fused"
    tmpdir = tmp_path_factory.mktemp("export_tmp")
    env = fresh.env(tmpdir)
    export = _run([fresh.script, "models:build", "--img-size", "32", "--fuse", "--onnx", "--out", out],
                  cwd=user_project, env=env)
    verify = _run([fresh.script, "verify", out, "--no-bench"], cwd=user_project, env=env) \
        if export.returncode == 0 else None
    return out, export, verify, tmpdir


def test_the_wheel_holds_the_cnnexport_package_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    strays = [n for n in names if not n.startswith("cnnexport/") and not re.match(r"cnnexport-[^/]+\.dist-info/", n)]
    assert strays == []
    assert {"cnnexport/__init__.py", "cnnexport/__main__.py", "cnnexport/cli.py",
            "cnnexport/models/__init__.py"} <= set(names)
    # every module of both folders, under the one import name
    expected = {f"cnnexport/{p.name}" for p in (REPO / "exporter").glob("*.py")} \
        | {f"cnnexport/models/{p.name}" for p in (REPO / "models").glob("*.py")}
    assert sorted(expected - set(names)) == []
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["cnnexport"]
    assert re.search(rf"^cnnexport\s*=\s*{re.escape(target)}\s*$",
                     zipfile.ZipFile(wheel).read(entry_points).decode(), re.M)


def test_the_fresh_site_packages_has_cnnexport_and_no_top_level_models_or_exporter(fresh):
    assert "cnnexport" in fresh.listing
    assert any(re.fullmatch(r"cnnexport-[^/]+\.dist-info", n) for n in fresh.listing), fresh.listing
    assert [n for n in fresh.listing if n in {"models", "exporter", "models.py", "exporter.py", "tests"}] == []
    assert [n for n in fresh.listing if n.startswith("__editable__")] == []
    assert not fresh.inspect["top_level_models"] and not fresh.inspect["top_level_exporter"]


def test_cnnexport_is_imported_from_the_fresh_venv_not_the_checkout(fresh):
    found = fresh.inspect
    assert Path(found["purelib"]) == fresh.site
    for name in ("cnnexport", "cnnexport.models"):
        assert Path(found[name]).is_relative_to(fresh.site), (name, found[name])
        assert not Path(found[name]).is_relative_to(REPO), (name, found[name])
    assert Path(found["dist"]) == fresh.site and found["version"] == "0.1.0"
    assert found["editable"] == []        # the dev virtualenv's editable finder is not installed
    assert found["from_checkout"] == []   # no module comes from the checkout (the dev venv in it aside)
    assert str(REPO) not in found["sys.path"] and "" in found["sys.path"][:1]  # -c: cwd (neutral) first
    # the dependencies come from the dev virtualenv, through the .pth file
    assert Path(found["paddle"]).is_relative_to(Path(sysconfig.get_paths()["purelib"]))


def test_the_console_script_and_python_m_cnnexport_list_the_zoo(fresh, user_project, tmp_path):
    assert fresh.script.read_text().splitlines()[0] == f"#!{fresh.python}"
    script = _ok(_run([fresh.script, "list"], cwd=fresh.neutral, env=fresh.env(tmp_path / "tmp1")))
    assert "vanillanet_5" in script.stdout
    # `python -m` puts the cwd first on sys.path: the user's models.py and exporter.py stay unimported
    module = _ok(_run([fresh.python, "-m", "cnnexport", "list"], cwd=user_project, env=fresh.env(tmp_path / "tmp2")))
    assert "vanillanet_5" in module.stdout
    assert module.stdout == script.stdout
    assert USER_MODELS_MARK not in module.stderr and USER_EXPORTER_MARK not in module.stderr


def test_a_users_models_py_exports_and_verifies_through_the_console_script(exported):
    out, export, verify, tmpdir = exported
    _ok(export)
    assert USER_MODELS_MARK in export.stderr          # the user's models.py was the one imported
    assert USER_EXPORTER_MARK not in export.stderr
    _ok(verify)
    assert USER_EXPORTER_MARK not in verify.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["name"] == "models:build" and manifest["model"]["source"] == "callable"
    assert manifest["model"]["fused"] is True
    assert manifest["rewrite"]["folded"] and manifest["rewrite"]["kept"] == []  # both BatchNorms folded
    assert manifest["versions"].get("cnnexport", "0.1.0") == "0.1.0"
    assert {"inference.json", "inference.onnx"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / "verify.json").read_text())
    assert report["passed"], [r for r in report["rows"] if not r["passed"]]
    assert list(tmpdir.iterdir()) == []                # nothing left in $TMPDIR


def test_python_m_cnnexport_verify_help_works_in_the_users_folder(fresh, user_project, tmp_path):
    proc = _ok(_run([fresh.python, "-m", "cnnexport", "verify", "--help"], cwd=user_project,
                    env=fresh.env(tmp_path / "tmp")))
    assert "--no-bench" in proc.stdout and "--rtol" in proc.stdout
    assert USER_MODELS_MARK not in proc.stderr and USER_EXPORTER_MARK not in proc.stderr
