"""Exact algebra for folding affine layers into neighbouring convolutions and linears.

Every function here rewrites parameters in place and is exact in real arithmetic; the folded
values are computed in float64 and rounded once to the layer's dtype. Which foldings are *valid*
(what feeds what) is the caller's knowledge: a layer's `fuse()` method or a generic pass in
`cnnexport.rewrite`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import paddle
from paddle import nn

from ..images import hw

BATCH_NORMS = (nn.BatchNorm2D, nn.BatchNorm)


class FuseError(RuntimeError):
    """A rewrite that would not be exact for the model as it stands."""


class RewriteLog:
    """What a fusion did, in layer paths of the model being fused.

    Layers' `fuse(log)` methods report with paths relative to themselves; the walker hands each
    one a log scoped to the layer's own path.
    """

    def __init__(self, prefix: str = "", records: dict | None = None):
        self.prefix = prefix
        self.records = records if records is not None else {"folded": [], "kept": [], "rewritten": []}

    def scope(self, name: str) -> RewriteLog:
        return RewriteLog(self._path(name), self.records)

    def _path(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix and name else (self.prefix or name)

    def folded(self, layer: str, into: str) -> None:
        self.records["folded"].append({"layer": self._path(layer), "into": self._path(into)})

    def kept(self, layer: str, reason: str) -> None:
        self.records["kept"].append({"layer": self._path(layer), "reason": reason})

    def rewritten(self, layer: str, what: str) -> None:
        self.records["rewritten"].append({"layer": self._path(layer), "what": what})


def _f64(t) -> np.ndarray:
    return t.numpy().astype(np.float64)


def numpy_dtype(tensor) -> np.dtype:
    return np.dtype(str(tensor.dtype).removeprefix("paddle."))


def set_param(layer: nn.Layer, name: str, value: np.ndarray) -> None:
    """Assign `value` to parameter `name`, creating it (e.g. a missing conv bias) if needed."""
    param = getattr(layer, name, None)
    if param is None:
        param = layer.create_parameter(list(value.shape), is_bias=(name == "bias"))
        setattr(layer, name, param)
    if tuple(param.shape) != value.shape:
        raise ValueError(f"{name}: folded shape {value.shape} != parameter shape {tuple(param.shape)}")
    param.set_value(value.astype(numpy_dtype(param)))


def bn_affine(bn: nn.Layer) -> tuple[np.ndarray, np.ndarray]:
    """Inference-time BatchNorm as y = scale * x + shift, per channel (float64)."""
    scale = _f64(bn.weight) / np.sqrt(_f64(bn._variance) + bn._epsilon)
    return scale, _f64(bn.bias) - _f64(bn._mean) * scale


def conv_bias(conv: nn.Layer, out_channels: int) -> np.ndarray:
    return _f64(conv.bias) if conv.bias is not None else np.zeros(out_channels)


def scale_conv_output(conv: nn.Layer, scale: np.ndarray, shift: np.ndarray | None = None) -> None:
    """conv(x) * scale + shift  ->  conv'(x), for per-output-channel scale and shift."""
    w = _f64(conv.weight)
    shape = (-1,) + (1,) * (w.ndim - 1)
    set_param(conv, "weight", w * scale.reshape(shape))
    bias = conv_bias(conv, w.shape[0]) * scale
    set_param(conv, "bias", bias if shift is None else bias + shift)


def fold_bn_into_conv(conv: nn.Conv2D, bn: nn.Layer) -> None:
    """bn(conv(x)) -> conv'(x). Any groups, dilation, stride or padding: BN acts on the output."""
    scale, shift = bn_affine(bn)
    scale_conv_output(conv, scale, shift)


def is_unpadded(conv: nn.Conv2D) -> bool:
    return conv._padding_algorithm == "VALID" or not any(conv._updated_padding)


def fold_affine_into_next_conv(scale: np.ndarray, shift: np.ndarray, conv: nn.Conv2D) -> None:
    """conv(scale * x + shift) -> conv'(x), exact only for an unpadded, ungrouped conv.

    Padding would insert zeros *after* the affine in the original but *before* it in the folded
    form, so the border outputs would differ; the caller must not ask for that.
    """
    if not is_unpadded(conv) or conv._groups != 1:
        raise ValueError("folding an affine into a padded or grouped conv is not exact")
    w = _f64(conv.weight)
    bias = conv_bias(conv, w.shape[0]) + np.einsum("oikl,i->o", w, shift)
    set_param(conv, "weight", w * scale.reshape(1, -1, 1, 1))
    set_param(conv, "bias", bias)


def fold_affine_into_linear(scale: np.ndarray, shift: np.ndarray, linear: nn.Linear) -> None:
    """linear(scale * x + shift) -> linear'(x); Paddle's Linear weight is [in, out]."""
    w = _f64(linear.weight)
    bias = (_f64(linear.bias) if linear.bias is not None else np.zeros(w.shape[1])) + shift @ w
    set_param(linear, "weight", w * scale[:, None])
    set_param(linear, "bias", bias)


def merge_into_pointwise(first: nn.Conv2D, pointwise: nn.Conv2D) -> nn.Conv2D:
    """pointwise(first(x)) -> first'(x), for a 1x1, stride-1, unpadded, ungrouped `pointwise`.

    `first` keeps its own kernel size, stride and padding; its output channels become those of
    `pointwise`.
    """
    w2 = _f64(pointwise.weight)
    if w2.shape[2:] != (1, 1) or not is_unpadded(pointwise) or pointwise._groups != 1 or first._groups != 1:
        raise ValueError("only an ungrouped, unpadded 1x1 conv can be merged into the conv before it")
    w2 = w2[:, :, 0, 0]
    w1 = _f64(first.weight)
    merged = nn.Conv2D(first._in_channels, pointwise._out_channels, first._kernel_size,
                       stride=first._stride, padding=first._padding, dilation=first._dilation)
    set_param(merged, "weight", (w2 @ w1.reshape(w1.shape[0], -1)).reshape((w2.shape[0],) + w1.shape[1:]))
    set_param(merged, "bias", w2 @ conv_bias(first, w1.shape[0]) + conv_bias(pointwise, w2.shape[0]))
    return merged


def randomize_batchnorms(model: nn.Layer, seed: int = 0) -> int:
    """Give every BatchNorm non-trivial running statistics and affine parameters.

    Freshly built BNs are identities (mean 0, var 1, gamma 1, beta 0), under which BN folding is
    barely tested; parity tests and benchmarks call this first. Returns how many were changed.
    """
    rng = np.random.default_rng(seed)
    count = 0
    for layer in model.sublayers():
        if isinstance(layer, BATCH_NORMS):
            c = layer.weight.shape[0]
            layer.weight.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
            layer.bias.set_value(rng.normal(0, 0.2, c).astype("float32"))
            layer._mean.set_value(rng.normal(0, 0.2, c).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 2.0, c).astype("float32"))
            count += 1
    return count


def perturb(model: nn.Layer, seed: int = 0) -> nn.Layer:
    """Make every rewrite matter: random BatchNorm statistics and affines (`randomize_batchnorms`),
    and layer scales of a trained size (MogaNet starts its `layer_scales` and ElementScale `sigma`
    at 1e-5, which would hide a wrong fold). Parity tests and benchmarks call this first."""
    randomize_batchnorms(model, seed)
    rng = np.random.default_rng(seed + 1)
    for name, param in model.named_parameters():
        if "layer_scales" in name or name.endswith("sigma.scale"):
            param.set_value(rng.uniform(0.01, 0.1, param.shape).astype("float32"))
    return model


@contextlib.contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Layer, Callable]]) -> Iterator[None]:
    """Forward post-hooks on the given layers for the block, removed however the block ends."""
    handles = [layer.register_forward_post_hook(hook) for layer, hook in hooks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_params(model: nn.Layer) -> int:
    """Parameters as `paddle.summary` counts them: BN running stats included, buffers not."""
    return int(sum(int(np.prod(p.shape)) for p in model.parameters()))


def macs(model: nn.Layer, img_size: int | tuple[int, int], in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (what papers report as "FLOPs"), at a side
    or a (height, width).

    Counts nn.Conv2D and nn.Linear layers, plus any layer with a `macs(x, y)` method for work done
    through functional calls (VanillaNet's activation, dynamic convolution).
    """
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        x = inputs[0]
        if hasattr(layer, "macs"):
            total += int(layer.macs(x, output))
        elif isinstance(layer, nn.Conv2D):
            k = int(np.prod(layer._kernel_size))
            total += int(np.prod(output.shape)) * k * x.shape[1] // layer._groups
        elif isinstance(layer, nn.Linear):
            total += int(np.prod(output.shape)) * layer.weight.shape[0]

    counted = [(m, hook) for m in model.sublayers(include_self=True)
               if hasattr(m, "macs") or isinstance(m, (nn.Conv2D, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with forward_hooks(counted), paddle.no_grad():
            model(paddle.zeros([1, in_channels, *hw(img_size)]))
    finally:
        if was_training:
            model.train()
    return total
