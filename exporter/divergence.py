"""Where two computations of the same model part ways.

Two views, both in graph order:
- activations: the eager Paddle model's layer outputs (forward hooks) against the ONNX graph's
  intermediate values (every node output exposed to ONNX Runtime). They are aligned monotonically
  by shape and value; the first divergence is the first layer after which nothing matches again,
  so layers that a converter fused away are not mistaken for errors.
- weights: the parameters stored in an artifact (ONNX initializers, Paddle's inference.pdiparams)
  against the eager model's, through the Paddle-name -> state-dict-name map in the manifest.
"""
from __future__ import annotations

import numpy as np

MATCH_RTOL = 1e-4  # intermediate tensors: float32 rounding accumulates, a real error is far larger


def rel_error(ref: np.ndarray, other: np.ndarray) -> float:
    norm = float(np.linalg.norm(ref))
    diff = float(np.linalg.norm(np.asarray(other, np.float64) - ref))
    return diff / norm if norm > 0 else diff


def eager_layer_outputs(model, batch: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(layer path, layer type, output) for every sublayer call, in the order the calls finish."""
    import paddle

    records = []

    def hook(name):
        def record(layer, inputs, output):
            if isinstance(output, paddle.Tensor):
                records.append((name, type(layer).__name__, output.numpy()))
        return record

    handles = [layer.register_forward_post_hook(hook(name)) for name, layer in model.named_sublayers()]
    try:
        with paddle.no_grad():
            model(paddle.to_tensor(batch))
    finally:
        for h in handles:
            h.remove()
    return records


def onnx_intermediates(onnx_path: str, batch: np.ndarray) -> list[dict]:
    """Every node output of the graph, in node order, with the node that made it. Runs ONNX Runtime
    on a copy of the graph whose outputs are all intermediate values (call it in a child)."""
    import onnx

    from .runtimes import RuntimeSpec, ort_session

    model = onnx.load(onnx_path)
    initializers = {i.name for i in model.graph.initializer}
    values = []
    existing = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for out in node.output:
            values.append({"value": out, "node": node.name, "op": node.op_type,
                           "weights": [i for i in node.input if i in initializers]})
            if out and out not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=out))
    session = ort_session(RuntimeSpec("onnxruntime", onnx_path), model.SerializeToString())
    names = [o.name for o in session.get_outputs()]
    arrays = dict(zip(names, session.run(names, {session.get_inputs()[0].name: batch})))
    return [dict(v, array=arrays[v["value"]]) for v in values if v["value"] in arrays]


def first_divergence(eager: list[tuple[str, str, np.ndarray]], onnx_values: list[dict]) -> dict | None:
    """The first eager layer after which no eager output has a counterpart in the ONNX values."""
    matched = []
    cursor = 0
    for index, (_, _, out) in enumerate(eager):
        for k in range(cursor, len(onnx_values)):
            candidate = onnx_values[k]["array"]
            if candidate.shape == out.shape and rel_error(out, candidate) <= MATCH_RTOL:
                matched.append(index)
                cursor = k
                break
    last_match = matched[-1] if matched else -1
    if last_match == len(eager) - 1:
        return None
    name, layer_type, out = eager[last_match + 1]
    same_shape = [v for v in onnx_values[cursor:] if v["array"].shape == out.shape]
    best = min(same_shape, key=lambda v: rel_error(out, v["array"]), default=None)
    report = {"layer": name, "layer_type": layer_type,
              "after": eager[last_match][0] if matched else "(input)"}
    if best is not None:
        report.update(onnx_node=best["node"], op_type=best["op"], weights=best["weights"],
                      rel_error=rel_error(out, best["array"]),
                      max_abs=float(np.abs(best["array"] - out).max()))
    return report


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
        err = rel_error(ref, array)
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

    from .runtimes import paddle_model_files

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
