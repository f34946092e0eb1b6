"""Tompson et al.'s (NIPS 2014) multi-resolution bank, the backbone of `--method=tompson`:
the crop at 3 scales (S, S/2, S/4), each through its own bank C(5x5) - P - C(5x5) - P -
C(5x5) (BatchNorm + ReLU; 32, 64, 64 x width filters), so every branch ends at stride 4 of
its own input; the coarser branches are upsampled (bilinear) to S/4 and the three are summed.
Pyramid {4: the sum}."""

from __future__ import annotations

import keras

from deeppose_tf.models.backbones.base import Backbone
from deeppose_tf.models.layers import Features, conv_bn_relu, filters

SCALES = (1, 2, 4)  # input downsampling of each detector branch


def multires(x, width: float = 1.0) -> Features:
  """x: (B, S, S, 3) scaled image, S a multiple of 16. Returns pyramid {4: (B, S/4, S/4,
  64 x width)}, the sum of the three branches (top: the same map)."""
  f1, f2 = filters(32, width), filters(64, width)
  size = x.shape[1] // 4
  branches = []
  for scale in SCALES:
    name = f"bank{scale}"
    y = x if scale == 1 else keras.layers.AveragePooling2D(scale, name=f"{name}_down")(x)
    y = conv_bn_relu(y, f1, 5, 1, f"{name}_c1")
    y = keras.layers.MaxPooling2D(2, name=f"{name}_p1")(y)
    y = conv_bn_relu(y, f2, 5, 1, f"{name}_c2")
    y = keras.layers.MaxPooling2D(2, name=f"{name}_p2")(y)
    y = conv_bn_relu(y, f2, 5, 1, f"{name}_c3")
    if scale != 1:
      y = keras.layers.Resizing(size, size, interpolation="bilinear", name=f"{name}_up")(y)
    branches.append(y)
  fused = keras.layers.Add(name="fuse")(branches)
  return Features({4: fused}, fused)


BACKBONE = Backbone(lambda x, c: multires(x, c.width), strides=(4,))
