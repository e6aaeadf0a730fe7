"""Runtimes that die the way native code dies, for the isolation tests (loaded by dotted path in a child)."""
import os
from dataclasses import dataclass

from exporter.runtimes import PaddleConfig


def open_aborting(spec):
    os.abort()


@dataclass(frozen=True)
class AbortingPaddleConfig(PaddleConfig):
    def apply(self, config, threads):
        os.abort()
