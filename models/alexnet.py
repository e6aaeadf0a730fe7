"""The CIFAR AlexNet skeleton shared by seeds 001 (dynamic convolution) and 003 (SoftPool).

Five convs (48, 128, 192, 192, 128 channels) with three 3x3/2 poolings, then a 2048-2048 MLP.
The seeds differ in what goes into the slots: BatchNorm or not, plain or dynamic convs for the
last three, max or soft pooling. Sub-layer indices follow from the slots, so the state-dict keys
are the notebooks' (`features.8.weight`, `classifier.0.weight`, ...).
"""
from __future__ import annotations

from collections.abc import Callable

import paddle
from paddle import nn

from .registry import check_size


def feature_size(img_size: int) -> int:
    """Side of the last feature map: conv 11/4 (pad 5), then three 3x3 stride-2 pools."""
    side = (img_size - 1) // 4 + 1
    for _ in range(3):
        side = (side - 3) // 2 + 1
    return side


MIN_INPUT = 57  # the smallest input whose last feature map is still 1x1 or more


class AlexNet(nn.Layer):
    def __init__(self, num_classes: int, img_size: int, *, batch_norm: bool,
                 pool: Callable[[], nn.Layer], late_conv: Callable[..., nn.Layer] = nn.Conv2D):
        super().__init__()
        check_size(img_size, img_size >= MIN_INPUT, f"{MIN_INPUT} px or more")
        layers: list[nn.Layer] = []

        def conv_block(conv: nn.Layer, channels: int) -> None:
            layers.append(conv)
            if batch_norm:
                layers.append(nn.BatchNorm2D(channels))
            layers.append(nn.ReLU())

        conv_block(nn.Conv2D(3, 48, kernel_size=11, stride=4, padding=5), 48)
        layers.append(pool())
        conv_block(nn.Conv2D(48, 128, kernel_size=5, padding=2), 128)
        layers.append(pool())
        conv_block(late_conv(128, 192, kernel_size=3, stride=1, padding=1), 192)
        conv_block(late_conv(192, 192, kernel_size=3, stride=1, padding=1), 192)
        conv_block(late_conv(192, 128, kernel_size=3, stride=1, padding=1), 128)
        layers.append(pool())
        self.features = nn.Sequential(*layers)
        side = feature_size(img_size)
        self.classifier = nn.Sequential(
            nn.Linear(side * side * 128, 2048), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(2048, 2048), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(2048, num_classes),
        )

    def forward(self, x):
        return self.classifier(paddle.flatten(self.features(x), 1))
