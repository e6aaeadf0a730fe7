"""The cnnexport model zoo: one module per seed family, one registry.

    import models
    model = models.create("vanillanet_5", num_classes=10)
    models.load_weights(model, "best_model.pdparams")
"""
import os
import warnings

# Paddle's C++ logging goes to stderr from the moment it is imported; quiet it unless asked.
os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

from . import dynamic_conv, moganet, orthonet, softpool, vanillanet  # noqa: E402,F401  (registration)
from .registry import (InputSizeError, ModelInfo, UnknownModelError, create, list_models,  # noqa: E402
                       model_info)
from .weights import WeightsError, load_weights, read_state_dict, save_weights  # noqa: E402

__all__ = ["create", "list_models", "model_info", "load_weights", "save_weights", "read_state_dict",
           "ModelInfo", "InputSizeError", "UnknownModelError", "WeightsError"]
