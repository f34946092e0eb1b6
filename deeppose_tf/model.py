"""The Keras functional AlexNet regressor of DeepPose and its masked L2 loss.

  C(96, 11x11 /4) - LRN - P - C(256, 5x5) - LRN - P - C(384, 3x3) - C(384, 3x3) - C(256, 3x3)
  - P - F(4096) - F(4096) - linear 2K       (ReLU everywhere, dropout on the F layers)

Input: "image" (B, S, S, 3) float32 in [0, 255] (crop pixels). Output: "joints" (B, K, 2)
box-normalized (x, y). `width` scales the convolution filters and `fc_units` the fully
connected layers so tests and CPU experiments can shrink the net without changing its shape.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture knobs. norm: 'lrn' (the paper), 'batch' (BatchNorm after every conv;
  the default because it learns from scratch on CPU budgets), or 'none'.
  output_init: 'mean_pose' (zero kernel, mean training pose as bias: starts at the
  baseline instead of with huge outputs) or 'default' (glorot, as the paper)."""

  num_joints: int = 14
  input_size: int = 220
  width: float = 1.0
  fc_units: int = 4096
  dropout: float = 0.6
  norm: str = "batch"
  output_init: str = "mean_pose"

  def __post_init__(self):
    if self.norm not in ("lrn", "batch", "none"):
      raise ValueError(f"norm must be 'lrn', 'batch' or 'none', got {self.norm!r}")
    if self.output_init not in ("mean_pose", "default"):
      raise ValueError(f"output_init must be 'mean_pose' or 'default', got {self.output_init!r}")
    if self.input_size < 67:
      raise ValueError(f"input_size {self.input_size} is too small for the AlexNet strides; "
                       "use at least 67")


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


def build_regressor(config: ModelConfig, mean_pose: Optional[np.ndarray] = None,
                    name: str = "deeppose_stage") -> keras.Model:
  """The AlexNet regressor. mean_pose (K, 2) box-normalized seeds the output bias."""
  k = config.num_joints
  filters = [max(1, int(round(f * config.width))) for f in (96, 256, 384, 384, 256)]

  def norm(x, i):
    if config.norm == "lrn" and i < 2:
      return LocalResponseNorm(name=f"lrn{i + 1}")(x)
    if config.norm == "batch":
      # synchronized: under MirroredStrategy the statistics are over the global batch, so
      # N replicas train exactly like one device on the same global batch.
      return keras.layers.BatchNormalization(synchronized=True, name=f"bn{i + 1}")(x)
    return x

  def conv(x, i, kernel, stride=1):
    x = keras.layers.Conv2D(filters[i], kernel, strides=stride,
                            padding="valid" if i == 0 else "same",
                            use_bias=config.norm != "batch", name=f"conv{i + 1}")(x)
    x = norm(x, i)
    return keras.layers.ReLU(name=f"relu{i + 1}")(x)

  def pool(x, i):
    return keras.layers.MaxPooling2D(3, 2, name=f"pool{i}")(x)

  inputs = keras.Input((config.input_size, config.input_size, 3), name="image")
  x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
  x = pool(conv(x, 0, 11, 4), 1)
  x = pool(conv(x, 1, 5), 2)
  x = conv(x, 2, 3)
  x = conv(x, 3, 3)
  x = pool(conv(x, 4, 3), 5)
  x = keras.layers.Flatten(name="flatten")(x)
  for i in (6, 7):
    x = keras.layers.Dense(config.fc_units, activation="relu", name=f"fc{i}")(x)
    if config.dropout > 0:
      x = keras.layers.Dropout(config.dropout, name=f"drop{i}")(x)
  if config.output_init == "mean_pose":
    bias = np.zeros(2 * k, np.float32) if mean_pose is None else np.asarray(
        mean_pose, np.float32).reshape(2 * k)
    out = keras.layers.Dense(2 * k, kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant(bias), name="fc8")(x)
  else:
    out = keras.layers.Dense(2 * k, name="fc8")(x)
  out = keras.layers.Reshape((k, 2), name="joints")(out)
  return keras.Model(inputs, out, name=name)


def pretrained_weights(path: str) -> Dict[str, List[np.ndarray]]:
  """Per-layer weights of a saved Keras model (.keras), by layer name, for `assign_by_name`:
  a stage of another workdir, or e.g. ImageNet AlexNet features saved as a Keras model
  whose layers are named conv1..conv5, fc6, fc7 like `build_regressor`'s."""
  if not os.path.isfile(path):
    raise ValueError(f"init weights {path!r}: no such file")
  if not path.endswith(".keras"):
    raise ValueError(f"init weights {path!r}: expected a .keras model file (save one with "
                     "model.save('name.keras'))")
  source = keras.models.load_model(path, compile=False)  # LocalResponseNorm is registered
  return {layer.name: layer.get_weights() for layer in source.layers if layer.weights}


def assign_by_name(net: keras.Model, weights: Dict[str, List[np.ndarray]]
                   ) -> Tuple[List[str], List[str]]:
  """Copies `weights` (pretrained_weights) into every layer of `net` with the same name and
  the same weight shapes. Returns (copied, skipped) layer names; a layer whose shapes differ
  (fc8 for another joint count, a conv with a bias where this one has BatchNorm) keeps its
  initialization. Raises when nothing matches: a wrong file must not pass silently."""
  copied, skipped = [], []
  for layer in net.layers:
    if not layer.weights:
      continue
    source = weights.get(layer.name)
    shapes = [tuple(w.shape) for w in layer.weights]
    if source is None or [tuple(w.shape) for w in source] != shapes:
      skipped.append(layer.name)
      continue
    layer.set_weights(source)
    copied.append(layer.name)
  if not copied:
    raise ValueError(f"no layer of {net.name} matches the pretrained weights by name and "
                     f"shape (pretrained layers: {sorted(weights)[:12]})")
  return copied, skipped


PRECISIONS = ("float32", "bfloat16")
# Kept in float32 under bfloat16: the input scaling (pixel values, before any rounding) and
# the output layer and reshape (joints need more than bfloat16's 8 significant bits: 1/256
# of a 440 px box is 1.7 px).
_FLOAT32_LAYERS = ("image", "scale", "fc8", "joints")


def with_precision(net: keras.Model, precision: str) -> keras.Model:
  """The regressor computing in `precision`, for inference.

  'float32' returns `net` itself. 'bfloat16' rebuilds it under Keras's mixed_bfloat16
  policy with the same weights: the convolutions and fc6/fc7 run in bfloat16 (oneDNN uses
  AVX512-BF16 / AMX where the CPU has them: 2.3x the fp32 matmul rate and 2.8x on the conv
  layers on this machine) while variables, normalization statistics and the output layer
  stay float32.
  """
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
  if precision == "float32":
    return net
  config = net.get_config()
  for layer in config["layers"]:
    # LRN stays float32 too: TF has no bfloat16 CPU kernel for it.
    if (layer["class_name"] not in ("InputLayer", "LocalResponseNorm")
        and layer["name"] not in _FLOAT32_LAYERS):
      layer["config"]["dtype"] = "mixed_bfloat16"
  copy = keras.Model.from_config(config)  # LocalResponseNorm is registered
  copy.set_weights(net.get_weights())
  return copy


def masked_l2_loss(y_true, y_pred):
  """Squared L2 between box-normalized prediction and target, summed over annotated joints.

  y_true: (B, K, 3) = target (x, y) and mask; y_pred: (B, K, 2). Returns (B,) per example;
  Keras averages over the global batch, so replicas agree with a single device.
  """
  mask = y_true[..., 2]
  sq = tf.reduce_sum(tf.square(y_pred - y_true[..., :2]), axis=-1)
  return tf.reduce_sum(sq * mask, axis=-1)


def make_optimizer(name: str, learning_rate: float):
  """'adam' (default) or 'adagrad' (the paper), 'sgd' (momentum 0.9)."""
  if name == "adam":
    return keras.optimizers.Adam(learning_rate)
  if name == "adagrad":
    return keras.optimizers.Adagrad(learning_rate)
  if name == "sgd":
    return keras.optimizers.SGD(learning_rate, momentum=0.9)
  raise ValueError(f"unknown optimizer {name!r}; expected 'adam', 'adagrad' or 'sgd'")


def forward_flops(model: keras.Model) -> int:
  """Multiply-adds x 2 of one forward pass of one image (convs and dense layers)."""
  total = 0
  for layer in model.layers:
    if isinstance(layer, keras.layers.Conv2D):
      _, h, w, c_out = layer.output.shape
      kh, kw, c_in, _ = layer.kernel.shape
      total += 2 * h * w * c_out * kh * kw * c_in
    elif isinstance(layer, keras.layers.Dense):
      c_in, c_out = layer.kernel.shape
      total += 2 * c_in * c_out
  return int(total)
