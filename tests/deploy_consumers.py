"""The deploy stacks' own predictors on cnnexport artifacts, run as their users run them, one process
per stack: PaddleClas 2.6 on Paddle 3 needs FLAGS_enable_pir_api=0 before Paddle is imported (its
predictor always turns on memory optimisation, which works only on the legacy program), and PaddleX
sets up logging and Paddle flags of its own.

    python -m tests.deploy_consumers paddleclas|paddlex RESULTS.json IMAGE_DIR ARTIFACT...

writes {artifact: {mode: {"logits": [[...] per image], ...}}}, the images in sorted order.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def paddleclas(artifact: Path, images: list[Path], scratch: Path) -> dict:
    """PaddleClas's ClsPredictor, configured through its own config loader from a deploy config made of
    its usual Global section and the artifact's PreProcess (PostProcess is left out: raw logits come
    back). Paddle Inference where the artifact has the legacy program, and its ONNX mode."""
    import cv2
    import yaml
    from paddleclas.deploy.python.predict_cls import ClsPredictor
    from paddleclas.deploy.utils.config import get_config

    deploy = yaml.safe_load((artifact / "inference.yml").read_text())
    modes = {"onnx": True, **({"paddle": False} if (artifact / "inference.pdmodel").is_file() else {})}
    out = {}
    for mode, use_onnx in modes.items():
        config_file = scratch / f"{artifact.name}-{mode}.yaml"
        config_file.write_text(yaml.safe_dump({
            "Global": {"inference_model_dir": str(artifact), "use_onnx": use_onnx, "batch_size": len(images),
                       "use_gpu": False, "enable_mkldnn": True, "cpu_num_threads": 2, "enable_benchmark": False,
                       "use_fp16": False, "ir_optim": True, "use_tensorrt": False, "gpu_mem": 100,
                       "enable_profile": False},
            "PreProcess": deploy["PreProcess"]}))
        predictor = ClsPredictor(get_config(str(config_file), show=False))
        batch = [cv2.imread(str(path))[:, :, ::-1] for path in images]  # as its predict_cls.main reads them
        out[mode] = {"logits": predictor.predict(batch).tolist()}
    return out


def paddlex(artifact: Path, images: list[Path], scratch: Path) -> dict:
    """PaddleX's image-classification predictor on the model directory, with its Paddle engine and its
    ONNX Runtime engine, every class asked for (PaddleX rounds scores to 5 decimals)."""
    import numpy as np
    import paddlex

    num_classes = json.loads((artifact / "manifest.json").read_text())["output"]["shape"][-1]
    out = {}
    for engine in ("paddle", "onnxruntime"):
        predictor = paddlex.create_predictor("ResNet18", model_dir=str(artifact), device="cpu", engine=engine)
        results = list(predictor.predict([str(p) for p in images], topk=num_classes))
        logits = []
        for result in results:
            row = [0.0] * num_classes
            for class_id, score in zip(np.ravel(result["class_ids"]), np.ravel(result["scores"])):
                row[int(class_id)] = float(score)
            logits.append(row)
        out[engine] = {"logits": logits, "label_names": [list(r["label_names"]) for r in results]}
    return out


def main(argv: list[str]) -> None:
    stack, results_file, image_dir, *artifacts = argv
    if stack == "paddleclas":
        os.environ["FLAGS_enable_pir_api"] = "0"
    images = sorted(Path(image_dir).iterdir())
    scratch = Path(results_file).parent
    run = {"paddleclas": paddleclas, "paddlex": paddlex}[stack]
    results = {Path(a).name: run(Path(a), images, scratch) for a in artifacts}
    Path(results_file).write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
