"""The comparator: how far a candidate's outputs are from a reference's, and whether that passes.
Plain numpy over plain data; it judges any two computations (runtimes, the eager model, a bundle)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .results import RowResult


@dataclass(frozen=True)
class Tolerance:
    rel_l2: float = 1e-5
    atol: float | None = None     # optional bound on the max absolute error as well
    top1_agreement: float = 1.0   # fraction of samples whose top-1 class must agree


CPU_FP32 = Tolerance(rel_l2=1e-5)
GPU_TF32 = Tolerance(rel_l2=1e-3)
FP16 = Tolerance(rel_l2=float("inf"), top1_agreement=0.99)  # fp16: rel L2 is reported, not bounded
INT8 = Tolerance(rel_l2=float("inf"), top1_agreement=0.99)  # int8 too: the bar is the predicted class
BF16 = Tolerance(rel_l2=float("inf"), top1_agreement=0.99)  # bf16 (OpenVINO on the fp32 file): as fp16


def rel_l2(reference: np.ndarray, other: np.ndarray) -> float:
    """||other - reference|| / ||reference|| in float64 (the absolute norm where the reference is 0)."""
    ref = np.asarray(reference, np.float64)
    diff = float(np.linalg.norm(np.asarray(other, np.float64) - ref))
    norm = float(np.linalg.norm(ref))
    return diff / norm if norm > 0 else diff


@dataclass(frozen=True)
class Agreement:
    samples: int
    max_abs: float
    rel_l2: float
    cosine: float
    top1: float
    top5: float
    finite: bool

    def failures(self, tol: Tolerance) -> list[str]:
        """Why this agreement misses `tol`; empty when it passes."""
        out = []
        if not self.finite:
            out.append("NaN or Inf in the output")
        if not self.rel_l2 <= tol.rel_l2:
            out.append(f"relative L2 error {self.rel_l2:.2e} > {tol.rel_l2:.0e}")
        if tol.atol is not None and not self.max_abs <= tol.atol:
            out.append(f"max abs error {self.max_abs:.2e} > {tol.atol:.0e}")
        if self.top1 < tol.top1_agreement:
            out.append(f"top-1 agreement {self.top1:.1%} < {tol.top1_agreement:.0%}")
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def _topk(logits: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[-1])
    return np.argsort(-logits, axis=-1, kind="stable")[:, :k]


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Errors of `candidate` against `reference`, both [N, classes] logits of the same shape.

    top5 is the fraction of samples whose top-5 class sets are equal (as sets: the order of
    near-ties inside the top 5 is not a conversion error).
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    finite = bool(np.isfinite(cand).all() and np.isfinite(ref).all())
    if not finite:
        return Agreement(len(ref), float("inf"), float("inf"), float("nan"), 0.0, 0.0, False)
    denom = np.linalg.norm(ref) * np.linalg.norm(cand)
    cosine = float((ref * cand).sum() / denom) if denom > 0 else 1.0
    top1 = float((_topk(ref, 1) == _topk(cand, 1)).mean())
    top5 = float(np.mean([set(a) == set(b) for a, b in zip(_topk(ref, 5), _topk(cand, 5))]))
    return Agreement(len(ref), float(np.abs(cand - ref).max()), rel_l2(ref, cand), cosine, top1, top5, True)


def judge(label: str, reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
          tol: Tolerance) -> RowResult:
    """A candidate's outputs (by parity input name) against the reference's: figures per input,
    the worst of each, and what misses `tol`. An output of the wrong shape is a failure, not an error."""
    per_input, failures = {}, []
    for name, out in outputs.items():
        if np.shape(out) != np.shape(reference[name]):
            failures.append(f"{name}: output shape {list(np.shape(out))}, expected {list(np.shape(reference[name]))}")
            continue
        per_input[name] = agreement(reference[name], out)
        failures += [f"{name}: {why}" for why in per_input[name].failures(tol)]
    figures = list(per_input.values())
    worst = {"rel_l2": max(a.rel_l2 for a in figures), "max_abs": max(a.max_abs for a in figures),
             "cosine": min(a.cosine for a in figures), "top1": min(a.top1 for a in figures),
             "top5": min(a.top5 for a in figures)} if figures else None
    return RowResult(label, not failures, failures, tolerance=asdict(tol), worst=worst,
                     batches={k: a.to_dict() for k, a in per_input.items()})
