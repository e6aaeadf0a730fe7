"""Issue 21: OpenVINO rows for the reduced-precision variants (the int8 file; the fp32 file in bf16
where the CPU computes it) and verify's recommendation, the fastest (runtime, variant) whose row passed.
(Speed is measured in benchmarks/cpu_runtimes.py, never asserted here.)"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import paddle
import pytest
from onnx import numpy_helper

from cnnexport import models
from cnnexport.compare import BF16, INT8
from cnnexport.plan import VerifyOptions, verify_plan
from cnnexport.results import VerifyReport
from tests.helpers import perturb, run_cli, small_size

NAME = "vanillanet_5"
BATCHES = (1, 2)
INT8_ROWS = ("onnxruntime/cpu int8", "openvino/cpu int8")


def cpu_has_bf16() -> bool:
    """What the CPU says of itself (avx512_bf16, or AMX's bf16 tiles), independently of OpenVINO."""
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A fused VanillaNet-5 at its small size with its int8 variant, verified once with timings."""
    root = tmp_path_factory.mktemp("cpu-runtimes")
    paddle.seed(31)
    weights = root / "w.pdparams"
    paddle.save(perturb(models.create(NAME, img_size=small_size(NAME))).state_dict(), str(weights))
    art = root / "artifacts" / f"{NAME}-fused"
    from cnnexport.cli import main
    assert main([NAME, "--weights", str(weights), "--img-size", str(small_size(NAME)), "--fuse", "--onnx", "--int8",
                 "--out", str(art)]) == 0
    return art


@pytest.fixture(scope="module")
def verified(artifact) -> tuple[dict, str]:
    import contextlib
    import io

    from cnnexport.cli import main
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["verify", str(artifact), "--batch-sizes", ",".join(map(str, BATCHES)), "--no-reference-evaluator"])
    assert code == 0, printed.getvalue()
    return json.loads((artifact / "verify.json").read_text()), printed.getvalue()


def _fastest_passed(report: dict, batch: int) -> dict:
    passed = {r["runtime"] for r in report["rows"] if r["passed"]}
    return min((t for t in report["timings"] if t["batch"] == batch and t["mode"] == "run" and t["label"] in passed),
               key=lambda t: t["p50_ms"])


def test_openvino_runs_the_int8_file_and_bf16_judged_by_top1_and_timed(verified):
    report, _ = verified
    rows = {r["runtime"]: r for r in report["rows"]}
    ov_int8 = rows["openvino/cpu int8"]
    assert ov_int8["passed"] and ov_int8["spec"]["model_path"].endswith("inference.int8.onnx")
    assert ov_int8["tolerance"]["top1_agreement"] == INT8.top1_agreement and set(ov_int8["batches"]) == {"photos"}
    assert 0 < ov_int8["worst"]["rel_l2"] < 0.2  # int8 arithmetic: close, never exact
    assert ("openvino/cpu bf16" in rows) == cpu_has_bf16()
    expected = {("openvino", "int8", b) for b in BATCHES}
    if cpu_has_bf16():
        bf16 = rows["openvino/cpu bf16"]
        assert bf16["passed"] and bf16["spec"]["model_path"].endswith("inference.onnx")
        assert bf16["tolerance"]["top1_agreement"] == BF16.top1_agreement and set(bf16["batches"]) == {"photos"}
        # The hint took effect: bf16 rounds where the same file in OpenVINO fp32 does not.
        assert bf16["worst"]["rel_l2"] > 100 * rows["openvino/cpu"]["worst"]["rel_l2"]
        expected |= {("openvino", "bf16", b) for b in BATCHES}
    timed = {(t["runtime"], t["precision"], t["batch"]) for t in report["timings"]}
    assert expected <= timed


def test_export_checks_the_openvino_rows_before_writing(artifact):
    from cnnexport.artifact import Manifest
    smoke = {r["runtime"]: r for r in Manifest.load(artifact).smoke_parity}
    assert smoke["openvino/cpu int8"]["top1"] >= INT8.top1_agreement
    assert ("openvino/cpu bf16" in smoke) == cpu_has_bf16()


def test_the_recommendation_is_the_fastest_passed_row_per_batch_in_every_output(verified, artifact):
    report, printed = verified
    recommendation = report["recommendation"]
    assert [r["batch"] for r in recommendation] == list(BATCHES)
    paddle_runs = {t["batch"]: t["p50_ms"] for t in report["timings"] if t["runtime"] == "paddle-inference"}
    for rec in recommendation:
        best = _fastest_passed(report, rec["batch"])
        assert (rec["runtime"], rec["precision"], rec["p50_ms"]) == (best["label"], best["precision"], best["p50_ms"])
        assert rec["paddle_fp32_p50_ms"] == paddle_runs[rec["batch"]]
        assert rec["speedup_vs_paddle_fp32"] == pytest.approx(paddle_runs[rec["batch"]] / rec["p50_ms"])
        assert f"recommended at batch {rec['batch']}: {rec['runtime']} (p50 {rec['p50_ms']:.2f} ms" in printed
    text = (artifact.parent / "REPORT.md").read_text()
    table = [[cell.strip() for cell in line.split("|")[1:4]] for line in text[text.index("## Recommendation"):].splitlines()]
    assert all([artifact.name, str(rec["batch"]), rec["runtime"]] in table for rec in recommendation)
    assert VerifyReport.from_dict(report).to_dict()["recommendation"] == recommendation  # read back as written


def test_a_recommendation_that_is_not_one_is_a_damaged_verify_json(verified):
    report, _ = verified
    damaged = {**report, "recommendation": [{**report["recommendation"][0], "p50_ms": "fast"}]}
    with pytest.raises(ValueError, match="p50_ms"):
        VerifyReport.from_dict(damaged)


def test_a_row_that_fails_is_never_recommended(artifact, tmp_path, capsys):
    """The int8 file's classifier weights negated: both int8 rows run, are timed, and fail on the
    photographs; the recommendation is the fastest of the rows that passed."""
    art = tmp_path / "artifacts" / artifact.name
    shutil.copytree(artifact, art)
    model = onnx.load(art / "inference.int8.onnx")
    dequantized = {out: node for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    classifier = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    weight = next(i for i in model.graph.initializer if i.name == dequantized[classifier.input[1]].input[0])
    values = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array(np.clip(-values.astype(np.int16), -128, 127).astype(np.int8), weight.name))
    onnx.save(model, art / "inference.int8.onnx")

    code, out, _ = run_cli(capsys, "verify", str(art), "--batch-sizes", "1", "--no-reference-evaluator")
    assert code == 1
    report = json.loads((art / "verify.json").read_text())
    rows = {r["runtime"]: r for r in report["rows"]}
    for label in INT8_ROWS:
        assert not rows[label]["passed"] and any("top-1 agreement" in f for f in rows[label]["failures"])
        assert any(t["label"] == label for t in report["timings"])  # timed: a candidate, had it passed
    (rec,) = report["recommendation"]
    assert rec["runtime"] not in INT8_ROWS and rows[rec["runtime"]]["passed"]
    assert rec["p50_ms"] == _fastest_passed(report, 1)["p50_ms"]
    assert f"recommended at batch 1: {rec['runtime']}" in out


def test_reduced_precision_openvino_rows_only_where_the_artifact_has_a_variant(tmp_path):
    """An fp32-only artifact gets no extra rows (the rest of the suite stays as fast as it was); the
    plan asks only for the files that are there."""
    (tmp_path / "inference.onnx").write_bytes(b"")
    photos = {"photos": np.zeros((1, 3, 8, 8), np.float32)}
    labels = [row.spec.label for row in verify_plan(tmp_path, "cpu", VerifyOptions(), photos, eager=False)]
    assert not any(label.endswith((" int8", " bf16")) for label in labels)
    (tmp_path / "inference.int8.onnx").write_bytes(b"")
    labels = [row.spec.label for row in verify_plan(tmp_path, "cpu", VerifyOptions(), photos, eager=False)]
    assert [label for label in labels if label.endswith((" int8", " bf16"))] == [
        *INT8_ROWS, *(["openvino/cpu bf16"] if cpu_has_bf16() else [])]
