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
    decision: str = "top-1"   # what top1 counts: "top-1" (classes), "argmax" (per position), "threshold" (binary)

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
            out.append(f"{self.decision} agreement {self.top1:.1%} < {tol.top1_agreement:.0%}")
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def _topk(logits: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[-1])
    return np.argsort(-logits, axis=-1, kind="stable")[:, :k]


def decision_kind(shape: tuple[int, ...]) -> str:
    """What an output of `shape` decides: see the module's docstring."""
    if len(shape) >= 2 and shape[1] > 1:
        return "top-1" if len(shape) == 2 else "argmax"
    return "threshold"


# A position whose reference decision is this close to a tie (relative to the output's largest
# value) counts as agreeing whatever the candidate decides: float32 rounding alone (rel L2 ~1e-6)
# flips such ties, and a map of 10^5 pixels has some. Ten times the CPU fp32 bound on rel L2.
NEAR_TIE = 1e-5


def _threshold(reference: np.ndarray) -> float:
    return 0.5 if reference.min() >= 0 and reference.max() <= 1 else 0.0


def decision_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The fraction of `reference`'s decisions (see the module's docstring) that `candidate` makes
    too, near-ties excepted (NEAR_TIE); a binary one is thresholded where `reference` says (0.5 for a
    probability map, 0 for a logit)."""
    if not reference.size:
        return 1.0
    tie = NEAR_TIE * float(np.abs(reference).max())
    if decision_kind(reference.shape) != "threshold":
        top2 = -np.sort(-reference, axis=1)[:, :2]
        near = (top2[:, 0] - top2[:, 1]) <= tie
        agree = np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)
    else:
        threshold = _threshold(reference)
        near = np.abs(reference - threshold) <= tie
        agree = (reference > threshold) == (candidate > threshold)
    return float((agree | near).mean())


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """Errors of `candidate` against `reference`, arrays of the same shape, [N, ...].

    top1 is the fraction of decisions that agree (images' classes, pixels' classes; near-ties
    excepted, `decision_agreement`). top5, for [N, classes] logits, the fraction of samples whose
    top-5 class sets are equal (as sets: the order of near-ties inside the top 5 is not a conversion
    error); top1 again for other outputs.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    finite = bool(np.isfinite(cand).all() and np.isfinite(ref).all())
    kind = decision_kind(ref.shape)
    if not finite:
        return Agreement(len(ref), float("inf"), float("inf"), float("nan"), 0.0, 0.0, False, kind)
    denom = np.linalg.norm(ref) * np.linalg.norm(cand)
    cosine = float((ref * cand).sum() / denom) if denom > 0 else 1.0
    top1 = decision_agreement(ref, cand)
    top5 = (float(np.mean([set(a) == set(b) for a, b in zip(_topk(ref, 5), _topk(cand, 5))]))
            if ref.ndim == 2 and ref.size else top1)
    max_abs = float(np.abs(cand - ref).max()) if ref.size else 0.0
    return Agreement(len(ref), max_abs, rel_l2(ref, cand), cosine, top1, top5, True, kind)


def output_keys(input_name: str, count: int) -> list[str]:
    """How each output of a parity input is named in a row's figures: the input's name for a model
    of one output, `NAME:0`, `NAME:1`, ... for several."""
    return [input_name] if count == 1 else [f"{input_name}:{i}" for i in range(count)]


def judge(label: str, reference: dict[str, list[np.ndarray]], outputs: dict[str, list[np.ndarray]],
          tol: Tolerance) -> RowResult:
    """A candidate's outputs (by parity input name, each the model's outputs in order) against the
    reference's: figures per input and output, the worst of each, and what misses `tol`. An output
    of the wrong shape, or a wrong number of outputs, is a failure, not an error."""
    per_output, failures = {}, []
    for name, outs in outputs.items():
        expected = reference[name]
        if len(outs) != len(expected):
            failures.append(f"{name}: {len(outs)} outputs, expected {len(expected)}")
            continue
        for key, out, ref in zip(output_keys(name, len(expected)), outs, expected):
            if np.shape(out) != np.shape(ref):
                failures.append(f"{key}: output shape {list(np.shape(out))}, expected {list(np.shape(ref))}")
                continue
            per_output[key] = agreement(ref, out)
            failures += [f"{key}: {why}" for why in per_output[key].failures(tol)]
    figures = list(per_output.values())
    worst = {"rel_l2": max(a.rel_l2 for a in figures), "max_abs": max(a.max_abs for a in figures),
             "cosine": min(a.cosine for a in figures), "top1": min(a.top1 for a in figures),
             "top5": min(a.top5 for a in figures)} if figures else None
    return RowResult(label, not failures, failures, tolerance=asdict(tol), worst=worst,
                     batches={k: a.to_dict() for k, a in per_output.items()})
