"""Small but real dense-prediction networks for issue 22, built from Paddle's own layers.

Each stands for a kind of model that PaddleSeg, PaddleOCR and PaddleDetection users export with
`paddle.jit.save` and then convert; all are tiny (8-32 channels), deterministic (`build(name, seed=)`)
and have non-trivial weights (random BatchNorm statistics and affines, `perturb`), so that an
export and a verify take seconds and a wrong conversion shows:

- `SegNet` (a PaddleSeg-style U-Net/FCN): conv-BN-ReLU encoder with two stride-2 steps, a decoder
  that upsamples with a `Conv2DTranspose` (x2) and a bilinear `interpolate` back to the input's own
  size (read from the tensor, as PaddleSeg's heads do), concatenated skip connections, and
  `num_classes` (4) logits [N, 4, H, W] at input resolution. Any H, W divisible by 4.
- `TwoHeadNet` (a classifier that also hands out its features, as PaddleClas's and PaddleDetection's
  multi-output programs do): returns `(logits [N, 10], feature_map [N, 16, H/4, W/4])`.
- `DBDetector` (PaddleOCR's DBNet text detector, `DBFPN` neck + `DBHead`, in miniature): a 3-stage
  backbone (strides 4, 8, 16), an FPN neck (1x1 laterals, nearest upsampling to the finer level's
  size and additions, 3x3 smoothing, all levels upsampled to 1/4 and concatenated), and the DB head:
  3x3 conv-BN-ReLU, two stride-2 `Conv2DTranspose` steps back to input resolution (the first with
  BN-ReLU), `sigmoid`: the shrink (probability) map [N, 1, H, W]. Dynamic H/W: any H, W divisible
  by 16. Paddle 3.3.1 cannot save sigmoid in a legacy program: `build("db", sigmoid="softmax")`
  computes it as a two-way softmax, which it can.

Every upsampling resizes to a size read from the tensor, never by `scale_factor`: paddle2onnx 2.1.0
cannot convert `interpolate(scale_factor=...)` (`SegNet(resize="scale")` and `DBDetector(upsample="scale")` keep the
failing forms, for repros; test_dense_outputs.py's docstring lists what failed where).

`save(model, directory, legacy=, shape=)` writes them as `paddle.jit.save` does (a Paddle 3 PIR
program `inference.json`, or with `legacy=True` the old `inference.pdmodel`; Paddle chooses the
format when it is imported, so that save runs in a child process with `FLAGS_enable_pir_api`
set). `paddleseg_deploy_yaml` / `paddleocr_det_inference_yml` write the deploy configs those tools
write beside their exports (the sources they follow are named in each docstring).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
import yaml
from paddle import nn

from cnnexport.models.fusion import perturb

REPO = Path(__file__).resolve().parent.parent
NUM_CLASSES = 4  # SegNet
TWO_HEAD_CLASSES = 10
TWO_HEAD_WIDTH = 16  # TwoHeadNet's feature-map channels
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def conv_bn_relu(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2D(cin, cout, kernel, stride=stride, padding=kernel // 2, bias_attr=False),
                         nn.BatchNorm2D(cout), nn.ReLU())


class SegNet(nn.Layer):
    """Encoder-decoder segmentation net: [N, 3, H, W] -> logits [N, num_classes, H, W] (H, W % 4 == 0)."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 8, align_corners: bool = False,
                 resize: str = "shape", transpose_size: bool = False):
        """`align_corners`, `resize` ("shape": to the skip's size read from the tensor, as PaddleSeg does;
        "scale": `scale_factor=2`) and `transpose_size` (pass `output_size` to the Conv2DTranspose) are
        the layer choices the converters were checked with (see test_dense_outputs.py's module docstring)."""
        super().__init__()
        w = width
        self.align_corners, self.resize, self.transpose_size = align_corners, resize, transpose_size
        self.stem = conv_bn_relu(3, w)                   # H
        self.down1 = conv_bn_relu(w, 2 * w, stride=2)    # H/2
        self.down2 = nn.Sequential(conv_bn_relu(2 * w, 4 * w, stride=2), conv_bn_relu(4 * w, 4 * w))  # H/4
        self.up1 = nn.Conv2DTranspose(4 * w, 2 * w, 2, stride=2)  # H/4 -> H/2, exact for any even size
        self.up1_bn = nn.BatchNorm2D(2 * w)
        self.fuse1 = conv_bn_relu(4 * w, 2 * w)          # [up1, down1]
        self.fuse2 = conv_bn_relu(2 * w + w, w)          # [interpolate(fuse1), stem]
        self.cls = nn.Conv2D(w, num_classes, 1)

    def forward(self, x):
        s = self.stem(x)
        d1 = self.down1(s)
        d2 = self.down2(d1)
        u = self.up1(d2, output_size=paddle.shape(d1)[2:]) if self.transpose_size else self.up1(d2)
        u = F.relu(self.up1_bn(u))
        u = self.fuse1(paddle.concat([u, d1], axis=1))
        if self.resize == "shape":  # PaddleSeg's heads resize to the skip's (or the input's) size, read from the tensor
            u = F.interpolate(u, size=paddle.shape(s)[2:], mode="bilinear", align_corners=self.align_corners)
        else:
            u = F.interpolate(u, scale_factor=2, mode="bilinear", align_corners=self.align_corners)
        u = self.fuse2(paddle.concat([u, s], axis=1))
        return self.cls(u)


class TwoHeadNet(nn.Layer):
    """[N, 3, H, W] -> (logits [N, 10], feature_map [N, 16, H/4, W/4])."""

    def __init__(self, num_classes: int = TWO_HEAD_CLASSES, width: int = TWO_HEAD_WIDTH):
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(3, width // 2, stride=2), conv_bn_relu(width // 2, width),
                                      conv_bn_relu(width, width, stride=2))
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        feature_map = self.features(x)
        logits = self.fc(paddle.flatten(self.pool(feature_map), 1))
        return logits, feature_map


class DBFPN(nn.Layer):
    """PaddleOCR's DBFPN, for three levels: laterals, top-down nearest x2 + add, 3x3 smoothing to
    out/4 channels each, everything upsampled to the finest level and concatenated."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int, upsample: str = "size"):
        """`upsample="scale"` is PaddleOCR's own `F.upsample(x, scale_factor=2, mode="nearest")`, which
        paddle2onnx 2.1.0 cannot convert (see test_dense_outputs.py); "size" resizes to the next
        level's size read from the tensor: the same values (sizes divisible by 16), and it converts."""
        super().__init__()
        self.upsample = upsample
        self.laterals = nn.LayerList([nn.Conv2D(c, out_channels, 1, bias_attr=False) for c in in_channels])
        self.smooth = nn.LayerList([nn.Conv2D(out_channels, out_channels // 4, 3, padding=1, bias_attr=False)
                                    for _ in in_channels])

    def forward(self, feats):
        lat = [conv(f) for conv, f in zip(self.laterals, feats)]
        for i in range(len(lat) - 1, 0, -1):  # top-down
            lat[i - 1] = lat[i - 1] + self._up(lat[i], lat[i - 1], 2)
        outs = [conv(p) for conv, p in zip(self.smooth, lat)]
        outs = [outs[0]] + [self._up(p, outs[0], 2 ** i) for i, p in enumerate(outs) if i]
        return paddle.concat(outs[::-1], axis=1)

    def _up(self, x, like, factor: int):
        if self.upsample == "scale":
            return F.interpolate(x, scale_factor=factor, mode="nearest")
        return F.interpolate(x, size=paddle.shape(like)[2:], mode="nearest")


class DBHead(nn.Layer):
    """PaddleOCR's DBHead `Head` (the binarize branch): conv3x3-BN-ReLU, ConvTranspose x2 -BN-ReLU,
    ConvTranspose x2, sigmoid."""

    def __init__(self, in_channels: int, sigmoid: str = "sigmoid"):
        """`sigmoid="softmax"` computes the sigmoid as a two-way softmax of [0, z] (equal to it), for
        a legacy program: Paddle 3.3.1's legacy exporter rejects sigmoid (and tanh, exp, abs)."""
        super().__init__()
        self.sigmoid = sigmoid
        mid = in_channels // 4
        self.conv1 = nn.Conv2D(in_channels, mid, 3, padding=1, bias_attr=False)
        self.conv_bn1 = nn.BatchNorm2D(mid)
        self.conv2 = nn.Conv2DTranspose(mid, mid, 2, stride=2)
        self.conv_bn2 = nn.BatchNorm2D(mid)
        self.conv3 = nn.Conv2DTranspose(mid, 1, 2, stride=2)

    def forward(self, x):
        x = F.relu(self.conv_bn1(self.conv1(x)))
        x = F.relu(self.conv_bn2(self.conv2(x)))
        z = self.conv3(x)
        if self.sigmoid == "softmax":
            return F.softmax(paddle.concat([paddle.zeros_like(z), z], axis=1), axis=1)[:, 1:]
        return F.sigmoid(z)


class DBDetector(nn.Layer):
    """DB text detector: [N, 3, H, W] -> probability map [N, 1, H, W] (H, W % 16 == 0)."""

    def __init__(self, width: int = 8, neck: int = 32, sigmoid: str = "sigmoid", upsample: str = "size"):
        super().__init__()
        w = width
        self.stem = nn.Sequential(conv_bn_relu(3, w, stride=2), conv_bn_relu(w, w, stride=2))       # 1/4
        self.stage2 = nn.Sequential(conv_bn_relu(w, 2 * w, stride=2), conv_bn_relu(2 * w, 2 * w))   # 1/8
        self.stage3 = nn.Sequential(conv_bn_relu(2 * w, 4 * w, stride=2), conv_bn_relu(4 * w, 4 * w))  # 1/16
        self.neck = DBFPN((w, 2 * w, 4 * w), neck, upsample)
        self.head = DBHead(3 * (neck // 4), sigmoid)  # three levels of neck/4 channels concatenated

    def forward(self, x):
        c1 = self.stem(x)
        c2 = self.stage2(c1)
        c3 = self.stage3(c2)
        return self.head(self.neck([c1, c2, c3]))


# name -> class; the H/W multiple each needs
NETS = {"seg": SegNet, "two_head": TwoHeadNet, "db": DBDetector}
MULTIPLE = {"seg": 4, "two_head": 4, "db": 16}


def output_shapes(name: str, n, h, w, **kwargs) -> list[list]:
    """The shapes `name`'s forward returns for an [n, 3, h, w] input (None passes through: dynamic)."""
    q = lambda v, f: None if v is None else v // f  # noqa: E731
    if name == "seg":
        return [[n, kwargs.get("num_classes", NUM_CLASSES), h, w]]
    if name == "two_head":
        return [[n, kwargs.get("num_classes", TWO_HEAD_CLASSES)], [n, kwargs.get("width", TWO_HEAD_WIDTH), q(h, 4), q(w, 4)]]
    if name == "db":
        return [[n, 1, h, w]]
    raise KeyError(name)


def build(name: str, seed: int = 0, **kwargs) -> nn.Layer:
    """`NETS[name](**kwargs)` with Paddle's initialisation under `paddle.seed(seed)`, then random
    BatchNorm statistics and affines (`perturb(seed)`), in eval mode. Same name, seed and kwargs:
    the same weights, in any process."""
    paddle.seed(seed)
    model = perturb(NETS[name](**kwargs), seed=seed).eval()
    rng = np.random.default_rng(seed + 2)  # Paddle starts biases at 0: a dead ReLU region would tie every logit
    for pname, param in model.named_parameters():
        if pname.endswith(".bias") and not isinstance(_owner(model, pname), nn.BatchNorm2D):
            param.set_value(rng.normal(0, 0.1, param.shape).astype("float32"))
    if isinstance(model, SegNet):  # centre each class's logit on random input, so that every class is predicted
        logits = eager(model, random_input((2, 3, 32, 32), seed=seed))[0]
        model.cls.bias.set_value(model.cls.bias.numpy() - logits.mean(axis=(0, 2, 3)).astype("float32"))
    if isinstance(model, DBDetector):  # about 30% "text" pixels (probability above 0.5) on random input
        prob = eager(model, random_input((2, 3, 32, 32), seed=seed))[0].astype(np.float64)
        shift = np.quantile(np.log(prob / (1 - prob)), 0.7)
        model.head.conv3.bias.set_value((model.head.conv3.bias.numpy() - shift).astype("float32"))
    model._dense_net = {"name": name, "seed": seed, "kwargs": kwargs}  # what a child needs to rebuild it
    return model


def _owner(model: nn.Layer, param_name: str) -> nn.Layer:
    layer = model
    for part in param_name.split(".")[:-1]:
        layer = getattr(layer, part) if not part.isdigit() else layer[int(part)]
    return layer


def random_input(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def eager(model: nn.Layer, x: np.ndarray) -> list[np.ndarray]:
    """The model's outputs on x, as a list of arrays (one per output)."""
    with paddle.no_grad():
        out = model(paddle.to_tensor(x))
    return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else [out])]


# ------------------------------------------------------------------------------------------------ saving

_CHILD = "import sys; from tests.dense_nets import _save_child; _save_child(sys.argv[1])"


def save(model: nn.Layer, directory, *, legacy: bool, shape: list, prefix: str = "inference") -> Path:
    """`paddle.jit.save(model, directory/prefix, input_spec=[InputSpec(shape, "float32", "x")])`.

    `shape` e.g. `[None, 3, None, None]` (dynamic H/W) or `[None, 3, 64, 64]`. Paddle 3 picks the
    program format at import (`FLAGS_enable_pir_api`), so unless this process is already in the
    wanted mode (PIR, the default), the save runs in a child process with the flag set: it rebuilds
    the model by name and seed (`build`) and loads this model's current weights into it. Writes
    `prefix.json` (PIR) or `prefix.pdmodel` (legacy) beside `prefix.pdiparams`; returns the program's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / f"{prefix}{'.pdmodel' if legacy else '.json'}"
    if not legacy and paddle.framework.use_pir_api():
        _jit_save(model, directory / prefix, shape)
    else:
        spec = getattr(model, "_dense_net", None)
        if spec is None:
            raise TypeError("save(legacy=True) rebuilds the model in a child process: build it with dense_nets.build()")
        with tempfile.TemporaryDirectory(dir=directory.parent) as scratch:
            weights = Path(scratch) / "weights.pdparams"
            paddle.save(model.state_dict(), str(weights))
            job = Path(scratch) / "job.json"
            job.write_text(json.dumps({**spec, "weights": str(weights), "path": str(directory / prefix),
                                       "shape": list(shape)}))
            env = dict(os.environ, FLAGS_enable_pir_api="0" if legacy else "1",
                       PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
            done = subprocess.run([sys.executable, "-c", _CHILD, str(job)], env=env, cwd=REPO,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"paddle.jit.save in a child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    if not program.is_file() or not (directory / f"{prefix}.pdiparams").is_file():
        raise RuntimeError(f"paddle.jit.save wrote {sorted(p.name for p in directory.iterdir())}, not {program.name}")
    return program


def _jit_save(model: nn.Layer, path: Path, shape: list) -> None:
    spec = paddle.static.InputSpec(list(shape), "float32", "x")
    paddle.jit.save(model, str(path), input_spec=[spec])


def _save_child(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    model = build(job["name"], seed=job["seed"], **job["kwargs"])
    model.set_state_dict(paddle.load(job["weights"]))
    _jit_save(model, Path(job["path"]), job["shape"])


# ------------------------------------------------------------------------------------------------ deploy configs

def paddleseg_deploy_yaml(directory, *, mean=None, std=None, input_shape=(None, 3, None, None),
                          prefix: str = "model", program: str | None = None, output_op: str = "none",
                          target_size=None, model_name: str | None = None) -> Path:
    """`deploy.yaml` as PaddleSeg writes it beside its export (`paddleseg/core/export.py`, PaddleSeg
    develop d7975e7, called by `tools/export.py`):

        deploy_info = {'Deploy': {'model': save_name + '.pdmodel', 'params': save_name + '.pdiparams',
                                  'transforms': <val_dataset transforms>, 'input_shape': shape,
                                  'output_op': args.output_op, 'output_dtype': 'int32' if argmax else 'float32'}}
        [deploy_info['Global'] = {'model_name': pdx_model_name}]
        yaml.dump(deploy_info, file)

    `save_name` is `model` (`inference` with `--for_fd`, which writes `inference.yml` instead).
    PaddleSeg writes `model.pdmodel` even when Paddle 3 saved `model.json` (PIR): pass `program=` to
    name the file otherwise. The transforms are the config's `val_dataset.transforms`:
    `{type: Normalize, mean, std}` (PaddleSeg's `Normalize` divides by 255, then subtracts mean and
    divides by std, on RGB; with neither given its defaults are mean = std = (0.5,)), optionally
    preceded by `{type: Resize, target_size: [w, h]}`. `output_op` is `none` here: PaddleSeg's
    default `argmax` appends an argmax and outputs int32 labels [N, H, W], not logits.
    """
    transforms = []
    if target_size is not None:
        transforms.append({"type": "Resize", "target_size": list(target_size)})
    normalize = {"type": "Normalize"}
    if mean is not None:
        normalize["mean"] = list(mean)
    if std is not None:
        normalize["std"] = list(std)
    transforms.append(normalize)
    deploy_info = {"Deploy": {"model": program or f"{prefix}.pdmodel", "params": f"{prefix}.pdiparams",
                              "transforms": transforms, "input_shape": list(input_shape), "output_op": output_op,
                              "output_dtype": "int32" if output_op == "argmax" else "float32"}}
    if model_name:
        deploy_info["Global"] = {"model_name": model_name}
    path = Path(directory) / "deploy.yaml"
    with open(path, "w") as file:
        yaml.dump(deploy_info, file)
    return path


class _OrderedDumper(yaml.Dumper):
    """PaddleOCR registers an OrderedDict representer on yaml's global Dumper; this does the same
    on a subclass, so that nothing global changes in the test process."""


_OrderedDumper.add_representer(OrderedDict, lambda d, data: d.represent_mapping("tag:yaml.org,2002:map", data.items()))


def paddleocr_det_inference_yml(directory, *, model_name: str = "PP-OCRv5_mobile_det", mean=None, std=None,
                                resize: dict | None = None, hpi: bool = False) -> Path:
    """`inference.yml` as PaddleOCR 2.8+ / 3.x writes it beside a text detector's export
    (`ppocr/utils/export_model.py: dump_infer_config`, from `configs/det/PP-OCRv5/PP-OCRv5_mobile_det.yml`):

        infer_cfg = OrderedDict(); infer_cfg['Global'] = {'model_name': pdx_model_name}
        [infer_cfg['Hpi'] = {'backend_configs': {'paddle_infer': {'trt_dynamic_shapes': {'x': [...]}},
                                                 'tensorrt': {'dynamic_shapes': {'x': [...]}}}}]   (uniform_output_enabled)
        infer_cfg['PreProcess'] = {'transform_ops': config['Eval']['dataset']['transforms']}
        infer_cfg['PostProcess'] = OrderedDict(config['PostProcess'])
        yaml.dump(infer_cfg, f, default_flow_style=False, allow_unicode=True)

    The Eval transforms of the DB detectors: `DecodeImage` (img_mode **BGR**, channel_first false),
    `DetLabelEncode`, `DetResizeForTest` (no arguments: no fixed size; multiples of 32),
    `NormalizeImage` (scale '1./255.', a string PaddleOCR eval()s; ImageNet's RGB mean/std applied
    to the BGR image as it is; order hwc), `ToCHWImage`, `KeepKeys`. The program's input is dynamic
    [None, 3, None, None] (`dynamic_to_static`: `infer_shape = [3, -1, -1]` for det models).
    """
    infer_cfg = OrderedDict()
    infer_cfg["Global"] = {"model_name": model_name}
    if hpi:
        shapes = {"x": [[1, 3, 160, 160], [1, 3, 640, 640], [1, 3, 1280, 1280]]}
        infer_cfg["Hpi"] = {"backend_configs": {"paddle_infer": {"trt_dynamic_shapes": shapes},
                                                "tensorrt": {"dynamic_shapes": shapes}}}
    infer_cfg["PreProcess"] = {"transform_ops": [
        {"DecodeImage": {"img_mode": "BGR", "channel_first": False}},
        {"DetLabelEncode": None},
        {"DetResizeForTest": resize},
        {"NormalizeImage": {"scale": "1./255.", "mean": list(mean or IMAGENET_MEAN),
                            "std": list(std or IMAGENET_STD), "order": "hwc"}},
        {"ToCHWImage": None},
        {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}},
    ]}
    infer_cfg["PostProcess"] = OrderedDict([("name", "DBPostProcess"), ("thresh", 0.3), ("box_thresh", 0.6),
                                            ("max_candidates", 1000), ("unclip_ratio", 1.5)])
    path = Path(directory) / "inference.yml"
    with open(path, "w", encoding="utf-8") as f:
        yaml.dump(infer_cfg, f, Dumper=_OrderedDumper, default_flow_style=False, allow_unicode=True)
    return path
