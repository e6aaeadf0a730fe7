"""Parity of one artifact per family in every stack that deploys it, on the photographs, against the
eager model: verify's rows (Paddle Inference as-is and as PaddleClas configures it, ONNX Runtime,
OpenVINO on ONNX and on the legacy program) and the stacks' own predictors (PaddleClas's
ClsPredictor, PaddleX's image-classification predictor, each with its own preprocessing from
inference.yml and the photographs as PNG files). Each family's small input size (randomised
weights at MogaNet's 224 px overflow to NaN in the eager model itself), randomised weights.

    python benchmarks/deploy_stacks.py [--out DIR] [--models a,b]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import paddle
from tabulate import tabulate

from cnnexport import models
from cnnexport.cli import main as cnnexport
from cnnexport.compare import agreement
from cnnexport.images import save_photos
from cnnexport.models.fusion import perturb

REPO = Path(__file__).resolve().parent.parent


def figures(got, want: np.ndarray) -> str:
    found = agreement(want, np.asarray(got))
    return f"{found.rel_l2:.1e} / {found.top1:.0%}"


def stack_runs(stack: str, artifacts: list[Path], photo_dir: Path, scratch: Path) -> dict:
    results = scratch / f"{stack}.json"
    subprocess.run([sys.executable, "-m", "tests.deploy_consumers", stack, str(results), str(photo_dir),
                    *map(str, artifacts)], cwd=REPO, check=True, capture_output=True)
    return json.loads(results.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="where the artifacts go (default: a temporary directory)")
    parser.add_argument("--models", default=",".join(models.family_info(f).representative
                                                     for f in models.list_families()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        photo_dir = Path(scratch) / "photos"
        photo_dir.mkdir()
        save_photos(photo_dir)
        artifacts = []
        for name in args.models.split(","):
            paddle.seed(7)
            weights = Path(scratch) / f"{name}.pdparams"
            size = models.model_info(name).small_input_size
            paddle.save(perturb(models.create(name, img_size=size)).state_dict(), str(weights))
            artifact = root / f"{name}-fused"
            assert cnnexport([name, "--weights", str(weights), "--img-size", str(size), "--fuse", "--onnx",
                              "--out", str(artifact)]) == 0
            assert cnnexport(["verify", str(artifact), "--no-bench", "--no-reference-evaluator"]) == 0
            artifacts.append(artifact)
        consumers = {stack: stack_runs(stack, artifacts, photo_dir, Path(scratch)) for stack in ("paddleclas", "paddlex")}
        table = []
        for artifact in artifacts:
            with np.load(artifact / "reference.npz", allow_pickle=False) as bundle:
                want = bundle["output:photos"].astype(np.float64)
            report = json.loads((artifact / "verify.json").read_text())
            row = {"artifact": artifact.name}
            for r in report["rows"]:
                row[r["runtime"]] = f"{r['batches']['photos']['rel_l2']:.1e} / {r['batches']['photos']['top1']:.0%}"
            for stack, runs in consumers.items():
                for mode, run in runs[artifact.name].items():
                    row[f"{stack} {mode}"] = figures(run["logits"], want)
            table.append(row)
        columns = list(dict.fromkeys(k for row in table for k in row))
        print("rel L2 / top-1 agreement with the eager model on the 8 photographs (- : not available)")
        print(tabulate([[row.get(c, "-") for c in columns] for row in table], headers=columns, tablefmt="github"))


if __name__ == "__main__":
    main()
