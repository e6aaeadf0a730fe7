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

import models
from exporter.compare import CPU_FP32
from exporter.plan import Row, VerifyOptions
from exporter.report import write_report
from exporter.runtimes import RuntimeSpec
from exporter.verify import verify_artifact
from tests.helpers import REPO, perturb, run_cli


def _imports(path: Path, package: str) -> set[str]:
    """The modules of `package` that a module imports, anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{package}."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith(f"{package}."))
    return found


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


@pytest.mark.parametrize("package", ["exporter", "models"])
def test_no_module_imports_another_in_a_cycle(package):
    modules = {p.stem: p for p in (REPO / package).glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path, package) & modules.keys() - {name} for name, path in modules.items()}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check itself works


def _options(help_text: str) -> list[str]:
    return sorted(set(re.findall(r"(?<![\w-])--[a-z][\w-]*", help_text)))


def test_python_m_exporter_verify_is_the_same_command_as_cnnexport_verify(capsys):
    code, cli_help, _ = run_cli(capsys, "verify", "--help")
    assert code == 0
    proc = subprocess.run([sys.executable, "-m", "exporter.verify", "--help"], capture_output=True, text=True,
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
    assert label in write_report(art.parent).read_text()
