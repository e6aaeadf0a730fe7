"""cnnexport: rewrite, export and verify PaddlePaddle CNNs (see README.md).

    import cnnexport
    art = cnnexport.export("vanillanet_5", out="artifacts/v5")    # or a paddle.nn.Layer, "pkg.mod:build", a dir
    report = cnnexport.verify(art, bench=False)
    print(report.passed, [row.runtime for row in report.rows])

`export`, `verify` and `list_models` are the API (`cnnexport.api`); every error they raise for the
caller to act on is a `CnnexportError`: `BadInput` (the command line's exit 2) or `ExportFailed`
(exit 1). `cnnexport.models` is the zoo. Importing cnnexport imports neither Paddle nor a runtime.
"""
import os
import warnings

# Quiet Paddle's C++ logging and its import-time ccache warning, also where Paddle is imported
# without going through `models` (verify's runtimes, child processes).
os.environ.setdefault("GLOG_minloglevel", "2")
# ONNX Runtime's telemetry writes a session file (`$TMPDIR/.ses`) on import, and would phone home.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

from .api import Artifact, check_export, check_verify, export, list_models, verify  # noqa: E402
from .errors import BadInput, CnnexportError, ExportFailed  # noqa: E402
from .results import RowResult, Timing, VerifyReport  # noqa: E402

__all__ = ["export", "verify", "list_models", "check_export", "check_verify", "Artifact", "VerifyReport", "RowResult",
           "Timing", "CnnexportError", "BadInput", "ExportFailed"]
