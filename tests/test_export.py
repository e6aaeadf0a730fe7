"""Issue 4: `cnnexport MODEL --fuse --onnx` — real deploy artifacts, written atomically, checked at once."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import paddle
import pytest

from cnnexport import models
from cnnexport import exporting as export_module
from cnnexport import isolate
from cnnexport.compare import CPU_FP32
from cnnexport.job import run_job
from cnnexport.plan import Row, paddle_row
from cnnexport.run import run_row
from cnnexport.runtimes import RuntimeSpec
from cnnexport.artifact import Manifest, integrity_problems
from cnnexport.exporting import build_model, convert_to_onnx, save_paddle
from cnnexport.models.vanillanet import VanillaNet
from tests.helpers import FAMILY_VARIANTS, perturb, random_images, rel_l2, run_cli, small_size


def _trained_weights(tmp_path: Path, name: str, size: int) -> Path:
    """Weights with non-trivial BatchNorms, saved as the notebooks save them."""
    paddle.seed(21)
    path = tmp_path / f"{name}.pdparams"
    paddle.save(perturb(models.create(name, img_size=size)).state_dict(), str(path))
    return path


def _outputs_of(row: Row, batches):
    outcome = run_row(row, {str(i): b for i, b in enumerate(batches)}, None)
    assert outcome.ran is not None, outcome.failed
    return list(outcome.outputs.values())


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("name", FAMILY_VARIANTS.values())
def test_every_family_exports_and_runs_in_both_runtimes(tmp_path, capsys, name, fused):
    size = small_size(name) if models.model_info(name).family != "orthonet" else 16
    weights = _trained_weights(tmp_path, name, size)
    out = tmp_path / "artifact"
    args = [name, "--weights", str(weights), "--img-size", str(size), "--onnx", "--out", str(out)]
    code, stdout, err = run_cli(capsys, *args, *(["--fuse"] if fused else []))
    assert code == 0, err
    assert "smoke-parity" in stdout and "written" in stdout

    manifest = Manifest.load(out)
    assert integrity_problems(out, manifest) == {}
    assert manifest.model["fused"] is fused and manifest.input["dynamic_batch"]
    eager = build_model(name, manifest.model["kwargs"], str(weights))
    batches = [random_images(1, size, seed=1), random_images(3, size, seed=2)]
    with paddle.no_grad():
        expected = [eager(paddle.to_tensor(b)).numpy() for b in batches]
    for row in (paddle_row(out, "cpu", 0, CPU_FP32, timed=False),
                Row(RuntimeSpec("onnxruntime", str(out / "inference.onnx")), CPU_FP32)):
        for (got,), want in zip(_outputs_of(row, batches), expected):
            assert got.shape == want.shape
            assert rel_l2(got, want) <= 1e-5, row.spec.kind


def test_onnx_is_standard_checked_and_self_describing(tmp_path, capsys):
    out = tmp_path / "v5"
    code, _, err = run_cli(capsys, "vanillanet_5", "--img-size", "32", "--fuse", "--onnx", "--opset", "13",
                           "--out", str(out))
    assert code == 0, err
    model = onnx.load(out / "inference.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 13
    (inp,), (outp,) = model.graph.input, model.graph.output
    assert (inp.name, outp.name) == ("x", "logits")
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 3, 32, 32]
    assert [d.dim_param or d.dim_value for d in outp.type.tensor_type.shape.dim] == ["batch", 10]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["model"] == "vanillanet_5" and meta["fused"] == "true" and meta["num_classes"] == "10"
    assert "mean=[0.485, 0.456, 0.406]" in meta["normalisation"] and meta["input_size"] == "32"
    assert {"version.paddlepaddle", "version.paddle2onnx", "version.onnx", "weights_sha256"} <= set(meta)
    assert model.producer_name == "cnnexport" and model.producer_version == meta["version.cnnexport"]


def test_fused_vanillanet_graph_is_smaller(tmp_path, capsys):
    ops = {}
    for fused in (False, True):
        out = tmp_path / f"v5-{fused}"
        code, _, err = run_cli(capsys, "vanillanet_5", "--img-size", "32", "--onnx", "--out", str(out),
                               *(["--fuse"] if fused else []))
        assert code == 0, err
        ops[fused] = Manifest.load(out).onnx["ops"]
    assert "BatchNormalization" not in ops[True]
    assert ops[True]["Conv"] < ops[False]["Conv"]
    assert "LeakyRelu" not in ops[False]  # see models.vanillanet.deep_training_act


def test_static_batch_is_fixed_in_both_formats(tmp_path, capsys):
    out = tmp_path / "static"
    code, stdout, err = run_cli(capsys, "alexnet_bn", "--img-size", "64", "--onnx", "--static-batch", "3",
                                "--out", str(out))
    assert code == 0, err
    assert "static batch 3" in stdout
    manifest = Manifest.load(out)
    assert manifest.input["shape"][0] == 3 and not manifest.input["dynamic_batch"]
    dims = onnx.load(out / "inference.onnx").graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 3


def test_json_prints_the_manifest(tmp_path, capsys):
    from cnnexport.cli import main
    assert main(["resnet18_cifar", "--img-size", "16", "--out", str(tmp_path / "r"), "--json"]) == 0
    out, err = capsys.readouterr()
    manifest = json.loads(out)
    assert manifest["model"]["name"] == "resnet18_cifar" and "inference.pdiparams" in manifest["files"]
    assert "smoke-parity" in err  # step lines go to stderr, stdout is only JSON


def test_reexport_replaces_atomically_and_a_crash_leaves_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "arts" / "alexnet_bn"
    assert run_cli(capsys, "alexnet_bn", "--img-size", "64", "--out", str(out))[0] == 0
    first = Manifest.load(out).created, (out / "manifest.json").read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("injected crash after the Paddle step")

    monkeypatch.setattr(export_module, "_in_child", crash)
    with pytest.raises(RuntimeError, match="injected"):
        run_cli(capsys, "alexnet_bn", "--img-size", "64", "--onnx", "--out", str(out))
    assert (out / "manifest.json").read_bytes() == first[1]   # the old artifact is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == ["alexnet_bn"]  # no staging litter

    monkeypatch.undo()
    assert run_cli(capsys, "alexnet_bn", "--img-size", "64", "--onnx", "--out", str(out))[0] == 0
    assert (out / "inference.onnx").is_file() and (out / "manifest.json").read_bytes() != first[1]
    assert sorted(p.name for p in out.parent.iterdir()) == ["alexnet_bn"]


def test_export_all_with_a_list(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "--all", "resnet18_cifar,alexnet", "--fuse")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == ["alexnet-fused", "resnet18_cifar-fused"]


def test_console_script_error_has_no_traceback(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "cnnexport", "moganet_xtiny", "--img-size", "33"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("cnnexport: error: input size 33 px is not supported: "
                                   "this architecture takes multiples of 32 px")


# --- the converter workarounds, proved on the exported graph ----------------------------------------

def _export_and_compare(model, size: int, tmp_path: Path) -> float:
    save_paddle(model, tmp_path / "paddle", [None, 3, size, size])
    convert_to_onnx(str(tmp_path / "paddle" / "inference.json"), str(tmp_path / "paddle" / "inference.pdiparams"),
                    str(tmp_path / "m.onnx"), 17, {}, ["logits"])
    x = random_images(3, size)
    with paddle.no_grad():
        ref = model(paddle.to_tensor(x)).numpy()
    (got,) = isolate.call_isolated(run_job, RuntimeSpec("onnxruntime", str(tmp_path / "m.onnx")), [x]).outputs[0]
    return rel_l2(got, ref)


def test_uneven_adaptive_max_pool_exports_exactly(tmp_path):
    """56 -> 40 px windows are uneven; paddle2onnx alone would emit one fixed MaxPool kernel."""
    paddle.seed(2)
    model = perturb(VanillaNet(num_classes=5, dims=[16, 16, 16], strides=[2, 1], ada_pool=[40, 0]))
    model.eval()
    assert _export_and_compare(model, 224, tmp_path) <= 1e-5


def test_unfused_vanillanet_mid_training_exports_exactly(tmp_path):
    """paddle2onnx misreads leaky_relu's slope; the eval graph spells it out as max(x, slope*x)."""
    model = perturb(models.create("vanillanet_5", img_size=32))
    model.change_act(0.4)
    model.eval()
    assert _export_and_compare(model, 32, tmp_path) <= 1e-5


def test_weights_whose_model_computes_nan_are_named_before_any_runtime_is_blamed(tmp_path, capsys):
    model = models.create("alexnet_bn", img_size=64)
    state = model.state_dict()
    last = [k for k in state if k.endswith("weight")][-1]  # the classifier: its sums overflow to Inf
    state[last] = paddle.full_like(state[last], 3e38)
    paddle.save(state, str(tmp_path / "w.pdparams"))
    code, _, err = run_cli(capsys, "alexnet_bn", "--weights", str(tmp_path / "w.pdparams"), "--img-size", "64",
                           "--out", str(tmp_path / "a"))
    assert code == 1 and "the eager model itself outputs NaN or Inf" in err
    assert not (tmp_path / "a").exists()


def test_the_legacy_program_is_written_when_the_callers_main_module_imports_paddle(tmp_path):
    """A spawned child re-imports the caller's __main__ before anything else; the legacy program's
    flag must already be in its environment then (a script that imports paddle, as users' do)."""
    import subprocess
    import sys

    from tests.helpers import REPO, subprocess_env
    script = tmp_path / "export_it.py"
    script.write_text("import paddle\nfrom cnnexport.cli import main\n\nif __name__ == '__main__':\n"
                      f"    raise SystemExit(main(['alexnet_bn', '--img-size', '64', '--out', {str(tmp_path / 'a')!r}]))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=REPO,
                          env=subprocess_env(tmp_path / "tmp"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "a" / "inference.pdmodel").is_file()
    assert Manifest.load(tmp_path / "a").formats["paddle-legacy"]["program"] == "inference.pdmodel"
