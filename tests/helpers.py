"""Shared test helpers: non-trivial weights, small sizes, running the CLI in-process."""
from __future__ import annotations

import numpy as np

from cnnexport import models
from cnnexport.models.fusion import perturb  # noqa: F401  (the tests' name for it)

# What the tests take of each family is registry data, declared in the family's module
# (`register_family`, `register_model`), so a new family needs no line here.
# A small input each family takes (tests are small; benchmarks are big).
SMALL_SIZE = {family: models.family_info(family).small_input_size for family in models.list_families()}
# One small variant per family, for the tests that go through every family.
FAMILY_VARIANTS = {family: models.family_info(family).representative for family in models.list_families()}
# The notebooks' comparison models.
BASELINES = [name for name in models.list_models() if models.model_info(name).baseline]


def small_size(name: str) -> int:
    return models.model_info(name).small_input_size


def rel_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def random_images(n: int, size: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, channels, size, size), dtype=np.float32)


def photo_batch(size: int, mean, std) -> np.ndarray:
    from cnnexport.images import preprocess, sample_photos
    return preprocess(sample_photos(), {"shape": [None, 3, size, size], "mean": mean, "std": std, "scale": 1 / 255})


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    from cnnexport.cli import main
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


REPO = __import__("pathlib").Path(__file__).resolve().parent.parent


def subprocess_env(tmpdir) -> dict:
    """Environment for a cnnexport subprocess: this checkout importable, unbuffered output, and a
    $TMPDIR of the test's own, so that anything left there is seen."""
    import os
    tmpdir.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", TMPDIR=str(tmpdir))


def hidden_entries(directory) -> list[str]:
    """Staging directories, moved-aside artifacts, lock and temporary files: what a clean run leaves none of."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def without_paddle(tmp_path) -> dict:
    """An environment where `import paddle` and `import paddle2onnx` fail, in every child process too."""
    import os
    for name in ("paddle", "paddle2onnx"):
        (tmp_path / "blocked" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "blocked" / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')")
    return dict(os.environ, PYTHONPATH=f"{tmp_path / 'blocked'}{os.pathsep}{REPO}")
