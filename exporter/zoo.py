"""The zoo table behind `cnnexport list`: name, family, input size, classes, parameters, FLOPs.

Parameters come from a model built under `paddle.LazyGuard` (shapes only, instant). FLOPs need a
forward pass (on zero weights: seconds for the largest models), so they are cached per model, input
size and version of the model code in `$CNNEXPORT_CACHE` (default `~/.cache/cnnexport`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tqdm import tqdm

import models
from models.fusion import count_params, macs


def cache_dir() -> Path:
    return Path(os.environ.get("CNNEXPORT_CACHE", Path.home() / ".cache" / "cnnexport"))


def _code_fingerprint() -> str:
    """Changes whenever a model's source (or Paddle) changes: stale FLOPs are never shown."""
    import paddle
    digest = hashlib.sha256(paddle.__version__.encode())
    for path in sorted(Path(models.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _cached_macs(names: list[str]) -> dict[str, int]:
    import paddle
    path = cache_dir() / "macs.json"
    fingerprint = _code_fingerprint()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if cache.get("fingerprint") != fingerprint:
        cache = {"fingerprint": fingerprint, "macs": {}}
    todo = [n for n in names if n not in cache["macs"]]
    for name in tqdm(todo, desc="counting FLOPs (cached after this run)", unit="model", disable=not todo,
                     leave=False):
        # A MAC count needs shapes only: skip the (slow) random initialisation, run on zeros.
        with paddle.LazyGuard():
            model = models.create(name)
        for param in model.parameters():
            param.set_value(paddle.zeros(param.shape, param.dtype))
        cache["macs"][name] = macs(model, models.model_info(name).input_size)
    if todo:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(path)
    return cache["macs"]


def zoo_table(pattern: str | None = None) -> list[dict]:
    import paddle
    names = [n for n in models.list_models() if not pattern or pattern in n or pattern == models.model_info(n).family]
    flops = _cached_macs(names)
    rows = []
    for name in names:
        info = models.model_info(name)
        with paddle.LazyGuard():
            params = count_params(models.create(name))
        rows.append({"name": name, "family": info.family, "input_size": info.input_size,
                     "num_classes": info.num_classes, "params": params, "flops": flops[name]})
    return rows
