"""The paper's backbone: AlexNet's five convolutions, with its layer names conv1..conv5 (LRN
or BatchNorm). Pyramid {8: relu2, 16: relu5}, top pool5 (stride 32)."""

from __future__ import annotations

import keras
import tensorflow as tf

from deeppose_tf.models.backbones.base import Backbone
from deeppose_tf.models.layers import Features, bn


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
      return bn(f"bn{i + 1}")(x)
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


BACKBONE = Backbone(lambda x, c: alexnet(x, c.width, c.norm), strides=(8, 16), min_input=67,
                    input_multiple=1, fc_layers=2)
