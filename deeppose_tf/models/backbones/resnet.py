"""A small ResNet (basic blocks, BatchNorm) sized for CPU training from scratch: stem /2,
stages at /4, /8, /16 with 64, 128, 256 x width filters; top is the stride-16 map."""

from __future__ import annotations

import keras

from deeppose_tf.models.backbones.base import Backbone
from deeppose_tf.models.layers import Features, bn, conv_bn_relu, filters


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
    shortcut = bn(f"{name}_proj_bn")(shortcut)
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


BACKBONE = Backbone(lambda x, c: resnet(x, c.width), strides=(4, 8, 16))
