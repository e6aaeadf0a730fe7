"""Loading and saving state dicts: `.pdparams` (as the notebooks' `paddle.save` writes) and `.safetensors`.

A `.pdparams` file is a pickle, and unpickling runs whatever callables the file names. It is read
here by an unpickler that resolves only the numpy functions that rebuild arrays; any other global
(`os.system`, `builtins.eval`, a Paddle class, ...) is refused before anything is called.
"""
from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .fusion import numpy_dtype

# Paddle 2.x state dicts carry this bookkeeping entry (structured name -> parameter name).
_PADDLE_NAME_TABLE = "StructuredToParameterName@@"

_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}


class WeightsError(ValueError):
    """A weights file that cannot be read or does not fit the model."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise WeightsError(
            f"refusing to unpickle {module}.{name}: only arrays and plain containers are accepted "
            "(a crafted pickle can run code)")


def restricted_load(fileobj, **kwargs):
    """pickle.load that resolves only numpy's array-rebuilding globals (see module docstring)."""
    return _ArraysOnlyUnpickler(fileobj, **kwargs).load()


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        try:
            return dict(load_file(str(path)))
        except Exception as err:  # safetensors raises its own error types for malformed headers
            raise WeightsError(f"{path} is not a readable .safetensors file: {err}") from None
    try:
        with open(path, "rb") as f:
            obj = restricted_load(f)
    except WeightsError:
        raise
    except Exception as err:
        raise WeightsError(f"{path} is not a readable .pdparams file: {err}") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    obj.pop(_PADDLE_NAME_TABLE, None)
    bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise WeightsError(f"{path}: entries {bad[:3]} are not arrays")
    return obj


def state_dict_arrays(model) -> OrderedDict[str, np.ndarray]:
    return OrderedDict((k, v.numpy()) for k, v in model.state_dict().items())


def save_weights(model, path: str | Path) -> None:
    """Write the model's state dict as `.pdparams` (paddle.save's format) or `.safetensors`."""
    path = Path(path)
    arrays = state_dict_arrays(model)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    else:
        import paddle
        paddle.save(model.state_dict(), str(path))


def _first(names, n: int = 5) -> str:
    names = list(names)
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def load_weights(model, path: str | Path) -> None:
    """Load a state dict into `model`, strictly.

    Every key of the model must be in the file with the same shape, and the file must have no
    other key; otherwise nothing is loaded and the error names the first offenders.
    """
    arrays = read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    mismatched = [f"{k} {tuple(arrays[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in arrays and tuple(arrays[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (file vs model): {_first(mismatched, 3)}")
    if problems:
        raise WeightsError(f"{path} does not fit this model; " + "; ".join(problems))
    for key, tensor in expected.items():
        tensor.set_value(arrays[key].astype(numpy_dtype(tensor), copy=False))
