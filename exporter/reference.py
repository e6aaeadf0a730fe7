"""What the runtimes are compared with: the parity inputs, and the eager model's outputs on them,
rebuilt from the manifest, or, on a machine without Paddle, read from the artifact's reference
bundle (`reference.npz`, written by a verify run that had Paddle, covered by the manifest's hashes).

Importable without Paddle; the eager model needs it.
"""
from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifact import REFERENCE_FILE, ArtifactError, Manifest, atomic_write, sha256
from .compare import CPU_FP32, Tolerance, judge, output_keys
from .device import paddle_available
from .images import folder_photos, photo_inputs, random_batch, sample_photos, sized_inputs
from .precision import forward_outputs, recorded_tolerance
from .results import RowResult

MULTI_BATCH = 4
PARITY_SEED = 1


def parity_inputs(manifest: Manifest, images_dir: str | None = None) -> dict[str, np.ndarray]:
    """Seeded random images at batch 1 and at a batch of different images; real photographs; at each
    size the artifact is checked at."""
    static = manifest.static_batch
    rng = np.random.default_rng(PARITY_SEED)  # one generator: the random batches hold different images

    def random_at(size) -> dict[str, np.ndarray]:
        inputs = {"random-b1": random_batch(1, size, rng)} if static in (None, 1) else {}
        inputs[f"random-b{static or MULTI_BATCH}"] = random_batch(static or MULTI_BATCH, size, rng)
        return inputs

    photos = sample_photos()
    if images_dir:
        photos.update(folder_photos(images_dir))
    return {**sized_inputs(manifest.input, random_at), **photo_inputs(photos, manifest.input)}


def eager_run(model, inputs: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """An eager Paddle model's outputs on each input batch."""
    return dict(zip(inputs, forward_outputs(model, list(inputs.values()))))


class StaleWeights(Exception):
    """The weights file named in the manifest is gone or has changed since the export."""


def eager_outputs(manifest: Manifest, inputs: dict[str, np.ndarray], layer=None) -> tuple[dict, dict, object]:
    """The trained model's outputs (unfused, as loaded) and its fused form's, rebuilt from the manifest
    (or a copy of `layer`, the Layer object it was exported from); and the eager model in the
    artifact's form."""
    from .exporting import build_model, own_copy
    from .models.weights import state_dict_sha256
    from .rewrite import fuse

    weights = manifest.weights
    if layer is not None:
        model = own_copy(layer)
        if state_dict_sha256(model) != weights.get("state_dict_sha256"):
            raise StaleWeights(f"the Layer object given has other weights than the {manifest.name} exported "
                               "into this artifact (state dict sha256 mismatch)")
    else:
        if weights["path"]:
            path = Path(weights["path"])
            if not path.is_file():
                raise StaleWeights(f"weights file {path} named in the manifest is missing")
            if sha256(path) != weights["sha256"]:
                raise StaleWeights(f"weights file {path} has changed since the export (sha256 mismatch)")
        model = build_model(manifest.name, manifest.model["kwargs"], weights["path"])
    fused, _ = fuse(model, manifest.img_size)
    return eager_run(model, inputs), eager_run(fused, inputs), fused if manifest.fused else model


def paddle_side(root: Path, manifest: Manifest, inputs: dict, layer=None) -> tuple[dict, list[RowResult], object, str]:
    """The reference outputs where Paddle is installed, the checks made on the way, the eager model
    in the artifact's form (None for an imported program) and what the reference is: the eager
    model, or for an imported Paddle inference directory, and for a Layer object not handed back
    (`layer`), Paddle Inference on the artifact's program."""
    if manifest.imported or (manifest.from_object and layer is None):
        from .exporting import paddle_reference
        source = ("Paddle Inference (imported program)" if manifest.imported else
                  f"Paddle Inference (the artifact's program: {manifest.name} was exported from a Layer object, "
                  "so there is no eager model to rebuild; verify(artifact, model=layer) checks against it)")
        return paddle_reference(root, inputs)[0], [], None, source
    plain, folded, eager_model = eager_outputs(manifest, inputs, layer)
    fold_bar = max(CPU_FP32.rel_l2, recorded_tolerance(manifest)[0] or 0.0)  # the export's, for a sensitive model
    return plain, [judge("eager-fused/cpu", plain, folded, Tolerance(fold_bar))], eager_model, "eager (unfused)"


def read_bundle(path: Path, manifest: Manifest) -> tuple[dict, dict]:
    """The bundle's inputs and outputs, each checked: float32, finite, of one of the sizes the manifest
    checks, and the manifest's outputs for each input batch (`output:NAME`, or `output:NAME:I` for a
    model of several outputs). Anything else is ArtifactError (exit 2)."""
    def bad(what: str) -> ArtifactError:
        return ArtifactError(f"{path} is not a valid reference bundle ({what}): run `cnnexport verify` with Paddle "
                             "to write it again")

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise bad(" ".join(str(err).split())) from None
    inputs = {k.removeprefix("input:"): v for k, v in arrays.items() if k.startswith("input:")}
    declared = manifest.outputs
    keys = {name: [f"output:{key}" for key in output_keys(name, len(declared))] for name in inputs}
    if not inputs or set(arrays) != {f"input:{n}" for n in inputs} | {k for ks in keys.values() for k in ks}:
        raise bad(f"its entries must be input:NAME with {len(declared)} output entr{'y' if len(declared) == 1 else 'ies'} "
                  "output:NAME[:I] each")
    sizes = {tuple(size) for size in manifest.sizes}
    outputs = {}
    for name, batch in inputs.items():
        outputs[name] = [arrays[key] for key in keys[name]]
        if batch.dtype != np.float32 or any(out.dtype != np.float32 for out in outputs[name]):
            raise bad(f"{name} is not float32")
        if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[2:] not in sizes:
            raise bad(f"{name} has the shape {list(batch.shape)}, not [N, 3, H, W] at a size the manifest checks")
        for out, want in zip(outputs[name], declared):
            if out.ndim != len(want["shape"]) or out.shape[0] != batch.shape[0] or any(
                    d is not None and d != got for d, got in zip(want["shape"][1:], out.shape[1:])):
                raise bad(f"{name} gives an output of shape {list(out.shape)}, not the manifest's {want['shape']}")
        if not (np.isfinite(batch).all() and all(np.isfinite(out).all() for out in outputs[name])):
            raise bad(f"{name} holds NaN or Inf")
    return inputs, outputs


def write_bundle(root: Path, manifest: Manifest, inputs: dict, outputs: dict, source: str) -> None:
    """Store parity inputs and eager outputs, and cover the file with the manifest's hashes."""
    import paddle

    arrays = {f"input:{k}": v for k, v in inputs.items()}
    for name, outs in outputs.items():
        arrays.update((f"output:{key}", out) for key, out in zip(output_keys(name, len(outs)), outs))

    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: given a name, numpy would append ".npz" to it
            np.savez_compressed(f, **arrays)

    atomic_write(root / REFERENCE_FILE, save)
    manifest.reference = {"file": REFERENCE_FILE, "batches": {k: list(v.shape) for k, v in inputs.items()},
                          "source": f"{source} (paddle {paddle.__version__})",
                          "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    manifest.cover(root, REFERENCE_FILE)
    manifest.write(root)


@dataclass
class Reference:
    """The parity inputs and the reference outputs on them."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, list[np.ndarray]]  # by parity input, the model's outputs in order
    source: str
    eager_model: object = None             # the eager model in the artifact's form, when Paddle is here
    rows: tuple[RowResult, ...] = ()       # checks made on the way: eager fused, the stored bundle
    notes: tuple[str, ...] = ()            # what was repaired on the way (a stale bundle rewritten)


def stored_reference(root: Path, manifest: Manifest, why_not_eager: str = "Paddle is not installed") -> tuple[dict, dict]:
    """The reference bundle as the reference (no eager model here): listed in the manifest,
    unchanged since, and valid; otherwise ArtifactError (exit 2), saying what to do."""
    path, entry = root / REFERENCE_FILE, manifest.files.get(REFERENCE_FILE)
    if entry is None or not path.is_file():
        why = f"there is no {REFERENCE_FILE}"
    elif path.stat().st_size != entry["size"] or sha256(path) != entry["sha256"]:
        why = f"{REFERENCE_FILE} has changed since it was written"
    else:
        return read_bundle(path, manifest)
    raise ArtifactError(f"{root}: no reference to verify against ({why_not_eager}, and {why}): "
                        "run `cnnexport verify` once on a machine with Paddle")


def reference_for(root: Path, manifest: Manifest, images: str | None, problems: dict[str, str],
                  layer=None) -> Reference:
    """The eager model's outputs, or, without Paddle, the stored bundle.

    With Paddle the bundle is a cache of the eager outputs: one that is missing, stale or damaged
    (a verify killed between writing it and the manifest leaves it so) is written again, and is
    no problem of the artifact's; a good one is compared with the eager outputs. Without Paddle
    the bundle is the reference (`stored_reference`). `layer`: the Layer object an artifact
    of one was exported from (`Manifest.from_object`).
    """
    why_not_eager = "Paddle is not installed"
    if paddle_available():
        inputs = parity_inputs(manifest, images)
        try:
            plain, rows, eager_model, source = paddle_side(root, manifest, inputs, layer)
        except StaleWeights as err:
            problems["weights"] = why_not_eager = str(err)
        else:
            notes = []
            stale, stored = problems.pop(REFERENCE_FILE, None), None
            if REFERENCE_FILE in manifest.files and not stale:
                try:
                    stored = read_bundle(root / REFERENCE_FILE, manifest)
                except ArtifactError as err:
                    stale = str(err)
            if stored and stored[0].keys() == inputs.keys() and all(np.array_equal(stored[0][k], v)
                                                                    for k, v in inputs.items()):
                rows.append(judge("reference-bundle", plain, stored[1], CPU_FP32))
            elif not problems:  # never bless a tampered artifact by hashing it into the manifest
                write_bundle(root, manifest, inputs, plain, source)
                if stale:
                    notes.append(f"{REFERENCE_FILE} was rewritten from the eager model ({stale})")
            return Reference(inputs, plain, source, eager_model, tuple(rows), tuple(notes))
    inputs, outputs = stored_reference(root, manifest, why_not_eager)
    return Reference(inputs, outputs, f"reference bundle ({(manifest.reference or {}).get('source', REFERENCE_FILE)})")
