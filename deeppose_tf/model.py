"""The Keras functional DeepPose regressors, their losses and optimizers.

The paper's network (backbone "alexnet", head "fc"):

  C(96, 11x11 /4) - LRN - P - C(256, 5x5) - LRN - P - C(384, 3x3) - C(384, 3x3) - C(256, 3x3)
  - P - F(4096) - F(4096) - linear 2K       (ReLU everywhere, dropout on the F layers)

Input: "image" (B, S, S, 3) float32 in [0, 255] (crop pixels). Output: "joints" (B, K, 2)
box-normalized (x, y). `width` scales the convolution filters and `fc_units` the fully
connected layers so tests and CPU experiments can shrink the net without changing its shape.
Other backbones (backbones.py: a small ResNet, MobileNetV2) and the integral heatmap head
(heads.py) join through the same `build_regressor`, with the same input and output.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from deeppose_tf import backbones, heads


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture knobs. norm: 'lrn' (the paper), 'batch' (BatchNorm after every conv;
  the default because it learns from scratch on CPU budgets), or 'none' (AlexNet only;
  the other backbones always use BatchNorm).
  output_init: 'mean_pose' (zero kernel, mean training pose as bias: starts at the
  baseline instead of with huge outputs) or 'default' (glorot, as the paper).
  backbone: alexnet | resnet | mobilenetv2 (backbones.py); head: fc | integral (heads.py).
  width: filter multiplier (MobileNetV2's alpha). heatmap_stride: 4 or 8, the integral
  head's heatmap cell size in input pixels. backbone_weights: MobileNetV2 only, None,
  "imagenet" or a weights file. precision: the training compute dtype, float32 or bfloat16
  (mixed: variables and the output layers stay float32; saved models are float32).
  """

  num_joints: int = 14
  input_size: int = 220
  width: float = 1.0
  fc_units: int = 4096
  dropout: float = 0.6
  norm: str = "batch"
  output_init: str = "mean_pose"
  backbone: str = "alexnet"
  head: str = "fc"
  heatmap_stride: int = 8
  head_channels: int = 128
  backbone_weights: Optional[str] = None
  precision: str = "float32"

  def __post_init__(self):
    if self.norm not in ("lrn", "batch", "none"):
      raise ValueError(f"norm must be 'lrn', 'batch' or 'none', got {self.norm!r}")
    if self.output_init not in ("mean_pose", "default"):
      raise ValueError(f"output_init must be 'mean_pose' or 'default', got {self.output_init!r}")
    if self.backbone not in backbones.BACKBONES:
      raise ValueError(f"backbone must be one of {backbones.BACKBONES}, got {self.backbone!r}")
    if self.head not in heads.HEADS:
      raise ValueError(f"head must be one of {heads.HEADS}, got {self.head!r}")
    if self.heatmap_stride not in (4, 8):
      raise ValueError(f"heatmap_stride must be 4 or 8, got {self.heatmap_stride}")
    if self.precision not in PRECISIONS:
      raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
    if not self.width > 0:
      raise ValueError(f"width must be > 0, got {self.width}")
    if self.backbone_weights and self.backbone != "mobilenetv2":
      raise ValueError("backbone_weights applies to backbone='mobilenetv2' only (use "
                       "--init_weights to start other backbones from a saved model)")
    minimum = 67 if self.backbone == "alexnet" else 32
    if self.input_size < minimum:
      raise ValueError(f"input_size {self.input_size} is too small for the {self.backbone} "
                       f"strides; use at least {minimum}")
    if self.backbone != "alexnet" and self.input_size % 16:
      raise ValueError(f"input_size {self.input_size} must be a multiple of 16 for the "
                       f"{self.backbone} backbone")


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
  """The regressor: "image" (B, S, S, 3) float32 in [0, 255] -> "joints" (B, K, 2)
  box-normalized. mean_pose (K, 2) box-normalized seeds the fc head's output bias.

  Under config.precision == "bfloat16" the layers compute in bfloat16 (Keras
  mixed_bfloat16: float32 variables) except the input scaling and the output layers."""
  previous = keras.config.dtype_policy()
  if config.precision == "bfloat16":
    keras.config.set_dtype_policy("mixed_bfloat16")
  try:
    inputs = keras.Input((config.input_size, config.input_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale", dtype="float32")(inputs)
    if config.backbone == "alexnet":
      feats = _alexnet_features(x, config)
      if config.head == "fc":
        out = _alexnet_fc(feats["pool5"], config, mean_pose)
      else:
        out = heads.integral({16: feats["relu5"], 8: feats["relu2"]}, config.num_joints,
                             config.head_channels, 8)
    else:
      if config.backbone == "resnet":
        feats = backbones.resnet(x, config.width)
      else:
        feats = backbones.mobilenetv2(x, config.input_size, config.width,
                                      config.backbone_weights)
      if config.head == "fc":
        out = heads.fc(feats[max(feats)], config.num_joints, config.fc_units, config.dropout,
                       mean_pose)
      else:
        out = heads.integral(feats, config.num_joints, config.head_channels,
                             config.heatmap_stride)
    return keras.Model(inputs, out, name=name)
  finally:
    keras.config.set_dtype_policy(previous)


def _alexnet_features(x, config: ModelConfig) -> Dict[str, keras.KerasTensor]:
  """The paper's five convolutions. Returns relu2 (stride 8), relu5 (stride 16) and pool5
  (stride 32): the fc head reads pool5, the integral head fuses relu5 and relu2."""
  filters = [max(1, int(round(f * config.width))) for f in (96, 256, 384, 384, 256)]

  def norm(x, i):
    if config.norm == "lrn" and i < 2:
      # LRN stays float32: TF has no bfloat16 CPU kernel for it.
      return LocalResponseNorm(name=f"lrn{i + 1}", dtype="float32")(x)
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

  x = pool(conv(x, 0, 11, 4), 1)
  relu2 = conv(x, 1, 5)  # stride 8 of the input
  x = pool(relu2, 2)
  x = conv(x, 2, 3)
  x = conv(x, 3, 3)
  relu5 = conv(x, 4, 3)  # stride 16
  return {"relu2": relu2, "relu5": relu5, "pool5": pool(relu5, 5)}


def _alexnet_fc(x, config: ModelConfig, mean_pose) -> keras.KerasTensor:
  k = config.num_joints
  x = keras.layers.Flatten(name="flatten")(x)
  for i in (6, 7):
    x = keras.layers.Dense(config.fc_units, activation="relu", name=f"fc{i}")(x)
    if config.dropout > 0:
      x = keras.layers.Dropout(config.dropout, name=f"drop{i}")(x)
  if config.output_init == "mean_pose":
    bias = np.zeros(2 * k, np.float32) if mean_pose is None else np.asarray(
        mean_pose, np.float32).reshape(2 * k)
    out = keras.layers.Dense(2 * k, kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant(bias), name="fc8",
                             dtype="float32")(x)
  else:
    out = keras.layers.Dense(2 * k, name="fc8", dtype="float32")(x)
  return keras.layers.Reshape((k, 2), name="joints", dtype="float32")(out)


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
_FLOAT32_LAYERS = ("image", "scale", "fc8", "joints", "heatmaps")


def with_precision(net: keras.Model, precision: str) -> keras.Model:
  """The regressor computing in `precision` with the same weights.

  'bfloat16' rebuilds it under Keras's mixed_bfloat16 policy: the convolutions and fc6/fc7
  run in bfloat16 (oneDNN uses AVX512-BF16 / AMX where the CPU has them: 2.3x the fp32
  matmul rate and 2.8x on the conv layers on this machine) while variables, normalization
  statistics and the output layers stay float32. 'float32' returns `net` itself when it is
  float32 already, else a float32 rebuild (what a bfloat16-trained stage is saved as, so
  export and TFLite see a float32 graph).
  """
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
  config = net.get_config()
  changed = False
  for layer in config["layers"]:
    # LRN stays float32 too: TF has no bfloat16 CPU kernel for it.
    if layer["class_name"] == "InputLayer":
      continue
    if precision == "bfloat16":
      if layer["class_name"] != "LocalResponseNorm" and layer["name"] not in _FLOAT32_LAYERS:
        layer["config"]["dtype"] = "mixed_bfloat16"
        changed = True
    elif _policy_name(layer["config"].get("dtype")) not in (None, "float32"):
      layer["config"]["dtype"] = "float32"
      changed = True
  if not changed:
    return net
  copy = keras.Model.from_config(config)  # the package's layers are registered
  copy.set_weights(net.get_weights())
  return copy


def _policy_name(dtype) -> Optional[str]:
  if isinstance(dtype, dict):
    return dtype.get("config", {}).get("name")
  return dtype


LOSSES = ("l2", "l1", "smooth_l1")
# smooth_l1 is quadratic below this error (box-normalized units: 2% of the box side) and
# linear above, so it keeps L1's robustness to far-off joints and L2's smooth optimum.
SMOOTH_L1_BETA = 0.02


def coordinate_loss(kind: str = "l2"):
  """The masked coordinate loss: l2 (the paper: squared error), l1 or smooth_l1, summed
  over x, y and the annotated joints.

  The returned fn takes y_true (B, K, 3) = target (x, y) and mask, y_pred (B, K, 2), both
  box-normalized, and returns (B,) per example; Keras averages over the global batch, so
  replicas agree with a single device."""
  if kind not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")

  def loss(y_true, y_pred):
    mask = y_true[..., 2]
    err = tf.cast(y_pred, tf.float32) - y_true[..., :2]
    if kind == "l2":
      per = tf.square(err)
    elif kind == "l1":
      per = tf.abs(err)
    else:
      a = tf.abs(err)
      per = tf.where(a < SMOOTH_L1_BETA, 0.5 * tf.square(a) / SMOOTH_L1_BETA,
                     a - 0.5 * SMOOTH_L1_BETA)
    return tf.reduce_sum(tf.reduce_sum(per, axis=-1) * mask, axis=-1)

  loss.__name__ = f"masked_{kind}"
  return loss


masked_l2_loss = coordinate_loss("l2")


def heatmap_loss(sigma: float = 1.0):
  """Cross-entropy between the spatial softmax of the heatmap logits and a Gaussian of
  std `sigma` heatmap cells at the target joint (the DSNT-style regularizer: it gives the
  soft-argmax a peaked, unimodal heatmap to learn instead of any distribution with the
  right mean, which is what makes the integral head learn fast from scratch).

  The returned fn takes y_true (B, K, 3) box-normalized target and mask, y_pred (B, H, W, K)
  logits; returns (B,), summed over annotated joints whose target lies inside the crop."""
  if not sigma > 0:
    raise ValueError(f"heatmap sigma must be > 0, got {sigma}")

  def loss(y_true, y_pred):
    h, w = y_pred.shape[1], y_pred.shape[2]
    flat = heads.flat_heatmaps(y_pred)  # (B, K, HW)
    centres = tf.constant(heads.cell_centres(h, w))  # (HW, 2) box-normalized
    target = y_true[..., :2]  # (B, K, 2)
    # Squared distance in heatmap cells from every cell centre to the target.
    d = (centres[None, None] - target[:, :, None]) * tf.constant([w, h], tf.float32)
    g = -tf.reduce_sum(tf.square(d), axis=-1) / (2.0 * sigma * sigma)
    p = tf.nn.softmax(g, axis=-1)  # the normalized Gaussian over the cells
    inside = tf.cast(tf.reduce_all(tf.abs(target) <= 0.5, axis=-1), tf.float32)
    ce = -tf.reduce_sum(p * tf.nn.log_softmax(flat, axis=-1), axis=-1)  # (B, K)
    return tf.reduce_sum(ce * y_true[..., 2] * inside, axis=-1)

  loss.__name__ = "heatmap_ce"
  return loss


def training_model(net: keras.Model) -> keras.Model:
  """`net` with its heatmap logits as a second output {"joints", "heatmaps"} (same layers
  and variables), for the heatmap loss; `net` itself when it has no "heatmaps" layer."""
  try:
    logits = net.get_layer("heatmaps").output
  except ValueError:
    return net
  return keras.Model(net.inputs, {"joints": net.output, "heatmaps": logits},
                     name=f"{net.name}_train")


@keras.saving.register_keras_serializable(package="deeppose_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay to 0 by
  `total` steps ('cosine'), or x0.1 at 70% and again at 90% of the steps after warm-up
  ('step'), or `peak` ('constant')."""

  def __init__(self, peak: float, total: int, warmup: int = 0, kind: str = "cosine"):
    if kind not in SCHEDULES:
      raise ValueError(f"lr schedule must be one of {SCHEDULES}, got {kind!r}")
    if not 0 <= warmup < max(total, 1):
      raise ValueError(f"warmup steps must be in [0, total steps = {total}), got {warmup}")
    self.peak, self.total, self.warmup, self.kind = float(peak), int(total), int(warmup), kind

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warm = float(max(self.warmup, 1))
    t = tf.clip_by_value((step - self.warmup) / float(max(self.total - self.warmup, 1)),
                         0.0, 1.0)
    if self.kind == "cosine":
      after = 0.5 * self.peak * (1.0 + tf.cos(np.pi * t))
    elif self.kind == "step":
      after = self.peak * tf.where(t < 0.7, 1.0, tf.where(t < 0.9, 0.1, 0.01))
    else:
      after = tf.constant(self.peak)
    if self.warmup == 0:
      return after
    return tf.where(step < self.warmup, self.peak * (step + 1.0) / warm, after)

  def get_config(self):
    return {"peak": self.peak, "total": self.total, "warmup": self.warmup, "kind": self.kind}


SCHEDULES = ("constant", "cosine", "step")


def make_optimizer(name: str, learning_rate, weight_decay: float = 0.0):
  """'adam' (default; AdamW when weight_decay > 0), 'adagrad' (the paper), 'sgd' (momentum
  0.9, decoupled weight decay when given). learning_rate: a float or a schedule."""
  if weight_decay < 0:
    raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
  if name == "adam":
    if weight_decay > 0:
      return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    return keras.optimizers.Adam(learning_rate)
  if name == "adagrad":
    if weight_decay > 0:
      raise ValueError("weight_decay is not supported with adagrad (the paper has none)")
    return keras.optimizers.Adagrad(learning_rate)
  if name == "sgd":
    return keras.optimizers.SGD(learning_rate, momentum=0.9,
                                weight_decay=weight_decay or None)
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
