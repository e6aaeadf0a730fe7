"""Small networks, written with Paddle's own layers, that reproduce the failure classes of issue 25
(real architectures from model libraries): each is a `module:callable` the tests export.

- `convnext`: LayerNorm over channels, depthwise 7x7, layer scale (ConvNeXt's block);
- `csp`, `csp_functional`, `csp_mish`: CSPDarkNet's stage with `nn.LeakyReLU` layers (PaddleClas's), a
  functional leaky ReLU, and Mish;
- `swin`: a Swin-style shifted-window attention block (its mask built by slice assignment, relative
  position bias);
- `resnet_vd_pool`: ResNet-vd's shortcut, SAME-padded ceil-mode average pooling;
- `ghost`: GhostNet-style cheap operations (a conv, then a depthwise conv on its output) with BN;
- `vgg_adaptive`: VGG's AdaptiveAvgPool2D((7, 7)) head, fed a smaller map at a small input;
- `Float64Head`, `NoOpReparam`: a dtype error in the forward, and a re_parameterize() with nothing to do.
"""
from __future__ import annotations

import numpy as np
import paddle
from paddle import nn

CLASSES = 10


def _seeded_bn(layer: nn.Layer, seed: int = 0) -> nn.Layer:
    """BatchNorm statistics and affines of a trained size, so that folding them matters."""
    from cnnexport.models.fusion import perturb
    return perturb(layer, seed)


class ChannelLayerNorm(nn.Layer):
    """LayerNorm over the channel axis of an NCHW map (ConvNeXt's `LayerNorm(data_format="channels_first")`)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = self.create_parameter([channels], default_initializer=nn.initializer.Constant(1.0))
        self.bias = self.create_parameter([channels], default_initializer=nn.initializer.Constant(0.0))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / paddle.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Layer):
    def __init__(self, dim: int, scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2D(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, epsilon=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = self.create_parameter([dim], default_initializer=nn.initializer.Constant(scale))

    def forward(self, x):
        y = self.dwconv(x).transpose([0, 2, 3, 1])
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose([0, 3, 1, 2])


class ConvNeXt(nn.Layer):
    """ConvNeXt's first stage and downsampling layer: the channel LayerNorm that follows the block's
    residual addition is what Paddle Inference 3.3 computes wrongly with oneDNN."""

    def __init__(self, dim: int = 16, num_classes: int = CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2D(3, dim, 4, stride=4), ChannelLayerNorm(dim))
        self.block = ConvNeXtBlock(dim)
        self.down = nn.Sequential(ChannelLayerNorm(dim), nn.Conv2D(dim, 2 * dim, 2, stride=2))
        self.norm = nn.LayerNorm(2 * dim, epsilon=1e-6)
        self.head = nn.Linear(2 * dim, num_classes)

    def forward(self, x):
        x = self.down(self.block(self.stem(x)))
        return self.head(self.norm(x.mean([2, 3])))


def convnext(num_classes: int = CLASSES):
    return ConvNeXt(num_classes=num_classes)


def _conv_bn_act(cin, cout, k=3, stride=1, act=nn.Mish, groups=1):
    return nn.Sequential(nn.Conv2D(cin, cout, k, stride, k // 2, groups=groups, bias_attr=False),
                         nn.BatchNorm2D(cout), act())


class CSP(nn.Layer):
    """CSPDarkNet's stage: split by two 1x1 convs, residual blocks on one half, concatenate, 1x1. PaddleClas's
    CSPDarkNet53 activates with `nn.LeakyReLU()` (slope 0.01), which paddle2onnx 2.1 writes with alpha 0."""

    def __init__(self, dim: int = 16, num_classes: int = CLASSES, act=nn.LeakyReLU):
        super().__init__()
        self.stem = _conv_bn_act(3, dim, 3, 2, act=act)
        self.left, self.right = _conv_bn_act(dim, dim // 2, 1, act=act), _conv_bn_act(dim, dim // 2, 1, act=act)
        self.block = nn.Sequential(_conv_bn_act(dim // 2, dim // 2, 1, act=act), _conv_bn_act(dim // 2, dim // 2, 3, act=act))
        self.merge = _conv_bn_act(dim, dim, 1, act=act)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.stem(x)
        right = self.right(x)
        x = self.merge(paddle.concat([self.left(x), right + self.block(right)], 1))
        return self.fc(self.pool(x).flatten(1))


class FunctionalLeakyReLU(nn.Layer):
    """A leaky ReLU called as a function inside a forward, as many libraries write it: no layer to replace."""

    def forward(self, x):
        return nn.functional.leaky_relu(x, 0.1)


def csp(num_classes: int = CLASSES):
    return _seeded_bn(CSP(num_classes=num_classes))


def csp_functional(num_classes: int = CLASSES):
    return _seeded_bn(CSP(num_classes=num_classes, act=FunctionalLeakyReLU))


def csp_mish(num_classes: int = CLASSES):
    return _seeded_bn(CSP(num_classes=num_classes, act=nn.Mish))


class WindowAttention(nn.Layer):
    """Swin's window attention with a relative position bias table indexed by a fixed buffer."""

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.table = self.create_parameter([(2 * window - 1) ** 2, heads],
                                           default_initializer=nn.initializer.TruncatedNormal(std=0.02))
        coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
        rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + window - 1
        self.register_buffer("index", paddle.to_tensor((rel[..., 0] * (2 * window - 1) + rel[..., 1]).reshape(-1)))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask):  # x [windows*B, N, C], mask [windows, N, N]
        b, n, c = x.shape
        qkv = self.qkv(x).reshape([b, n, 3, self.heads, c // self.heads]).transpose([2, 0, 3, 1, 4])
        attn = (qkv[0] * self.scale).matmul(qkv[1].transpose([0, 1, 3, 2]))
        bias = paddle.index_select(self.table, self.index).reshape([n, n, -1]).transpose([2, 0, 1])
        windows = mask.shape[0]
        attn = (attn + bias.unsqueeze(0)).reshape([-1, windows, self.heads, n, n]) + mask.unsqueeze(1).unsqueeze(0)
        attn = nn.functional.softmax(attn.reshape([-1, self.heads, n, n]), -1)
        return self.proj(attn.matmul(qkv[2]).transpose([0, 2, 1, 3]).reshape([b, n, c]))


def window_partition(x, s: int):
    b, h, w, c = x.shape
    return x.reshape([b, h // s, s, w // s, s, c]).transpose([0, 1, 3, 2, 4, 5]).reshape([-1, s * s, c])


class ShiftedWindowBlock(nn.Layer):
    """Swin's shifted-window block as PaddleClas writes it: the attention mask is built in the forward
    pass by slice assignment (`img_mask[:, rows, cols, :] = region`), which paddle2onnx turns into `If`
    nodes with subgraphs."""

    def __init__(self, dim: int, window: int, heads: int = 2):
        super().__init__()
        self.window, self.shift = window, window // 2
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def attention_mask(self, h: int, w: int):
        img_mask = paddle.zeros((1, h, w, 1), dtype="float32")
        regions = (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None))
        count = 0
        for rows in regions:
            for cols in regions:
                img_mask[:, rows, cols, :] = count
                count += 1
        windows = window_partition(img_mask, self.window).reshape([-1, self.window * self.window])
        mask = windows.unsqueeze(1) - windows.unsqueeze(2)
        return paddle.where(mask != 0, paddle.full_like(mask, -100.0), paddle.zeros_like(mask))

    def forward(self, x):  # [B, H, W, C]
        b, h, w, c = x.shape
        s = self.window
        shifted = paddle.roll(self.norm1(x), shifts=(-self.shift, -self.shift), axis=(1, 2))
        y = self.attn(window_partition(shifted, s), self.attention_mask(h, w))
        y = y.reshape([b, h // s, w // s, s, s, c]).transpose([0, 1, 3, 2, 4, 5]).reshape([b, h, w, c])
        x = x + paddle.roll(y, shifts=(self.shift, self.shift), axis=(1, 2))
        return x + self.mlp(self.norm2(x))


class Swin(nn.Layer):
    def __init__(self, dim: int = 16, window: int = 4, num_classes: int = CLASSES):
        super().__init__()
        self.patch = nn.Conv2D(3, dim, 4, 4)
        self.block = ShiftedWindowBlock(dim, window)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.block(self.patch(x).transpose([0, 2, 3, 1]))
        return self.head(self.norm(x.mean([1, 2])))


def swin(num_classes: int = CLASSES):
    return Swin(num_classes=num_classes)


class ResNetVdPool(nn.Layer):
    """ResNet-vd's downsampling shortcut: SAME-padded ceil-mode 2x2 average pooling, then a 1x1 conv."""

    def __init__(self, dim: int = 8, num_classes: int = CLASSES):
        super().__init__()
        self.stem = nn.Conv2D(3, dim, 3, 1, 1)
        self.pool = nn.AvgPool2D(2, 2, padding="SAME", ceil_mode=True)
        self.short = nn.Conv2D(dim, dim, 1)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.fc(self.short(self.pool(self.stem(x))).mean([2, 3]))


def resnet_vd_pool(num_classes: int = CLASSES):
    return ResNetVdPool(num_classes=num_classes)


class ConvBNLayer(nn.Layer):
    """PaddleClas's ConvBNLayer: conv, BatchNorm and ReLU called in its forward (not an nn.Sequential), so
    the pair is found by tracing the forward pass."""

    def __init__(self, cin: int, cout: int, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2D(cin, cout, 3, padding=1, groups=groups)
        self.bn = nn.BatchNorm2D(cout)

    def forward(self, x):
        return nn.functional.relu(self.bn(self.conv(x)))


class GhostModule(nn.Layer):
    """GhostNet's module: a primary conv, then a cheap depthwise conv on its output; both kept."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        half = cout // 2
        self.primary = _conv_bn_act(cin, half, 1, act=nn.ReLU)
        # The cheap operation's conv has a bias, and its BatchNorm has learnt to subtract it (running mean
        # = bias): the fp32 model computes (w*x + b) - mean, a cancellation that folding removes.
        self.cheap = ConvBNLayer(half, half, groups=half)

    def forward(self, x):
        y = self.primary(x)
        return paddle.concat([y, self.cheap(y)], 1)


class Ghost(nn.Layer):
    def __init__(self, dim: int = 16, depth: int = 2, num_classes: int = CLASSES):
        super().__init__()
        self.stem = _conv_bn_act(3, dim, 3, 2, act=nn.ReLU)
        self.blocks = nn.Sequential(*[GhostModule(dim, dim) for _ in range(depth)])
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def ghost(num_classes: int = CLASSES, offset: float = 1000.0):
    """A Ghost network whose cheap convs carry a bias of `offset` that their BatchNorms subtract again."""
    model = _seeded_bn(Ghost(num_classes=num_classes))
    for block in model.blocks:
        conv, bn = block.cheap.conv, block.cheap.bn
        bias = np.full(conv.bias.shape, offset, np.float32)
        conv.bias.set_value(bias)
        bn._mean.set_value(bias + bn._mean.numpy())
    return model


class VGGAdaptive(nn.Layer):
    """VGG's head: AdaptiveAvgPool2D((7, 7)) after five stride-2 stages (a 2x2 map at 64 px)."""

    def __init__(self, dim: int = 8, num_classes: int = CLASSES):
        super().__init__()
        self.features = nn.Sequential(*[nn.Sequential(nn.Conv2D(3 if i == 0 else dim, dim, 3, padding=1), nn.ReLU(),
                                                      nn.MaxPool2D(2, 2)) for i in range(5)])
        self.pool = nn.AdaptiveAvgPool2D((7, 7))
        self.fc = nn.Linear(dim * 49, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def vgg_adaptive(num_classes: int = CLASSES):
    return VGGAdaptive(num_classes=num_classes)


class Float64Head(nn.Layer):
    """A forward that computes in float64 against float32 weights: a dtype error of the model's own."""

    def __init__(self, num_classes: int = CLASSES):
        super().__init__()
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x):
        return self.fc(x.astype("float64").mean([2, 3]))


class NoOpReparam(nn.Layer):
    """A layer whose `re_parameterize()` has nothing to do (PaddleClas's blocks built without branches)."""

    def __init__(self, num_classes: int = CLASSES):
        super().__init__()
        self.is_repped = False
        self.conv = nn.Conv2D(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def re_parameterize(self):
        pass

    def forward(self, x):
        return self.fc(self.conv(x).mean([2, 3]))
