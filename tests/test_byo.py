"""Issue 13: bring your own model. `module.path:callable` (six architecture families of
paddle.vision.models, and a PaddleClas-style re-parameterisable network), generic conv ->
BatchNorm folding in arbitrary forward code, and Paddle inference directories written by
`paddle.jit.save` (Paddle 3 and legacy programs), each exported and passing verify."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import paddle
import pytest
from paddle import nn

from cnnexport import models
from cnnexport.artifact import Manifest, integrity_problems
from cnnexport.cli import main as cli_main
from cnnexport.rewrite import fuse
from cnnexport.models.fusion import BATCH_NORMS
from tests.helpers import REPO, perturb, random_images, rel_l2, run_cli, subprocess_env

# (callable, its keyword arguments, input side): one small variant of each family.
VISION = {
    "resnet": ("paddle.vision.models:resnet18", {"num_classes": 10}, 32),
    "mobilenet_v2": ("paddle.vision.models:mobilenet_v2", {"scale": 0.5, "num_classes": 10}, 32),
    "mobilenet_v3": ("paddle.vision.models:mobilenet_v3_small", {"scale": 0.5, "num_classes": 10}, 32),
    "shufflenet_v2": ("paddle.vision.models:shufflenet_v2_x0_25", {"num_classes": 10}, 32),
    "squeezenet": ("paddle.vision.models:squeezenet1_1", {"num_classes": 10}, 64),
    "densenet": ("paddle.vision.models:densenet121", {"num_classes": 10}, 32),
}
REPARAM_NET = "tests.reparam_net:build"


def _saved_weights(spec: str, kwargs: dict, path) -> str:
    """Weights of the callable's model with random BatchNorm statistics and affines, as a .pdparams."""
    from cnnexport.models import external
    paddle.seed(3)
    model = perturb(external.build(spec, kwargs), seed=5)
    models.save_weights(model, path)
    return str(path)


def _export(spec: str, kwargs: dict, size: int, weights: str, out, *extra: str) -> int:
    return cli_main([spec, "--model-kwargs", json.dumps(kwargs), "--img-size", str(size), "--weights", weights,
                     "--onnx", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def vision_artifacts(tmp_path_factory):
    """Every family of VISION plus the re-parameterisable network, fused and unfused, then one verify."""
    root = tmp_path_factory.mktemp("byo")
    cases = {**VISION, "reparam": (REPARAM_NET, {"width": 8}, 32)}
    codes = {}
    for family, (spec, kwargs, size) in cases.items():
        weights = _saved_weights(spec, kwargs, root / f"{family}.pdparams")
        for fused in (False, True):
            out = root / f"{family}{'-fused' if fused else ''}"
            codes[out.name] = _export(spec, kwargs, size, weights, out, *(["--fuse"] if fused else []))
    verified = cli_main(["verify", "--no-bench", *(str(root / name) for name in codes)])
    return root, codes, verified


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("family", [*VISION, "reparam"])
def test_a_callable_exports_and_passes_verify(vision_artifacts, family, fused):
    root, codes, _ = vision_artifacts
    out = root / f"{family}{'-fused' if fused else ''}"
    assert codes[out.name] == 0
    manifest = Manifest.load(out)
    spec, kwargs, _ = {**VISION, "reparam": (REPARAM_NET, {"width": 8}, 32)}[family]
    assert manifest.model["source"] == "callable" and manifest.name == spec and manifest.model["kwargs"] == kwargs
    assert manifest.weights["sha256"] and integrity_problems(out, manifest) == {}
    report = json.loads((out / "verify.json").read_text())
    assert report["passed"], [r for r in report["rows"] if not r["passed"]]
    runtimes = {r["runtime"].split(" [")[0] for r in report["rows"]}
    assert {"eager-fused/cpu", "paddle-inference/cpu", "onnxruntime/cpu", "onnx-reference/cpu"} <= runtimes
    assert all(np.isfinite(r["worst"]["rel_l2"]) and r["worst"]["rel_l2"] <= 1e-5 for r in report["rows"])


def test_verify_of_all_of_them_exits_0(vision_artifacts):
    assert vision_artifacts[2] == 0


@pytest.mark.parametrize("family, batchnorms", [("resnet", 20), ("mobilenet_v2", 52)])
def test_fused_resnet18_and_mobilenet_v2_keep_no_batchnorm(vision_artifacts, family, batchnorms):
    root = vision_artifacts[0]
    fused = Manifest.load(root / f"{family}-fused")
    assert len(fused.rewrite["folded"]) == batchnorms and fused.rewrite["kept"] == []
    ops = [n.op_type for n in onnx.load(root / f"{family}-fused" / "inference.onnx").graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") >= batchnorms
    # onnxslim folds the unfused graph's BatchNorms into its convs too; the Paddle program shows the rewrite
    assert b"batch_norm" in (root / family / "inference.json").read_bytes()
    assert b"batch_norm" not in (root / f"{family}-fused" / "inference.json").read_bytes()


def test_densenet_keeps_the_batchnorms_that_follow_a_concat_and_says_why(vision_artifacts):
    rewrite = Manifest.load(vision_artifacts[0] / "densenet-fused").rewrite
    assert rewrite["folded"] and rewrite["kept"]
    assert all("not a conv's output" in k["reason"] for k in rewrite["kept"])


def test_reparameterize_and_switch_to_deploy_run_through_the_walker(vision_artifacts):
    root = vision_artifacts[0]
    rewrite = Manifest.load(root / "reparam-fused").rewrite
    assert [r["what"] for r in rewrite["rewritten"]] == ["RepBlock.re_parameterize()"] * 4 \
        + ["DeployHead.switch_to_deploy()"]
    assert rewrite["kept"] == []  # the spent branches' BatchNorms no longer run
    fused_ops, unfused_ops = (Manifest.load(root / name).onnx["ops"] for name in ("reparam-fused", "reparam"))
    assert fused_ops["Conv"] == 5 < unfused_ops["Conv"]


def test_a_reparameterised_model_is_exact_and_fusing_it_again_changes_nothing():
    from tests.reparam_net import build
    paddle.seed(1)
    model = perturb(build(width=6)).eval()
    x = random_images(4, 32, seed=2)
    fused, summary = fuse(model, img_size=32)
    with paddle.no_grad():
        ref, out = model(paddle.to_tensor(x)).numpy(), fused(paddle.to_tensor(x)).numpy()
    assert rel_l2(out, ref) <= 1e-6
    again, summary2 = fuse(fused, img_size=32)
    assert not summary2.changed
    with paddle.no_grad():
        np.testing.assert_array_equal(again(paddle.to_tensor(x)).numpy(), out)


class _ArbitraryForward(nn.Layer):
    """conv -> BN pairs the Sequential pass cannot see: called in forward code, one conv's output
    also read by a residual add (not foldable), a BN after an add, and a legacy BN with ReLU."""

    def __init__(self):
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2D(3, 8, 3, padding=1, bias_attr=False), nn.BatchNorm2D(8)
        self.branch, self.branch_bn = nn.Conv2D(8, 8, 3, padding=1), nn.BatchNorm2D(8)
        self.post_bn = nn.BatchNorm2D(8)
        self.tail, self.tail_bn = nn.Conv2D(8, 8, 1), nn.BatchNorm(8, act="relu")
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = paddle.nn.functional.relu(self.stem_bn(self.stem(x)))
        y = self.branch(x)
        x = self.post_bn(self.branch_bn(y) + y)  # y is read twice: its BN may not be folded
        x = self.tail_bn(self.tail(x))
        return self.fc(x.mean(axis=[2, 3]))


def test_generic_folding_in_forward_code_folds_what_is_exact_and_says_why_not_for_the_rest():
    paddle.seed(2)
    model = perturb(_ArbitraryForward()).eval()
    fused, summary = fuse(model, img_size=12)
    assert {(f["layer"], f["into"]) for f in summary.folded} == {("stem_bn", "stem"), ("tail_bn", "tail")}
    kept = {k["layer"]: k["reason"] for k in summary.kept}
    assert kept.keys() == {"branch_bn", "post_bn"}
    assert "branch's output is read by more than this BatchNorm" in kept["branch_bn"]
    assert "not a conv's output" in kept["post_bn"]
    assert isinstance(fused.tail_bn, nn.ReLU)  # the legacy BatchNorm's own activation stays
    assert sum(isinstance(m, BATCH_NORMS) for m in fused.sublayers()) == 2
    x = random_images(3, 12, seed=4)
    with paddle.no_grad():
        assert rel_l2(fused(paddle.to_tensor(x)).numpy(), model(paddle.to_tensor(x)).numpy()) <= 1e-6


def test_a_module_that_verify_cannot_import_is_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_net_for_verify.py").write_text(
        "import paddle.vision.models as m\n\ndef build():\n    return m.squeezenet1_1(num_classes=4)\n")
    code, _, err = run_cli(capsys, "my_net_for_verify:build", "--img-size", "64", "--out", str(tmp_path / "art"))
    assert code == 0, err
    assert not (tmp_path / "__pycache__").exists()
    (tmp_path / "my_net_for_verify.py").unlink()
    sys.modules.pop("my_net_for_verify")
    code, _, err = run_cli(capsys, "verify", "--no-bench", str(tmp_path / "art"))
    assert code == 2 and err.count("\n") == 1 and "cannot import my_net_for_verify" in err, err


# ----------------------------------------------------------------------------- Paddle inference directories

_SAVE = """
import sys, numpy as np, paddle, paddle.vision.models as m
from cnnexport.models.fusion import perturb
paddle.seed(0)
model = perturb(m.resnet18(num_classes=10)).eval()
paddle.jit.save(model, sys.argv[1] + "/model", input_spec=[paddle.static.InputSpec([None, 3, 32, 32], "float32", "x")])
np.save(sys.argv[1] + "/fc_weight.npy", model.fc.weight.numpy())
"""
# PaddleClas's exporter writes this deploy config (its scale as a string it eval()s).
_DEPLOY_CONFIG = """PreProcess:
  transform_ops:
  - ResizeImage:
      resize_short: 36
  - CropImage:
      size: 32
  - NormalizeImage:
      channel_num: 3
      mean: [0.5, 0.5, 0.5]
      order: ''
      scale: 1.0/255.0
      std: [0.25, 0.25, 0.25]
  - ToCHWImage: null
PostProcess:
  Topk:
    topk: 5
"""


@pytest.fixture(scope="module")
def saved_directories(tmp_path_factory):
    """ResNet-18 with random BatchNorm statistics, as paddle.jit.save writes it: a Paddle 3 program
    (with PaddleClas's deploy config beside it) and, with FLAGS_enable_pir_api=0, a legacy one."""
    root = tmp_path_factory.mktemp("saved")
    dirs = {"pir": root / "pir", "legacy": root / "legacy"}
    for kind, directory in dirs.items():
        directory.mkdir()
        env = dict(subprocess_env(root / "tmp"), **({"FLAGS_enable_pir_api": "0"} if kind == "legacy" else {}))
        subprocess.run([sys.executable, "-c", _SAVE, str(directory)], check=True, env=env, cwd=REPO,
                       capture_output=True)
    (dirs["pir"] / "inference.yml").write_text(_DEPLOY_CONFIG)
    return dirs


@pytest.mark.parametrize("kind, program", [("pir", "inference.json"), ("legacy", "inference.pdmodel")])
def test_a_saved_inference_directory_is_imported_converted_and_verified(saved_directories, tmp_path, capsys, kind,
                                                                         program):
    source = saved_directories[kind]
    out = tmp_path / "imported"
    args = [str(source), "--onnx", "--out", str(out), *([] if kind == "pir" else ["--img-size", "32"])]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    manifest = Manifest.load(out)
    assert manifest.model["source"] == "paddle-inference" and manifest.img_size == 32
    assert (out / program).read_bytes() == (source / program.replace("inference", "model")).read_bytes()
    if kind == "pir":  # the size and normalisation come from the directory's own deploy config, kept as it is
        assert manifest.input["std"] == [0.25, 0.25, 0.25] and manifest.input["scale"] == pytest.approx(1 / 255)
        assert (out / "inference.yml").read_text() == _DEPLOY_CONFIG
    code, stdout, err = run_cli(capsys, "verify", "--no-bench", str(out))
    assert code == 0, stdout + err
    report = json.loads((out / "verify.json").read_text())
    assert report["reference"].startswith("Paddle Inference")
    runtimes = {r["runtime"] for r in report["rows"]}
    assert {"onnxruntime/cpu", "onnx-reference/cpu", "openvino/cpu"} <= runtimes
    assert ("openvino/cpu [paddle-frontend]" in runtimes) == (kind == "legacy")


def test_a_tampered_weight_in_an_imported_artifact_is_named(saved_directories, tmp_path, capsys):
    out = tmp_path / "imported"
    code, _, err = run_cli(capsys, str(saved_directories["pir"]), "--onnx", "--out", str(out))
    assert code == 0, err
    fc = np.load(saved_directories["pir"] / "fc_weight.npy")
    blob = (out / "inference.pdiparams").read_bytes()
    at = blob.find(fc.tobytes())
    assert at > 0
    (out / "inference.pdiparams").write_bytes(blob[:at] + (fc * 1.5).tobytes() + blob[at + fc.nbytes:])
    code, stdout, err = run_cli(capsys, "verify", "--no-bench", "--no-reference-evaluator", str(out))
    assert code == 1
    report = json.loads((out / "verify.json").read_text())
    assert any("inference.pdiparams" in p for p in report["integrity"])
    onnx_row = next(d for d in report["divergence"] if d["runtime"] == "onnxruntime/cpu")
    assert [w["weight"] for w in onnx_row["weights"]] == ["linear_0.w_0"]
    assert "linear_0.w_0" in stdout
