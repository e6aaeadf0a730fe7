"""Bring your own model: six architecture families of paddle.vision.models exported through the
`module:callable` form, unfused and fused, with random BatchNorm statistics and affines (saved as
a .pdparams), then verified: ONNX nodes, BatchNorm ops left in the Paddle program, the worst
relative L2 over verify's rows, and Paddle Inference vs ONNX Runtime p50 latency on CPU (one verify
run per artifact, the two runtimes timed in the same run, batch 1 and 8).

    python benchmarks/byo_models.py [--size 224] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path

import paddle
from tabulate import tabulate

from cnnexport import models
from cnnexport.cli import main as cnnexport
from cnnexport.models import external
from cnnexport.models.fusion import perturb

ARCHITECTURES = {
    "ResNet-18": ("paddle.vision.models:resnet18", {"num_classes": 1000}),
    "MobileNetV2": ("paddle.vision.models:mobilenet_v2", {"num_classes": 1000}),
    "MobileNetV3-Small": ("paddle.vision.models:mobilenet_v3_small", {"num_classes": 1000}),
    "ShuffleNetV2 x1.0": ("paddle.vision.models:shufflenet_v2_x1_0", {"num_classes": 1000}),
    "SqueezeNet 1.1": ("paddle.vision.models:squeezenet1_1", {"num_classes": 1000}),
    "DenseNet-121": ("paddle.vision.models:densenet121", {"num_classes": 1000}),
}
BATCH_NORM_OP = re.compile(rb'"#":"\d+\.batch_norm_?"')


def p50(report: dict, runtime: str, batch: int) -> float | None:
    return next((t["p50_ms"] for t in report["timings"] if t["runtime"] == runtime and t["batch"] == batch), None)


def row(name: str, out: Path, batches: list[int]) -> list:
    manifest = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / "verify.json").read_text())
    worst = max(r["worst"]["rel_l2"] for r in report["rows"] if r.get("worst"))
    times = []
    for batch in batches:
        paddle_ms, ort_ms = p50(report, "paddle-inference", batch), p50(report, "onnxruntime", batch)
        times.append(f"{paddle_ms:.1f} / {ort_ms:.1f} ({paddle_ms / ort_ms:.2f}x)")
    return [name, "fused" if manifest["model"]["fused"] else "unfused", sum(manifest["onnx"]["ops"].values()),
            len(BATCH_NORM_OP.findall((out / "inference.json").read_bytes())), f"{worst:.1e}",
            "pass" if report["passed"] else "FAIL", *times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--out", default=None, help="where the artifacts go (default: a temporary directory)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        rows = []
        for name, (spec, kwargs) in ARCHITECTURES.items():
            paddle.seed(0)
            weights = root / f"{spec.rpartition(':')[2]}.pdparams"
            models.save_weights(perturb(external.build(spec, kwargs)), weights)
            for fused in (False, True):
                out = root / f"{weights.stem}{'-fused' if fused else ''}"
                code = cnnexport([spec, "--model-kwargs", json.dumps(kwargs), "--img-size", str(args.size),
                                  "--weights", str(weights), "--onnx", "--out", str(out), *(["--fuse"] if fused else [])])
                assert code == 0, f"{name}: export failed"
                cnnexport(["verify", "--no-reference-evaluator", "--batch-sizes", args.batch_sizes, str(out)])
                rows.append(row(name, out, batches))
    print(tabulate(rows, tablefmt="github", headers=[
        "architecture", "form", "ONNX nodes", "BatchNorm ops left (Paddle program)", "worst rel L2", "verify",
        *(f"b{b} p50 ms: Paddle Inference / ORT (ORT speed-up)" for b in batches)]))


if __name__ == "__main__":
    main()
