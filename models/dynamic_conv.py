"""Dynamic convolution (Chen et al., CVPR 2020), as in seed 001: AlexNet-DY and its AlexNet-BN baseline.

A DYConv2D holds K expert kernels; a squeeze-and-excite style router turns each input into K
softmax weights (with a temperature, annealed from 30 to 1 during training: the router's
`temperature` training knob, see models.training) and the sample is convolved with the weighted
sum of the experts.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from .alexnet import AlexNet
from .fusion import bn_affine, set_param
from .registry import HALF_MEAN, HALF_STD, register_family, register_model
from .training import FLIP, MultiStepPerEpoch, Recipe, SteppedDecay, Transform, scaled


class RoutingAttention(nn.Layer):
    """Per-sample softmax weights over the experts, from the globally pooled input."""

    training_knob = "temperature"

    def __init__(self, inplanes: int, num_experts: int, ratio: int = 4, temperature: float = 30,
                 end_epochs: int = 10):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2D(1)
        self.net = nn.Sequential(
            nn.Conv2D(inplanes, inplanes // ratio, 1), nn.ReLU(), nn.Conv2D(inplanes // ratio, num_experts, 1))
        self.temperature = temperature
        # The notebook's linear schedule: `step` is subtracted once per epoch, clamped at 1.
        self.step = temperature // end_epochs

    def update_temperature(self) -> float:
        if self.temperature > 1:
            self.temperature = max(self.temperature - self.step, 1)
        return self.temperature

    def set_training_knob(self, temperature: float) -> None:
        self.temperature = temperature

    def forward(self, x):
        logits = paddle.flatten(self.net(self.avgpool(x)), 1)
        return F.softmax(logits / self.temperature, axis=-1)


class DYConv2D(nn.Layer):
    """Dynamic 2-D convolution with `num_experts` kernels mixed per sample.

    Training runs the notebook's formulation (`forward_per_sample`): one kernel per sample,
    the batch folded into channels of a grouped conv whose group count is `groups * batch`.
    Evaluation runs the batch-agnostic form (`forward_experts`), which a static graph with a
    dynamic batch axis can express: a conv is linear in its kernel, so
    sum_k a_k (W_k * x) = (sum_k a_k W_k) * x, i.e. one conv with K*out channels, then the
    attention-weighted sum over the K outputs.
    """

    def __init__(self, inplanes: int, outplanes: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias_attr: bool = True, num_experts: int = 4,
                 temperature: float = 30):
        super().__init__()
        self.inplanes, self.outplanes, self.kernel_size = inplanes, outplanes, kernel_size
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.num_experts = num_experts
        self.routing = RoutingAttention(inplanes, num_experts, temperature=temperature)
        kaiming = nn.initializer.KaimingNormal()
        self.weight = self.create_parameter(
            [num_experts, outplanes, inplanes // groups, kernel_size, kernel_size], default_initializer=kaiming)
        self.bias = self.create_parameter([num_experts, outplanes], default_initializer=kaiming) if bias_attr else None

    def _conv(self, x, weight, bias, groups):
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding,
                        dilation=self.dilation, groups=groups)

    def forward(self, x):
        return self.forward_per_sample(x) if self.training else self.forward_experts(x)

    def forward_per_sample(self, x):
        b, _, h, w = x.shape
        attn = self.routing(x)
        weight = paddle.mm(attn, self.weight.reshape([self.num_experts, -1]))
        weight = weight.reshape([-1, self.inplanes // self.groups, self.kernel_size, self.kernel_size])
        bias = None if self.bias is None else paddle.mm(attn, self.bias).reshape([-1])
        out = self._conv(x.reshape([1, -1, h, w]), weight, bias, self.groups * b)
        return out.reshape([b, self.outplanes, out.shape[-2], out.shape[-1]])

    def forward_experts(self, x):
        k, g, out_per_group = self.num_experts, self.groups, self.outplanes // self.groups
        attn = self.routing(x)  # [N, K]
        # Order the K*out output channels group-major so that each expert's kernels stay in
        # their own conv group: [g, K, out/g, in/g, kh, kw].
        weight = self.weight.reshape([k, g, out_per_group, -1, self.kernel_size, self.kernel_size])
        weight = weight.transpose([1, 0, 2, 3, 4, 5]).reshape(
            [g * k * out_per_group, -1, self.kernel_size, self.kernel_size])
        y = self._conv(x, weight, None, g)
        y = y.reshape([0, g, k, out_per_group, y.shape[-2], y.shape[-1]])
        y = (y * attn.reshape([0, 1, k, 1, 1, 1])).sum(axis=2)
        y = y.reshape([0, self.outplanes, y.shape[-2], y.shape[-1]])
        if self.bias is not None:
            y = y + paddle.mm(attn, self.bias).reshape([0, self.outplanes, 1, 1])
        return y

    def fold_bn(self, bn: nn.Layer) -> None:
        """bn(dyconv(x)) -> dyconv'(x): scale every expert's kernel, give every expert the shift.

        Exact because the routing weights sum to 1: sum_k a_k (s*W_k*x + s*b_k + t)
        = s * sum_k a_k (W_k*x + b_k) + t.
        """
        scale, shift = bn_affine(bn)
        set_param(self, "weight", self.weight.numpy().astype("float64") * scale.reshape(1, -1, 1, 1, 1))
        bias = self.bias.numpy().astype("float64") if self.bias is not None else 0.0
        set_param(self, "bias", np.broadcast_to(bias * scale + shift, (self.num_experts, self.outplanes)))

    def macs(self, x, y) -> int:
        """The per-sample aggregated kernel's conv plus the kernel mixing itself."""
        per_sample_kernel = self.weight[0].numel().item()
        conv = y.numel().item() * (self.inplanes // self.groups) * self.kernel_size ** 2
        return int(conv + x.shape[0] * self.num_experts * per_sample_kernel)


def _augment(s: int) -> list[Transform]:
    resized = scaled(s, 130, 128)
    return [("Resize", {"size": (resized, resized)}), ("RandomResizedCrop", {"size": s}), FLIP]


register_family(
    "dynamic_conv", representative="alexnet_dy", small_input_size=64,
    # Seed 001. The routing temperature drops from 30 by 3 per epoch to 1 at epoch 10
    # (`RoutingAttention.update_temperature`); AlexNet-BN has no router, so the schedule skips it.
    recipe=Recipe(optimizer="SGD", lr=0.1, weight_decay=1e-5, lr_schedule=MultiStepPerEpoch((30, 60, 90)),
                  epochs=100, batch_size=512, augment=_augment,
                  knobs=(SteppedDecay("temperature", start=30.0, end_epoch=10),)),
)


@register_model("dynamic_conv", 128, params=8_324_368, macs=98_480_384, mean=HALF_MEAN, std=HALF_STD)
def alexnet_dy(num_classes, img_size, seed_compat, temperature: float = 1.0, num_experts: int = 2):
    """AlexNet with 2-expert dynamic convolutions in conv3-5.

    Built at the routing temperature of evaluation (1, as the notebook's evaluation cells set it);
    `cnnexport train` starts at 30 and anneals it.
    """
    del seed_compat  # no notebook quirk changes AlexNet-DY's output

    def dy(cin, cout, **kw):
        return DYConv2D(cin, cout, num_experts=num_experts, temperature=temperature, **kw)

    return AlexNet(num_classes, img_size, batch_norm=True, pool=lambda: nn.MaxPool2D(3, 2), late_conv=dy)


@register_model("dynamic_conv", 128, params=7_526_794, macs=96_909_312, mean=HALF_MEAN, std=HALF_STD,
                baseline=True)
def alexnet_bn(num_classes, img_size, seed_compat):
    """AlexNet with BatchNorm: the dynamic-convolution notebook's baseline."""
    del seed_compat
    return AlexNet(num_classes, img_size, batch_norm=True, pool=lambda: nn.MaxPool2D(3, 2))
