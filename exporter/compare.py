"""Comparing a candidate runtime's outputs with a reference's: plain numpy over plain data."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    rel_l2: float = 1e-5
    atol: float | None = None     # optional bound on the max absolute error as well
    top1_agreement: float = 1.0   # fraction of samples whose top-1 class must agree


CPU_FP32 = Tolerance(rel_l2=1e-5)
GPU_TF32 = Tolerance(rel_l2=1e-3)


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
    """Errors of `candidate` against `reference`, both [N, classes] logits.

    top5 is the fraction of samples whose top-5 class sets are equal (as sets: the order of
    near-ties inside the top 5 is not a conversion error).
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {cand.shape}")
    finite = bool(np.isfinite(cand).all() and np.isfinite(ref).all())
    if not finite:
        return Agreement(len(ref), float("inf"), float("inf"), float("nan"), 0.0, 0.0, False)
    diff = cand - ref
    ref_norm = np.linalg.norm(ref)
    rel = float(np.linalg.norm(diff) / ref_norm) if ref_norm > 0 else float(np.linalg.norm(diff))
    denom = np.linalg.norm(ref) * np.linalg.norm(cand)
    cosine = float((ref * cand).sum() / denom) if denom > 0 else 1.0
    top1 = float((_topk(ref, 1) == _topk(cand, 1)).mean())
    top5 = float(np.mean([set(a) == set(b) for a, b in zip(_topk(ref, 5), _topk(cand, 5))]))
    return Agreement(len(ref), float(np.abs(diff).max()), rel, cosine, top1, top5, True)
