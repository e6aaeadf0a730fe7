"""Models from outside the zoo: `module.path:callable`, any importable callable that returns a
`paddle.nn.Layer` (`paddle.vision.models:mobilenet_v3_small`, a user's `mynet.models:build`).

Importing the module runs its code, as `python -c "import mynet.models"` would. The current
directory is importable first (as for `uvicorn app:app`), so a user's own package works from its
checkout. Everything that can go wrong on the way (the module does not import, the name is
missing or not callable, the call fails, it returns something else) is one `ExternalModelError`
line naming the callable and what to do; code that calls sys.exit is a `ModelExited`.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable

from ..errors import BadInput, ModelExited

CALLABLE_SPEC = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")


class ExternalModelError(BadInput):
    """A `module:callable` that does not give a model (exit 2)."""


def is_callable_spec(text: str) -> bool:
    return CALLABLE_SPEC.match(text) is not None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


def resolve(spec: str) -> Callable:
    """The callable `spec` names, its module imported (from the current directory first)."""
    match = CALLABLE_SPEC.match(spec)
    if match is None:
        raise ExternalModelError(f"{spec!r} is not of the form module.path:callable")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name = match["module"]
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the user's tree
    try:
        target = importlib.import_module(module_name)
    except SystemExit as err:
        raise ModelExited.called_exit(spec, err) from None
    except Exception as err:  # the module's own code runs here: any failure of it is the input's
        raise ExternalModelError(f"cannot import {module_name} for {spec} ({_one_line(err)}): install it or run "
                                 "from the directory that holds it") from None
    finally:
        sys.dont_write_bytecode = writes_bytecode
    for part in match["attr"].split("."):
        if not hasattr(target, part):
            raise ExternalModelError(f"{module_name} has no attribute {match['attr']!r}: name a function or class "
                                     "that returns a paddle.nn.Layer")
        target = getattr(target, part)
    if not callable(target):
        raise ExternalModelError(f"{spec} is a {type(target).__name__}, not a callable: name a function or class "
                                 "that returns a paddle.nn.Layer")
    return target


def build(spec: str, kwargs: dict):
    """`callable(**kwargs)`, checked to be a paddle.nn.Layer."""
    from paddle import nn

    constructor = resolve(spec)
    try:
        model = constructor(**kwargs)
    except SystemExit as err:
        raise ModelExited.called_exit(spec, err) from None
    except Exception as err:
        raise ExternalModelError(f"{spec}(**{kwargs}) failed ({_one_line(err)}): check --model-kwargs") from None
    if not isinstance(model, nn.Layer):
        raise ExternalModelError(f"{spec}(**{kwargs}) returned a {type(model).__name__}, not a paddle.nn.Layer")
    return model
