"""The eager model's own rounding, the yardstick of the export's checks.

A fixed relative bar (1e-5) refuses exact rewrites of numerically sensitive models: on a model whose
float32 outputs are themselves 8e-5 from the same model computed in float64 (BatchNorms that subtract
a large running mean from a conv's biased output, deep stacks), folding changes the fp32 rounding by as
much, while bringing the outputs closer to the exact ones. So a check that misses the fixed bar is
judged against the model's spread: how far its fp32 outputs are from its fp64 ones. A real change
(a wrong fold, a wrong conversion) moves the outputs by orders of magnitude more.
"""
from __future__ import annotations

import copy

import numpy as np

from .compare import CPU_FP32, Tolerance, rel_l2

SPREAD_FACTOR = 10  # a runtime rounds up to ~4x worse than eager Paddle (measured on a GhostNet); a real error is far larger


def float64_outputs(model, batches: list[np.ndarray]) -> list[list[np.ndarray]] | None:
    """The model's outputs on each batch computed in float64 (on a copy), or None where its code cannot
    run in float64 (a float32 constant made in its forward, an op without a float64 kernel)."""
    try:
        twin = copy.deepcopy(model)
        twin.to(dtype="float64")
        return forward_outputs(twin, [batch.astype(np.float64) for batch in batches])
    except Exception:  # the model's own code: whatever it raises in float64, there is no fp64 yardstick
        return None


def forward_outputs(model, batches: list[np.ndarray]) -> list[list[np.ndarray]]:
    """An eager model's outputs on each batch: its one tensor, or its tuple or list of them, in order."""
    import paddle

    with paddle.no_grad():
        outs = [model(paddle.to_tensor(batch)) for batch in batches]
    return [[t.numpy() for t in (out if isinstance(out, (list, tuple)) else [out])] for out in outs]


def spread(exact: list[np.ndarray], rounded: list[np.ndarray]) -> float:
    """The largest relative L2 distance of float32 outputs from their float64 counterparts."""
    return max(rel_l2(e, r) for e, r in zip(exact, rounded))


def allowed(model_spread: float | None) -> float:
    """The relative L2 bar for a rewrite or a runtime of a model whose fp32 outputs are `model_spread` from
    its fp64 ones: the fixed CPU bar, or a few times the model's own rounding where that is larger."""
    return max(CPU_FP32.rel_l2, SPREAD_FACTOR * (model_spread or 0.0))


SPREAD_IMAGES, SPREAD_SEED = 8, 25  # random images the export measures the model's rounding on, beside its check's


def given_tolerance(rtol: float | None, atol: float | None) -> tuple[Tolerance, dict | None]:
    """The smoke check's fp32 bars from export's --rtol and --atol (1e-5 and none by default), and what the
    manifest records of them (`model.tolerance`, which verify then uses too; None for the default)."""
    tolerance = Tolerance(rtol or CPU_FP32.rel_l2, atol)
    if rtol is None and atol is None:
        return tolerance, None
    return tolerance, {"rel_l2": tolerance.rel_l2, "atol": atol, "fp32_rounding": None, "source": "--rtol/--atol"}


def grounded_tolerance(model, inputs: dict[str, np.ndarray], input_spec: dict,
                       atol: float | None) -> tuple[Tolerance, dict | None]:
    """The smoke check's fp32 bars for an eager model whose own rounding is larger than 1e-5 allows: a few
    times its fp32 distance from its float64 outputs, measured image by image (the rounding differs from
    image to image, and verify judges other batches) on the check's inputs and SPREAD_IMAGES more random
    ones; and the manifest's record of them. The default where the model cannot run in float64."""
    from .images import random_batch

    batch = input_spec["shape"][0] or SPREAD_IMAGES
    batches = [*inputs.values(), *(random_batch(batch, input_spec["sizes"][0], SPREAD_SEED + i)
                                   for i in range(-(-SPREAD_IMAGES // batch)))]
    exact = float64_outputs(model, batches)
    if exact is None:
        return given_tolerance(None, atol)
    model_spread = max(rel_l2(e[n], r[n]) for es, rs in zip(exact, forward_outputs(model, batches))
                       for e, r in zip(es, rs) for n in range(len(e)))
    tolerance = Tolerance(allowed(model_spread), atol)
    return tolerance, {"rel_l2": tolerance.rel_l2, "atol": atol, "fp32_rounding": model_spread,
                       "source": f"{SPREAD_FACTOR}x the eager model's fp32 distance from its float64 outputs"}


def recorded_tolerance(manifest) -> tuple[float | None, float | None]:
    """The relative and absolute bars the export checked the artifact at (`model.tolerance`), if it recorded
    any: verify judges the CPU fp32 rows by the same ones, unless it is given its own."""
    recorded = manifest.model.get("tolerance")
    if not isinstance(recorded, dict):
        return None, None

    def number(value) -> float | None:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None
    return number(recorded.get("rel_l2")), number(recorded.get("atol"))
