"""The run folder (--workdir): its layout, and every read and write of its files.

Layout of a trained cascade:
  config.json                  what rebuilds and runs the cascade: skeleton, input_size,
                               sigma, num_stages, data_dir, train_split, model (ModelConfig)
  mean_pose.json               {"mean_pose": (K, 2)} mean box-normalized training pose
  flags.txt                    the flags of the last train command
  .lock                        held (flock) by the training process; names its PID
  stage{s}/model.keras         the trained stage network (float32)
  stage{s}/displacement.json   per-joint mean/covariance of stage s's error, in units of
                               the joint box side (feeds stage s + 1's training)
  stage{s}/ckpt/               resumable checkpoints of the stage being trained
  logs/stage{s}/               TensorBoard logs; curves.json / curves.png learning curves

Every write is crash-safe (atomic.py): a file is either absent, the old one or the new one.
Every read of a damaged file raises ValueError naming the file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from typing import Optional

import keras
import numpy as np

from deeppose_tf import atomic

CONFIG_FILE = "config.json"
MEAN_POSE_FILE = "mean_pose.json"
LOCK_FILE = ".lock"
# config.json keys that may change when a run is resumed or extended: they do not change
# what the stages already trained compute. Everything else must match.
RESUMABLE_KEYS = ("num_stages", "data_dir", "model.precision", "model.backbone_weights")


def stage_dir(workdir: str, stage: int) -> str:
  return os.path.join(workdir, f"stage{stage}")


def model_path(workdir: str, stage: int) -> str:
  return os.path.join(stage_dir(workdir, stage), "model.keras")


def stats_path(workdir: str, stage: int) -> str:
  return os.path.join(stage_dir(workdir, stage), "displacement.json")


def checkpoint_dir(workdir: str, stage: int, phase: Optional[str] = None) -> str:
  """stage{s}/ckpt, or stage{s}/ckpt_<phase> for a training phase of a tompson stage."""
  return os.path.join(stage_dir(workdir, stage), f"ckpt_{phase}" if phase else "ckpt")


def phase_model_path(workdir: str, stage: int, phase: str) -> str:
  """A finished training phase's network (tompson stages): stage{s}/<phase>.keras."""
  return os.path.join(stage_dir(workdir, stage), f"{phase}.keras")


def log_dir(workdir: str, stage: int) -> str:
  return os.path.join(workdir, "logs", f"stage{stage}")


def curves_json(workdir: str) -> str:
  return os.path.join(workdir, "curves.json")


def curves_png(workdir: str) -> str:
  return os.path.join(workdir, "curves.png")


def check_workdir(workdir: str) -> str:
  """Raises ValueError unless `workdir` is a folder or does not exist yet."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir} is a file, not a folder")
  return workdir


def read_json(path: str, what: str) -> dict:
  """A JSON object from `path`; ValueError naming the file when it is missing or damaged."""
  try:
    with open(path) as f:
      value = json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{path} is missing ({what})") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is damaged, not valid JSON ({what}): {e}") from None
  if not isinstance(value, dict):
    raise ValueError(f"{path} is damaged: expected a JSON object ({what})")
  return value


def write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  atomic.write_text(path, json.dumps(value, indent=1))


# ---------------------------------------------------------------------------- config.json

def config_path(workdir: str) -> str:
  return os.path.join(workdir, CONFIG_FILE)


def read_config(workdir: str) -> dict:
  path = config_path(workdir)
  if not os.path.exists(path):
    raise ValueError(f"{workdir!r} holds no trained cascade ({path} is missing); train one "
                     "with `python -m deeppose_tf.train --workdir=...`")
  config = read_json(path, "the cascade's configuration")
  checks = {"skeleton": (str, dict), "input_size": int, "sigma": (int, float), "num_stages": int}
  for key, kind in checks.items():
    value = config.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
      raise ValueError(f"{path} is damaged: {key!r} is {value!r}")
  if config["input_size"] < 1 or config["num_stages"] < 1 or not 0 < config["sigma"] < 1e6:
    raise ValueError(f"{path} is damaged: input_size {config['input_size']}, num_stages "
                     f"{config['num_stages']}, sigma {config['sigma']} are out of range")
  return config


def write_config(workdir: str, config: dict) -> None:
  write_json(config_path(workdir), config)


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def has_trained_state(workdir: str) -> bool:
  """True when some stage has a model (or a phase's), statistics or a checkpoint in
  `workdir`."""
  if not os.path.isdir(workdir):
    return False
  for name in os.listdir(workdir):
    if name.startswith("stage") and name[5:].isdigit():
      sdir = os.path.join(workdir, name)
      if os.path.isdir(sdir) and any(
          n.startswith("ckpt") or n.endswith(".keras") or n == os.path.basename(
              stats_path(workdir, 1)) for n in os.listdir(sdir)):
        return True
  return False


def check_resume(workdir: str, config: dict) -> None:
  """Refuses to continue a run trained with other settings.

  Stages trained for another sigma, input size, skeleton or network would be mixed into one
  cascade without a word. Raises ValueError naming every differing setting with both
  values, when `workdir` already holds trained state (a stage model, statistics or a
  checkpoint) under a config.json that differs from `config` outside RESUMABLE_KEYS.
  Keys only one side has (a newer version's new setting) are not compared.
  """
  path = config_path(workdir)
  if not os.path.exists(path) or not has_trained_state(workdir):
    return
  old = _flatten(read_config(workdir))
  new = _flatten(json.loads(json.dumps(config)))  # tuples -> lists, as stored
  diffs = [f"{k}: {old[k]!r} in the workdir, {new[k]!r} now" for k in sorted(old)
           if k in new and k not in RESUMABLE_KEYS and old[k] != new[k]]
  if diffs:
    raise ValueError(
        f"{workdir} was trained with other settings ({path}); resuming would mix stages "
        f"trained for different geometry: " + "; ".join(diffs) + ". Use the same flags, or "
        "a new --workdir.")


# ----------------------------------------------------------------------- mean_pose.json

def mean_pose_path(workdir: str) -> str:
  return os.path.join(workdir, MEAN_POSE_FILE)


def read_mean_pose(workdir: str, num_joints: Optional[int] = None) -> np.ndarray:
  """The mean box-normalized training pose (K, 2) float32."""
  path = mean_pose_path(workdir)
  data = read_json(path, "the mean training pose")
  try:
    pose = np.asarray(data["mean_pose"], np.float32)
  except (KeyError, TypeError, ValueError):
    raise ValueError(f"{path} is damaged: expected {{\"mean_pose\": [[x, y], ...]}}") from None
  if pose.ndim != 2 or pose.shape[1] != 2 or (num_joints and pose.shape[0] != num_joints):
    raise ValueError(f"{path} is damaged: mean_pose has shape {pose.shape}, expected "
                     f"({num_joints or 'K'}, 2)")
  if not np.isfinite(pose).all():
    raise ValueError(f"{path} holds non-finite values; delete it and rerun train to recompute "
                     "it from the training split")
  return pose


def write_mean_pose(workdir: str, pose: np.ndarray) -> None:
  write_json(mean_pose_path(workdir), {"mean_pose": np.asarray(pose).tolist()})


# -------------------------------------------------------------- displacement statistics

def save_stats(workdir: str, stage: int, stats: dict) -> None:
  write_json(stats_path(workdir, stage), stats)


def load_stats(workdir: str, stage: int) -> dict:
  path = stats_path(workdir, stage)
  if not os.path.exists(path):
    raise ValueError(
        f"stage {stage + 1} needs stage {stage}'s displacement statistics at {path}; produce "
        f"them with `python -m deeppose_tf.train --workdir={workdir} --stage={stage}`")
  stats = read_json(path, f"stage {stage}'s displacement statistics")
  try:
    mean = np.asarray(stats["mean"], np.float64)
    chol = np.asarray(stats["chol"], np.float64)
  except (KeyError, TypeError, ValueError):
    raise ValueError(f"{path} is damaged: expected numeric 'mean' (K, 2) and 'chol' "
                     "(K, 2, 2)") from None
  if (mean.ndim != 2 or mean.shape[1:] != (2,) or chol.shape != (mean.shape[0], 2, 2)
      or not (np.isfinite(mean).all() and np.isfinite(chol).all())):
    raise ValueError(f"{path} is damaged: 'mean' {mean.shape} and 'chol' {chol.shape} must "
                     "be finite, (K, 2) and (K, 2, 2)")
  return stats


# ------------------------------------------------------------------------------- models

def save_model(model: keras.Model, path: str) -> None:
  """Saves a .keras file crash-safely (Keras insists on the suffix, so the temp keeps it)."""
  tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-" + os.path.basename(path))
  try:
    model.save(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load_model(path: str) -> keras.Model:
  """A stage network; ValueError naming the file when it is missing or damaged."""
  if not os.path.exists(path):
    raise ValueError(f"{path} is missing")
  import zipfile
  if not zipfile.is_zipfile(path):
    raise ValueError(f"{path} is damaged or not a .keras file (not a zip archive)")
  try:
    return keras.models.load_model(path, compile=False)
  except Exception as e:  # Keras raises assorted types for a truncated zip
    # A whole archive that does not rebuild is a model this version cannot load, not
    # necessarily a damaged file: say both, with Keras' own reason.
    raise ValueError(f"{path} is a .keras archive that does not load back (damaged, or "
                     f"saved by an incompatible version): {type(e).__name__}: "
                     f"{str(e)[:300]}") from None


def is_finished(workdir: str, stage: int, last: bool = False) -> bool:
  """A stage is finished when its model exists and, unless it is the run's last stage, its
  displacement statistics too: only the next stage reads them. A run resumed with more stages
  computes the old last stage's statistics then (stages.train_stage)."""
  if not os.path.exists(model_path(workdir, stage)):
    return False
  return last or os.path.exists(stats_path(workdir, stage))


# --------------------------------------------------------------------------------- lock

class RunLock:
  """An exclusive lock on a workdir for one training process (or on another folder that one
  process writes at a time: predict's --output).

  A second process that tries to train in the same workdir gets ValueError naming the
  first one's PID and host. The lock is an flock on WORKDIR/.lock, so the kernel drops it
  when its holder exits, however it dies (SIGKILL included): a stale lock file never blocks
  the next run. A clean release removes the file. Use as a context manager.
  """

  BUSY = ("another training process holds {path} ({holder}); two trainings in one workdir "
          "would overwrite each other's checkpoints. Wait for it, stop it, or use another "
          "--workdir.")

  def __init__(self, workdir: str, busy: Optional[str] = None):
    """busy: the error for a held lock, a format string with {path} and {holder} (default:
    a training's)."""
    self.path = os.path.join(workdir, LOCK_FILE)
    self.busy = busy or self.BUSY
    self._fd: Optional[int] = None

  def acquire(self) -> "RunLock":
    os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
          raise ValueError(self.busy.format(path=self.path, holder=holder)) from None
        raise
      # The holder removes the file when it releases: a lock taken on a file that was
      # removed meanwhile is no lock; take it again on the new file.
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      try:
        os.remove(self.path)  # while still locked: nobody can take a lock on it after this
      except FileNotFoundError:
        pass
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "RunLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
