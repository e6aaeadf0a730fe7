"""Training recipes as data, and the one protocol for training-time knobs. Paddle-free to import.

A family module declares its seed notebook's recipe next to its constructors
(`register_family(..., recipe=Recipe(...))`); `cnnexport.train` turns it into Paddle objects and
runs it. Everything here is plain data: the optimizer and transforms are named by their Paddle
class, the LR schedule says which `paddle.optimizer.lr` class it is and with what arguments.

Training-time knobs are values outside the state dict that a recipe anneals to their deploy
value 1 (VanillaNet's deep-training slope `act_learn`, the dynamic convolution's routing
temperature). The protocol, like `fuse(log)` for rewrites: a layer that has a knob names it in a
`training_knob` class attribute and sets it in `set_training_knob(value)`. `set_knob` walks a
model and sets every layer with that knob, so a schedule applies to exactly the models that have
layers with its knob (AlexNet-BN has no routing layer, hence no temperature schedule).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar

# What a checkpoint is rebuilt with (`cnnexport MODEL --weights`): a knob at any other value
# computes something the exported model will not.
DEPLOY_VALUE = 1.0

# ----------------------------------------------------------------------------- training-time knobs


def knob_layers(model, knob: str) -> list:
    """Every layer of `model` (itself included) that declares `training_knob == knob`."""
    return [layer for layer in model.sublayers(include_self=True) if getattr(layer, "training_knob", None) == knob]


def set_knob(model, knob: str, value: float) -> int:
    """Set `knob` to `value` on every layer of `model` that has it; returns how many layers it set."""
    layers = knob_layers(model, knob)
    for layer in layers:
        layer.set_training_knob(value)
    return len(layers)


@dataclass(frozen=True)
class KnobSchedule(ABC):
    """A knob's value per (0-based) epoch: from `start` to DEPLOY_VALUE by epoch `end_epoch`."""

    knob: str
    start: float
    end_epoch: int  # the notebook's; `for_run` compresses it for short runs
    rule: ClassVar[str]  # how it goes from start to 1, named for config.json

    def for_run(self, epochs: int) -> KnobSchedule:
        """The schedule for a run of `epochs`: its last epoch must run at the deploy value, or the
        final model could not be exported as validated (VanillaNet could not even be fused)."""
        end_epoch = min(self.end_epoch, epochs - 1)
        return replace(self, start=self.start if end_epoch else DEPLOY_VALUE, end_epoch=end_epoch)

    @abstractmethod
    def value(self, epoch: int) -> float: ...

    def describe(self) -> dict:
        first_at_deploy = next(e for e in range(self.end_epoch + 1) if self.value(e) == DEPLOY_VALUE)
        return {"knob": self.knob, "rule": self.rule, "start": self.start, "reaches_1_at_epoch": first_at_deploy + 1}


@dataclass(frozen=True)
class LinearRamp(KnobSchedule):
    """start + (1 - start) * epoch / end_epoch, then 1 (VanillaNet: act_learn = epoch / 20 of 50 epochs)."""

    rule: ClassVar[str] = "linear"

    def value(self, epoch: int) -> float:
        if epoch >= self.end_epoch:
            return DEPLOY_VALUE
        return self.start + (DEPLOY_VALUE - self.start) * epoch / self.end_epoch


@dataclass(frozen=True)
class SteppedDecay(KnobSchedule):
    """max(start - step * epoch, 1) with step = ceil((start - 1) / end_epoch).

    The dynamic-convolution notebook's step is 30 // 10 = 3 (1 from epoch 10 on); the ceiling is
    that same 3 for end_epoch 10 and still reaches 1 by `end_epoch` when a short run compresses it.
    """

    rule: ClassVar[str] = "stepped"

    @property
    def step(self) -> int:
        return math.ceil((self.start - DEPLOY_VALUE) / self.end_epoch) if self.end_epoch else 0

    def value(self, epoch: int) -> float:
        return max(self.start - self.step * epoch, DEPLOY_VALUE)

    def describe(self) -> dict:
        return {**super().describe(), "step_per_epoch": self.step}


# ----------------------------------------------------------------------------- LR schedules


@dataclass(frozen=True)
class LRSchedule(ABC):
    per_iteration: ClassVar[bool]  # stepped after every batch (True) or every epoch (False)

    @abstractmethod
    def paddle_scheduler(self, steps_per_epoch: int, epochs: int) -> tuple[str, dict]:
        """A `paddle.optimizer.lr` class name and its arguments besides `learning_rate`."""

    def describe(self, steps_per_epoch: int, epochs: int) -> dict:
        name, kwargs = self.paddle_scheduler(steps_per_epoch, epochs)
        return {"name": name, **kwargs, "stepped": "per iteration" if self.per_iteration else "per epoch"}


@dataclass(frozen=True)
class CosinePerIteration(LRSchedule):
    """CosineAnnealingDecay stepped after every batch over the whole run (T_max = steps/epoch x epochs)."""

    per_iteration: ClassVar[bool] = True

    def paddle_scheduler(self, steps_per_epoch: int, epochs: int) -> tuple[str, dict]:
        return "CosineAnnealingDecay", {"T_max": steps_per_epoch * epochs}


@dataclass(frozen=True)
class MultiStepPerEpoch(LRSchedule):
    """MultiStepDecay (x gamma at each milestone epoch) stepped after every epoch."""

    milestones: tuple[int, ...]
    gamma: float = 0.1
    per_iteration: ClassVar[bool] = False

    def paddle_scheduler(self, steps_per_epoch: int, epochs: int) -> tuple[str, dict]:
        return "MultiStepDecay", {"milestones": list(self.milestones), "gamma": self.gamma}


# ----------------------------------------------------------------------------- augmentations

Transform = tuple[str, dict]  # a paddle.vision.transforms class name and its keyword arguments

JITTER: Transform = ("ColorJitter", {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2})
FLIP: Transform = ("RandomHorizontalFlip", {"prob": 0.5})
ROTATE: Transform = ("RandomRotation", {"degrees": 20})


def scaled(size: int, notebook_value: float, notebook_size: int) -> int:
    """A pixel count the notebook fixes at its input size, carried over to input size `size`."""
    return max(1, round(size * notebook_value / notebook_size))


def eval_transforms(size: int) -> list[Transform]:
    """Every family evaluates on the whole image, resized to the input size."""
    return [("Resize", {"size": (size, size)})]


# ----------------------------------------------------------------------------- the recipe


@dataclass(frozen=True)
class Recipe:
    """One family's training settings, from its seed notebook; epochs, batch size and lr are overridable."""

    optimizer: str  # a paddle.optimizer class
    lr: float
    weight_decay: float
    lr_schedule: LRSchedule
    epochs: int
    batch_size: int
    augment: Callable[[int], list[Transform]]  # the training transforms at an input size
    knobs: tuple[KnobSchedule, ...] = ()  # each applies to the models that have layers with its knob
    optimizer_kwargs: dict = field(default_factory=dict)
