"""cnnexport: rewrite, export and verify the models of the zoo (see README.md)."""
import os
import warnings

# Quiet Paddle's C++ logging and its import-time ccache warning, also where Paddle is imported
# without going through `models` (verify's runtimes, child processes).
os.environ.setdefault("GLOG_minloglevel", "2")
# ONNX Runtime's telemetry writes a session file (`$TMPDIR/.ses`) on import, and would phone home.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
