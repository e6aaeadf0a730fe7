"""Beyond classifiers: the networks of tests/dense_nets.py (a segmentation net, logits and a feature
map, a DB text detector), saved by `paddle.jit.save` as the deploy tools write them (Paddle 3 and
legacy programs, PaddleSeg's deploy.yaml, PaddleOCR's inference.yml), imported at deployment sizes
with dynamic height and width, exported with fp16 and int8 variants where asked, and verified. One
row per artifact: its outputs, the sizes checked, the rows verify ran, the worst relative L2 of the
fp32 rows, the lowest decision agreement (argmax per pixel, top-1, or a probability map's 0.5
threshold) of the fp32 rows and of the reduced-precision rows, and the verdict (or the refusal).

    PYTHONPATH=. python benchmarks/dense_models.py [--out DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

from tabulate import tabulate

from cnnexport.artifact import shape_text
from cnnexport.cli import main as cnnexport
from tests import dense_nets

DYNAMIC = [None, 3, None, None]
# (name, net, legacy program, deploy config writer, sizes, export options)
CASES = [
    ("seg (PIR)", "seg", False, None, "256,384x512", ["--fp16", "--int8"]),
    ("seg (legacy, PaddleSeg deploy.yaml)", "seg", True, dense_nets.paddleseg_deploy_yaml, "512", ["--fp16"]),
    ("two_head (legacy)", "two_head", True, None, "224,320x480", ["--fp16"]),
    ("db (PIR, PaddleOCR inference.yml)", "db", False, dense_nets.paddleocr_det_inference_yml, "320,640x480",
     ["--fp16"]),
    ("db int8", "db", False, dense_nets.paddleocr_det_inference_yml, "320", ["--int8"]),
]


def run_case(root: Path, name: str, net: str, legacy: bool, config, sizes: str, options: list[str]) -> list:
    source, out = root / "saved" / name.replace(" ", "_"), root / "artifacts" / name.replace(" ", "_")
    dense_nets.save(dense_nets.build(net), source, legacy=legacy, shape=DYNAMIC,
                    prefix="model" if config is dense_nets.paddleseg_deploy_yaml else "inference")
    if config is not None:
        config(source)
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        code = cnnexport([str(source), "--onnx", *options, "--img-size", sizes, "--out", str(out)])
        if code == 0:
            code = cnnexport(["verify", str(out), "--no-bench"])
    if not (out / "verify.json").is_file():
        return [name, "-", sizes, "-", "-", "-", "-", "refused: " + log.getvalue().strip().splitlines()[-1][:150]]
    manifest = json.loads((out / "manifest.json").read_text())
    report = json.loads((out / "verify.json").read_text())
    rows = [r for r in report["rows"] if r.get("worst")]
    fp32 = [r for r in rows if r["tolerance"]["top1_agreement"] == 1.0]
    reduced = [r for r in rows if r["tolerance"]["top1_agreement"] < 1.0]
    outputs = ", ".join(f"{o['name']} {shape_text(o['shape'])}" for o in manifest["output"]["outputs"])
    return [name, outputs, ", ".join(f"{h}x{w}" for h, w in manifest["input"]["sizes"]), len(report["rows"]),
            f"{max(r['worst']['rel_l2'] for r in fp32):.1e}", f"{min(r['worst']['top1'] for r in fp32):.2%}",
            f"{min(r['worst']['top1'] for r in reduced):.2%}" if reduced else "-",
            "PASS" if report["passed"] else "FAIL"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="where the artifacts go (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.out or scratch)
        table = [run_case(root, *case) for case in CASES]
    print(tabulate(table, headers=["model", "outputs", "sizes checked", "rows", "worst rel L2 (fp32)",
                                   "decision agreement (fp32)", "(fp16/int8/bf16)", "verdict"], tablefmt="github"))


if __name__ == "__main__":
    main()
