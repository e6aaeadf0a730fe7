"""`cnnexport train`: train a zoo model on CIFAR-format data with its seed notebook's recipe.

Every family declares the recipe of the notebook it comes from in its own module (a
`cnnexport.models.training.Recipe`: optimizer, learning-rate schedule, epochs, batch size, augmentations,
knob schedules); this module turns it into Paddle objects and runs it, with label-smoothing
cross-entropy (0.1) for all. A knob schedule anneals a value that is not a weight (VanillaNet's
leaky-ReLU slope `act_learn` 0 -> 1, AlexNet-DY's routing temperature 30 -> 1) on every layer
that has that knob (`cnnexport.models.training.set_knob`). No knob is in the state dict, and a model rebuilt
from a weights file has every knob at 1, so `best_model.pdparams` is only chosen among epochs that
ran at 1.

A run directory holds `best_model.pdparams` / `final_model.pdparams` (plain state dicts),
`last_checkpoint.pdckpt` (weights, optimizer and LR-scheduler state, epoch, best accuracy: what
`--resume` needs), `metrics.json`, `config.json` (the recipe as run) and `loss.png` /
`accuracy.png`. Files are written to a temporary name and renamed, so an interrupt leaves the
previous complete version.

Under `python -m paddle.distributed.launch` (world size > 1) the model is wrapped in
`paddle.DataParallel`, batches are sharded per rank and only rank 0 writes.
"""
from __future__ import annotations

import inspect
import json
import math
import pickle
import random
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import paddle.vision.transforms as T
from tqdm import tqdm

from . import models
from .models.registry import MAX_CLASSES, MAX_INPUT_SIZE
from .models.training import (DEPLOY_VALUE, KnobSchedule, LRSchedule, Recipe, Transform, eval_transforms, knob_layers,
                             set_knob)
from .models.weights import WeightsError, check_fit, restricted_load, short_repr, state_dict_arrays

from .artifact import atomic_write, writable_directory, write_json
from .cifar import CifarData, CifarDataset, read_cifar_tarball
from .device import resolve_device
from .errors import BadInput

# Paddle's BatchNorm warns on every training forward that it tracks running statistics; it
# would land in the middle of the progress bar and says nothing about this run.
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")

LABEL_SMOOTHING = 0.1
CHECKPOINT = "last_checkpoint.pdckpt"
CONFIG = "config.json"
METRICS = "metrics.json"
# How progress is shown: a tqdm bar (a terminal), one plain line per epoch (a log), or nothing.
PROGRESS_MODES = ("bar", "lines", "off")
# The largest values a run can mean; larger ones are refused before any work (the input size and
# the classes are the zoo's limits, as for export).
ARGUMENT_LIMITS = {"epochs": 100_000, "batch_size": 65_536, "img_size": MAX_INPUT_SIZE, "num_classes": MAX_CLASSES}


# ----------------------------------------------------------------------------- the loss

def label_smoothing_cross_entropy(logits, labels):
    """The notebooks' LabelSmoothingCrossEntropy: (1 - eps) * nll + eps * mean_k(-log_softmax), batch mean.

    Paddle's built-in smooths the one-hot target to (1 - eps) * onehot + eps / K, and the cross
    entropy against that target is the same sum (tests/test_train.py checks it numerically).
    """
    return F.cross_entropy(logits, labels, label_smoothing=LABEL_SMOOTHING)


# ----------------------------------------------------------------------------- recipe to Paddle objects

def recipe_for(info: models.ModelInfo) -> Recipe:
    """The model's family's recipe; a family may declare none, and then its models cannot be trained."""
    recipe = models.family_info(info.family).recipe
    if recipe is None:
        raise BadInput(f"model {info.name!r} has no training recipe: its family {info.family!r} declares none "
                       "(give its register_family a recipe=), so it cannot be trained; pick another model")
    return recipe


def build_transform(spec: list[Transform]) -> T.Compose:
    return T.Compose([getattr(T, name)(**kwargs) for name, kwargs in spec])


def describe_transforms(spec: list[Transform]) -> list[str]:
    return [f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})" for name, kwargs in spec]


def build_lr_scheduler(schedule: LRSchedule, lr: float, steps_per_epoch: int, epochs: int):
    name, kwargs = schedule.paddle_scheduler(steps_per_epoch, epochs)
    return getattr(paddle.optimizer.lr, name)(learning_rate=lr, **kwargs)


# ----------------------------------------------------------------------------- run arguments and resume


@dataclass(frozen=True)
class RunArguments:
    model: str
    epochs: int
    batch_size: int
    lr: float
    img_size: int
    num_classes: int
    seed: int
    seed_compat: bool

    @classmethod
    def resolve(cls, info: models.ModelInfo, recipe: Recipe, data: CifarData, given: dict) -> RunArguments:
        def pick(key, default):
            return default if given[key] is None else given[key]

        args = cls(info.name, pick("epochs", recipe.epochs), pick("batch_size", recipe.batch_size),
                   pick("lr", recipe.lr), pick("img_size", info.input_size),
                   pick("num_classes", len(data.label_names)), given["seed"], given["seed_compat"])
        problem = argument_problem(vars(args))
        if problem:  # a default taken from the data (the number of classes it names) can be out of range too
            raise BadInput(problem)
        if args.num_classes < len(data.label_names):
            raise BadInput(f"num_classes {args.num_classes} is fewer than the {len(data.label_names)} classes "
                           "the data names")
        return args


def argument_problem(values: dict) -> str | None:
    """What is wrong with these run arguments (None: nothing); a value of None is one not given."""
    for key, high in ARGUMENT_LIMITS.items():
        value = values[key]
        if value is not None and not (type(value) is int and 1 <= value <= high):
            return f"--{key.replace('_', '-')} must be an integer from 1 to {high}, got {short_repr(value)}"
    lr = values["lr"]
    if lr is not None and not (type(lr) in (int, float) and math.isfinite(lr) and lr > 0):
        return f"--lr must be a finite number above 0, got {short_repr(lr)}"
    if not (type(values["seed"]) is int and 0 <= values["seed"] < 2**32):
        return f"--seed must be an integer from 0 to {2**32 - 1}, got {short_repr(values['seed'])}"
    if type(values["seed_compat"]) is not bool:
        return f"--seed-compat must be true or false, got {short_repr(values['seed_compat'])}"
    return None


def _resume_paths(resume: str) -> tuple[Path, Path]:
    """(run directory, checkpoint file) from a run directory or a checkpoint path."""
    path = Path(resume)
    checkpoint = path / CHECKPOINT if path.is_dir() else path
    if not checkpoint.is_file():
        raise BadInput(f"--resume {resume}: no checkpoint there (expected a run directory holding {CHECKPOINT}, "
                       "or that file)")
    return checkpoint.parent, checkpoint


def _recorded_arguments(run_dir: Path, model: str, given: dict) -> dict:
    """The arguments config.json recorded; a given value that is not its default must agree with them."""
    try:
        recorded = json.loads((run_dir / CONFIG).read_text())["arguments"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if not isinstance(recorded, dict):
        raise BadInput(f"--resume {run_dir}: {CONFIG} is missing or unreadable, so the run's recipe is unknown")
    if recorded.get("model") != model:
        raise BadInput(f"--resume {run_dir}: that run trains {short_repr(recorded.get('model'))}, not {model!r}")
    defaults = inspect.signature(run_training).parameters
    for key, value in given.items():
        if value != defaults[key].default and value != recorded.get(key):
            raise BadInput(f"--resume {run_dir}: the run was started with {key}={short_repr(recorded.get(key))}; "
                           f"leave {key} out or pass the same value (got {value!r})")
    arguments = {key: recorded.get(key) for key in given}
    problem = argument_problem(arguments)
    if problem:
        raise BadInput(f"--resume {run_dir}: {CONFIG} records an argument out of range ({problem})")
    return arguments


def _new_run_dir(model: str, out: str | None) -> Path:
    """The run directory to create (or fill, if empty); nothing is created here."""
    run_dir = Path(out) if out else Path("runs") / f"{model}-{datetime.now():%Y%m%d-%H%M%S}"
    if (run_dir / CONFIG).exists():
        raise BadInput(f"{run_dir} already holds a run: continue it with --resume {run_dir} or pick another --out")
    if run_dir.is_dir():
        if any(run_dir.iterdir()):
            raise BadInput(f"--out {run_dir} holds other files; cnnexport train only writes into a new or empty "
                           "directory, or continues a run with --resume")
        existing = run_dir
    elif run_dir.exists() or run_dir.is_symlink():
        raise BadInput(f"--out {run_dir} is a file, not a directory")
    else:
        target = run_dir.absolute()
        existing = next(p for p in target.parents if p.exists())
    if not writable_directory(existing):
        raise BadInput(f"cannot write {run_dir}: {existing} is not a writable directory; choose another --out")
    return run_dir


# ----------------------------------------------------------------------------- devices and ranks

def wrap_for_world(model, world_size: int):
    """DataParallel across ranks when launched on several devices; the plain model otherwise."""
    if world_size == 1:
        return model
    paddle.distributed.init_parallel_env()
    return paddle.DataParallel(model)


def unwrap(model):
    """The layer under a DataParallel wrapper, so state-dict keys carry no `_layers.` prefix."""
    return model._layers if isinstance(model, paddle.DataParallel) else model


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """The recipe's batch size is the global one: each rank takes its share."""
    if batch_size < world_size:
        raise BadInput(f"batch size {batch_size} is smaller than the {world_size} devices it is shared across")
    return batch_size // world_size


def _all_reduce_sum(values: np.ndarray, world_size: int) -> np.ndarray:
    if world_size == 1:
        return values
    tensor = paddle.to_tensor(values)
    paddle.distributed.all_reduce(tensor)
    return tensor.numpy()


def _epoch_seed(seed: int, epoch: int) -> int:
    """Every epoch re-seeds all generators from (seed, epoch), so a resumed run repeats an uninterrupted one."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    paddle.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# ----------------------------------------------------------------------------- files

def _save_state_dict(model, path: Path) -> None:
    atomic_write(path, lambda tmp: paddle.save(model.state_dict(), tmp))


def _to_numpy(obj):
    if isinstance(obj, dict):
        return {key: _to_numpy(value) for key, value in obj.items()}
    return obj.numpy() if isinstance(obj, paddle.Tensor) else obj


def read_checkpoint(path: Path) -> dict:
    """The checkpoint, read with the arrays-only unpickler (a crafted file cannot run code) and checked
    to hold what `_Trainer.checkpoint` writes."""
    try:
        with open(path, "rb") as f:
            state = restricted_load(f)
    except OSError as err:
        raise BadInput(f"--resume {path}: cannot read it ({err.strerror})") from None
    except WeightsError as err:
        raise BadInput(f"--resume {path} is not a readable checkpoint: {err}") from None
    problem = _checkpoint_problem(state)
    if problem:
        raise BadInput(f"--resume {path} is not a cnnexport training checkpoint: {problem}")
    return state


def _checkpoint_problem(state) -> str | None:
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    missing = [k for k in ("epochs_done", "best_val_acc", "best_epoch", "model", "optimizer") if k not in state]
    if missing:
        return f"{', '.join(missing)} missing"
    if not (type(state["epochs_done"]) is int and state["epochs_done"] >= 0):
        return f"epochs_done is {short_repr(state['epochs_done'])}, not a count of epochs"
    accuracy = state["best_val_acc"]
    if accuracy is not None and not (type(accuracy) in (int, float) and math.isfinite(accuracy)):
        return f"best_val_acc is {short_repr(accuracy)}, not an accuracy"
    if state["best_epoch"] is not None and not (type(state["best_epoch"]) is int and state["best_epoch"] >= 1):
        return f"best_epoch is {short_repr(state['best_epoch'])}, not an epoch number"
    model, optimizer = state["model"], state["optimizer"]
    if not (isinstance(model, dict) and all(type(k) is str and isinstance(v, np.ndarray) for k, v in model.items())):
        return "model is not a dict of parameter names to arrays"
    if not (isinstance(optimizer, dict) and all(type(k) is str for k in optimizer)):
        return "optimizer is not a dict of state names"
    scheduler = optimizer.get("LR_Scheduler", {})
    if not (isinstance(scheduler, dict)
            and all(type(v) in (int, float) and math.isfinite(v) for v in scheduler.values())):
        return "the optimizer's LR_Scheduler is not a dict of numbers"
    return None


def plot_curves(history: list[dict], run_dir: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    curves = (("loss.png", "loss", "label-smoothing cross-entropy"), ("accuracy.png", "acc", "accuracy"))
    for name, key, ylabel in curves:
        fig = Figure(figsize=(6, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot(epochs, [h[f"train_{key}"] for h in history], marker="o", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        atomic_write(run_dir / name, lambda tmp, fig=fig: fig.savefig(tmp, format="png"))


# ----------------------------------------------------------------------------- training

class _Trainer:
    def __init__(self, args: RunArguments, recipe: Recipe, data: CifarData, run_dir: Path, device: str,
                 progress: str):
        info = models.model_info(args.model)
        self.args, self.recipe, self.data, self.info = args, recipe, data, info
        self.run_dir, self.device = run_dir, device
        self.world_size = paddle.distributed.get_world_size()
        self.is_writer = paddle.distributed.get_rank() == 0
        self.progress = progress if self.is_writer else "off"

        seed_everything(args.seed)
        self.net = models.create(args.model, num_classes=args.num_classes, img_size=args.img_size,
                                 seed_compat=args.seed_compat)
        self.model = wrap_for_world(self.net, self.world_size)
        # The recipe's knob schedules that this model has layers for (AlexNet-BN: no router, no temperature).
        self.knobs: list[KnobSchedule] = [schedule.for_run(args.epochs) for schedule in self.recipe.knobs
                                          if knob_layers(self.net, schedule.knob)]

        self.train_spec = self.recipe.augment(args.img_size)
        self.test_spec = eval_transforms(args.img_size)
        self._build_loaders(data, info, device)
        self.steps_per_epoch = len(self.train_loader)
        self.scheduler = build_lr_scheduler(self.recipe.lr_schedule, args.lr, self.steps_per_epoch, args.epochs)
        self.optimizer = getattr(paddle.optimizer, self.recipe.optimizer)(
            learning_rate=self.scheduler, parameters=self.model.parameters(),
            weight_decay=self.recipe.weight_decay, **self.recipe.optimizer_kwargs)
        self.epochs_done, self.best_val_acc, self.best_epoch = 0, None, None
        self.history: list[dict] = []

    def _build_loaders(self, data: CifarData, info: models.ModelInfo, device: str) -> None:
        train_set = CifarDataset(data.train_images, data.train_labels, build_transform(self.train_spec),
                                 info.mean, info.std)
        val_set = CifarDataset(data.test_images, data.test_labels, build_transform(self.test_spec), info.mean, info.std)
        self.batch = per_rank_batch(self.args.batch_size, self.world_size)
        if len(train_set) < self.batch * self.world_size:
            raise BadInput(f"the training split has {len(train_set)} images, fewer than one batch of "
                           f"{self.args.batch_size}: pass a smaller batch size")
        # Whole-run shuffles, batches dropping the ragged end, as the notebooks' loaders do; the
        # distributed sampler is also right for one rank, where it takes every batch.
        self.sampler = paddle.io.DistributedBatchSampler(train_set, self.batch, shuffle=True, drop_last=True)
        # Workers pay off when a GPU computes; on a CPU they would take cores from the training itself.
        workers = 4 if device == "gpu" else 0
        self.train_loader = paddle.io.DataLoader(train_set, batch_sampler=self.sampler, num_workers=workers)
        self.val_loader = paddle.io.DataLoader(val_set, batch_size=self.batch, shuffle=False, num_workers=workers)

    # -- state

    def config(self, data_path: Path) -> dict:
        a, r = self.args, self.recipe
        return {
            "arguments": {"model": a.model, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
                          "img_size": a.img_size, "num_classes": a.num_classes, "seed": a.seed,
                          "seed_compat": a.seed_compat},
            "family": self.info.family,
            "data": {"path": str(data_path.resolve()), "train_images": len(self.data.train_labels),
                     "val_images": len(self.data.test_labels), "label_names": list(self.data.label_names)},
            "loss": {"name": "label-smoothing cross-entropy", "smoothing": LABEL_SMOOTHING},
            "optimizer": {"name": r.optimizer, "lr": a.lr, "weight_decay": r.weight_decay, **r.optimizer_kwargs},
            "lr_schedule": r.lr_schedule.describe(self.steps_per_epoch, a.epochs),
            "deep_training": [schedule.describe() for schedule in self.knobs],
            "batch_size": {"global": a.batch_size, "per_device": self.batch, "world_size": self.world_size,
                           "steps_per_epoch": self.steps_per_epoch},
            "train_transforms": describe_transforms(self.train_spec),
            "test_transforms": describe_transforms(self.test_spec),
            "normalize": {"scale": "1/255", "mean": list(self.info.mean), "std": list(self.info.std)},
            "best_model_rule": "highest validation accuracy among epochs run in deploy state "
                               "(act_learn == 1, temperature == 1)",
            "device": self.device,
            "paddle_version": paddle.__version__,
            "started": datetime.now().isoformat(timespec="seconds"),
        }

    def restore(self, state: dict, history: list[dict]) -> None:
        check_fit(self.net, state["model"], f"--resume {self.run_dir}: the checkpoint")
        self.net.set_state_dict(state["model"])
        try:
            self.optimizer.set_state_dict(state["optimizer"])
            # Paddle fills the accumulators (Adam's moments, Momentum's velocity) from that state only
            # when it creates them, at the first step; creating them now, as that step would, has
            # Paddle check every one of them here, before any work.
            trainable = [p for p in self.model.parameters() if not p.stop_gradient]
            self.optimizer._create_accumulators(paddle.static.default_main_program().global_block(), trainable)
        except Exception as err:  # Paddle checks the state with asserts and errors of every kind
            raise BadInput(f"--resume {self.run_dir}: the checkpoint's optimizer state does not fit "
                           f"{self.recipe.optimizer} ({' '.join(str(err).split())})") from None
        self.epochs_done = state["epochs_done"]
        self.best_val_acc, self.best_epoch = state["best_val_acc"], state["best_epoch"]
        # An interrupt after metrics.json but before the checkpoint leaves a record the run will redo.
        self.history = [h for h in history if h["epoch"] <= self.epochs_done]

    def checkpoint(self) -> dict:
        return {"epochs_done": self.epochs_done, "best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch,
                "model": dict(state_dict_arrays(self.net)), "optimizer": _to_numpy(self.optimizer.state_dict())}

    # -- epochs

    def run(self) -> None:
        for epoch in range(self.epochs_done, self.args.epochs):
            epoch_seed = _epoch_seed(self.args.seed, epoch)
            seed_everything(epoch_seed)
            self.sampler.set_epoch(epoch_seed)
            knobs = self.knob_values(epoch)
            for knob, value in knobs.items():
                set_knob(self.net, knob, value)
            lr = self.optimizer.get_lr()
            started = time.perf_counter()
            train_loss, train_acc = self.train_epoch(epoch)
            val_loss, val_acc = self.evaluate()
            if not self.recipe.lr_schedule.per_iteration:
                self.scheduler.step()
            record = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                      "val_acc": val_acc, "lr": lr, **knobs, "seconds": round(time.perf_counter() - started, 3)}
            self.end_epoch(epoch, record)

    def knob_values(self, epoch: int) -> dict[str, float]:
        return {schedule.knob: schedule.value(epoch) for schedule in self.knobs}

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        self.model.train()
        totals = np.zeros(3)  # loss sum, correct, samples
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.args.epochs}", disable=self.progress != "bar",
                   leave=False, dynamic_ncols=True)
        for images, labels in bar:
            logits = self.model(images)
            loss = label_smoothing_cross_entropy(logits, labels)
            loss.backward()
            self.optimizer.step()
            if self.recipe.lr_schedule.per_iteration:
                self.scheduler.step()
            self.optimizer.clear_grad()
            n = labels.shape[0]
            totals += (loss.item() * n, (logits.argmax(axis=-1) == labels).sum().item(), n)
            bar.set_postfix(loss=f"{totals[0] / totals[2]:.4f}", acc=f"{totals[1] / totals[2]:.3f}")
        totals = _all_reduce_sum(totals, self.world_size)
        return float(totals[0] / totals[2]), float(totals[1] / totals[2])

    @paddle.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """Every rank scores the whole validation split with the unwrapped model (no collective needed)."""
        self.net.eval()
        totals = np.zeros(3)
        for images, labels in self.val_loader:
            logits = self.net(images)
            n = labels.shape[0]
            totals += (label_smoothing_cross_entropy(logits, labels).item() * n,
                       (logits.argmax(axis=-1) == labels).sum().item(), n)
        return float(totals[0] / totals[2]), float(totals[1] / totals[2])

    def report(self, line: str) -> None:
        """One line on stderr: above the bar on a terminal, plain (no carriage returns) in a log."""
        if self.progress == "bar":
            tqdm.write(line, file=sys.stderr)
        elif self.progress == "lines":
            print(line, file=sys.stderr, flush=True)

    def end_epoch(self, epoch: int, record: dict) -> None:
        self.epochs_done = epoch + 1
        self.history.append(record)
        knobs = self.knob_values(epoch)
        deploy_ready = all(value == DEPLOY_VALUE for value in knobs.values())
        is_best = deploy_ready and (self.best_val_acc is None or record["val_acc"] > self.best_val_acc)
        if is_best:
            self.best_val_acc, self.best_epoch = record["val_acc"], epoch + 1
        self.report(f"epoch {epoch + 1}/{self.args.epochs}: train loss {record['train_loss']:.4f} "
                    f"acc {record['train_acc']:.3f} | val loss {record['val_loss']:.4f} acc {record['val_acc']:.3f}"
                    f" | lr {record['lr']:.3g}"
                    + "".join(f" | {knob} {value:g}" for knob, value in knobs.items())
                    + (" | best" if is_best else ""))
        if not self.is_writer:
            return
        if is_best:
            _save_state_dict(self.net, self.run_dir / "best_model.pdparams")
        _save_state_dict(self.net, self.run_dir / "final_model.pdparams")
        write_json(self.run_dir / METRICS, {"best_epoch": self.best_epoch, "best_val_acc": self.best_val_acc,
                                             "history": self.history})
        plot_curves(self.history, self.run_dir)
        # Last: the checkpoint is what --resume trusts, so everything above is redone if it is missing.
        atomic_write(self.run_dir / CHECKPOINT,
                      lambda tmp: Path(tmp).write_bytes(pickle.dumps(self.checkpoint(), protocol=4)))


def run_training(model: str, data: str, *, epochs: int | None = None, batch_size: int | None = None,
                 lr: float | None = None, img_size: int | None = None, out: str | None = None,
                 resume: str | None = None, seed: int = 42, device: str = "auto",
                 num_classes: int | None = None, seed_compat: bool = False,
                 progress: str = "bar") -> Path:
    """Train `model` on the CIFAR-format tarball `data` with its family's recipe; returns the run directory.

    `resume` (a run directory or its checkpoint) continues that run at its next epoch, in its
    directory, with its recorded arguments. `progress` is one of PROGRESS_MODES. Every argument
    and file is checked before anything is written.
    """
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {PROGRESS_MODES}, not {progress!r}")
    info = models.model_info(model)
    recipe = recipe_for(info)
    given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "img_size": img_size,
             "num_classes": num_classes, "seed": seed, "seed_compat": seed_compat}
    problem = argument_problem(given)
    if problem:
        raise BadInput(problem)
    state = None
    if resume:
        run_dir, checkpoint_path = _resume_paths(resume)
        if out and Path(out).resolve() != run_dir.resolve():
            raise BadInput(f"--resume writes into the run's own directory {run_dir}; leave --out out")
        if not writable_directory(run_dir):
            raise BadInput(f"--resume {run_dir}: cannot write into that directory")
        given = _recorded_arguments(run_dir, model, given)
        state = read_checkpoint(checkpoint_path)
    else:
        run_dir = _new_run_dir(model, out)
    device = resolve_device(device, ("paddle",))
    # Under paddle.distributed.launch, "gpu" is this rank's card (FLAGS_selected_gpus).
    paddle.set_device(device)
    dataset = read_cifar_tarball(data)
    args = RunArguments.resolve(info, recipe, dataset, given)
    if state is not None and state["epochs_done"] >= args.epochs:
        raise BadInput(f"--resume {run_dir}: the run already finished its {args.epochs} epochs")

    # Parameter and optimizer-accumulator names come from a process-wide counter; a fresh
    # namespace makes them the same in a resumed run, which the optimizer state is keyed by.
    with paddle.utils.unique_name.guard():
        trainer = _Trainer(args, recipe, dataset, run_dir, device, progress)
        if state is not None:
            trainer.restore(state, _read_history(run_dir))
        elif trainer.is_writer:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / CONFIG, trainer.config(Path(data)))
        trainer.run()
    return run_dir


def _read_history(run_dir: Path) -> list[dict]:
    """metrics.json's records; none if it is missing or damaged (the run then records its new epochs only)."""
    try:
        history = json.loads((run_dir / METRICS).read_text())["history"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    fields = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")
    if not (isinstance(history, list) and all(isinstance(h, dict) and all(type(h.get(f)) in (int, float) for f in fields)
                                              for h in history)):
        return []
    return history
