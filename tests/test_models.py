"""Issue 2: the zoo — construction, published sizes, notebook key names, weights, seed quirks;
the families' declarations and the training-knob protocol."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pickle

import numpy as np
import paddle
import pytest
from paddle import nn

from cnnexport import models
from cnnexport.rewrite import FuseError, fuse
from cnnexport.models import registry
from cnnexport.models.fusion import count_params, macs
from cnnexport.models.softpool import SoftPool2D
from cnnexport.models.training import Recipe, knob_layers, set_knob
from tests.helpers import BASELINES, FAMILY_VARIANTS, perturb, random_images, rel_l2, run_cli, small_size

ALL = models.list_models()


def lazy(name, **kw):
    with paddle.LazyGuard():
        return models.create(name, **kw)


@pytest.mark.parametrize("name", ALL)
def test_every_model_builds_and_runs(name):
    size = small_size(name)
    model = models.create(name, img_size=size, num_classes=7)
    model.eval()
    with paddle.no_grad():
        out = model(paddle.to_tensor(random_images(2, size)))
    assert out.shape == [2, 7]
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("name, expected", [
    ("alexnet_dy", 8_324_368), ("alexnet_bn", 7_526_794),
    ("alexnet_softpool", 14_601_930), ("alexnet", 14_601_930),
    ("orthonet18", 11_270_602), ("resnet18_cifar", 11_183_562),
])
def test_published_parameter_counts(name, expected):
    assert count_params(lazy(name)) == expected


@pytest.mark.parametrize("name", ALL)
def test_registry_counts_are_the_built_models(name):
    info = models.model_info(name)
    model = lazy(name)
    assert info.params == count_params(model)
    # A MAC count needs shapes only: zeros skip the (slow) random initialisation.
    for param in model.parameters():
        param.set_value(paddle.zeros(param.shape, param.dtype))
    assert info.macs == macs(model, info.input_size)


@pytest.mark.parametrize("name, millions", [
    ("moganet_xtiny", 2.97), ("moganet_tiny", 5.20), ("moganet_small", 25.3),
    ("moganet_base", 43.9), ("moganet_large", 82.5), ("moganet_xlarge", 180.8),
])
def test_moganet_sizes_match_the_paper(name, millions):
    assert count_params(lazy(name, num_classes=1000)) == pytest.approx(millions * 1e6, rel=0.01)


def test_registry_defaults_follow_the_notebooks():
    sizes = {n: (models.model_info(n).input_size, models.model_info(n).num_classes) for n in ALL}
    assert {sizes[n] for n in ALL if n.startswith(("moganet", "vanillanet"))} == {(224, 10)}
    assert sizes["alexnet_softpool"] == sizes["alexnet"] == (224, 10)
    assert sizes["alexnet_dy"] == sizes["alexnet_bn"] == (128, 10)
    assert {sizes[n] for n in ALL if models.model_info(n).family == "orthonet"} == {(32, 10)}
    for name in ["vanillanet_5", "vanillanet_13", "vanillanet_13_x1_5", "vanillanet_13_x1_5_ada_pool",
                 "moganet_xtiny", "moganet_xlarge", "alexnet_dy", "alexnet_bn", "alexnet_softpool", "alexnet",
                 "orthonet18", "orthonet34", "orthonet50", "resnet18_cifar"] + [f"vanillanet_{i}" for i in range(5, 14)]:
        assert name in ALL


def test_unknown_model_names_close_matches():
    with pytest.raises(models.UnknownModelError, match="did you mean vanillanet_5"):
        models.create("vanillanet5")


# --- families: what each module declares -----------------------------------------------------------

@pytest.mark.parametrize("family", models.list_families())
def test_every_family_declares_a_recipe_and_the_tests_facts(family):
    info = models.family_info(family)
    assert isinstance(info.recipe, Recipe)
    assert models.model_info(info.representative).family == family
    for name in models.list_models(family):
        assert 1 <= models.model_info(name).small_input_size <= models.model_info(name).input_size
    for transform, _ in info.recipe.augment(info.small_input_size):
        assert hasattr(paddle.vision.transforms, transform)


def _fresh_helpers():
    """tests/helpers.py imported anew, so its tables are computed from the registry as it is now."""
    spec = importlib.util.spec_from_file_location("fresh_helpers", os.path.join(os.path.dirname(__file__),
                                                                                "helpers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tests_tables_are_derived_from_the_registry(monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))  # put back, unregistering the family
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_family("throwaway", representative="throwaway_net", small_input_size=48)

    @registry.register_model("throwaway", 96, params=0, macs=0, baseline=True)
    def throwaway_net(num_classes, img_size, seed_compat):
        raise AssertionError("not built")

    helpers = _fresh_helpers()
    assert helpers.SMALL_SIZE == {"dynamic_conv": 64, "moganet": 32, "orthonet": 8, "softpool": 64, "vanillanet": 32,
                                  "throwaway": 48}
    assert helpers.FAMILY_VARIANTS == {"dynamic_conv": "alexnet_dy", "moganet": "moganet_xtiny",
                                       "orthonet": "orthonet18", "softpool": "alexnet_softpool",
                                       "vanillanet": "vanillanet_5", "throwaway": "throwaway_net"}
    assert sorted(helpers.BASELINES) == ["alexnet", "alexnet_bn", "resnet18_cifar", "throwaway_net"]
    assert helpers.small_size("throwaway_net") == 48 and helpers.small_size("vanillanet_13") == 32
    assert helpers.small_size("vanillanet_13_x1_5_ada_pool") == 160  # its adaptive pools need 160 px


def test_a_model_of_an_undeclared_family_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="family 'nowhere' is not registered; call register_family"):
        registry.register_model("nowhere", 32, params=0, macs=0)(lambda **kw: None)


# --- training knobs: one protocol, one walker ------------------------------------------------------

def test_the_knob_walker_finds_each_knob_where_it_is():
    vanilla = models.create("vanillanet_5", img_size=32)
    assert [type(layer).__name__ for layer in knob_layers(vanilla, "act_learn")] == ["VanillaNet"] + ["Block"] * 3
    dy = models.create("alexnet_dy", img_size=64)
    assert [type(layer).__name__ for layer in knob_layers(dy, "temperature")] == ["RoutingAttention"] * 3
    assert not knob_layers(vanilla, "temperature") and not knob_layers(dy, "act_learn")
    for name in ("alexnet_bn", "resnet18_cifar"):
        model = lazy(name, img_size=small_size(name))
        assert set_knob(model, "act_learn", 0.5) == set_knob(model, "temperature", 30) == 0


def _perturbed_in_eval(name: str, size: int):
    """A model with non-trivial weights in eval mode, an input batch, and its output on it."""
    paddle.seed(0)
    model = perturb(models.create(name, img_size=size))
    model.eval()
    x = paddle.to_tensor(random_images(2, size))
    return model, x, model(x).numpy()


def test_setting_act_learn_changes_vanillanet_and_1_lets_it_fuse():
    model, x, deploy = _perturbed_in_eval("vanillanet_5", 32)
    assert set_knob(model, "act_learn", 0.5) == 4
    assert rel_l2(model(x).numpy(), deploy) > 0.01  # a leaky ReLU between the convs, not the identity
    with pytest.raises(FuseError, match="act_learn == 1, but it is 0.5"):
        fuse(model)
    set_knob(model, "act_learn", 1.0)
    np.testing.assert_array_equal(model(x).numpy(), deploy)
    fused, _ = fuse(model)
    assert rel_l2(fused(x).numpy(), deploy) <= 1e-5


def test_setting_the_temperature_changes_every_router_of_alexnet_dy():
    model, x, at_1 = _perturbed_in_eval("alexnet_dy", 64)
    assert set_knob(model, "temperature", 30.0) == 3
    assert [router.temperature for router in knob_layers(model, "temperature")] == [30.0] * 3
    assert rel_l2(model(x).numpy(), at_1) > 0.01  # flatter routing weights mix the experts differently


@pytest.mark.parametrize("name, size, rule", [
    ("vanillanet_5", 100, "multiples of 32"), ("moganet_xtiny", 100, "multiples of 32"),
    ("alexnet_bn", 40, "57 px or more"), ("resnet18_cifar", 30, "multiples of 8"),
    ("vanillanet_13_x1_5_ada_pool", 128, "from 160 px"),
])
def test_input_sizes_the_architecture_cannot_take(name, size, rule):
    with pytest.raises(models.InputSizeError, match=rule):
        lazy(name, img_size=size)


# --- state-dict keys: the notebooks' own names ---------------------------------------------------

BN = ("weight", "bias", "_mean", "_variance")


def _bn(prefix):
    return {f"{prefix}.{k}" for k in BN}


def _wb(prefix):
    return {f"{prefix}.weight", f"{prefix}.bias"}


def test_vanillanet_keys_are_the_notebooks():
    expected = _wb("stem1.0") | _bn("stem1.1") | _wb("stem2.0") | _bn("stem2.1") | {"stem2.2.weight"} | _bn("stem2.2.bn")
    for i in range(3):
        p = f"stages.{i}"
        expected |= _wb(f"{p}.conv1.0") | _bn(f"{p}.conv1.1") | _wb(f"{p}.conv2.0") | _bn(f"{p}.conv2.1")
        expected |= {f"{p}.act.weight"} | _bn(f"{p}.act.bn")
    expected |= _wb("cls1.2") | _bn("cls1.3") | _wb("cls2.0")
    assert set(lazy("vanillanet_5").state_dict()) == expected

    deploy = _wb("stem.0") | _wb("stem.1") | _wb("cls.2")
    for i in range(3):
        deploy |= _wb(f"stages.{i}.conv") | _wb(f"stages.{i}.act")
    assert set(lazy("vanillanet_5", deploy=True).state_dict()) == deploy


def test_moganet_keys_are_the_notebooks():
    keys = set(lazy("moganet_xtiny").state_dict())
    block = "blocks3.9"
    expected_block = (_bn(f"{block}.norm1") | _bn(f"{block}.norm2") | {f"{block}.layer_scales1", f"{block}.layer_scales2"}
                      | {f"{block}.attn.{k}.{w}" for k in ("proj1", "gate", "proj2", "value.dwconv0", "value.dwconv1",
                                                              "value.dwconv2", "value.pwconv") for w in ("weight", "bias")}
                      | {f"{block}.attn.sigma.scale", f"{block}.ffn.sigma.scale"}
                      | {f"{block}.ffn.{k}.{w}" for k in ("fc1", "dwconv", "fc2", "decompose") for w in ("weight", "bias")})
    assert expected_block == {k for k in keys if k.startswith(block + ".")}
    assert _wb("patch_embed1.proj.0") | _bn("patch_embed1.proj.1") | _wb("patch_embed1.proj.3") | _bn("patch_embed1.norm") <= keys
    assert _wb("patch_embed4.proj") | _bn("patch_embed4.norm") | _bn("norm4") | _wb("head") <= keys
    assert sum(k.endswith("layer_scales1") for k in keys) == 3 + 3 + 10 + 2


def test_alexnet_keys_are_the_notebooks():
    dy = set(lazy("alexnet_dy").state_dict())
    for i in (8, 11, 14):
        assert _wb(f"features.{i}") | _wb(f"features.{i}.routing.net.0") | _wb(f"features.{i}.routing.net.2") <= dy
    for i in (1, 5, 9, 12, 15):
        assert _bn(f"features.{i}") <= dy
    assert _wb("classifier.0") | _wb("classifier.3") | _wb("classifier.6") <= dy
    bn = set(lazy("alexnet_bn").state_dict())
    assert bn == {k for k in dy if ".routing." not in k}
    plain = set(lazy("alexnet").state_dict())
    assert plain == set().union(*(_wb(f"features.{i}") for i in (0, 3, 6, 8, 10)),
                                *(_wb(f"classifier.{i}") for i in (0, 3, 6)))
    assert set(lazy("alexnet_softpool").state_dict()) == plain


def _notebook_resnet18():
    """The OrthoNet notebook's baseline, built exactly as the notebook builds it."""
    model = paddle.vision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2D(3, 64, 3, padding=1, bias_attr=False)
    model.maxpool = nn.Identity()
    return model


def test_resnet18_cifar_is_the_notebooks_model():
    paddle.seed(3)
    notebook = _notebook_resnet18()
    ours = models.create("resnet18_cifar")
    theirs = {k: tuple(v.shape) for k, v in notebook.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs
    perturb(notebook)
    ours.set_state_dict(notebook.state_dict())
    notebook.eval(), ours.eval()
    x = paddle.to_tensor(random_images(3, 32))
    np.testing.assert_allclose(ours(x).numpy(), notebook(x).numpy(), rtol=1e-5, atol=1e-5)


def test_orthonet_keys_extend_the_resnet_with_attention():
    resnet = set(lazy("resnet18_cifar").state_dict())
    ortho = set(lazy("orthonet18").state_dict())
    extra = ortho - resnet
    assert resnet <= ortho
    assert extra == {f"layer{s}.{b}.attn.{k}" for s in range(1, 5) for b in range(2)
                     for k in ("filters", "excitation.0.weight", "excitation.2.weight")}


def test_orthonet_filters_are_orthonormal_buffers_that_load_not_redraw(tmp_path):
    model = models.create("orthonet18")
    filters = {n: b.numpy() for n, b in model.named_buffers() if n.endswith("filters")}
    # stage sizes 32, 16, 8, 4 px at 32 px input; 512 channels > 4*4: 16 filters repeated 32 times
    assert filters["layer1.0.attn.filters"].shape == (64, 32, 32)
    assert filters["layer4.1.attn.filters"].shape == (512, 4, 4)
    for f in filters.values():
        flat = f.reshape(f.shape[0], -1).astype(np.float64)
        n = min(flat.shape)
        np.testing.assert_allclose(flat[:n] @ flat[:n].T, np.eye(n), atol=1e-5)
    l4 = filters["layer4.1.attn.filters"].reshape(512, 16)
    np.testing.assert_array_equal(l4[:16], l4[16:32])
    assert count_params(model) == 11_270_602  # buffers are not parameters

    models.save_weights(model, tmp_path / "o.pdparams")
    other = models.create("orthonet18", filter_seed=123)
    assert not np.allclose(other.state_dict()["layer1.0.attn.filters"].numpy(), filters["layer1.0.attn.filters"])
    models.load_weights(other, tmp_path / "o.pdparams")
    np.testing.assert_array_equal(other.state_dict()["layer1.0.attn.filters"].numpy(), filters["layer1.0.attn.filters"])


# --- weights ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pdparams", ".safetensors"])
def test_weights_round_trip(tmp_path, suffix):
    paddle.seed(1)
    source = perturb(models.create("alexnet_bn", img_size=64))
    path = tmp_path / f"w{suffix}"
    models.save_weights(source, path)
    paddle.seed(2)
    target = models.create("alexnet_bn", img_size=64)
    models.load_weights(target, path)
    for key, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[key].numpy(), value.numpy())


def test_notebook_style_paddle_save_loads(tmp_path):
    """What the notebooks write: paddle.save(model.state_dict(), 'best_model.pdparams')."""
    source = perturb(models.create("vanillanet_5", img_size=32))
    paddle.save(source.state_dict(), str(tmp_path / "best_model.pdparams"))
    target = models.create("vanillanet_5", img_size=32)
    models.load_weights(target, tmp_path / "best_model.pdparams")
    source.eval(), target.eval()
    x = paddle.to_tensor(random_images(2, 32))
    np.testing.assert_array_equal(source(x).numpy(), target(x).numpy())


def test_mismatched_weights_name_the_offenders(tmp_path):
    models.save_weights(models.create("alexnet_bn", img_size=64), tmp_path / "bn.pdparams")
    with pytest.raises(models.WeightsError, match=r"missing keys: features\.8\.routing"):
        models.load_weights(models.create("alexnet_dy", img_size=64), tmp_path / "bn.pdparams")
    with pytest.raises(models.WeightsError, match=r"shape mismatches .*classifier\.0\.weight"):
        models.load_weights(models.create("alexnet_bn", img_size=128), tmp_path / "bn.pdparams")
    arrays = models.read_state_dict(tmp_path / "bn.pdparams")
    arrays["extra.weight"] = np.zeros(3, np.float32)
    with open(tmp_path / "extra.pdparams", "wb") as f:
        pickle.dump(arrays, f)
    with pytest.raises(models.WeightsError, match=r"unexpected keys: extra\.weight"):
        models.load_weights(models.create("alexnet_bn", img_size=64), tmp_path / "extra.pdparams")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pdparams", "wb") as f:
        pickle.dump({"features.0.weight": _Exploit(marker)}, f)
    with pytest.raises(models.WeightsError, match="refusing to unpickle posix.system"):
        models.load_weights(models.create("alexnet", img_size=64), tmp_path / "evil.pdparams")
    assert not marker.exists()


# --- seed quirks -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(FAMILY_VARIANTS.values()) + BASELINES)
def test_seed_compat_changes_only_moganet_and_softpool(name):
    """The quirks are in MogaNet's channel aggregation and in SoftPool (not in plain AlexNet)."""
    size = small_size(name)
    paddle.seed(5)
    fixed = perturb(models.create(name, img_size=size))
    compat = models.create(name, img_size=size, seed_compat=True)
    compat.set_state_dict(fixed.state_dict())
    fixed.eval(), compat.eval()
    x = paddle.to_tensor(random_images(2, size))
    with paddle.no_grad():
        differs = rel_l2(compat(x).numpy(), fixed(x).numpy()) > 1e-3
    assert differs == (models.model_info(name).family == "moganet" or name == "alexnet_softpool")


def _naive_softpool(x, k, s, shared):
    e = paddle.exp(x).sum(axis=1, keepdim=True) if shared else paddle.exp(x)
    return paddle.nn.functional.avg_pool2d(x * e, k, s) / paddle.nn.functional.avg_pool2d(e, k, s)


@pytest.mark.parametrize("shared", [False, True])
def test_stable_softpool_equals_the_naive_formula_and_stays_finite(shared):
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 4, 13, 11)).astype("float32"))
    pool = SoftPool2D(3, 2, shared_weights=shared)
    np.testing.assert_allclose(pool(x).numpy(), _naive_softpool(x, 3, 2, shared).numpy(), rtol=1e-5, atol=1e-6)
    big = x * 1000
    assert not np.isfinite(_naive_softpool(big, 3, 2, shared).numpy()).all()  # the naive form overflows
    out = pool(big).numpy()
    assert np.isfinite(out).all()
    if not shared:  # each window's output lies within the window's values, near its maximum
        assert (out <= paddle.nn.functional.max_pool2d(big, 3, 2).numpy() + 1e-3).all()


# --- command line ----------------------------------------------------------------------------------

def test_cli_list_shows_the_registry_without_building_a_model(capsys, monkeypatch):
    def no_build(**kwargs):
        raise AssertionError("`cnnexport list` built a model")

    for name in ALL:
        unbuildable = dataclasses.replace(models.model_info(name), constructor=no_build)
        monkeypatch.setitem(models.registry._REGISTRY, name, unbuildable)
    code, out, _ = run_cli(capsys, "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(ALL)
    for name, row in rows.items():
        info = models.model_info(name)
        assert row == {"name": name, "family": info.family, "input_size": info.input_size,
                       "num_classes": info.num_classes, "params": info.params, "flops": info.macs}
    assert rows["alexnet_dy"]["params"] == 8_324_368 and rows["orthonet18"]["params"] == 11_270_602
    assert rows["moganet_xtiny"]["flops"] == pytest.approx(0.78e9, rel=0.02)  # MogaNet-XT: 0.8 GFLOPs at 224 px
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ALL:
        assert name in out and f"{models.model_info(name).params:,}" in out


def test_cli_unknown_model_is_one_line_exit_2(capsys):
    code, out, err = run_cli(capsys, "vanilanet_5")
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "unknown model 'vanilanet_5'" in err and "vanillanet_5" in err
