"""Training one cascade stage: the resumable fit, its checkpoints and NaN guard.

Library functions with plain arguments (no flags), so tests drive them directly.
Checkpoints are TF object checkpoints of model + optimizer every `checkpoint_every` steps in
`stage{s}/ckpt/`; `fit_stage` resumes from the newest one that restores.

Multi-worker (MultiWorkerMirroredStrategy, cluster from TF_CONFIG): every worker runs the
same code and must reach every collective op (variable creation, each step, checkpoint
saves, distribute.py's helpers) in the same order. The chief writes; the other workers save
their checkpoints into a temporary dir of their own that is deleted afterwards, and resume
from the chief's checkpoints, so a resumable multi-worker run needs a --workdir that every
worker sees (a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
from typing import Callable, Optional

import keras
import tensorflow as tf
from absl import logging

from deeppose_tf import allocator, losses, optim
from deeppose_tf.distribute import (check_same_on_workers, is_chief, num_workers, task_of,
                                     worker_temp_dir)


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
  loss: str = "l2"
  heatmap_loss_weight: float = 0.0
  heatmap_sigma: float = 1.0
  heatmap_loss: str = "ce"
  lr_schedule: str = "constant"
  warmup_steps: int = 0
  weight_decay: float = 0.0

  def compile_args(self, model: keras.Model) -> dict:
    """optimizer, loss and loss_weights for `model`. A model with dict outputs (a
    model.training_model or a tompson phase model) gets one loss per output: "joints" the
    coordinate loss (weight 1), "heatmaps" the heatmap loss `heatmap_loss` (ce or mse,
    weight heatmap_loss_weight), "spatial" (the tompson spatial model's log-beliefs) the
    heatmap cross-entropy (weight 1)."""
    lr = self.learning_rate
    if self.lr_schedule != "constant" or self.warmup_steps:
      lr = optim.WarmupSchedule(self.learning_rate, self.steps, self.warmup_steps,
                                self.lr_schedule)
    optimizer = optim.make_optimizer(self.optimizer, lr, self.weight_decay)
    coords = losses.coordinate_loss(self.loss)
    if not isinstance(model.output, dict):
      return {"optimizer": optimizer, "loss": coords}
    if self.heatmap_loss not in losses.HEATMAP_LOSSES:
      raise ValueError(f"heatmap_loss must be one of {losses.HEATMAP_LOSSES}, got "
                       f"{self.heatmap_loss!r}")
    heat = (losses.heatmap_mse if self.heatmap_loss == "mse" else losses.heatmap_loss)
    table = {"joints": (coords, 1.0),
             "heatmaps": (heat(self.heatmap_sigma), self.heatmap_loss_weight),
             "spatial": (losses.heatmap_loss(self.heatmap_sigma), 1.0)}
    unknown = set(model.output) - set(table)
    if unknown:
      raise ValueError(f"no loss for the model outputs {sorted(unknown)}")
    return {"optimizer": optimizer,
            "loss": {k: table[k][0] for k in model.output},
            "loss_weights": {k: table[k][1] for k in model.output}}


def targets_for(model: keras.Model, dataset: tf.data.Dataset) -> tf.data.Dataset:
  """`dataset` of (x, y) as `model` trains on it: a model with dict outputs (a
  model.training_model or a tompson phase model) gets the same joint targets y for every
  output (each output's loss in FitConfig.compile_args reads what it needs from them)."""
  if not isinstance(model.output, dict):
    return dataset
  keys = list(model.output)
  return dataset.map(lambda x, y: (x, {k: y for k in keys}))


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


class AllocatorSettings(keras.callbacks.Callback):
  """Undoes TensorFlow's malloc patch (allocator.py: it made every CPU training step 2.2-2.7x
  slower) after the first step of every epoch: by then the distributed dataset's iterator,
  whose construction applies the patch, exists. Keyed to the epoch, not to a batch index, so
  it also runs when Keras reports batches in steps of steps_per_execution."""

  def __init__(self):
    super().__init__()
    self.applied = None
    self._pending = True

  def on_epoch_begin(self, epoch, logs=None):
    self._pending = True

  def on_train_batch_end(self, batch, logs=None):
    if self._pending:
      self._pending = False
      applied = allocator.restore()
      if self.applied is None:
        logging.info("malloc thresholds %s", "restored (allocator.py)" if applied else
                     "left alone (no glibc, or glibc refused them)")
      self.applied = applied


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


def remove_interrupted_writes(ckpt_dir: str) -> None:
  """Deletes `ckpt-N_temp` folders: what a write killed midway leaves behind. The checkpoint
  state file never points at them, so they are debris, not checkpoints."""
  import glob
  for debris in glob.glob(os.path.join(ckpt_dir, "*_temp")):
    logging.warning("removing %s, left by a checkpoint write that was interrupted", debris)
    shutil.rmtree(debris, ignore_errors=True)


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


def checkpoint_interval(steps: int, every: int) -> int:
  """Steps per Keras epoch (= between checkpoints): the largest divisor of `steps` in
  [every / 2, every], so a stage runs exactly `steps` steps; when there is none, `every`,
  and the stage is rounded up to a multiple of it (logged)."""
  every = max(1, min(every, steps))
  for d in range(every, max(1, every // 2) - 1, -1):
    if steps % d == 0:
      return d
  logging.warning("%d steps is not a multiple of any checkpoint interval in [%d, %d]; "
                  "training runs %d steps", steps, every // 2, every,
                  math.ceil(steps / every) * every)
  return every


def fit_stage(strategy: tf.distribute.Strategy, build_model: Callable[[], keras.Model],
              make_dataset: Callable[[int], tf.data.Dataset], ckpt_dir: str, config: FitConfig,
              log_dir: Optional[str] = None,
              extra_callbacks: Optional[Callable[[int], list]] = None) -> tuple:
  """Trains one stage to `config.steps` steps, resuming from `ckpt_dir`.

  build_model: called inside the strategy scope. make_dataset(start_step) -> a dataset of
  global batches (crops, targets); start_step lets it move its seeds past what was seen.
  A model with dict outputs (model.training_model, a tompson phase model) is trained on
  the dataset's targets for every output (targets_for). extra_callbacks(start_step) -> more Keras callbacks
  (the learning curves), added on the chief.
  Returns (model, history dict of per-epoch losses).

  Multi-worker: every worker builds the same dataset of global batches and keeps its slice
  of each batch (AutoShardPolicy.DATA), so the run sees exactly the batches one process
  would. Only the chief writes to ckpt_dir and log_dir. Under MultiWorkerMirroredStrategy
  (any number of workers) training runs `_fit_multi_worker` instead of `model.fit`.
  """
  chief = is_chief(strategy)
  multi = num_workers(strategy) > 1
  with strategy.scope():
    model = build_model()
    args = config.compile_args(model)
    optimizer = args["optimizer"]
    model.compile(**args)
    optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
  # Every worker resumes from the chief's checkpoints (reading writes nothing).
  manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=config.keep_checkpoints)
  step = restore_latest(checkpoint, manager)
  check_same_on_workers(strategy, step, f"the step to resume from in {ckpt_dir}")
  per_epoch = checkpoint_interval(config.steps, config.checkpoint_every)
  epochs = math.ceil(config.steps / per_epoch)
  initial_epoch = step // per_epoch
  if initial_epoch >= epochs:
    logging.info("stage already trained to step %d in %s", step, ckpt_dir)
    return model, {}
  if chief:
    remove_interrupted_writes(ckpt_dir)
  temp_dir = None
  if not chief:
    temp_dir = worker_temp_dir(ckpt_dir, task_of(strategy)[1])
    shutil.rmtree(temp_dir, ignore_errors=True)
    manager = tf.train.CheckpointManager(checkpoint, temp_dir, max_to_keep=1)
  callbacks = [NanGuard(step), AllocatorSettings(), CheckpointEvery(manager, per_epoch)]
  if log_dir and chief:
    callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, update_freq=50,
                                                 write_graph=False))
  if extra_callbacks is not None and chief:
    callbacks.extend(extra_callbacks(step))
  dataset = make_dataset(step)
  dataset = targets_for(model, dataset)
  if multi:
    # The default (AUTO) would give each worker other files than one process reads; DATA
    # keeps the global batches and hands worker i the i-th slice of each.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
  verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
  try:
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
      # Also with one worker, so that a one-worker run is the exact reference for N workers.
      history = _fit_multi_worker(model, strategy, dataset, epochs, initial_epoch, per_epoch,
                                  callbacks, verbose)
    else:
      history = model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch,
                          steps_per_epoch=per_epoch, callbacks=callbacks, verbose=verbose,
                          shuffle=False)
  finally:
    if temp_dir:
      shutil.rmtree(temp_dir, ignore_errors=True)
  return model, history.history


def _fit_multi_worker(model: keras.Model, strategy: tf.distribute.Strategy,
                      dataset: tf.data.Dataset, epochs: int, initial_epoch: int,
                      steps_per_epoch: int, callbacks: list, verbose: int):
  """`model.fit`'s loop for MultiWorkerMirroredStrategy; returns the History callback.

  Keras 3 `fit` (checked up to 3.15) fails under MultiWorkerMirroredStrategy with several
  workers (keras-team/keras#20585): its symbolic build all-reduces an (x, y) batch ("Attempt
  to convert a value (PerReplica...)") and it reduces the scalar step logs over axis 0
  ("Invalid reduction dimension 0"). This loop runs the same public pieces that `fit` runs
  (`model.train_step` in `strategy.run`, metrics reset per epoch, the callbacks) and averages
  the logs over all replicas of all workers, so every worker sees the same global loss.
  """
  history = keras.callbacks.History()
  callback_list = keras.callbacks.CallbackList(
      callbacks + [history], add_progbar=verbose != 0, verbose=verbose, epochs=epochs,
      steps=steps_per_epoch, model=model)
  iterator = iter(strategy.experimental_distribute_dataset(dataset))

  @tf.function
  def train_step(iterator):
    logs = strategy.run(model.train_step, args=(next(iterator),))
    return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in logs.items()}

  model.stop_training = False
  callback_list.on_train_begin()
  epoch_logs = {}
  for epoch in range(initial_epoch, epochs):
    model.reset_metrics()
    callback_list.on_epoch_begin(epoch)
    logs = {}
    for step in range(steps_per_epoch):
      callback_list.on_train_batch_begin(step)
      logs = train_step(iterator)
      callback_list.on_train_batch_end(step, logs)
      if model.stop_training:
        break
    epoch_logs = {k: float(v) for k, v in logs.items()}
    callback_list.on_epoch_end(epoch, epoch_logs)
    if model.stop_training:
      break
  model.optimizer.finalize_variable_values(model.trainable_weights)
  callback_list.on_train_end(logs=epoch_logs)
  return history
