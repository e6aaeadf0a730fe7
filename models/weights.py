"""Loading and saving state dicts: `.pdparams` (as the notebooks' `paddle.save` writes) and `.safetensors`.

A `.pdparams` file is a pickle, and unpickling calls whatever callables the file names. Even numpy's
own array constructors are unsafe there: an object-dtype array rebuilt from the file's bytes holds
the attacker's pointers, and the process dies (or worse) when it is used. So `restricted_load`
never hands a pickle a real callable. The few globals numpy's pickles name resolve to stand-ins
that only record how they were called; once the pickle is read, this module checks that record
and rebuilds it with its own code into plain containers (dict, list, tuple), plain values (int,
float, bool, None, str, bytes) and numpy arrays of bool, integer and float dtypes only. Anything
else (`os.system`, `builtins.eval`, an object, string or complex array, a stand-in used in a way
numpy never uses it) is a `WeightsError` naming what was found.

The forms read are the ones real files use: `_reconstruct` + BUILD (numpy's `__reduce__`, as
`paddle.save` and `pickle.dumps` write it with protocols 3 and 4, naming `numpy.core` as numpy 1.x
does or `numpy._core`), `_frombuffer` with the data in the stream (protocol 5), numpy scalars,
and Python 2 pickles read with `encoding="bytes"` (the CIFAR-10 batches). Not read: protocol 5's
out-of-band buffers, and protocols 0-2 as Python 3 writes them, which spell bytes as a call to
`_codecs.encode` (refused as any unknown global).
"""
from __future__ import annotations

import hashlib
import math
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import BadInput
from .fusion import numpy_dtype

# Paddle 2.x state dicts carry this bookkeeping entry (structured name -> parameter name).
_PADDLE_NAME_TABLE = "StructuredToParameterName@@"

# What a rebuilt array may be: numpy's type codes as its dtype pickles spell them.
_NUMERIC_DTYPES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}
_REFUSED_KINDS = {"O": "Python objects", "U": "unicode strings", "S": "byte strings", "a": "byte strings",
                  "V": "structured records", "c": "complex numbers", "M": "datetimes", "m": "timedeltas"}
_BYTE_ORDERS = {"<", ">", "|", "="}
# Where numpy's dtype state keeps the byte order, and the slots that make a record, subarray or
# metadata-carrying dtype, by the length of the state tuple (numpy's arraydescr_setstate). The
# other slots (version, item size, alignment, flags) are ignored: the dtype is rebuilt from its
# type code alone. The flags are where one attack hides (an object dtype whose flags say "no
# objects" takes raw bytes as pointers).
_DTYPE_STATE_LAYOUT = {5: (0, (1, 2)), 6: (1, (2, 3)), 7: (1, (2, 3, 4)), 8: (1, (2, 3, 4)), 9: (1, (2, 3, 4, 8))}
_MAX_DIMS = 32
_MAX_ARRAY_BYTES = 1 << 40  # a shape claiming more is refused before numpy sees it, even with no data
_MAX_DEPTH = 32             # state dicts, checkpoints and CIFAR batches nest 4 deep at most
_PLAIN_VALUES = {bool, int, float, str, bytes, type(None)}
_KEY_TYPES = {str, bytes, int}


class WeightsError(BadInput):
    """A weights file that cannot be read or does not fit the model."""


# ----------------------------------------------------------------------------- the recording unpickler

class _Global:
    """What the unpickler gets for an accepted numpy global: calling it only records the call."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args):
        return _Call(self, args)

    def __setstate__(self, state):
        raise WeightsError(f"the pickle sets state on {self.name} itself, which numpy's pickles never do")


class _Call:
    """One recorded call of a stand-in, and the state a later BUILD gave its result."""

    __slots__ = ("func", "args", "state", "has_state")

    def __init__(self, func: _Global, args: tuple):
        self.func, self.args, self.state, self.has_state = func, args, None, False

    def __setstate__(self, state):
        if self.has_state:
            raise WeightsError(f"the pickle sets the state of a {self.func.name} result twice")
        self.state, self.has_state = state, True


class _RecordedOrderedDict(dict):
    """collections.OrderedDict as the pickle fills it. A real one would take a BUILD, which sets
    instance attributes that shadow its methods (`items`, `keys`): refused here."""

    __slots__ = ()

    def __setstate__(self, state):
        raise WeightsError("the pickle sets attributes on an OrderedDict, which no state dict does")


class _OrderedDictGlobal(_Global):
    __slots__ = ()

    def __call__(self, *args):
        return _RecordedOrderedDict(*args)


_RECONSTRUCT = _Global("numpy _reconstruct")
_FROMBUFFER = _Global("numpy _frombuffer")
_SCALAR = _Global("numpy scalar")
_NDARRAY = _Global("numpy.ndarray")
_DTYPE = _Global("numpy.dtype")
_STAND_INS = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTYPE,
    ("collections", "OrderedDict"): _OrderedDictGlobal("collections.OrderedDict"),
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _SCALAR for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")},
}


class _RecordingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        stand_in = _STAND_INS.get((module, name))
        if stand_in is None:
            raise WeightsError(f"refusing to unpickle {_one_line(module)}.{_one_line(name)}: only numpy arrays "
                               "and plain containers are accepted (a crafted pickle can run code)")
        return stand_in


def restricted_load(fileobj, encoding: str = "ASCII"):
    """Unpickle plain containers and values and bool/integer/float numpy arrays, never calling anything
    the file names (see the module docstring). Every failure is a one-line `WeightsError`.

    `encoding="bytes"` reads Python 2 pickles (their `str` becomes bytes), as the CIFAR-10 batches need.
    """
    try:
        recorded = _RecordingUnpickler(fileobj, encoding=encoding).load()
    except WeightsError:
        raise
    except Exception as err:  # a truncated or foreign stream fails in many ways inside pickle
        raise WeightsError(f"not a readable pickle ({_one_line(str(err) or type(err).__name__)})") from None
    return _Rebuilder().value(recorded)


# ----------------------------------------------------------------------------- rebuilding what was recorded

class _Rebuilder:
    """Turns the unpickled record into plain containers and real arrays, checking every piece."""

    def __init__(self):
        self.rebuilt: dict[int, object] = {}  # id(recorded) -> result: an object the pickle shares is rebuilt once
        self.open: set[int] = set()  # containers being rebuilt: meeting one of them again means it holds itself

    def value(self, obj, depth: int = 0):
        if type(obj) in _PLAIN_VALUES:
            return obj
        key = id(obj)
        if key in self.rebuilt:
            return self.rebuilt[key]
        if key in self.open:
            raise WeightsError("the pickle holds a container that contains itself, which no state dict does")
        if depth > _MAX_DEPTH:
            raise WeightsError(f"the pickle nests containers more than {_MAX_DEPTH} deep, which no state dict does")
        self.open.add(key)
        result = self._rebuild(obj, depth + 1)
        self.open.remove(key)
        self.rebuilt[key] = result
        return result

    def _rebuild(self, obj, depth: int):
        kind = type(obj)
        if kind is dict or kind is _RecordedOrderedDict:
            items = [(_checked_key(key), self.value(value, depth)) for key, value in dict.items(obj)]
            return OrderedDict(items) if kind is _RecordedOrderedDict else dict(items)
        if kind is list:
            return [self.value(item, depth) for item in obj]
        if kind is tuple:
            return tuple(self.value(item, depth) for item in obj)
        if kind is _Call:
            return _numpy_value(obj)
        raise WeightsError(f"the pickle holds {_describe(obj)}, which is not an array, number, string or "
                           "plain container")


def _checked_key(key):
    if type(key) not in _KEY_TYPES:
        raise WeightsError(f"the pickle holds a dict keyed by {_describe(key)}: keys must be strings or integers")
    return key


def _numpy_value(call: _Call):
    if call.func is _RECONSTRUCT:
        return _array_from_state(call)
    if call.has_state:
        raise WeightsError(f"the pickle sets state on a {call.func.name} result, which numpy's pickles never do")
    if call.func is _FROMBUFFER:
        return _array_from_buffer(call)
    if call.func is _SCALAR:
        return _scalar(call)
    raise WeightsError(f"the pickle calls {call.func.name} directly, which numpy's pickles never do")


def _array_from_state(call: _Call) -> np.ndarray:
    """`_reconstruct(ndarray, (0,), b"b")`, then BUILD with ([version,] shape, dtype, fortran_order, data)."""
    if len(call.args) != 3 or call.args[0] is not _NDARRAY:
        raise WeightsError("the pickle calls numpy _reconstruct with arguments numpy's pickles never use")
    if not call.has_state:
        raise WeightsError("the pickle holds an array without its data (no state after numpy _reconstruct)")
    state = call.state
    if type(state) is tuple and len(state) == 5 and type(state[0]) is int:
        state = state[1:]  # the version; numpy's first pickles had none
    if type(state) is not tuple or len(state) != 4:
        raise WeightsError("the pickle gives an array a state that is not (shape, dtype, fortran order, data)")
    shape, dtype, fortran_order, data = state
    if type(fortran_order) not in (bool, int) or fortran_order not in (0, 1):
        raise WeightsError(f"the pickle gives an array a fortran-order flag of {_describe(fortran_order)}")
    return _array(data, _dtype(dtype), shape, "F" if fortran_order else "C")


def _array_from_buffer(call: _Call) -> np.ndarray:
    """`_frombuffer(data, dtype, shape, order)`: protocol 5 with the data in the stream."""
    if len(call.args) != 4 or call.args[3] not in ("C", "F"):
        raise WeightsError("the pickle calls numpy _frombuffer with arguments numpy's pickles never use")
    data, dtype, shape, order = call.args
    return _array(data, _dtype(dtype), shape, order)


def _scalar(call: _Call):
    """`scalar(dtype, data)`: one value, as a numpy scalar."""
    if len(call.args) != 2:
        raise WeightsError("the pickle calls numpy scalar with arguments numpy's pickles never use")
    dtype, data = call.args
    return _array(data, _dtype(dtype), (), "C")[()]


def _array(data, dtype: np.dtype, shape, order: str) -> np.ndarray:
    """A native-order copy of `data` as an array of `shape`, once the sizes are seen to agree."""
    if type(shape) is not tuple or len(shape) > _MAX_DIMS or any(type(n) is not int or n < 0 for n in shape):
        raise WeightsError(f"the pickle gives an array the shape {_describe(shape)}, not a tuple of at most "
                           f"{_MAX_DIMS} sizes")
    if math.prod(max(n, 1) for n in shape) * dtype.itemsize > _MAX_ARRAY_BYTES:
        raise WeightsError(f"the pickle gives a {dtype} array an absurd shape: more than {_MAX_ARRAY_BYTES:,} bytes")
    if type(data) not in (bytes, bytearray):
        raise WeightsError(f"the pickle gives an array {_describe(data)} as its data, not bytes")
    needed = math.prod(shape) * dtype.itemsize
    if len(data) != needed:
        raise WeightsError(f"the pickle gives a {dtype} array of shape {short_repr(shape)} {len(data)} bytes of "
                           f"data, not {needed}")
    return np.frombuffer(data, dtype).reshape(shape, order=order).astype(dtype.newbyteorder("="))


def _dtype(call) -> np.dtype:
    """`dtype(type_code, align, copy)`, then BUILD with numpy's dtype state (byte order, fields, ...)."""
    if type(call) is not _Call or call.func is not _DTYPE:
        raise WeightsError(f"the pickle gives an array {_describe(call)} as its dtype")
    if not 1 <= len(call.args) <= 3:
        raise WeightsError("the pickle calls numpy.dtype with arguments numpy's pickles never use")
    code = _text(call.args[0])
    if code not in _NUMERIC_DTYPES:
        what = _REFUSED_KINDS.get(code[:1], "not a plain numeric type") if code else "no type code"
        raise WeightsError(f"the pickle holds an array of dtype {_describe(call.args[0])} ({what}): only bool, "
                           "integer and float arrays are accepted")
    return np.dtype(code).newbyteorder(_byte_order(call.state) if call.has_state else "=")


def _byte_order(state) -> str:
    layout = _DTYPE_STATE_LAYOUT.get(len(state)) if type(state) is tuple else None
    if layout is None:
        raise WeightsError("the pickle gives a dtype a state that numpy never writes")
    order_at, structure_at = layout
    if any(state[i] is not None for i in structure_at):
        raise WeightsError("the pickle gives a dtype fields, a subarray or metadata: only plain bool, integer "
                           "and float dtypes are accepted")
    order = _text(state[order_at])
    if order not in _BYTE_ORDERS:
        raise WeightsError(f"the pickle gives a dtype the byte order {_describe(state[order_at])}")
    return order


def _text(value) -> str:
    """A str, or bytes as a Python 2 pickle read with encoding="bytes" gives it; '' for anything else."""
    if type(value) is bytes:
        return value.decode("ascii", "replace")
    return value if type(value) is str else ""


def _describe(obj) -> str:
    if isinstance(obj, _Global):
        return f"the bare global {obj.name}"
    if type(obj) is _Call:
        return f"a {obj.func.name}(...) call"
    return short_repr(obj) if type(obj) in _PLAIN_VALUES else f"a {type(obj).__name__}"


def short_repr(value, limit: int = 60) -> str:
    """repr(value) cut to one short line: what a file gives can be huge, or hold line breaks."""
    if type(value) in (str, bytes):
        value = value[:limit]
    try:
        text = repr(value)
    except ValueError:  # an int past Python's limit on digits to print
        return f"a {value.bit_length()}-bit integer"
    return _one_line(text, limit)


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------- state dicts

def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The file's arrays by name, each a bool, integer or float numpy array; anything else is a WeightsError."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    arrays = _read_safetensors(path) if path.suffix == ".safetensors" else _read_pdparams(path)
    for key, value in arrays.items():
        if type(key) is not str:
            raise WeightsError(f"{path}: key {short_repr(key)} is not a parameter name")
        if not (isinstance(value, np.ndarray) and value.dtype.kind in "biuf"):
            got = f"a {value.dtype} array" if isinstance(value, np.ndarray) else _describe(value)
            raise WeightsError(f"{path}: {_one_line(key, 60)} holds {got}, not a bool, integer or float array")
    return arrays


def _read_safetensors(path: Path) -> dict:
    from safetensors.numpy import load_file
    try:
        return dict(load_file(str(path)))
    except Exception as err:  # safetensors raises its own error types for malformed headers
        raise WeightsError(f"{path} is not a readable .safetensors file: {_one_line(str(err))}") from None


def _read_pdparams(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = restricted_load(f)
    except OSError as err:
        raise WeightsError(f"cannot read {path}: {err.strerror}") from None
    except WeightsError as err:
        raise WeightsError(f"{path} is not a readable .pdparams file: {err}") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    obj.pop(_PADDLE_NAME_TABLE, None)
    return obj


def state_dict_arrays(model) -> OrderedDict[str, np.ndarray]:
    return OrderedDict((k, v.numpy()) for k, v in model.state_dict().items())


def state_dict_sha256(model) -> str:
    """A digest of the model's state dict (names, dtypes, shapes, values): what identifies a Layer
    object's weights when there is no weights file to hash."""
    digest = hashlib.sha256()
    for name, array in sorted(state_dict_arrays(model).items()):
        digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


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
    names = [_one_line(name, 80) for name in names]  # a file's keys can be anything
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f"


def check_fit(model, arrays: dict[str, np.ndarray], source: str) -> None:
    """Raise a WeightsError unless `arrays` (bool/integer/float arrays) can be loaded into `model` as they are.

    Every key of the model must be there with the same shape and the same kind of number (a float
    parameter takes float arrays, an integer or bool one integer or bool arrays: no silent cast
    across kinds), there must be no other key, and floating values must be finite. The error names
    the first offenders.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    present = [(k, arrays[k], numpy_dtype(v), tuple(v.shape)) for k, v in expected.items() if k in arrays]
    mismatched = [f"{k} {tuple(a.shape)} vs {shape}" for k, a, _, shape in present if tuple(a.shape) != shape]
    wrong_kind = [f"{k} {a.dtype} vs {dtype}" for k, a, dtype, _ in present if _is_float(a.dtype) != _is_float(dtype)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (file vs model): {_first(mismatched, 3)}")
    if wrong_kind:
        problems.append(f"dtype mismatches (file vs model): {_first(wrong_kind, 3)}")
    if problems:
        raise WeightsError(f"{source} does not fit this model; " + "; ".join(problems))
    not_finite = next((k for k, a, _, _ in present if _is_float(a.dtype) and not np.isfinite(a).all()), None)
    if not_finite:
        raise WeightsError(f"{source}: {not_finite} holds NaN or infinite values (a diverged training run?); "
                           "pass weights from a run that converged")


def load_weights(model, path: str | Path) -> None:
    """Load a state dict into `model`, strictly (`check_fit`): otherwise nothing is loaded."""
    arrays = read_state_dict(path)
    check_fit(model, arrays, str(path))
    for key, tensor in model.state_dict().items():
        tensor.set_value(arrays[key].astype(numpy_dtype(tensor), copy=False))
