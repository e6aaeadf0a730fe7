"""Shared test helpers: non-trivial weights, small sizes, running the CLI in-process."""
from __future__ import annotations

import numpy as np

import models
from models.fusion import randomize_batchnorms

# The smallest input each family takes (tests are small; benchmarks are big).
SMALL_SIZE = {"vanillanet": 32, "moganet": 32, "dynamic_conv": 64, "softpool": 64, "orthonet": 8}
# One small variant per family, for the tests that go through every family.
FAMILY_VARIANTS = {"vanillanet": "vanillanet_5", "moganet": "moganet_xtiny", "dynamic_conv": "alexnet_dy",
                   "softpool": "alexnet_softpool", "orthonet": "orthonet18"}
BASELINES = ["alexnet_bn", "alexnet", "resnet18_cifar"]


def small_size(name: str) -> int:
    if name == "vanillanet_13_x1_5_ada_pool":
        return 160
    return SMALL_SIZE[models.model_info(name).family]


def perturb(model, seed: int = 0):
    """Make every rewrite matter: random BN statistics and affines, and layer scales of a trained
    size (MogaNet starts them at 1e-5, which would hide a wrong fold)."""
    randomize_batchnorms(model, seed)
    rng = np.random.default_rng(seed + 1)
    for name, param in model.named_parameters():
        if "layer_scales" in name or name.endswith("sigma.scale"):
            param.set_value(rng.uniform(0.01, 0.1, param.shape).astype("float32"))
    return model


def rel_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def random_images(n: int, size: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, channels, size, size), dtype=np.float32)


def photo_batch(size: int, mean, std) -> np.ndarray:
    from exporter.images import preprocess, sample_photos
    return preprocess(sample_photos(), {"shape": [None, 3, size, size], "mean": mean, "std": std, "scale": 1 / 255})


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    from exporter.cli import main
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
