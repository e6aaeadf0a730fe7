"""Export one default variant per family, fused and unfused, and verify them all: parity and speed.

    python benchmarks/zoo_report.py [--out bench-artifacts] [--models vanillanet_5,...] [--batch-sizes 1,8]
    python benchmarks/zoo_report.py --device gpu     # on a GPU machine (with fp16 variants)

Weights are the fresh initialisation with randomised BatchNorm statistics and affines (saved as
`<out>/weights/<model>.pdparams`), so that folding is really exercised. Writes `<out>/REPORT.md`
and `<out>/latency.png` through `cnnexport verify`; copy the tables into benchmarks/RESULTS.md
with the machine they were measured on.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import paddle

from cnnexport import models
from cnnexport.cli import main as cnnexport
from cnnexport.models.fusion import perturb

DEFAULT_MODELS = "vanillanet_5,moganet_xtiny,alexnet_dy,alexnet_softpool,orthonet18"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-artifacts")
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--batch-sizes", default="")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    args = parser.parse_args()
    out = Path(args.out)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        paddle.seed(0)
        model = models.create(name)
        perturb(model)
        weights = out / "weights" / f"{name}.pdparams"
        paddle.save(model.state_dict(), str(weights))
        for fused in (True, False):
            # fp16 is a GPU deployment format: ONNX Runtime's CPU provider runs most of it through casts.
            extra = (["--fuse"] + (["--fp16"] if args.device == "gpu" else [])) if fused else []
            code = cnnexport([name, "--weights", str(weights), "--onnx", *extra,
                              "--out", str(out / f"{name}{'-fused' if fused else ''}")])
            if code:
                return code
    verify = ["verify", *(str(p) for p in sorted(out.iterdir()) if (p / "manifest.json").is_file()),
              "--device", args.device]
    return cnnexport(verify + (["--batch-sizes", args.batch_sizes] if args.batch_sizes else []))


if __name__ == "__main__":
    raise SystemExit(main())
