"""Issue 5: `cnnexport verify` — integrity, parity matrix, first divergence, isolation, reports."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import paddle
import pytest
from onnx import numpy_helper

from cnnexport import models
from cnnexport import runtimes
from cnnexport.artifact import Manifest
from cnnexport.compare import CPU_FP32
from cnnexport.plan import Row, VerifyOptions
from cnnexport.run import judge_row, run_row
from cnnexport.verifier import verify_artifact
from tests.custom_runtimes import AbortingPaddleConfig
from tests.helpers import FAMILY_VARIANTS, perturb, run_cli, small_size

SIZES = {name: (small_size(name) if models.model_info(name).family != "orthonet" else 16)
         for name in FAMILY_VARIANTS.values()}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    """Fused artifacts of one model per family (plus VanillaNet-5 unfused), non-trivial weights."""
    from cnnexport.cli import main

    root = tmp_path_factory.mktemp("verify") / "artifacts"
    for name, size in SIZES.items():
        paddle.seed(31)
        weights = root.parent / f"{name}.pdparams"
        paddle.save(perturb(models.create(name, img_size=size)).state_dict(), str(weights))
        for fused in ([True, False] if name == "vanillanet_5" else [True]):
            out = root / f"{name}{'-fused' if fused else ''}"
            args = [name, "--weights", str(weights), "--img-size", str(size), "--onnx", "--out", str(out)]
            assert main(args + (["--fuse"] if fused else [])) == 0
    return root


@pytest.fixture(scope="module")
def verified(artifacts):
    from cnnexport.cli import main
    code = main(["verify", *map(str, sorted(artifacts.iterdir())), "--batch-sizes", "1,2"])
    return code, artifacts


def test_verify_passes_on_every_family_and_writes_reports(verified):
    code, root = verified
    assert code == 0
    for artifact in sorted(root.iterdir()):
        if not artifact.is_dir():
            continue
        report = json.loads((artifact / "verify.json").read_text())
        assert report["passed"] and report["integrity"] == []
        runtimes_seen = {row["runtime"].split(" [")[0] for row in report["rows"]}
        assert {"eager-fused/cpu", "paddle-inference/cpu", "onnxruntime/cpu", "onnx-reference/cpu"} <= runtimes_seen
        assert set(report["inputs"]) == {"random-b1", "random-b4", "photos"}
        assert report["inputs"]["photos"][0] == 8  # scikit-image's photographs
        for row in report["rows"]:
            assert row["worst"]["rel_l2"] <= 1e-5 and row["worst"]["top1"] == 1.0
        assert {(t["runtime"], t["batch"]) for t in report["timings"]} == {
            (r, b) for r in ("paddle-inference", "onnxruntime", "openvino") for b in (1, 2)}
        manifest = Manifest.load(artifact)
        assert "reference.npz" in manifest.files  # the bundle is covered by the manifest's hashes

    text = (root / "REPORT.md").read_text()
    for label in ("eager-fused/cpu", "paddle-inference/cpu", "onnxruntime/cpu", "onnx-reference/cpu"):
        assert label in text
    for name in SIZES:
        assert name in text
    assert "fuse gain" in text and "ORT/Paddle" in text
    fuse_gains = [line for line in text.splitlines()
                  if line.startswith("| vanillanet_5-fused") and re.search(r"\| \d+\.\d\dx +\| ", line)]
    assert fuse_gains, "the fused VanillaNet rows show what --fuse buys"
    assert (root / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _copy(artifacts: Path, name: str, tmp_path: Path) -> Path:
    copy = tmp_path / name
    shutil.copytree(artifacts / name, copy)
    return copy


@pytest.mark.parametrize("name, owner", [
    ("vanillanet_5-fused", "stages.1.conv.weight"),  # a chain: the merged 1x1 conv of the second stage
    ("orthonet18-fused", "layer3.0.conv2.weight"),   # a residual block whose shortcut runs beside it
])
def test_tampered_onnx_weight_fails_and_divergence_names_the_layer(verified, tmp_path, capsys, name, owner):
    _, root = verified
    art = _copy(root, name, tmp_path)
    manifest = Manifest.load(art)
    model = onnx.load(art / "inference.onnx")
    weight_name = next(p for p, s in manifest.paddle_param_names.items() if s == owner)
    init = next(i for i in model.graph.initializer if i.name == weight_name)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 2.0, weight_name))
    onnx.save(model, art / "inference.onnx")

    code, out, _ = run_cli(capsys, "verify", str(art), "--no-bench")
    assert code == 1
    assert "inference.onnx has changed since it was written" in out
    report = json.loads((art / "verify.json").read_text())
    failed = {r["runtime"] for r in report["rows"] if not r["passed"]}
    assert {"onnxruntime/cpu", "onnx-reference/cpu"} <= failed
    assert not any(r["runtime"].startswith("paddle-inference") for r in report["rows"] if not r["passed"])
    divergence = next(d for d in report["divergence"] if d["runtime"] == "onnxruntime/cpu")
    assert divergence["activation"]["layer"] == owner.rsplit(".", 1)[0]
    assert divergence["activation"]["op_type"] == "Conv" and weight_name in divergence["activation"]["weights"]
    assert [w["weight"] for w in divergence["weights"]] == [owner]


def test_tampered_pdiparams_byte_fails_and_divergence_names_the_weight(verified, tmp_path, capsys):
    _, root = verified
    art = _copy(root, "alexnet_dy-fused", tmp_path)
    manifest = Manifest.load(art)
    paddle_name, owner = next((p, s) for p, s in manifest.paddle_param_names.items() if s == "features.4.weight")
    params = (art / "inference.pdiparams").read_bytes()
    from cnnexport.exporting import build_model
    from cnnexport.rewrite import fuse
    fused, _ = fuse(build_model("alexnet_dy", manifest.model["kwargs"], manifest.weights["path"]))
    values = fused.state_dict()[owner].numpy().ravel()
    needle = values[100:104].astype("<f4").tobytes()
    offset = params.index(needle)
    tampered = bytearray(params)
    tampered[offset + 3] ^= 0x40       # the exponent byte of one float: a large change
    (art / "inference.pdiparams").write_bytes(bytes(tampered))

    code, out, _ = run_cli(capsys, "verify", str(art), "--no-bench", "--no-reference-evaluator")
    assert code == 1
    assert "inference.pdiparams has changed since it was written" in out
    report = json.loads((art / "verify.json").read_text())
    paddle_row = next(r for r in report["rows"] if r["runtime"].startswith("paddle-inference"))
    assert not paddle_row["passed"]
    assert next(r for r in report["rows"] if r["runtime"] == "onnxruntime/cpu")["passed"]
    divergence = next(d for d in report["divergence"] if d["runtime"].startswith("paddle-inference"))
    assert [(w["weight"], w["stored_as"]) for w in divergence["weights"]] == [(owner, paddle_name)]


def test_a_runtime_that_aborts_is_reported_and_the_others_still_run(verified, tmp_path):
    _, root = verified
    art = _copy(root, "orthonet18-fused", tmp_path)
    crashing = Row(runtimes.RuntimeSpec("tests.custom_runtimes:open_aborting", str(art / "inference.onnx")), CPU_FP32)
    report = verify_artifact(art, VerifyOptions(bench=False, reference_evaluator=False, extra_rows=(crashing,)), "cpu")
    rows = {r.runtime: r for r in report.rows}
    crashed = rows["tests.custom_runtimes:open_aborting/cpu"]
    assert not crashed.passed and crashed.crash["signal"] == "SIGABRT"
    assert rows["onnxruntime/cpu"].passed and rows["eager-fused/cpu"].passed
    assert any(r.startswith("paddle-inference") and rows[r].passed for r in rows)
    assert not report.passed


def test_paddle_inference_falls_back_when_a_configuration_crashes(verified):
    _, root = verified
    paddle_dir = str(root / "orthonet18-fused")
    fallback = runtimes.CPU_PADDLE_CONFIGS[1]
    row = Row(runtimes.RuntimeSpec("paddle-inference", paddle_dir), CPU_FP32, fallbacks=tuple(
        runtimes.RuntimeSpec("paddle-inference", paddle_dir, paddle_config=config)
        for config in (AbortingPaddleConfig("cpu-onednn-crashes", onednn=True), fallback)))
    batch = np.zeros((1, 3, 16, 16), np.float32)
    outcome = run_row(row, {"zeros": batch}, None)
    result = judge_row(row, outcome, {"zeros": outcome.outputs["zeros"]})
    assert result.passed and result.config == fallback.name
    (attempt,) = result.failed_configs
    assert attempt["config"] == "cpu-onednn-crashes" and attempt["signal"] == "SIGABRT"
    assert [out.shape for out in outcome.outputs["zeros"]] == [(1, 10)]
