"""VanillaNet (Chen et al., 2023), as in seed 004.

Train-time form: every stage is two 1x1 convs (each followed by BatchNorm) with a leaky ReLU in
between whose negative slope `act_learn` is raised from 0 to 1 during training ("deep training");
at slope 1 the leaky ReLU is the identity and the two convs are one linear map. Every stage ends in
the series-informed activation: ReLU, then a depthwise (2n+1)x(2n+1) conv (+ BatchNorm).

Deploy form (`deploy=True`, or `cnnexport.rewrite.fuse` of a train-time model at `act_learn == 1`):
one conv per stage, stem and classifier, the activations' BatchNorm folded into their kernels.

State-dict keys are the notebook's: `stem1.0.weight`, `stages.0.conv1.0.weight`, `stages.0.act.bn._mean`,
`cls1.2.weight`, ...; deploy form: `stem.0.weight`, `stages.0.conv.weight`, `stages.0.act.bias`, `cls.2.weight`.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn

from .fusion import FuseError, fold_bn_into_conv, merge_into_pointwise
from .registry import check_size, register_family, register_model
from .training import FLIP, JITTER, ROTATE, CosinePerIteration, LinearRamp, Recipe, Transform, set_knob

_trunc_normal = nn.initializer.TruncatedNormal(std=0.02)
_zeros = nn.initializer.Constant(0.0)


class SeriesActivation(nn.ReLU):
    """ReLU followed by a learnable depthwise (2n+1)^2 conv: the notebook's `activation` class."""

    def __init__(self, dim: int, act_num: int = 3, deploy: bool = False):
        super().__init__()
        self.dim, self.act_num, self.deploy = dim, act_num, deploy
        k = 2 * act_num + 1
        self.weight = self.create_parameter([dim, 1, k, k], default_initializer=_trunc_normal)
        if deploy:
            self.bias = self.create_parameter([dim], is_bias=True, default_initializer=_zeros)
        else:
            self.bias = None
            self.bn = nn.BatchNorm2D(dim, epsilon=1e-6)

    def forward(self, x):
        x = F.conv2d(super().forward(x), self.weight, self.bias, padding=self.act_num, groups=self.dim)
        return x if self.deploy else self.bn(x)

    def fuse(self, log) -> None:
        if self.deploy:
            return
        fold_bn_into_conv(self, self.bn)
        del self.bn
        self.deploy = True
        log.folded("bn", into="weight")

    def macs(self, x, y) -> int:
        return int(y.numel()) * (2 * self.act_num + 1) ** 2


class AdaptiveMaxPool2D(nn.AdaptiveMaxPool2D):
    """Adaptive max pooling whose graph form is exact when the windows are uneven.

    paddle2onnx converts adaptive max pooling to a MaxPool with one fixed kernel, which silently
    computes something else when the input side is not a multiple of the output side (56 -> 40
    px at 224: windows of 2 and 3 rows). Outside training this layer spells the windows out:
    output row i is the max over input rows floor(i*H/h) .. ceil((i+1)*H/h) - 1, one slice per
    output row, then the same over columns (a max over a rectangle is separable). Every runtime
    runs that exactly, at any batch size.
    """

    def forward(self, x):
        out_h, out_w = self._output_size
        if self.training or (x.shape[2] % out_h == 0 and x.shape[3] % out_w == 0):
            return super().forward(x)
        return self._pool_axis(self._pool_axis(x, 2, out_h), 3, out_w)

    @staticmethod
    def _pool_axis(x, axis: int, out: int):
        size = x.shape[axis]
        windows = [((i * size) // out, -(-(i + 1) * size // out)) for i in range(out)]
        return paddle.concat([paddle.slice(x, [axis], [start], [end]).max(axis=axis, keepdim=True)
                              for start, end in windows], axis=axis)


def deep_training_act(x, slope: float, training: bool):
    """The leaky ReLU between a stage's two convs (slope `act_learn`, 0 -> 1 during training).

    Outside training it is written as max(x, slope * x), which equals leaky_relu for slopes in
    [0, 1] bit for bit (and is the identity at slope 1): paddle2onnx 2.1 misreads leaky_relu's
    slope attribute (alpha 0.0 or a denormal instead of 1.0), so the op must not reach it.
    """
    if training or not 0 <= slope <= 1:
        return F.leaky_relu(x, slope)
    return x if slope == 1 else paddle.maximum(x, x * slope)


def _conv_bn(cin: int, cout: int, **conv_kw) -> list[nn.Layer]:
    return [nn.Conv2D(cin, cout, **conv_kw), nn.BatchNorm2D(cout, epsilon=1e-6)]


def _check_deep_training_done(act_learn: float) -> None:
    if act_learn != 1:
        raise FuseError(
            f"VanillaNet's deploy form is exact only at deep-training slope act_learn == 1, but it is "
            f"{act_learn}: finish the training schedule or call model.change_act(1.0) first")


class DeepTrainingSlope:
    """The `act_learn` training knob (see cnnexport.models.training): VanillaNet's own slope acts between its
    stem convs and its classifier convs, each Block's between the Block's two convs; `set_knob`
    sets them all."""

    training_knob = "act_learn"

    def set_training_knob(self, value: float) -> None:
        self.act_learn = value


class Block(DeepTrainingSlope, nn.Layer):
    def __init__(self, dim: int, dim_out: int, act_num: int = 3, stride: int = 2,
                 deploy: bool = False, ada_pool: int | None = None):
        super().__init__()
        self.act_learn = 1.0
        self.deploy = deploy
        if deploy:
            self.conv = nn.Conv2D(dim, dim_out, kernel_size=1)
        else:
            self.conv1 = nn.Sequential(*_conv_bn(dim, dim, kernel_size=1))
            self.conv2 = nn.Sequential(*_conv_bn(dim, dim_out, kernel_size=1))
        if stride == 1:
            self.pool = nn.Identity()
        elif ada_pool:
            self.pool = AdaptiveMaxPool2D((ada_pool, ada_pool))
        else:
            self.pool = nn.MaxPool2D(stride)
        self.act = SeriesActivation(dim_out, act_num, deploy)

    def forward(self, x):
        if self.deploy:
            x = self.conv(x)
        else:
            x = self.conv2(deep_training_act(self.conv1(x), self.act_learn, self.training))
        return self.act(self.pool(x))

    def fuse(self, log) -> None:
        """Merge conv1 and conv2 into one conv (their BatchNorms are already folded by then)."""
        if self.deploy:
            return
        _check_deep_training_done(self.act_learn)
        self.conv = merge_into_pointwise(self.conv1[0], self.conv2[0])
        del self.conv1, self.conv2
        self.deploy = True
        log.rewritten("conv", "merged conv1 and conv2 into one 1x1 conv")


class VanillaNet(DeepTrainingSlope, nn.Layer):
    def __init__(self, in_chans: int = 3, num_classes: int = 1000, dims=(96, 192, 384, 768),
                 drop_rate: float = 0.0, act_num: int = 3, strides=(2, 2, 2, 1), deploy: bool = False,
                 ada_pool=None):
        super().__init__()
        self.deploy = deploy
        if deploy:
            self.stem = nn.Sequential(nn.Conv2D(in_chans, dims[0], kernel_size=4, stride=4),
                                      SeriesActivation(dims[0], act_num, deploy=True))
        else:
            self.stem1 = nn.Sequential(*_conv_bn(in_chans, dims[0], kernel_size=4, stride=4))
            self.stem2 = nn.Sequential(*_conv_bn(dims[0], dims[0], kernel_size=1),
                                       SeriesActivation(dims[0], act_num))
        self.act_learn = 1.0
        self.stages = nn.LayerList([
            Block(dims[i], dims[i + 1], act_num, strides[i], deploy, ada_pool[i] if ada_pool else None)
            for i in range(len(strides))
        ])
        head = [nn.AdaptiveAvgPool2D((1, 1)), nn.Dropout(drop_rate), nn.Conv2D(dims[-1], num_classes, 1)]
        if deploy:
            self.cls = nn.Sequential(*head)
        else:
            self.cls1 = nn.Sequential(*head, nn.BatchNorm2D(num_classes, epsilon=1e-6))
            self.cls2 = nn.Sequential(nn.Conv2D(num_classes, num_classes, 1))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Conv2D, nn.Linear)):
            _trunc_normal(m.weight)
            _zeros(m.bias)

    def change_act(self, m: float) -> None:
        """Set the deep-training slope everywhere: 0 is a ReLU between the two convs, 1 the identity."""
        set_knob(self, "act_learn", m)

    def forward(self, x):
        if self.deploy:
            x = self.stem(x)
        else:
            x = self.stem2(deep_training_act(self.stem1(x), self.act_learn, self.training))
        for stage in self.stages:
            x = stage(x)
        if self.deploy:
            x = self.cls(x)
        else:
            x = self.cls2(deep_training_act(self.cls1(x), self.act_learn, self.training))
        return paddle.flatten(x, 1)

    def fuse(self, log) -> None:
        """Merge stem1+stem2 and cls1+cls2 (stages fuse themselves first, BNs are folded already)."""
        if self.deploy:
            return
        _check_deep_training_done(self.act_learn)
        self.stem = nn.Sequential(merge_into_pointwise(self.stem1[0], self.stem2[0]), self.stem2[2])
        self.cls = nn.Sequential(self.cls1[0], self.cls1[1], merge_into_pointwise(self.cls1[2], self.cls2[0]))
        del self.stem1, self.stem2, self.cls1, self.cls2
        self.deploy = True
        log.rewritten("stem", "merged stem1 and stem2 into one 4x4 conv")
        log.rewritten("cls", "merged cls1 and cls2 into one 1x1 conv")


def _vanillanet(widths, strides, *, num_classes, img_size, seed_compat, ada_pool=None, mult=4, **kwargs):
    del seed_compat  # VanillaNet has no notebook quirk that changes its output
    reduction = 4 * 2 ** sum(s == 2 for s in strides)
    if ada_pool:
        # The adaptive pools (to 40, 20, 10 px) must shrink their input: stem output >= 40 px.
        check_size(img_size, img_size % 32 == 0 and img_size >= 160, "multiples of 32 px from 160 px")
    else:
        check_size(img_size, img_size % reduction == 0, f"multiples of {reduction} px")
    dims = [w * mult for w in widths]
    return VanillaNet(dims=dims, strides=strides, num_classes=num_classes, ada_pool=ada_pool, **kwargs)


def _augment(s: int) -> list[Transform]:
    return [("RandomResizedCrop", {"size": s, "scale": (0.6, 1.0)}), JITTER, FLIP, ROTATE]


register_family(
    "vanillanet", representative="vanillanet_5", small_input_size=32,
    # Seed 004. Deep training: act_learn = epoch / 20 over the first 20 of 50 epochs, then 1.
    recipe=Recipe(optimizer="Adam", lr=1e-3, weight_decay=1e-5, lr_schedule=CosinePerIteration(), epochs=50,
                  batch_size=128, augment=_augment, knobs=(LinearRamp("act_learn", start=0.0, end_epoch=20),)),
)

_DEEP = (128, 128, 256, 512)
_V13_STRIDES = [1, 2, 2, 1, 1, 1, 1, 1, 1, 2, 1]


@register_model("vanillanet", 224, params=17_308_832, macs=8_445_464_676)
def vanillanet_5(**kw):
    """VanillaNet-5: 3 stages after the stem."""
    return _vanillanet([128, 256, 512, 1024], [2, 2, 2], **kw)


@register_model("vanillanet", 224, params=51_121_312, macs=10_099_466_340)
def vanillanet_6(**kw):
    """VanillaNet-6."""
    return _vanillanet([128, 256, 512, 1024, 1024], [2, 2, 2, 1], **kw)


@register_model("vanillanet", 224, params=51_677_856, macs=11_822_309_476)
def vanillanet_7(**kw):
    """VanillaNet-7."""
    return _vanillanet([128, 128, 256, 512, 1024, 1024], [1, 2, 2, 2, 1], **kw)


@register_model("vanillanet", 224, params=60_195_488, macs=13_486_145_636)
def vanillanet_8(**kw):
    """VanillaNet-8."""
    return _vanillanet([*_DEEP, 512, 1024, 1024], [1, 2, 2, 1, 2, 1], **kw)


@register_model("vanillanet", 224, params=68_713_120, macs=15_149_981_796)
def vanillanet_9(**kw):
    """VanillaNet-9."""
    return _vanillanet([*_DEEP, 512, 512, 1024, 1024], [1, 2, 2, 1, 1, 2, 1], **kw)


@register_model("vanillanet", 224, params=77_230_752, macs=16_813_817_956)
def vanillanet_10(**kw):
    """VanillaNet-10."""
    return _vanillanet([*_DEEP, 512, 512, 512, 1024, 1024], [1, 2, 2, 1, 1, 1, 2, 1], **kw)


@register_model("vanillanet", 224, params=85_748_384, macs=18_477_654_116)
def vanillanet_11(**kw):
    """VanillaNet-11."""
    return _vanillanet([*_DEEP] + [512] * 4 + [1024, 1024], [1, 2, 2, 1, 1, 1, 1, 2, 1], **kw)


@register_model("vanillanet", 224, params=94_266_016, macs=20_141_490_276)
def vanillanet_12(**kw):
    """VanillaNet-12."""
    return _vanillanet([*_DEEP] + [512] * 5 + [1024, 1024], [1, 2, 2, 1, 1, 1, 1, 1, 2, 1], **kw)


@register_model("vanillanet", 224, params=102_783_648, macs=21_805_326_436)
def vanillanet_13(**kw):
    """VanillaNet-13."""
    return _vanillanet([*_DEEP] + [512] * 6 + [1024, 1024], _V13_STRIDES, **kw)


@register_model("vanillanet", 224, params=230_066_080, macs=48_738_619_492)
def vanillanet_13_x1_5(**kw):
    """VanillaNet-13, 1.5x wider."""
    return _vanillanet([*_DEEP] + [512] * 6 + [1024, 1024], _V13_STRIDES, mult=6, **kw)


# Its adaptive pools (to 40, 20, 10 px) must shrink their input: 160 px at least.
@register_model("vanillanet", 224, params=230_066_080, macs=87_549_407_332, small_input_size=160)
def vanillanet_13_x1_5_ada_pool(**kw):
    """VanillaNet-13 x1.5 with adaptive max pooling (to 40, 20 and 10 px) in its strided stages."""
    return _vanillanet([*_DEEP] + [512] * 6 + [1024, 1024], _V13_STRIDES, mult=6,
                       ada_pool=[0, 40, 20, 0, 0, 0, 0, 0, 0, 10, 0], **kw)
