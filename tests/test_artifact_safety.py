"""Issue 10: what an artifact may be replaced by, what its manifest may name, which weight changed,
leftovers of dead runs, permissions, a damaged sibling report, user images of any bit depth."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnexport import artifact
from cnnexport.artifact import Manifest, describe_files, sweep_leftovers
from cnnexport.errors import BadInput
from tests.helpers import hidden_entries, run_cli

EXPORT = ["alexnet_bn", "--img-size", "64", "--onnx", "--fuse"]
VERIFY = ["--no-bench", "--no-reference-evaluator"]


@pytest.fixture(scope="module")
def verified(tmp_path_factory) -> Path:
    from cnnexport.cli import main
    out = tmp_path_factory.mktemp("safety") / "alexnet_bn-fused"
    assert main([*EXPORT, "--out", str(out)]) == 0
    assert main(["verify", str(out), *VERIFY]) == 0
    return out


@pytest.fixture
def copy(verified, tmp_path) -> Path:
    target = tmp_path / "arts" / verified.name
    shutil.copytree(verified, target)
    return target


def _rehash(art: Path, **extra_files) -> None:
    """Re-list the artifact's files in its manifest, as if the export had written them."""
    manifest = Manifest.load(art)
    manifest.files = {**describe_files(art), **extra_files}
    manifest.write(art)


def test_a_verified_artifact_is_replaced_by_a_new_export(copy, capsys):
    code, _, err = run_cli(capsys, *EXPORT, "--out", str(copy))
    assert code == 0, err
    assert not (copy / "verify.json").exists()  # the new artifact, not a mix
    assert hidden_entries(copy.parent) == []


def test_an_artifact_of_the_first_layout_is_named_as_old_and_replaced_by_a_new_export(copy, capsys):
    """Format 1 kept the Paddle files in paddle/ and named the ONNX file model.onnx."""
    (copy / "paddle").mkdir()
    for name in ("inference.json", "inference.pdiparams", "inference.yml"):
        os.replace(copy / name, copy / "paddle" / name)
    os.replace(copy / "inference.onnx", copy / "model.onnx")
    old = json.loads((copy / "manifest.json").read_text())
    old.update(format="cnnexport-artifact/1", files=describe_files(copy))
    (copy / "manifest.json").write_text(json.dumps(old))
    code, _, err = run_cli(capsys, "verify", str(copy), *VERIFY)
    assert code == 2 and "older cnnexport (cnnexport-artifact/1): export the model again" in err
    code, _, err = run_cli(capsys, *EXPORT, "--out", str(copy))
    assert code == 0, err
    assert not (copy / "paddle").exists() and (copy / "inference.onnx").is_file()
    assert run_cli(capsys, "verify", str(copy), *VERIFY)[0] == 0


def test_a_manifest_listing_a_path_outside_the_artifact_fails_integrity(copy, capsys):
    outside = copy.parent / "outside.txt"
    outside.write_text("secret")
    for escape in ("../outside.txt", str(outside)):
        _rehash(copy, **{escape: {"size": outside.stat().st_size, "sha256": artifact.sha256(outside)}})
        code, out, err = run_cli(capsys, "verify", str(copy), *VERIFY)
        assert code == 1 and "Traceback" not in err
        assert f"integrity: {escape} is listed in the manifest but lies outside the artifact" in out


def test_a_symbolic_link_in_an_artifact_fails_integrity_and_is_not_followed(copy, capsys):
    (copy / "link.onnx").symlink_to("/etc/passwd")
    code, out, _ = run_cli(capsys, "verify", str(copy), *VERIFY)
    assert code == 1 and "integrity: link.onnx is a symbolic link" in out


def test_one_flipped_low_byte_of_a_weight_is_named_though_parity_passes(copy, capsys):
    manifest = Manifest.load(copy)
    paddle_name = next(p for p, s in manifest.paddle_param_names.items() if s == "features.4.weight")
    from cnnexport.exporting import build_model
    from cnnexport.rewrite import fuse
    fused, _ = fuse(build_model("alexnet_bn", manifest.model["kwargs"], None))
    needle = fused.state_dict()["features.4.weight"].numpy().ravel()[200:204].astype("<f4").tobytes()
    params = bytearray((copy / "inference.pdiparams").read_bytes())
    params[params.index(needle)] ^= 0x01  # the lowest mantissa bit of one float: invisible to parity
    (copy / "inference.pdiparams").write_bytes(bytes(params))

    code, out, _ = run_cli(capsys, "verify", str(copy), *VERIFY)
    assert code == 1
    report = json.loads((copy / "verify.json").read_text())
    assert all(row["passed"] for row in report["rows"])
    (change,) = report["changed_weights"]
    assert change["file"] == "inference.pdiparams"
    assert [(w["weight"], w["stored_as"]) for w in change["weights"]] == [("features.4.weight", paddle_name)]
    assert "changed weights in inference.pdiparams: features.4.weight" in out


def test_a_damaged_sibling_report_does_not_stop_a_good_verify(copy, capsys):
    sibling = copy.parent / "sibling"
    shutil.copytree(copy, sibling)
    (sibling / "verify.json").write_text('{"artifact": 3, "rows": "nope"}')
    code, out, err = run_cli(capsys, "verify", str(copy), *VERIFY)
    assert code == 0, out + err
    report = (copy.parent / "REPORT.md").read_text()
    assert "Skipped" in report and "sibling/verify.json" in report


@pytest.mark.parametrize("mask, mode", [(0o022, 0o755), (0o027, 0o750)])
def test_artifact_directories_follow_the_umask(tmp_path, capsys, mask, mode):
    old = os.umask(mask)
    try:
        code, _, err = run_cli(capsys, "resnet18_cifar", "--img-size", "8", "--out", str(tmp_path / "r"))
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "r").stat().st_mode & 0o777 == mode
    assert (tmp_path / "r" / "inference.json").stat().st_mode & 0o777 == mode & 0o666


def test_an_empty_directory_may_be_the_target(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "resnet18_cifar", "--img-size", "8", "--out", str(tmp_path / "empty"))
    assert code == 0, err
    assert (tmp_path / "empty" / "manifest.json").is_file()


def test_all_refuses_before_exporting_anything_when_one_target_holds_user_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "artifacts" / "alexnet").mkdir(parents=True)
    (tmp_path / "artifacts" / "alexnet" / "mine.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "--all", "resnet18_cifar,alexnet")
    assert code == 2 and "holds files and is not a cnnexport artifact" in err
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == ["alexnet"]
    assert (tmp_path / "artifacts" / "alexnet" / "mine.txt").read_text() == "keep me"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftover(directory: Path, kind: str, pid: int, name: str) -> Path:
    """A temporary path as cnnexport names it (`.cnnexport-KIND-PID-TOKEN.NAME`)."""
    return directory / f".cnnexport-{kind}-{pid}-ab12cd_9.{name}"


def _old_artifact(directory: Path) -> Path:
    directory.mkdir()
    (directory / "manifest.json").write_text(json.dumps({"format": artifact.FORMAT, "files": {}}))
    return directory


# A user's folders and files named as cnnexport once named its temporary paths and lock files
# (`.NAME.staging-PID-x`, `.NAME.replaced-PID`, `.NAME.tmp-PID`, `.NAME.lock`), PID a dead process's.
USERS_LOOKALIKES = {".thesis.staging-{pid}-v2": "folder", ".photos.replaced-{pid}": "folder",
                    ".notes.tmp-{pid}": "file", ".art.lock": "file"}


def _users_lookalikes(directory: Path, dead: int) -> list[str]:
    """Make them in `directory`, each holding a text of its own; their names."""
    names = []
    for pattern, kind in USERS_LOOKALIKES.items():
        name = pattern.format(pid=dead)
        path = directory / name
        if kind == "folder":
            path.mkdir()
            path = path / "chapter.txt"
        path.write_text(f"the user's {name}")
        names.append(name)
    return names


def _still_there(directory: Path, names: list[str]) -> bool:
    return all(((directory / name / "chapter.txt") if (directory / name).is_dir() else directory / name).read_text()
               == f"the user's {name}" for name in names)


def test_sweep_removes_only_what_dead_cnnexport_processes_left(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    _leftover(tmp_path, "staging", dead, "a").mkdir()                 # a dead export's staging: removed
    _leftover(tmp_path, "staging", alive, "a").mkdir()                # a running one's: kept
    _leftover(tmp_path, "tmp", dead, "manifest.json").write_text("half")
    _old_artifact(_leftover(tmp_path, "replaced", dead, "b"))         # its artifact vanished: it is put back
    (tmp_path / "c").mkdir()
    _old_artifact(_leftover(tmp_path, "replaced", dead, "c"))         # superseded: removed
    foreign = _leftover(tmp_path, "replaced", dead, "d")              # not an artifact: left alone
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not an artifact")
    users = _users_lookalikes(tmp_path, dead)
    sweep_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([_leftover(tmp_path, "staging", alive, "a").name,
                                                                 foreign.name, "b", "c", *users])
    assert (tmp_path / "b" / "manifest.json").is_file() and _still_there(tmp_path, users)


def test_export_and_verify_touch_no_user_file_beside_the_artifact(copy, capsys):
    """The user's own files in the artifact's parent, named like temporary paths or lock files (the
    shapes cnnexport once used, and a lock file of cnnexport's name that it did not create), survive
    a verify (which writes the report there) and an export that replaces the artifact."""
    parent, dead = copy.parent, _dead_pid()
    users = _users_lookalikes(parent, dead)
    (parent / f".cnnexport-lock.{copy.name}").write_text("the user's own lock file")
    code, _, err = run_cli(capsys, "verify", str(copy), *VERIFY)
    assert code == 0, err
    code, _, err = run_cli(capsys, *EXPORT, "--out", str(copy))
    assert code == 0, err
    assert _still_there(parent, users)
    assert (parent / f".cnnexport-lock.{copy.name}").read_text() == "the user's own lock file"
    assert sorted(p.name for p in parent.iterdir()) == sorted([copy.name, f".cnnexport-lock.{copy.name}",
                                                               "REPORT.md", *users])


def test_check_replaceable_refuses_anything_of_the_users(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="is a file"):
        artifact.check_replaceable(tmp_path / "file")
    (tmp_path / "dir").mkdir()
    artifact.check_replaceable(tmp_path / "dir")        # empty: fine
    artifact.check_replaceable(tmp_path / "absent")     # absent: fine
    (tmp_path / "dir" / ".hidden").write_text("x")
    with pytest.raises(BadInput, match="holds files"):
        artifact.check_replaceable(tmp_path / "dir")


def test_verify_without_a_terminal_prints_plain_step_lines(copy, capsys):
    code, _, err = run_cli(capsys, "verify", str(copy), *VERIFY)
    assert code == 0
    assert "\r" not in err and f"verify {copy.name}: integrity" in err.splitlines()


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from cnnexport.images import folder_photos
    Image.fromarray(np.full((4, 4), 257 * 100, np.uint16)).save(tmp_path / "grey16.png")
    Image.fromarray(np.full((4, 4, 3), 100, np.uint8)).save(tmp_path / "rgb8.png")
    photos = folder_photos(tmp_path)
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    assert (photos["grey16.png"] == 100).all() and (photos["rgb8.png"] == 100).all()


def _npz(arrays: dict, allow_pickle: bool = False) -> bytes:
    import io
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=allow_pickle, **arrays)
    return buffer.getvalue()


class _Touch:
    """Pickles as a call that creates a marker file: what a crafted object array inside an .npz holds."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_bundles(good: dict[str, np.ndarray], marker: Path) -> dict[str, bytes]:
    x, y = good["input:photos"], good["output:photos"]
    return {
        "object-array": _npz({"input:photos": np.array([_Touch(marker)], dtype=object), "output:photos": y},
                             allow_pickle=True),
        "complex": _npz({"input:photos": x.astype(np.complex64), "output:photos": y}),
        "strings": _npz({"input:photos": np.array(["a", "b"]), "output:photos": y}),
        "wrong-shape": _npz({"input:photos": x[:, :, :8], "output:photos": y}),
        "nan": _npz({"input:photos": x, "output:photos": np.full_like(y, np.nan)}),
        "unpaired": _npz({"input:photos": x}),
        "not-a-zip": b"PK\x03\x04 but not really",
    }


@pytest.mark.parametrize("case", ["object-array", "complex", "strings", "wrong-shape", "nan", "unpaired", "not-a-zip"])
def test_a_crafted_reference_bundle_is_refused_without_paddle_and_rewritten_with_it(copy, tmp_path, capsys, case):
    from tests.helpers import without_paddle
    marker = tmp_path / "ran"
    with np.load(copy / "reference.npz") as data:
        good = {k: data[k] for k in data.files}
    (copy / "reference.npz").write_bytes(_crafted_bundles(good, marker)[case])
    _rehash(copy)  # the manifest vouches for it: only the loader's own checks stand in the way

    proc = subprocess.run([sys.executable, "-m", "cnnexport", "verify", str(copy), "--no-bench", "--device", "cpu"],
                          env=without_paddle(tmp_path), capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "is not a valid reference bundle" in proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()

    code, out, err = run_cli(capsys, "verify", str(copy), *VERIFY)  # with Paddle: a cache, written again
    assert code == 0, out + err
    assert "note: reference.npz was rewritten from the eager model" in out and not marker.exists()
