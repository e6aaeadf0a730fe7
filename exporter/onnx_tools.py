"""ONNX post-processing: convert (paddle2onnx), simplify, name the interface, describe, check; and the fp16
variant. Paddle-free."""
from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import onnx

INPUT_NAME, BATCH_DIM = "x", "batch"
SPATIAL_DIMS = ("height", "width")  # the input's dynamic H and W, where the program leaves them dynamic


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new


def _name_dynamic_dims(value: onnx.ValueInfoProto, names: tuple[str, ...]) -> None:
    """Name the dynamic axes of `value` (by position; paddle2onnx leaves them unnamed or numbered)."""
    for dim, name in zip(value.type.tensor_type.shape.dim, names):
        if name and not dim.HasField("dim_value"):
            dim.dim_param = name


def converted(program: str, params: str, opset: int) -> onnx.ModelProto:
    """paddle2onnx's graph of a Paddle inference program, as it writes it (run it in a child: the
    converter can abort its process)."""
    import paddle2onnx

    try:
        raw = paddle2onnx.export(program, params, None, opset_version=opset, auto_upgrade_opset=False,
                                 enable_onnx_checker=True)
    except UnboundLocalError:  # paddle2onnx logs its own failure, then returns an unbound variable
        raw = None
    if not isinstance(raw, bytes):
        raise RuntimeError("paddle2onnx produced no model")
    return onnx.load_from_string(raw)


def simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """onnxslim's simplification of `model`, or `model` as it is with why not.

    onnxslim folds the converter's constant subgraphs and bias Adds into Convs; what it produces
    is checked by parity like everything else. It is a clean-up step: where it fails (onnxslim 0.1.98
    raises "'list' object has no attribute 'nbytes'" folding the `If` subgraphs paddle2onnx writes
    for a slice assignment, Swin's attention mask), the converter's graph is kept, not thrown away.
    """
    import onnxslim

    try:
        return onnxslim.slim(copy.deepcopy(model)), None
    except Exception as err:  # onnxslim's own failure, whatever it is: the unsimplified graph is still the model
        return model, (f"onnxslim failed ({type(err).__name__}: {' '.join(str(err).split())[:160]}): "
                       "kept paddle2onnx's graph unsimplified")


def finalize(model: onnx.ModelProto, metadata: dict[str, str], outputs: list[str]) -> onnx.ModelProto:
    """Interface named (`x` -> `outputs`, batch axis `batch`, the input's dynamic height and width
    `height`, `width`), described, shape-inferred, checked (after `simplify`)."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != len(outputs):
        raise ValueError(f"expected one input and {len(outputs)} outputs, got {len(graph.input)} and {len(graph.output)}")
    _rename_value(graph, graph.input[0].name, INPUT_NAME)
    _name_dynamic_dims(graph.input[0], (BATCH_DIM, "", *SPATIAL_DIMS))
    for value, name in zip(list(graph.output), outputs):
        _rename_value(graph, value.name, name)
        _name_dynamic_dims(value, (BATCH_DIM,))
    graph.name = metadata.get("model", graph.name)
    # The converter is recorded in the metadata (version.paddle2onnx); the producer is this tool.
    model.producer_name, model.producer_version = "cnnexport", metadata.get("version.cnnexport", "")
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        model.metadata_props.add(key=key, value=str(value))
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


class NoFp16Form(ValueError):
    """No fp16 or mixed-precision form of the model keeps top-1 agreement on the photographs."""


def _cuts(graph: onnx.GraphProto) -> list[str]:
    """Values after which the rest of the graph needs nothing else (the one live tensor there), in
    graph order: where a graph can be split into an fp16 part and an fp32 part."""
    constants = {i.name for i in graph.initializer}
    last_use = {name: i for i, node in enumerate(graph.node) for name in node.input if name}
    outputs = {out.name for out in graph.output}
    last_use.update((name, len(graph.node)) for name in outputs)  # an output made early stays live to the end
    live: set[str] = {graph.input[0].name}
    cuts = []
    for i, node in enumerate(graph.node):
        live |= {name for name in node.output if name}
        live = {name for name in live if last_use.get(name, -1) > i and name not in constants}
        if len(node.output) == 1 and live == {node.output[0]} and node.output[0] not in outputs:
            cuts.append(node.output[0])
    return cuts


def _fp16_up_to(model: onnx.ModelProto, cut: str) -> onnx.ModelProto:
    """The model with everything up to `cut` in fp16 and the rest in fp32 (fp32 input and outputs)."""
    from onnx import compose, utils
    from onnxconverter_common import float16

    outputs = [out.name for out in model.graph.output]
    extractor = utils.Extractor(model)
    head = float16.convert_float_to_float16(extractor.extract_model([INPUT_NAME], [cut]), keep_io_types=True)
    tail = compose.add_prefix(extractor.extract_model([cut], outputs), "fp32.")
    del head.graph.value_info[:], tail.graph.value_info[:]  # shape inference redoes them for the whole
    mixed = compose.merge_models(head, tail, io_map=[(cut, f"fp32.{cut}")])
    for name in outputs:
        _rename_value(mixed.graph, f"fp32.{name}", name)
    mixed.graph.name = model.graph.name
    mixed.producer_name, mixed.producer_version = model.producer_name, model.producer_version
    mixed.metadata_props.extend(model.metadata_props)
    return onnx.shape_inference.infer_shapes(mixed, check_type=True, strict_mode=True)


def to_fp16(model: onnx.ModelProto, photos: np.ndarray, expected: list[np.ndarray],
            min_top1: float) -> tuple[onnx.ModelProto, dict]:
    """The fp16 variant (fp32 input and outputs kept for callers): the whole graph in fp16 if the
    argmax agreement (`compare.agreement`) of each output with `expected` (the eager model's outputs)
    on `photos` is at least `min_top1`;
    otherwise mixed precision: fp16 up to the latest point of the graph (a value that carries all
    the rest needs) from which finishing in fp32 keeps agreement, found by bisection. fp16 usually
    fails at the end of a classifier (logits too small for its range), which this keeps in fp32,
    tensors included (blocking single nodes in fp16 converters still stores their outputs in fp16).
    Raises NoFp16Form when no form agrees. Runs ONNX Runtime on the CPU: call it in a child."""
    from onnxconverter_common import float16

    from .compare import agreement, decision_kind

    def agrees(candidate: onnx.ModelProto) -> bool:
        figures = [agreement(want, got) for want, got in zip(expected, run_onnx(candidate, photos))]
        return all(f.finite and f.top1 >= min_top1 for f in figures)

    model = _for_fp16_conversion(model)
    half = float16.convert_float_to_float16(model, keep_io_types=True)
    if agrees(half):
        onnx.checker.check_model(half, full_check=True)
        return half, {"precision": "fp16"}
    cuts, best = _cuts(model.graph), None
    low, high = 0, len(cuts) - 1
    while low <= high:  # the latest cut that agrees, assuming an earlier one (more fp32) agrees too
        middle = (low + high) // 2
        candidate = _fp16_up_to(model, cuts[middle])
        if agrees(candidate):
            best, low = (middle, candidate), middle + 1
        else:
            high = middle - 1
    if best is None:
        decided = ", ".join(sorted({decision_kind(out.shape) for out in expected}))
        raise NoFp16Form(f"neither fp16 nor any fp16-then-fp32 split of the graph keeps {decided} agreement >= "
                         f"{min_top1:.0%} with the eager model on the photographs")
    index, mixed = best
    onnx.checker.check_model(mixed, full_check=True)
    fp16_nodes = next(i for i, node in enumerate(model.graph.node) if cuts[index] in node.output) + 1
    return mixed, {"precision": "mixed", "fp32_from": cuts[index], "fp16_nodes": fp16_nodes,
                   "fp32_nodes": len(model.graph.node) - fp16_nodes}


def _for_fp16_conversion(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy that onnxconverter-common converts into a model ONNX Runtime loads: without value_info,
    and with no graph output also read by a node (a network that returns a feature map and its
    pooled logits: keep_io_types casts such an output back to fp32 in place, and the nodes that read
    it, still typed fp16, make ONNX Runtime refuse the model; an Identity gives each such output a
    value of its own)."""
    model = copy.deepcopy(model)
    graph = model.graph
    # onnxconverter-common 1.16 adds an fp16 value_info for each value it keeps in fp32 (a Resize's
    # output) beside the fp32 one shape inference wrote, and ONNX Runtime reads the stale one: the
    # converted graph gets its value_info from shape inference again where it needs it.
    del graph.value_info[:]
    read = {name for node in graph.node for name in node.input}
    for output in graph.output:
        if output.name in read:
            name = output.name
            _rename_value(graph, name, f"{name}.inner")
            output.name = name  # the graph's output keeps its name, now the Identity's
            graph.node.append(onnx.helper.make_node("Identity", [f"{name}.inner"], [name], name=f"{name}.identity"))
    return model


def run_onnx(model: onnx.ModelProto, batch: np.ndarray) -> list[np.ndarray]:
    """The outputs of `model` on `batch`, in ONNX Runtime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})
