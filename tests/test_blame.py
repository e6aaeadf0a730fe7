"""Issue 25: real architectures, when a component is wrong. Small networks written here with Paddle's own
layers (tests/arch_nets.py) reproduce each failure class found on PaddleClas's backbones; each ends as
an artifact that verify passes with the workaround named, or as a one-line refusal naming the wrong
component and the figure."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from cnnexport.artifact import DEPLOY_CONFIG, Manifest
from tests.helpers import run_cli

ARCH = "tests.arch_nets"


def _export(capsys, out, net: str, size: int, *extra) -> tuple[int, str]:
    code, stdout, err = run_cli(capsys, f"{ARCH}:{net}", "--img-size", str(size), "--onnx", "--out", str(out), *extra)
    return code, stdout + err


def _verify(capsys, out) -> tuple[int, str, dict]:
    code, stdout, err = run_cli(capsys, "verify", "--no-bench", str(out))
    return code, stdout + err, json.loads((out / "verify.json").read_text())


def _rows(report: dict) -> dict[str, dict]:
    return {row["runtime"]: row for row in report["rows"]}


def test_paddle_inference_onednn_computing_convnext_wrongly_is_worked_around_and_recorded(capsys, tmp_path):
    """Paddle Inference 3.3 with oneDNN computes a channel LayerNorm after a residual addition wrongly
    (rel L2 ~1); oneDNN off is exact. The export goes on without oneDNN and says so everywhere."""
    out = tmp_path / "convnext"
    code, text = _export(capsys, out, "convnext", 64)
    assert code == 0, text
    assert "cpu-onednn wrong: rel" in text and "deploy it with oneDNN off" in text
    config = Manifest.load(out).formats["paddle"]["inference_config"]
    assert config["config"] == "cpu-native" and config["enable_mkldnn"] is False
    (wrong,) = config["wrong"]
    assert wrong["config"] == "cpu-onednn" and wrong["rel_l2"] > 0.1
    deploy = yaml.safe_load((out / DEPLOY_CONFIG).read_text())["cnnexport"]["paddle_inference"]
    assert deploy["enable_mkldnn"] is False and "Global.enable_mkldnn: False" in deploy["why"]
    code, text, report = _verify(capsys, out)
    assert code == 0 and report["passed"], text
    assert "paddle-inference/cpu [cpu-native]" in _rows(report)
    assert any("oneDNN off" in note for note in report["notes"])

    # The same program imported as a directory: Paddle Inference is the reference, and its oneDNN run
    # (rel L2 ~1 from the program run as written) was blamed on ONNX Runtime before.
    program_dir = tmp_path / "program"
    program_dir.mkdir()
    for name in ("inference.json", "inference.pdiparams"):
        shutil.copy(out / name, program_dir / name)
    imported = tmp_path / "imported"
    code, stdout, err = run_cli(capsys, str(program_dir), "--img-size", "64", "--onnx", "--out", str(imported))
    assert code == 0, stdout + err
    assert "computes this model wrongly in cpu-onednn" in stdout and "against the program run as written" in stdout
    assert Manifest.load(imported).formats["paddle"]["inference_config"]["config"] == "cpu-native"
    code, text, report = _verify(capsys, imported)
    assert code == 0 and report["passed"], text


def test_an_onnxslim_crash_keeps_the_unsimplified_graph_and_says_so(capsys, tmp_path):
    """onnxslim crashes on the `If` subgraphs of Swin's slice-assigned attention mask; paddle2onnx's graph
    is right and is kept. OpenVINO cannot convert its sequence ops, nor the reference evaluator run them:
    those rows are unsupported, not failures."""
    out = tmp_path / "swin"
    code, text = _export(capsys, out, "swin", 32)
    assert code == 0, text
    assert "onnxslim failed (AttributeError" in text and "kept paddle2onnx's graph unsimplified" in text
    assert "paddle2onnx failed" not in text
    assert "onnxslim failed" in Manifest.load(out).onnx["unsimplified"]
    code, text, report = _verify(capsys, out)
    rows = _rows(report)
    assert code == 0 and report["passed"], text
    assert rows["onnxruntime/cpu"]["passed"] and rows["onnxruntime/cpu"]["worst"]["rel_l2"] < 1e-5
    assert rows["openvino/cpu"]["unsupported"].startswith("OpenVINO cannot convert SequenceMap")
    assert "unsupported: OpenVINO cannot convert" in text and "not counted in the verdict" in text


def test_the_reference_evaluators_missing_ceil_mode_with_auto_pad_is_unsupported_not_fail(capsys, tmp_path):
    """paddle2onnx writes ResNet-vd's SAME-padded ceil-mode pool as AveragePool(auto_pad=SAME_UPPER,
    ceil_mode=1), which onnx.reference does not implement; every other runtime agrees."""
    out = tmp_path / "pool"
    code, text = _export(capsys, out, "resnet_vd_pool", 64)
    assert code == 0, text
    code, text, report = _verify(capsys, out)
    rows = _rows(report)
    assert code == 0 and report["passed"], text
    assert rows["onnx-reference/cpu"]["unsupported"] == "AssertionError: ceil_mode is not supported with auto_pad"
    assert not rows["onnx-reference/cpu"]["passed"]
    assert all(row["passed"] for name, row in rows.items() if name != "onnx-reference/cpu")
    assert "skip onnx-reference/cpu" in text and "unsupported: AssertionError: ceil_mode" in text


def test_an_exact_fold_of_a_numerically_sensitive_ghost_network_passes_on_its_own_rounding(capsys, tmp_path):
    """The cheap conv's bias is what its BatchNorm subtracts: the fp32 model is 3e-5 from its float64
    outputs, the folded one far closer. The fixed 1e-5 bar refused the fold; the grounded one keeps it."""
    out = tmp_path / "ghost"
    code, text = _export(capsys, out, "ghost", 32, "--fuse")
    assert code == 0, text
    tolerance = Manifest.load(out).model["tolerance"]
    assert 1e-5 < tolerance["fp32_rounding"] < 1e-3 and tolerance["rel_l2"] == pytest.approx(10 * tolerance["fp32_rounding"])
    code, text, report = _verify(capsys, out)
    assert code == 0 and report["passed"], text


def test_a_wrong_fold_is_still_refused_naming_the_batchnorm_and_the_figure(monkeypatch):
    """The grounded check is no looser for a real change: a fold that is off by 1% is refused, named."""
    import paddle

    from cnnexport import rewrite
    from tests import arch_nets

    exact_fold = rewrite.fold_bn_into_conv

    def fold_off_by_one_percent(conv, bn):
        exact_fold(conv, bn)
        conv.weight.set_value(conv.weight.numpy() * 1.01)

    monkeypatch.setattr(rewrite, "fold_bn_into_conv", fold_off_by_one_percent)
    paddle.seed(0)
    with pytest.raises(rewrite.FuseError, match=r"^folding blocks\.0\.cheap\.bn into blocks\.0\.cheap\.conv changes the "
                                                r"model's output by rel L2 [0-9.e+-]+ in float64, beyond [0-9.e+-]+ \(10x"):
        rewrite.fuse(arch_nets.ghost().eval(), 32)


@pytest.mark.parametrize("option", ["--rtol", "--atol"])
def test_export_takes_rtol_and_atol_as_verify_does(capsys, tmp_path, option):
    code, _, err = run_cli(capsys, f"{ARCH}:resnet_vd_pool", "--img-size", "32", option, "nan",
                           "--out", str(tmp_path / "x"))
    assert code == 2 and err.strip() == f"cnnexport: error: {option} must be a finite number above 0, not nan"
    assert not (tmp_path / "x").exists()


def test_adaptive_pooling_below_its_output_size_is_refused_up_front_with_the_size_that_works(capsys, tmp_path):
    """paddle2onnx dies with SIGFPE on VGG's 7x7 adaptive pool fed a 2x2 map (64 px); eager Paddle accepts it."""
    code, _, err = run_cli(capsys, f"{ARCH}:vgg_adaptive", "--img-size", "64", "--onnx", "--out", str(tmp_path / "vgg"))
    assert code == 2 and err.count("\n") == 1, err
    assert err.strip() == ("cnnexport: error: --img-size 64: AdaptiveAvgPool2D pool gets a 2x2 map for its 7x7 output, "
                           "which paddle2onnx 2.1 cannot convert (it dies with SIGFPE): export at --img-size 224 or "
                           "more, or without --onnx")
    assert not (tmp_path / "vgg").exists()


def test_csp_leaky_relu_layers_are_spelt_out_for_paddle2onnx(capsys, tmp_path):
    """PaddleClas's CSPDarkNet activates with nn.LeakyReLU(), which paddle2onnx writes with alpha 0 (6.6e-2
    off in ONNX Runtime): the program it converts has them as max(x, slope*x), and the artifact is exact."""
    out = tmp_path / "csp"
    code, text = _export(capsys, out, "csp", 32)
    assert code == 0, text
    assert "leaky-relu            6 nn.LeakyReLU written as max(x, slope*x) for paddle2onnx" in text
    code, text, report = _verify(capsys, out)
    assert code == 0 and report["passed"], text

    # The unsimplified graph is the second opinion on a wrong ONNX file: this one is made wrong after
    # paddle2onnx (as a wrong simplification would be), and paddle2onnx's own graph of the program agrees.
    import onnx
    from onnx import numpy_helper

    from cnnexport.blame import paddle2onnx_refusal
    from cnnexport.compare import CPU_FP32, judge
    from cnnexport.exporting import parity_batches
    from cnnexport.onnx_tools import run_onnx

    model = onnx.load(out / "inference.onnx")
    weight = next(i for i in model.graph.initializer if len(i.dims) == 4)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 2, weight.name))
    onnx.save(model, tmp_path / "inference.onnx")
    shutil.copy(out / "inference.json", tmp_path / "inference.json")
    shutil.copy(out / "inference.pdiparams", tmp_path / "inference.pdiparams")
    batch = parity_batches(Manifest.load(out).input)["smoke"]
    right = run_onnx(onnx.load(out / "inference.onnx"), batch)
    wrong = judge("onnxruntime/cpu", {"smoke": right}, {"smoke": run_onnx(model, batch)}, CPU_FP32)
    why = paddle2onnx_refusal(wrong, [], None, str(tmp_path / "inference.onnx"), batch, right[0])
    assert why.startswith("onnxslim simplified the graph wrongly: onnxruntime/cpu is off by rel L2 "), why
    assert "while paddle2onnx's graph as converted agrees (rel " in why


def test_a_paddle2onnx_error_is_refused_naming_paddle2onnx_and_the_first_diverging_node(capsys, tmp_path):
    """A functional leaky ReLU cannot be spelt out: ONNX Runtime is 8e-2 off while Paddle Inference on the
    program paddle2onnx converted agrees, so paddle2onnx is named, with the layer and the ONNX node."""
    code, text = _export(capsys, tmp_path / "cspf", "csp_functional", 32)
    assert code == 1 and not (tmp_path / "cspf").exists()
    (line,) = [line for line in text.splitlines() if line.startswith("cnnexport:")]
    assert line.startswith("cnnexport: failed: paddle2onnx converted the model wrongly: onnxruntime/cpu is off by "
                           "rel L2 8.0"), line
    assert "while Paddle Inference on the program it converted agrees" in line
    assert "first diverging layer stem.2 (FunctionalLeakyReLU, after stem.1), ONNX node LeakyRelu.0 (LeakyRelu" in line


def test_a_dtype_error_in_the_forward_is_not_hinted_as_an_input_size(capsys, tmp_path):
    code, _, err = run_cli(capsys, f"{ARCH}:Float64Head", "--img-size", "32", "--out", str(tmp_path / "x"))
    assert code == 2 and err.count("\n") == 1, err
    assert "a dtype mismatch inside the forward" in err and "(float32) does not match the type of data (float64)" in err
    assert "--img-size it takes" not in err


def test_fuse_summary_counts_what_is_exported_and_no_op_reparameterisations_are_no_rewrites():
    """RepVGG's re_parameterize() leaves its spent branches in place: they are not counted; a
    re_parameterize() that changes nothing is not reported as a rewrite."""
    from cnnexport.rewrite import fuse
    from tests import arch_nets, reparam_net
    from tests.helpers import perturb

    fused, summary = fuse(perturb(reparam_net.build(width=8)).eval(), 32)
    assert summary.params_after < summary.params_before
    assert {r["what"] for r in summary.rewritten} == {"RepBlock.re_parameterize()", "DeployHead.switch_to_deploy()"}
    _, summary = fuse(arch_nets.NoOpReparam().eval(), 32)
    assert summary.rewritten == [] and summary.params_after == summary.params_before
    assert "nothing to fuse: the model is already in deploy form" in summary.lines()


def test_a_missing_legacy_program_names_the_paddle_limit_and_what_it_means_for_paddleclas():
    from cnnexport.exporting import legacy_limit

    why = legacy_limit("TypeError: (InvalidType) gelu(): argument (position 1) must be Value, but got Variable (at x.cc:1)")
    assert why.startswith("Paddle 3.") and "'s legacy exporter cannot write gelu (TypeError: (InvalidType) gelu()" in why
    assert why.endswith("PaddleClas 2.6's deploy predictor, which can load only a legacy program, cannot load this "
                        "artifact (PaddleX, Paddle Inference, ONNX Runtime and OpenVINO on the ONNX file can)")
