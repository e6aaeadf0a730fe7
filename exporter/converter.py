"""What paddle2onnx cannot convert, found on the eager model before the converter runs.

- paddle2onnx 2.1 writes `LeakyRelu` with alpha 0 whatever Paddle's slope (PaddleClas's CSPDarkNet53,
  whose every activation is `nn.LeakyReLU()`, is then 6.6e-2 off in ONNX Runtime while Paddle
  Inference is exact): the program the converter reads has each `nn.LeakyReLU` layer spelt out as
  `max(x, slope * x)`, equal bit for bit for slopes in [0, 1] (`spell_out_leaky_relus`), as the zoo's
  VanillaNet does. A functional `F.leaky_relu` cannot be replaced: the smoke check catches it, and
  the export names paddle2onnx and the first diverging node (`cnnexport.blame`).
- paddle2onnx 2.1 dies with SIGFPE (a division by zero in its own process) converting an
  `AdaptiveAvgPool2D` whose input map is smaller than its output (VGG's 7x7 pool after five stride-2
  stages at 64 px), which eager Paddle accepts (it repeats pixels). The export refuses such an input
  size up front, naming the layer and the smallest input size at which every such pool shrinks its map.
"""
from __future__ import annotations

import math

from paddle import nn

from .images import random_batch

SIZE_TRIES = 32  # sizes tried above the estimate when the first one does not shrink every map


def _growing_pools(model, size: int) -> list[tuple[str, list[int], list[int]]] | None:
    """(layer, input H W, output H W) of every AdaptiveAvgPool2D that gets a smaller map than its output
    at input side `size`; None where the model does not run at that size."""
    import paddle

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


class LeakyReLUAsMax(nn.Layer):
    """`nn.LeakyReLU(slope)` for 0 <= slope <= 1, as paddle2onnx converts it right: max(x, slope * x)."""

    def __init__(self, slope: float):
        super().__init__()
        self.slope = slope

    def forward(self, x):
        import paddle
        return paddle.maximum(x, x * self.slope)


def spell_out_leaky_relus(model: nn.Layer) -> list[str]:
    """Replace every `nn.LeakyReLU` layer of `model` whose slope is in [0, 1] by `LeakyReLUAsMax` (in place);
    returns their names."""
    replaced = []
    for name, layer in list(model.named_sublayers(include_self=True)):
        for child_name, child in list(layer.named_children()):
            if type(child) is nn.LeakyReLU and 0.0 <= child._negative_slope <= 1.0:
                layer._sub_layers[child_name] = LeakyReLUAsMax(child._negative_slope)
                replaced.append(f"{name}.{child_name}" if name else child_name)
    return replaced
