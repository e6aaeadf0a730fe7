"""Issue 10: bad input, across every command, is one line on stderr and exit 2, with no traceback
and nothing created, changed or removed: not under the working directory, not beside --out, not
in $TMPDIR.

Each case is a function that prepares what it needs under `tmp` (the working directory) and
returns the command line; the table says what the one line must contain.
"""
from __future__ import annotations

import io
import json
import struct
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from cnnexport.artifact import FORMAT
from tests.helpers import run_cli


def _snapshot(root: Path) -> dict[str, tuple]:
    """Everything under `root`: path -> (kind, size, mtime, content hash)."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_dir() and not path.is_symlink():  # a directory's own mtime moves with any probe of it
            out[str(path.relative_to(root))] = (st.st_mode,)
            continue
        digest = zlib.crc32(path.read_bytes()) if path.is_file() and not path.is_symlink() else None
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


# ----------------------------------------------------------------------------- what the cases prepare

def user_files(tmp: Path, name: str = "mine") -> Path:
    folder = tmp / name
    folder.mkdir()
    (folder / "notes.txt").write_text("a user's notes")
    (folder / "data.bin").write_bytes(b"\x00" * 100)
    return folder


def fake_artifact(tmp: Path, name: str = "art", **changes) -> Path:
    """A directory whose manifest passes the schema (for cases that stop before any file is read)."""
    manifest = {
        "format": FORMAT,
        "model": {"name": "alexnet_bn", "family": "dynamic_conv", "fused": True,
                  "kwargs": {"num_classes": 10, "img_size": 64, "seed_compat": False}},
        "weights": {"path": None, "sha256": None, "init_seed": 0},
        "input": {"name": "x", "shape": [None, 3, 64, 64], "dtype": "float32", "layout": "NCHW", "color": "RGB",
                  "scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "dynamic_batch": True},
        "output": {"name": "logits", "shape": [None, 10]},
        "files": {}, "paddle_param_names": {},
    }
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        section = manifest
        for part in path:
            section = section[part]
        section[key] = value
    folder = tmp / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def raw_manifest(tmp: Path, text: str) -> Path:
    folder = tmp / "art"
    folder.mkdir()
    (folder / "manifest.json").write_text(text)
    return folder


def images(tmp: Path, files: dict[str, bytes]) -> Path:
    folder = tmp / "photos"
    folder.mkdir()
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    return folder


def jpeg(size: int = 64) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares `width` x `height` pixels: a decompression bomb's opening."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def float_tiff() -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)).save(buffer, "TIFF")
    return buffer.getvalue()


def weights_file(tmp: Path, blob: bytes, name: str = "w.pdparams") -> Path:
    path = tmp / name
    path.write_bytes(blob)
    return path


def alexnet_bn_weights(tmp: Path) -> Path:
    import paddle

    from cnnexport import models
    path = tmp / "bn.pdparams"
    paddle.save(models.create("alexnet_bn", img_size=64).state_dict(), str(path))
    return path


def tar_with_symlink(tmp: Path) -> Path:
    """A CIFAR tarball whose first training batch is a symbolic link to /etc/passwd."""
    from cifar_data import members_of
    path = tmp / "linked.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members_of(tiny_cifar(tmp)).items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            if name == "data_batch_1":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return path


def _declaring_gigabytes(tmp: Path) -> Path:
    """A CIFAR tarball whose test batch declares 4 GiB (a hole in a sparse file)."""
    from cifar_data import members_of, tarball_declaring
    return tarball_declaring(tmp / "bomb.tar", members_of(tiny_cifar(tmp)), "test_batch", 4 << 30)


def _three_class_cifar(tmp: Path) -> Path:
    from cifar_data import random_cifar
    return random_cifar(tmp / "three.tar.gz", n_train=6, n_test=3, classes=3)


def tiny_cifar(tmp: Path) -> Path:
    from cifar_data import random_cifar
    return random_cifar(tmp / "tiny.tar.gz", n_train=16, n_test=8)


# ----------------------------------------------------------------------------- the table

def module_file(tmp: Path, name: str, text: str) -> str:
    """A user's module in the working directory (importable from there, as cnnexport imports it)."""
    (tmp / f"{name}.py").write_text(text)
    return name


def odd_net(tmp: Path) -> str:
    """A user's module whose model returns, by `mode`, what a classifier's output must not be."""
    return module_file(tmp, "odd_net", """
from paddle import nn


class OddNet(nn.Layer):
    def __init__(self, mode):
        super().__init__()
        self.mode, self.conv, self.fc = mode, nn.Conv2D(3, 8, 3), nn.Linear(8, 10)

    def forward(self, x):
        logits = self.fc(self.conv(x).mean(axis=[2, 3]))
        return {"ok": logits, "zero-classes": logits[:, :0], "int64": logits.astype("int64"),
                "float64": logits.astype("float64"), "bool": logits > 0,
                "100001-classes": logits[:, :1].expand([x.shape[0], 100_001]), "dict": {"logits": logits},
                "batchless": (logits, logits.mean(axis=0))}[self.mode]


def build(mode="ok"):
    return OddNet(mode)
""")


BYO = [  # bring your own model: module:callable and Paddle inference directories
    ("callable-no-module", lambda t: ["no_such_module_xyz:build", "--img-size", "32"], "cannot import no_such_module_xyz"),
    ("callable-module-raises", lambda t: [module_file(t, "raising_net", "raise RuntimeError('broken on import')")
                                          + ":build", "--img-size", "32"], "cannot import raising_net"),
    ("callable-no-attribute", lambda t: ["paddle.vision.models:resnet999", "--img-size", "32"],
     "has no attribute 'resnet999'"),
    ("callable-not-callable", lambda t: ["math:pi", "--img-size", "32"], "math:pi is a float, not a callable"),
    ("callable-not-a-layer", lambda t: [module_file(t, "numbers_net", "def build():\n    return 42\n") + ":build",
                                        "--img-size", "32"], "returned a int, not a paddle.nn.Layer"),
    ("callable-call-fails", lambda t: ["paddle.vision.models:resnet18", "--model-kwargs", '{"depth_x": 3}',
                                       "--img-size", "32"], "failed (TypeError"),
    ("callable-forward-fails", lambda t: ["paddle.vision.models:LeNet", "--img-size", "32"],
     "paddle.vision.models:LeNet: the forward pass fails on a [2, 3, 32, 32] input"),
    ("callable-returns-a-dict", lambda t: [odd_net(t) + ":build", "--img-size", "16", "--model-kwargs",
                                           '{"mode": "dict"}'],
     "the forward pass returns a dict; cnnexport exports a model whose forward returns a tensor, or a tuple or list"),
    ("callable-returns-no-batch-axis", lambda t: [odd_net(t) + ":build", "--img-size", "16", "--model-kwargs",
                                                  '{"mode": "batchless"}'],
     "returns (output 1) a tensor of shape [10] for a batch of 2: cnnexport exports outputs [N, ...]"),
    ("callable-sizes-not-sizes", lambda t: ["paddle.vision.models:resnet18", "--img-size", "64,96y64"],
     "--img-size 64,96y64: 96y64 is not a size; give a side (64), a height x width (96x64)"),
    ("zoo-two-sizes", lambda t: ["alexnet_bn", "--img-size", "64,96"], "the zoo's models take one square size"),
    ("callable-without-size", lambda t: ["paddle.vision.models:resnet18"], "give the input side it takes with --img-size"),
    ("callable-num-classes", lambda t: ["paddle.vision.models:resnet18", "--img-size", "32", "--num-classes", "10"],
     "pass your callable's own arguments with --model-kwargs"),
    ("model-kwargs-not-json", lambda t: ["paddle.vision.models:resnet18", "--img-size", "32", "--model-kwargs", "{num: 1"],
     "is not JSON"),
    ("model-kwargs-not-object", lambda t: ["paddle.vision.models:resnet18", "--img-size", "32", "--model-kwargs", "[1]"],
     "is not a JSON object of keyword arguments"),
    ("model-kwargs-on-zoo", lambda t: ["alexnet_bn", "--model-kwargs", "{}"], "are for module:callable models"),
    ("mean-not-three", lambda t: ["paddle.vision.models:resnet18", "--img-size", "32", "--mean", "0.5,0.5"],
     "is not three finite numbers"),
    ("std-zero", lambda t: ["paddle.vision.models:resnet18", "--img-size", "32", "--std", "0.2,0,0.2"],
     "is not three finite numbers R,G,B above 0"),
    # issue 24: outputs no classifier artifact can be, arguments no manifest can hold, normalisations float32 cannot
    *[(f"callable-returns-{mode}", lambda t, mode=mode: [odd_net(t) + ":build", "--img-size", "16", "--model-kwargs",
                                                          json.dumps({"mode": mode})], message)
      for mode, message in [("zero-classes", "returns 0 classes per image; a classifier has 1 to 100,000"),
                            ("int64", "returns int64 values, not float32 logits"),
                            ("float64", "returns float64 values, not float32 logits"),
                            ("bool", "returns bool values, not float32 logits"),
                            ("100001-classes", "returns 100,001 classes per image")]],
    ("model-kwargs-recursion", lambda t: ["paddle.vision.models:resnet18", "--img-size", "32", "--model-kwargs",
                                          '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"], "is nested deeper than JSON is read"),
    ("model-kwargs-too-deep", lambda t: ["paddle.vision.models:resnet18", "--img-size", "32", "--model-kwargs",
                                         '{"a": ' + "[" * 40 + "]" * 40 + "}"], "is nested more than 32 levels deep"),
    ("std-underflows-float32", lambda t: ["paddle.vision.models:resnet18", "--img-size", "32", "--std", "1e-300,1,1"],
     "map pixel values to 5.15e+299, beyond the ±10000"),
    ("mean-overflows-float32", lambda t: ["paddle.vision.models:resnet18", "--img-size", "32", "--mean", "1e39,0,0"],
     "map pixel values to 4.37e+39"),
    ("labels-twice", lambda t: [odd_net(t) + ":build", "--img-size", "16", "--labels",
                                str(weights_file(t, "".join(f"c{i % 9}\n" for i in range(10)).encode(), "labels.txt"))],
     "names 'c0' twice (non-blank lines 1 and 10): give each class its own name"),
    ("out-empty", lambda t: ["alexnet_bn", "--out", ""], "--out is empty"),
    ("import-dir-without-model", lambda t: [str(user_files(t))], "holds no Paddle inference model"),
    ("import-missing-path", lambda t: [str(t / "no" / "such")], "is not a directory"),
    ("import-params-without-program", lambda t: [str(_with(user_files(t), "model.pdiparams", b"\0" * 64))],
     "holds no Paddle inference model"),
    ("import-without-size", lambda t: [str(_with(_with(user_files(t), "model.json", b"{}"), "model.pdiparams", b""))],
     "has no inference.yml saying the input size: give --img-size"),
    ("import-bad-deploy-config", lambda t: [str(_with(_with(_with(user_files(t), "model.json", b"{}"),
                                                            "model.pdiparams", b""), "inference.yml", b"a: [1"))],
     "is not a PaddleClas/PaddleX deploy config"),
    ("import-preprocess-a-list", lambda t: [str(_import_with_yml(t, b"PreProcess: [1, 2]\n"))],
     "no PreProcess.transform_ops list of one-key operators"),
    ("import-preprocess-a-string", lambda t: [str(_import_with_yml(t, b"PreProcess: resize and crop\n"))],
     "no PreProcess.transform_ops list of one-key operators"),
    ("import-size-4096", lambda t: [str(_import_with_yml(t, b"PreProcess:\n  transform_ops:\n"
                                                            b"  - ResizeImage: {size: 4096}\n"))],
     "the crop or resize size 4096 is not a side or [width, height] of integers from 1 to 1024"),
    ("import-yaml-alias-bomb", lambda t: [str(_import_with_yml(t, _ALIAS_BOMB))],
     "more than 100,000 values once its aliases are expanded"),
    ("import-program-garbage", lambda t: [str(_with(_with(user_files(t), "model.json", b"{not a program"),
                                                    "model.pdiparams", b"")), "--img-size", "32"],
     "Paddle Inference cannot run the imported program"),
    ("import-with-labels", lambda t: [str(_with(_with(user_files(t), "model.json", b"{}"), "model.pdiparams", b"")),
                                      "--img-size", "32", "--labels", str(weights_file(t, b"a\n", "labels.txt"))],
     "--labels does not apply to an imported"),
    ("import-with-fuse", lambda t: [str(_with(_with(user_files(t), "model.json", b"{}"), "model.pdiparams", b"")),
                                    "--img-size", "32", "--fuse"], "--fuse does not apply to an imported"),
]


def _with(folder: Path, name: str, blob: bytes) -> Path:
    (folder / name).write_bytes(blob)
    return folder


def _import_with_yml(tmp: Path, config: bytes) -> Path:
    """A directory to import whose inference.yml is `config` (the program is never reached)."""
    return _with(_with(_with(user_files(tmp), "model.json", b"{}"), "model.pdiparams", b""), "inference.yml", config)


# 9 levels of 9 aliases each: 9**9 (387 million) strings from 600 bytes ("billion laughs")
_ALIAS_BOMB = ("a0: &a0 [" + ", ".join(["lol"] * 9) + "]\n" + "".join(
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 10))).encode()


EXPORT = [
    ("unknown-model", lambda t: ["vanillanet5"], "unknown model 'vanillanet5': did you mean vanillanet_5"),
    ("size-not-multiple", lambda t: ["vanillanet_5", "--img-size", "100"], "this architecture takes multiples of 32"),
    ("size-zero", lambda t: ["alexnet_bn", "--img-size", "0"], "--img-size must be between 1 and 1024, not 0"),
    ("size-negative", lambda t: ["alexnet_bn", "--img-size", "-32"], "--img-size -32: -32 is not a size"),
    ("size-huge", lambda t: ["alexnet_bn", "--img-size", "100000"], "--img-size must be between 1 and 1024"),
    ("size-not-int", lambda t: ["alexnet_bn", "--img-size", "abc"], "--img-size abc: abc is not a size"),
    ("moganet-size", lambda t: ["moganet_xtiny", "--img-size", "33"], "input size 33 px is not supported"),
    ("classes-zero", lambda t: ["alexnet_bn", "--num-classes", "0"], "--num-classes must be between 1 and 100000"),
    ("classes-billion", lambda t: ["alexnet_bn", "--num-classes", "1000000000"], "--num-classes must be between 1"),
    ("static-batch-zero", lambda t: ["alexnet_bn", "--static-batch", "0"], "--static-batch must be between 1"),
    ("static-batch-huge", lambda t: ["alexnet_bn", "--static-batch", "5000"], "--static-batch must be between 1"),
    ("opset-22", lambda t: ["alexnet_bn", "--onnx", "--opset", "22"], "--opset 22 is outside what paddle2onnx converts"),
    ("opset-6", lambda t: ["alexnet_bn", "--onnx", "--opset", "6"], "--opset 6 is outside"),
    ("fp16-without-onnx", lambda t: ["alexnet_bn", "--fp16"], "--fp16 makes an fp16 variant of the ONNX model: add --onnx"),
    ("int8-without-onnx", lambda t: ["alexnet_bn", "--int8"], "--int8 makes an int8 variant of the ONNX model: add --onnx"),
    ("calib-data-without-int8", lambda t: ["alexnet_bn", "--onnx", "--calib-data", str(tiny_cifar(t))],
     "--calib-data is what --int8 calibrates on: add --int8"),
    ("calib-data-missing", lambda t: [*_int8(t / "none.tar.gz")], "none.tar.gz does not exist: give a folder of images or a CIFAR-format tarball"),
    ("calib-data-text-file", lambda t: [*_int8(weights_file(t, b"some text", "calib.txt"))],
     "calib.txt is not a tar archive"),
    ("calib-data-empty-folder", lambda t: [*_int8(images(t, {}))], "--calib-data: no images"),
    ("calib-data-not-images", lambda t: [*_int8(images(t, {"a.txt": b"text"}))], "--calib-data: no images"),
    ("calib-data-broken-image", lambda t: [*_int8(images(t, {"a.jpg": jpeg(), "b.png": b"not a png"}))],
     "photos/b.png is not a readable image"),
    ("calib-data-symlink-member", lambda t: [*_int8(tar_with_symlink(t))], "data_batch_1 is not a regular file"),
    ("calib-data-declares-gigabytes", lambda t: [*_int8(_declaring_gigabytes(t))],
     "bomb.tar: its members declare 4,29"),
    ("out-proc", lambda t: ["alexnet_bn", "--out", "/proc/cnnexport-test"], "is not a writable directory"),
    ("out-dot", lambda t: _in(user_files(t), ["alexnet_bn", "--out", "."]), "holds files and is not a cnnexport artifact"),
    ("out-user-folder", lambda t: ["alexnet_bn", "--out", str(user_files(t))], "holds files and is not a cnnexport artifact"),
    ("out-artifacts-root", lambda t: _in(fake_artifact(t, "artifacts/alexnet_bn"), ["alexnet_bn", "--out", "artifacts"]),
     "holds files and is not a cnnexport"),
    ("out-artifact-with-user-file", lambda t: ["alexnet_bn", "--out", str(_with_user_file(fake_artifact(t)))],
     "also holds files cnnexport did not write (notes.txt)"),
    ("out-foreign-manifest", lambda t: ["alexnet_bn", "--out", str(raw_manifest(t, '{"format": "other"}'))],
     "is not a cnnexport manifest"),
    ("out-is-a-file", lambda t: ["alexnet_bn", "--out", str(weights_file(t, b"x", "file.txt"))], "is a file"),
    ("out-is-a-symlink", lambda t: ["alexnet_bn", "--out", str(_symlink_to(t, user_files(t)))], "is a symbolic link"),
    ("out-under-a-file", lambda t: ["alexnet_bn", "--out", str(weights_file(t, b"x", "f") / "sub")],
     "is not a writable directory"),
    ("weights-missing", lambda t: ["alexnet_bn", "--weights", "/nonexistent.pdparams"], "does not exist"),
    ("weights-directory", lambda t: ["alexnet_bn", "--weights", str(user_files(t))], "mine' is a directory"),
    ("weights-garbage", lambda t: ["alexnet_bn", "--weights", str(weights_file(t, b"\x80\x04garbage"))],
     "is not a readable .pdparams file"),
    ("weights-empty", lambda t: ["alexnet_bn", "--weights", str(weights_file(t, b""))], "is not a readable .pdparams file"),
    ("weights-not-a-dict", lambda t: ["alexnet_bn", "--weights", str(weights_file(t, b"\x80\x04K\x01."))],
     "not a state dict"),
    ("weights-safetensors-garbage", lambda t: ["alexnet_bn", "--weights",
                                               str(weights_file(t, b"\xff" * 20, "w.safetensors"))],
     "is not a readable .safetensors file"),
    ("weights-other-model", lambda t: ["alexnet_dy", "--img-size", "64", "--weights", str(alexnet_bn_weights(t))],
     "missing keys: features.8.routing"),
    ("weights-other-size", lambda t: ["alexnet_bn", "--img-size", "96", "--weights", str(alexnet_bn_weights(t))],
     "shape mismatches"),
    ("all-with-weights", lambda t: ["--all", "--weights", "w.pdparams"], "apply to one model"),
    ("no-model", lambda t: ["--fuse"], "name one MODEL, or use --all"),
    ("all-unknown-name", lambda t: ["--all", "alexnet_bn,nope"], "unknown model 'nope'"),
    ("unknown-option", lambda t: ["alexnet_bn", "--bogus"], "No such option '--bogus'"),
]


def _int8(calib_data: Path) -> list[str]:
    return ["alexnet_bn", "--onnx", "--int8", "--calib-data", str(calib_data)]


def _in(prepared, args: list[str]) -> list[str]:
    """`args`, once `prepared` (a call made for what it leaves on disk) has run."""
    return args


def _with_user_file(artifact: Path) -> Path:
    (artifact / "notes.txt").write_text("mine")
    return artifact


def _symlink_to(tmp: Path, folder: Path) -> Path:
    link = tmp / "link"
    link.symlink_to(folder, target_is_directory=True)
    return link


def _verify(*args):
    return lambda t: ["verify", str(fake_artifact(t)), *args]


VERIFY = [
    ("verify-missing-dir", lambda t: ["verify", str(t / "missing")], "is not a directory"),
    ("verify-plain-dir", lambda t: ["verify", str(user_files(t))], "is not a finished artifact (no manifest.json)"),
    ("verify-nothing-exported", lambda t: ["verify"], "no finished artifacts under artifacts/"),
    ("manifest-not-json", lambda t: ["verify", str(raw_manifest(t, "{not json"))], "is not valid JSON"),
    ("manifest-a-list", lambda t: ["verify", str(raw_manifest(t, "[]"))], "it is not a JSON object"),
    ("manifest-binary", lambda t: ["verify", str(raw_manifest(t, "\x00\x01"))], "is not valid JSON"),
    ("manifest-other-format", lambda t: ["verify", str(raw_manifest(t, '{"format": "x"}'))], "format 'x'"),
    ("manifest-no-input", lambda t: ["verify", str(fake_artifact(t, input=None))], "`input` must be an object"),
    ("manifest-file-without-size", lambda t: ["verify", str(fake_artifact(t, files={"model.onnx": {"sha256": "0" * 64}}))],
     "file entry 'model.onnx' needs an integer `size`"),
    ("manifest-bad-shape", lambda t: ["verify", str(fake_artifact(t, input__shape=[None, 3, 0, 0]))],
     "`input.shape` must be"),
    ("manifest-mean-strings", lambda t: ["verify", str(fake_artifact(t, input__mean=["a", "b", "c"]))],
     "`input.mean` must be three numbers"),
    ("manifest-zero-std", lambda t: ["verify", str(fake_artifact(t, input__std=[0, 1, 1]))], "must be positive"),
    ("manifest-fused-string", lambda t: ["verify", str(fake_artifact(t, model__fused="yes"))], "`model.fused` a boolean"),
    ("manifest-bad-weights-hash", lambda t: ["verify", str(fake_artifact(t, weights={"path": "/w", "sha256": "abc"}))],
     "`weights.sha256`"),
    ("images-empty", lambda t: [*_verify("--images", str(images(t, {})))(t)], "no images"),
    ("images-not-images", lambda t: [*_verify("--images", str(images(t, {"a.txt": b"text"})))(t)], "no images"),
    ("images-text-as-jpg", lambda t: [*_verify("--images", str(images(t, {"a.jpg": b"not a jpeg"})))(t)],
     "a.jpg is not a readable image"),
    ("images-truncated-jpeg", lambda t: [*_verify("--images", str(images(t, {"a.jpg": jpeg()[:300]})))(t)],
     "a.jpg is not a readable image"),
    ("images-bomb", lambda t: [*_verify("--images", str(images(t, {"bomb.png": png_declaring(30000, 30000)})))(t)],
     "bomb.png"),
    ("images-large", lambda t: [*_verify("--images", str(images(t, {"big.png": png_declaring(8000, 8000)})))(t)],
     "more than the 40,000,000 accepted"),
    ("images-directory-named-jpg", lambda t: [*_verify("--images", str(_dir_named_jpg(images(t, {}))))(t)],
     "x.jpg is not a file"),
    ("images-float-tiff", lambda t: [*_verify("--images", str(images(t, {"f.tif": float_tiff()})))(t)],
     "floating-point image"),
    ("images-is-a-file", lambda t: ["verify", "--images", str(weights_file(t, b"x", "img.png"))], "is a file"),
    ("eval-data-missing", _verify("--eval-data", "none.tar.gz"), "--eval-data none.tar.gz is not a file"),
    ("eval-data-not-tar", lambda t: [*_verify("--eval-data", str(weights_file(t, b"text", "e.tar.gz")))(t)],
     "e.tar.gz is not a tar archive"),
    ("eval-data-other-classes", lambda t: [*_verify("--eval-data", str(_three_class_cifar(t)))(t)],
     "has 3 classes, alexnet_bn has 10"),
    ("eval-data-other-classes-callable", lambda t: [
        "verify", str(fake_artifact(t, model__name="paddle.vision.models:squeezenet1_1", model__source="callable",
                                    model__family="external", model__kwargs={})),
        "--eval-data", str(_three_class_cifar(t))], "has 3 classes, paddle.vision.models:squeezenet1_1 has 10"),
    ("rtol-negative", _verify("--rtol", "-1"), "--rtol must be a finite number above 0, not -1.0"),
    ("rtol-nan", _verify("--rtol", "nan"), "--rtol must be a finite number above 0, not nan"),
    ("atol-inf", _verify("--atol", "inf"), "--atol must be a finite number above 0, not inf"),
    ("threads-negative", _verify("--threads", "-1"), "--threads must be between 0 (all cores) and 1024, not -1"),
    ("batch-zero", _verify("--batch-sizes", "0"), "batch sizes must be 1 or more"),
    ("batch-not-int", _verify("--batch-sizes", "1,x"), "is not a comma-separated list of integers"),
    ("batch-huge", _verify("--batch-sizes", "1,100000"), "--batch-sizes must be between 1 and 512"),
    ("device-unknown", _verify("--device", "tpu"), "'tpu' is not one of"),
]


def _dir_named_jpg(folder: Path) -> Path:
    (folder / "x.jpg").mkdir()
    return folder


TRAIN = [
    ("train-unknown-model", lambda t: ["train", "vanillanet5", "--data", str(tiny_cifar(t))], "unknown model"),
    ("train-data-missing", lambda t: ["train", "alexnet_bn", "--data", str(t / "none.tar.gz")], "does not exist"),
    ("train-data-not-tar", lambda t: ["train", "alexnet_bn", "--data", str(weights_file(t, b"text", "d.tar.gz"))],
     "is not a tar archive"),
    ("train-symlink-member", lambda t: ["train", "alexnet_bn", "--data", str(tar_with_symlink(t))],
     "data_batch_1 is not a regular file"),
    ("train-lr-nan", lambda t: ["train", "alexnet_bn", "--data", str(tiny_cifar(t)), "--lr", "nan"], "--lr must be a finite number above 0, got nan"),
    ("train-lr-negative", lambda t: ["train", "alexnet_bn", "--data", str(tiny_cifar(t)), "--lr", "-1"], "--lr must be a finite number above 0"),
    ("train-epochs-zero", lambda t: ["train", "alexnet_bn", "--data", str(tiny_cifar(t)), "--epochs", "0"], "--epochs must be an integer from 1"),
    ("train-batch-zero", lambda t: ["train", "alexnet_bn", "--data", str(tiny_cifar(t)), "--batch-size", "0"],
     "--batch-size must be an integer from 1"),
    ("train-size-zero", lambda t: ["train", "alexnet_bn", "--data", str(tiny_cifar(t)), "--img-size", "0"], "--img-size must be an integer from 1 to 1024"),
    ("train-seed-negative", lambda t: ["train", "alexnet_bn", "--data", str(tiny_cifar(t)), "--seed", "-1"], "--seed must be an integer from 0"),
    ("train-out-proc", lambda t: ["train", "alexnet_bn", "--data", str(tiny_cifar(t)), "--out", "/proc/x"], "/proc is not a writable directory"),
    ("train-out-user-folder", lambda t: ["train", "alexnet_bn", "--data", str(tiny_cifar(t)), "--out",
                                         str(user_files(t))], "holds other files"),
    ("train-resume-missing", lambda t: ["train", "alexnet_bn", "--data", str(tiny_cifar(t)), "--resume",
                                        str(t / "none")], "no checkpoint there"),
]

LIST = [
    ("list-no-match", lambda t: ["list", "nothing-like-this"], "no model matches 'nothing-like-this'"),
    ("list-unknown-option", lambda t: ["list", "--bogus"], "No such option '--bogus'"),
]

CASES = EXPORT + BYO + VERIFY + TRAIN + LIST


def test_the_table_is_large_enough():
    assert len(CASES) >= 60 and len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("make_args, message", [(a, m) for _, a, m in CASES], ids=[n for n, _, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, capsys, monkeypatch, make_args, message):
    work, tmpdir = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    tmpdir.mkdir()
    monkeypatch.chdir(work)
    args = make_args(work)
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    before = _snapshot(tmp_path)

    code, out, err = run_cli(capsys, *args)
    assert code == 2, out + err
    assert err.count("\n") == 1 and err.startswith("cnnexport: error: "), err
    assert message in err, err
    assert "Traceback" not in out + err
    assert _snapshot(tmp_path) == before
