"""Issue 11: the shape of the code that the next runtimes rely on: no import cycles, one verify
command under two names, and a runtime added through the plan alone."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import paddle
import pytest

from cnnexport import models
from cnnexport.compare import CPU_FP32
from cnnexport.plan import Row, VerifyOptions
from cnnexport.report import write_reports
from cnnexport.runtimes import RuntimeSpec
from cnnexport.verifier import verify_artifact
from tests.helpers import REPO, perturb, run_cli


def _imports(path: Path) -> set[str]:
    """The sibling modules a module imports, anywhere in it (functions included). Inside the package
    every import of its own modules is package-relative, so that is all there is to find."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def _absolute_own_imports(path: Path) -> list[str]:
    """Imports of the package by its installed name, or of the folders' old top-level names."""
    own = ("cnnexport", "models", "exporter")
    return [name for node in ast.walk(ast.parse(path.read_text()))
            for name in ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if name.split(".")[0] in own]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = "done"
        return None

    return next((c for n in sorted(graph) if n not in state and (c := visit(n, [n]))), None)


@pytest.mark.parametrize("folder", ["exporter", "models"])
def test_no_module_imports_another_in_a_cycle(folder):
    modules = {p.stem: p for p in (REPO / folder).glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path) & modules.keys() - {name} for name, path in modules.items()}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check itself works


@pytest.mark.parametrize("folder", ["exporter", "models"])
def test_the_package_imports_itself_only_relatively(folder):
    """The folders are one package only once installed (cnnexport, cnnexport.models): an absolute
    import of `models` would find a user's own models.py first."""
    absolute = {p.name: found for p in (REPO / folder).glob("*.py") if (found := _absolute_own_imports(p))}
    assert absolute == {}


def _options(help_text: str) -> list[str]:
    return sorted(set(re.findall(r"(?<![\w-])--[a-z][\w-]*", help_text)))


def test_python_m_cnnexport_verify_is_the_same_command_as_cnnexport_verify(capsys):
    code, cli_help, _ = run_cli(capsys, "verify", "--help")
    assert code == 0
    proc = subprocess.run([sys.executable, "-m", "cnnexport", "verify", "--help"], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert _options(proc.stdout) == _options(cli_help)
    assert {"--atol", "--threads", "--images", "--json", "--batch-sizes", "--rtol"} <= set(_options(cli_help))


def test_a_runtime_added_through_the_plan_is_run_judged_timed_and_reported(tmp_path, capsys):
    """A plain callable, named by dotted path in a row of the plan: nothing else changes."""
    paddle.seed(3)
    weights = tmp_path / "w.pdparams"
    paddle.save(perturb(models.create("resnet18_cifar", img_size=8)).state_dict(), str(weights))
    art = tmp_path / "arts" / "resnet18_cifar-fused"
    assert run_cli(capsys, "resnet18_cifar", "--weights", str(weights), "--img-size", "8", "--fuse", "--onnx",
                   "--out", str(art))[0] == 0
    label = "tests.custom_runtimes:open_plain_callable/cpu"
    row = Row(RuntimeSpec("tests.custom_runtimes:open_plain_callable", str(art / "inference.onnx")), CPU_FP32, timed=True)
    opts = VerifyOptions(batch_sizes=(1, 2), reference_evaluator=False, extra_rows=(row,))

    report = verify_artifact(art, opts, "cpu")
    ours = next(r for r in report.rows if r.runtime == label)
    assert ours.passed and ours.worst["rel_l2"] <= 1e-5 and set(ours.batches) == {"random-b1", "random-b4", "photos"}
    assert {(t.label, t.mode, t.batch) for t in report.timings if t.label == label} == {
        (label, "run", 1), (label, "run", 2)}
    assert json.loads((art / "verify.json").read_text())["rows"][-1]["runtime"] == label
    [(report, why)] = write_reports([art])
    assert report == art.parent.resolve() / "REPORT.md" and why == "" and label in report.read_text()
