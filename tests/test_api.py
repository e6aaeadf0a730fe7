"""Issue 20: the Python API (a Layer object exported and verified, errors as the command line says
them, nothing printed) and verify's report, which never replaces a file cnnexport did not write."""
from __future__ import annotations

import json
import shutil

import numpy as np
import paddle
import pytest
from paddle import nn

import cnnexport
from cnnexport.artifact import Manifest
from tests.helpers import perturb, run_cli

SIZE = 16
QUICK = dict(bench=False, reference_evaluator=False)


class SmallNet(nn.Layer):
    """A conv -> BatchNorm -> ReLU classifier, as a user would write one in a notebook."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv = nn.Conv2D(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2D(8)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.pool(nn.functional.relu(self.bn(self.conv(x)))).flatten(1))


def _layer(seed: int = 0) -> SmallNet:
    paddle.seed(seed)
    return perturb(SmallNet(), seed)


def _state(layer) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in layer.state_dict().items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The same Layer object exported fused and unfused, with the step lines each export reported."""
    layer = _layer()
    layer.train()  # as a notebook leaves it after training: the export must not change that
    before = _state(layer)
    root = tmp_path_factory.mktemp("api")
    lines: dict[bool, list[str]] = {True: [], False: []}
    arts = {fused: cnnexport.export(layer, img_size=SIZE, out=root / "arts" / f"net-{fused}", fuse=fused,
                                    report=lines[fused].append)
            for fused in (True, False)}
    return layer, before, arts, lines


def test_a_layer_object_is_exported_fused_and_unfused_and_left_as_it_was(exported):
    layer, before, arts, lines = exported
    assert layer.training and all(np.array_equal(v, before[k]) for k, v in _state(layer).items())
    for fused, art in arts.items():
        assert isinstance(art, cnnexport.Artifact) and art.manifest.fused is fused
        assert art.manifest.model["source"] == "object" and art.manifest.model["class"].endswith("test_api.SmallNet")
        assert art.name == "SmallNet" and art.manifest.img_size == SIZE
        assert {"paddle", "paddle-legacy", "onnx"} <= set(art.files) and all(p.is_file() for p in art.files.values())
        assert any(line.startswith("smoke-parity") for line in lines[fused])
    assert any("folded 1" in line for line in lines[True])


@pytest.mark.parametrize("fused", [True, False])
def test_verify_judges_the_artifact_against_the_layer_object_handed_back(exported, fused):
    layer, _, arts, _ = exported
    report = cnnexport.verify(arts[fused], model=layer, **QUICK)
    assert isinstance(report, cnnexport.VerifyReport) and report.passed, report.to_dict()
    assert report.reference == "eager (unfused)"
    runtimes = {row.runtime for row in report.rows}
    assert {"eager-fused/cpu", "onnxruntime/cpu", "openvino/cpu"} <= runtimes
    assert all(row.worst["rel_l2"] <= 1e-5 for row in report.rows if row.worst)


def test_without_the_object_paddle_inference_on_the_program_is_the_reference(exported, capsys):
    art = exported[2][True]
    report = cnnexport.verify(art, **QUICK)
    assert report.passed and report.reference.startswith("Paddle Inference (the artifact's program")
    assert "model=layer" in report.reference
    code, out, err = run_cli(capsys, "verify", str(art.path), "--no-bench", "--no-reference-evaluator")
    assert code == 0, out + err
    assert "Paddle Inference (the artifact's program" in out


def test_an_object_with_other_weights_is_refused_as_the_reference(exported):
    art = exported[2][True]
    report = cnnexport.verify(art, model=_layer(seed=1), **QUICK)
    assert not report.passed
    assert any("other weights than the SmallNet exported" in p for p in report.integrity)


def test_the_api_prints_nothing(tmp_path, capfd):
    cnnexport.export(_layer(), img_size=SIZE, out=tmp_path / "quiet", fuse=True, onnx=False)
    cnnexport.verify(tmp_path / "quiet", **QUICK)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


@pytest.mark.parametrize("call, argv", [
    (lambda tmp: cnnexport.export("vanillanet5"), ["vanillanet5"]),
    (lambda tmp: cnnexport.export("alexnet_bn", onnx=False, fp16=True, fuse=False), ["alexnet_bn", "--fp16"]),
    (lambda tmp: cnnexport.export("alexnet_bn", img_size=100000), ["alexnet_bn", "--img-size", "100000"]),
    (lambda tmp: cnnexport.verify(tmp), ["verify", "{tmp}"]),
    (lambda tmp: cnnexport.verify(tmp, rtol=-1.0), ["verify", "{tmp}", "--rtol", "-1"]),
])
def test_bad_arguments_raise_badinput_with_the_line_the_cli_prints(tmp_path, capsys, call, argv):
    with pytest.raises(cnnexport.BadInput) as raised:
        call(tmp_path)
    assert isinstance(raised.value, cnnexport.CnnexportError)
    code, out, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and err == f"cnnexport: error: {raised.value}\n"


def test_a_layer_object_refuses_what_builds_a_model(tmp_path):
    with pytest.raises(cnnexport.BadInput, match="give the input side it takes with img_size"):
        cnnexport.export(_layer(), out=tmp_path / "a")
    with pytest.raises(cnnexport.BadInput, match="weights, num_classes build a model"):
        cnnexport.export(_layer(), img_size=SIZE, weights=tmp_path / "w.pdparams", num_classes=3, out=tmp_path / "b")
    with pytest.raises(cnnexport.BadInput, match="not a dict"):
        cnnexport.export({"not": "a model"}, img_size=SIZE)
    assert not any(tmp_path.iterdir())


def test_list_models_is_the_zoo_as_data(capsys):
    infos = cnnexport.list_models("vanillanet")
    assert infos and all(i.family == "vanillanet" for i in infos)
    code, out, _ = run_cli(capsys, "list", "vanillanet", "--json")
    assert code == 0 and [row["name"] for row in json.loads(out)] == [i.name for i in infos]


# ----------------------------------------------------------------------------- the report's place

@pytest.fixture
def beside_user_files(exported, tmp_path):
    """An artifact copied into a folder that already holds a user's REPORT.md and latency.png."""
    folder = tmp_path / "project"
    shutil.copytree(exported[2][True].path, folder / "net")
    (folder / "REPORT.md").write_text("# My own notes\n")
    (folder / "latency.png").write_bytes(b"\x89PNG\r\n\x1a\nmy own chart")
    return folder


def test_verify_never_replaces_a_report_it_did_not_write(beside_user_files, capsys):
    folder = beside_user_files
    before = {name: (folder / name).read_bytes() for name in ("REPORT.md", "latency.png")}
    code, out, err = run_cli(capsys, "verify", str(folder / "net"), "--batch-sizes", "1", "--no-reference-evaluator")
    assert code == 0, out + err
    assert {name: (folder / name).read_bytes() for name in before} == before
    inside = folder / "net" / "REPORT.md"
    assert f"report: {inside} ({folder / 'REPORT.md'} or latency.png there is not cnnexport's" in out
    assert "## Speed" in inside.read_text() and (folder / "net" / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert Manifest.load(folder / "net") and cnnexport.verify(folder / "net", **QUICK).integrity == []


def test_a_report_of_its_own_is_replaced_and_one_edited_since_is_not(exported, tmp_path, capsys):
    folder = tmp_path / "arts"
    shutil.copytree(exported[2][True].path, folder / "net")
    argv = ["verify", str(folder / "net"), "--batch-sizes", "1", "--no-reference-evaluator"]
    assert run_cli(capsys, *argv)[0] == 0
    first = (folder / "REPORT.md").read_bytes()
    assert first.rstrip().endswith(b"-->") and (folder / "latency.png").is_file()
    assert run_cli(capsys, *argv)[0] == 0  # its own report: replaced
    assert (folder / "REPORT.md").read_bytes() != first
    (folder / "REPORT.md").write_bytes((folder / "REPORT.md").read_bytes().replace(b"# cnnexport", b"# my edit of", 1))
    edited = (folder / "REPORT.md").read_bytes()
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and (folder / "REPORT.md").read_bytes() == edited
    assert f"report: {folder / 'net' / 'REPORT.md'}" in out
