"""A small network in PaddleClas's re-parameterisation style, for the tests: RepVGG-like blocks of
three branches (3x3 conv-BN, 1x1 conv-BN, identity BN) that `re_parameterize()` merges into one
3x3 conv and marks `is_repped`, as PaddleClas's `ppcls/arch/backbone/model_zoo/repvgg.py` does;
and a head with VanillaNet's official `switch_to_deploy()` protocol (`deploy` marks it done).

    cnnexport tests.reparam_net:build --img-size 32 --fuse --onnx
"""
from __future__ import annotations

import numpy as np
import paddle
from paddle import nn


class ConvBN(nn.Layer):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, k, stride, padding=k // 2, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


def _fused(kernel, bn):
    std = (bn._variance + bn._epsilon).sqrt()
    return kernel * (bn.weight / std).reshape([-1, 1, 1, 1]), bn.bias - bn._mean * bn.weight / std


class RepBlock(nn.Layer):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.is_repped = False
        self.cin, self.cout, self.stride = cin, cout, stride
        self.rbr_dense, self.rbr_1x1 = ConvBN(cin, cout, 3, stride), ConvBN(cin, cout, 1, stride)
        self.rbr_identity = nn.BatchNorm2D(cin) if cin == cout and stride == 1 else None
        self.act = nn.ReLU()

    def forward(self, x):
        if self.is_repped:
            return self.act(self.rbr_reparam(x))
        identity = 0 if self.rbr_identity is None else self.rbr_identity(x)
        return self.act(self.rbr_dense(x) + self.rbr_1x1(x) + identity)

    def re_parameterize(self):
        kernel, bias = _fused(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        k1, b1 = _fused(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        kernel, bias = kernel + nn.functional.pad(k1, [1, 1, 1, 1]), bias + b1
        if self.rbr_identity is not None:
            eye = np.zeros([self.cin, self.cin, 3, 3], "float32")
            eye[np.arange(self.cin), np.arange(self.cin), 1, 1] = 1
            ki, bi = _fused(paddle.to_tensor(eye), self.rbr_identity)
            kernel, bias = kernel + ki, bias + bi
        self.rbr_reparam = nn.Conv2D(self.cin, self.cout, 3, self.stride, padding=1)
        self.rbr_reparam.weight.set_value(kernel)
        self.rbr_reparam.bias.set_value(bias)
        self.is_repped = True


class DeployHead(nn.Layer):
    """1x1 conv -> BN -> pool -> linear; `switch_to_deploy` folds the BN, as VanillaNet's code does."""

    def __init__(self, cin, classes):
        super().__init__()
        self.deploy = False
        self.conv, self.bn = nn.Conv2D(cin, cin, 1), nn.BatchNorm2D(cin)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.conv(x) if self.deploy else self.bn(self.conv(x))
        return self.fc(x.mean(axis=[2, 3]))

    def switch_to_deploy(self):
        kernel, bias = _fused(self.conv.weight, self.bn)
        self.conv.weight.set_value(kernel)
        self.conv.bias.set_value(bias + self.conv.bias * self.bn.weight / (self.bn._variance + self.bn._epsilon).sqrt())
        self.deploy = True


class RepNet(nn.Layer):
    def __init__(self, num_classes=10, width=8):
        super().__init__()
        self.stages = nn.Sequential(RepBlock(3, width, 2), RepBlock(width, width), RepBlock(width, 2 * width, 2),
                                    RepBlock(2 * width, 2 * width))
        self.head = DeployHead(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.stages(x))


def build(num_classes: int = 10, width: int = 8) -> RepNet:
    return RepNet(num_classes, width)
