"""Crafted hostile pickles, made on the fly: what a hostile tester feeds cnnexport as weights,
training checkpoints and CIFAR batches.

Each value case is an object that pickles as one attack (`VALUE_CASES`); embedded in an
otherwise real state dict, checkpoint or batch, plain `pickle.load` would run a command that
touches `marker`, hand back an array whose pointers are the attacker's bytes (the process dies
when it is used), or silently give strings or complex numbers where weights belong. File cases
(`FILE_CASES`) are whole files that are no state dict at all. `crafted_file` makes either.

The attacks are written with numpy's own pickle forms (`__reduce__` giving a callable, its
arguments and a BUILD state), and raw opcodes where no pickler would write them.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np

_RECONSTRUCT = np._core.multiarray._reconstruct
_SCALAR = np._core.multiarray.scalar
_FROMBUFFER = np._core.numeric._frombuffer
POINTERS = 4  # elements of the object arrays: each a pointer spelled by the attacker
ATTACKER_BYTES = b"A" * 8 * POINTERS  # 0x4141414141414141: dereferenced, the process dies


class _Reduces:
    """Pickles as `func(*args)`, then BUILD with `state` and SETITEMS with `items` when given."""

    def __init__(self, func, args, state=None, items=None):
        self.func, self.args, self.state, self.items = func, args, state, items

    def __reduce__(self):
        return self.func, self.args, self.state, None, None if self.items is None else iter(self.items)


class _Raw:
    """Opcodes written as they are (pushing exactly one object): pickles no pickler writes."""

    def __init__(self, opcodes: bytes):
        self.opcodes = opcodes


class _Pickler(pickle._Pickler):
    """Protocol 4 as Python writes it, plus `_Raw` opcodes."""

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Raw):
            self.write(obj.opcodes)
        else:
            super().save(obj, save_persistent_id)


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=4).dump(obj)
    return buffer.getvalue()


def _dtype(code: str, state: tuple) -> _Reduces:
    """numpy.dtype(code) with a state of the caller's choosing (numpy's: version 3, 8 items)."""
    return _Reduces(np.dtype, (code, False, True), state)


# An object dtype whose flags (the last item) say "holds no objects": numpy then takes raw bytes
# for its elements, and its ndarray() no longer refuses a buffer.
OBJECT_DTYPE = _dtype("O8", (3, "|", None, None, None, -1, -1, 0))


def _array_state(shape: tuple, dtype, data: bytes) -> _Reduces:
    """An array as numpy pickles one: _reconstruct(ndarray, (0,), b"b") + BUILD (1, shape, dtype, fortran, data)."""
    return _Reduces(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data))


def _nested_lists(depth: int) -> _Raw:
    return _Raw(pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1))


def _self_containing_list() -> list:
    loop: list = []
    loop.append(loop)
    return loop


# name -> (what it does, a function of the marker path giving the hostile value)
VALUE_CASES = {
    "object-array-ndarray-call": (
        "ndarray((n,), dtype('O'), buffer) called directly: an object array over the attacker's bytes",
        lambda marker: _Reduces(np.ndarray, ((POINTERS,), OBJECT_DTYPE, ATTACKER_BYTES))),
    "object-array-reconstruct": (
        "_reconstruct + BUILD with an object dtype and raw bytes for its pointers",
        lambda marker: _array_state((POINTERS,), OBJECT_DTYPE, ATTACKER_BYTES)),
    "object-array-frombuffer": (
        "protocol 5's _frombuffer with an object dtype",
        lambda marker: _Reduces(_FROMBUFFER, (ATTACKER_BYTES, OBJECT_DTYPE, (POINTERS,), "C"))),
    "object-scalar": (
        "scalar(dtype('O'), raw bytes): one object whose pointer is the attacker's",
        lambda marker: _Reduces(_SCALAR, (OBJECT_DTYPE, ATTACKER_BYTES[:8]))),
    "record-with-object-field": (
        "a structured (void) dtype whose one field is an object",
        lambda marker: _array_state((POINTERS,), _dtype("V8", (3, "|", None, ("x",), {"x": (OBJECT_DTYPE, 0)},
                                                               8, 1, 0)), ATTACKER_BYTES)),
    "float-dtype-given-fields": (
        "a float64 dtype whose setstate adds an object field",
        lambda marker: _array_state((POINTERS,), _dtype("f8", (3, "<", None, ("x",), {"x": (OBJECT_DTYPE, 0)},
                                                               -1, -1, 0)), ATTACKER_BYTES)),
    "unicode-array": ("weights as unicode strings, which a plain cast would parse",
                      lambda marker: np.array(["0.5"] * POINTERS)),
    "bytes-array": ("weights as byte strings", lambda marker: np.array([b"0.5"] * POINTERS)),
    "complex-array": ("weights as complex numbers, which a plain cast would truncate",
                      lambda marker: np.full(POINTERS, 0.5 + 2j, np.complex64)),
    "absurd-shape": (
        "an array whose shape says 10**12 floats and whose data is 16 bytes",
        lambda marker: _array_state((10**12,), np.dtype("f4"), ATTACKER_BYTES[:16])),
    "huge-integer-shape": (
        "an array whose one size is a 5001-digit number, more than Python will print",
        lambda marker: _array_state((10**5000,), np.dtype("f4"), b"")),
    "byte-count-mismatch": (
        "an array whose data is one byte short of its shape",
        lambda marker: _array_state((POINTERS,), np.dtype("f8"), ATTACKER_BYTES[:-1])),
    "ordered-dict-setstate": (
        "an OrderedDict given a BUILD that sets attributes shadowing its methods",
        lambda marker: _Reduces(collections.OrderedDict, (), {"items": f"touch {marker}"}, [("x", 1)])),
    "dict-setstate": (
        "a plain dict given a BUILD",
        lambda marker: _Raw(pickle.EMPTY_DICT + pickle.EMPTY_DICT + pickle.SHORT_BINUNICODE + b"\x01x"
                            + pickle.BININT1 + b"\x01" + pickle.SETITEM + pickle.BUILD)),
    "reconstruct-wrong-arguments": (
        "_reconstruct called with numpy.dtype where numpy.ndarray belongs",
        lambda marker: _Reduces(_RECONSTRUCT, (np.dtype, (0,), b"b"),
                                (1, (POINTERS,), OBJECT_DTYPE, False, ATTACKER_BYTES))),
    "ndarray-class-as-value": ("the numpy.ndarray class itself where an array belongs", lambda marker: np.ndarray),
    "self-containing-list": ("a list that contains itself", lambda marker: _self_containing_list()),
    "deep-nesting": ("lists nested 100 deep", lambda marker: _nested_lists(100)),
    "os-system": ("os.system('touch marker')", lambda marker: _Reduces(os.system, (f"touch {marker}",))),
    "builtins-eval": ("builtins.eval of code that runs a command",
                      lambda marker: _Reduces(eval, (f"__import__('os').system('touch {marker}')",))),
}
# The cases whose naive load hands back pointers from the file: the process dies when they are used.
MEMORY_CASES = ["object-array-ndarray-call", "object-array-reconstruct", "object-array-frombuffer", "object-scalar",
                "record-with-object-field"]
FILE_CASES = ["truncated", "not-a-dict"]


ALL_CASES = [*VALUE_CASES, *FILE_CASES]


def crafted_file(case: str, real: dict, key, marker: Path) -> bytes:
    """`real` (a state dict, checkpoint or batch) pickled with its entry at `key` (a key, or a tuple of
    keys into nested dicts) replaced by the hostile value of `case`; for a file case, the whole file."""
    if case == "truncated":
        blob = pickled(real)
        return blob[: len(blob) // 2]
    if case == "not-a-dict":
        return pickled(list(real.values()))
    *outer, last = key if isinstance(key, tuple) else (key,)
    copy = inner = dict(real)
    for step in outer:
        inner[step] = dict(inner[step])
        inner = inner[step]
    inner[last] = VALUE_CASES[case][1](marker)
    return pickled(copy)


def safetensors_file(tensors: dict[str, tuple[str, list[int], bytes]]) -> bytes:
    """A .safetensors file written by hand: name -> (dtype as the header spells it, shape, data)."""
    header, offset, data = {}, 0, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data
