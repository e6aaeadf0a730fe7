"""Issue 10: a verify killed at any instant leaves an artifact that the next verify passes, with no
temporary file left inside it, beside it or in $TMPDIR."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO, hidden_entries, run_cli, subprocess_env

VERIFY = ["--no-bench", "--no-reference-evaluator"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A fused AlexNet-BN that has never been verified (so verify writes its bundle), and one
    that has (so verify with new photographs rewrites it)."""
    from cnnexport.cli import main
    root = tmp_path_factory.mktemp("exported")
    assert main(["alexnet_bn", "--img-size", "64", "--onnx", "--fuse", "--out", str(root / "fresh")]) == 0
    shutil.copytree(root / "fresh", root / "verified")
    assert main(["verify", str(root / "verified"), *VERIFY]) == 0
    return root


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    from PIL import Image
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / "a.png")
    return folder


# (where verify dies, which call, which artifact, whether it is given new photographs)
KILL_POINTS = [
    ("cnnexport.verifier:integrity_problems", 1, "fresh", False),
    ("cnnexport.reference:eager_outputs:after", 1, "fresh", False),
    ("cnnexport.artifact:os.replace", 1, "fresh", False),        # the bundle written, not yet renamed
    ("cnnexport.reference:atomic_write:after", 1, "fresh", False),  # the bundle in place, the manifest not updated
    ("cnnexport.reference:atomic_write:after", 1, "verified", True),  # a listed bundle replaced, manifest stale
    ("cnnexport.artifact:write_json", 1, "fresh", False),        # the manifest update
    ("cnnexport.artifact:os.replace", 2, "fresh", False),        # the manifest written, not yet renamed
    ("cnnexport.artifact:write_json:after", 1, "fresh", False),
    ("cnnexport.verifier:run_row", 1, "fresh", False),             # while the runtimes run
    ("cnnexport.verifier:write_json", 1, "fresh", False),          # verify.json
    ("cnnexport.artifact:os.replace", 3, "fresh", False),        # verify.json written, not yet renamed
    ("cnnexport.report:atomic_write:after", 1, "fresh", False),  # latency.png written, REPORT.md not
]


@pytest.mark.parametrize("point, nth, which, photos", KILL_POINTS,
                         ids=[f"{p.split(':', 1)[1]}#{n}-{w}" for p, n, w, _ in KILL_POINTS])
def test_sigkill_during_verify_then_the_next_verify_passes(exported, photo_dir, tmp_path, capsys, point, nth, which,
                                                           photos):
    artifact = tmp_path / "arts" / which
    shutil.copytree(exported / which, artifact)
    extra = ["--images", str(photo_dir)] if photos else []
    tmpdir = tmp_path / "tmpdir"
    proc = subprocess.run([sys.executable, "-m", "tests.kill_at", point, str(nth), "--", "verify", str(artifact),
                           *VERIFY, *extra], cwd=REPO, env=subprocess_env(tmpdir), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert list(tmpdir.iterdir()) == []

    code, out, err = run_cli(capsys, "verify", str(artifact), *VERIFY, *extra)
    assert code == 0, out + err
    assert "PASS" in out
    assert hidden_entries(artifact) == [] and hidden_entries(artifact.parent) == []
