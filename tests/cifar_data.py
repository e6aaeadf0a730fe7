"""Tiny data sets in the exact CIFAR-10 python-version format, for the training tests."""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from cnnexport.cifar import FOLDER, write_cifar_tarball


def random_cifar(path: Path, n_train: int = 40, n_test: int = 20, classes: int = 10, seed: int = 0) -> Path:
    """Random 32x32 images whose labels are learnable: each class has its own mean colour."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = np.arange(n) % classes
        colours = rng.integers(0, 256, (classes, 3))
        noise = rng.normal(0, 40, (n, 32, 32, 3))
        images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        return images, labels

    return write_cifar_tarball(path, *split(n_train), *split(n_test), [f"class {i}" for i in range(classes)])


def digits_cifar(path: Path, n_train: int, n_test: int) -> Path:
    """scikit-learn's 8x8 digits upsampled to 32 px (nearest), grey to RGB: 10 easy classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = (digits.images * (255 / 16)).round().astype(np.uint8)
    images = np.repeat(np.repeat(grey, 4, axis=1), 4, axis=2)[..., None].repeat(3, axis=3)
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], digits.target[order]
    train, test = slice(n_test, n_test + n_train), slice(0, n_test)
    return write_cifar_tarball(path, images[train], labels[train], images[test], labels[test],
                               [str(d) for d in range(10)])


def tarball_with_members(path: Path, members: dict[str, bytes | tarfile.TarInfo]) -> Path:
    """A gzipped tar holding `members` (name under cifar-10-batches-py/ -> raw bytes, or the TarInfo of
    a member without data: a link, a directory, a device) and nothing else."""
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            if isinstance(blob, tarfile.TarInfo):
                blob.name = f"{FOLDER}/{name}"
                tar.addfile(blob)
                continue
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def tarball_declaring(path: Path, members: dict[str, bytes], huge: str, size: int) -> Path:
    """An uncompressed tar of `members` in which `huge` comes last and declares `size` bytes of zeros,
    written as a hole in a sparse file: what a few MB of gzip declaring gigabytes is to a reader, at no cost."""
    def header(name: str, length: int) -> bytes:
        info = tarfile.TarInfo(f"{FOLDER}/{name}")
        info.size = length
        return info.tobuf(tarfile.GNU_FORMAT)

    with open(path, "wb") as f:
        for name, blob in members.items():
            if name != huge:
                f.write(header(name, len(blob)) + blob + b"\0" * (-len(blob) % tarfile.BLOCKSIZE))
        f.write(header(huge, size))
        f.seek(size + -size % tarfile.BLOCKSIZE, 1)
        f.write(b"\0" * 2 * tarfile.BLOCKSIZE)  # the end-of-archive blocks
    return path


def members_of(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}


class _RunsCommand:
    """Pickles as a call to os.system: what a crafted batch file does to a plain pickle.load."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return os.system, (self.command,)


def malicious_batch(command: str) -> bytes:
    return pickle.dumps({b"data": _RunsCommand(command), b"labels": [0]}, protocol=4)


def batch_bytes(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch member holding exactly `data` (any dtype or shape) and `labels`."""
    return pickle.dumps({b"data": data, b"labels": labels}, protocol=4)
