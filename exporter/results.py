"""What verification produces, typed: a row's result, a timing, an artifact's report. Paddle-free.

Each has `to_dict()` (the JSON of verify.json, docs/FORMATS.md) and `from_dict()` (reading it
back, checked: a damaged verify.json is a ValueError, never a crash further on).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _typed(data, types: dict[str, type | tuple], where: str) -> None:
    """`data` is a dict whose keys in `types` hold values of those types (a bool is not a number)."""
    _check(isinstance(data, dict), f"{where} is not an object")
    for key, kind in types.items():
        value = data.get(key)
        _check(isinstance(value, kind) and (kind is bool or not isinstance(value, bool)),
               f"{where}: `{key}` is missing or not a {getattr(kind, '__name__', 'number')}")


def _listed(data, where: str) -> list:
    _check(isinstance(data, list), f"verify.json: `{where}` is not a list")
    return data


def _without_none(data: dict) -> dict:
    return {k: v for k, v in data.items() if v is not None}


_NUMBER = (int, float)
_WORST = dict.fromkeys(("rel_l2", "max_abs", "cosine", "top1", "top5"), _NUMBER)


@dataclass
class RowResult:
    """One row of the parity matrix, judged. Fields that do not apply to a row are None and left out."""

    runtime: str                           # the label of what ran (the fallback configuration that ran)
    passed: bool
    failures: list[str]
    tolerance: dict | None = None
    worst: dict | None = None              # worst figures over the row's parity inputs
    batches: dict[str, dict] | None = None  # figures per parity input (compare.Agreement)
    config: str | None = None              # rows with fallbacks: the configuration that ran
    failed_configs: list[dict] | None = None  # ... and those that failed before it
    crashes: list[dict] | None = None      # rows with fallbacks: every configuration failed
    crash: dict | None = None              # a row's only runtime failed to run
    spec: dict | None = None               # the row's runtime spec (runtimes.RuntimeSpec)
    unsupported: str | None = None         # a checker that cannot run an op of the graph: why (skipped, not failed)
    localise: str | None = field(default=None, repr=False)  # the plan's localisation, not written

    @property
    def counted(self) -> bool:
        """Whether the row takes part in the verdict: an unsupported row is skipped."""
        return self.unsupported is None

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else f"unsupported: {self.unsupported}" if self.unsupported else "FAIL"

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["localise"]
        return _without_none(data)

    @classmethod
    def from_dict(cls, data: dict) -> RowResult:
        _typed(data, {"runtime": str, "passed": bool, "failures": list}, "a row")
        if data.get("worst") is not None:
            _typed(data["worst"], _WORST, f"row {data['runtime']}: worst")
        known = {f.name for f in fields(cls)} - {"localise"}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Timing:
    """One (runtime, batch size, timing mode) measurement."""

    runtime: str
    device: str
    label: str
    precision: str
    mode: str                              # "run", or on a GPU "iobinding", "iobinding+cudagraph"
    batch: int
    threads: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    images_per_s: float
    model: str | None = None               # the artifact's, set by verify
    fused: bool | None = None

    def to_dict(self) -> dict:
        return _without_none(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> Timing:
        _typed(data, {"runtime": str, "device": str, "label": str, "precision": str, "mode": str, "batch": int,
                      "threads": int, "runs": int, "model": str, "fused": bool,
                      **dict.fromkeys(("p50_ms", "p90_ms", "p99_ms", "images_per_s"), _NUMBER)}, "a timing")
        _check(data["p50_ms"] > 0, "a timing has a p50 of 0 or less")
        return cls(**{k: data[k] for k in (f.name for f in fields(cls))})


@dataclass
class Recommendation:
    """The fastest verified (runtime, variant) at one batch size on the machine verify ran on."""

    batch: int
    runtime: str                           # the row's label: runtime, device, configuration, precision
    precision: str
    p50_ms: float
    paddle_fp32_p50_ms: float | None = None  # Paddle Inference fp32 at this batch, where its row passed
    speedup_vs_paddle_fp32: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data) -> Recommendation:
        _typed(data, {"batch": int, "runtime": str, "precision": str, "p50_ms": _NUMBER}, "a recommendation")
        for key in ("paddle_fp32_p50_ms", "speedup_vs_paddle_fp32"):
            _check(data.get(key) is None or isinstance(data[key], _NUMBER), f"a recommendation: `{key}` is not a number")
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


def recommend(rows: list[RowResult], timings: list[Timing]) -> list[Recommendation]:
    """Per batch size, the timing with the lowest p50 among rows that passed, in the plain-call mode
    ("run", as every runtime is timed). A label that any failed row ran under is never a candidate, and a
    row that crashed or was not run has no timing: nothing is recommended that did not pass its row."""
    verified = {r.runtime for r in rows if r.passed} - {r.runtime for r in rows if not r.passed}
    candidates = [t for t in timings if t.mode == "run" and t.label in verified]
    chosen = []
    for batch in sorted({t.batch for t in candidates}):
        timed = [t for t in candidates if t.batch == batch]
        best = min(timed, key=lambda t: t.p50_ms)
        paddle = next((t.p50_ms for t in timed if t.runtime == "paddle-inference" and t.precision == "fp32"), None)
        chosen.append(Recommendation(batch, best.label, best.precision, best.p50_ms, paddle,
                                     paddle / best.p50_ms if paddle else None))
    return chosen


@dataclass
class VerifyReport:
    """verify.json: one artifact's verification."""

    artifact: str
    model: dict
    device: str
    threads: int
    paddle: bool
    integrity: list[str]
    changed_weights: list[dict]
    notes: list[str]
    reference: str
    inputs: dict[str, list[int]]
    bench_plan: dict | None
    rows: list[RowResult]
    divergence: list[dict]
    timings: list[Timing]
    passed: bool
    verified: str
    accuracy: dict | None = None           # with --eval-data: top-1 accuracy against the labels (cnnexport.accuracy)
    outputs: list[dict] | None = None      # the model's outputs (name, shape), as the manifest says
    sizes: list[list[int]] | None = None   # the [height, width] sizes checked
    recommendation: list[Recommendation] | None = None  # with timings: `recommend` (None: not benchmarked)

    @property
    def name(self) -> str:
        """The artifact directory's name, as reports show it."""
        return self.artifact.rstrip("/").rsplit("/", 1)[-1]

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["rows"] = [row.to_dict() for row in self.rows]
        data["timings"] = [t.to_dict() for t in self.timings]
        if self.recommendation is not None:
            data["recommendation"] = [r.to_dict() for r in self.recommendation]
        return data

    @classmethod
    def from_dict(cls, data) -> VerifyReport:
        _typed(data, {"artifact": str, "model": dict, "device": str, "threads": int, "paddle": bool,
                      "integrity": list, "reference": str, "inputs": dict, "rows": list, "divergence": list,
                      "timings": list, "passed": bool, "verified": str}, "verify.json")
        _check(all(isinstance(d, dict) and isinstance(d.get("runtime"), str) for d in data["divergence"]),
               "verify.json: a divergence without its runtime")
        for key in ("outputs", "sizes"):
            _check(data.get(key) is None or isinstance(data[key], list), f"verify.json: `{key}` is not a list")
        if data.get("accuracy") is not None:
            _typed(data["accuracy"], {"data": str, "samples": int, "top1": dict}, "verify.json: accuracy")
            _typed(data["accuracy"]["top1"], dict.fromkeys(data["accuracy"]["top1"], _NUMBER), "verify.json: accuracy top1")
        return cls(**{**{f.name: data.get(f.name) for f in fields(cls)},
                      "changed_weights": data.get("changed_weights", []), "notes": data.get("notes", []),
                      "rows": [RowResult.from_dict(r) for r in data["rows"]],
                      "timings": [Timing.from_dict(t) for t in data["timings"]],
                      "recommendation": None if data.get("recommendation") is None else
                      [Recommendation.from_dict(r) for r in _listed(data["recommendation"], "recommendation")]})
