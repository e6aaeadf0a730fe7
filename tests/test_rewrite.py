"""Issue 3: `fuse` — exact for every family, on non-trivial weights, with a truthful summary."""
from __future__ import annotations

import numpy as np
import paddle
import pytest
from paddle import nn

from cnnexport import models
from cnnexport.rewrite import FuseError, fuse
from cnnexport.models.dynamic_conv import DYConv2D, RoutingAttention
from cnnexport.models.fusion import BATCH_NORMS, count_params
from tests.helpers import BASELINES, FAMILY_VARIANTS, perturb, photo_batch, random_images, rel_l2, small_size

PARITY_MODELS = list(FAMILY_VARIANTS.values()) + BASELINES + ["orthonet50"]


def _outputs(model, batch):
    with paddle.no_grad():
        return model(paddle.to_tensor(batch)).numpy()


@pytest.mark.parametrize("name", PARITY_MODELS)
def test_fuse_is_exact_on_random_and_real_images(name):
    size = small_size(name) if models.model_info(name).family != "orthonet" else 32
    paddle.seed(11)
    model = perturb(models.create(name, img_size=size))
    model.eval()
    fused, summary = fuse(model, img_size=size)
    info = models.model_info(name)
    for batch in (random_images(5, size, seed=3), photo_batch(size, info.mean, info.std)):
        ref, out = _outputs(model, batch), _outputs(fused, batch)
        assert np.isfinite(out).all()
        assert rel_l2(out, ref) <= 1e-5
        assert (out.argmax(1) == ref.argmax(1)).all()
    remaining = [n for n, layer in fused.named_sublayers() if isinstance(layer, BATCH_NORMS)]
    assert remaining == [k["layer"] for k in summary.kept]
    if info.family != "moganet":
        assert remaining == []
    assert summary.params_after == count_params(fused) <= summary.params_before
    assert summary.macs_after <= summary.macs_before


def test_moganet_keeps_exactly_the_norms_before_padded_convs():
    model = perturb(models.create("moganet_xtiny", img_size=32)).eval()
    fused, summary = fuse(model, img_size=32)
    assert [k["layer"] for k in summary.kept] == ["norm1", "norm2", "norm3"]
    assert all("padded 3x3 conv" in k["reason"] for k in summary.kept)
    folded = {f["layer"] for f in summary.folded}
    assert {"norm4", "blocks1.0.norm1", "blocks1.0.layer_scales1", "blocks4.1.norm2", "blocks4.1.layer_scales2",
            "patch_embed1.norm", "patch_embed1.proj.1", "patch_embed3.norm"} <= folded


@pytest.mark.parametrize("name, millions", [
    ("vanillanet_5", 15.5), ("vanillanet_6", 32.5), ("vanillanet_7", 32.8), ("vanillanet_8", 37.1),
    ("vanillanet_9", 41.4), ("vanillanet_10", 45.7), ("vanillanet_11", 50.0), ("vanillanet_12", 54.3),
    ("vanillanet_13", 58.6), ("vanillanet_13_x1_5", 127.8),
])
def test_vanillanet_deploy_form_has_the_papers_size(name, millions):
    with paddle.LazyGuard():
        deploy = models.create(name, num_classes=1000, deploy=True)
    assert count_params(deploy) / 1e6 == pytest.approx(millions, abs=0.05)


def test_fused_vanillanet_is_the_deploy_architecture():
    fused, summary = fuse(models.create("vanillanet_5", num_classes=1000, img_size=32).eval())
    with paddle.LazyGuard():
        deploy = models.create("vanillanet_5", num_classes=1000, deploy=True)
    assert {k: v.shape for k, v in fused.state_dict().items()} == {k: v.shape for k, v in deploy.state_dict().items()}
    assert count_params(fused) == 15_523_304
    assert not any(isinstance(layer, BATCH_NORMS) for layer in fused.sublayers())
    assert len(summary.rewritten) == 5  # three stages, the stem and the classifier merged


def test_vanillanet_refuses_before_the_deep_training_slope_reaches_1():
    model = models.create("vanillanet_5", img_size=32)
    model.change_act(0.35)
    model.eval()
    with pytest.raises(FuseError, match="act_learn == 1, but it is 0.35"):
        fuse(model)
    model.change_act(1.0)
    fuse(model)


def test_fuse_refuses_a_model_in_training_mode():
    model = models.create("alexnet_bn", img_size=64)
    with pytest.raises(FuseError, match="training mode"):
        fuse(model)
    model.eval()
    model.features[1].train()  # one BatchNorm still updating its statistics is enough to refuse
    with pytest.raises(FuseError, match="features.1"):
        fuse(model)


@pytest.mark.parametrize("name", ["vanillanet_5", "moganet_xtiny", "alexnet_dy", "orthonet18"])
def test_fusing_twice_changes_nothing(name):
    size = small_size(name) if models.model_info(name).family != "orthonet" else 16
    once, _ = fuse(perturb(models.create(name, img_size=size)).eval())
    twice, summary = fuse(once)
    assert not summary.changed and not summary.folded
    assert summary.params_before == summary.params_after
    for key, value in once.state_dict().items():
        np.testing.assert_array_equal(twice.state_dict()[key].numpy(), value.numpy())


def test_fuse_leaves_the_original_untouched_unless_inplace():
    model = perturb(models.create("alexnet_bn", img_size=64)).eval()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    fuse(model)
    assert set(model.state_dict()) == set(before)


def test_generic_passes_fold_grouped_dilated_convs_and_bn_into_1x1():
    paddle.seed(4)
    seq = nn.Sequential(
        nn.Conv2D(4, 8, 3, padding=2, dilation=2, groups=2, bias_attr=False), nn.BatchNorm2D(8), nn.ReLU(),
        nn.BatchNorm2D(8), nn.Conv2D(8, 6, 1), nn.ReLU(),            # BN into the following 1x1 conv
        nn.BatchNorm2D(6), nn.Conv2D(6, 6, 3, padding=1),            # before a padded conv: not exact, stays
    )
    perturb(seq).eval()
    fused, summary = fuse(seq)
    assert [(f["layer"], f["into"]) for f in summary.folded] == [("1", "0"), ("3", "4")]
    assert [k["layer"] for k in summary.kept] == ["6"]
    x = random_images(2, 9, channels=4)
    assert rel_l2(_outputs(fused, x), _outputs(seq, x)) <= 1e-6


# --- dynamic convolution -----------------------------------------------------------------------------

@pytest.mark.parametrize("groups, bias", [(1, True), (2, False)])
@pytest.mark.parametrize("batch", [1, 5])
def test_batch_agnostic_dyconv_equals_the_notebook_formulation(groups, bias, batch):
    paddle.seed(7)
    layer = DYConv2D(8, 6, 3, stride=2, padding=1, groups=groups, bias_attr=bias, num_experts=3, temperature=1)
    x = paddle.to_tensor(random_images(batch, 9, seed=batch)[:, :1].repeat(8, axis=1)
                         * np.linspace(0.5, 2, 8, dtype=np.float32)[None, :, None, None])
    x = x + paddle.to_tensor(np.random.default_rng(batch).normal(size=x.shape).astype("float32"))
    layer.eval()
    with paddle.no_grad():
        experts, per_sample = layer.forward_experts(x).numpy(), layer.forward_per_sample(x).numpy()
    assert rel_l2(experts, per_sample) <= 1e-6
    if batch > 1:  # the samples really got different kernels
        attn = layer.routing(x).numpy()
        assert np.ptp(attn, axis=0).max() > 1e-3
        np.testing.assert_allclose(attn.sum(axis=1), 1.0, rtol=1e-6)


def test_folding_bn_into_dyconv_is_exact_because_routing_weights_sum_to_one():
    paddle.seed(8)
    dy = DYConv2D(4, 6, 3, padding=1, num_experts=4, temperature=1)
    bn = perturb(nn.Sequential(nn.BatchNorm2D(6)))[0]
    model = nn.Sequential(dy, bn)
    model.eval()
    x = random_images(5, 8, channels=4)
    ref = _outputs(model, x)
    fused, summary = fuse(model)
    assert [f["layer"] for f in summary.folded] == ["1"]
    assert rel_l2(_outputs(fused, x), ref) <= 1e-6


def test_routing_temperature_schedule_is_the_notebooks():
    routing = RoutingAttention(16, 2)
    assert routing.temperature == 30
    seen = [routing.update_temperature() for _ in range(11)]
    assert seen == [27, 24, 21, 18, 15, 12, 9, 6, 3, 1, 1]
