"""Run the cnnexport command line, and SIGKILL this process at one chosen instant.

    python -m tests.kill_at MODULE:NAME[:after] N [--no-exchange] -- CNNEXPORT_ARGS...

kills the process just before (or just after, with `:after`) the Nth call of NAME as MODULE sees
it: where a power loss or `kill -9` could strike. NAME may be an attribute of a module that
MODULE imported (`cnnexport.artifact:os.rename`): only MODULE's view of it is replaced.
`--no-exchange` makes the atomic exchange unavailable, to exercise the two-rename fallback.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import types


def arm(target: str, nth: int) -> None:
    module_name, attribute, *when = target.split(":")
    owner = importlib.import_module(module_name)
    if "." in attribute:
        namespace, attribute = attribute.split(".")
        private = types.SimpleNamespace(**vars(getattr(owner, namespace)))
        setattr(owner, namespace, private)
        owner = private
    original = getattr(owner, attribute)
    calls = 0

    def killing(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == nth and not when:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls == nth and when == ["after"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, attribute, killing)


def main(argv: list[str]) -> int:
    split = argv.index("--")
    target, nth, *flags = argv[:split]
    arm(target, int(nth))
    if "--no-exchange" in flags:
        from cnnexport import artifact
        artifact._exchange = lambda a, b: False
    from cnnexport.cli import main as cnnexport
    return cnnexport(argv[split + 1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
