"""`cnnexport DIR`: import a model that is already a Paddle inference directory, as `paddle.jit.save`,
PaddleClas's `export_model.py` and PaddleX write it (`NAME.json` or `NAME.pdmodel` beside
`NAME.pdiparams`, and their `inference.yml` where there is one).

There is no eager model: the artifact holds the original program and parameters (renamed to the
flat layout's `inference.*`), and Paddle Inference on them is the reference every other format is
judged against. The deploy config is the directory's own `inference.yml` when it has one (its
input size and normalisation are read from it), else one written from `--img-size`, `--mean` and
`--std`; a program whose input fixes H and W (`InputSpec([None, 3, S, S])`) says the size itself,
and any two of these that are given must agree. Every file is checked before use: the config is
YAML of the PaddleClas/PaddleX schema and a bounded size, the program is of a bounded size and
first run by Paddle Inference in a child process, so a crafted file that crashes Paddle is a
refusal, not our death.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .artifact import LEGACY_PROGRAM, PADDLE_PARAMS, PADDLE_PROGRAM, input_section, sha256
from .errors import BadInput

DEPLOY_CONFIG_NAME = "inference.yml"
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000  # a PaddleClas inference.yml holds about 50; a 100,000-class label_list fits
MAX_PROGRAM_BYTES = 64 << 20  # ResNet-50's program is 170 kB (JSON), 80 kB (protobuf); DenseNet-201's 0.7 MB
PIR_DATA_OPS = ("1.data", "pd_op.data")  # a Paddle 3 program's input op, with its dialect's number or its name
IMPORTED_FAMILY = "paddle-inference"  # the manifest's family for an imported directory


def find_program(directory: Path) -> tuple[Path, Path]:
    """(program, params): the one `NAME.json` or `NAME.pdmodel` with a `NAME.pdiparams` beside it
    (`inference` first; a Paddle 3 program before a legacy one of the same name)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BadInput(f"{directory} is not a directory: give a zoo name, module.path:callable, or a directory "
                       "holding a Paddle inference model")
    pairs = {}
    for params in sorted(directory.glob("*.pdiparams")):
        for suffix in (".json", ".pdmodel"):
            program = params.with_suffix(suffix)
            if program.is_file() and not program.is_symlink() and params.is_file() and not params.is_symlink():
                pairs.setdefault(params.stem, (program, params))
    if not pairs:
        raise BadInput(f"{directory} holds no Paddle inference model (NAME.json or NAME.pdmodel beside "
                       "NAME.pdiparams, as paddle.jit.save and PaddleClas/PaddleX export write it)")
    if "inference" in pairs:
        return pairs["inference"]
    if len(pairs) > 1:
        raise BadInput(f"{directory} holds {len(pairs)} Paddle models ({', '.join(sorted(pairs))}): give a directory "
                       "with one")
    return next(iter(pairs.values()))


def _number(value, what: str, path: Path) -> float:
    """A YAML number, or PaddleClas's "1.0/255.0" spelling of one (which it eval()s; read here as a fraction)."""
    try:
        if isinstance(value, str):
            numerator, _, denominator = value.replace(" ", "").partition("/")
            number = float(numerator) / float(denominator or 1)
        else:
            number = float(value)
    except (ValueError, ZeroDivisionError, TypeError):
        number = float("nan")
    if isinstance(value, bool) or not number == number or abs(number) == float("inf"):
        raise BadInput(f"{path}: {what} is {value!r}, not a number: fix the deploy config or remove it and give --img-size")
    return number


def read_deploy_config(path: Path) -> dict:
    """The input side and normalisation from a PaddleClas/PaddleX `inference.yml`: the crop (or the
    resize) size, NormalizeImage's scale, mean and std; and the top-k's class names. Anything else
    in it is theirs and kept as it is."""
    import yaml

    from .models.registry import MAX_INPUT_SIZE

    def bad(what: str) -> BadInput:
        return BadInput(f"{path} is not a PaddleClas/PaddleX deploy config ({what}): fix it, or remove it and give "
                        "--img-size")

    if path.is_symlink() or path.stat().st_size > MAX_CONFIG_BYTES:
        raise bad(f"a symbolic link or larger than {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        text = path.read_bytes().decode("utf-8")
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is not None and _expanded_nodes(root) > MAX_CONFIG_NODES:
                raise bad(f"more than {MAX_CONFIG_NODES:,} values once its aliases are expanded (an alias bomb?)")
            config = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        raise bad(" ".join(str(err).split())[:200]) from None
    preprocess = config.get("PreProcess") if isinstance(config, dict) else None
    ops = preprocess.get("transform_ops") if isinstance(preprocess, dict) else None
    if not isinstance(ops, list) or not all(isinstance(op, dict) and len(op) == 1 for op in ops):
        raise bad("no PreProcess.transform_ops list of one-key operators")
    ops = {name: args or {} for op in ops for name, args in op.items()}
    if not all(isinstance(args, dict) for args in ops.values()):
        raise bad("an operator's arguments are not a mapping")
    size = ops.get("CropImage", {}).get("size") or ops.get("ResizeImage", {}).get("size")
    if isinstance(size, list) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_INPUT_SIZE):
        raise bad(f"the crop or resize size {_short(size)} is not one integer from 1 to {MAX_INPUT_SIZE} "
                  "(cnnexport takes square inputs, of the sizes its zoo takes)")
    normalize = ops.get("NormalizeImage", {})
    out = {"text": text, "size": size, "scale": _number(normalize.get("scale", 1 / 255), "NormalizeImage.scale", path)}
    for key in ("mean", "std"):
        if key in normalize:
            values = normalize[key]
            if not isinstance(values, list) or len(values) != 3:
                raise bad(f"NormalizeImage.{key} is not three numbers")
            out[key] = [_number(v, f"NormalizeImage.{key}", path) for v in values]
    if any(s <= 0 for s in out.get("std", [1])) or out["scale"] <= 0:
        raise bad("NormalizeImage's scale and std must be above 0")
    post = config.get("PostProcess")
    labels = post.get("Topk", {}).get("label_list") if isinstance(post, dict) and isinstance(post.get("Topk"), dict) else None
    out["labels"] = labels if isinstance(labels, list) and all(isinstance(n, str) for n in labels) else None
    return out


def _expanded_nodes(root) -> int:
    """How many YAML values the document holds with every alias expanded (each node counted once
    per place it appears), computed without expanding: a few kB of nested aliases can name billions."""
    import yaml

    counted: dict[int, int] = {}

    def count(node) -> int:
        if id(node) not in counted:
            counted[id(node)] = 1  # a node that (through an alias) holds itself counts once
            if isinstance(node, yaml.SequenceNode):
                counted[id(node)] += sum(count(child) for child in node.value)
            elif isinstance(node, yaml.MappingNode):
                counted[id(node)] += sum(count(key) + count(value) for key, value in node.value)
        return counted[id(node)]

    return count(root)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def program_input_size(program: Path) -> tuple[int, int] | None:
    """The (H, W) that the program's one input fixes; None where H or W is dynamic (-1), or where the
    file does not read as a program at all (no JSON/protobuf, no op list, no input op: Paddle
    Inference, run on it later, is the judge of that file). An input that is there but is not one
    [N, 3, H, W] of sizes cnnexport takes is a BadInput. A Paddle 3 program (`NAME.json`) declares
    it as `program.regions[0].blocks[0].ops[i]` with `"#": "1.data"` and an attribute
    `{"N": "shape", "AT": {"#": "1.a_intarray", "D": [-1, 3, 64, 64]}}`; a legacy one
    (`NAME.pdmodel`, a ProgramDesc) as a `feed` op of block 0 whose output `Out` names a var of
    block 0 with `type.dense_tensor.tensor.dims`."""
    from .models.registry import MAX_INPUT_SIZE

    def bad(what: str) -> BadInput:
        return BadInput(f"{program} {what}: re-save the model with one InputSpec([None, 3, S, S]) (or with dynamic "
                        "H, W and give --img-size)")

    try:
        with open(program, "rb") as file:
            raw = file.read(MAX_PROGRAM_BYTES + 1)
    except OSError as err:
        raise BadInput(f"cannot read {program} ({err.strerror}): check the file and its permissions") from None
    if len(raw) > MAX_PROGRAM_BYTES:
        raise BadInput(f"{program} is larger than {MAX_PROGRAM_BYTES >> 20} MiB, far beyond any CNN's program: "
                       "give the directory of a Paddle inference model")
    if program.suffix == ".json":
        import json
        try:
            ops = json.loads(raw)["program"]["regions"][0]["blocks"][0]["ops"]
        except (ValueError, RecursionError, LookupError, TypeError):  # not JSON, or not a program's layout
            return None
        inputs = []
        for op in ops if isinstance(ops, list) else []:
            if isinstance(op, dict) and op.get("#") in PIR_DATA_OPS:
                attrs = {a.get("N"): a.get("AT") for a in op["A"] if isinstance(a, dict)} \
                    if isinstance(op.get("A"), list) else {}
                name, shape = (attrs.get(key).get("D") if isinstance(attrs.get(key), dict) else None
                               for key in ("name", "shape"))
                inputs.append((name, shape))
    else:
        try:
            from google.protobuf.message import DecodeError
            from paddle.base.proto import framework_pb2
        except ImportError:
            raise BadInput(f"reading the legacy program {program} needs Paddle: pip install paddlepaddle") from None
        desc = framework_pb2.ProgramDesc()
        try:
            desc.ParseFromString(raw)
        except (DecodeError, RecursionError, ValueError, RuntimeError):  # not a ProgramDesc
            return None
        if not desc.blocks:
            return None
        block = desc.blocks[0]
        feeds = [op for op in block.ops if op.type == "feed"]
        var_names = [next((list(o.arguments) for o in op.outputs if o.parameter == "Out"), []) for op in feeds]
        variables = {v.name: v for v in block.vars}
        inputs = []
        for names in var_names:
            var = variables.get(names[0]) if len(names) == 1 else None
            dense = var is not None and var.type.HasField("dense_tensor")
            inputs.append((names[0] if names else None, list(var.type.dense_tensor.tensor.dims) if dense else None))
    if not inputs:
        return None
    if len(inputs) > 1:
        raise bad(f"has {len(inputs)} inputs ({_short([n for n, _ in inputs])}), not one image batch")
    name, shape = inputs[0]
    what = f"input {_short(name)}"
    if not isinstance(shape, list) or not all(d is None or type(d) is int for d in shape):
        raise bad(f"declares {what} with the shape {_short(shape)}, not a list of integers")
    dims = [-1 if d is None else d for d in shape]
    if len(dims) != 4:
        raise bad(f"declares {what} of rank {len(dims)} ({_short(dims)}), not [N, 3, H, W]")
    if dims[1] != 3:
        raise bad(f"declares {what} with channel count {dims[1]} ({_short(dims)}), not 3 (cnnexport takes RGB images)")
    if any(d < -1 or d == 0 for d in dims) or any(d > MAX_INPUT_SIZE for d in dims[2:]):
        raise bad(f"declares {what} as {_short(dims)}: each size must be -1 (dynamic) or 1..{MAX_INPUT_SIZE} px "
                  "(the batch 1 or more)")
    return None if -1 in dims[2:] else (dims[2], dims[3])


def _input_size(directory: Path, program: Path, config: dict, img_size: int | None) -> int:
    """The input side: the deploy config's, the program's fixed one, or --img-size; any two given must agree."""
    fixed = program_input_size(program)
    if fixed and fixed[0] != fixed[1]:
        raise BadInput(f"{program} fixes a non-square input, {fixed[0]}x{fixed[1]} (H x W): cnnexport exports square "
                       "inputs; re-save the model with InputSpec([None, 3, S, S]) or with dynamic H, W")
    side, size = fixed[0] if fixed else None, config.get("size")
    if size is not None and side is not None and size != side:
        raise BadInput(f"{directory / DEPLOY_CONFIG_NAME} says size {size} but {program} fixes the input at "
                       f"{side}x{side}: make the deploy config's size {side}, or re-save the program")
    if size is not None and img_size is not None and size != img_size:
        raise BadInput(f"--img-size {img_size} contradicts {directory / DEPLOY_CONFIG_NAME} (size {size}): "
                       "leave --img-size out")
    if side is not None and img_size is not None and img_size != side:
        raise BadInput(f"--img-size {img_size} contradicts {program}, whose input is fixed at {side}x{side}: "
                       "leave --img-size out")
    size = size or side or img_size
    if size is None:
        raise BadInput(f"{directory} has no {DEPLOY_CONFIG_NAME} saying the input size: give --img-size "
                       f"(no fixed input height and width could be read from its program {program.name})")
    return size


def validate_import(opts) -> None:
    """An imported directory's own checks (before any work): a Paddle model in it, a deploy config
    that reads, an input size from one of them (or --img-size), options that apply, a target that is not the source."""
    directory = Path(opts.model)
    program, _ = find_program(directory)
    for option, given in (("--fuse", opts.fuse), ("--weights", opts.weights), ("--num-classes", opts.num_classes),
                          ("--seed-compat", opts.seed_compat), ("--model-kwargs", opts.model_kwargs is not None)):
        if given:
            raise BadInput(f"{option} does not apply to an imported Paddle inference directory (it has no eager "
                           "layers): rewrite and export the model from its code, e.g. as module.path:callable")
    if opts.labels:
        raise BadInput("--labels does not apply to an imported Paddle inference directory: its own inference.yml "
                       "(copied as it is) names the classes")
    _input_size(directory, program, _config_of(directory), opts.img_size)
    target, source = opts.target().absolute().resolve(), directory.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise BadInput(f"--out {opts.target()} would overlap the directory being imported: choose another --out")


def _config_of(directory: Path) -> dict:
    path = directory / DEPLOY_CONFIG_NAME
    return read_deploy_config(path) if path.exists() else {}


def describe_import(opts) -> dict:
    """What the artifact says of an imported directory: its program and parameters, the input spec
    (from its deploy config, its program or the options), its deploy config if any, and the manifest's
    `model` and `weights` sections."""
    from .models.registry import IMAGENET_MEAN, IMAGENET_STD

    directory = Path(opts.model)
    program, params = find_program(directory)
    config = _config_of(directory)
    size = _input_size(directory, program, config, opts.img_size)
    spec = input_section(opts.static_batch, size, config.get("mean") or opts.mean or IMAGENET_MEAN,
                         config.get("std") or opts.std or IMAGENET_STD, config.get("scale", 1 / 255))
    return {
        "program": program, "params": params, "input_spec": spec, "config": config,
        "model": {"name": directory.resolve().name, "family": IMPORTED_FAMILY, "kwargs": {}, "fused": False,
                  "source": "paddle-inference",
                  "origin": {"directory": str(directory.resolve()), "program": program.name, "params": params.name,
                             "deploy_config": DEPLOY_CONFIG_NAME if config else None}},
        "weights": {"path": str(params.resolve()), "sha256": sha256(params), "init_seed": None},
    }


def copy_programs(program: Path, params: Path, stage: Path) -> tuple[dict, str | None]:
    """The original program and parameters under the flat layout's names; (no Paddle-name map: there
    is no state dict, why there is no legacy program or None)."""
    legacy = program.suffix == ".pdmodel"
    shutil.copyfile(program, stage / (LEGACY_PROGRAM if legacy else PADDLE_PROGRAM))
    shutil.copyfile(params, stage / PADDLE_PARAMS)
    return {}, None if legacy else "the imported model is a Paddle 3 program"
