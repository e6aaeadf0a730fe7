"""ONNX post-processing: simplify, name the interface, describe, check; and the fp16 variant. Paddle-free."""
from __future__ import annotations

from collections import Counter

import onnx

INPUT_NAME, OUTPUT_NAME, BATCH_DIM = "x", "logits", "batch"


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def _name_batch_dim(value: onnx.ValueInfoProto) -> None:
    dim = value.type.tensor_type.shape.dim[0]
    if not dim.HasField("dim_value"):
        dim.dim_param = BATCH_DIM


def finalize(model: onnx.ModelProto, metadata: dict[str, str]) -> onnx.ModelProto:
    """Simplified, interface named (`x` -> `logits`, batch axis `batch`), described, shape-inferred, checked.

    onnxslim folds the converter's constant subgraphs and bias Adds into Convs; what it produces
    is checked by parity like everything else.
    """
    import onnxslim

    model = onnxslim.slim(model)
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, got {len(graph.input)} and {len(graph.output)}")
    _rename_value(graph, graph.input[0].name, INPUT_NAME)
    _rename_value(graph, graph.output[0].name, OUTPUT_NAME)
    _name_batch_dim(graph.input[0])
    _name_batch_dim(graph.output[0])
    graph.name = metadata.get("model", graph.name)
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        model.metadata_props.add(key=key, value=str(value))
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Weights and compute in float16, the `x` input and `logits` output kept float32 for callers."""
    from onnxconverter_common import float16

    half = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.checker.check_model(half, full_check=True)
    return half
