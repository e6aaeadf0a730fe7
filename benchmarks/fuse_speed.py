"""What `--fuse` buys in eager Paddle on this CPU: latency unfused vs fused, one variant per family.

    python benchmarks/fuse_speed.py [--models vanillanet_5,moganet_xtiny,...] [--batches 1,8] [--runs 10]

Each model runs at its default input size with non-trivial BatchNorm statistics. Unfused and fused
calls are interleaved (one of each per round), so that the machine's noise hits both alike; the
ratio of medians is the figure to read, not the milliseconds.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import paddle
from tabulate import tabulate

from cnnexport import models
from cnnexport.rewrite import fuse
from cnnexport.models.fusion import perturb

DEFAULT_MODELS = "vanillanet_5,moganet_xtiny,alexnet_dy,alexnet_bn,alexnet_softpool,orthonet18,resnet18_cifar"


def interleaved_medians(first, second, x, runs: int) -> tuple[float, float]:
    """Median milliseconds of each model, timed in alternation after a warm-up of both."""
    times: tuple[list[float], list[float]] = ([], [])
    with paddle.no_grad():
        for _ in range(2):
            first(x), second(x)
        for _ in range(runs):
            for model, spent in zip((first, second), times):
                start = time.perf_counter()
                model(x)
                spent.append(time.perf_counter() - start)
    return float(np.median(times[0]) * 1e3), float(np.median(times[1]) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        paddle.seed(0)
        model = models.create(name)
        perturb(model)
        model.eval()
        fused, summary = fuse(model)
        size = models.model_info(name).input_size
        for batch in map(int, args.batches.split(",")):
            x = paddle.randn([batch, 3, size, size])
            unfused_ms, fused_ms = interleaved_medians(model, fused, x, args.runs)
            rows.append([name, size, batch, f"{unfused_ms:.1f}", f"{fused_ms:.1f}", f"{unfused_ms / fused_ms:.2f}x",
                         f"{summary.params_before / 1e6:.1f}M -> {summary.params_after / 1e6:.1f}M"])
            print(f"{name} b{batch}: {unfused_ms:.1f} ms -> {fused_ms:.1f} ms", flush=True)
    print(tabulate(rows, headers=["model", "input", "batch", "unfused ms", "fused ms", "speed-up", "params"],
                   tablefmt="github"))
    print(f"\npaddle {paddle.__version__}, {paddle.get_device()}, threads: Paddle's default; median of {args.runs} "
          "interleaved runs")


if __name__ == "__main__":
    main()
