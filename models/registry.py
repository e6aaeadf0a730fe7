"""The model registry: every zoo entry is a constructor function decorated with `register_model`."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from collections.abc import Callable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; a user-facing error should not
        return self.args[0]


class InputSizeError(ValueError):
    """An input size the architecture cannot take."""


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about a registered name, taken from its seed notebook's CIFAR-10 settings.

    `params` and `macs` describe the model built with these defaults (`seed_compat` off); they are
    written down rather than computed so that `cnnexport list` builds nothing, and a test keeps them
    equal to `count_params` and `macs` of `models.fusion`.
    """

    name: str
    family: str
    constructor: Callable = field(repr=False)
    input_size: int
    params: int
    macs: int
    num_classes: int = 10
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(family: str, input_size: int, *, params: int, macs: int, **info):
    """Register a constructor `fn(num_classes, img_size, seed_compat, **kwargs) -> paddle.nn.Layer`
    with the parameter and multiply-accumulate counts of its default build (see `ModelInfo`)."""

    def decorator(fn: Callable) -> Callable:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model {fn.__name__!r} registered twice")
        _REGISTRY[fn.__name__] = ModelInfo(fn.__name__, family, fn, input_size, params=params, macs=macs, **info)
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


def check_size(img_size: int, ok: bool, rule: str) -> None:
    if not ok:
        raise InputSizeError(f"input size {img_size} px is not supported: this architecture takes {rule}")
