"""Issue 14 benchmark: what int8 costs in accuracy on a trained model, and what it buys in speed.

    python benchmarks/int8.py [--epochs 6] [--out /tmp/int8-bench]

(a) Accuracy: scikit-learn's digits as a CIFAR-format tarball (tests/cifar_data.py), `cnnexport
train alexnet_bn` on it at 64 px, export `--fuse --onnx --int8 --calib-data` (the training split),
`cnnexport verify --eval-data` (the held-out test split): eager / fp32 ONNX / int8 top-1 accuracy.
(b) Speed: fused VanillaNet-5 at 224 px (perturbed weights) and the trained AlexNet-BN, fp32 ONNX Runtime, int8 ONNX
Runtime and Paddle Inference at batch 1 and 8, timed by one `cnnexport verify` run (its rows run
one after another, in one process tree), so that the ratios come from one run on a noisy machine.
Prints Markdown tables (for benchmarks/RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from cifar_data import digits_cifar  # noqa: E402

TRAINED, SPEED = "alexnet_bn", "vanillanet_5"


def cnnexport(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cnnexport", *args], cwd=REPO, check=True)


def perturbed_weights(name: str, out: Path) -> Path:
    """Non-trivial weights (BatchNorm statistics included): fresh VanillaNet weights give logits near
    1e-14, which no 8-bit grid holds (README, fp16)."""
    import paddle

    from cnnexport import models
    from cnnexport.models.fusion import perturb

    paddle.seed(31)
    path = out / f"{name}.pdparams"
    paddle.save(perturb(models.create(name)).state_dict(), str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", default="/tmp/int8-bench")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "artifacts").mkdir(parents=True)
    data = digits_cifar(out / "digits.tar.gz", n_train=1397, n_test=400)

    cnnexport("train", TRAINED, "--data", str(data), "--epochs", str(args.epochs), "--batch-size", "32",
              "--lr", "0.05", "--img-size", "64", "--device", "cpu", "--out", str(out / "run"))
    trained = out / "artifacts" / f"{TRAINED}-fused"
    cnnexport(TRAINED, "--weights", str(out / "run" / "best_model.pdparams"), "--img-size", "64", "--fuse", "--onnx",
              "--int8", "--calib-data", str(data), "--out", str(trained))
    speed = out / "artifacts" / f"{SPEED}-fused"
    cnnexport(SPEED, "--weights", str(perturbed_weights(SPEED, out)), "--fuse", "--onnx", "--int8", "--out", str(speed))
    # Accuracy on the trained model; timing of both, in one run.
    subprocess.run([sys.executable, "-m", "cnnexport", "verify", str(trained), str(speed), "--batch-sizes", "1,8",
                    "--no-reference-evaluator", "--eval-data", str(data)], cwd=REPO)

    acc = json.loads((trained / "verify.json").read_text())["accuracy"]
    top1 = acc["top1"]
    print(f"\n### Accuracy: {TRAINED} trained {args.epochs} epochs on digits (64 px), {acc['samples']} held-out test images\n")
    print("| model | top-1 | change (points) |\n| --- | --- | --- |")
    for model, value in top1.items():
        change = "" if model == "eager" else f"{(value - top1['eager']) * 100:+.2f}"
        print(f"| {model} | {value:.2%} | {change} |")
    print("\n### Latency (p50 ms, 2 threads)\n")
    print("| artifact | batch | Paddle Inference fp32 | ORT fp32 | ORT int8 | int8 vs ORT fp32 | int8 vs Paddle |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for art in (speed, trained):
        timings = json.loads((art / "verify.json").read_text())["timings"]
        for batch in (1, 8):
            p50 = {(t["runtime"], t["precision"]): t["p50_ms"] for t in timings if t["batch"] == batch}
            paddle, fp32, int8 = p50[("paddle-inference", "fp32")], p50[("onnxruntime", "fp32")], p50[("onnxruntime", "int8")]
            print(f"| {art.name} | {batch} | {paddle:.2f} | {fp32:.2f} | {int8:.2f} | {fp32 / int8:.2f}x | {paddle / int8:.2f}x |")


if __name__ == "__main__":
    main()
