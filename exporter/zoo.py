"""The zoo table behind `cnnexport list`: name, family, input size, classes, parameters, FLOPs.

Every figure is registry data (`models.model_info`), so listing the zoo builds no model.
"""
from __future__ import annotations

from . import models
def zoo_table(pattern: str | None = None) -> list[dict]:
    infos = [models.model_info(n) for n in models.list_models()]
    return [{"name": i.name, "family": i.family, "input_size": i.input_size, "num_classes": i.num_classes,
             "params": i.params, "flops": i.macs}
            for i in infos if not pattern or pattern in i.name or pattern == i.family]
