"""Where two computations of the same model part ways.

Three views, in graph order:
- activations: the eager Paddle model's layer outputs (forward hooks) against the ONNX graph's
  intermediate values (every node output exposed to ONNX Runtime), aligned in order by shape and
  value (`first_divergence`);
- weights: the parameters stored in an artifact (ONNX initializers, Paddle's inference.pdiparams)
  against the eager model's, through the Paddle-name -> state-dict-name map in the manifest; for
  an imported program (no eager model), inference.pdiparams against the ONNX initializers of the
  same name;
- runtime against runtime: ONNX Runtime on the GPU against ONNX Runtime on the CPU, value by value
  (what is left to compare on a GPU machine without Paddle).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from . import isolate
from .artifact import ONNX_FILE, PADDLE_PARAMS, Manifest
from .compare import rel_l2
from .plan import Row
from .runtimes import RuntimeSpec, ort_session, paddle_model_files

MATCH_RTOL = 1e-4  # intermediate tensors: float32 rounding accumulates, a real error is far larger


def eager_layer_outputs(model, batch: np.ndarray) -> list[tuple[str, str, np.ndarray, bool]]:
    """(layer path, layer type, output, whether the layer has weights of its own) for every sublayer
    call, in the order the calls finish."""
    import paddle

    from .models.fusion import forward_hooks

    records = []

    def hook(name):
        def record(layer, inputs, output):
            if isinstance(output, paddle.Tensor):
                owns = bool(layer.parameters(include_sublayers=False))
                records.append((name, type(layer).__name__, output.numpy(), owns))
        return record

    with forward_hooks((layer, hook(name)) for name, layer in model.named_sublayers()), paddle.no_grad():
        model(paddle.to_tensor(batch))
    return records


def onnx_intermediates(spec, batch: np.ndarray) -> list[dict]:
    """Every node output of the graph, in node order, with the node that made it. Runs ONNX Runtime
    as `spec` says (device, TF32) on a copy of the graph whose outputs are all intermediate values
    (call it in a child)."""
    import onnx

    model = onnx.load(spec.model_path)
    initializers = {i.name for i in model.graph.initializer}
    values = []
    existing = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for out in node.output:
            values.append({"value": out, "node": node.name, "op": node.op_type,
                           "weights": [i for i in node.input if i in initializers]})
            if out and out not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=out))
    session = ort_session(spec, model.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    arrays = dict(zip(names, session.run(names, {session.get_inputs()[0].name: batch})))
    return [dict(v, array=arrays[v["value"]]) for v in values if v["value"] in arrays]


def first_divergence(eager: list[tuple[str, str, np.ndarray, bool]], onnx_values: list[dict]) -> dict | None:
    """The first eager layer whose output has no counterpart in the ONNX values, and whose successor
    has none either.

    Layer outputs are matched in order, by shape and value (within MATCH_RTOL). A layer the
    converter or onnxslim fused away (a conv whose BatchNorm was merged into it) has no counterpart
    but its successor does; a layer that really diverges takes everything after it along. The ONNX
    node reported for it is the first one after the last match that has the layer's output shape
    and, for a layer with weights, weights of its own; failing that, the closest value.
    """
    positions: list[int | None] = []
    cursor = 0
    for _, _, out, _ in eager:
        hit = next((k for k in range(cursor, len(onnx_values)) if onnx_values[k]["array"].shape == out.shape
                    and rel_l2(out, onnx_values[k]["array"]) <= MATCH_RTOL), None)
        positions.append(hit)
        cursor = hit if hit is not None else cursor
    index = next((i for i, hit in enumerate(positions)
                  if hit is None and (i + 1 == len(positions) or positions[i + 1] is None)), None)
    if index is None:
        return None
    name, layer_type, out, owns_weights = eager[index]
    matched_before = [i for i in range(index) if positions[i] is not None]
    start = positions[matched_before[-1]] if matched_before else 0
    report = {"layer": name, "layer_type": layer_type, "after": eager[matched_before[-1]][0] if matched_before else "(input)"}
    candidates = [v for v in onnx_values[start:] if v["array"].shape == out.shape]
    best = next((v for v in candidates if owns_weights and v["weights"]), None) or min(
        candidates, key=lambda v: rel_l2(out, v["array"]), default=None)
    if best is not None:
        report.update(onnx_node=best["node"], op_type=best["op"], weights=best["weights"],
                      rel_error=rel_l2(out, best["array"]), max_abs=float(np.abs(best["array"] - out).max()))
    return report


def first_differing_value(reference: list[dict], values: list[dict], rtol: float = MATCH_RTOL) -> dict | None:
    """Two runs of the same graph (say CUDA and CPU): the first value, in node order, that differs."""
    arrays = {v["value"]: v["array"] for v in values}
    for ref in reference:
        other = arrays.get(ref["value"])
        if other is not None and other.shape == ref["array"].shape:
            err = rel_l2(ref["array"].astype(np.float64), other)
            if not err <= rtol:
                return {"value": ref["value"], "onnx_node": ref["node"], "op_type": ref["op"],
                        "weights": ref["weights"], "rel_error": err,
                        "max_abs": float(np.abs(other - ref["array"]).max())}
    return None


def weight_differences(stored: dict[str, np.ndarray], names: dict[str, str], reference: dict[str, np.ndarray],
                       rtol: float = 1e-6) -> list[dict]:
    """Stored weights (Paddle names) that differ from the reference state dict (structured names)."""
    diffs = []
    for paddle_name, array in stored.items():
        structured = names.get(paddle_name)
        if structured is None or structured not in reference:
            continue
        ref = reference[structured].astype(np.float64)
        if ref.shape != array.shape:
            diffs.append({"weight": structured, "stored_as": paddle_name, "problem": f"shape {array.shape} vs {ref.shape}"})
            continue
        err = rel_l2(ref, array)
        if not err <= rtol:
            diffs.append({"weight": structured, "stored_as": paddle_name, "rel_error": err,
                          "max_abs": float(np.abs(array - ref).max())})
    return diffs


def onnx_weights(onnx_path: str) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def paddle_weights(paddle_dir: str, names: list[str]) -> dict[str, np.ndarray]:
    """Parameters as stored in inference.pdiparams, read by Paddle's static loader (call it in a child)."""
    import paddle

    program, _ = paddle_model_files(paddle_dir)
    paddle.enable_static()
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        exe = paddle.static.Executor(paddle.CPUPlace())
        paddle.static.load_inference_model(str(program.with_suffix("")), exe)
        out = {}
        for name in names:
            var = scope.find_var(name)
            if var is not None:
                out[name] = np.array(var.get_tensor())
    return out


def localise(row: Row, label: str, manifest: Manifest, eager_model, batch: np.ndarray) -> dict:
    """Where a failed row parts from its reference, as its plan says to trace it: Paddle's stored
    weights against the eager model's; or the ONNX graph's values (run by ONNX Runtime as the row
    ran it) and initializers against the eager model's layers and weights; or, without Paddle, a
    GPU run's values against the same graph on the CPU."""
    from .models.weights import state_dict_arrays

    names = manifest.paddle_param_names
    sample = batch[:1] if manifest.input["dynamic_batch"] else batch
    spec = dataclasses.replace(row.spec, kind="onnxruntime") if row.localise == "onnx" else row.spec
    result: dict = {"runtime": label}
    try:
        if row.localise == "stored-weights":
            result["weights"] = stored_weight_differences(Path(spec.model_path).parent)
        elif row.localise == "paddle":
            stored = isolate.call_isolated(paddle_weights, spec.model_path, list(names), what="read inference.pdiparams")
            result["weights"] = weight_differences(stored, names, state_dict_arrays(eager_model))
        elif eager_model is None:
            cpu = RuntimeSpec("onnxruntime", spec.model_path)
            reference = isolate.call_isolated(onnx_intermediates, cpu, sample, what="onnxruntime/cpu intermediates")
            values = isolate.call_isolated(onnx_intermediates, spec, sample, what=f"{spec.label} intermediates")
            result["against_cpu"] = first_differing_value(reference, values)
        else:
            values = isolate.call_isolated(onnx_intermediates, spec, sample, what=f"{spec.label} intermediates")
            result["activation"] = first_divergence(eager_layer_outputs(eager_model, sample), values)
            result["weights"] = weight_differences(onnx_weights(spec.model_path), names, state_dict_arrays(eager_model))
    except (isolate.ChildCrashed, isolate.ChildFailed) as err:
        result["error"] = str(err)
    return result


def stored_weight_differences(root: Path) -> list[dict]:
    """An imported program's parameters (inference.pdiparams, read by Paddle) that differ from the
    ONNX initializers of the same name (paddle2onnx keeps the names of the weights it does not fold)."""
    initializers = onnx_weights(str(root / ONNX_FILE))
    stored = isolate.call_isolated(paddle_weights, str(root), list(initializers), what=f"read {PADDLE_PARAMS}")
    return weight_differences(stored, {name: name for name in stored}, initializers)


def changed_weights(root: Path, rel: str, manifest: Manifest, eager_model) -> dict:
    """A weights file failed integrity: which of its stored weights differ from the model's, by name,
    whether or not parity notices (a flipped low-order bit may not)."""
    from .models.weights import state_dict_arrays

    names = manifest.paddle_param_names
    result: dict = {"file": rel}
    try:
        if rel == PADDLE_PARAMS:
            stored = isolate.call_isolated(paddle_weights, str(root), list(names), what=f"read {rel}")
        else:
            stored = isolate.call_isolated(onnx_weights, str(root / rel), what=f"read {rel}")
    except (isolate.ChildCrashed, isolate.ChildFailed) as err:
        result["error"] = str(err)
        return result
    # Exact: the stored weights are bit for bit what the export saved from this same model.
    result["weights"] = weight_differences(stored, names, state_dict_arrays(eager_model), rtol=0.0)
    return result
