"""Issue 7, the parts that run on CPU: reference bundles, the Paddle-free runner, fp16, GPU plans."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import paddle
import pytest
from onnx import TensorProto, numpy_helper

from cnnexport import models
from cnnexport import runtimes
from cnnexport.artifact import Manifest, describe_files, integrity_problems
from cnnexport.compare import FP16, GPU_TF32
from cnnexport.plan import VerifyOptions, verify_plan
from cnnexport.reference import parity_inputs, read_bundle
from cnnexport.runtimes import iobinding_call
from cnnexport.verifier import verify_artifact
from tests.helpers import perturb, without_paddle


@pytest.fixture(scope="module")
def verified(tmp_path_factory) -> tuple[Path, dict]:
    """A fused ResNet-18 (CIFAR) at 16 px with an fp16 variant, verified once with Paddle (which
    writes its bundle); returns the directory and that verification's report."""
    from cnnexport.cli import main

    root = tmp_path_factory.mktemp("gpu")
    paddle.seed(41)
    weights = root / "resnet.pdparams"
    paddle.save(perturb(models.create("resnet18_cifar", img_size=16)).state_dict(), str(weights))
    out = root / "resnet18_cifar-fused"
    assert main(["resnet18_cifar", "--weights", str(weights), "--img-size", "16", "--fuse", "--onnx", "--fp16",
                 "--out", str(out)]) == 0
    assert main(["verify", str(out), "--no-bench", "--no-reference-evaluator"]) == 0
    return out, json.loads((out / "verify.json").read_text())


@pytest.fixture
def artifact(verified) -> Path:
    return verified[0]


def test_the_reference_bundle_is_written_hashed_and_read_back(artifact):
    manifest = Manifest.load(artifact)
    assert manifest.files["reference.npz"]["size"] == (artifact / "reference.npz").stat().st_size
    assert integrity_problems(artifact, manifest) == {}
    inputs, outputs = read_bundle(artifact / "reference.npz", manifest)
    expected_inputs = parity_inputs(manifest)
    assert set(inputs) == set(expected_inputs) == set(outputs)
    for name, batch in expected_inputs.items():
        np.testing.assert_array_equal(inputs[name], batch)
        assert [out.shape for out in outputs[name]] == [(len(batch), 10)]
    assert (artifact / "reference.npz").stat().st_size < 2 * 2**20  # a few images, small


def test_the_paddle_free_runner_verifies_against_the_bundle(artifact, tmp_path):
    env = without_paddle(tmp_path)
    blocked = subprocess.run([sys.executable, "-c", "import paddle"], env=env, capture_output=True, text=True)
    assert "paddle is blocked" in blocked.stderr
    proc = subprocess.run([sys.executable, "-m", "cnnexport", "verify", str(artifact), "--device", "cpu",
                           "--batch-sizes", "1,2"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS (reference: reference bundle" in proc.stdout
    assert "ok   onnxruntime/cpu " in proc.stdout and "ok   onnxruntime/cpu fp16" in proc.stdout
    assert "paddle-inference" not in proc.stdout and "eager" not in proc.stdout.split("reference:")[1].split(")")[1]
    report = json.loads((artifact / "verify.json").read_text())
    assert report["paddle"] is False
    assert {(t["label"], t["batch"]) for t in report["timings"]} >= {("onnxruntime/cpu", 1), ("onnxruntime/cpu", 2)}


def test_without_paddle_or_bundle_verify_says_what_to_do(artifact, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("inference.onnx", "inference.json", "inference.pdiparams"):
        src = artifact / name
        (bare / name).symlink_to(src, target_is_directory=src.is_dir())
    manifest = Manifest.load(artifact)
    manifest.files = {k: v for k, v in manifest.files.items() if k != "reference.npz"}
    manifest.write(bare)
    proc = subprocess.run([sys.executable, "-m", "cnnexport", "verify", str(bare), "--no-bench"],
                          env=without_paddle(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 2
    assert "run `cnnexport verify` once on a machine with Paddle" in proc.stderr


def test_fp16_keeps_fp32_io_and_agrees_on_real_photographs(verified):
    artifact, report = verified
    half = onnx.load(artifact / "inference.fp16.onnx")
    for value in (half.graph.input[0], half.graph.output[0]):
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in half.graph.initializer)
    row = next(r for r in report["rows"] if r["runtime"] == "onnxruntime/cpu fp16")
    assert row["passed"] and row["worst"]["top1"] >= 0.99 and set(row["batches"]) == {"photos"}
    assert 1e-6 < row["worst"]["rel_l2"] < 1e-2  # reported: fp16 is close, not exact


def test_a_broken_fp16_model_fails(artifact, tmp_path):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    model = onnx.load(broken / "inference.fp16.onnx")
    fc = max((i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16 and len(i.dims) == 2),
             key=lambda i: i.dims[0])  # the classifier
    w = numpy_helper.to_array(fc).copy()
    w[:, 3] = 60000.0  # one class column overflows towards inf: that class wins everywhere, or NaN/Inf
    fc.CopyFrom(numpy_helper.from_array(w, fc.name))
    onnx.save(model, broken / "inference.fp16.onnx")
    manifest = Manifest.load(broken)
    manifest.files = describe_files(broken)  # re-hash: a converter bug, not tampering, made this file
    manifest.write(broken)
    report = verify_artifact(broken, VerifyOptions(bench=False, reference_evaluator=False), "cpu")
    rows = {r.runtime: r for r in report.rows}
    assert not rows["onnxruntime/cpu fp16"].passed and not report.passed
    assert rows["onnxruntime/cpu"].passed


def test_gpu_rows_and_tolerances_are_planned_on_any_machine(artifact):
    inputs = parity_inputs(Manifest.load(artifact))
    rows = {r.spec.label: r for r in verify_plan(artifact, "gpu", VerifyOptions(), inputs, eager=True)}
    assert rows["onnxruntime/gpu [tf32]"].tolerance == GPU_TF32 and rows["onnxruntime/gpu [tf32]"].timed
    assert rows["onnxruntime/gpu [fp32]"].tolerance.rel_l2 == 1e-5  # TF32 off must meet the CPU tolerance
    assert rows["onnxruntime/gpu fp16"].tolerance == FP16
    assert [s.config_name for s in rows["paddle-inference/cpu"].attempts] == ["cpu-onednn", "cpu-native",
                                                                               "cpu-native-no-ir-optim"]
    assert runtimes.ort_providers(rows["onnxruntime/gpu [fp32]"].spec)[0] == (
        "CUDAExecutionProvider", {"use_tf32": "0", "prefer_nhwc": "0", "enable_cuda_graph": "0"})
    assert runtimes.ort_providers(rows["onnxruntime/gpu [tf32]"].spec)[0] == (
        "CUDAExecutionProvider", {"use_tf32": "1", "prefer_nhwc": "1", "enable_cuda_graph": "0"})
    assert runtimes.ort_providers(rows["onnxruntime/cpu"].spec) == ["CPUExecutionProvider"]


def test_paddle_inference_configurations(verified):
    artifact, report = verified
    assert [c.name for c in runtimes.paddle_configs("gpu", tensorrt=True)] == ["gpu-tensorrt", "gpu", "gpu-no-ir-optim"]
    assert [c.name for c in runtimes.paddle_configs("gpu")] == ["gpu", "gpu-no-ir-optim"]
    assert [c.name for c in runtimes.paddle_configs("cpu")][0] == "cpu-onednn"
    from paddle import inference
    program, params = runtimes.paddle_model_files(artifact)
    for config, onednn, ir in ((runtimes.CPU_PADDLE_CONFIGS[0], True, True), (runtimes.CPU_PADDLE_CONFIGS[2], False, False)):
        real = inference.Config(str(program), str(params))
        config.apply(real, threads=2)
        assert (real.use_gpu(), real.mkldnn_enabled(), real.ir_optim(), real.cpu_math_library_num_threads()) == (
            False, onednn, ir, 2)
    if not paddle.is_compiled_with_cuda():  # here: the report must say Paddle Inference ran on the CPU
        assert any(r["runtime"].startswith("paddle-inference/cpu") for r in report["rows"] if r.get("runtime"))


def test_device_resident_timing_path_runs_on_the_cpu_provider(artifact):
    """IO binding is the GPU benchmark's path; on the CPU provider it must give session.run's outputs."""
    spec = runtimes.RuntimeSpec("onnxruntime", str(artifact / "inference.onnx"))
    batch = np.random.default_rng(0).standard_normal((2, 3, 16, 16), dtype=np.float32)
    call, outputs = iobinding_call(spec, batch)
    call()
    expected = runtimes.open_runtime(spec).infer(batch)
    assert len(outputs) == len(expected) == 1
    np.testing.assert_array_equal(outputs[0].numpy(), expected[0])


def test_runtime_against_runtime_alignment_finds_the_changed_node(artifact, tmp_path):
    """What a GPU machine without Paddle localises: one run's values against another's, by node."""
    from cnnexport.divergence import first_differing_value, onnx_intermediates

    model = onnx.load(artifact / "inference.onnx")
    conv = [n for n in model.graph.node if n.op_type == "Conv"][5]
    init = next(i for i in model.graph.initializer if i.name == conv.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    onnx.save(model, tmp_path / "changed.onnx")
    batch = np.random.default_rng(0).standard_normal((1, 3, 16, 16), dtype=np.float32)
    clean = onnx_intermediates(runtimes.RuntimeSpec("onnxruntime", str(artifact / "inference.onnx")), batch)
    changed = onnx_intermediates(runtimes.RuntimeSpec("onnxruntime", str(tmp_path / "changed.onnx")), batch)
    assert first_differing_value(clean, clean) is None
    found = first_differing_value(clean, changed)
    assert found["value"] == conv.output[0] and found["onnx_node"] == conv.name and conv.input[1] in found["weights"]
