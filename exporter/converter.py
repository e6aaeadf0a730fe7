"""What paddle2onnx cannot convert, found on the eager model before the converter runs.

- paddle2onnx 2.1 dies with SIGFPE (a division by zero in its own process) converting an
  `AdaptiveAvgPool2D` whose input map is smaller than its output (VGG's 7x7 pool after five stride-2
  stages at 64 px), which eager Paddle accepts (it repeats pixels). The export refuses such an input
  size up front, naming the layer and the smallest input size at which every such pool shrinks its map.
"""
from __future__ import annotations

import math

from .images import random_batch

SIZE_TRIES = 32  # sizes tried above the estimate when the first one does not shrink every map


def _growing_pools(model, size: int) -> list[tuple[str, list[int], list[int]]] | None:
    """(layer, input H W, output H W) of every AdaptiveAvgPool2D that gets a smaller map than its output
    at input side `size`; None where the model does not run at that size."""
    import paddle
    from paddle import nn

    from .models.fusion import forward_hooks

    found = []

    def hook(name):
        def record(layer, inputs, output):
            (h, w), (oh, ow) = inputs[0].shape[-2:], output.shape[-2:]
            if h < oh or w < ow:
                found.append((name, [h, w], [oh, ow]))
        return record

    pools = [(layer, hook(name)) for name, layer in model.named_sublayers() if isinstance(layer, nn.AdaptiveAvgPool2D)]
    try:
        with forward_hooks(pools), paddle.no_grad():
            model(paddle.to_tensor(random_batch(1, size, 0)))
    except Exception:  # the model's own code at a size it was not asked about
        return None
    return found


def adaptive_pool_problem(model, size: int, max_size: int) -> str | None:
    """Why paddle2onnx cannot convert `model` at input side `size` (an AdaptiveAvgPool2D that would get a
    smaller map than its output), with the smallest side up to `max_size` at which it can; None if it can."""
    from paddle import nn

    if not any(isinstance(layer, nn.AdaptiveAvgPool2D) for layer in model.sublayers()):
        return None
    growing = _growing_pools(model, size)
    if not growing:
        return None
    name, (h, w), (oh, ow) = growing[0]
    estimate = math.ceil(size * max(o / i for _, ins, outs in growing for i, o in zip(ins, outs)))
    works = next((s for s in range(estimate, min(estimate + SIZE_TRIES, max_size + 1))
                  if _growing_pools(model, s) == []), None)
    low = size + 1
    while works is not None and low < works:  # the smallest that works: maps grow with the input side
        middle = (low + works) // 2
        low, works = (low, middle) if _growing_pools(model, middle) == [] else (middle + 1, works)
    advice = f"export at --img-size {works} or more" if works else "export at a larger --img-size"
    return (f"--img-size {size}: AdaptiveAvgPool2D {name} gets a {h}x{w} map for its {oh}x{ow} output, which "
            f"paddle2onnx 2.1 cannot convert (it dies with SIGFPE): {advice}, or without --onnx")
