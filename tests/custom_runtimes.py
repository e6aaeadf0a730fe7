"""Runtimes of one's own, loaded by dotted path in a child ("tests.custom_runtimes:open_...")."""
import os
from dataclasses import dataclass

from cnnexport.runtimes import PaddleConfig


def open_aborting(spec):
    """Dies the way native code dies."""
    os.abort()


def open_plain_callable(spec):
    """A runtime given as nothing but a function of a batch: ONNX Runtime's session, run plainly."""
    import onnxruntime as ort
    session = ort.InferenceSession(spec.model_path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


@dataclass(frozen=True)
class AbortingPaddleConfig(PaddleConfig):
    def apply(self, config, threads):
        os.abort()
