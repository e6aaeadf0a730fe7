"""Inputs for parity checks and timing: real photographs, preprocessed as an artifact's manifest
says, and seeded random images. Paddle-free.

The photographs ship with scikit-image (its `data` module), so parity never depends on a
download; `--images DIR` adds the user's own. A user's image is decoded completely before use;
one that cannot be (truncated, not an image, too large to be a photograph) is bad input.
8-bit images are used as they are; 16-bit ones (PNG, TIFF) are scaled to 8 bits (value / 257),
never clipped; floating-point images are refused, since their range is not defined.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import BadInput

# Natural photographs of scikit-image's data module (the grey ones are repeated into RGB).
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "camera", "coins")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MAX_PIXELS = 40_000_000  # a 40-megapixel photograph; a decompression bomb declares far more
MAX_IMAGES = 256
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """(height, width) of a size given as one side or as a pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def size_name(size: int | tuple[int, int]) -> str:
    """How a size is written on the command line and in reports: `64` or `96x64` (height x width)."""
    height, width = hw(size)
    return str(height) if height == width else f"{height}x{width}"


def random_batch(n: int, size: int | tuple[int, int], seed: int | np.random.Generator) -> np.ndarray:
    """Standard-normal images [n, 3, H, W] float32 from `seed` (or a generator, to draw on)."""
    return np.random.default_rng(seed).standard_normal((n, 3, *hw(size)), dtype=np.float32)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3].astype(np.uint8)


def sample_photos(names=SAMPLE_PHOTOS) -> dict[str, np.ndarray]:
    from skimage import data
    return {name: _rgb(getattr(data, name)()) for name in names}


def save_photos(directory: Path) -> None:
    """The photographs as PNG files (lossless: whoever decodes them gets the very pixels verify
    uses), named so that their sorted order is `sample_photos`' order: for a deploy stack's own
    predictor, which reads image files."""
    from PIL import Image

    for i, (name, image) in enumerate(sample_photos().items()):
        Image.fromarray(image).save(Path(directory) / f"{i}-{name}.png")


def _decode(path: Path, option: str) -> np.ndarray:
    """HWC uint8 RGB of one image file, fully decoded and checked."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise BadInput(f"{option}: {path} is {width}x{height} pixels, more than the {MAX_PIXELS:,} "
                               "accepted: give photographs, not a decompression bomb")
            image.load()
            if image.mode in _SIXTEEN_BIT_MODES:
                values = np.asarray(image, dtype=np.int64)
                if values.min() < 0 or values.max() > 65535:
                    raise BadInput(f"{option}: {path} holds values outside 0..65535: give 8- or 16-bit images")
                return _rgb(np.round(values / 257.0))
            if image.mode == "F":
                raise BadInput(f"{option}: {path} is a floating-point image, whose range is undefined: "
                               "give 8- or 16-bit images")
            return _rgb(np.asarray(image.convert("RGB")))


def image_files(directory: str | Path, option: str = "--images") -> list[Path]:
    """The image files of `directory` (by suffix), sorted; no folder or no images is BadInput."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BadInput(f"{option} {directory} is not a directory of images")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise BadInput(f"{option}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {directory}")
    return paths


def decode_files(paths: list[Path], option: str = "--images") -> dict[str, np.ndarray]:
    """Each file decoded (HWC uint8 RGB), by file name; anything unreadable is BadInput."""
    photos = {}
    for path in paths:
        if not path.is_file():
            raise BadInput(f"{option}: {path} is not a file")
        try:
            photos[path.name] = _decode(path, option)
        except BadInput:
            raise
        except Exception as err:  # Pillow's decoders fail in many ways on damaged or foreign files
            reason = " ".join(str(err).split()) or type(err).__name__
            raise BadInput(f"{option}: {path} is not a readable image ({reason}): remove or replace it") from None
    return photos


def folder_photos(directory: str | Path) -> dict[str, np.ndarray]:
    """Every image file of `directory` (by suffix), decoded; anything unreadable is BadInput."""
    paths = image_files(directory)
    if len(paths) > MAX_IMAGES:
        raise BadInput(f"--images: {len(paths)} images in {directory}, more than the {MAX_IMAGES} a parity "
                       "check uses: give a folder of a few real photographs")
    return decode_files(paths)


def preprocess(images: dict[str, np.ndarray], input_spec: dict,
               size: int | tuple[int, int] | None = None) -> np.ndarray:
    """HWC uint8 RGB -> [N, 3, H, W] float32 at `size` (by default the first size the input is checked
    at): in the input's colour order, resized (bilinear), scaled to [0, 1], normalised per channel."""
    from PIL import Image

    height, width = hw(size or input_sizes(input_spec)[0])
    mean = np.asarray(input_spec["mean"], np.float32)[:, None, None]
    std = np.asarray(input_spec["std"], np.float32)[:, None, None]
    batch = []
    for image in images.values():
        image = image[:, :, ::-1] if input_spec.get("color") == "BGR" else image  # as PaddleOCR's cv2 decoding gives it
        resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR), np.float32)
        batch.append((resized.transpose(2, 0, 1) * np.float32(input_spec["scale"]) - mean) / std)
    return np.stack(batch).astype(np.float32)


def in_batches(batch: np.ndarray, size: int | None) -> list[np.ndarray]:
    """Split into batches of a static size, the last one padded by repeating its samples."""
    if not size:
        return [batch]
    out = []
    for start in range(0, len(batch), size):
        chunk = batch[start:start + size]
        out.append(np.concatenate([chunk, chunk[np.arange(size - len(chunk)) % len(chunk)]]) if len(chunk) < size else chunk)
    return out


def input_sizes(input_spec: dict) -> list[tuple[int, int]]:
    """The (height, width) sizes an artifact is checked at: its `sizes` (a program with dynamic H and W
    is checked at several), or its fixed input size."""
    return [hw(size) for size in input_spec.get("sizes") or [input_spec["shape"][2:]]]


def sized_inputs(input_spec: dict, make) -> dict[str, np.ndarray]:
    """`make(size)`'s batches (by name) at each size the artifact is checked at; names get `@HxW` when
    there are several sizes."""
    sizes = input_sizes(input_spec)
    if len(sizes) == 1:
        return make(sizes[0])
    return {f"{name}@{height}x{width}": batch
            for height, width in sizes for name, batch in make((height, width)).items()}


def photo_inputs(images: dict[str, np.ndarray], input_spec: dict) -> dict[str, np.ndarray]:
    """The photographs as model inputs at each size: one batch `photos`, or `photos-0`, `photos-1`, ...
    of the model's static batch size."""
    static = input_spec["shape"][0]

    def at(size):
        chunks = in_batches(preprocess(images, input_spec, size), static)
        return {"photos": chunks[0]} if not static else {f"photos-{i}": chunk for i, chunk in enumerate(chunks)}

    return sized_inputs(input_spec, at)
