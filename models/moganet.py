"""MogaNet (Li et al., ICLR 2024), as in seed 000.

Four stages of MogaBlocks: a spatial mixer (multi-order gated aggregation: gate branch times a
value branch of dilated depthwise convs) and a channel mixer (an FFN with channel aggregation),
each behind BatchNorm and a learnable layer scale on a residual.
"""
from __future__ import annotations

import numpy as np
import paddle
from paddle import nn

from .fusion import (bn_affine, fold_affine_into_linear, fold_affine_into_next_conv, fold_bn_into_conv,
                     scale_conv_output)
from .registry import check_size, register_family, register_model
from .training import FLIP, JITTER, ROTATE, CosinePerIteration, Recipe, Transform


class DropPath(nn.Layer):
    """Stochastic depth: drops the whole residual branch of a sample during training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = paddle.floor(keep + paddle.rand([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype))
        return x / keep * mask


class ElementScale(nn.Layer):
    """A learnable per-channel scale."""

    def __init__(self, embed_dims: int, init_value: float = 0.0):
        super().__init__()
        self.scale = self.create_parameter([1, embed_dims, 1, 1],
                                           default_initializer=nn.initializer.Constant(init_value))

    def forward(self, x):
        return x * self.scale


class ChannelAggregationFFN(nn.Layer):
    """The channel mixer: 1x1 expand, 3x3 depthwise, GELU, channel aggregation, 1x1 project.

    Channel aggregation (the paper): x + sigma * (x - GELU(decompose(x))), where `decompose`
    squeezes the channels to one map. The notebook computes decompose(x) and then overwrites it
    with GELU(x), so its aggregation is x + sigma * (x - GELU(x)); `seed_compat=True` keeps that.
    """

    def __init__(self, embed_dims: int, feedforward_channels: int, kernel_size: int = 3,
                 ffn_drop: float = 0.0, seed_compat: bool = False):
        super().__init__()
        self.fc1 = nn.Conv2D(embed_dims, feedforward_channels, 1)
        self.dwconv = nn.Conv2D(feedforward_channels, feedforward_channels, kernel_size,
                                padding=kernel_size // 2, groups=feedforward_channels)
        self.fc2 = nn.Conv2D(feedforward_channels, embed_dims, 1)
        self.act = nn.GELU()
        self.drop = nn.Dropout(ffn_drop)
        self.decompose = nn.Conv2D(feedforward_channels, 1, 1)
        self.sigma = ElementScale(feedforward_channels, init_value=1e-5)
        self.seed_compat = seed_compat

    def forward(self, x):
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        decomposed = self.act(x) if self.seed_compat else self.act(self.decompose(x))
        x = x + self.sigma(x - decomposed)
        return self.drop(self.fc2(x))


class MultiOrderDWConv(nn.Layer):
    """Depthwise 5x5 (dilation d0) on all channels, then 5x5 (d1) and 7x7 (d2) on 3/8 and 4/8 of them."""

    def __init__(self, embed_dims: int, dw_dilation=(1, 2, 3), channel_split=(1, 3, 4)):
        super().__init__()
        if embed_dims % sum(channel_split):
            raise ValueError(f"embed_dims {embed_dims} must be a multiple of {sum(channel_split)}")
        self.embed_dims = embed_dims
        self.embed_dims_1 = int(embed_dims * channel_split[1] / sum(channel_split))
        self.embed_dims_2 = int(embed_dims * channel_split[2] / sum(channel_split))
        self.embed_dims_0 = embed_dims - self.embed_dims_1 - self.embed_dims_2
        self.dwconv0 = nn.Conv2D(embed_dims, embed_dims, 5, padding=(1 + 4 * dw_dilation[0]) // 2,
                                 groups=embed_dims, dilation=dw_dilation[0])
        self.dwconv1 = nn.Conv2D(self.embed_dims_1, self.embed_dims_1, 5, padding=(1 + 4 * dw_dilation[1]) // 2,
                                 groups=self.embed_dims_1, dilation=dw_dilation[1])
        self.dwconv2 = nn.Conv2D(self.embed_dims_2, self.embed_dims_2, 7, padding=(1 + 6 * dw_dilation[2]) // 2,
                                 groups=self.embed_dims_2, dilation=dw_dilation[2])
        self.pwconv = nn.Conv2D(embed_dims, embed_dims, 1)

    def forward(self, x):
        x = self.dwconv0(x)
        d0, d1 = self.embed_dims_0, self.embed_dims_1
        x_1 = self.dwconv1(x[:, d0:d0 + d1])
        x_2 = self.dwconv2(x[:, d0 + d1:])
        return self.pwconv(paddle.concat([x[:, :d0], x_1, x_2], axis=1))


class MultiOrderGatedAggregation(nn.Layer):
    """The spatial mixer: feature decomposition, then SiLU(gate) * SiLU(multi-order value), plus shortcut."""

    def __init__(self, embed_dims: int, attn_dw_dilation=(1, 2, 3), attn_channel_split=(1, 3, 4)):
        super().__init__()
        self.proj1 = nn.Conv2D(embed_dims, embed_dims, 1)
        self.gate = nn.Conv2D(embed_dims, embed_dims, 1)
        self.value = MultiOrderDWConv(embed_dims, attn_dw_dilation, attn_channel_split)
        self.proj2 = nn.Conv2D(embed_dims, embed_dims, 1)
        self.gate_act = nn.Silu()
        self.value_act = nn.Silu()
        self.act = nn.Silu()
        self.sigma = ElementScale(embed_dims, 1e-5)
        # MogaBlock.fuse moves the shortcut out to the block, where it becomes a per-channel scale.
        self.shortcut = True

    def forward(self, x):
        shortcut = x
        x = self.proj1(x)
        x = self.act(self.sigma(x - x.mean(axis=[2, 3], keepdim=True)) + x)
        x = self.proj2(self.gate_act(self.gate(x)) * self.value_act(self.value(x)))
        return x + shortcut if self.shortcut else x


class MogaBlock(nn.Layer):
    def __init__(self, embed_dims: int, ffn_ratio: float = 4.0, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, init_value: float = 1e-5, attn_dw_dilation=(1, 2, 3),
                 attn_channel_split=(1, 3, 4), seed_compat: bool = False):
        super().__init__()
        self.norm1 = nn.BatchNorm2D(embed_dims)
        self.attn = MultiOrderGatedAggregation(embed_dims, attn_dw_dilation, attn_channel_split)
        self.norm2 = nn.BatchNorm2D(embed_dims)
        self.ffn = ChannelAggregationFFN(embed_dims, int(embed_dims * ffn_ratio), ffn_drop=drop_rate,
                                         seed_compat=seed_compat)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0.0 else nn.Identity()
        init = nn.initializer.Constant(init_value)
        self.layer_scales1 = self.create_parameter([1, embed_dims, 1, 1], default_initializer=init)
        self.layer_scales2 = self.create_parameter([1, embed_dims, 1, 1], default_initializer=init)
        self.fused = False

    def forward(self, x):
        if self.fused:
            x = x * self.shortcut_scale + self.attn(x)
            return x + self.ffn(x)
        x = x + self.drop_path(self.layer_scales1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scales2 * self.ffn(self.norm2(x)))

    def fuse(self, log) -> None:
        """Fold both norms and both layer scales; exact in eval, where DropPath is the identity.

        With norm1(x) = a*x + t and g the gated product, the first residual is
            x + s1 * (proj2(g) + a*x + t) = (1 + s1*a) * x + proj2'(g),
        proj2' = s1 * proj2 with s1*t added to its bias; proj1 takes norm1 (1x1, unpadded).
        The second is x + s2 * fc2(...(fc1(norm2(x)))): fc1 takes norm2, fc2 takes s2.
        """
        if self.fused:
            return
        a1, t1 = bn_affine(self.norm1)
        s1 = self.layer_scales1.numpy().astype(np.float64).reshape(-1)
        fold_affine_into_next_conv(a1, t1, self.attn.proj1)
        scale_conv_output(self.attn.proj2, s1, s1 * t1)
        self.attn.shortcut = False
        self.shortcut_scale = self.create_parameter([1, a1.size, 1, 1])
        self.shortcut_scale.set_value((1.0 + s1 * a1).reshape(1, -1, 1, 1).astype("float32"))

        a2, t2 = bn_affine(self.norm2)
        fold_affine_into_next_conv(a2, t2, self.ffn.fc1)
        scale_conv_output(self.ffn.fc2, self.layer_scales2.numpy().astype(np.float64).reshape(-1))

        del self.norm1, self.norm2, self.layer_scales1, self.layer_scales2
        self.fused = True
        log.folded("norm1", into="attn.proj1 + shortcut_scale")
        log.folded("layer_scales1", into="attn.proj2 + shortcut_scale")
        log.folded("norm2", into="ffn.fc1")
        log.folded("layer_scales2", into="ffn.fc2")


class ConvPatchEmbed(nn.Layer):
    """Downsampling between stages: 3x3 stride-2 conv, BatchNorm."""

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.proj = nn.Conv2D(in_channels, embed_dims, kernel_size, padding=kernel_size // 2, stride=stride)
        self.norm = nn.BatchNorm2D(embed_dims)

    def forward(self, x):
        return self.norm(self.proj(x))

    def fuse(self, log) -> None:
        if isinstance(self.norm, nn.BatchNorm2D):
            fold_bn_into_conv(self.proj, self.norm)
            self.norm = nn.Identity()
            log.folded("norm", into="proj")


class StackConvPatchEmbed(nn.Layer):
    """The stem: two 3x3 stride-2 convs (BatchNorm, GELU between), BatchNorm."""

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        pad = kernel_size // 2
        self.proj = nn.Sequential(
            nn.Conv2D(in_channels, embed_dims // 2, kernel_size, padding=pad, stride=stride),
            nn.BatchNorm2D(embed_dims // 2),
            nn.GELU(),
            nn.Conv2D(embed_dims // 2, embed_dims, kernel_size, padding=pad, stride=stride),
        )
        self.norm = nn.BatchNorm2D(embed_dims)

    def forward(self, x):
        return self.norm(self.proj(x))

    def fuse(self, log) -> None:
        if isinstance(self.norm, nn.BatchNorm2D):
            fold_bn_into_conv(self.proj[3], self.norm)
            self.norm = nn.Identity()
            log.folded("norm", into="proj.3")


ARCH_ZOO = {
    "xtiny": {"embed_dims": [32, 64, 96, 192], "depths": [3, 3, 10, 2], "ffn_ratios": [8, 8, 4, 4]},
    "tiny": {"embed_dims": [32, 64, 128, 256], "depths": [3, 3, 12, 2], "ffn_ratios": [8, 8, 4, 4]},
    "small": {"embed_dims": [64, 128, 320, 512], "depths": [2, 3, 12, 2], "ffn_ratios": [8, 8, 4, 4]},
    "base": {"embed_dims": [64, 160, 320, 512], "depths": [4, 6, 22, 3], "ffn_ratios": [8, 8, 4, 4]},
    "large": {"embed_dims": [64, 160, 320, 640], "depths": [4, 6, 44, 4], "ffn_ratios": [8, 8, 4, 4]},
    "xlarge": {"embed_dims": [96, 192, 480, 960], "depths": [6, 6, 44, 4], "ffn_ratios": [8, 8, 4, 4]},
}


class MogaNet(nn.Layer):
    def __init__(self, arch: str = "tiny", in_channels: int = 3, num_classes: int = 1000, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, init_value: float = 1e-5, attn_dw_dilation=(1, 2, 3),
                 attn_channel_split=(1, 3, 4), attn_final_dilation: bool = True, seed_compat: bool = False):
        super().__init__()
        settings = ARCH_ZOO[arch]
        self.embed_dims, self.depths = settings["embed_dims"], settings["depths"]
        self.num_stages = len(self.depths)
        dpr = np.linspace(0, drop_path_rate, sum(self.depths)).tolist()
        cur = 0
        for i, depth in enumerate(self.depths):
            if i == 0:
                patch_embed = StackConvPatchEmbed(in_channels, self.embed_dims[0])
            else:
                patch_embed = ConvPatchEmbed(self.embed_dims[i - 1], self.embed_dims[i])
            dilation = attn_dw_dilation
            if i == self.num_stages - 1 and not attn_final_dilation:
                dilation = (1, 2, 1)
            blocks = nn.LayerList([
                MogaBlock(self.embed_dims[i], settings["ffn_ratios"][i], drop_rate, dpr[cur + j], init_value,
                          dilation, attn_channel_split, seed_compat)
                for j in range(depth)
            ])
            cur += depth
            self.add_sublayer(f"patch_embed{i + 1}", patch_embed)
            self.add_sublayer(f"blocks{i + 1}", blocks)
            self.add_sublayer(f"norm{i + 1}", nn.BatchNorm2D(self.embed_dims[i]))
        self.head = nn.Linear(self.embed_dims[-1], num_classes)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        zeros = nn.initializer.Constant(0.0)
        if isinstance(m, nn.Linear):
            nn.initializer.TruncatedNormal(std=0.02)(m.weight)
            zeros(m.bias)
        elif isinstance(m, nn.Conv2D):
            nn.initializer.KaimingNormal()(m.weight)
            if m.bias is not None:
                zeros(m.bias)
        elif isinstance(m, nn.BatchNorm2D):
            zeros(m.bias)
            nn.initializer.Constant(1.0)(m.weight)

    def forward(self, x):
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"blocks{i}"):
                x = block(x)
            x = getattr(self, f"norm{i}")(x)
        return self.head(x.mean(axis=[2, 3]))

    def fuse(self, log) -> None:
        """The last stage norm goes through the global average pool into `head`; the others stay."""
        last = f"norm{self.num_stages}"
        norm = getattr(self, last)
        if isinstance(norm, nn.BatchNorm2D):
            fold_affine_into_linear(*bn_affine(norm), self.head)
            setattr(self, last, nn.Identity())
            log.folded(last, into="head")
        for i in range(1, self.num_stages):
            if isinstance(getattr(self, f"norm{i}"), nn.BatchNorm2D):
                log.kept(f"norm{i}", f"feeds patch_embed{i + 1}.proj, a padded 3x3 conv: its zero padding "
                                     "is not normalised, so folding would change the borders")


def _augment(s: int) -> list[Transform]:
    return [("RandomResizedCrop", {"size": s}), JITTER, FLIP, ROTATE]


register_family(
    "moganet", representative="moganet_xtiny", small_input_size=32,  # seed 000
    recipe=Recipe(optimizer="Adam", lr=1e-3, weight_decay=1e-5, lr_schedule=CosinePerIteration(), epochs=100,
                  batch_size=128, augment=_augment),
)


def _moganet(arch, *, num_classes, img_size, seed_compat, **kwargs):
    check_size(img_size, img_size % 32 == 0, "multiples of 32 px")
    return MogaNet(arch, num_classes=num_classes, seed_compat=seed_compat, **kwargs)


@register_model("moganet", 224, params=2_773_092, macs=781_931_376)
def moganet_xtiny(**kw):
    """MogaNet-XT (2.97M parameters at 1000 classes)."""
    return _moganet("xtiny", **kw)


@register_model("moganet", 224, params=4_954_198, macs=1_083_029_568)
def moganet_tiny(**kw):
    """MogaNet-T (5.20M)."""
    return _moganet("tiny", **kw)


@register_model("moganet", 224, params=24_853_469, macs=4_930_813_184)
def moganet_small(**kw):
    """MogaNet-S (25.3M)."""
    return _moganet("small", **kw)


@register_model("moganet", 224, params=43_256_061, macs=9_860_417_024)
def moganet_base(**kw):
    """MogaNet-B (43.9M)."""
    return _moganet("base", **kw)


@register_model("moganet", 224, params=81_922_612, macs=15_819_417_280)
def moganet_large(**kw):
    """MogaNet-L (82.5M)."""
    return _moganet("large", **kw)


@register_model("moganet", 224, params=180_154_294, macs=34_393_912_416)
def moganet_xlarge(**kw):
    """MogaNet-XL (180.8M)."""
    return _moganet("xlarge", **kw)
