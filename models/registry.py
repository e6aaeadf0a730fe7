"""The model registry: what the zoo knows about its families and models, declared in their modules.

A family module declares the family once (`register_family`: its seed notebook's training recipe
and the facts the tests need), then decorates each constructor with `register_model`:

    register_family("dynamic_conv", representative="alexnet_dy", small_input_size=64, recipe=Recipe(...))

    @register_model("dynamic_conv", 128, params=8_324_368, macs=98_480_384)
    def alexnet_dy(num_classes, img_size, seed_compat): ...

Adding a family is its module plus its import line in `models/__init__.py`.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from collections.abc import Callable

from ..errors import BadInput
from .training import Recipe

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)


class UnknownModelError(BadInput, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; a user-facing error should not
        return self.args[0]


class InputSizeError(BadInput):
    """An input size the architecture cannot take."""


@dataclass(frozen=True)
class FamilyInfo:
    """A family of the zoo: its seed notebook's training recipe and what quick tests use of it."""

    name: str
    recipe: Recipe | None  # None: `cnnexport train` refuses the family's models
    representative: str  # the variant the tests that go through every family take
    small_input_size: int  # a small input its models take, for quick tests (a model may declare its own)


_FAMILIES: dict[str, FamilyInfo] = {}


def register_family(name: str, *, representative: str, small_input_size: int, recipe: Recipe | None = None) -> None:
    """Declare a family; its module calls this before registering the family's models."""
    if name in _FAMILIES:
        raise ValueError(f"family {name!r} registered twice")
    _FAMILIES[name] = FamilyInfo(name, recipe, representative, small_input_size)


def list_families() -> list[str]:
    return list(_FAMILIES)


def family_info(name: str) -> FamilyInfo:
    return _FAMILIES[name]


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about a registered name, taken from its seed notebook's CIFAR-10 settings.

    `params` and `macs` describe the model built with these defaults (`seed_compat` off); they are
    written down rather than computed so that `cnnexport list` builds nothing, and a test keeps them
    equal to `count_params` and `macs` of `cnnexport.models.fusion`. `small_input_size` is the family's
    unless the model declares its own; `baseline` marks a notebook's comparison model.
    """

    name: str
    family: str
    constructor: Callable = field(repr=False)
    input_size: int
    params: int
    macs: int
    small_input_size: int
    num_classes: int = 10
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    baseline: bool = False


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(family: str, input_size: int, *, params: int, macs: int, small_input_size: int | None = None,
                   **info):
    """Register a constructor `fn(num_classes, img_size, seed_compat, **kwargs) -> paddle.nn.Layer`
    of a registered family with the parameter and multiply-accumulate counts of its default build
    (see `ModelInfo`)."""

    def decorator(fn: Callable) -> Callable:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model {fn.__name__!r} registered twice")
        if family not in _FAMILIES:
            raise ValueError(f"model {fn.__name__!r}: family {family!r} is not registered; "
                             "call register_family before registering its models")
        small = _FAMILIES[family].small_input_size if small_input_size is None else small_input_size
        _REGISTRY[fn.__name__] = ModelInfo(fn.__name__, family, fn, input_size, params=params, macs=macs,
                                           small_input_size=small, **info)
        return fn

    return decorator


def list_models(family: str | None = None) -> list[str]:
    return [n for n, i in _REGISTRY.items() if family is None or i.family == family]


def model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `cnnexport list` for the zoo"
        raise UnknownModelError(f"unknown model {name!r}: {hint}") from None


def create(name: str, num_classes: int | None = None, img_size: int | None = None,
           seed_compat: bool = False, **kwargs):
    """Build a registered model in its train-time form (eval() is the caller's choice)."""
    info = model_info(name)
    return info.constructor(
        num_classes=info.num_classes if num_classes is None else num_classes,
        img_size=info.input_size if img_size is None else img_size,
        seed_compat=seed_compat,
        **kwargs,
    )


# The largest input size and class count any command accepts: beyond them the smoke batch or the
# classifier alone needs tens of GB.
MAX_INPUT_SIZE = 1024
MAX_CLASSES = 100_000


def check_size(img_size: int, ok: bool, rule: str) -> None:
    if not ok:
        raise InputSizeError(f"input size {img_size} px is not supported: this architecture takes {rule}")
