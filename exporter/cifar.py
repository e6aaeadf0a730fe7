"""CIFAR-10 in its "python version" tarball (`cifar-10-python.tar.gz`), as the seed notebooks train on.

The archive holds `cifar-10-batches-py/data_batch_1` .. `data_batch_5`, `test_batch` and
`batches.meta`, each a Python-2 pickle of a dict with bytes keys: a batch has `b"data"` (uint8
[N, 3072], each row one image's R, G and B planes of 32x32, row-major) and `b"labels"` (a list of
ints); the meta file has `b"label_names"`. Paddle's `Cifar10` dataset downloads this same file to
`~/.cache/paddle/dataset/cifar/`.

A pickle can name any callable to run while it loads, so the members are read with
`cnnexport.models.weights.restricted_load`, which calls nothing the file names and gives back only plain
containers and bool, integer and float arrays. Only regular members of a sane size are read.

    data = read_cifar_tarball("cifar-10-python.tar.gz")       # images uint8 [N, 32, 32, 3]
    write_cifar_tarball("mine.tar.gz", train_x, train_y, test_x, test_y, label_names)
"""
from __future__ import annotations

import io
import numbers
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np
import paddle
from PIL import Image

from .models.weights import WeightsError, restricted_load

from .errors import BadInput

SIDE = 32
ROW = 3 * SIDE * SIDE
FOLDER = "cifar-10-batches-py"
TRAIN_MEMBERS = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_MEMBER = "test_batch"
META_MEMBER = "batches.meta"
# The real archive's seven members add up to 186 MB (31 MB a batch): an archive whose members
# declare more is refused before any is read (a few MB of gzip can declare gigabytes).
MAX_DECODED_BYTES = 512 << 20
_EXPECTED = (f"expected {', '.join(TRAIN_MEMBERS)}, {TEST_MEMBER} and {META_MEMBER} under {FOLDER}/, "
             "as in the CIFAR-10 python version (cifar-10-python.tar.gz)")


@dataclass(frozen=True)
class CifarData:
    """A CIFAR-format data set: images uint8 [N, 32, 32, 3] (HWC, RGB), labels int64 [N]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    label_names: tuple[str, ...]


def read_cifar_tarball(path: str | Path) -> CifarData:
    """Read and check the whole archive; any problem is one `BadInput` line saying what and what to do."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"data file {path} does not exist: pass the CIFAR-10 python-version tarball "
                       "(cifar-10-python.tar.gz) with --data")
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {name: _member(tar, path, name) for name in (META_MEMBER, *TRAIN_MEMBERS, TEST_MEMBER)}
            declared = sum(member.size for member in members.values())
            if declared > MAX_DECODED_BYTES:
                raise BadInput(f"{path}: its members declare {declared:,} bytes, more than any CIFAR-format archive "
                               f"({MAX_DECODED_BYTES:,} at most; CIFAR-10's add up to 186 MB): {_EXPECTED}")
            meta = _load_member(tar, path, members[META_MEMBER])
            train = [_images_and_labels(_load_member(tar, path, members[m]), path, m) for m in TRAIN_MEMBERS]
            test_images, test_labels = _images_and_labels(_load_member(tar, path, members[TEST_MEMBER]), path,
                                                          TEST_MEMBER)
    except tarfile.ReadError:
        raise BadInput(f"{path} is not a tar archive: {_EXPECTED}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        reason = " ".join(str(err).split())  # one line, whatever the archive library said
        raise BadInput(f"{path} is damaged or unreadable ({reason}): {_EXPECTED}") from None
    label_names = _label_names(meta, path)
    data = CifarData(np.concatenate([images for images, _ in train]), np.concatenate([labels for _, labels in train]),
                     test_images, test_labels, label_names)
    for split, labels in (("training", data.train_labels), ("test", data.test_labels)):
        if labels.size and not 0 <= labels.min() <= labels.max() < len(label_names):
            raise BadInput(f"{path}: {split} labels run from {labels.min()} to {labels.max()}, but "
                           f"{META_MEMBER} names {len(label_names)} classes")
    if not len(data.train_labels) or not len(data.test_labels):
        raise BadInput(f"{path}: the training or the test split is empty")
    return data


def _member(tar: tarfile.TarFile, path: Path, name: str) -> tarfile.TarInfo:
    try:
        member = tar.getmember(f"{FOLDER}/{name}")
    except KeyError:
        raise BadInput(f"{path} has no member {FOLDER}/{name}: {_EXPECTED}") from None
    # A link would be followed to another member (or fail), a device would be opened: regular files only.
    if not member.isreg():
        raise BadInput(f"{path}: {FOLDER}/{name} is not a regular file: {_EXPECTED}")
    return member


def _load_member(tar: tarfile.TarFile, path: Path, member: tarfile.TarInfo):
    try:
        return restricted_load(tar.extractfile(member), encoding="bytes")
    except WeightsError as err:
        raise BadInput(f"{path}: {member.name}: {err}") from None


def _images_and_labels(batch, path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    where = f"{path}: {FOLDER}/{name}"
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise BadInput(f"{where} is not a dict with b'data' and b'labels': {_EXPECTED}")
    data = batch[b"data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == ROW):
        got = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise BadInput(f"{where}: b'data' must be uint8 [N, {ROW}] (32x32 RGB planes), got {got}")
    labels = _labels(batch[b"labels"], where)
    if labels.shape != (len(data),):
        raise BadInput(f"{where}: {len(data)} images but b'labels' has shape {list(labels.shape)}")
    return data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1), labels


def _labels(labels, where: str) -> np.ndarray:
    """A list of ints or an integer array, as int64: bools and floats are refused, not cast."""
    if isinstance(labels, np.ndarray):
        problem = "" if labels.dtype.kind in "iu" else f"a {labels.dtype} array"
    elif isinstance(labels, list):
        wrong = [v for v in labels if isinstance(v, bool) or not isinstance(v, numbers.Integral)]
        problem = f"a list holding a {type(wrong[0]).__name__}" if wrong else ""
    else:
        problem = f"a {type(labels).__name__}"
    if problem:
        raise BadInput(f"{where}: b'labels' must be a list of integers, got {problem}")
    try:
        return np.asarray(labels, dtype=np.int64)
    except OverflowError:
        raise BadInput(f"{where}: b'labels' holds integers beyond int64") from None


def _label_names(meta, path: Path) -> tuple[str, ...]:
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise BadInput(f"{path}: {FOLDER}/{META_MEMBER} must hold b'label_names', a list of class names")
    return tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)


def write_cifar_tarball(path: str | Path, train_images: np.ndarray, train_labels: Sequence[int],
                        test_images: np.ndarray, test_labels: Sequence[int],
                        label_names: Sequence[str] | None = None) -> Path:
    """Write a data set as a CIFAR-10 python-version tarball that `read_cifar_tarball` (and Paddle's
    `Cifar10(data_file=...)`) read.

    Images are uint8 [N, 32, 32, 3] (HWC, RGB, as PIL and most image libraries give them). The
    training images are split over the five data batches in order. `label_names` defaults to
    "0", "1", ... up to the largest label.
    """
    train_images = _checked_images(train_images, "train_images")
    test_images = _checked_images(test_images, "test_images")
    train_labels, test_labels = np.asarray(train_labels, np.int64), np.asarray(test_labels, np.int64)
    for images, labels, what in ((train_images, train_labels, "train"), (test_images, test_labels, "test")):
        if labels.shape != (len(images),):
            raise ValueError(f"{what}_labels: expected {len(images)} labels, got shape {list(labels.shape)}")
    if label_names is None:
        label_names = [str(i) for i in range(int(max(train_labels.max(), test_labels.max())) + 1)]
    batches = {
        f"data_batch_{i + 1}": _batch(f"training batch {i + 1} of 5", images, labels)
        for i, (images, labels) in enumerate(zip(np.array_split(train_images, 5), np.array_split(train_labels, 5)))
    }
    batches[TEST_MEMBER] = _batch("testing batch 1 of 1", test_images, test_labels)
    batches[META_MEMBER] = {b"label_names": [n.encode() for n in label_names],
                            b"num_cases_per_batch": len(batches["data_batch_1"][b"labels"]), b"num_vis": ROW}
    path = Path(path)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in batches.items():
            buffer = io.BytesIO()
            _Python2Pickler(buffer, protocol=2).dump(content)
            blob = buffer.getvalue()
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


class _Python2Pickler(pickle._Pickler):
    """Protocol 2 with bytes and (ASCII) text written as Python 2 `str`, as cPickle wrote the original archive.

    Python 3's protocol 2 spells bytes as a call to `_codecs.encode`; a Python 2 string needs no
    global at all, and `pickle.load(..., encoding="bytes")` (Paddle's reader, and ours) reads it
    back as bytes. Text appears only inside numpy's pickles (type codes such as "u1" and byte
    orders): as Python 2 strings they are bytes to the reader too, as in the original archive.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str
    dispatch[str] = lambda self, text: self.save_python2_str(text.encode("ascii"))


def _checked_images(images: np.ndarray, what: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (SIDE, SIDE, 3):
        raise ValueError(f"{what}: expected uint8 [N, 32, 32, 3], got {images.dtype} {list(images.shape)}")
    return images


def _batch(title: str, images: np.ndarray, labels: np.ndarray) -> dict:
    return {b"batch_label": title.encode(), b"labels": [int(v) for v in labels],
            b"data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), ROW)),
            b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(images))]}


class CifarDataset(paddle.io.Dataset):
    """(image float32 [3, S, S] normalised, int64 label) pairs.

    `transform` maps a PIL image to a PIL image (a paddle.vision.transforms pipeline, PIL
    backend); then the image is scaled to [0, 1] and normalised per channel, as the notebooks'
    ToTensor + Normalize do.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable,
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.images, self.labels, self.transform = images, labels, transform
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = np.asarray(self.transform(Image.fromarray(self.images[index])), np.float32)
        chw = image.transpose(2, 0, 1) / 255.0
        return (chw - self.mean) / self.std, self.labels[index]
