"""What verify reports: REPORT.md and latency.png from the verify.json of every verified artifact,
and the plain-text summary the command prints.

The report goes beside the artifacts (artifacts/REPORT.md) where cnnexport owns those two names
there: each is absent, or written by cnnexport and unchanged since, as the marker that ends every
REPORT.md proves (the sha256 of the text above it, and of the latency.png written with it).
Anywhere else, each artifact gets a report of its own inside it: a file cnnexport did not write is
never replaced.
"""
from __future__ import annotations

import hashlib
import io
import json
import platform
import re
import time
from pathlib import Path

from .artifact import (CHART_PNG, REPORT_MD, VERIFY_REPORT, artifact_name, atomic_write, finished_artifacts, sha256,
                       classifier_classes, shape_text, sweep_leftovers)
from .compare import decision_kind
from .images import size_name
from .results import Recommendation, Timing, VerifyReport

MAX_REPORT_BYTES = 16 << 20  # a REPORT.md larger than this is not one of ours, and is not read
# The last line of every REPORT.md cnnexport writes. The chart's previous hash is kept too: a verify
# killed between writing REPORT.md and latency.png leaves the old chart, which is still ours.
_MARKER = re.compile(r"<!-- written by cnnexport verify: text sha256 (?P<text>[0-9a-f]{64}), latency.png sha256 "
                     r"(?P<chart>[0-9a-f]{64}|none) \(was (?P<was>[0-9a-f]{64}|none)\) -->")


def load_reports(root: Path, only_itself: bool = False) -> tuple[list[VerifyReport], list[str]]:
    """The verify.json of every artifact under `root` (or of `root` itself), and the ones skipped
    because they are unreadable (a damaged report of one artifact must not stop the report of the
    others)."""
    reports, skipped = [], []
    for artifact in [root] if only_itself else finished_artifacts(root):
        path = artifact / VERIFY_REPORT
        if not path.is_file():
            continue
        try:
            reports.append(VerifyReport.from_dict(json.loads(path.read_bytes())))
        except (OSError, ValueError, TypeError):
            skipped.append(f"{artifact.name}/{VERIFY_REPORT}")
    return reports, skipped


def parity_rows(reports: list[VerifyReport]) -> list[list]:
    rows = []
    for rep in reports:
        for row in rep.rows:
            worst = row.worst or {}
            rows.append([rep.name, row.runtime, row.config or "",
                         f"{worst['rel_l2']:.1e}" if worst else "-", f"{worst['max_abs']:.1e}" if worst else "-",
                         f"{worst['cosine']:.7f}" if worst else "-", f"{worst['top1']:.0%}" if worst else "-",
                         f"{worst['top5']:.0%}" if worst else "-",
                         row.verdict if row.passed or not row.counted else "FAIL: " + "; ".join(row.failures)[:120]])
    return rows


def _key(t: Timing) -> tuple:
    return (t.model, t.runtime, t.device, t.mode, t.batch, t.precision)


def speed_rows(reports: list[VerifyReport]) -> list[list]:
    """Each timing, with what --fuse buys (unfused p50 / fused p50), ONNX Runtime over Paddle Inference, and
    the int8 model over the fp32 one in ONNX Runtime."""
    timings = [t for rep in reports for t in rep.timings]
    by_fusion = {(_key(t), t.fused): t.p50_ms for t in timings}
    rows = []
    for t in sorted(timings, key=lambda t: (t.model, t.fused, t.device, t.runtime, t.mode, t.batch)):
        unfused = by_fusion.get((_key(t), False))
        fuse_gain = f"{unfused / t.p50_ms:.2f}x" if t.fused and unfused else ""
        paddle_p50 = by_fusion.get(((t.model, "paddle-inference", t.device, "run", t.batch, "fp32"), t.fused))
        ort_gain = f"{paddle_p50 / t.p50_ms:.2f}x" if t.runtime == "onnxruntime" and paddle_p50 else ""
        ort_fp32_p50 = by_fusion.get(((t.model, "onnxruntime", t.device, t.mode, t.batch, "fp32"), t.fused))
        int8_gain = f"{ort_fp32_p50 / t.p50_ms:.2f}x" if t.precision == "int8" and ort_fp32_p50 else ""
        rows.append([artifact_name(t.model, t.fused), t.label, t.precision, t.mode, t.batch, f"{t.p50_ms:.2f}",
                     f"{t.p90_ms:.2f}", f"{t.p99_ms:.2f}", f"{t.images_per_s:.1f}", fuse_gain, ort_gain, int8_gain])
    return rows


def accuracy_rows(reports: list[VerifyReport]) -> list[list]:
    """Per artifact measured with --eval-data, each model's top-1 accuracy and its change from the eager model's."""
    rows = []
    for rep in reports:
        if rep.accuracy:
            eager = rep.accuracy["top1"].get("eager")
            for model, value in rep.accuracy["top1"].items():
                change = f"{(value - eager) * 100:+.1f}" if eager is not None and model != "eager" else ""
                rows.append([rep.name, f"{rep.accuracy['data']} ({rep.accuracy['samples']} test images)", model,
                             f"{value:.2%}", change])
    return rows


def _accuracy_line(accuracy: dict) -> str:
    figures = ", ".join(f"{model} {value:.2%}" for model, value in accuracy["top1"].items())
    return f"  accuracy on {accuracy['samples']} test images of {accuracy['data']}: {figures}"


def _speedup(rec: Recommendation) -> str:
    if rec.speedup_vs_paddle_fp32 is None:
        return "no verified Paddle Inference fp32 timing to compare with"
    return f"{rec.speedup_vs_paddle_fp32:.2f}x Paddle Inference fp32 ({rec.paddle_fp32_p50_ms:.2f} ms)"


def recommendation_rows(reports: list[VerifyReport]) -> list[list]:
    return [[rep.name, rec.batch, rec.runtime, rec.precision, f"{rec.p50_ms:.2f}", _speedup(rec)]
            for rep in reports for rec in rep.recommendation or ()]


def _recommendation_lines(report: VerifyReport) -> list[str]:
    if report.recommendation is None:
        return []
    if not report.recommendation:
        return ["  recommended: none (no row that passed was timed)"]
    return [f"  recommended at batch {rec.batch}: {rec.runtime} (p50 {rec.p50_ms:.2f} ms, {_speedup(rec)})"
            for rec in report.recommendation]


def interface_line(report: VerifyReport) -> str | None:
    """The sizes checked and the outputs, for a model that is not a one-size classifier."""
    outputs, sizes = report.outputs or [], report.sizes or []
    if len(sizes) <= 1 and classifier_classes([out["shape"] for out in outputs]) is not None:
        return None
    shown = ", ".join(f"{o['name']} {shape_text(o['shape'])} ({decision_kind(tuple(d or 1 for d in o['shape']))})"
                      for o in outputs)
    return f"checked at {', '.join(size_name(tuple(s)) for s in sizes)}; outputs: {shown}"


def summary_lines(report: VerifyReport) -> list[str]:
    """A plain-text summary (no table library needed on a bare GPU machine)."""
    lines = [f"{report.artifact}: {'PASS' if report.passed else 'FAIL'} (reference: {report.reference})"]
    interface = interface_line(report)
    lines += [f"  {interface}"] if interface else []
    lines += [f"  integrity: {p}" for p in report.integrity]
    for change in report.changed_weights:
        named = ", ".join(w["weight"] for w in change.get("weights", [])[:3]) or change.get("error", "none by name")
        lines.append(f"  changed weights in {change['file']}: {named}")
    lines += [f"  note: {n}" for n in report.notes]
    for row in report.rows:
        worst = row.worst
        figures = (f"rel L2 {worst['rel_l2']:.1e}  max abs {worst['max_abs']:.1e}  top-1 {worst['top1']:.0%}"
                   if worst else "")
        if not row.counted:
            lines.append(f"  skip {row.runtime:<40} {row.verdict} (not counted in the verdict)")
            continue
        lines.append(f"  {'ok  ' if row.passed else 'FAIL'} {row.runtime:<40} {figures}")
        lines += [f"       {f}" for f in row.failures[:3]]
    if report.accuracy:
        lines.append(_accuracy_line(report.accuracy))
        lines += [f"  accuracy not measured for {label}: {why}" for label, why in report.accuracy["errors"].items()]
    for d in report.divergence:
        lines.append(f"  first divergence ({d['runtime']}): {json.dumps({k: v for k, v in d.items() if k != 'runtime'})}")
    for t in report.timings:
        lines.append(f"  speed {t.label:<34} {t.mode:<20} bs {t.batch:<3} p50 {t.p50_ms:8.2f} ms  "
                     f"{t.images_per_s:9.1f} img/s")
    return lines + _recommendation_lines(report)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def _marker(path: Path) -> dict | None:
    """The marker of a REPORT.md that cnnexport wrote and nobody has changed since; None otherwise."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_REPORT_BYTES:
            return None
        text = path.read_bytes()
    except OSError:
        return None
    body, _, last = text.rstrip(b"\n").rpartition(b"\n")
    found = _MARKER.fullmatch(last.decode("ascii", errors="replace"))
    if found is None or hashlib.sha256(body).hexdigest() != found["text"]:
        return None
    return found.groupdict()


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def owns_report(directory: Path) -> bool:
    """Whether verify may write REPORT.md and latency.png in `directory`: each is absent, or written
    by cnnexport and unchanged since."""
    md, chart = directory / REPORT_MD, directory / CHART_PNG
    marker = _marker(md)
    if _present(md) and marker is None:
        return False
    if not _present(chart):
        return True
    if marker is None or chart.is_symlink() or not chart.is_file():
        return False
    return sha256(chart) in (marker["chart"], marker["was"])


def report_text(reports: list[VerifyReport], skipped: list[str], chart: bool) -> str:
    """REPORT.md's text, without its marker."""
    from tabulate import tabulate

    threads = sorted({rep.threads for rep in reports})
    interfaces = [(rep.name, line) for rep in reports if (line := interface_line(rep))]
    lines = [
        "# cnnexport verification report", "",
        f"Written {time.strftime('%Y-%m-%d %H:%M %Z')} by `cnnexport verify` on {_machine()}. "
        f"CPU runtimes ran with {', '.join(map(str, threads))} thread(s), the same for Paddle Inference and "
        "ONNX Runtime. Reference: the eager Paddle model (unfused) rebuilt from each manifest.", "",
        *([f"Skipped (not a readable verify report; run `cnnexport verify` on them again): {', '.join(skipped)}", ""]
          if skipped else []),
        "## Parity (worst over all parity batches: random images at batch 1 and 4, real photographs)", "",
        "`top-1`: the agreement of each output's decision: the class of each image, or of each pixel of a map "
        "(argmax over channels; a one-channel map thresholded).", "",
        *[f"- {name}: {line}" for name, line in interfaces], *([""] if interfaces else []),
        tabulate(parity_rows(reports), headers=["artifact", "runtime", "config", "rel L2", "max abs", "cosine",
                                                 "top-1", "top-5", "result"], tablefmt="github"), "",
    ]
    divergences = [(rep, d) for rep in reports for d in rep.divergence]
    if divergences:
        lines += ["## First divergence", ""]
        lines += [f"- {rep.name} / {d['runtime']}: `{json.dumps({k: v for k, v in d.items() if k != 'runtime'})}`"
                  for rep, d in divergences]
        lines.append("")
    accuracy = accuracy_rows(reports)
    if accuracy:
        lines += ["## Accuracy against the labels (`verify --eval-data`)", "",
                  "Top-1 accuracy; `change` in percentage points from the eager model's.", "",
                  tabulate(accuracy, headers=["artifact", "data", "model", "top-1", "change"], tablefmt="github"), ""]
    speed = speed_rows(reports)
    if speed:
        lines += ["## Speed", "", "p50/p90/p99 latency per call; `fuse gain` = unfused p50 / fused p50 (same runtime, "
                  "batch, mode); `ORT/Paddle` = Paddle Inference p50 / ONNX Runtime p50 (same artifact, batch; for the int8 "
                  "row: Paddle Inference fp32 over ONNX Runtime int8); `int8 gain` = ONNX Runtime fp32 p50 / int8 p50.", "",
                  tabulate(speed, headers=["artifact", "runtime", "precision", "mode", "batch", "p50 ms", "p90 ms",
                                           "p99 ms", "images/s", "fuse gain", "ORT/Paddle", "int8 gain"],
                           tablefmt="github"), "",
                  *([f"![latency]({CHART_PNG})", ""] if chart else [])]
    recommended = recommendation_rows(reports)
    if recommended:
        lines += ["## Recommendation", "", "Per artifact and batch size, the fastest (runtime, variant) whose parity "
                  "row passed, by p50 of a plain call on this machine; a row that failed, crashed or was not run is "
                  "never recommended.", "",
                  tabulate(recommended, headers=["artifact", "batch", "runtime", "precision", "p50 ms",
                                                 "speed-up"], tablefmt="github"), ""]
    return "\n".join(lines)


def write_report(directory: Path, reports: list[VerifyReport], skipped: list[str] = ()) -> Path:
    """REPORT.md (and latency.png, when there are timings) for `reports` in `directory`, whose two
    names the caller has checked are cnnexport's (`owns_report`). REPORT.md is written first,
    naming the new chart and the one it replaces; then the chart."""
    timings = [t for rep in reports for t in rep.timings]
    chart = _chart(timings) if timings else None
    md, chart_path = directory / REPORT_MD, directory / CHART_PNG
    previous = sha256(chart_path) if chart is not None and chart_path.is_file() else "none"
    body = report_text(reports, list(skipped), chart is not None).encode()
    marker = (f"<!-- written by cnnexport verify: text sha256 {hashlib.sha256(body).hexdigest()}, latency.png sha256 "
              f"{hashlib.sha256(chart).hexdigest() if chart else 'none'} (was {previous}) -->")
    atomic_write(md, lambda tmp: Path(tmp).write_bytes(body + b"\n" + marker.encode() + b"\n"))
    if chart is not None:
        atomic_write(chart_path, lambda tmp: Path(tmp).write_bytes(chart))
    return md


def write_reports(artifacts: list[Path]) -> list[tuple[Path, str]]:
    """The reports of a verify run over `artifacts`: one per directory that holds them, covering
    every verified artifact there, where cnnexport owns the report's names; otherwise one inside
    each artifact. Returns (REPORT.md, why it is where it is, or "") for each written."""
    written = []
    for directory in sorted({Path(a).resolve().parent for a in artifacts}):
        sweep_leftovers(directory)  # a report write killed before its rename leaves a temporary file here
        if owns_report(directory):
            reports, skipped = load_reports(directory)
            if reports:
                written.append((write_report(directory, reports, skipped), ""))
            continue
        why = f"{directory / REPORT_MD} or {CHART_PNG} there is not cnnexport's: left as it is"
        for artifact in sorted(Path(a).resolve() for a in artifacts if Path(a).resolve().parent == directory):
            reports, skipped = load_reports(artifact, only_itself=True)
            if reports and owns_report(artifact):
                written.append((write_report(artifact, reports, skipped), why))
    return written


def _chart(timings: list[Timing]) -> bytes:
    import logging

    import matplotlib
    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    series: dict[str, dict[str, float]] = {}
    for t in timings:
        name = f"{artifact_name(t.model, t.fused)} b{t.batch}"
        series.setdefault(f"{t.label} {t.precision} {t.mode}", {})[name] = t.p50_ms
    groups = sorted({g for s in series.values() for g in s})
    fig, ax = plt.subplots(figsize=(max(8, len(groups) * 0.9), 5))
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(sorted(series.items())):
        ax.bar([g + i * width for g in range(len(groups))], [values.get(g, 0) for g in groups], width, label=label)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=45, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency (ms, log scale)")
    ax.set_title("Latency per runtime and batch")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    return png.getvalue()
