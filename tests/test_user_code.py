"""Issue 24: a user's own code (a module:callable model, a Layer object, an imported directory's
config) and the machine (a full disk) end an export or a verify in one line, never in silence, a
traceback or a document mixed with prints; nothing is left behind.

The CLI runs as a user runs it, in a subprocess: a model that calls os._exit would end pytest itself.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cnnexport
from tests.helpers import subprocess_env

NET = """
import os
import sys

from paddle import nn

EXIT = os.environ.get("EXIT_IN", "")  # where this model's code ends the process: "import", "init" or "forward"
HOW = os.environ.get("EXIT_HOW", "sys.exit")
print("hello from the module")        # a module that prints: --json must stay one document


def _exit(where):
    if EXIT == where:
        sys.exit(3) if HOW == "sys.exit" else os._exit(0)


_exit("import")


class Net(nn.Layer):
    def __init__(self):
        super().__init__()
        _exit("init")
        self.conv, self.fc = nn.Conv2D(3, 8, 3), nn.Linear(8, 10)

    def forward(self, x):
        _exit("forward")
        print("hello from forward")
        return self.fc(self.conv(x).mean(axis=[2, 3]))


def build():
    return Net()
"""


def _cnnexport(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnexport", *argv], cwd=tmp_path, capture_output=True, text=True,
                          env={**subprocess_env(tmp_path / "tmp"), **env}, timeout=600)


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "usernet.py").write_text(NET)
    (tmp_path / "tmp").mkdir()  # the subprocesses' $TMPDIR
    return tmp_path


def _left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("where, how, said", [
    ("import", "os._exit", "ended the process (exit status 0)"),
    ("init", "sys.exit", "called sys.exit(3)"),
    ("forward", "os._exit", "ended the process (exit status 0)"),
    ("forward", "sys.exit", "called sys.exit(3)"),
])
def test_a_model_whose_code_exits_is_one_line_exit_2_and_nothing_written(user_dir, where, how, said):
    before = _left(user_dir)
    done = _cnnexport(user_dir, "usernet:build", "--img-size", "16", "--out", "art", EXIT_IN=where, EXIT_HOW=how)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"cnnexport: error: usernet:build: the model's code {said}")
    assert "Traceback" not in done.stdout + done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr  # the child's own output stays out of ours
    assert _left(user_dir) == before and not list((user_dir / "tmp").iterdir())


def test_json_stays_one_document_when_the_model_prints(user_dir):
    done = _cnnexport(user_dir, "usernet:build", "--img-size", "16", "--out", "art", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["model"]["name"] == "usernet:build"
    assert "hello from the module" in done.stderr and "hello from forward" in done.stderr
    checked = _cnnexport(user_dir, "verify", "art", "--no-bench", "--no-reference-evaluator", "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)[0]["passed"] is True
    assert "hello from the module" in checked.stderr


def test_a_layer_object_calling_sys_exit_in_forward_is_bad_input_not_the_end_of_the_caller(tmp_path):
    from paddle import nn

    class Quitter(nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            sys.exit(0)

    with pytest.raises(cnnexport.BadInput, match=r"Quitter: the model's code called sys.exit\(0\)"):
        cnnexport.export(Quitter(), img_size=8, out=tmp_path / "art")
    assert not (tmp_path / "art").exists() and _left(tmp_path) == []


def _saved_classifier(directory: Path, config: str) -> Path:
    """A small Paddle inference directory (paddle.jit.save) with the given inference.yml."""
    import paddle
    from paddle import nn

    paddle.seed(0)
    net = nn.Sequential(nn.Conv2D(3, 4, 3), nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(4, 10))
    net.eval()
    paddle.jit.save(net, str(directory / "inference"), input_spec=[paddle.static.InputSpec([None, 3, 16, 16], "float32")])
    (directory / "inference.yml").write_text(config)
    return directory


YML = """PreProcess:
  transform_ops:
  - ResizeImage: {{size: 16}}
  - NormalizeImage: {{scale: 0.00392156862745098, mean: [0.485, 0.456, 0.406], std: {std}}}
  - ToCHWImage: null
PostProcess:
  Topk: {{topk: 5, label_list: {labels}}}
"""


@pytest.mark.parametrize("std, labels, said", [
    ("[0.229, 0.224, 0.225]", "[cat, dog, bird]", "names 3 classes (PostProcess.Topk.label_list), the program outputs 10"),
    ("[1.0e-300, 0.224, 0.225]", [f"c{i}" for i in range(10)], "inference.yml NormalizeImage: mean"),
])
def test_an_imported_config_that_does_not_fit_its_program_is_refused(tmp_path, std, labels, said):
    source = tmp_path / "saved"
    source.mkdir()
    (tmp_path / "tmp").mkdir()
    _saved_classifier(source, YML.format(std=std, labels=labels if isinstance(labels, str) else json.dumps(labels)))
    before = _left(tmp_path)
    done = _cnnexport(tmp_path, str(source), "--out", "art")
    assert done.returncode == 2, done.stderr
    assert said in done.stderr.splitlines()[-1] and "Traceback" not in done.stderr
    assert _left(tmp_path) == before and not list((tmp_path / "tmp").iterdir())


def _mount_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _mount_available(), reason="needs a private mount namespace (unshare -m) to fill a disk")
def test_a_full_disk_is_one_line_exit_1_and_leaves_only_what_was_there(tmp_path):
    """The export fills a 256 kB file system of its own (a private tmpfs mounted over the --out parent):
    one line naming the target and the cause; the user's file there is untouched; no staging left."""
    full = tmp_path / "full"
    full.mkdir()
    script = (f"mount -t tmpfs -o size=256k tmpfs {full} && echo mine > {full}/notes.txt && "
              f"{sys.executable} -m cnnexport alexnet_bn --img-size 64 --out {full}/art; code=$?; "
              f"ls -A {full}; cat {full}/notes.txt; exit $code")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=tmp_path,
                          capture_output=True, text=True, env=subprocess_env(tmp_path / "tmp"), timeout=600)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("cnnexport:")]
    assert errors == [f"cnnexport: failed: writing {full}/art failed (No space left on device): free space there "
                      "or choose another --out"], done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.split()[-2:] == ["notes.txt", "mine"]  # `ls -A` listed only the user's file
    assert not list((tmp_path / "tmp").iterdir())
