"""cnnexport: rewrite, export and verify the models of the zoo (see README.md)."""
import os
import warnings

# Quiet Paddle's C++ logging and its import-time ccache warning, also where Paddle is imported
# without going through `models` (verify's runtimes, child processes).
os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
