"""The cnnexport model zoo: one module per seed family, one registry.

    from cnnexport import models
    model = models.create("vanillanet_5", num_classes=10)
    models.load_weights(model, "best_model.pdparams")
"""
import os
import warnings

# Paddle's C++ logging goes to stderr from the moment it is imported; quiet it unless asked.
os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

# The families: importing a family's module registers it and its models (models/registry.py).
from . import dynamic_conv  # noqa: E402,F401
from . import moganet  # noqa: E402,F401
from . import orthonet  # noqa: E402,F401
from . import softpool  # noqa: E402,F401
from . import vanillanet  # noqa: E402,F401
from .external import ExternalModelError  # noqa: E402
from .registry import (FamilyInfo, InputSizeError, ModelInfo, UnknownModelError, create,  # noqa: E402
                       family_info, list_families, list_models, model_info)
from .weights import WeightsError, load_weights, read_state_dict, save_weights  # noqa: E402

__all__ = ["create", "list_models", "model_info", "list_families", "family_info", "load_weights", "save_weights",
           "read_state_dict", "ModelInfo", "FamilyInfo", "InputSizeError", "UnknownModelError", "WeightsError",
           "ExternalModelError"]
