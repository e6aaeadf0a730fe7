"""SoftPool (Stergiou et al., ICCV 2021), as in seed 003: AlexNet-SoftPool and its plain AlexNet baseline.

SoftPool replaces each pooling window by the softmax-weighted mean of its activations:
out = sum_i exp(a_i) a_i / sum_j exp(a_j) over the window.
"""
from __future__ import annotations

import paddle
from paddle import nn

from .alexnet import AlexNet
from .registry import register_family, register_model
from .training import FLIP, JITTER, ROTATE, CosinePerIteration, Recipe, Transform, scaled


class SoftPool2D(nn.Layer):
    """Exponentially weighted pooling over k x k windows (no padding, floor mode).

    The naive formula, avg_pool(x * exp(x)) / avg_pool(exp(x)), overflows float32 once an
    activation passes ~88. This computes the same ratio as a softmax within each window: the
    window's k*k strided views are stacked, the per-window maximum is subtracted from the
    log-weights before exp, so the weights are at most 1 and the largest is exactly 1. Only
    slicing, max, exp, sum and div: every ONNX runtime has them.

    `shared_weights=True` is the notebook's variant: the weight map is sum_c exp(x_c), one map
    shared by all channels (the paper weights each channel by its own activations). Its log is
    computed as a stable logsumexp over channels.
    """

    def __init__(self, kernel_size: int, stride: int | None = None, shared_weights: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride or kernel_size
        self.shared_weights = shared_weights

    def _windows(self, t):
        """The k*k strided views of `t`, stacked on a new leading axis: [k*k, N, C, H', W']."""
        k, s = self.kernel_size, self.stride
        out_h = (t.shape[2] - k) // s + 1
        out_w = (t.shape[3] - k) // s + 1
        return paddle.stack([t[:, :, i:i + s * (out_h - 1) + 1:s, j:j + s * (out_w - 1) + 1:s]
                             for i in range(k) for j in range(k)])

    def forward(self, x):
        if self.shared_weights:
            peak = x.max(axis=1, keepdim=True)
            log_weight = peak + paddle.log(paddle.exp(x - peak).sum(axis=1, keepdim=True))
        else:
            log_weight = x
        values, log_weights = self._windows(x), self._windows(log_weight)
        weights = paddle.exp(log_weights - log_weights.max(axis=0, keepdim=True))
        return (values * weights).sum(axis=0) / weights.sum(axis=0)


def _augment(s: int) -> list[Transform]:
    resized = scaled(s, 230, 224)
    return [("Resize", {"size": (resized, resized)}), JITTER,
            ("RandomResizedCrop", {"size": s, "scale": (0.6, 1.0)}), FLIP, ROTATE]


register_family(
    "softpool", representative="alexnet_softpool", small_input_size=64,  # seed 003
    recipe=Recipe(optimizer="Adam", lr=1e-3, weight_decay=1e-5, lr_schedule=CosinePerIteration(), epochs=50,
                  batch_size=128, augment=_augment),
)


def _pooled_alexnet(num_classes, img_size, pool):
    return AlexNet(num_classes, img_size, batch_norm=False, pool=pool)


@register_model("softpool", 224, params=14_601_930, macs=311_098_368)
def alexnet_softpool(num_classes, img_size, seed_compat):
    """AlexNet (no BatchNorm) with 3x3/2 SoftPool in place of max pooling.

    seed_compat=True weights all channels by one shared map, as the notebook does.
    """
    return _pooled_alexnet(num_classes, img_size, lambda: SoftPool2D(3, 2, shared_weights=seed_compat))


@register_model("softpool", 224, params=14_601_930, macs=311_098_368, baseline=True)
def alexnet(num_classes, img_size, seed_compat):
    """AlexNet without BatchNorm: the SoftPool notebook's baseline."""
    del seed_compat
    return _pooled_alexnet(num_classes, img_size, lambda: nn.MaxPool2D(3, 2))
