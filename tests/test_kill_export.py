"""Issue 10: an export killed at any instant over an existing artifact leaves the old artifact or the
new one, never a half-written one; the next run sweeps what the dead one left; concurrent exports
to one --out take turns; SIGTERM unwinds cleanly; children die with their parent."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnexport.artifact import Manifest, integrity_problems
from tests.helpers import REPO, hidden_entries, run_cli, subprocess_env

OLD = ["alexnet_bn", "--img-size", "64", "--onnx"]            # the artifact already there
NEW = ["alexnet_bn", "--img-size", "64", "--onnx", "--fuse"]  # what the killed export was writing


@pytest.fixture(scope="module")
def old_artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("old") / "alexnet_bn"
    from cnnexport.cli import main
    assert main([*OLD, "--out", str(out)]) == 0
    return out


@pytest.fixture
def target(old_artifact, tmp_path) -> Path:
    copy = tmp_path / "arts" / "alexnet_bn"
    shutil.copytree(old_artifact, copy)
    return copy


def _is_finished(path: Path, fused: bool) -> bool:
    manifest = Manifest.load(path)
    return manifest.model["fused"] is fused and integrity_problems(path, manifest) == {}


# (where the process dies, which call, extra flags for the driver)
KILL_POINTS = [
    ("cnnexport.exporting:save_paddle", 1, ()),
    ("cnnexport.exporting:add_legacy_program:after", 1, ()),       # the legacy program written into staging
    ("cnnexport.exporting:_in_child:after", 1, ()),                # the ONNX file converted
    ("cnnexport.exporting:smoke_parity", 1, ()),
    ("cnnexport.artifact:write_json", 1, ()),                   # the manifest, in staging
    ("cnnexport.artifact:write_json:after", 1, ()),             # staging complete, not yet swapped
    ("cnnexport.artifact:check_replaceable:after", 1, ()),      # locked, nothing staged yet
    ("cnnexport.artifact:_exchange", 1, ()),
    ("cnnexport.artifact:_exchange:after", 1, ()),              # swapped: the old one waits in staging
    ("cnnexport.artifact:shutil.rmtree", 1, ()),                # removing the old one
    ("cnnexport.artifact:os.rename:after", 1, ("--no-exchange",)),  # fallback: old moved aside, no target
    ("cnnexport.artifact:os.rename:after", 2, ("--no-exchange",)),  # fallback: new in place, old aside
]


@pytest.mark.parametrize("point, nth, flags", KILL_POINTS,
                         ids=[f"{p.split(':', 1)[1]}#{n}{'-fallback' if f else ''}" for p, n, f in KILL_POINTS])
def test_sigkill_during_export_leaves_old_or_new_and_the_next_run_recovers(target, tmp_path, capsys, point, nth, flags):
    tmpdir = tmp_path / "tmpdir"
    proc = subprocess.run([sys.executable, "-m", "tests.kill_at", point, str(nth), *flags, "--", *NEW,
                           "--out", str(target)], cwd=REPO, env=subprocess_env(tmpdir), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert list(tmpdir.iterdir()) == []  # no child logs or other temporary files outside the artifact

    moved_aside = [p for p in target.parent.iterdir() if p.name.startswith(".cnnexport-replaced-")]
    if target.exists():
        assert _is_finished(target, fused=False) or _is_finished(target, fused=True)
    else:  # only the documented window of the two-rename fallback: the old artifact waits beside it
        assert "--no-exchange" in flags and len(moved_aside) == 1 and _is_finished(moved_aside[0], fused=False)

    code, _, err = run_cli(capsys, *NEW, "--out", str(target))
    assert code == 0, err
    assert _is_finished(target, fused=True)
    assert hidden_entries(target.parent) == [] and sorted(p.name for p in target.parent.iterdir()) == ["alexnet_bn"]


def test_fallback_swap_without_a_kill_replaces_and_leaves_nothing(target, tmp_path, capsys, monkeypatch):
    from cnnexport import artifact
    monkeypatch.setattr(artifact, "_exchange", lambda a, b: False)
    code, _, err = run_cli(capsys, *NEW, "--out", str(target))
    assert code == 0, err
    assert _is_finished(target, fused=True) and hidden_entries(target.parent) == []


def _wait_for_line(proc: subprocess.Popen, needle: str) -> None:
    for line in proc.stdout:
        if needle in line:
            return
    raise AssertionError(f"the export ended before printing {needle!r}")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _start_export(target: Path, tmpdir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnexport", *NEW, "--out", str(target)], cwd=REPO,
                            env=subprocess_env(tmpdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _child_of(proc: subprocess.Popen, within: float = 30.0) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if children := _children(proc.pid):
            return children[0]
        time.sleep(0.02)
    raise AssertionError("the export started no child process")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_export_takes_its_child_with_it(target, tmp_path, capsys, how):
    """Killed while paddle2onnx converts in a child: the child dies too, no log is left in $TMPDIR;
    SIGTERM (what `timeout` and CI send) is one line, exit 143, and nothing left at all."""
    tmpdir = tmp_path / "tmpdir"
    proc = _start_export(target, tmpdir)
    _wait_for_line(proc, "paddle-save")  # the next step converts in a child process
    child = _child_of(proc)
    proc.send_signal(how)
    out, err = proc.communicate(timeout=60)
    assert _gone(child), "the child outlived its parent"
    assert list(tmpdir.iterdir()) == []
    assert _is_finished(target, fused=False)  # the old artifact, untouched
    if how == signal.SIGTERM:
        assert proc.returncode == 143
        assert err == "cnnexport: terminated\n"
        assert "FatalError" not in out + err and "Traceback" not in err
        assert hidden_entries(target.parent) == []
    else:
        assert proc.returncode == -signal.SIGKILL
    code, _, stderr = run_cli(capsys, *NEW, "--out", str(target))
    assert code == 0, stderr
    assert hidden_entries(target.parent) == []


def test_two_exports_to_one_out_take_turns(target, tmp_path):
    tmpdir = tmp_path / "tmpdir"
    procs = [subprocess.Popen([sys.executable, "-m", "cnnexport", *args, "--out", str(target), "--json"], cwd=REPO,
                              env=subprocess_env(tmpdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in (NEW, OLD)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    manifest = Manifest.load(target)
    assert integrity_problems(target, manifest) == {}
    assert manifest.to_dict() in [json.loads(out) for out, _ in results]  # whole: one export's files, never a mix
    assert hidden_entries(target.parent) == [] and list(tmpdir.iterdir()) == []
