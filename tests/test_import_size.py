"""Issue 20: a Paddle inference directory whose program fixes its input (`InputSpec([None, 3, S, S])`)
says its own size, in a Paddle 3 program (`NAME.json`) and a legacy one (`NAME.pdmodel`), without
an inference.yml or --img-size; a dynamic H, W still asks for --img-size; a size given that
disagrees with the program's, and a program that is hostile, are one line and exit 2."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from cnnexport.artifact import Manifest
from cnnexport.imported import MAX_PROGRAM_BYTES, program_input_size
from tests.helpers import REPO, run_cli, subprocess_env

# A tiny conv net (a few hundred parameters), saved as paddle.jit.save writes it (from a file:
# dy2static reads the forward's source).
_SAVE = """
import sys, paddle
from paddle import nn
class Net(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2D(3, 4, 3), nn.AdaptiveAvgPool2D(1), nn.Linear(4, 5)
    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))
paddle.seed(0)
shape = [None if d == "None" else int(d) for d in sys.argv[2].split(",")]
paddle.jit.save(Net().eval(), sys.argv[1] + "/model", input_spec=[paddle.static.InputSpec(shape, "float32", "x")])
"""
SHAPES = {"static": "None,3,64,64", "dynamic": "None,3,None,None"}
PROGRAM = {"pir": "model.json", "legacy": "model.pdmodel"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{(format, static|dynamic): directory}: each saved by real paddle.jit.save in a child (the
    legacy ones with FLAGS_enable_pir_api=0, which Paddle reads once, at its import)."""
    root = tmp_path_factory.mktemp("saved")
    (root / "save_net.py").write_text(_SAVE)
    dirs = {}
    for kind in PROGRAM:
        for shape_name, shape in SHAPES.items():
            directory = dirs[kind, shape_name] = root / f"{kind}-{shape_name}"
            directory.mkdir()
            env = dict(subprocess_env(root / "tmp"), **({"FLAGS_enable_pir_api": "0"} if kind == "legacy" else {}))
            saving = subprocess.run([sys.executable, str(root / "save_net.py"), str(directory), shape], env=env,
                                    cwd=REPO, capture_output=True, text=True)
            assert saving.returncode == 0, saving.stderr[-2000:]
            assert (directory / PROGRAM[kind]).is_file() and not (directory / "inference.yml").exists()
    return dirs


def _copy(source, tmp_path, name="copy"):
    return shutil.copytree(source, tmp_path / name)


def _one_line_exit_2(code, out, err) -> str:
    assert code == 2, out + err
    assert "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("kind", PROGRAM)
def test_the_program_reads_its_fixed_and_dynamic_sizes(saved, kind):
    assert program_input_size(saved[kind, "static"] / PROGRAM[kind]) == (64, 64)
    assert program_input_size(saved[kind, "dynamic"] / PROGRAM[kind]) is None


@pytest.mark.parametrize("kind", PROGRAM)
def test_a_static_input_exports_without_img_size_or_deploy_config(saved, tmp_path, capsys, kind):
    out = tmp_path / "imported"
    code, stdout, err = run_cli(capsys, str(saved[kind, "static"]), "--out", str(out))
    assert code == 0, stdout + err
    manifest = Manifest.load(out)
    assert manifest.img_size == 64 and manifest.input["shape"][1:] == [3, 64, 64]
    assert "64" in (out / "inference.yml").read_text()  # the deploy config written from the program's size


@pytest.mark.parametrize("kind", PROGRAM)
def test_a_dynamic_input_without_deploy_config_asks_for_img_size(saved, tmp_path, capsys, kind):
    err = _one_line_exit_2(*run_cli(capsys, str(saved[kind, "dynamic"]), "--out", str(tmp_path / "o")))
    assert "has no inference.yml saying the input size: give --img-size" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", PROGRAM)
def test_an_img_size_that_contradicts_the_program_names_both(saved, tmp_path, capsys, kind):
    err = _one_line_exit_2(*run_cli(capsys, str(saved[kind, "static"]), "--img-size", "32",
                                    "--out", str(tmp_path / "o")))
    assert "--img-size 32" in err and "64x64" in err and PROGRAM[kind] in err


def test_a_deploy_config_that_contradicts_the_program_names_both(saved, tmp_path, capsys):
    directory = _copy(saved["pir", "static"], tmp_path)
    (directory / "inference.yml").write_text("PreProcess:\n  transform_ops:\n  - CropImage:\n      size: 48\n")
    err = _one_line_exit_2(*run_cli(capsys, str(directory), "--out", str(tmp_path / "o")))
    assert "size 48" in err and "64x64" in err


@pytest.mark.parametrize("kind", PROGRAM)
def test_a_truncated_program_is_one_line_exit_2(saved, tmp_path, capsys, kind):
    directory = _copy(saved[kind, "static"], tmp_path)
    program = directory / PROGRAM[kind]
    program.write_bytes(program.read_bytes()[:len(program.read_bytes()) // 2])
    # no size anywhere: asked for one; with one, Paddle Inference (in a child) refuses the program
    assert "give --img-size" in _one_line_exit_2(*run_cli(capsys, str(directory), "--out", str(tmp_path / "o")))
    err = _one_line_exit_2(*run_cli(capsys, str(directory), "--img-size", "64", "--out", str(tmp_path / "o")))
    assert "Paddle Inference cannot run the imported program" in err
    assert not (tmp_path / "o").exists()


def _pir_with(saved, tmp_path, edit) -> str:
    """The static Paddle 3 directory, copied, with its program's JSON edited by `edit(program, data_op)`."""
    directory = _copy(saved["pir", "static"], tmp_path)
    program = json.loads((directory / "model.json").read_text())
    ops = program["program"]["regions"][0]["blocks"][0]["ops"]
    edit(ops, next(op for op in ops if op["#"] == "1.data"))
    (directory / "model.json").write_text(json.dumps(program))
    return str(directory)


def _shape(value):
    def edit(ops, data):
        next(a for a in data["A"] if a["N"] == "shape")["AT"]["D"] = value
    return edit


HOSTILE = {
    "not-ints": (_shape([-1, 3, 64.0, "64"]), "not a list of integers"),
    "not-a-list": (_shape({"h": 64}), "not a list of integers"),
    "no-shape": (lambda ops, data: data.update(A=[a for a in data["A"] if a["N"] != "shape"]),
                 "not a list of integers"),
    "rank-3": (_shape([3, 64, 64]), "of rank 3"),
    "one-channel": (_shape([-1, 1, 64, 64]), "channel count 1"),
    "negative": (_shape([-1, 3, -64, -64]), "-1 (dynamic) or 1..1024 px"),
    "huge": (_shape([-1, 3, 10 ** 30, 10 ** 30]), "-1 (dynamic) or 1..1024 px"),
    "two-inputs": (lambda ops, data: ops.insert(0, json.loads(json.dumps(data))), "has 2 inputs"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_input_declaration_is_one_line_exit_2(saved, tmp_path, capsys, case):
    edit, message = HOSTILE[case]
    err = _one_line_exit_2(*run_cli(capsys, _pir_with(saved, tmp_path, edit), "--out", str(tmp_path / "o")))
    assert message in err and "model.json" in err


@pytest.mark.parametrize("blob", [b"", b"[" * 200_000, b"\xff\xfe garbage \x00", b'{"program": {"regions": 5}}'],
                         ids=["empty", "deep", "binary", "wrong-layout"])
@pytest.mark.parametrize("kind", PROGRAM)
def test_a_program_that_is_no_program_states_no_size(saved, tmp_path, kind, blob):
    program = tmp_path / PROGRAM[kind]
    program.write_bytes(blob)
    assert program_input_size(program) is None  # left to Paddle Inference, as the truncated case shows


def test_an_enormous_program_is_refused_before_it_is_parsed(saved, tmp_path, capsys):
    directory = _copy(saved["pir", "static"], tmp_path)
    with open(directory / "model.json", "r+b") as program:
        program.truncate(MAX_PROGRAM_BYTES + 1)  # sparse: no disk used
    err = _one_line_exit_2(*run_cli(capsys, str(directory), "--img-size", "64", "--out", str(tmp_path / "o")))
    assert f"larger than {MAX_PROGRAM_BYTES >> 20} MiB" in err
