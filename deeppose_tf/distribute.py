"""Cluster coordination for tf.distribute: the strategy, who is chief, barriers, and checks
that every worker sees the same files.

Multi-worker (MultiWorkerMirroredStrategy, cluster from TF_CONFIG): every worker runs the
same code and must reach every collective op (variable creation, each step, checkpoint
saves, the helpers below) in the same order. Helpers here that gather across workers are
collectives: every worker calls them at the same point. For a single process they are
no-ops or trivial.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from deeppose_tf import atomic

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
