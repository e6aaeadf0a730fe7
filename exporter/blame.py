"""Which component is wrong when a row disagrees, decided by evidence, and what the artifact does about it.

- A Paddle Inference configuration that runs but computes something else than the model (Paddle
  Inference 3.3's oneDNN path on a ConvNeXt-style channel LayerNorm after a residual addition) is
  told apart from the artifact by the next configuration of the same program: where oneDNN off
  agrees with the eager model, oneDNN is what is wrong, the export goes on in the configuration that
  agrees, and the manifest and the deploy config say which one the deploy must use
  (`paddle_until_right`, `workaround`, `deploy_rows`). Where Paddle Inference is itself the reference
  (an imported program), its run is cross-checked against the program run as written, oneDNN and IR
  optimisation off (`literal_checked`).
- An ONNX file that disagrees with the eager model while Paddle Inference, on the very program
  paddle2onnx converted, agrees is paddle2onnx's error: the refusal says so, with the first diverging
  layer and ONNX node (`paddle2onnx_refusal`).

Importable without Paddle: it runs rows through `cnnexport.run`, each runtime in its own child.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .plan import Row
from .results import RowResult
from .run import Outcome, judge_row, run_row
from .runtimes import CPU_PADDLE_CONFIGS, GPU_PADDLE_CONFIGS, PADDLECLAS_DEPLOY_CONFIG, PaddleConfig

# PaddleClas's deploy predictor with `Global.enable_mkldnn: False`: how it is told to avoid oneDNN.
PADDLECLAS_DEPLOY_NO_ONEDNN = dataclasses.replace(PADDLECLAS_DEPLOY_CONFIG, name="paddleclas-deploy-no-onednn",
                                                  onednn=False)


def paddle_until_right(row: Row, inputs: dict[str, np.ndarray], expected: dict,
                       wrong: list[dict]) -> tuple[Outcome, RowResult]:
    """Run a Paddle Inference row of the smoke check, its configurations in order as verify tries them,
    going on past one that runs but disagrees with `expected` (appended to `wrong`, with its figures)
    until one agrees; the result of the first that agrees, else of the first that ran. A row without
    fallbacks (PaddleClas's deploy configuration) runs once, without oneDNN where it was found wrong."""
    if not row.fallbacks:
        row = avoiding(row, wrong)
        outcome = run_row(row, inputs, None)
        return outcome, judge_row(row, outcome, expected)
    attempts, first = row.attempts, None
    while attempts:
        tried = dataclasses.replace(row, fallbacks=attempts)
        outcome = run_row(tried, inputs, None)
        result = judge_row(tried, outcome, expected)
        if result.passed or outcome.ran is None:
            return (outcome, result) if result.passed or first is None else first
        wrong.append(_wrong_config(outcome, result))
        first = first or (outcome, result)
        attempts = attempts[attempts.index(outcome.ran) + 1:]
    return first


def _wrong_config(outcome: Outcome, result: RowResult) -> dict:
    """The record of a Paddle Inference configuration that ran and disagreed: its name and figures."""
    return {"config": outcome.ran.config_name, "rel_l2": result.worst["rel_l2"], "max_abs": result.worst["max_abs"],
            "top1": result.worst["top1"]}


def avoiding(row: Row, wrong: list[dict]) -> Row:
    """`row` without the Paddle Inference configurations found wrong: its fallbacks less those (by name),
    and PaddleClas's deploy configuration without oneDNN where a oneDNN configuration was wrong."""
    names = {w["config"] for w in wrong}
    if not names:
        return row
    if row.fallbacks:
        kept = tuple(spec for spec in row.fallbacks if spec.config_name not in names)
        return dataclasses.replace(row, fallbacks=kept or row.fallbacks)
    config = row.spec.paddle_config
    if config == PADDLECLAS_DEPLOY_CONFIG and any(onednn_config(name) for name in names):
        return dataclasses.replace(row, spec=dataclasses.replace(row.spec, paddle_config=PADDLECLAS_DEPLOY_NO_ONEDNN))
    return row


def _config(name: str) -> PaddleConfig | None:
    return next((c for c in (*CPU_PADDLE_CONFIGS, *GPU_PADDLE_CONFIGS) if c.name == name), None)


def onednn_config(name: str) -> bool:
    return bool(getattr(_config(name), "onednn", False))


def workaround(wrong: list[dict], right: str | None, against: str = "the eager model") -> dict | None:
    """What the manifest (formats.paddle.inference_config) and the deploy config record when a Paddle
    Inference configuration computed wrongly and `right` agreed with the model; None when none was wrong."""
    config = _config(right) if wrong and right else None
    if config is None:
        return None
    figures = "; ".join(f"{w['config']} rel L2 {w['rel_l2']:.2e}, top-1 {w['top1']:.0%}" for w in wrong)
    settings = [] if config.onednn else ["oneDNN off (PaddleClas: Global.enable_mkldnn: False; PaddleX: "
                                         "run_mode='paddle'; Config.disable_mkldnn())"]
    settings += [] if config.ir_optim else ["IR optimisation off (Config.switch_ir_optim(False))"]
    return {"config": right, "enable_mkldnn": config.onednn, "ir_optim": config.ir_optim, "wrong": wrong,
            "why": f"Paddle Inference computes this model wrongly in {figures} against {against} "
                   f"and right in {right}: deploy it with {' and '.join(settings) or 'that configuration'}"}


def deploy_rows(rows: list[Row], manifest) -> tuple[list[Row], list[str]]:
    """Verify's rows with the Paddle Inference configurations the export found wrong left out, so that the
    configuration the artifact is deployed in is the one judged; and the note that says so."""
    recorded = (manifest.formats.get("paddle") or {}).get("inference_config")
    if not recorded:
        return rows, []
    return ([avoiding(row, recorded["wrong"]) if row.spec.kind == "paddle-inference" else row for row in rows],
            [f"Paddle Inference is judged as the artifact is deployed: {recorded['why']}"])


def recorded_workaround(smoke_records: list[dict]) -> dict | None:
    """The workaround the smoke check found for the Paddle program (its record with `wrong_configs`), if any."""
    return next((workaround(rec["wrong_configs"], rec.get("config")) for rec in smoke_records if rec.get("wrong_configs")),
                None)


def deploy_config_with(text: str, fix: dict) -> str:
    """The deploy config with the Paddle Inference settings the deploy must use, in its `cnnexport` section
    (which PaddleClas and PaddleX ignore: the section says what to set in theirs)."""
    import yaml

    config = yaml.safe_load(text)
    config.setdefault("cnnexport", {})["paddle_inference"] = {
        "enable_mkldnn": fix["enable_mkldnn"], "ir_optim": fix["ir_optim"], "why": fix["why"]}
    return yaml.safe_dump(config, sort_keys=False)


def unsimplified_output(program: str, params: str, opset: int, batch: np.ndarray) -> np.ndarray:
    """The first output of paddle2onnx's graph, as converted (not simplified), on `batch`, in ONNX Runtime
    on the CPU (call it in a child)."""
    from .onnx_tools import converted, run_onnx
    return run_onnx(converted(program, params, opset), batch)[0]


def paddle2onnx_refusal(onnx_result: RowResult, paddle_records: list[dict], eager_model, onnx_path: str,
                        batch: np.ndarray, expected: np.ndarray) -> str:
    """The refusal when the ONNX file disagrees with the eager model (`expected` on `batch`) while Paddle
    Inference, on the very program paddle2onnx converted, agrees. Whose error it is: paddle2onnx's where
    its graph as converted is off too, onnxslim's where that agrees. Names the first eager layer whose
    output the ONNX graph does not reproduce, and its ONNX node (`divergence.first_divergence`, the ONNX
    values computed by ONNX Runtime in a child)."""
    import onnx

    from . import isolate
    from .compare import CPU_FP32, rel_l2
    from .divergence import eager_layer_outputs, first_divergence, onnx_intermediates
    from .runtimes import RuntimeSpec, paddle_model_files

    paddle = "; ".join(f"{rec['runtime']} rel {rec['rel_l2']:.1e}" for rec in paddle_records)
    program, params = paddle_model_files(Path(onnx_path).parent)
    try:
        raw = rel_l2(expected, isolate.call_isolated(unsimplified_output, str(program), str(params),
                                                     onnx.load(onnx_path).opset_import[0].version, batch,
                                                     what="paddle2onnx's graph, unsimplified"))
    except (isolate.ChildCrashed, isolate.ChildFailed):
        raw = None
    if raw is not None and raw <= CPU_FP32.rel_l2:
        return (f"onnxslim simplified the graph wrongly: {onnx_result.runtime} is off by rel L2 "
                f"{onnx_result.worst['rel_l2']:.2e} from the eager model, while paddle2onnx's graph as converted "
                f"agrees (rel {raw:.1e}), as does Paddle Inference ({paddle})")
    where = "no layer of the eager model to align it with"
    if eager_model is not None:
        try:
            values = isolate.call_isolated(onnx_intermediates, RuntimeSpec("onnxruntime", onnx_path), batch[:1],
                                           what="onnxruntime/cpu intermediates")
            found = first_divergence(eager_layer_outputs(eager_model, batch[:1]), values)
        except (isolate.ChildCrashed, isolate.ChildFailed) as err:
            found, where = None, f"its intermediate values could not be computed ({err})"
        if found:
            where = (f"first diverging layer {found['layer']} ({found['layer_type']}, after {found['after']})"
                     + (f", ONNX node {found['onnx_node']} ({found['op_type']}, rel L2 {found['rel_error']:.1e})"
                        if "onnx_node" in found else ""))
        elif eager_model is not None and "could not" not in where:
            where = "every eager layer's output has a counterpart in the ONNX graph (the divergence is in its last ops)"
    unsimplified = f", and its graph unsimplified by rel L2 {raw:.2e}" if raw is not None else ""
    return (f"paddle2onnx converted the model wrongly: {onnx_result.runtime} is off by rel L2 "
            f"{onnx_result.worst['rel_l2']:.2e} from the eager model{unsimplified}, while Paddle Inference on the "
            f"program it converted agrees ({paddle}); {where}")


LITERAL = "the program run as written (oneDNN and IR optimisation off)"


def literal_checked(row: Row, inputs: dict[str, np.ndarray]) -> tuple[Outcome, dict | None]:
    """Paddle Inference as the reference, where there is no eager model (an imported program): the row's
    first configuration that runs, cross-checked against the program run as written (its last
    configuration: no oneDNN, no IR optimisation). Where they disagree, the optimisation is what is wrong
    (it rewrites the program; the literal run executes its ops one by one): the literal run is the
    reference, the configurations between are tried in turn against it, and the workaround (the first
    that agrees) is returned for the manifest."""
    outcome = run_row(row, inputs, None)
    literal = row.attempts[-1]
    if outcome.ran is None or outcome.ran == literal:
        return outcome, None
    truth = run_row(dataclasses.replace(row, fallbacks=(literal,)), inputs, None)
    if truth.ran is None:
        return outcome, None
    wrong, attempts = [], row.attempts
    while outcome.ran is not None and outcome.ran != literal:
        result = judge_row(dataclasses.replace(row, fallbacks=(outcome.ran,)), outcome, truth.outputs)
        if result.passed:
            break
        wrong.append(_wrong_config(outcome, result))
        attempts = attempts[attempts.index(outcome.ran) + 1:]
        outcome = run_row(dataclasses.replace(row, fallbacks=attempts), inputs, None)
    if outcome.ran is None:
        outcome = truth
    return outcome, workaround(wrong, outcome.ran.config_name, LITERAL)
