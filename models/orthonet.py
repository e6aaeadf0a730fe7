"""OrthoNets (Salman et al., BigData 2023) and the CIFAR ResNet-18 baseline, as in seed 002.

The baseline is the notebook's: `paddle.vision.models.resnet18` with a 3x3 stride-1 stem conv
(no bias) and no max-pool; this module builds the same layers under the same names
(`conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`, `fc`, ...).

The seed does not show OrthoNet's code. Following the paper (and its reference code), an
OrthoNet block is a ResNet block whose residual branch is rescaled by SE-style channel
attention, where the squeeze is not global average pooling but a projection of each channel's
H x W map onto its own fixed filter from a random orthonormal bank. The excitation is two
bias-free linears (reduction 16), ReLU between, sigmoid after.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from .fusion import fold_bn_into_conv
from .registry import HALF_MEAN, HALF_STD, check_size, register_family, register_model
from .training import FLIP, JITTER, ROTATE, MultiStepPerEpoch, Recipe, Transform, scaled


def orthonormal_filters(channels: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """`channels` filters of size height x width, orthonormal as vectors of R^(h*w).

    Gram-Schmidt on uniform random vectors, computed as a QR decomposition with R's diagonal made
    positive (the same basis, numerically stabler). R^(h*w) holds at most h*w orthonormal vectors:
    with more channels than that, the h*w filters are repeated.
    """
    n = height * width
    q, r = np.linalg.qr(rng.random((n, min(channels, n))))
    basis = (q * np.sign(np.diag(r))).T  # rows: orthonormal filters
    reps = -(-channels // n)
    return np.tile(basis, (reps, 1))[:channels].reshape(channels, height, width).astype("float32")


class OrthoAttention(nn.Layer):
    """Channel attention squeezed by a fixed orthonormal filter bank (a persistable buffer)."""

    def __init__(self, channels: int, height: int, rng: np.random.Generator, reduction: int = 16):
        super().__init__()
        self.register_buffer("filters", paddle.to_tensor(orthonormal_filters(channels, height, height, rng)))
        hidden = max(round(channels / reduction), 1)
        self.excitation = nn.Sequential(
            nn.Linear(channels, hidden, bias_attr=False), nn.ReLU(),
            nn.Linear(hidden, channels, bias_attr=False), nn.Sigmoid())

    def forward(self, x):
        size = self.filters.shape[-2:]
        if list(x.shape[-2:]) != list(size):
            x = F.adaptive_avg_pool2d(x, size)
        squeezed = (x * self.filters).sum(axis=[2, 3])
        return self.excitation(squeezed).reshape([0, -1, 1, 1])


class _ResidualBlock(nn.Layer):
    """Conv/BN pairs named convN/bnN, an optional downsample, optional orthogonal attention."""

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.residual(x)
        if self.attn is not None:
            out = out * self.attn(out)
        return F.relu(out + identity)

    def fuse(self, log) -> None:
        for i in range(1, self.n_convs + 1):
            bn = getattr(self, f"bn{i}")
            if isinstance(bn, nn.BatchNorm2D):
                fold_bn_into_conv(getattr(self, f"conv{i}"), bn)
                setattr(self, f"bn{i}", nn.Identity())
                log.folded(f"bn{i}", into=f"conv{i}")


class BasicBlock(_ResidualBlock):
    expansion = 1
    n_convs = 2

    def __init__(self, inplanes, planes, stride=1, downsample=None, attn=None):
        super().__init__()
        self.conv1 = nn.Conv2D(inplanes, planes, 3, stride=stride, padding=1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2D(planes, planes, 3, padding=1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(planes)
        self.downsample = downsample
        self.attn = attn

    def residual(self, x):
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class BottleneckBlock(_ResidualBlock):
    expansion = 4
    n_convs = 3

    def __init__(self, inplanes, planes, stride=1, downsample=None, attn=None):
        super().__init__()
        self.conv1 = nn.Conv2D(inplanes, planes, 1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(planes)
        self.conv2 = nn.Conv2D(planes, planes, 3, stride=stride, padding=1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(planes)
        self.conv3 = nn.Conv2D(planes, planes * 4, 1, bias_attr=False)
        self.bn3 = nn.BatchNorm2D(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.attn = attn

    def residual(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))


class CifarResNet(nn.Layer):
    """ResNet with a 3x3 stride-1 stem and no max-pool; `orthogonal=True` makes it an OrthoNet."""

    def __init__(self, block, layers, num_classes: int, img_size: int, orthogonal: bool = False,
                 filter_seed: int = 0):
        super().__init__()
        check_size(img_size, img_size % 8 == 0, "multiples of 8 px")
        rng = np.random.default_rng(filter_seed)
        self.inplanes = 64
        self.conv1 = nn.Conv2D(3, 64, 3, padding=1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity()
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), layers)):
            side = img_size // 2 ** i  # this stage's spatial size: the orthogonal filters' size
            attn = partial(OrthoAttention, planes * block.expansion, side, rng) if orthogonal else None
            self.add_sublayer(f"layer{i + 1}", self._make_layer(block, planes, depth, 1 if i == 0 else 2, attn))
        self.avgpool = nn.AdaptiveAvgPool2D((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, depth, stride, attn):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2D(self.inplanes, planes * block.expansion, 1, stride=stride, bias_attr=False),
                nn.BatchNorm2D(planes * block.expansion))
        blocks = [block(self.inplanes, planes, stride, downsample, attn() if attn else None)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes, attn=attn() if attn else None) for _ in range(1, depth)]
        return nn.Sequential(*blocks)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(paddle.flatten(self.avgpool(x), 1))

    def fuse(self, log) -> None:
        if isinstance(self.bn1, nn.BatchNorm2D):
            fold_bn_into_conv(self.conv1, self.bn1)
            self.bn1 = nn.Identity()
            log.folded("bn1", into="conv1")


def _augment(s: int) -> list[Transform]:
    # The notebook crops 32 px CIFAR images at 32 px; the resize makes that hold at any size
    # (it returns a 32 px image unchanged).
    return [("Resize", {"size": (s, s)}), ("RandomCrop", {"size": s, "padding": scaled(s, 4, 32)}),
            JITTER, FLIP, ROTATE]


register_family(
    "orthonet", representative="orthonet18", small_input_size=8,  # seed 002
    recipe=Recipe(optimizer="Momentum", lr=0.1, weight_decay=5e-4, lr_schedule=MultiStepPerEpoch((30, 60, 90)),
                  epochs=100, batch_size=256, augment=_augment, optimizer_kwargs={"momentum": 0.9}),
)

_CIFAR = dict(mean=HALF_MEAN, std=HALF_STD)


@register_model("orthonet", 32, params=11_183_562, macs=555_422_720, baseline=True, **_CIFAR)
def resnet18_cifar(num_classes, img_size, seed_compat):
    """ResNet-18 for CIFAR (3x3 stem, no max-pool): the OrthoNet notebook's baseline."""
    del seed_compat
    return CifarResNet(BasicBlock, [2, 2, 2, 2], num_classes, img_size)


@register_model("orthonet", 32, params=11_270_602, macs=555_509_760, **_CIFAR)
def orthonet18(num_classes, img_size, seed_compat, filter_seed: int = 0):
    """OrthoNet-18: ResNet-18 (CIFAR stem) with orthogonal channel attention in every block."""
    del seed_compat
    return CifarResNet(BasicBlock, [2, 2, 2, 2], num_classes, img_size, orthogonal=True, filter_seed=filter_seed)


@register_model("orthonet", 32, params=21_456_330, macs=1_159_559_680, **_CIFAR)
def orthonet34(num_classes, img_size, seed_compat, filter_seed: int = 0):
    """OrthoNet-34."""
    del seed_compat
    return CifarResNet(BasicBlock, [3, 4, 6, 3], num_classes, img_size, orthogonal=True, filter_seed=filter_seed)


@register_model("orthonet", 32, params=26_088_906, macs=1_300_344_832, **_CIFAR)
def orthonet50(num_classes, img_size, seed_compat, filter_seed: int = 0):
    """OrthoNet-50 (bottleneck blocks)."""
    del seed_compat
    return CifarResNet(BottleneckBlock, [3, 4, 6, 3], num_classes, img_size, orthogonal=True,
                       filter_seed=filter_seed)
