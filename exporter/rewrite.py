"""`fuse(model)`: every exact structural rewrite, applied by one walker, with a summary of what it did.

The protocol: a layer that knows how to fuse itself has a `fuse(log)` method. The walker visits
the tree bottom-up (children before parents), so a parent's `fuse` sees its children already
fused (VanillaNet's blocks merge two convs whose BatchNorms the generic pass has folded). The
same walker calls the re-parameterisation methods other Paddle model libraries give their layers,
as those libraries call them: PaddleClas's `re_parameterize()` (RepVGG, PP-LCNetV2, DBB blocks;
its export calls it on every sublayer, parents first, whose `is_repped` is false) and
`switch_to_deploy()` (VanillaNet's official code; `deploy` marks it done). Such a layer rebuilds
itself from its own branches, so the generic passes leave its subtree alone. Generic passes:

- inside `nn.Sequential` containers, where "feeds" is plain adjacency: conv -> BatchNorm (into
  the conv, or into any layer with a `fold_bn(bn)` method, e.g. DYConv2D), and BatchNorm ->
  unpadded, ungrouped conv (into the conv's input side);
- anywhere in the forward code (given an input size): a BatchNorm whose input is the very tensor
  a conv returned, each called once, folded once a probe proves that nothing else reads that
  tensor (`_fold_traced`).

Folded BNs become `nn.Identity`. Whatever BatchNorm is left at the end is listed with a reason.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field

import numpy as np
import paddle
from paddle import nn

from .models.fusion import (BATCH_NORMS, FuseError, RewriteLog, bn_affine, count_params, fold_affine_into_next_conv,
                           fold_bn_into_conv, forward_hooks, is_unpadded, macs)

from .compare import CPU_FP32, rel_l2
from .images import hw
from .precision import SPREAD_FACTOR, allowed, float64_outputs, spread

__all__ = ["fuse", "FuseError", "RewriteSummary"]

# Other libraries' re-parameterisation methods, each with the attribute that says it is done.
FOREIGN_REPARAMETERISATIONS = (("re_parameterize", "is_repped"), ("switch_to_deploy", "deploy"))
PROBE_FACTORS = np.array([-2.0, -0.5, 0.5, 2.0], np.float32)  # powers of two: undone exactly
PROBE_RTOL = 1e-6
# What a folded legacy `nn.BatchNorm(act=...)` leaves in its place: the activation it applied.
BN_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


@dataclass
class RewriteSummary:
    """Plain data: what `fuse` did, for the CLI and the manifest."""

    folded: list[dict] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)
    rewritten: list[dict] = field(default_factory=list)
    layers_before: int = 0
    layers_after: int = 0
    params_before: int = 0
    params_after: int = 0
    macs_before: int | None = None
    macs_after: int | None = None
    fp32_rounding: float | None = None  # where the fold check needed float64: the fp32 model's distance from it

    @property
    def changed(self) -> bool:
        return bool(self.folded or self.rewritten)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        out = [f"layers {self.layers_before} -> {self.layers_after}, "
               f"params {self.params_before:,} -> {self.params_after:,}"
               + (f", GMACs {self.macs_before / 1e9:.3f} -> {self.macs_after / 1e9:.3f}"
                  if self.macs_before is not None else "")]
        if not self.changed:
            out.append("nothing to fuse: the model is already in deploy form")
        if self.folded:
            names = [f["layer"] for f in self.folded]
            more = f" (+{len(names) - 6} more)" if len(names) > 6 else ""
            out.append(f"folded {len(names)}: {', '.join(names[:6])}{more}")
        out += [f"rewrote {r['layer']}: {r['what']}" for r in self.rewritten]
        out += [f"kept {k['layer']}: {k['reason']}" for k in self.kept]
        return out


def _folds_bn(layer: nn.Layer) -> bool:
    return isinstance(layer, nn.Conv2D) or hasattr(layer, "fold_bn")


def _fold_sequential(seq: nn.Sequential, log: RewriteLog) -> None:
    names = list(seq._sub_layers)
    for prev_name, name in zip(names, names[1:]):
        prev, layer = seq._sub_layers[prev_name], seq._sub_layers[name]
        if isinstance(layer, BATCH_NORMS) and _folds_bn(prev):
            if isinstance(prev, nn.Conv2D):
                fold_bn_into_conv(prev, layer)
            else:
                prev.fold_bn(layer)
            seq._sub_layers[name] = nn.Identity()
            log.folded(name, into=prev_name)
        elif (isinstance(prev, BATCH_NORMS) and isinstance(layer, nn.Conv2D)
              and is_unpadded(layer) and layer._groups == 1):
            fold_affine_into_next_conv(*bn_affine(prev), layer)
            seq._sub_layers[prev_name] = nn.Identity()
            log.folded(prev_name, into=name)


def _reparameterise_foreign(layer: nn.Layer, log: RewriteLog) -> bool:
    """Call the layer's own re-parameterisation method, if it has one and it is not done; returns
    whether the layer has one (and so owns its subtree)."""
    for method, done in FOREIGN_REPARAMETERISATIONS:
        if callable(getattr(layer, method, None)):
            if not getattr(layer, done, False):
                before = _fingerprint(layer)
                try:
                    getattr(layer, method)()
                except Exception as err:  # the model's own code: its failure is the model's, named as such
                    raise FuseError(f"{log.prefix or type(layer).__name__}: its {method}() failed "
                                    f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
                if _fingerprint(layer) != before:  # a call that changed nothing is no rewrite
                    log.rewritten("", f"{type(layer).__name__}.{method}()")
            return True
    return False


def _fingerprint(layer: nn.Layer) -> tuple:
    """What a re-parameterisation changes: the sublayers, and the parameters (which, their shapes and sums)."""
    return (tuple((name, type(sub).__name__) for name, sub in layer.named_sublayers()),
            tuple((name, id(p), tuple(p.shape), float(np.asarray(p.numpy(), np.float64).sum()))
                  for name, p in layer.named_parameters()))


def _has_fuse_protocol(layer: nn.Layer) -> bool:
    """cnnexport's `fuse(log)`; a `fuse()` of another library's (e.g. `fuse(verbose)`) is not ours to call."""
    method = getattr(layer, "fuse", None)
    return callable(method) and list(inspect.signature(method).parameters) == ["log"]


def _walk(layer: nn.Layer, log: RewriteLog, owned: bool = False) -> None:
    owned = _reparameterise_foreign(layer, log) or owned  # parents first, as PaddleClas's export calls them
    for name, child in list(layer.named_children()):
        _walk(child, log.scope(name), owned)
    if owned:
        return
    if isinstance(layer, nn.Sequential):
        _fold_sequential(layer, log)
    if _has_fuse_protocol(layer):
        layer.fuse(log)


def _tensor_outputs(output) -> list:
    if isinstance(output, paddle.Tensor):
        return [output]
    if isinstance(output, (list, tuple)):
        return [t for o in output for t in _tensor_outputs(o)]
    if isinstance(output, dict):
        return [t for o in output.values() for t in _tensor_outputs(o)]
    return []


def _forward(model: nn.Layer, x: np.ndarray, hooks=(), pre_hooks=()) -> list[np.ndarray]:
    handles = [layer.register_forward_pre_hook(hook) for layer, hook in pre_hooks]
    try:
        with forward_hooks(hooks), paddle.no_grad():
            return [t.numpy() for t in _tensor_outputs(model(paddle.to_tensor(x)))]
    finally:
        for handle in handles:
            handle.remove()


def _trace_conv_bn(model: nn.Layer, x: np.ndarray) -> tuple[dict, dict]:
    """One forward pass: every conv's and BatchNorm's calls, and for each BN called once, the conv
    (called once) whose output tensor it received, if any. Returns ({bn path: conv path or None},
    {path: calls})."""
    named = {layer: name for name, layer in model.named_sublayers() if isinstance(layer, (nn.Conv2D, *BATCH_NORMS))}
    calls, produced, received = {}, {}, {}

    def after_conv(layer, inputs, output):
        calls[named[layer]] = calls.get(named[layer], 0) + 1
        produced[named[layer]] = output  # held, so that no other tensor can take its id during the pass

    def before_bn(layer, inputs):
        calls[named[layer]] = calls.get(named[layer], 0) + 1
        received[named[layer]] = inputs[0]

    _forward(model, x, [(m, after_conv) for m in named if isinstance(m, nn.Conv2D)],
             [(m, before_bn) for m in named if isinstance(m, BATCH_NORMS)])
    makers = {id(t): name for name, t in produced.items() if calls[name] == 1}
    return {bn: makers.get(id(t)) if calls[bn] == 1 else None for bn, t in received.items()}, calls


def _why_not_foldable(conv: nn.Layer, bn: nn.Layer) -> str | None:
    if conv._data_format != "NCHW" or (getattr(bn, "_data_format", None) or getattr(bn, "_data_layout", "NCHW")) != "NCHW":
        return "channels-last layout"
    if bn.weight is None or bn.bias is None:
        return "BatchNorm without affine parameters"
    if getattr(bn, "_act", None) and bn._act not in BN_ACTIVATIONS:
        return f"the BatchNorm applies {bn._act} itself"
    if bn.weight.shape[0] != conv.weight.shape[0]:
        return "channel counts differ"
    return None


def _probe_unchanged(model: nn.Layer, pairs: list[tuple[nn.Layer, nn.Layer]], x: np.ndarray,
                     reference: list[np.ndarray], seed: int) -> bool:
    """Whether the model's outputs stay the same when each conv's output is multiplied by random
    powers of two and each BN's input divided by them: true exactly when the BN is the only reader
    of the conv's output (any other reader sees the scaled values, and the outputs move)."""
    rng = np.random.default_rng(seed)
    factors = {}

    def scale(layer, inputs, output):
        factors[id(layer)] = paddle.to_tensor(rng.choice(PROBE_FACTORS, size=output.shape))
        return output * factors[id(layer)]

    def unscale(conv):
        return lambda layer, inputs: (inputs[0] / factors[id(conv)], *inputs[1:])

    probed = _forward(model, x, [(conv, scale) for conv, _ in pairs], [(bn, unscale(conv)) for conv, bn in pairs])
    return len(probed) == len(reference) and all(
        a.shape == b.shape and np.isfinite(a).all() and rel_l2(b, a) <= PROBE_RTOL for a, b in zip(probed, reference))


def _fold_traced(model: nn.Layer, img_size: int | tuple[int, int],
                 log: RewriteLog) -> tuple[dict[str, str], float | None]:
    """Fold conv -> BatchNorm pairs wherever the forward code makes them (not only in nn.Sequential).
    Returns why each BN that the forward calls and that is left was not folded, and the fp32 model's
    distance from its float64 outputs where the fold check measured it."""
    x = np.random.default_rng(0).standard_normal((2, 3, *hw(img_size)), dtype=np.float32)
    links, calls = _trace_conv_bn(model, x)
    layers = dict(model.named_sublayers())
    reasons, candidates = {}, []
    for bn_name, conv_name in links.items():
        bn = layers[bn_name]
        if calls[bn_name] != 1:
            reasons[bn_name] = f"called {calls[bn_name]} times in one forward pass"
        elif conv_name is None:
            reasons[bn_name] = "its input is not a conv's output (it follows another operation)"
        elif why := _why_not_foldable(layers[conv_name], bn):
            reasons[bn_name] = why
        else:
            candidates.append((conv_name, bn_name))
    if not candidates:
        return reasons, None
    reference = _forward(model, x)

    def probe_passes(names: list[tuple[str, str]], seed: int) -> bool:
        return _probe_unchanged(model, [(layers[c], layers[b]) for c, b in names], x, reference, seed)

    # All at once first (one pass); when that moves the outputs, pair by pair to find the culprits.
    proven = candidates if probe_passes(candidates, 0) else [
        pair for i, pair in enumerate(candidates) if probe_passes([pair], i + 1)]
    unfolded, folded = copy.deepcopy(model), []  # the unfolded model: the yardstick if the check below needs one
    for conv_name, bn_name in candidates:
        if (conv_name, bn_name) not in proven:
            reasons[bn_name] = f"{conv_name}'s output is read by more than this BatchNorm"
            continue
        _fold_pair(model, layers, conv_name, bn_name)
        folded.append((conv_name, bn_name))
        log.folded(bn_name, into=conv_name)
    return reasons, _check_folds(unfolded, model, folded, x, reference)


def _fold_pair(model: nn.Layer, layers: dict, conv_name: str, bn_name: str) -> None:
    bn = layers[bn_name]
    fold_bn_into_conv(layers[conv_name], bn)
    parent_name, _, attr = bn_name.rpartition(".")
    act = getattr(bn, "_act", None)
    (layers[parent_name] if parent_name else model)._sub_layers[attr] = BN_ACTIVATIONS[act]() if act else nn.Identity()


def _check_folds(unfolded: nn.Layer, model: nn.Layer, folded: list[tuple[str, str]], x: np.ndarray,
                 reference: list[np.ndarray]) -> float | None:
    """The folded `model` must compute what `unfolded` computes. Within the fixed bar in float32 it does;
    otherwise both are run in float64, where only an inexact fold (a BatchNorm reached another way than
    through its conv) moves the outputs by more than the folded weights' float32 rounding, which is
    bounded by a few times the fp32 model's own distance from its float64 outputs (`cnnexport.precision`).
    A fold refused names the first pair that alone moves them beyond, with the figures. Returns the fp32
    model's distance from float64 where it was measured (the export then grounds its checks on it too)."""
    def run(layer: nn.Layer) -> tuple[list[np.ndarray], bool]:
        exact = float64_outputs(layer, [x])
        return (exact[0], True) if exact is not None else (_forward(layer, x), False)

    if all(rel_l2(b, a) <= CPU_FP32.rel_l2 for a, b in zip(_forward(model, x), reference)):
        return None
    truth, in_fp64 = run(unfolded)
    model_spread = spread(truth, reference) if in_fp64 else None
    bar, moved = allowed(model_spread), spread(truth, run(model)[0])
    if moved <= bar:
        return model_spread
    culprit = f"{len(folded)} folds together"
    for conv_name, bn_name in folded:
        alone = copy.deepcopy(unfolded)
        _fold_pair(alone, dict(alone.named_sublayers()), conv_name, bn_name)
        if (distance := spread(truth, run(alone)[0])) > bar:
            culprit, moved = f"{bn_name} into {conv_name}", distance
            break
    yardstick = (f"{SPREAD_FACTOR}x the fp32 model's own distance from its float64 output, {model_spread:.1e}, "
                 f"and at least {CPU_FP32.rel_l2:.0e}" if in_fp64 else "the model cannot run in float64")
    raise FuseError(f"folding {culprit} changes the model's output by rel L2 {moved:.1e}{' in float64' * in_fp64}, "
                    f"beyond {bar:.1e} ({yardstick}): a BatchNorm is reached another way than through its parent; "
                    "fuse without it")


def _count_layers(model: nn.Layer) -> int:
    return sum(1 for layer in model.sublayers() if not list(layer.children()) and not isinstance(layer, nn.Identity))


def fuse(model: nn.Layer, img_size: int | tuple[int, int] | None = None,
         inplace: bool = False) -> tuple[nn.Layer, RewriteSummary]:
    """Return the model with every exact rewrite applied, and what was done.

    The model must be in eval mode (BatchNorm folding bakes in the running statistics, which
    mean nothing for a model still training). With `img_size`, conv -> BatchNorm pairs are also
    found by tracing a forward pass at that size (a side, or height and width), and MACs before and
    after are counted.
    Fusing a fused model changes nothing.
    """
    training = [name or type(model).__name__ for name, layer in model.named_sublayers(include_self=True)
                if layer.training]
    if training:
        raise FuseError(f"model is in training mode ({training[0]}): call model.eval() before fusing, "
                        "BatchNorm folding needs its running statistics")
    if not inplace:
        model = copy.deepcopy(model)
    summary = RewriteSummary(layers_before=_count_layers(model), params_before=count_params(model))
    if img_size is not None:
        summary.macs_before = macs(model, img_size)
    log = RewriteLog()
    _walk(model, log)
    model.eval()  # layers that a re-parameterisation method created are in training mode
    traced, summary.fp32_rounding = _fold_traced(model, img_size, log) if img_size is not None else (None, None)
    summary.folded, summary.rewritten = log.records["folded"], log.records["rewritten"]
    reasons = {**(traced or {}), **{k["layer"]: k["reason"] for k in log.records["kept"]}}
    summary.kept = [  # with a trace, the BatchNorms the forward pass runs (a re-parameterised layer's spent branches are not)
        {"layer": name, "reason": reasons.get(name, "no exact folding: it neither follows a conv nor feeds "
                                                    "only an unpadded conv")}
        for name, layer in model.named_sublayers() if isinstance(layer, BATCH_NORMS) and (traced is None or name in traced)
    ]
    summary.layers_after, summary.params_after = _count_layers(model), count_params(model)
    if img_size is not None:
        summary.macs_after = macs(model, img_size)
        summary.params_after -= _spent_params(model, img_size, [r["layer"] for r in summary.rewritten
                                                                 if r["what"].endswith(FOREIGN_CALLS)])
    return model, summary


FOREIGN_CALLS = tuple(f".{method}()" for method, _ in FOREIGN_REPARAMETERISATIONS)


def _spent_params(model: nn.Layer, img_size: int | tuple[int, int], reparameterised: list[str]) -> int:
    """Parameters of the branches a re-parameterisation method left in place but no longer runs (RepVGG's
    `rbr_dense`, `rbr_1x1`): a forward pass calls no layer of theirs, and the exported program holds none."""
    if not reparameterised:
        return 0
    called = set()
    layers = [layer for _, layer in model.named_sublayers()]
    x = np.zeros((1, 3, *hw(img_size)), np.float32)
    _forward(model, x, pre_hooks=[(layer, lambda layer, inputs: called.add(id(layer))) for layer in layers])
    layers_by_name = dict(model.named_sublayers(include_self=True))
    spent = {}
    for owner in reparameterised:
        for _, sub in layers_by_name[owner].named_sublayers():
            if not ({id(sub)} | {id(s) for s in sub.sublayers()}) & called:
                spent.update((id(p), int(np.prod(p.shape))) for p in sub.parameters())
    return sum(spent.values())
