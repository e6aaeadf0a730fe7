"""`cnnexport train`: the CIFAR reader and writer, the recipes' schedules, and short real training runs."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import time

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import yaml

from cnnexport import models
from cnnexport import cifar, train
from cnnexport.cifar import FOLDER, read_cifar_tarball, write_cifar_tarball
from cnnexport.cli import main
from cnnexport.errors import BadInput
from cnnexport.rewrite import fuse
from cnnexport.models import registry
from cnnexport.models.dynamic_conv import RoutingAttention
from cnnexport.models.training import CosinePerIteration, MultiStepPerEpoch
from cnnexport.models.weights import read_state_dict

from cifar_data import (batch_bytes, digits_cifar, malicious_batch, members_of, random_cifar, tarball_declaring,
                        tarball_with_members)
from helpers import run_cli

RUN_FILES = {"best_model.pdparams", "final_model.pdparams", train.CHECKPOINT, "metrics.json", "config.json",
             "loss.png", "accuracy.png"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """16 training and 8 test images in the CIFAR-10 python format."""
    return random_cifar(tmp_path_factory.mktemp("data") / "tiny.tar.gz", n_train=16, n_test=8)


def _train(name, data, out, **kw):
    kw.setdefault("batch_size", 8)
    return train.run_training(name, str(data), out=str(out), device="cpu", progress="off", **kw)


def _metrics(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# ----------------------------------------------------------------------------- loss

def test_label_smoothing_loss_is_the_notebook_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (32, 10))
    labels = rng.integers(0, 10, 32)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    nll = -log_probs[np.arange(32), labels]
    notebook = (0.9 * nll + 0.1 * (-log_probs).mean(axis=1)).mean()

    ours = train.label_smoothing_cross_entropy(paddle.to_tensor(logits, "float32"), paddle.to_tensor(labels))
    plain = F.cross_entropy(paddle.to_tensor(logits, "float32"), paddle.to_tensor(labels))
    assert ours.item() == pytest.approx(notebook, rel=1e-5)
    assert plain.item() != pytest.approx(notebook, rel=1e-3)  # the smoothing term does matter here


# ----------------------------------------------------------------------------- the CIFAR format

def test_written_tarball_reads_back_and_paddle_reads_it_too(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(12) % 3
    path = write_cifar_tarball(tmp_path / "c.tar.gz", images, labels, images[:4], labels[:4], ["a", "b", "c"])
    assert sorted(members_of(path)) == ["batches.meta", *[f"data_batch_{i}" for i in range(1, 6)], "test_batch"]

    data = read_cifar_tarball(path)
    assert np.array_equal(data.train_images, images) and np.array_equal(data.train_labels, labels)
    assert np.array_equal(data.test_images, images[:4]) and data.label_names == ("a", "b", "c")
    paddle_set = paddle.vision.datasets.Cifar10(data_file=str(path), mode="train", backend="pil", download=False)
    image, label = paddle_set[5]
    assert np.array_equal(np.asarray(image), images[5]) and int(label) == labels[5]


def _replaced(tiny, member, blob=None):
    members = members_of(tiny)
    if blob is None:
        del members[member]
    else:
        members[member] = blob
    return members


def test_non_tar_file_is_refused(tmp_path):
    path = tmp_path / "notes.tar.gz"
    path.write_text("not an archive")
    with pytest.raises(BadInput, match="is not a tar archive: expected .*cifar-10-python.tar.gz") as caught:
        read_cifar_tarball(path)
    assert "\n" not in str(caught.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        read_cifar_tarball(tmp_path / "absent.tar.gz")


def test_tarball_without_test_batch_is_refused(tmp_path, tiny):
    path = tarball_with_members(tmp_path / "t.tar.gz", _replaced(tiny, "test_batch"))
    with pytest.raises(BadInput, match=f"has no member {FOLDER}/test_batch: expected data_batch_1"):
        read_cifar_tarball(path)


def test_pickle_calling_os_system_is_refused_without_running(tmp_path, tiny):
    marker = tmp_path / "ran"
    crafted = _replaced(tiny, "data_batch_3", malicious_batch(f"touch {marker}"))
    path = tarball_with_members(tmp_path / "t.tar.gz", crafted)
    with pytest.raises(BadInput, match=r"data_batch_3: refusing to unpickle (posix|os|nt)\.system") as caught:
        read_cifar_tarball(path)
    assert "\n" not in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize("blob, message", [
    (batch_bytes(np.zeros((3, 1024), np.uint8), [0, 1, 2]), r"must be uint8 \[N, 3072\].*got uint8 \[3, 1024\]"),
    (batch_bytes(np.zeros((3, 3072), np.float32), [0, 1, 2]), r"must be uint8 \[N, 3072\].*got float32"),
    (batch_bytes(np.zeros((3, 3072), np.uint8), [0, 1]), r"3 images but b'labels' has shape \[2\]"),
], ids=["short-rows", "float", "label-count"])
def test_wrong_shapes_are_refused(tmp_path, tiny, blob, message):
    path = tarball_with_members(tmp_path / "t.tar.gz", _replaced(tiny, "data_batch_2", blob))
    with pytest.raises(BadInput, match=message):
        read_cifar_tarball(path)


def _link(kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo()
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member", [
    _link(tarfile.SYMTYPE, "/etc/passwd"), _link(tarfile.LNKTYPE, f"{FOLDER}/test_batch"), _link(tarfile.DIRTYPE),
    _link(tarfile.FIFOTYPE), _link(tarfile.CHRTYPE),
], ids=["symlink", "hardlink", "directory", "fifo", "device"])
def test_members_that_are_not_regular_files_are_refused(tmp_path, tiny, member):
    path = tarball_with_members(tmp_path / "t.tar.gz", _replaced(tiny, "data_batch_1", member))
    with pytest.raises(BadInput, match=f"{FOLDER}/data_batch_1 is not a regular file: expected"):
        read_cifar_tarball(path)


def test_members_declaring_gigabytes_are_refused_before_any_is_read(tmp_path, tiny, monkeypatch):
    path = tarball_declaring(tmp_path / "bomb.tar", members_of(tiny), "test_batch", 3 << 30)
    reads = []
    monkeypatch.setattr(cifar, "restricted_load", lambda *args, **kwargs: reads.append(args))
    with pytest.raises(BadInput, match=r"bomb.tar: its members declare 3,221,2[\d,]+ bytes, more than any "
                                       r"CIFAR-format archive \(536,870,912 at most"):
        read_cifar_tarball(path)
    assert reads == [] and path.stat().st_blocks * 512 < 1 << 20  # nothing read; the file itself is small


@pytest.mark.parametrize("labels, got", [
    ([True, False, True], "a list holding a bool"), ([0.0, 1.5, 2.0], "a list holding a float"),
    (np.array([0.0, 1.0, 2.0]), "a float64 array"), ({0: 1}, "a dict"), ([0, 1, 2**70], "integers beyond int64"),
], ids=["bools", "floats", "float-array", "dict", "huge"])
def test_labels_that_are_not_integers_are_refused(tmp_path, tiny, labels, got):
    blob = batch_bytes(np.zeros((3, 3072), np.uint8), labels)
    path = tarball_with_members(tmp_path / "t.tar.gz", _replaced(tiny, "data_batch_2", blob))
    with pytest.raises(BadInput, match=re.escape(got)):
        read_cifar_tarball(path)


def test_labels_beyond_the_named_classes_are_refused(tmp_path):
    blank = np.zeros((4, 32, 32, 3), np.uint8)
    path = write_cifar_tarball(tmp_path / "t.tar.gz", blank, [0, 1, 2, 7], blank[:2], [0, 1], ["a", "b", "c"])
    with pytest.raises(BadInput, match="training labels run from 0 to 7, but batches.meta names 3 classes"):
        read_cifar_tarball(path)


# ----------------------------------------------------------------------------- recipes and schedules

NOTEBOOK_RECIPES = {  # family: (optimizer, lr, weight decay, LR schedule, epochs, batch size), as docs/TRAINING.md
    "moganet": ("Adam", 1e-3, 1e-5, CosinePerIteration(), 100, 128),
    "vanillanet": ("Adam", 1e-3, 1e-5, CosinePerIteration(), 50, 128),
    "softpool": ("Adam", 1e-3, 1e-5, CosinePerIteration(), 50, 128),
    "dynamic_conv": ("SGD", 0.1, 1e-5, MultiStepPerEpoch((30, 60, 90)), 100, 512),
    "orthonet": ("Momentum", 0.1, 5e-4, MultiStepPerEpoch((30, 60, 90)), 100, 256),
}


@pytest.mark.parametrize("family", NOTEBOOK_RECIPES)
def test_each_family_declares_its_notebooks_recipe(family):
    recipe = models.family_info(family).recipe
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.lr_schedule, recipe.epochs,
            recipe.batch_size) == NOTEBOOK_RECIPES[family]
    assert recipe.optimizer_kwargs == ({"momentum": 0.9} if family == "orthonet" else {})
    assert [knob.knob for knob in recipe.knobs] == {"vanillanet": ["act_learn"],
                                                    "dynamic_conv": ["temperature"]}.get(family, [])


def test_lr_schedules_name_paddles_classes():
    assert CosinePerIteration().describe(10, 5) == {"name": "CosineAnnealingDecay", "T_max": 50,
                                                    "stepped": "per iteration"}
    multistep = MultiStepPerEpoch((30, 60, 90))
    assert multistep.describe(10, 5) == {"name": "MultiStepDecay", "milestones": [30, 60, 90], "gamma": 0.1,
                                         "stepped": "per epoch"}
    scheduler = train.build_lr_scheduler(multistep, 0.1, 10, 100)
    assert isinstance(scheduler, paddle.optimizer.lr.MultiStepDecay) and scheduler.milestones == [30, 60, 90]


def _knob_schedule(family: str, epochs: int):
    [schedule] = models.family_info(family).recipe.knobs
    return schedule.for_run(epochs)


def test_act_learn_reaches_1_at_decay_epochs():
    notebook = _knob_schedule("vanillanet", 50)
    assert [notebook.value(e) for e in (0, 10, 19, 20, 49)] == [0, 0.5, 0.95, 1, 1]
    assert notebook.describe()["reaches_1_at_epoch"] == 21
    assert [_knob_schedule("vanillanet", 3).value(e) for e in range(3)] == [0, 0.5, 1]
    assert _knob_schedule("vanillanet", 1).value(0) == 1


def test_temperature_schedule_is_the_notebook_rule_and_ends_at_1():
    schedule = _knob_schedule("dynamic_conv", 100)
    routing = RoutingAttention(16, 2)  # starts at 30; `update_temperature` is the notebook's per-epoch rule
    notebook = [routing.temperature] + [routing.update_temperature() for _ in range(14)]
    assert [schedule.value(e) for e in range(15)] == notebook
    assert notebook[9:11] == [3, 1] and schedule.describe()["step_per_epoch"] == 3
    for epochs in range(1, 13):
        values = [_knob_schedule("dynamic_conv", epochs).value(e) for e in range(epochs)]
        assert values[-1] == 1 and values == sorted(values, reverse=True)
        assert values[0] == (30 if epochs > 1 else 1)


def test_one_device_is_not_wrapped():
    model = models.create("alexnet_bn", img_size=64)
    assert train.wrap_for_world(model, 1) is model and train.unwrap(model) is model
    assert train.per_rank_batch(512, 1) == 512 and train.per_rank_batch(512, 4) == 128
    with pytest.raises(BadInput, match="smaller than the 4 devices"):
        train.per_rank_batch(2, 4)


# ----------------------------------------------------------------------------- training runs

FAMILY_RUNS = [  # (model, input size, epochs): two epochs where a knob anneals
    ("vanillanet_5", 32, 2), ("moganet_xtiny", 32, 1), ("alexnet_dy", 64, 2), ("alexnet_softpool", 64, 1),
    ("resnet18_cifar", 32, 1),
]


@pytest.mark.parametrize("name, size, epochs", FAMILY_RUNS, ids=[r[0] for r in FAMILY_RUNS])
def test_each_family_trains_and_writes_its_run(tmp_path, tiny, name, size, epochs):
    run_dir = _train(name, tiny, tmp_path / "run", epochs=epochs, img_size=size)
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    metrics = _metrics(run_dir)
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, epochs + 1))
    assert metrics["best_epoch"] == epochs  # the only epoch in deploy state is the last

    config = json.loads((run_dir / "config.json").read_text())
    info = models.model_info(name)
    recipe = models.family_info(info.family).recipe
    assert config["arguments"] == {"model": name, "epochs": epochs, "batch_size": 8, "lr": recipe.lr, "img_size": size,
                                   "num_classes": 10, "seed": 42, "seed_compat": False}
    assert config["optimizer"]["name"] == recipe.optimizer and config["paddle_version"] == paddle.__version__
    assert config["normalize"]["mean"] == list(info.mean)

    models.load_weights(models.create(name, img_size=size), run_dir / "best_model.pdparams")
    final = models.create(name, img_size=size)
    models.load_weights(final, run_dir / "final_model.pdparams")
    final.eval()
    fused, _ = fuse(final)  # VanillaNet: refused unless act_learn is 1
    x = paddle.randn([2, 3, size, size])
    np.testing.assert_allclose(fused(x).numpy(), final(x).numpy(), rtol=1e-3, atol=1e-4)

    # The checkpoint is a deploy input: it exports fused to ONNX and passes verification.
    artifact = tmp_path / "artifact"
    assert main([name, "--weights", str(run_dir / "final_model.pdparams"), "--img-size", str(size),
                 "--fuse", "--onnx", "--out", str(artifact)]) == 0
    assert main(["verify", str(artifact), "--no-bench", "--no-reference-evaluator"]) == 0
    # ... and its deploy config names the classes as the tarball's batches.meta does.
    deploy = yaml.safe_load((artifact / "inference.yml").read_text())
    assert deploy["PostProcess"]["Topk"]["label_list"] == config["data"]["label_names"] == list(read_cifar_tarball(tiny).label_names)


def test_knobs_anneal_to_their_deploy_value(tmp_path, tiny):
    """VanillaNet's act_learn and AlexNet-DY's temperature, as metrics.json records them over a short run."""
    vanilla = _metrics(_train("vanillanet_5", tiny, tmp_path / "v", epochs=3, img_size=32))
    assert [h["act_learn"] for h in vanilla["history"]] == [0, 0.5, 1]
    dy = _metrics(_train("alexnet_dy", tiny, tmp_path / "d", epochs=3, img_size=64))
    assert [h["temperature"] for h in dy["history"]] == [30, 15, 1]
    assert vanilla["best_epoch"] == dy["best_epoch"] == 3
    config = json.loads((tmp_path / "d" / train.CONFIG).read_text())
    assert config["deep_training"] == [{"knob": "temperature", "start": 30.0, "reaches_1_at_epoch": 3,
                                        "step_per_epoch": 15, "rule": "stepped"}]


def test_training_learns_digits(tmp_path):
    """scikit-learn's 8x8 digits as CIFAR: a few epochs of AlexNet-BN beat chance (0.1) by far."""
    data = digits_cifar(tmp_path / "digits.tar.gz", n_train=600, n_test=200)
    run_dir = _train("alexnet_bn", data, tmp_path / "run", epochs=3, batch_size=32, lr=0.05, img_size=64)
    metrics = _metrics(run_dir)
    assert metrics["best_val_acc"] > 0.5, metrics["history"]
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]


_CHILD = textwrap.dedent("""
    import sys
    from cnnexport.train import run_training
    run_training("alexnet", sys.argv[1], out=sys.argv[2], epochs=3, batch_size=4, img_size=64,
                 device="cpu", progress="off")
""")


def test_resume_after_a_kill_continues_exactly(tmp_path, tiny):
    """Kill a run once its first checkpoint exists, resume it: the same run as one left alone."""
    whole = _train("alexnet", tiny, tmp_path / "whole", epochs=3, batch_size=4, img_size=64)

    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tiny), str(killed)])
    try:
        deadline = time.monotonic() + 120
        while not (killed / train.CHECKPOINT).exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    done_before = train.read_checkpoint(killed / train.CHECKPOINT)["epochs_done"]
    assert 1 <= done_before < 3, "the run was not interrupted mid-way"

    resumed = train.run_training("alexnet", str(tiny), resume=str(killed), device="cpu", progress="off")
    assert resumed == killed
    a, b = _metrics(whole), _metrics(resumed)
    assert [h["epoch"] for h in b["history"]] == [1, 2, 3]
    assert [h["lr"] for h in b["history"]] == pytest.approx([h["lr"] for h in a["history"]], rel=1e-12)
    assert [h["train_loss"] for h in b["history"]] == pytest.approx([h["train_loss"] for h in a["history"]], rel=1e-4)

    state_a, state_b = (train.read_checkpoint(d / train.CHECKPOINT) for d in (whole, killed))
    assert state_a["epochs_done"] == state_b["epochs_done"] == 3
    assert state_a["optimizer"].keys() == state_b["optimizer"].keys()
    assert state_a["optimizer"]["LR_Scheduler"] == state_b["optimizer"]["LR_Scheduler"]
    for key, value in state_a["optimizer"].items():
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(state_b["optimizer"][key], value, rtol=1e-4, atol=1e-6, err_msg=key)
    final_a, final_b = (read_state_dict(d / "final_model.pdparams") for d in (whole, killed))
    for key, value in final_a.items():
        np.testing.assert_allclose(final_b[key], value, rtol=1e-4, atol=1e-6, err_msg=key)


# ----------------------------------------------------------------------------- bad arguments

def test_bad_arguments_are_one_line_errors(tmp_path, tiny):
    with pytest.raises(models.UnknownModelError, match="unknown model 'vanillanet_55'"):
        _train("vanillanet_55", tiny, tmp_path / "a")
    with pytest.raises(BadInput, match="no checkpoint there"):
        train.run_training("alexnet_bn", str(tiny), resume=str(tmp_path / "nothing"), progress="off")
    with pytest.raises(BadInput, match="fewer than one batch of 64"):
        _train("alexnet_bn", tiny, tmp_path / "b", batch_size=64, img_size=64)
    if not paddle.device.is_compiled_with_cuda():
        with pytest.raises(BadInput, match="--device gpu: no GPU is usable here"):
            train.run_training("alexnet_bn", str(tiny), device="gpu", out=str(tmp_path / "c"), progress="off")


def test_a_finished_run_is_neither_overwritten_nor_resumed_with_other_arguments(tmp_path, tiny):
    run_dir = _train("alexnet_bn", tiny, tmp_path / "run", epochs=1, img_size=64)
    with pytest.raises(BadInput, match="already holds a run: continue it with --resume"):
        _train("alexnet_bn", tiny, run_dir, epochs=1, img_size=64)
    with pytest.raises(BadInput, match="started with epochs=1; leave epochs out or pass the same value"):
        train.run_training("alexnet_bn", str(tiny), resume=str(run_dir), epochs=5, progress="off")
    with pytest.raises(BadInput, match="trains 'alexnet_bn', not 'alexnet_dy'"):
        train.run_training("alexnet_dy", str(tiny), resume=str(run_dir), progress="off")
    with pytest.raises(BadInput, match="already finished its 1 epochs"):
        train.run_training("alexnet_bn", str(tiny), resume=str(run_dir / train.CHECKPOINT), progress="off")


@pytest.mark.parametrize("option, message", [
    (["--lr", "nan"], "--lr must be a finite number above 0, got nan"),
    (["--lr", "inf"], "--lr must be a finite number above 0, got inf"),
    (["--lr", "0"], "--lr must be a finite number above 0, got 0.0"),
    (["--epochs", "0"], "--epochs must be an integer from 1 to 100000, got 0"),
    (["--batch-size", "0"], "--batch-size must be an integer from 1 to 65536, got 0"),
    (["--img-size", "5000"], "--img-size must be an integer from 1 to 1024, got 5000"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295, got -1"),
    (["--seed", str(2**32)], "--seed must be an integer from 0 to 4294967295, got 4294967296"),
    (["--out", "/proc/cnnexport-run"],
     "cannot write /proc/cnnexport-run: /proc is not a writable directory; choose another --out"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_options_are_refused_before_anything_is_written(tmp_path, tiny, monkeypatch, capsys, option, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", "alexnet_bn", "--data", str(tiny), "--device", "cpu", *option)
    assert code == 2 and err == f"cnnexport: error: {message}\n"
    assert not any(tmp_path.iterdir())  # not even runs/


def test_num_classes_beyond_the_limit_is_refused(tmp_path, tiny):
    with pytest.raises(BadInput, match="--num-classes must be an integer from 1 to 100000, got 200000"):
        _train("alexnet_bn", tiny, tmp_path / "run", num_classes=200_000)
    assert not (tmp_path / "run").exists()


def test_out_holding_other_files_is_refused_and_left_alone(tmp_path, tiny, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    before = sorted(tmp_path.rglob("*"))
    code, _, err = run_cli(capsys, "train", "alexnet_bn", "--data", str(tiny), "--out", str(out), "--device", "cpu")
    assert code == 2 and err == (f"cnnexport: error: --out {out} holds other files; cnnexport train only writes into "
                                 "a new or empty directory, or continues a run with --resume\n")
    assert sorted(tmp_path.rglob("*")) == before and (out / "notes.txt").read_text() == "keep me"


def test_without_a_terminal_train_prints_one_plain_line_per_epoch(tmp_path, tiny, capsys):
    """stderr is no TTY under capsys, as in a log or CI; the run fills an existing empty --out."""
    out = tmp_path / "empty"
    out.mkdir()
    code, stdout, err = run_cli(capsys, "train", "alexnet_bn", "--data", str(tiny), "--out", str(out),
                                "--epochs", "2", "--batch-size", "8", "--img-size", "64", "--device", "cpu")
    assert code == 0, err
    lines = err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"], err
    assert all("train loss" in line and "| val loss" in line for line in lines) and "\r" not in err
    assert "temperature" not in err  # AlexNet-BN has no router, so the family's temperature schedule skips it
    assert stdout == f"run directory: {out}\n" and RUN_FILES <= {p.name for p in out.iterdir()}


def test_a_family_without_a_recipe_is_one_line_exit_2(tmp_path, tiny, monkeypatch, capsys):
    """A throwaway family, registered in copies of the registry's tables that monkeypatch puts back."""
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_family("throwaway", representative="throwaway_net", small_input_size=64)

    @registry.register_model("throwaway", 64, params=0, macs=0)
    def throwaway_net(num_classes, img_size, seed_compat):
        return models.create("alexnet_bn", num_classes=num_classes, img_size=img_size, seed_compat=seed_compat)

    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "throwaway_net", "--data", str(tiny), "--out", str(out), "--device", "cpu")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("cnnexport: error: model 'throwaway_net' has no training recipe: its family 'throwaway' "
                          "declares none")
    assert not out.exists()


def test_a_config_recording_bad_arguments_is_refused(tmp_path, tiny):
    run_dir = _train("alexnet_bn", tiny, tmp_path / "run", epochs=1, img_size=64)
    config = json.loads((run_dir / train.CONFIG).read_text())
    config["arguments"]["batch_size"] = -8
    (run_dir / train.CONFIG).write_text(json.dumps(config))
    with pytest.raises(BadInput, match=r"config.json records an argument out of range \(--batch-size must be"):
        train.run_training("alexnet_bn", str(tiny), resume=str(run_dir), progress="off")


# ----------------------------------------------------------------------------- several processes

_LAUNCHED = textwrap.dedent("""
    import sys
    from cnnexport.train import run_training
    run_training("alexnet_bn", sys.argv[1], out=sys.argv[2], epochs=1, batch_size=8, img_size=64,
                 device="cpu", progress="off")
""")


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(),
                    reason="checks the CPU (gloo) path; a CUDA build binds launched ranks to GPUs")
def test_two_processes_under_paddle_launch_share_each_batch(tmp_path, tiny):
    """The world-size > 1 path for real: DataParallel over two CPU processes, rank 0 writing."""
    script = tmp_path / "launched.py"
    script.write_text(_LAUNCHED)
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    result = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(logs),
         str(script), str(tiny), str(run_dir)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, "\n".join(p.read_text() for p in sorted(logs.glob("workerlog.*")))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["batch_size"] == {"global": 8, "per_device": 4, "world_size": 2, "steps_per_epoch": 2}
    keys = read_state_dict(run_dir / "final_model.pdparams")
    models.load_weights(models.create("alexnet_bn", img_size=64), run_dir / "final_model.pdparams")
    assert not [k for k in keys if k.startswith("_layers")]
