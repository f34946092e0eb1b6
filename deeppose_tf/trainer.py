"""Training one cascade stage: strategy, model, resumable fit, NaN guard.

Library functions with plain arguments (no flags), so tests drive them directly.
Checkpoints are TF object checkpoints of model + optimizer every `checkpoint_every` steps in
`stage{s}/ckpt/`; `fit_stage` resumes from the newest one that restores.

Multi-worker (MultiWorkerMirroredStrategy, cluster from TF_CONFIG): every worker runs the
same code and must reach every collective op (variable creation, each step, checkpoint
saves, the helpers below) in the same order. The chief writes; the other workers save
their checkpoints into a temporary dir of their own that is deleted afterwards, and resume
from the chief's checkpoints, so a resumable multi-worker run needs a --workdir that every
worker sees (a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from deeppose_tf import atomic
from deeppose_tf import model as model_lib

STRATEGIES = ("mirrored", "multi_worker")
_configured_replicas = None


def make_strategy(cpu_replicas: int = 1, kind: str = "mirrored") -> tf.distribute.Strategy:
  """The training strategy; call it first thing, before any other TF op runs.

  kind="mirrored": MirroredStrategy over the GPUs, or over `cpu_replicas` logical CPU
  devices (splitting the CPU must happen before TF initializes its runtime; a second call
  with another count is an error).
  kind="multi_worker": MultiWorkerMirroredStrategy over the cluster in the TF_CONFIG
  environment variable (one process per worker, each with all its local GPUs or its CPU;
  without TF_CONFIG it is a single local worker). Creating it starts this worker's gRPC
  server and waits until every worker of the cluster is up.
  """
  if kind == "multi_worker":
    return _make_multi_worker(cpu_replicas)
  if kind != "mirrored":
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {kind!r}")
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


def _make_multi_worker(cpu_replicas: int) -> tf.distribute.Strategy:
  if cpu_replicas != 1:
    raise ValueError(f"cpu_replicas={cpu_replicas} does not apply to the multi_worker "
                     "strategy: each worker process uses its GPUs or one CPU device; start "
                     "more worker processes instead")
  raw = os.environ.get("TF_CONFIG")
  if raw:
    try:
      task = json.loads(raw)["task"]
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"TF_CONFIG must be JSON with 'cluster' and 'task', got {raw!r} "
                       f"({e})") from None
    if task.get("type") not in ("chief", "worker"):
      raise ValueError(f"TF_CONFIG task type must be 'chief' or 'worker' for training, got "
                       f"{task.get('type')!r}")
  else:
    logging.warning("--strategy=multi_worker without TF_CONFIG: training as one worker")
  # RING is the collective implementation that runs on CPU; NCCL (AUTO) is better on GPUs.
  impl = tf.distribute.experimental.CommunicationImplementation
  gpus = tf.config.list_physical_devices("GPU")
  options = tf.distribute.experimental.CommunicationOptions(
      implementation=impl.AUTO if gpus else impl.RING)
  strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  logging.info("multi-worker strategy: task %s/%s of %d worker(s), %d replica(s) in sync",
               *task_of(strategy), num_workers(strategy), strategy.num_replicas_in_sync)
  return strategy


def task_of(strategy: tf.distribute.Strategy) -> tuple:
  """(task_type, task_id) of this process; (None, 0) for a single-process strategy."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return None, 0
  return resolver.task_type, int(resolver.task_id or 0)


def num_workers(strategy: tf.distribute.Strategy) -> int:
  """Processes that train together (1 for MirroredStrategy and a lone worker)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None:
    return 1
  spec = resolver.cluster_spec()
  return sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs) or 1


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True for the one process that writes: task 'chief', or worker 0 when the cluster has
  no chief, or any single-process strategy."""
  task_type, task_id = task_of(strategy)
  if task_type is None or task_type == "chief":
    return True
  jobs = strategy.cluster_resolver.cluster_spec().jobs
  return task_type == "worker" and task_id == 0 and "chief" not in jobs


def _gather(strategy: tf.distribute.Strategy, value) -> np.ndarray:
  """Every worker's float64 vector `value`, stacked (a collective op: all workers must call
  it at the same point). Returns (num_replicas, n), a row per replica, worker-major."""
  value = np.atleast_1d(np.asarray(value, np.float64))

  def fn():
    ctx = tf.distribute.get_replica_context()
    return ctx.all_gather(tf.constant(value)[None], axis=0)

  # Traced (a new small function per call) rather than eager: eager collectives under this
  # strategy log a warning per call.
  out = tf.function(lambda: strategy.run(fn))()
  return strategy.experimental_local_results(out)[0].numpy()


def barrier(strategy: tf.distribute.Strategy) -> None:
  """Returns when every worker has reached it; a no-op for one process."""
  if num_workers(strategy) > 1:
    _gather(strategy, 0.0)


def check_same_on_workers(strategy: tf.distribute.Strategy, value: float, what: str) -> None:
  """Raises the same ValueError on every worker when workers hold different `value`s.

  Decisions taken from files (which checkpoint to resume, whether a stage is finished)
  must agree, or the workers would run different collective ops and hang; they differ when
  --workdir is not one filesystem shared by all workers.
  """
  if num_workers(strategy) <= 1:
    return
  values = _gather(strategy, float(value))[:, 0]
  if np.any(values != values[0]):
    raise ValueError(
        f"workers disagree on {what}: {values.tolist()} (a value per replica); every worker "
        "must see the same --workdir (a shared filesystem) and run the same flags")


def wait_for_files(paths, timeout: float = 120.0) -> None:
  """Waits until every path exists. For files the chief wrote before a barrier: on network
  filesystems (NFS caches failed lookups for up to ~30 s) they may show up late."""
  deadline = time.time() + timeout
  missing = [p for p in paths if not os.path.exists(p)]
  while missing and time.time() < deadline:
    time.sleep(0.5)
    missing = [p for p in missing if not os.path.exists(p)]
  if missing:
    raise ValueError(f"{missing} written by the chief are not visible on this worker after "
                     f"{timeout:.0f} s; --workdir must be one filesystem shared by all workers")


def check_shared_dir(strategy: tf.distribute.Strategy, path: str) -> None:
  """Raises the same ValueError on every worker unless all see the chief's files in `path`.

  Multi-worker training resumes from the chief's checkpoints and reads the chief's models
  and statistics between stages, so --workdir must be shared (NFS, a cloud bucket mount).
  A collective: every worker calls it at the same point. No-op for one process.
  """
  if num_workers(strategy) <= 1:
    return
  token_path = os.path.join(path, ".cluster-check")
  chief = is_chief(strategy)
  token = float(np.random.default_rng().integers(1, 2**52)) if chief else 0.0
  if chief:
    os.makedirs(path, exist_ok=True)
    atomic.write_text(token_path, repr(token))
  expected = _gather(strategy, token).max()  # also a barrier: the file exists now
  try:
    wait_for_files([token_path], timeout=60.0)
    with open(token_path) as f:
      seen = float(f.read())
  except (ValueError, OSError):
    seen = 0.0
  seen_all = _gather(strategy, seen)[:, 0]
  if chief:
    os.remove(token_path)
  if np.any(seen_all != expected):
    task_type, task_id = task_of(strategy)
    raise ValueError(
        f"--workdir={path} is not the same directory on every worker (this is {task_type} "
        f"{task_id}; the chief's file there was seen per replica: "
        f"{(seen_all == expected).tolist()}); multi-worker training needs a shared filesystem")


def worker_temp_dir(directory: str, task_id: int) -> str:
  """Where a non-chief worker writes what it must save (saving may run collective ops) but
  nobody reads: checkpoints, a stage's model. The caller removes it afterwards."""
  return os.path.join(directory, f".worker{task_id}-tmp")


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
  lr_schedule: str = "constant"
  warmup_steps: int = 0
  weight_decay: float = 0.0

  def compile_args(self, model: keras.Model) -> dict:
    """optimizer, loss and loss_weights for `model` (a model_lib.training_model: dict
    outputs {"joints", "heatmaps"} get the heatmap loss too, weighted)."""
    lr = self.learning_rate
    if self.lr_schedule != "constant" or self.warmup_steps:
      lr = model_lib.WarmupSchedule(self.learning_rate, self.steps, self.warmup_steps,
                                    self.lr_schedule)
    optimizer = model_lib.make_optimizer(self.optimizer, lr, self.weight_decay)
    coords = model_lib.coordinate_loss(self.loss)
    if isinstance(model.output, dict):
      return {"optimizer": optimizer,
              "loss": {"joints": coords, "heatmaps": model_lib.heatmap_loss(self.heatmap_sigma)},
              "loss_weights": {"joints": 1.0, "heatmaps": self.heatmap_loss_weight}}
    return {"optimizer": optimizer, "loss": coords}


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
  A model with dict outputs {"joints", "heatmaps"} (model_lib.training_model) is trained on
  the dataset's targets for both. extra_callbacks(start_step) -> more Keras callbacks
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
  callbacks = [NanGuard(step), CheckpointEvery(manager, per_epoch)]
  if log_dir and chief:
    callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, update_freq=50,
                                                 write_graph=False))
  if extra_callbacks is not None and chief:
    callbacks.extend(extra_callbacks(step))
  dataset = make_dataset(step)
  if isinstance(model.output, dict):
    dataset = dataset.map(lambda x, y: (x, {"joints": y, "heatmaps": y}))
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
