"""Convolutional backbones: image (B, S, S, 3) float in [0, 255] -> feature maps.

Each builder returns a dict of feature tensors by stride, {4: (B, S/4, S/4, C4),
8: ..., 16: ...} or for AlexNet the final pooled map under the key "pool5", so a head picks
what it needs (the fc head flattens the coarsest map; the integral head fuses strides 16
and 8 into heatmaps). All layers are named, so `model.assign_by_name` copies pretrained
weights between networks of the same backbone.

  alexnet      the paper's network (model.py keeps its exact layer names conv1..conv5).
  resnet       a small ResNet (basic blocks, BatchNorm) sized for CPU training from
               scratch: stem /2, stages at /4, /8, /16 with 64, 128, 256 x width filters.
  mobilenetv2  keras.applications.MobileNetV2 (include_top=False) with `weights`: None
               (random init), a user-supplied weights file of that network, or "imagenet"
               on a machine that can download.
"""

from __future__ import annotations

from typing import Dict, Optional

import keras

BACKBONES = ("alexnet", "resnet", "mobilenetv2")


def _filters(n: int, width: float) -> int:
  return max(4, int(round(n * width)))


def _bn(name: str):
  # synchronized: under MirroredStrategy the statistics are over the global batch, so N
  # replicas train exactly like one device on the same global batch.
  return keras.layers.BatchNormalization(synchronized=True, name=name)


def _conv_bn_relu(x, filters: int, kernel: int, stride: int, name: str):
  x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          name=f"{name}_conv")(x)
  x = _bn(f"{name}_bn")(x)
  return keras.layers.ReLU(name=f"{name}_relu")(x)


def _basic_block(x, filters: int, stride: int, name: str):
  """He et al.'s basic block: two 3x3 convs, a projection shortcut when the shape changes."""
  shortcut = x
  y = _conv_bn_relu(x, filters, 3, stride, f"{name}_a")
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


def resnet(x, width: float = 1.0, blocks=(1, 2, 2)) -> Dict[int, keras.KerasTensor]:
  """x: (B, S, S, 3) scaled to [-1, 1]. Returns {4: (B, S/4, S/4, 64w), 8: (.., 128w),
  16: (.., 256w)} (sizes rounded up for S not divisible by 16)."""
  x = _conv_bn_relu(x, _filters(32, width), 3, 2, "stem")
  feats = {}
  for i, (n, f, stride) in enumerate(zip(blocks, (64, 128, 256), (4, 8, 16))):
    for j in range(n):
      x = _basic_block(x, _filters(f, width), 2 if j == 0 else 1, f"res{i + 1}_{j + 1}")
    feats[stride] = x
  return feats


# MobileNetV2 layers whose outputs are the feature maps at each stride (the names are
# keras.applications' own).
_MOBILENET_TAPS = {4: "block_3_expand_relu", 8: "block_6_expand_relu",
                   16: "block_13_expand_relu", 32: "out_relu"}


def mobilenetv2(x, input_size: int, width: float = 1.0, weights: Optional[str] = None
                ) -> Dict[int, keras.KerasTensor]:
  """x: (B, S, S, 3) scaled to [-1, 1] (MobileNetV2's own input range). width is the
  network's alpha (0.35, 0.5, 0.75, 1.0, 1.3 or 1.4 for which ImageNet weights exist).
  weights: None, "imagenet", or the path of a weights file saved from
  keras.applications.MobileNetV2(include_top=False) of the same alpha.
  Returns {4, 8, 16, 32: feature maps}; the network is one nested layer named "backbone"."""
  base = keras.applications.MobileNetV2(input_shape=(input_size, input_size, 3), alpha=width,
                                        include_top=False, weights=weights)
  taps = keras.Model(base.input, {s: base.get_layer(n).output
                                  for s, n in _MOBILENET_TAPS.items()}, name="backbone")
  return taps(x)
