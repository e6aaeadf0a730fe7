"""`cnnexport DIR`: import a model that is already a Paddle inference directory, as `paddle.jit.save`,
PaddleClas's, PaddleOCR's and PaddleSeg's export tools and PaddleX write it (`NAME.json` or
`NAME.pdmodel` beside `NAME.pdiparams`, and their deploy config where there is one). The model may
have several outputs of any rank (a segmentation map, a text detector's probability map, logits and
features), and its input a dynamic height and width.

There is no eager model: the artifact holds the original program and parameters (renamed to the
flat layout's `inference.*`), and Paddle Inference on them is the reference every other format is
judged against. The input size and normalisation are read from the directory's deploy config:
PaddleClas's, PaddleX's or PaddleOCR's `inference.yml` (kept as the artifact's), or PaddleSeg's
`deploy.yaml`; else the artifact's `inference.yml` is written from `--img-size`, `--mean` and
`--std`. A program whose input fixes H and W says the size itself, and any two of these that are
given must agree; a program of dynamic H and W is checked at each `--img-size` given. Every file
is checked before use: the config is YAML of those tools' schemas and a bounded size, the program
is of a bounded size and first run by Paddle Inference in a child process, so a crafted file that
crashes Paddle is a refusal, not our death.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .artifact import LEGACY_PROGRAM, PADDLE_PARAMS, PADDLE_PROGRAM, input_section, sha256
from .errors import BadInput
from .images import size_name

DEPLOY_CONFIG_NAME = "inference.yml"
SEG_DEPLOY_CONFIG_NAME = "deploy.yaml"  # PaddleSeg's export writes it beside model.pdmodel/model.json
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


def _load_yaml(path: Path, bad) -> tuple[str, object]:
    """A deploy config's text and YAML, read safely: no links, a bounded size, no alias bomb, no Python tags."""
    import yaml

    if path.is_symlink() or path.stat().st_size > MAX_CONFIG_BYTES:
        raise bad(f"a symbolic link or larger than {MAX_CONFIG_BYTES >> 20} MiB")
    try:
        text = path.read_bytes().decode("utf-8")
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is not None and _expanded_nodes(root) > MAX_CONFIG_NODES:
                raise bad(f"more than {MAX_CONFIG_NODES:,} values once its aliases are expanded (an alias bomb?)")
            return text, loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        raise bad(" ".join(str(err).split())[:200]) from None


def _side_pair(value, order: str, bad) -> tuple[int, int] | None:
    """(height, width) from a config's size: one side, or a pair in `order` ("wh": [width, height] as
    PaddleClas's ResizeImage/CropImage and PaddleSeg's Resize take it; "chw": PaddleOCR's image_shape)."""
    from .models.registry import MAX_INPUT_SIZE

    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, list) and len(value) == len(order) and all(type(v) is int for v in value):
        pair = (value[1], value[0]) if order == "wh" else (value[1], value[2])
    else:
        pair = None
    if pair is None or not all(1 <= side <= MAX_INPUT_SIZE for side in pair):
        pair_form = "[width, height]" if order == "wh" else "[3, height, width]"
        raise bad(f"the crop or resize size {_short(value)} is not a side or {pair_form} of integers from 1 to "
                  f"{MAX_INPUT_SIZE}")
    return pair


def _normalisation(normalize: dict, path: Path, bad, default: dict) -> dict:
    """scale, mean and std of a NormalizeImage (or PaddleSeg Normalize) operator, `default` where absent."""
    out = {"scale": _number(normalize.get("scale", 1 / 255), "the normalisation's scale", path)}
    for key in ("mean", "std"):
        values = normalize.get(key, default.get(key))
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != 3:
            raise bad(f"the normalisation's {key} is not three numbers")
        out[key] = [_number(v, f"the normalisation's {key}", path) for v in values]
    if any(s <= 0 for s in out.get("std", [1])) or out["scale"] <= 0:
        raise bad("the normalisation's scale and std must be above 0")
    return out


def read_deploy_config(path: Path) -> dict:
    """The input side and normalisation from a PaddleClas, PaddleX or PaddleOCR `inference.yml`: the
    crop or resize size (or a text recogniser's image_shape; a text detector resizes to any size:
    none), the decoded colour order, NormalizeImage's scale, mean and std; and the top-k's class
    names. Anything else in it is theirs and kept as it is."""
    def bad(what: str) -> BadInput:
        return BadInput(f"{path} is not a PaddleClas/PaddleX deploy config ({what}): fix it, or remove it and "
                        "give --img-size")

    text, config = _load_yaml(path, bad)
    preprocess = config.get("PreProcess") if isinstance(config, dict) else None
    ops = preprocess.get("transform_ops") if isinstance(preprocess, dict) else None
    if not isinstance(ops, list) or not all(isinstance(op, dict) and len(op) == 1 for op in ops):
        raise bad("no PreProcess.transform_ops list of one-key operators")
    ops = {name: args or {} for op in ops for name, args in op.items()}
    if not all(isinstance(args, dict) for args in ops.values()):
        raise bad("an operator's arguments are not a mapping")
    size = (_side_pair(ops.get("CropImage", {}).get("size"), "wh", bad)
            or _side_pair(ops.get("ResizeImage", {}).get("size"), "wh", bad)
            or _side_pair(ops.get("RecResizeImg", {}).get("image_shape"), "chw", bad))
    color = ops.get("DecodeImage", {}).get("img_mode", "RGB")
    out = {"text": text, "size": size, "color": color if color in ("RGB", "BGR") else "RGB",
           **_normalisation(ops.get("NormalizeImage", {}), path, bad, {})}
    post = config.get("PostProcess")
    labels = post.get("Topk", {}).get("label_list") if isinstance(post, dict) and isinstance(post.get("Topk"), dict) else None
    out["labels"] = labels if isinstance(labels, list) and all(isinstance(n, str) for n in labels) else None
    return out


def read_seg_deploy_config(path: Path) -> dict:
    """The input size and normalisation from a PaddleSeg `deploy.yaml` (`Deploy.transforms`: a Resize's
    target_size [width, height], a Normalize's mean and std, 0.5 each by default, on 0..1 values)."""
    def bad(what: str) -> BadInput:
        return BadInput(f"{path} is not a PaddleSeg deploy config ({what}): fix it, or remove it and give --img-size")

    _, config = _load_yaml(path, bad)
    deploy = config.get("Deploy") if isinstance(config, dict) else None
    transforms = deploy.get("transforms") if isinstance(deploy, dict) else None
    if not isinstance(transforms, list) or not all(isinstance(t, dict) and isinstance(t.get("type"), str)
                                                   for t in transforms):
        raise bad("no Deploy.transforms list of operators with a type")
    ops = {t["type"]: t for t in transforms}
    normalize = ops.get("Normalize")
    return {"size": _side_pair(ops.get("Resize", {}).get("target_size"), "wh", bad), "color": "RGB", "labels": None,
            **_normalisation(normalize or {}, path, bad, {"mean": [0.5] * 3, "std": [0.5] * 3} if normalize else {})}


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


def _input_sizes(directory: Path, program: Path, config: dict, sizes: list[tuple[int, int]] | None,
                 given: str | None) -> tuple[list[tuple[int, int]], bool]:
    """(the sizes to check, whether the program's H and W are dynamic): the program's fixed size, else
    --img-size's sizes, else the deploy config's; any two given must agree (a dynamic program's
    deploy size must be among the --img-size sizes)."""
    fixed = program_input_size(program)
    wanted = config.get("size")
    where = directory / config.get("file", DEPLOY_CONFIG_NAME)
    if wanted is not None and fixed is not None and wanted != fixed:
        raise BadInput(f"{where} says size {size_name(wanted)} but {program} fixes the input at "
                       f"{fixed[0]}x{fixed[1]}: make the deploy config's size {size_name(fixed)}, or re-save the program")
    if wanted is not None and sizes is not None and wanted not in sizes:
        raise BadInput(f"--img-size {given} contradicts {where} (size {size_name(wanted)}): leave --img-size out, "
                       "or add that size to it")
    if fixed is not None and sizes is not None and sizes != [fixed]:
        raise BadInput(f"--img-size {given} contradicts {program}, whose input is fixed at {fixed[0]}x{fixed[1]}: "
                       "leave --img-size out")
    checked = sizes or ([fixed] if fixed else [wanted] if wanted else None)
    if checked is None:
        config_says = (f"its {config['file']} names no input size" if config else
                       f"has no {DEPLOY_CONFIG_NAME} saying the input size")
        raise BadInput(f"{directory} {config_says}: give --img-size (its program {program.name} leaves height and "
                       "width dynamic: e.g. 320,640x480 checks two sizes, HxW)")
    return checked, fixed is None


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
    _input_sizes(directory, program, _config_of(directory), opts.sizes, opts.img_size)
    target, source = opts.target().absolute().resolve(), directory.resolve()
    if target == source or source in target.parents or target in source.parents:
        raise BadInput(f"--out {opts.target()} would overlap the directory being imported: choose another --out")


def _config_of(directory: Path) -> dict:
    """The directory's deploy config, read: its inference.yml (PaddleClas, PaddleX, PaddleOCR), else
    PaddleSeg's deploy.yaml, else none ({})."""
    for name, read in ((DEPLOY_CONFIG_NAME, read_deploy_config), (SEG_DEPLOY_CONFIG_NAME, read_seg_deploy_config)):
        if (directory / name).exists():
            return {**read(directory / name), "file": name}
    return {}


def describe_import(opts) -> dict:
    """What the artifact says of an imported directory: its program and parameters, the input spec
    (from its deploy config, its program or the options), its deploy config if any, and the manifest's
    `model` and `weights` sections."""
    from .models.registry import IMAGENET_MEAN, IMAGENET_STD

    directory = Path(opts.model)
    program, params = find_program(directory)
    config = _config_of(directory)
    sizes, dynamic = _input_sizes(directory, program, config, opts.sizes, opts.img_size)
    spec = input_section(opts.static_batch, sizes, config.get("mean") or opts.mean or IMAGENET_MEAN,
                         config.get("std") or opts.std or IMAGENET_STD, config.get("scale", 1 / 255), dynamic)
    spec["color"] = config.get("color", "RGB")
    return {
        "program": program, "params": params, "input_spec": spec, "config": config,
        "model": {"name": directory.resolve().name, "family": IMPORTED_FAMILY, "kwargs": {}, "fused": False,
                  "source": "paddle-inference",
                  "origin": {"directory": str(directory.resolve()), "program": program.name, "params": params.name,
                             "deploy_config": config.get("file")}},
        "weights": {"path": str(params.resolve()), "sha256": sha256(params), "init_seed": None},
    }


def copy_programs(program: Path, params: Path, stage: Path) -> tuple[dict, str | None]:
    """The original program and parameters under the flat layout's names; (no Paddle-name map: there
    is no state dict, why there is no legacy program or None)."""
    legacy = program.suffix == ".pdmodel"
    shutil.copyfile(program, stage / (LEGACY_PROGRAM if legacy else PADDLE_PROGRAM))
    shutil.copyfile(params, stage / PADDLE_PARAMS)
    return {}, None if legacy else "the imported model is a Paddle 3 program"
