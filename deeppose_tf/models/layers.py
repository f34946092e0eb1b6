"""Building blocks shared by the backbones, the heads and Tompson et al.'s network: the
backbone `Features` a head reads, the conv-BN-ReLU block, and the heatmap decoders.

The bottom floor of the models: it imports no other deeppose_tf module, so the backbones and
the heads all build on it without importing one another's privates.
Coordinates: box-normalized (x, y) in [-0.5, 0.5]^2, x right, y down.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import keras
import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Features:
  """A backbone's taps: `pyramid` by stride (dense heads), `top` (global heads)."""

  pyramid: Dict[int, keras.KerasTensor]
  top: keras.KerasTensor


def bn(name: str):
  # synchronized: under MirroredStrategy the statistics are over the global batch, so N
  # replicas train exactly like one device on the same global batch.
  return keras.layers.BatchNormalization(synchronized=True, name=name)


def filters(n: int, width: float) -> int:
  return max(4, int(round(n * width)))


def conv_bn_relu(x, filters: int, kernel: int, stride: int, name: str):
  x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                          name=f"{name}_conv")(x)
  x = bn(f"{name}_bn")(x)
  return keras.layers.ReLU(name=f"{name}_relu")(x)


@keras.saving.register_keras_serializable(package="deeppose_tf")
class SoftArgmax(keras.layers.Layer):
  """Heatmap logits (B, H, W, K) -> expected (x, y) (B, K, 2) in box-normalized coordinates:
  cell (i, j) stands for the point ((j + 0.5) / W - 0.5, (i + 0.5) / H - 0.5), the centre of
  its span of the crop, so a one-hot heatmap at (i, j) returns exactly that point."""

  def call(self, logits):
    flat = flat_heatmaps(logits)  # (B, K, HW)
    prob = tf.nn.softmax(flat, axis=-1)
    return tf.matmul(prob, tf.constant(cell_centres(logits.shape[1], logits.shape[2])))

  def compute_output_shape(self, input_shape):
    return (input_shape[0], input_shape[3], 2)


def flat_heatmaps(logits):
  """Heatmap logits (B, H, W, K) -> float32 (B, K, H * W), cells row-major as
  `cell_centres` lists them (the soft-argmax and the heatmap loss both read this)."""
  logits = tf.cast(logits, tf.float32)
  h, w, k = logits.shape[1], logits.shape[2], logits.shape[3]
  return tf.transpose(tf.reshape(logits, [-1, h * w, k]), [0, 2, 1])


def cell_centres(h: int, w: int) -> np.ndarray:
  """(H * W, 2) box-normalized (x, y) of the heatmap cells, row-major like a reshape."""
  xs = (np.arange(w) + 0.5) / w - 0.5
  ys = (np.arange(h) + 0.5) / h - 0.5
  gx, gy = np.meshgrid(xs, ys)
  return np.stack([gx.ravel(), gy.ravel()], axis=-1).astype(np.float32)


@keras.saving.register_keras_serializable(package="deeppose_tf")
class PeakDecode(keras.layers.Layer):
  """Heatmaps (B, H, W, K) -> joints (B, K, 2) box-normalized: the argmax cell, refined to
  sub-cell precision by the weighted mean of the cell centres in its 3x3 neighbourhood.
  Weights: relu(h) for linear heatmaps; exp(h - max) for log-space ones (log_space=True,
  the spatial model's). A map with no positive weight near its peak answers the peak cell.
  Builtin TFLite ops only (argmax, gather, compare, matmul)."""

  def __init__(self, log_space: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.log_space = bool(log_space)

  def call(self, heatmaps):
    h, w = heatmaps.shape[1], heatmaps.shape[2]
    flat = flat_heatmaps(heatmaps)  # (B, K, HW) float32
    centres = tf.constant(cell_centres(h, w))  # (HW, 2)
    peak = tf.gather(centres, tf.argmax(flat, axis=-1, output_type=tf.int32))  # (B, K, 2)
    # Distance in cells from every cell to the peak: the 3x3 window is |dx|, |dy| < 1.5.
    cells = tf.abs(centres[None, None] - peak[:, :, None]) * tf.constant([w, h], tf.float32)
    window = tf.cast(tf.reduce_max(cells, axis=-1) < 1.5, tf.float32)  # (B, K, HW)
    if self.log_space:
      weight = tf.exp(flat - tf.reduce_max(flat, axis=-1, keepdims=True))
    else:
      weight = tf.nn.relu(flat)
    weight = weight * window
    total = tf.reduce_sum(weight, axis=-1, keepdims=True)  # (B, K, 1)
    mean = tf.matmul(weight, centres) / tf.maximum(total, 1e-12)
    return tf.where(total > 1e-12, mean, peak)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], input_shape[3], 2)

  def get_config(self):
    return {**super().get_config(), "log_space": self.log_space}


@keras.saving.register_keras_serializable(package="deeppose_tf")
class HeatmapPeak(PeakDecode):
  """The heatmap head's decoder: PeakDecode(log_space=True) of its heatmap logits. Its own
  class so that model.training_model can tell it apart from Tompson's decoder: the heatmap
  head trains through the soft-argmax of the same logits (differentiable, the integral
  head's training) and predicts with the peak."""
