"""Issue 12: the artifact as the deploy stacks load it, through their own code (PaddleClas 2.6,
PaddleX 3.7, OpenVINO), against what verify proved: the eager model on the photographs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import paddle
import pytest
import yaml

from cnnexport import models
from cnnexport.artifact import DEPLOY_CONFIG, LEGACY_PROGRAM, ONNX_FILE, Manifest
from cnnexport.exporting import build_model
from cnnexport.images import preprocess, sample_photos, save_photos
from cnnexport.runtimes import RuntimeSpec, open_runtime, paddle_configs
from tests.helpers import FAMILY_VARIANTS, REPO, perturb, rel_l2, run_cli, small_size, subprocess_env

SIZES = {name: (small_size(name) if models.model_info(name).family != "orthonet" else 16)
         for name in FAMILY_VARIANTS.values()}
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LABELLED = "vanillanet_5"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A fused artifact with ONNX per family, non-trivial weights; VanillaNet-5's with class names."""
    from cnnexport.cli import main

    root = tmp_path_factory.mktemp("deploy")
    (root / "labels.txt").write_text("\n".join(CIFAR_NAMES) + "\n")
    out = {}
    for name, size in SIZES.items():
        paddle.seed(7)
        weights = root / f"{name}.pdparams"
        paddle.save(perturb(models.create(name, img_size=size)).state_dict(), str(weights))
        out[name] = root / "artifacts" / name
        labels = ["--labels", str(root / "labels.txt")] if name == LABELLED else []
        assert main([name, "--weights", str(weights), "--img-size", str(size), "--fuse", "--onnx",
                     "--out", str(out[name]), *labels]) == 0
    return out


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("photos")
    save_photos(directory)
    return directory


@pytest.fixture(scope="module")
def reference(artifacts):
    """Per artifact: the eager (unfused) model's logits on the photographs, preprocessed as verify does."""
    out = {}
    for name, artifact in artifacts.items():
        manifest = Manifest.load(artifact)
        model = build_model(name, manifest.model["kwargs"], manifest.weights["path"])
        with paddle.no_grad():
            out[name] = model(paddle.to_tensor(preprocess(sample_photos(), manifest.input))).numpy()
    return out


def _consumer(stack: str, artifacts: dict, photo_files, tmp_path) -> dict:
    results = tmp_path / f"{stack}.json"
    proc = subprocess.run([sys.executable, "-m", "tests.deploy_consumers", stack, str(results), str(photo_files),
                           *map(str, artifacts.values())], capture_output=True, text=True, cwd=REPO,
                          env=subprocess_env(tmp_path / "tmp"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(results.read_text())


def _assert_agrees(logits, want: np.ndarray, what: str, atol: float = 0.0) -> None:
    got = np.asarray(logits, np.float32)
    assert got.shape == want.shape, what
    assert np.isfinite(got).all(), what
    error = np.abs(got - want).max()
    assert rel_l2(got, want) <= 1e-5 or error <= atol, f"{what}: rel L2 {rel_l2(got, want):.1e}, max abs {error:.1e}"
    assert (got.argmax(1) == want.argmax(1)).all(), what


def test_paddleclas_reads_the_deploy_config_and_preprocesses_as_verify_does(artifacts, reference):
    from paddleclas.deploy.python.postprocess import build_postprocess
    from paddleclas.deploy.python.preprocess import create_operators

    for name, artifact in artifacts.items():
        deploy = yaml.safe_load((artifact / DEPLOY_CONFIG).read_text())
        ops = create_operators(deploy["PreProcess"]["transform_ops"])
        theirs = []
        for image in sample_photos().values():
            for op in ops:
                image = op(image)
            theirs.append(image)
        ours = preprocess(sample_photos(), Manifest.load(artifact).input)
        assert np.abs(np.stack(theirs) - ours).max() <= 1e-5, name

        # PaddleClas's deploy configs (deploy/configs/inference_cls.yaml) name the result's source in
        # main_indicator beside the artifact's PostProcess; PaddleX would reject that key in inference.yml.
        top = build_postprocess({"main_indicator": "Topk", **deploy["PostProcess"]})(reference[name])
        assert [r["class_ids"] for r in top] == np.argsort(-reference[name], 1)[:, :5].tolist(), name
        if name == LABELLED:
            assert [r["label_names"] for r in top] == [[CIFAR_NAMES[i] for i in r["class_ids"]] for r in top]


def test_paddleclas_predictor_computes_what_verify_proved(artifacts, reference, photo_files, tmp_path):
    """PaddleClas's own predictor, as deployed: its config loader, preprocessing, and Paddle Inference
    with memory optimisation on the legacy program (where Paddle 3.3 can write one), or ONNX Runtime."""
    results = _consumer("paddleclas", artifacts, photo_files, tmp_path)
    assert (artifacts[LABELLED] / LEGACY_PROGRAM).is_file()
    for name, artifact in artifacts.items():
        modes = {"onnx"} | ({"paddle"} if (artifact / LEGACY_PROGRAM).is_file() else set())
        assert set(results[name]) == modes, name
        for mode in modes:
            _assert_agrees(results[name][mode]["logits"], reference[name], f"{name} paddleclas {mode}")


def test_paddlex_predicts_what_verify_proved(artifacts, reference, photo_files, tmp_path):
    """PaddleX's image-classification predictor on the model directory, Paddle and ONNX Runtime engines.
    It rounds scores to 5 decimals: within 2e-5 absolute is agreement."""
    results = _consumer("paddlex", artifacts, photo_files, tmp_path)
    for name in artifacts:
        for engine in ("paddle", "onnxruntime"):
            run = results[name][engine]
            _assert_agrees(run["logits"], reference[name], f"{name} paddlex {engine}", atol=2e-5)
            if name == LABELLED:
                want = [CIFAR_NAMES[i] for i in np.argsort(-reference[name], 1)[0]]
                assert run["label_names"][0] == want


def test_openvino_runs_both_formats_at_any_batch_and_manifest_names_the_real_tensors(artifacts):
    for name, artifact in artifacts.items():
        manifest = Manifest.load(artifact)
        paddle_runtime = open_runtime(RuntimeSpec("paddle-inference", str(artifact),
                                                  paddle_config=paddle_configs("cpu")[0]))
        assert (paddle_runtime.inputs[0], paddle_runtime.outputs[0]) == (
            manifest.formats["paddle"]["input"], manifest.formats["paddle"]["output"])
        files = [artifact / ONNX_FILE] + ([artifact / LEGACY_PROGRAM] if (artifact / LEGACY_PROGRAM).is_file() else [])
        size = SIZES[name]
        for path in files:
            fmt = "onnx" if path.suffix == ".onnx" else "paddle-legacy"
            runtime = open_runtime(RuntimeSpec("openvino", str(path)))
            assert runtime.outputs[0] == manifest.formats[fmt]["output"], (name, fmt)
            for n in (1, 3):
                x = np.random.default_rng(n).standard_normal((n, 3, size, size), dtype=np.float32)
                _assert_agrees(runtime.infer(x)[0], paddle_runtime.infer(x)[0], f"{name} openvino {fmt} batch {n}")


def test_fp16_keeps_the_tail_in_fp32_where_fp16_underflows_and_verify_passes_it(tmp_path, capsys):
    """Fresh VanillaNet-5 logits are ~1e-14, below fp16's range: full fp16 agrees on top-1 for about a
    third of the photographs. The export keeps the end of the graph in fp32, and verify passes it."""
    out = tmp_path / "v"
    code, _, err = run_cli(capsys, "vanillanet_5", "--img-size", "32", "--fuse", "--onnx", "--fp16", "--out", str(out))
    assert code == 0, err
    fp16 = Manifest.load(out).onnx["fp16"]
    assert fp16["precision"] == "mixed" and fp16["fp16_nodes"] > fp16["fp32_nodes"] >= 1
    code, stdout, err = run_cli(capsys, "verify", str(out), "--batch-sizes", "1", "--no-bench")
    assert code == 0, stdout + err
    assert "ok   onnxruntime/cpu fp16" in stdout


def test_no_fp16_form_that_agrees_is_an_error(artifacts):
    import onnx

    from cnnexport.onnx_tools import NoFp16Form, run_onnx, to_fp16

    model = onnx.load(artifacts[LABELLED] / ONNX_FILE)
    photos = preprocess(sample_photos(), Manifest.load(artifacts[LABELLED]).input)
    with pytest.raises(NoFp16Form, match="top-1 agreement"):  # logits no form can agree with
        to_fp16(model, photos, [-out for out in run_onnx(model, photos)], 0.99)
