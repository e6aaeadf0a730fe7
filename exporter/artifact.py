"""An artifact directory: its manifest, the integrity of its files, and writing it safely. Paddle-free.

An artifact is one model directory in the layout PaddleX and PaddleClas read (a Paddle program,
its parameters, the deploy config and the ONNX file side by side, under their names):

    artifacts/vanillanet_5-fused/
        manifest.json          what it is, how it was made, every file with size and sha256
        inference.json         Paddle 3 inference program
        inference.pdmodel      the legacy program, where Paddle can write it (PaddleClas 2.6, OpenVINO)
        inference.pdiparams    the parameters both programs load
        inference.yml          deploy config: preprocessing and top-k, in PaddleClas/PaddleX's schema
        inference.onnx         ONNX model: input `x` [batch, 3, S, S] float32 NCHW, output `logits`
        inference.fp16.onnx    its fp16 (or mixed-precision) variant, fp32 input and output
        inference.int8.onnx    its int8 variant (static QDQ quantization), fp32 input and output
        reference.npz          parity inputs and the eager model's outputs (written by `verify`)
        verify.json            the last verification's report (not covered by the manifest)

A directory is an artifact once its manifest exists: the manifest is written last, into a hidden
staging directory that takes the target's place only when everything is in it.

How writes survive a kill, and never touch what cnnexport did not create:
- every temporary path is named `.cnnexport-KIND-PID-TOKEN.NAME`: the prefix and a random token
  say it is cnnexport's, the pid which process made it; the next run removes those whose process
  is dead (`sweep_leftovers`), and nothing else, whatever it is called;
- the target is replaced by one atomic exchange (`renameat2(RENAME_EXCHANGE)`), so at every
  instant it is the old artifact or the new one; where the kernel or filesystem lacks it, two
  renames, and a kill between them is repaired by the next run (the old artifact is put back);
- a lock file beside the target (`.cnnexport-lock.NAME`, flock) serialises the processes that
  write it; it is removed only by a process that created it, or that finds cnnexport's mark in it;
- only a finished artifact (holding nothing its manifest does not account for) or an empty
  directory is ever replaced (`check_replaceable`).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath

from .errors import BadInput

MANIFEST = "manifest.json"
VERIFY_REPORT = "verify.json"    # written by every verify run: about the artifact, not part of it
REFERENCE_FILE = "reference.npz"  # written by verify: a cache of the eager model's outputs
PADDLE_PROGRAM, LEGACY_PROGRAM, PADDLE_PARAMS = "inference.json", "inference.pdmodel", "inference.pdiparams"
DEPLOY_CONFIG, ONNX_FILE, FP16_FILE = "inference.yml", "inference.onnx", "inference.fp16.onnx"
INT8_FILE = "inference.int8.onnx"
# Where the model comes from: the zoo, `module.path:callable` (rebuilt by importing it), an
# imported Paddle inference directory (no eager model), or a Layer object handed to the Python API
# (an eager model only where the caller hands it to verify again).
MAX_OUTPUTS, MAX_OUTPUT_RANK = 64, 8  # far beyond a detector's or a multi-head network's
MODEL_SOURCES = ("zoo", "callable", "paddle-inference", "object")
FORMAT = "cnnexport-artifact/2"  # 1: the Paddle files in paddle/, the ONNX file named model.onnx
_FORMATS_OF_OURS = ("cnnexport-artifact/1", FORMAT)
REPORT_MD, CHART_PNG = "REPORT.md", "latency.png"  # verify's report, beside the artifacts or inside one (report.py)
# Files verify writes into an artifact after the export: an artifact holding them (or
# leftovers of a dead run) is still only cnnexport's.
VERIFY_FILES = (VERIFY_REPORT, REFERENCE_FILE, REPORT_MD, CHART_PNG)

# `.cnnexport-KIND-PID-TOKEN.NAME`, TOKEN 8 characters of tempfile's random names (see `_temporary_prefix`)
_LEFTOVER = re.compile(r"^\.cnnexport-(?P<kind>staging|tmp|replaced)-(?P<pid>\d+)-[a-z0-9_]{8}\.(?P<name>.+)$")
_LOCK_MARK = b"cnnexport lock file: removed by the cnnexport process that holds it\n"


class ArtifactError(BadInput):
    """Not an artifact, an unfinished one, or one whose manifest is malformed (exit 2)."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- the manifest's schema

def _require(ok: bool, path: Path, what: str) -> None:
    if not ok:
        raise ArtifactError(f"{path} is not a valid artifact manifest: {what}; export the model again")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_sha256(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _section(manifest: dict, key: str, path: Path) -> dict:
    value = manifest.get(key)
    _require(isinstance(value, dict), path, f"`{key}` must be an object")
    return value


def validate_manifest(manifest, path: Path) -> None:
    """Check every field that verify reads, with its type."""
    _require(isinstance(manifest, dict), path, "it is not a JSON object")
    if manifest.get("format") in _FORMATS_OF_OURS and manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path} is an artifact of an older cnnexport ({manifest.get('format')}): "
                            "export the model again to verify it")
    _require(manifest.get("format") == FORMAT, path, f"format {manifest.get('format')!r}, want {FORMAT!r}")
    model = _section(manifest, "model", path)
    _require(isinstance(model.get("name"), str) and isinstance(model.get("family"), str), path,
             "`model.name` and `model.family` must be strings")
    _require(isinstance(model.get("kwargs"), dict) and isinstance(model.get("fused"), bool), path,
             "`model.kwargs` must be an object and `model.fused` a boolean")
    _require(model.get("source", "zoo") in MODEL_SOURCES, path, f"`model.source` must be one of {', '.join(MODEL_SOURCES)}")
    weights = _section(manifest, "weights", path)
    _require(weights.get("path") is None or isinstance(weights.get("path"), str), path,
             "`weights.path` must be a string or null")
    _require((weights.get("path") is None) == (weights.get("sha256") is None)
             and (weights.get("sha256") is None or _is_sha256(weights["sha256"])), path,
             "`weights.sha256` must be the sha256 of `weights.path`")
    spec = _section(manifest, "input", path)
    shape = spec.get("shape")
    _require(isinstance(shape, list) and len(shape) == 4 and (shape[0] is None or _is_int(shape[0]) and shape[0] >= 1)
             and shape[1] == 3 and (shape[2:] == [None, None] or all(_is_side(s) for s in shape[2:])), path,
             "`input.shape` must be [batch or null, 3, H, W] (H and W both sizes, or both null: dynamic)")
    sizes = spec.get("sizes", [shape[2:]])
    _require(isinstance(sizes, list) and len(sizes) >= 1 and all(
        isinstance(size, list) and len(size) == 2 and all(_is_side(s) for s in size) for size in sizes)
        and (shape[2] is None or sizes == [shape[2:]]), path,
        "`input.sizes` must list the [H, W] sizes checked (the fixed size alone where the shape fixes one)")
    _require(spec.get("dynamic_batch") is (shape[0] is None), path, "`input.dynamic_batch` must say whether the batch is null")
    for key in ("mean", "std"):
        _require(isinstance(spec.get(key), list) and len(spec[key]) == 3 and all(map(_is_number, spec[key])), path,
                 f"`input.{key}` must be three numbers")
    _require(all(s > 0 for s in spec["std"]) and _is_number(spec.get("scale")) and spec["scale"] > 0, path,
             "`input.std` and `input.scale` must be positive")
    _require(spec.get("dtype") == "float32", path, "`input.dtype` must be float32")
    output = _section(manifest, "output", path)
    outputs = output.get("outputs", [{"name": "logits", "shape": output.get("shape")}])
    _require(isinstance(outputs, list) and 1 <= len(outputs) <= MAX_OUTPUTS and all(
        isinstance(out, dict) and isinstance(out.get("name"), str) and isinstance(out.get("shape"), list)
        and 1 <= len(out["shape"]) <= MAX_OUTPUT_RANK and out["shape"][0] == shape[0]
        and all(d is None or _is_int(d) and d >= 1 for d in out["shape"][1:]) for out in outputs)
        and output.get("shape") == outputs[0]["shape"], path,
        f"`output.outputs` must list 1 to {MAX_OUTPUTS} outputs, each a name and a shape [batch or null, ...] "
        "(`output.shape` the first's)")
    files = _section(manifest, "files", path)
    for rel, meta in files.items():
        _require(isinstance(meta, dict) and _is_int(meta.get("size")) and meta["size"] >= 0
                 and _is_sha256(meta.get("sha256")), path, f"file entry {rel!r} needs an integer `size` and a `sha256`")
    names = manifest.get("paddle_param_names", {})
    _require(isinstance(names, dict) and all(isinstance(v, str) for v in names.values()), path,
             "`paddle_param_names` must map names to names")
    formats = manifest.get("formats", {})
    _require(isinstance(formats, dict) and all(isinstance(f, dict) for f in formats.values()), path,
             "`formats` must map format names to objects")
    reference = manifest.get("reference")
    _require(reference is None or isinstance(reference, dict), path, "`reference` must be an object")


def input_section(batch: int | None, sizes: list[tuple[int, int]], mean, std, scale: float = 1 / 255,
                  dynamic_size: bool = False) -> dict:
    """The manifest's `input` section: `x`, float32 RGB NCHW, normalised as x = (rgb * scale - mean) / std,
    checked at each of `sizes` ((height, width) pairs); its shape fixes the one size, or leaves height
    and width dynamic (`dynamic_size`, or several sizes)."""
    sizes = [[int(height), int(width)] for height, width in sizes]
    dynamic = dynamic_size or len(sizes) > 1
    return {"name": "x", "shape": [batch, 3, *([None, None] if dynamic else sizes[0])], "dtype": "float32",
            "layout": "NCHW", "color": "RGB", "scale": scale, "mean": list(mean), "std": list(std),
            "dynamic_batch": batch is None, "sizes": sizes}


def classifier_classes(shapes: list[list]) -> int | None:
    """The number of classes of a classifier (one output, [N, classes]); None for any other model."""
    return shapes[0][1] if len(shapes) == 1 and len(shapes[0]) == 2 else None


def output_names(shapes: list[list]) -> list[str]:
    """The names cnnexport gives a model's outputs (the ONNX file's, the manifest's): a classifier's
    one [N, classes] output is `logits`; any other model's are `output_0`, `output_1`, ..."""
    if classifier_classes(shapes) is not None:
        return ["logits"]
    return [f"output_{i}" for i in range(len(shapes))]


def shape_text(shape: list) -> str:
    """An output's shape as reports write it: `[N, 4, ?, ?]` (N the batch, ? an axis that follows the input's size)."""
    return "[" + ", ".join(str(d) if d is not None else "N" if i == 0 else "?" for i, d in enumerate(shape)) + "]"


def _is_side(value) -> bool:
    return _is_int(value) and 1 <= value <= 4096


@dataclass
class Manifest:
    """manifest.json: what an artifact is and how it was made (docs/FORMATS.md).

    The one reader (`load`, schema-checked) and the one writer (`write`) of the file. Each field
    is one top-level section of the JSON; the properties are what the rest of the code reads.
    """

    model: dict                      # name, family, kwargs (the zoo's, or the callable's), fused, source
    weights: dict                    # path, sha256, init_seed
    input: dict                      # name, shape, dtype, layout, color, scale, mean, std, dynamic_batch
    output: dict                     # name, shape
    rewrite: dict | None = None      # what --fuse did (cnnexport.rewrite.RewriteSummary)
    paddle_param_names: dict[str, str] = field(default_factory=dict)  # Paddle name -> state-dict name
    formats: dict[str, dict] = field(default_factory=dict)  # each format's files and real input/output names
    onnx: dict | None = None         # opset, op counts, sizes; the fp16 and int8 variants
    smoke_parity: list | None = None
    versions: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    created: str = ""
    files: dict[str, dict] = field(default_factory=dict)  # relative path -> size, sha256
    reference: dict | None = None    # the reference bundle verify wrote, if any
    format: str = FORMAT

    @classmethod
    def load(cls, root: Path) -> Manifest:
        root = Path(root)
        if not root.is_dir():
            raise ArtifactError(f"{root} is not a directory: give an artifact directory written by `cnnexport MODEL`")
        path = root / MANIFEST
        if not path.is_file():
            raise ArtifactError(f"{root} is not a finished artifact (no {MANIFEST}): export it again with "
                                "`cnnexport MODEL`")
        try:
            data = json.loads(path.read_bytes())
        except (ValueError, OSError) as err:
            raise ArtifactError(f"{path} is not valid JSON ({' '.join(str(err).split())}): export the model again") from None
        validate_manifest(data, path)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            _require(False, path, f"unknown field {unknown[0]!r}")
        return cls(**data)

    def to_dict(self) -> dict:
        data = {"format": self.format, **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "format"}}
        if self.reference is None:
            del data["reference"]
        return data

    def write(self, root: Path) -> None:
        write_json(Path(root) / MANIFEST, self.to_dict())

    def cover(self, root: Path, rel: str) -> None:
        """List (or re-list) one file of the artifact with its size and hash."""
        path = Path(root) / rel
        self.files[rel] = {"size": path.stat().st_size, "sha256": sha256(path)}

    @property
    def name(self) -> str:
        return self.model["name"]

    @property
    def imported(self) -> bool:
        """An imported Paddle inference directory: Paddle Inference on its program is the reference."""
        return self.model.get("source") == "paddle-inference"

    @property
    def from_object(self) -> bool:
        """Exported from a Layer object (the Python API): nothing here can rebuild the eager model."""
        return self.model.get("source") == "object"

    @property
    def fused(self) -> bool:
        return self.model["fused"]

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """The (height, width) sizes the artifact is checked at: its fixed one, or those its dynamic
        height and width were checked at."""
        from .images import input_sizes
        return input_sizes(self.input)

    @property
    def img_size(self) -> int | tuple[int, int]:
        """The first size checked: its side where it is square, else (height, width)."""
        height, width = self.sizes[0]
        return height if height == width else (height, width)

    @property
    def outputs(self) -> list[dict]:
        """Each output's name and shape, in the model's order."""
        return self.output.get("outputs") or [{"name": "logits", "shape": self.output["shape"]}]

    @property
    def classifier(self) -> bool:
        """One [N, classes] output: an image classifier, whose top-1 accuracy can be measured."""
        return classifier_classes([out["shape"] for out in self.outputs]) is not None

    @property
    def num_classes(self) -> int:
        """The classifier's size (a zoo model's kwargs say it too; a callable's or an imported one's need not)."""
        return self.output["shape"][1]

    @property
    def static_batch(self) -> int | None:
        return self.input["shape"][0]


def artifact_name(model: str, fused: bool) -> str:
    """An artifact's default directory name, and how reports name it: `vanillanet_5-fused`."""
    return f"{model}-fused" if fused else model


# ----------------------------------------------------------------------------- integrity

def _inside(root: Path, rel: str) -> bool:
    """Whether a manifest path names a place inside the artifact (relative, no `..`, no link out)."""
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel or "\0" in rel:
        return False
    try:
        return (root / rel).resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _tree(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under `root`, symbolic links not followed."""
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            yield str(path.relative_to(root)), path.lstat()


def describe_files(root: Path) -> dict[str, dict]:
    """Every file under `root` except the manifest: relative path -> size and sha256."""
    return {rel: {"size": st.st_size, "sha256": sha256(root / rel)}
            for rel, st in sorted(_tree(root)) if stat.S_ISREG(st.st_mode) and rel != MANIFEST}


def integrity_problems(root: Path, manifest: Manifest) -> dict[str, str]:
    """File -> what is wrong with it: missing, changed, not in the manifest, a link, outside the artifact.

    A file outside the artifact, a link or anything but a regular file is never read.
    """
    root = Path(root)
    problems: dict[str, str] = {}
    listed = manifest.files
    for rel, meta in listed.items():
        path = root / rel
        if not _inside(root, rel):
            problems[rel] = f"{rel} is listed in the manifest but lies outside the artifact"
        elif not path.exists() and not path.is_symlink():
            problems[rel] = f"{rel} is missing"
        elif not stat.S_ISREG(path.lstat().st_mode):
            problems[rel] = f"{rel} is not a regular file (cnnexport writes no links or special files)"
        elif path.stat().st_size != meta["size"] or sha256(path) != meta["sha256"]:
            problems[rel] = f"{rel} has changed since it was written (sha256 mismatch)"
    for rel, st in _tree(root):
        if rel in listed or rel == MANIFEST or stat.S_ISDIR(st.st_mode):
            continue
        if stat.S_ISLNK(st.st_mode):
            problems[rel] = f"{rel} is a symbolic link (cnnexport writes none)"
        elif rel not in VERIFY_FILES:
            problems[rel] = f"{rel} is not in the manifest"
    return problems


def unaccounted_files(root: Path) -> list[str]:
    """What an artifact of any cnnexport format holds that neither its manifest nor verify accounts
    for: the user's files. ArtifactError if the manifest is not one of cnnexport's."""
    try:
        data = json.loads((root / MANIFEST).read_bytes())
    except (OSError, ValueError):
        data = None
    listed = data.get("files") if isinstance(data, dict) and data.get("format") in _FORMATS_OF_OURS else None
    if not isinstance(listed, dict):
        raise ArtifactError(f"{root / MANIFEST} is not a cnnexport manifest")
    return [rel for rel, st in sorted(_tree(root)) if not stat.S_ISDIR(st.st_mode)
            and rel not in listed and rel != MANIFEST and rel not in VERIFY_FILES]


def finished_artifacts(root: Path) -> list[Path]:
    """Artifact directories directly under `root` (staging directories are hidden and skipped)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())


# ----------------------------------------------------------------------------- leftovers of dead runs

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_leftovers(directory: Path) -> None:
    """Remove the staging directories and temporary files of dead cnnexport processes in `directory`.

    Only names of cnnexport's own shape (`.cnnexport-KIND-PID-TOKEN.NAME`) are touched. A
    `.cnnexport-replaced-...` (the old artifact, moved aside by the two-rename fallback of a run
    killed mid-swap) is put back at NAME if nothing took its place, removed otherwise, and left
    alone unless it is a cnnexport artifact holding nothing else.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        match = _LEFTOVER.match(entry.name)
        if not match or _pid_alive(int(match["pid"])):
            continue
        if match["kind"] != "replaced":
            _remove(entry)
        elif _only_cnnexport_files(entry):
            home = directory / match["name"]
            if home.exists() or home.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                os.rename(entry, home)


def _only_cnnexport_files(directory: Path) -> bool:
    if directory.is_symlink() or not directory.is_dir():
        return False
    try:
        return not unaccounted_files(directory)
    except ArtifactError:
        return False


def _temporary_prefix(kind: str) -> str:
    """The start of a temporary name of this process (`sweep_leftovers`); tempfile adds the token."""
    return f".cnnexport-{kind}-{os.getpid()}-"


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """`write(tmp)` to a temporary name in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix("tmp"), suffix=f".{path.name}", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600: a model server must read it
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


# ----------------------------------------------------------------------------- locking and replacing

def writable_directory(directory: Path) -> bool:
    """Try it: permission bits say nothing to root, or about read-only and virtual filesystems."""
    try:
        Path(tempfile.mkdtemp(prefix=_temporary_prefix("tmp"), suffix=".probe", dir=directory)).rmdir()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def locked(target: Path, on_wait: Callable[[str], None] = lambda line: None) -> Iterator[None]:
    """Hold an exclusive lock on `target` (a `.cnnexport-lock.NAME` file beside it) for the block.

    A second process waits for the first. The lock file is removed while still held, by a process
    that created it or finds cnnexport's mark in it (a file of that name that is not cnnexport's
    is locked, never changed or removed); a waiter that then holds a removed file's lock tries
    again, so two holders never coexist.
    """
    target = Path(target)
    lock_path = target.parent / f".cnnexport-lock.{target.name}"
    while True:
        try:
            fd, created = _open_lock_file(lock_path)
        except FileNotFoundError:  # removed by its holder between our two opens
            continue
        except OSError as err:
            raise BadInput(f"cannot lock {target} ({err.strerror}: {lock_path}): cnnexport writes there; "
                           "give a writable place") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait(f"waiting for another cnnexport process writing {target}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(lock_path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        yield
    finally:
        if created or _holds_lock_mark(fd):
            lock_path.unlink(missing_ok=True)
        os.close(fd)


def _open_lock_file(path: Path) -> tuple[int, bool]:
    """(descriptor, whether this call created it): a new lock file holds cnnexport's mark; an existing
    one is opened read-only, not following a link, without blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    except FileExistsError:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), False
    os.write(fd, _LOCK_MARK)
    return fd, True


def _holds_lock_mark(fd: int) -> bool:
    try:
        return os.pread(fd, len(_LOCK_MARK) + 1, 0) == _LOCK_MARK
    except OSError:  # a directory of that name, say: not cnnexport's
        return False


def check_replaceable(target: Path) -> None:
    """Refuse (BadInput) a target that is neither absent, an empty directory, nor a finished artifact
    holding only what cnnexport wrote: nothing of the user's is ever replaced."""
    target = Path(target)
    if target.is_symlink():
        raise BadInput(f"{target} is a symbolic link: give --out a real directory path")
    if not target.exists():
        return
    if not target.is_dir():
        raise BadInput(f"{target} is a file, not an artifact directory: choose another --out")
    if not any(target.iterdir()):
        return
    if not (target / MANIFEST).is_file():
        raise BadInput(f"{target} holds files and is not a cnnexport artifact: cnnexport only replaces an artifact "
                       "it wrote or an empty directory; choose another --out")
    try:
        foreign = unaccounted_files(target)
    except ArtifactError:
        raise BadInput(f"{target} has a {MANIFEST} that is not a cnnexport manifest: cnnexport only replaces an "
                       "artifact it wrote or an empty directory; choose another --out") from None
    if foreign:
        raise BadInput(f"{target} is an artifact that also holds files cnnexport did not write ({', '.join(foreign[:3])}"
                       f"{' ...' if len(foreign) > 3 else ''}): move them out or choose another --out")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the kernel, libc or filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_into_place(staging: Path, final: Path) -> None:
    """After this, `final` is what `staging` was, and `staging` holds the old `final` (if any)."""
    if not final.exists():
        os.rename(staging, final)
    elif not _exchange(staging, final):
        # No atomic exchange here: a kill between the two renames leaves the old artifact at
        # .cnnexport-replaced-PID-TOKEN.NAME, which the next run puts back (sweep_leftovers).
        aside = final.with_name(f"{_temporary_prefix('replaced')}{secrets.token_hex(4)}.{final.name}")
        os.rename(final, aside)
        os.rename(staging, final)
        os.rename(aside, staging)


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_directory(final: Path, on_wait: Callable[[str], None] = lambda line: None) -> Iterator[Path]:
    """Yield an empty staging directory beside `final`; on success it takes `final`'s place.

    On any exception (or signal turned into one) the staging directory is removed and `final` is
    left as it was. `final` is locked for the whole block and re-checked with `check_replaceable`.
    """
    final = Path(final).absolute()
    created = [p for p in [final.parent, *final.parent.parents] if not p.exists()]
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        with locked(final, on_wait):
            sweep_leftovers(final.parent)
            check_replaceable(final)
            staging = Path(tempfile.mkdtemp(prefix=_temporary_prefix("staging"), suffix=f".{final.name}",
                                            dir=final.parent))
            try:
                staging.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700: a model server must read it
                yield staging
                _swap_into_place(staging, final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        for directory in created:  # only directories this call made, and only if still empty
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
