"""Crafted hostile files (tests/crafted.py) against every reader: `--weights`, `train --resume`, `train --data`.

Each must end in exit 2 with one line on stderr and no traceback, run nothing (the marker file is
never made) and write nothing. The cases that would corrupt memory also run in a child process,
where a crash shows as a negative return code. Real files of each kind still load.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

import crafted
from cnnexport import models
from cifar_data import members_of, random_cifar, tarball_with_members
from cnnexport import train
from cnnexport.cifar import read_cifar_tarball
from tests.helpers import run_cli
from cnnexport.models.weights import state_dict_arrays

REPO = Path(__file__).resolve().parents[1]
EXPORT = ["alexnet_bn", "--img-size", "64"]
# What each case is refused for: a fragment of its one line.
REASONS = {
    "object-array-ndarray-call": r"calls numpy\.ndarray directly",
    "object-array-reconstruct": r"dtype 'O8' \(Python objects\)",
    "object-array-frombuffer": r"dtype 'O8' \(Python objects\)",
    "object-scalar": r"dtype 'O8' \(Python objects\)",
    "record-with-object-field": r"dtype 'V8' \(structured records\)",
    "float-dtype-given-fields": r"gives a dtype fields, a subarray or metadata",
    "unicode-array": r"dtype 'U3' \(unicode strings\)",
    "bytes-array": r"dtype 'S3' \(byte strings\)",
    "complex-array": r"dtype 'c8' \(complex numbers\)",
    "absurd-shape": r"float32 array an absurd shape: more than 1,099,511,627,776 bytes",
    "huge-integer-shape": r"float32 array an absurd shape: more than 1,099,511,627,776 bytes",
    "byte-count-mismatch": r"31 bytes of data, not 32",
    "ordered-dict-setstate": r"sets attributes on an OrderedDict",
    "dict-setstate": r"not a readable pickle \('dict' object has no attribute '__dict__'\)",
    "reconstruct-wrong-arguments": r"calls numpy _reconstruct with arguments numpy's pickles never use",
    "ndarray-class-as-value": r"bare global numpy\.ndarray",
    "self-containing-list": r"a container that contains itself",
    "deep-nesting": r"nests containers more than 32 deep",
    "os-system": r"refusing to unpickle (posix|os|nt)\.system",
    "builtins-eval": r"refusing to unpickle builtins\.eval",
    "truncated": r"not a readable pickle \(pickle data was truncated\)",
    "not-a-dict": r"holds a list|is not a dict",
}
RUN_ARGUMENTS = {"model": "alexnet_bn", "epochs": 2, "batch_size": 8, "lr": 0.01, "img_size": 64, "num_classes": 10,
                 "seed": 42, "seed_compat": False}


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    """A real state dict of the model the crafted weights target."""
    return dict(state_dict_arrays(models.create("alexnet_bn", img_size=64)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return random_cifar(tmp_path_factory.mktemp("data") / "tiny.tar.gz", n_train=16, n_test=8)


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    """An empty working directory: a default artifacts/ or runs/ would appear here."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _files(root: Path) -> dict:
    """Every path under root, with its file's mtime (a directory's changes with the writability probes)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.stat().st_mtime_ns for p in root.rglob("*")}


def _refused(capsys, tmp_path: Path, *argv: str) -> str:
    """Run the CLI; check exit 2, one line, no traceback, no marker, and nothing under tmp_path written."""
    before = _files(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "marker").exists()
    assert _files(tmp_path) == before
    return err


def _checkpoint(weights: dict) -> dict:
    """What `_Trainer.checkpoint` writes for alexnet_bn (SGD: no accumulators) after one epoch."""
    return {"epochs_done": 1, "best_val_acc": 0.5, "best_epoch": 1, "model": weights,
            "optimizer": {"LR_Scheduler": {"last_epoch": 1, "last_lr": 0.01}}}


def _run_dir(tmp_path: Path, checkpoint: bytes) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / train.CONFIG).write_text(json.dumps({"arguments": RUN_ARGUMENTS}))
    (run_dir / train.CHECKPOINT).write_bytes(checkpoint)
    return run_dir


# ----------------------------------------------------------------------------- crafted files

@pytest.mark.parametrize("case", crafted.ALL_CASES)
def test_crafted_weights_are_refused(case, tmp_path, cwd, capsys, weights):
    path = tmp_path / "crafted.pdparams"
    path.write_bytes(crafted.crafted_file(case, weights, next(iter(weights)), tmp_path / "marker"))
    err = _refused(capsys, tmp_path, *EXPORT, "--weights", str(path))
    assert re.search(REASONS[case], err) and str(path) in err


@pytest.mark.parametrize("case", crafted.ALL_CASES)
def test_crafted_checkpoints_are_refused(case, tmp_path, cwd, capsys, weights, tiny):
    checkpoint = _checkpoint(weights)
    run_dir = _run_dir(tmp_path, crafted.crafted_file(case, checkpoint, ("model", next(iter(weights))),
                                                      tmp_path / "marker"))
    err = _refused(capsys, tmp_path, "train", "alexnet_bn", "--data", str(tiny), "--resume", str(run_dir),
                   "--device", "cpu")
    assert re.search(REASONS[case], err) and train.CHECKPOINT in err


CIFAR_CASES = [(case, key) for case in crafted.VALUE_CASES for key in (b"data", b"labels")] + \
              [(case, None) for case in crafted.FILE_CASES]


@pytest.mark.parametrize("case, key", CIFAR_CASES, ids=[f"{c}-{k.decode() if k else 'member'}" for c, k in CIFAR_CASES])
def test_crafted_cifar_batches_are_refused(case, key, tmp_path, cwd, capsys, tiny):
    batch = {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 2]}
    members = members_of(tiny)
    members["data_batch_1"] = crafted.crafted_file(case, batch, key, tmp_path / "marker")
    data = tarball_with_members(tmp_path / "crafted.tar.gz", members)
    err = _refused(capsys, tmp_path, "train", "alexnet_bn", "--data", str(data), "--img-size", "64",
                   "--epochs", "1", "--batch-size", "8", "--device", "cpu")
    assert re.search(REASONS[case], err) and "data_batch_1" in err


@pytest.mark.parametrize("case", crafted.MEMORY_CASES)
def test_memory_corrupting_weights_leave_a_real_process_standing(case, tmp_path, cwd, weights):
    """In a child process a segfault is a negative return code, not a lost test worker."""
    path = tmp_path / "crafted.pdparams"
    path.write_bytes(crafted.crafted_file(case, weights, next(iter(weights)), tmp_path / "marker"))
    result = subprocess.run([sys.executable, "-W", "ignore::UserWarning", "-m", "cnnexport", *EXPORT,
                             "--weights", str(path)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and re.search(REASONS[case], result.stderr), result.stderr
    assert not any(cwd.iterdir())


_NAIVE_LOAD = "import pickle, sys; print(repr(pickle.load(open(sys.argv[1], 'rb'))['w']))"


def _no_core_dump():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.mark.parametrize("case", [*crafted.MEMORY_CASES, "os-system", "builtins-eval"])
def test_the_crafted_files_are_real_attacks(case, tmp_path):
    """What plain pickle.load does with them: the process dies, or the command runs."""
    marker, path = tmp_path / "marker", tmp_path / "crafted.pkl"
    path.write_bytes(crafted.crafted_file(case, {"w": 0}, "w", marker))
    result = subprocess.run([sys.executable, "-c", _NAIVE_LOAD, str(path)], capture_output=True, timeout=60,
                            preexec_fn=_no_core_dump)
    if case in crafted.MEMORY_CASES:
        assert result.returncode < 0, result
    else:
        assert marker.exists()


# ----------------------------------------------------------------------------- malformed checkpoints

MISSING = object()


@pytest.mark.parametrize("field, value, reason", [
    ("epochs_done", -1, "epochs_done is -1, not a count of epochs"),
    ("epochs_done", "1", "epochs_done is '1'"),
    pytest.param("epochs_done", -10**5000, "epochs_done is a 16610-bit integer", id="epochs_done-huge"),
    ("best_val_acc", float("nan"), "best_val_acc is nan, not an accuracy"),
    ("best_epoch", 0, "best_epoch is 0, not an epoch number"),
    ("model", [1, 2], "model is not a dict of parameter names to arrays"),
    ("model", {"w": 1.0}, "model is not a dict of parameter names to arrays"),
    ("optimizer", None, "optimizer is not a dict"),
    ("optimizer", {"LR_Scheduler": {"last_epoch": "x"}}, "LR_Scheduler is not a dict of numbers"),
    ("best_epoch", MISSING, "best_epoch missing"),
])
def test_malformed_checkpoints_are_refused(field, value, reason, tmp_path, cwd, capsys, weights, tiny):
    checkpoint = _checkpoint(weights)
    if value is MISSING:
        del checkpoint[field]
    else:
        checkpoint[field] = value
    run_dir = _run_dir(tmp_path, pickle.dumps(checkpoint, protocol=4))
    err = _refused(capsys, tmp_path, "train", "alexnet_bn", "--data", str(tiny), "--resume", str(run_dir),
                   "--device", "cpu")
    assert "is not a cnnexport training checkpoint" in err and reason in err


def test_checkpoint_weights_of_the_wrong_shape_are_refused(tmp_path, cwd, capsys, weights, tiny):
    checkpoint = _checkpoint(weights)
    key = next(iter(weights))
    checkpoint["model"] = {**weights, key: np.zeros((2, 2), np.float32)}
    run_dir = _run_dir(tmp_path, pickle.dumps(checkpoint, protocol=4))
    err = _refused(capsys, tmp_path, "train", "alexnet_bn", "--data", str(tiny), "--resume", str(run_dir),
                   "--device", "cpu")
    assert f"the checkpoint does not fit this model; shape mismatches (file vs model): {key} (2, 2)" in err


@pytest.fixture(scope="module")
def adam_run(tmp_path_factory, tiny) -> Path:
    """A real one-epoch run of an Adam recipe, its config.json raised to two epochs so it can be resumed."""
    run_dir = train.run_training("alexnet", str(tiny), out=str(tmp_path_factory.mktemp("adam") / "run"), epochs=1,
                                 batch_size=8, img_size=64, device="cpu", progress="off")
    config = json.loads((run_dir / train.CONFIG).read_text())
    config["arguments"]["epochs"] = 2
    (run_dir / train.CONFIG).write_text(json.dumps(config))
    return run_dir


def test_a_real_checkpoint_resumes(adam_run, tmp_path, cwd, capsys, tiny):
    run_dir = shutil.copytree(adam_run, tmp_path / "run")
    code, _, err = run_cli(capsys, "train", "alexnet", "--data", str(tiny), "--resume", str(run_dir),
                           "--device", "cpu")
    assert code == 0, err
    history = json.loads((run_dir / train.METRICS).read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_optimizer_state_of_the_wrong_shape_is_refused_before_training(adam_run, tmp_path, cwd, capsys, tiny):
    """Paddle would take Adam's moments from the checkpoint only at the first step, mid-run."""
    run_dir = shutil.copytree(adam_run, tmp_path / "run")
    state = train.read_checkpoint(run_dir / train.CHECKPOINT)
    moment = next(k for k in state["optimizer"] if "moment1" in k)
    state["optimizer"][moment] = np.zeros((1, 2), np.float32)
    (run_dir / train.CHECKPOINT).write_bytes(pickle.dumps(state, protocol=4))
    err = _refused(capsys, tmp_path, "train", "alexnet", "--data", str(tiny), "--resume", str(run_dir),
                   "--device", "cpu")
    assert "the checkpoint's optimizer state does not fit Adam" in err and moment in err


# ----------------------------------------------------------------------------- safetensors and type safety

def _safetensors(path: Path, weights: dict, key: str, value: np.ndarray) -> Path:
    from safetensors.numpy import save_file
    save_file({**weights, key: value}, str(path))
    return path


@pytest.mark.parametrize("value, reason", [
    (lambda w: w.astype(np.complex64), r"holds a complex64 array, not a bool, integer or float array"),
    (lambda w: w.astype(np.int64), r"dtype mismatches \(file vs model\): features\.0\.weight int64 vs float32"),
    (lambda w: np.full_like(w, np.nan), r"features\.0\.weight holds NaN or infinite values"),
    (lambda w: np.full_like(w, np.inf), r"features\.0\.weight holds NaN or infinite values"),
], ids=["complex", "integer-for-float", "nan", "inf"])
def test_safetensors_of_the_wrong_kind_are_refused(value, reason, tmp_path, cwd, capsys, weights):
    key = next(iter(weights))
    assert key == "features.0.weight"
    path = _safetensors(tmp_path / "w.safetensors", weights, key, value(weights[key]))
    err = _refused(capsys, tmp_path, *EXPORT, "--weights", str(path))
    assert re.search(reason, err) and str(path) in err


def test_a_key_with_a_line_break_stays_on_one_line(tmp_path, cwd, capsys, weights):
    path = tmp_path / "w.pdparams"
    path.write_bytes(pickle.dumps({**weights, "extra\ncnnexport: fake line": np.zeros(1, np.float32)}))
    err = _refused(capsys, tmp_path, *EXPORT, "--weights", str(path))
    assert "unexpected keys: extra cnnexport: fake line" in err


def test_safetensors_with_a_string_dtype_are_refused(tmp_path, cwd, capsys):
    path = tmp_path / "w.safetensors"
    path.write_bytes(crafted.safetensors_file({"features.0.weight": ("U4", [2], b"0.5\0" * 2)}))
    err = _refused(capsys, tmp_path, *EXPORT, "--weights", str(path))
    assert "is not a readable .safetensors file" in err and "unknown variant `U4`" in err


# ----------------------------------------------------------------------------- real files still load

def test_a_real_paddle_save_state_dict_loads_and_float64_casts_to_float32(tmp_path, weights):
    source = models.create("alexnet_bn", img_size=64)
    paddle.save(source.state_dict(), str(tmp_path / "w.pdparams"))
    target = models.create("alexnet_bn", img_size=64)
    models.load_weights(target, tmp_path / "w.pdparams")
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key].numpy(), value.numpy())

    (tmp_path / "w64.pdparams").write_bytes(pickle.dumps({k: v.astype(np.float64) for k, v in weights.items()}))
    models.load_weights(target, tmp_path / "w64.pdparams")
    np.testing.assert_array_equal(target.state_dict()["features.0.weight"].numpy(), weights["features.0.weight"])


def test_a_cifar_tarball_as_numpy_1_wrote_it_reads(tmp_path, tiny):
    """The real archive's members name numpy.core (numpy 1.x); ours name numpy._core (numpy 2)."""
    members = {name: blob.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
               for name, blob in members_of(tiny).items()}
    assert all(b"cnumpy.core.multiarray\n" in blob for name, blob in members.items() if name != "batches.meta")
    old = read_cifar_tarball(tarball_with_members(tmp_path / "old.tar.gz", members))
    new = read_cifar_tarball(tiny)
    assert np.array_equal(old.train_images, new.train_images) and np.array_equal(old.test_labels, new.test_labels)
    assert old.label_names == new.label_names
