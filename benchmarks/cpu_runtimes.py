"""Issue 21 benchmark: every CPU runtime x variant that verify judges, timed against each other on this
machine, with what each variant costs in held-out accuracy, and the int8 settings swept.

    PYTHONPATH=. .venv/bin/python benchmarks/cpu_runtimes.py [--threads 2] [--rounds 7]
        [--out /tmp/cpu-runtimes-bench] [--no-sweep] [--no-train] [--keep]

(a) Speed: fused VanillaNet-5 (224 px), AlexNet-BN (128 px) and ResNet-18-CIFAR (32 px), randomised
non-trivial weights, exported `--fuse --onnx --fp16 --int8` and verified (`--no-bench`): every row of
verify's plan (its runtime spec, Paddle Inference in its first configuration, oneDNN) opened in this
process and timed at batch 1 and 8 in interleaved rounds (each round times every row once, in turn:
a burst of other load hits all rows alike), the median of the rounds' medians. The recommended row is
`cnnexport.results.recommend` over those medians and verify's own verdicts.
(b) Accuracy: AlexNet-BN (benchmarks/int8.py's trained model: 64 px, 6 epochs) and VanillaNet-5 (32 px,
3 epochs: an epoch takes minutes on 2 cores) trained with `cnnexport train` on scikit-learn's digits as
a CIFAR-format tarball (tests/cifar_data.py), exported with `--calib-data` the training split, every
row's top-1 on the 400 held-out test images (where a variant changes the numbers). ResNet-18-CIFAR
is timed only (training it takes longer than the rest of the benchmark).
(c) The int8 settings (`cnnexport.int8.QuantSettings`): the chosen ones and one change at a time,
on VanillaNet-5 and ResNet-18-CIFAR: speed in ONNX Runtime and OpenVINO (interleaved with ONNX Runtime fp32), agreement
with fp32 on the photographs, held-out top-1 on the trained model.
Prints Markdown tables (for benchmarks/RESULTS.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from cifar_data import digits_cifar  # noqa: E402
from int8 import cnnexport, perturbed_weights  # noqa: E402  (benchmarks/int8.py)

# model -> speed input size (the zoo's default)
MODELS = {"vanillanet_5": 224, "alexnet_bn": 128, "resnet18_cifar": 32}
# model -> training input size, epochs, options beyond the family's recipe
TRAINED = {"alexnet_bn": (64, 6, ("--lr", "0.05")), "vanillanet_5": (32, 3, ())}
BATCHES = (1, 8)
CALLS_PER_ROUND = 3
# A pause before each row's calls: ONNX Runtime's threads spin for a while after a run, and in one
# process they would take the cores from whichever row is timed next.
SETTLE_SECONDS = 0.2


def plan_specs(art: Path, threads: int) -> dict:
    """Verify's CPU rows for `art`, label -> runtime spec (a row with fallbacks: its first configuration)."""
    from cnnexport.images import random_batch
    from cnnexport.plan import VerifyOptions, verify_plan

    rows = verify_plan(art, "cpu", VerifyOptions(threads=threads, reference_evaluator=False),
                       {"photos": random_batch(8, 8, seed=0)}, eager=True)
    return {row.attempts[0].label: row.attempts[0] for row in rows if row.attempts[0].kind != "onnx-reference"}


def interleaved(calls: dict, rounds: int) -> dict:
    """name -> median over rounds of the median of CALLS_PER_ROUND calls; every name once per round, in turn."""
    for name, call in calls.items():
        call(), call()  # warm-up
    per_round = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            time.sleep(SETTLE_SECONDS)
            seconds = []
            for _ in range(CALLS_PER_ROUND):
                start = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - start)
            per_round[name].append(float(np.median(seconds)))
    return {name: float(np.median(v)) * 1e3 for name, v in per_round.items()}


def speed(art: Path, threads: int, rounds: int) -> tuple[dict, list]:
    """(label, batch) -> p50 ms for every row of the plan, and verify's recommendation over them."""
    from cnnexport.images import random_batch
    from cnnexport.results import Timing, VerifyReport, recommend
    from cnnexport.runtimes import open_runtime

    size = json.loads((art / "manifest.json").read_text())["input"]["shape"][-1]
    specs = plan_specs(art, threads)
    runtimes = {label: open_runtime(spec) for label, spec in specs.items()}
    batches = {b: random_batch(b, size, seed=b) for b in BATCHES}
    calls = {(label, b): (lambda r=rt, x=batches[b]: r.infer(x)) for label, rt in runtimes.items() for b in BATCHES}
    p50 = interleaved(calls, rounds)
    report = VerifyReport.from_dict(json.loads((art / "verify.json").read_text()))
    timings = [Timing(specs[label].kind, "cpu", label, specs[label].precision, "run", b, threads, rounds, ms, ms, ms,
                      b / ms * 1e3) for (label, b), ms in p50.items()]
    return p50, recommend(report.rows, timings)


def accuracy(art: Path, data: Path, threads: int) -> dict:
    """label -> top-1 on the held-out test split, for every row of the plan (and the eager model, from verify)."""
    from cnnexport.accuracy import top1
    from cnnexport.cifar import read_cifar_tarball
    from cnnexport.images import in_batches, preprocess
    from cnnexport.runtimes import open_runtime

    subprocess.run([sys.executable, "-m", "cnnexport", "verify", str(art), "--no-bench", "--no-reference-evaluator",
                    "--threads", str(threads), "--eval-data", str(data)], cwd=REPO, stdout=subprocess.DEVNULL)
    verified = json.loads((art / "verify.json").read_text())
    cifar = read_cifar_tarball(data)
    spec_in = json.loads((art / "manifest.json").read_text())["input"]
    chunks = in_batches(preprocess({str(i): im for i, im in enumerate(cifar.test_images)}, spec_in), 50)
    result = {"eager": verified["accuracy"]["top1"]["eager"]}
    for label, spec in plan_specs(art, threads).items():
        runtime = open_runtime(spec)
        result[label] = top1(np.concatenate([runtime.infer(c)[0] for c in chunks]), cifar.test_labels)
    return result, {r["runtime"]: r["passed"] for r in verified["rows"]}


SWEEP = {  # the chosen settings, then one change at a time (and the settings before issue 21)
    "chosen (U8S8, Conv/MatMul/Gemm)": {},
    "S8S8 activations": {"activation_type": "QInt8"},
    "every op type ORT quantizes (before issue 21)": {"op_types": ()},
    "symmetric activations": {"activation_symmetric": True},
    "per-tensor weights": {"per_channel": False},
    "first and last in fp32": {"fp32_first_last": True},
    "no quant_pre_process": {"preprocess": False},
}
SWEEP_MODELS = ("vanillanet_5", "resnet18_cifar")  # 1x1 and depthwise convs; 3x3 convs and residual additions


def sweep(speed_arts: dict, trained_arts: dict, data: Path, out: Path, threads: int, rounds: int) -> list[str]:
    """Each SWEEP setting quantized for each of SWEEP_MODELS, timed against that model's ONNX Runtime fp32
    (interleaved), judged on the photographs and, where the model was trained here, on the held-out digits."""
    from cnnexport import int8
    from cnnexport.accuracy import top1
    from cnnexport.cifar import read_cifar_tarball
    from cnnexport.compare import agreement
    from cnnexport.images import in_batches, preprocess, random_batch, sample_photos
    from cnnexport.runtimes import RuntimeSpec, open_runtime

    def quantized(art: Path, index: int, changes: dict, calibration) -> str:
        path, scratch = out / "sweep" / f"{art.parent.name}-{art.name}-{index}.onnx", out / "sweep" / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        int8.quantize(str(art / "inference.onnx"), str(path), int8.calibration_batches(calibration, _input(art)),
                      str(scratch), dataclasses.replace(int8.SETTINGS, **changes))
        return str(path)

    cifar = read_cifar_tarball(data)
    calls, quality = {}, {}
    for model in SWEEP_MODELS:
        speed_art, trained_art = speed_arts[model], trained_arts.get(model)
        photos = preprocess(sample_photos(), _input(speed_art))
        test = (in_batches(preprocess({str(i): im for i, im in enumerate(cifar.test_images)}, _input(trained_art)), 50)
                if trained_art else [])
        fp32 = open_runtime(RuntimeSpec("onnxruntime", str(speed_art / "inference.onnx"), threads=threads))
        reference = fp32.infer(photos)[0]
        batches = {b: random_batch(b, _input(speed_art)["shape"][-1], seed=b) for b in BATCHES}
        for b in BATCHES:
            calls[(model, "fp32", b)] = lambda r=fp32, x=batches[b]: r.infer(x)
        for index, (name, changes) in enumerate(SWEEP.items()):
            fast = quantized(speed_art, index, changes, int8.calibration_images(None))
            accurate = quantized(trained_art, index, changes, int8.calibration_images(str(data))) if trained_art else None
            for kind in ("onnxruntime", "openvino"):
                runtime = open_runtime(RuntimeSpec(kind, fast, threads=threads, precision="int8"))
                agree = agreement(reference, runtime.infer(photos)[0])
                held_out = "-"
                if accurate:
                    trained = open_runtime(RuntimeSpec(kind, accurate, threads=threads, precision="int8"))
                    held_out = f"{top1(np.concatenate([trained.infer(c)[0] for c in test]), cifar.test_labels):.2%}"
                quality[(model, name, kind)] = agree.rel_l2, agree.top1, held_out
                for b in BATCHES:
                    calls[(model, f"{name} {kind}", b)] = lambda r=runtime, x=batches[b]: r.infer(x)
    p50 = interleaved(calls, rounds)
    lines = ["| model | settings | runtime | batch 1 ms | vs ORT fp32 | batch 8 ms | vs ORT fp32 | rel L2 (photos) | "
             "top-1 agreement | held-out top-1 |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model in SWEEP_MODELS:
        for name in SWEEP:
            for kind in ("onnxruntime", "openvino"):
                ms = {b: p50[(model, f"{name} {kind}", b)] for b in BATCHES}
                figures = " | ".join(f"{ms[b]:.2f} | {p50[(model, 'fp32', b)] / ms[b]:.2f}x" for b in BATCHES)
                rel, agree, held_out = quality[(model, name, kind)]
                lines.append(f"| {model} | {name} | {kind} | {figures} | {rel:.3f} | {agree:.0%} | {held_out} |")
    return lines


def _input(art: Path) -> dict:
    return json.loads((art / "manifest.json").read_text())["input"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", default="/tmp/cpu-runtimes-bench")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false")
    parser.add_argument("--no-train", dest="train", action="store_false", help="speed only")
    parser.add_argument("--keep", action="store_true",
                        help="reuse the artifacts and training runs an earlier run left in --out (time and measure again)")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    (out / "speed").mkdir(parents=True, exist_ok=True)
    (out / "trained").mkdir(exist_ok=True)
    data = out / "digits.tar.gz"
    if not data.is_file():
        digits_cifar(data, n_train=1397, n_test=400)
    threads = str(args.threads)

    speed_arts, trained_arts = {}, {}
    for name, size in MODELS.items():
        speed_arts[name] = out / "speed" / f"{name}-fused"
        if (speed_arts[name] / "verify.json").is_file():
            continue
        cnnexport(name, "--weights", str(perturbed_weights(name, out)), "--img-size", str(size), "--fuse",
                  "--onnx", "--fp16", "--int8", "--out", str(speed_arts[name]))
        cnnexport("verify", str(speed_arts[name]), "--no-bench", "--no-reference-evaluator", "--threads", threads)
    for name, (size, epochs, options) in TRAINED.items() if args.train else ():
        run, trained_arts[name] = out / "runs" / name, out / "trained" / f"{name}-fused"
        if (trained_arts[name] / "manifest.json").is_file():
            continue
        if not (run / "best_model.pdparams").is_file():
            cnnexport("train", name, "--data", str(data), "--epochs", str(epochs), "--batch-size", "32",
                      "--img-size", str(size), "--device", "cpu", "--out", str(run), *options)
        cnnexport(name, "--weights", str(run / "best_model.pdparams"), "--img-size", str(size), "--fuse", "--onnx",
                  "--fp16", "--int8", "--calib-data", str(data), "--out", str(trained_arts[name]))

    print(f"\n### Speed: p50 ms, {args.threads} threads, median of {args.rounds} interleaved rounds\n")
    print("| artifact | runtime | batch 1 | vs ORT fp32 | vs Paddle fp32 | batch 8 | vs ORT fp32 | vs Paddle fp32 | verify |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    recommended = []
    for name, art in speed_arts.items():
        p50, recommendation = speed(art, args.threads, args.rounds)
        passed = {r["runtime"]: r["passed"] for r in json.loads((art / "verify.json").read_text())["rows"]}
        ort, paddle = "onnxruntime/cpu", next(label for label, _ in p50 if label.startswith("paddle-inference"))
        for label in dict.fromkeys(label for label, _ in p50):
            cells = " | ".join(f"{p50[(label, b)]:.2f} | {p50[(ort, b)] / p50[(label, b)]:.2f}x | "
                               f"{p50[(paddle, b)] / p50[(label, b)]:.2f}x" for b in BATCHES)
            print(f"| {art.name} | {label} | {cells} | {'pass' if passed.get(label) else 'FAIL'} |")
        recommended += [(art.name, rec) for rec in recommendation]
    print("\n### Recommended (fastest verified row, `cnnexport.results.recommend`)\n")
    print("| artifact | batch | runtime | p50 ms | vs Paddle Inference fp32 |\n| --- | --- | --- | --- | --- |")
    for art_name, rec in recommended:
        gain = f"{rec.speedup_vs_paddle_fp32:.2f}x" if rec.speedup_vs_paddle_fp32 else "no verified Paddle row"
        print(f"| {art_name} | {rec.batch} | {rec.runtime} | {rec.p50_ms:.2f} | {gain} |")

    print("\n### Held-out top-1 (digits, 400 test images)\n")
    print("| model (train size) | runtime | top-1 | change (points) | verify |\n| --- | --- | --- | --- | --- |")
    for name, art in trained_arts.items():
        top1, passed = accuracy(art, data, args.threads)
        for label, value in top1.items():
            change = "" if label == "eager" else f"{(value - top1['eager']) * 100:+.2f}"
            verdict = "" if label == "eager" else "pass" if passed.get(label) else "FAIL"
            print(f"| {name} ({TRAINED[name][0]} px, {TRAINED[name][1]} epochs) | {label} | {value:.2%} | {change} | "
                  f"{verdict} |")

    if args.sweep and args.train:
        print("\n### int8 settings (speed at the zoo's input size, held-out top-1 on the model trained here)\n")
        print("\n".join(sweep(speed_arts, trained_arts, data, out, args.threads, args.rounds)))


if __name__ == "__main__":
    main()
