"""An artifact directory: its manifest, the integrity of its files, and writing it atomically. Paddle-free.

    artifacts/vanillanet_5-fused/
        manifest.json          what it is, how it was made, every file with size and sha256
        paddle/inference.json  Paddle static inference model (+ inference.pdiparams, inference.yml)
        model.onnx             ONNX model: input `x` [batch, 3, S, S] float32 NCHW, output `logits`
        reference.npz          parity inputs and the eager model's outputs (written by `verify`)
        verify.json            the last verification's report (not covered by the manifest)

A directory is an artifact once its manifest exists: the manifest is written last, into a
hidden staging directory that is renamed into place only when everything is in it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

MANIFEST = "manifest.json"
VERIFY_REPORT = "verify.json"  # written by every verify run: about the artifact, not part of it
FORMAT = "cnnexport-artifact/1"


class ArtifactError(ValueError):
    """Not an artifact, or an unfinished one."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(root: Path) -> dict[str, dict]:
    """Every file under `root` except the manifest: relative path -> size and sha256."""
    return {str(p.relative_to(root)): {"size": p.stat().st_size, "sha256": sha256(p)}
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def integrity_problems(root: Path, manifest: dict) -> list[str]:
    """Files that are missing, changed, or not in the manifest: a stale or tampered artifact."""
    problems = []
    listed = manifest.get("files", {})
    for rel, meta in listed.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.stat().st_size != meta["size"] or sha256(path) != meta["sha256"]:
            problems.append(f"{rel} has changed since it was written (sha256 mismatch)")
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_file() and rel not in (MANIFEST, VERIFY_REPORT) and rel not in listed:
            problems.append(f"{rel} is not in the manifest")
    return problems


def load_manifest(root: Path) -> dict:
    root = Path(root)
    if not root.is_dir():
        raise ArtifactError(f"{root} is not a directory: give an artifact directory written by `cnnexport MODEL`")
    path = root / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{root} is not a finished artifact (no {MANIFEST}): export it again with `cnnexport MODEL`")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise ArtifactError(f"{path} is not valid JSON ({err}): export the model again") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a cnnexport manifest (format {manifest.get('format')!r}, want {FORMAT!r})")
    return manifest


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """`write(tmp)` to a temporary name in the same directory, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def finished_artifacts(root: Path) -> list[Path]:
    """Artifact directories directly under `root` (staging directories are hidden and skipped)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_staging(parent: Path, name: str) -> None:
    """Staging directories left by a process that died hard (SIGKILL, power loss)."""
    for path in parent.glob(f".{name}.staging-*"):
        pid = path.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(final: Path):
    """Yield an empty staging directory beside `final`; on success it replaces `final`.

    On any exception the staging directory is removed and `final` is left as it was. The swap
    is two renames: at no moment does `final` hold a partial artifact.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(final.parent, final.name)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-{os.getpid()}-", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.replaced-{os.getpid()}")
        os.rename(final, old)
    os.rename(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
