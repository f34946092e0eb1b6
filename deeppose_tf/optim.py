"""Optimizers and learning-rate schedules: make_optimizer (adam / AdamW, adagrad, sgd) and
WarmupSchedule (linear warm-up, then cosine, step or constant)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adam", "adagrad", "sgd")


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
  raise ValueError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
