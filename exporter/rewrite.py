"""`fuse(model)`: every exact structural rewrite, applied by one walker, with a summary of what it did.

The protocol: a layer that knows how to fuse itself has a `fuse(log)` method. The walker visits
the tree bottom-up (children before parents), so a parent's `fuse` sees its children already
fused (VanillaNet's blocks merge two convs whose BatchNorms the generic pass has folded). Generic
passes handle patterns that belong to no family, inside `nn.Sequential` containers where
"feeds" is plain adjacency:

- conv -> BatchNorm: the BN goes into the conv (or into any layer with a `fold_bn(bn)` method,
  e.g. DYConv2D);
- BatchNorm -> unpadded, ungrouped conv: the BN goes into the conv's input side.

Folded BNs become `nn.Identity`. Whatever BatchNorm is left at the end is listed with a reason.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from paddle import nn

from models.fusion import (BATCH_NORMS, FuseError, RewriteLog, bn_affine, count_params, fold_affine_into_next_conv,
                           fold_bn_into_conv, is_unpadded, macs)

__all__ = ["fuse", "FuseError", "RewriteSummary"]


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


def _walk(layer: nn.Layer, log: RewriteLog) -> None:
    for name, child in list(layer.named_children()):
        _walk(child, log.scope(name))
    if isinstance(layer, nn.Sequential):
        _fold_sequential(layer, log)
    if hasattr(layer, "fuse"):
        layer.fuse(log)


def _count_layers(model: nn.Layer) -> int:
    return sum(1 for layer in model.sublayers() if not list(layer.children()) and not isinstance(layer, nn.Identity))


def fuse(model: nn.Layer, img_size: int | None = None, inplace: bool = False) -> tuple[nn.Layer, RewriteSummary]:
    """Return the model with every exact rewrite applied, and what was done.

    The model must be in eval mode (BatchNorm folding bakes in the running statistics, which
    mean nothing for a model still training). With `img_size`, MACs before and after are counted.
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
    model.eval()
    summary.folded, summary.rewritten = log.records["folded"], log.records["rewritten"]
    reasons = {k["layer"]: k["reason"] for k in log.records["kept"]}
    summary.kept = [
        {"layer": name, "reason": reasons.get(name, "no exact folding: it neither follows a conv nor feeds "
                                                    "only an unpadded conv")}
        for name, layer in model.named_sublayers() if isinstance(layer, BATCH_NORMS)
    ]
    summary.layers_after, summary.params_after = _count_layers(model), count_params(model)
    if img_size is not None:
        summary.macs_after = macs(model, img_size)
    return model, summary
