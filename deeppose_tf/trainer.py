"""Training one cascade stage: strategy, model, resumable fit, NaN guard.

Library functions with plain arguments (no flags), so tests drive them directly.
Checkpoints are TF object checkpoints of model + optimizer every `checkpoint_every` steps in
`stage{s}/ckpt/`; `fit_stage` resumes from the newest one that restores.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from deeppose_tf import model as model_lib

_configured_replicas = None


def make_strategy(cpu_replicas: int = 1) -> tf.distribute.Strategy:
  """MirroredStrategy over the GPUs, or over `cpu_replicas` logical CPU devices.

  Splitting the CPU into logical devices must happen before TF initializes its runtime, so
  call this first thing; a second call with another count is an error.
  """
  global _configured_replicas
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    return tf.distribute.MirroredStrategy()
  if cpu_replicas < 1:
    raise ValueError(f"cpu_replicas must be >= 1, got {cpu_replicas}")
  if _configured_replicas is None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
      tf.config.set_logical_device_configuration(
          cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_replicas)])
    except RuntimeError:
      have = len(tf.config.list_logical_devices("CPU"))
      if have != cpu_replicas:
        raise ValueError(
            f"the TF runtime is already initialized with {have} CPU device(s); "
            f"cpu_replicas={cpu_replicas} must be set before any TF op runs") from None
    _configured_replicas = cpu_replicas
  elif _configured_replicas != cpu_replicas:
    raise ValueError(f"CPU already split into {_configured_replicas} devices; cannot make "
                     f"{cpu_replicas}")
  devices = [f"/cpu:{i}" for i in range(cpu_replicas)]
  return tf.distribute.MirroredStrategy(
      devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


@dataclasses.dataclass
class FitConfig:
  """steps: total optimizer steps for the stage; checkpoint_every: steps between
  checkpoints (also the length of one Keras 'epoch' in the progress bar)."""

  steps: int
  learning_rate: float = 1e-4
  optimizer: str = "adam"
  checkpoint_every: int = 200
  keep_checkpoints: int = 2
  verbose: Optional[int] = None


class NanGuard(keras.callbacks.Callback):
  """Stops training with an error the moment the loss is not finite, before any checkpoint
  of the broken weights is written."""

  def __init__(self, initial_step: int):
    super().__init__()
    self.step = initial_step

  def on_train_batch_end(self, batch, logs=None):
    self.step += 1
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      raise FloatingPointError(
          f"training loss became {loss} at step {self.step}; the last good checkpoint is "
          "kept. Lower --learning_rate or check the data (prepare validates every record).")


class CheckpointEvery(keras.callbacks.Callback):
  """Saves model + optimizer at the end of every Keras epoch (= checkpoint_every steps)."""

  def __init__(self, manager: tf.train.CheckpointManager, steps_per_epoch: int):
    super().__init__()
    self.manager = manager
    self.steps_per_epoch = steps_per_epoch

  def on_epoch_end(self, epoch, logs=None):
    step = (epoch + 1) * self.steps_per_epoch
    path = self.manager.save(checkpoint_number=step)
    logging.info("checkpoint at step %d: %s", step, path)


def restore_latest(checkpoint: tf.train.Checkpoint, manager: tf.train.CheckpointManager) -> int:
  """Restores the newest checkpoint that loads; returns its step (0 when none).

  A truncated or corrupt newest checkpoint (a crash mid-write, a full disk) is skipped
  with a warning and the one before it is used.
  """
  for path in reversed(manager.checkpoints):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except Exception as e:  # tf raises several types for damaged files
      logging.warning("checkpoint %s does not restore (%s); trying an older one", path,
                      str(e).splitlines()[0][:200])
      continue
    step = int(path.rsplit("-", 1)[1])
    logging.info("resumed from %s (step %d)", path, step)
    return step
  return 0


def fit_stage(strategy: tf.distribute.Strategy, build_model: Callable[[], keras.Model],
              make_dataset: Callable[[int], tf.data.Dataset], ckpt_dir: str, config: FitConfig,
              log_dir: Optional[str] = None) -> tuple:
  """Trains one stage to `config.steps` steps, resuming from `ckpt_dir`.

  build_model: called inside the strategy scope. make_dataset(start_step) -> a dataset of
  global batches (crops, targets); start_step lets it move its seeds past what was seen.
  Returns (model, history dict of per-epoch losses).
  """
  with strategy.scope():
    model = build_model()
    optimizer = model_lib.make_optimizer(config.optimizer, config.learning_rate)
    model.compile(optimizer=optimizer, loss=model_lib.masked_l2_loss)
    optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=config.keep_checkpoints)
  step = restore_latest(checkpoint, manager)
  per_epoch = config.checkpoint_every
  epochs = math.ceil(config.steps / per_epoch)
  initial_epoch = step // per_epoch
  if initial_epoch >= epochs:
    logging.info("stage already trained to step %d in %s", step, ckpt_dir)
    return model, {}
  callbacks = [NanGuard(step), CheckpointEvery(manager, per_epoch)]
  if log_dir:
    callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, update_freq=50,
                                                 write_graph=False))
  verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
  history = model.fit(make_dataset(step), epochs=epochs, initial_epoch=initial_epoch,
                      steps_per_epoch=per_epoch, callbacks=callbacks, verbose=verbose,
                      shuffle=False)
  return model, history.history
