"""Real photographs for parity checks, preprocessed as an artifact's manifest says. Paddle-free.

The photographs ship with scikit-image (its `data` module), so parity never depends on a
download; `--images DIR` adds the user's own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# Natural photographs of scikit-image's data module (the grey ones are repeated into RGB).
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "camera", "coins")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, :3].astype(np.uint8)


def sample_photos(names=SAMPLE_PHOTOS) -> dict[str, np.ndarray]:
    from skimage import data
    return {name: _rgb(getattr(data, name)()) for name in names}


def folder_photos(directory: str | Path) -> dict[str, np.ndarray]:
    from PIL import Image
    directory = Path(directory)
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {directory}")
    return {p.name: _rgb(np.asarray(Image.open(p).convert("RGB"))) for p in paths}


def preprocess(images: dict[str, np.ndarray], input_spec: dict) -> np.ndarray:
    """HWC uint8 RGB -> [N, 3, S, S] float32: resize (bilinear), scale to [0, 1], normalise per channel."""
    from PIL import Image

    size = input_spec["shape"][-1]
    mean = np.asarray(input_spec["mean"], np.float32)[:, None, None]
    std = np.asarray(input_spec["std"], np.float32)[:, None, None]
    batch = []
    for image in images.values():
        resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), np.float32)
        batch.append((resized.transpose(2, 0, 1) * np.float32(input_spec["scale"]) - mean) / std)
    return np.stack(batch).astype(np.float32)
