"""Validation learning curves during training: val PCP / PDJ every N optimizer steps.

`make_val_evaluator` scores the cascade (earlier stages + the stage being trained) on the
first `limit` images of a split; `ValCurve` calls it from `model.fit` and appends points to
curves.json (crash-safe, resume-aware) and TensorBoard; `plot_curves` draws curves.png.

curves.json: {"stage1": [point, ...], "stage2": [...]}, points sorted by step, each
  {"step", "images", "minutes", "stage_minutes", "eval_seconds", "train_loss",
   "pcp", "pdj@0.05", "pdj@0.1", "pdj@0.2"}; NaN (nothing to count) is stored as null.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from deeppose_tf import atomic, metrics, pipeline
from deeppose_tf.cascade import Cascade
from deeppose_tf.skeleton import Skeleton

METRIC_KEYS = ("pcp",) + tuple(f"pdj@{r}" for r in metrics.PDJ_REPORT_RADII)


def _check_int(name: str, value, minimum: int) -> int:
  # bool is an int subclass; True as a step count is a bug, not 1.
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
  return int(value)


def _finite_or_none(value) -> Optional[float]:
  """A JSON-safe float: NaN/inf (e.g. PCP with no annotated limb) becomes null."""
  return float(value) if value is not None and math.isfinite(float(value)) else None


def make_val_evaluator(prev_stages: Sequence[keras.Model], skeleton: Skeleton, sigma: float,
                       input_size: int, data_dir: str, split: str, limit: int,
                       batch_size: int = 16, refine_step: float = 1.0, reframe: int = 0,
                       left_right: str = "person") -> Callable[[keras.Model], dict]:
  """Returns evaluate(net) -> {"pcp", "pdj@0.05", "pdj@0.1", "pdj@0.2", "num_images"}.

  The first `limit` images of `split` are decoded once and kept in memory (batches of
  image (B, H, W, 3) uint8, box (B, 4) image pixels), so a call costs only the forward
  passes. A call runs Cascade(prev_stages + [net]) and scores its LAST stage's pose
  (N, K, 2) with strict PCP@0.5 and PDJ (metrics.summarize); NaN rates become None.
  refine_step: the cascade's (train --refine_step), so a refinement stage's curve scores
  what the run will answer. Flips stay off, and reframing unless `reframe` passes are asked
  for (a stage 1 trained on the joints' framing): the curve is the cheap, plain reading;
  the run's final evaluation has them. left_right: the labels of the split and of the
  run's answers (labels.py), as the run's cascade gives them.
  `net` is the stage under training: the same object on every call, weights changing.
  """
  limit = _check_int("limit", limit, 1)
  batch_size = _check_int("batch_size", batch_size, 1)
  prev_stages = list(prev_stages)
  batches = [(b["image"], tf.cast(b["box"], tf.float32), b["joints"].numpy(),
              b["visible"].numpy())
             for b in pipeline.eval_dataset(data_dir, split, skeleton, batch_size, limit)]
  if not batches:
    raise ValueError(f"split {split!r} in {data_dir!r} has no records to validate on")
  joints = np.concatenate([b[2] for b in batches])
  visible = np.concatenate([b[3] for b in batches])
  # id(net) -> (net, traced predict). Holding `net` keeps its id from being reused by
  # another object; the trace reads the variables, so weight updates need no retrace.
  cache = {}

  def evaluate(net: keras.Model) -> dict:
    entry = cache.get(id(net))
    if entry is None or entry[0] is not net:
      casc = Cascade(prev_stages + [net], skeleton, sigma, input_size,
                     refine_step=refine_step, reframe=reframe, left_right=left_right)
      entry = cache[id(net)] = (net, casc.traced_predict())
    fn = entry[1]
    pose = np.concatenate([fn(images, boxes)[:, -1].numpy() for images, boxes, _, _ in batches])
    summary = metrics.summarize(pose, joints, visible, skeleton)
    out = {"pcp": _finite_or_none(summary["pcp_mean"]), "num_images": summary["num_images"]}
    for r in metrics.PDJ_REPORT_RADII:
      out[f"pdj@{r}"] = _finite_or_none(summary["pdj_mean_at"][r])
    return out

  evaluate.cache = cache  # for tests: one trace per net
  return evaluate


def _read(json_path: str) -> dict:
  """curves.json as {"stageN": [points]}; {} when the file does not exist yet."""
  if not os.path.exists(json_path):
    return {}
  try:
    with open(json_path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"learning-curve file {json_path!r} is not valid JSON ({e}); delete it "
                     "to start the curves afresh") from e
  if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
    raise ValueError(f"learning-curve file {json_path!r} must hold {{'stageN': [points]}}")
  return data


class ValCurve(keras.callbacks.Callback):
  """Evaluates `evaluate_fn(self.model)` every `every_steps` optimizer steps (steps counted
  from `initial_step`, so the grid stays on multiples of every_steps across resumes) and once
  more at the end of training; appends points to curves.json key f"stage{stage}" and to
  TensorBoard (val/pcp, val/pdj@r, train/loss at the optimizer step) when log_dir is given.

  images = step * images_per_step (default batch_size): images for stage 1, crops for
  stages >= 2. minutes = minutes_offset (the earlier stages' wall minutes) + this stage's
  wall minutes, evaluation time included (the user waits for it; eval_seconds records it).
  A resumed stage continues its minutes from its last recorded point. every_steps <= 0
  disables the callback. Call it on one process only (the chief) in multi-worker runs.
  """

  def __init__(self, evaluate_fn: Callable[[keras.Model], dict], every_steps: int, stage: int,
               json_path: str, log_dir: Optional[str] = None, initial_step: int = 0,
               batch_size: Optional[int] = None, minutes_offset: float = 0.0,
               images_per_step: Optional[int] = None):
    super().__init__()
    if isinstance(every_steps, bool) or not isinstance(every_steps, (int, np.integer)):
      raise ValueError(f"every_steps must be an int (<= 0 disables); got {every_steps!r}")
    self.every = int(every_steps)
    self.enabled = self.every > 0
    self.stage = _check_int("stage", stage, 1)
    self.initial_step = _check_int("initial_step", initial_step, 0)
    if images_per_step is None and batch_size is None and self.enabled:
      raise ValueError("ValCurve needs batch_size (or images_per_step) for the images axis")
    per_step = images_per_step if images_per_step is not None else batch_size
    self.images_per_step = _check_int("images_per_step" if images_per_step is not None
                                      else "batch_size", per_step, 1) if self.enabled else 0
    if not (isinstance(minutes_offset, (int, float)) and math.isfinite(minutes_offset)
            and minutes_offset >= 0):
      raise ValueError(f"minutes_offset must be a finite number >= 0; got {minutes_offset!r}")
    if self.enabled and not callable(evaluate_fn):
      raise ValueError(f"evaluate_fn must be callable; got {evaluate_fn!r}")
    self.evaluate_fn, self.json_path, self.log_dir = evaluate_fn, json_path, log_dir
    self.minutes_offset = float(minutes_offset)
    self.key = f"stage{self.stage}"
    self.step = self.last_eval = self.initial_step
    self.points, self.writer, self.loss = [], None, None
    self.start, self.base_minutes = 0.0, 0.0

  def on_train_begin(self, logs=None):
    if not self.enabled:
      return
    self.step = self.last_eval = self.initial_step
    # Points past initial_step came from a run that died after them but before its next
    # checkpoint: this run retrains those steps, so its points replace them.
    old = _read(self.json_path).get(self.key, [])
    self.points = [p for p in old if p["step"] <= self.initial_step]
    # The wall time of the lost run was really spent: continue from the latest recorded
    # minutes, also when the points they belong to are about to be replaced.
    self.base_minutes = max((p["stage_minutes"] for p in old), default=0.0)
    self.start = time.time()
    if self.log_dir:
      self.writer = tf.summary.create_file_writer(self.log_dir)

  def on_train_batch_end(self, batch, logs=None):
    if not self.enabled:
      return
    self.step += 1
    self.loss = (logs or {}).get("loss", self.loss)
    if self.step % self.every == 0:
      self._record()

  def on_train_end(self, logs=None):
    if not self.enabled:
      return
    if self.step > self.last_eval:
      self._record()
    if self.writer is not None:
      self.writer.close()
      self.writer = None

  def _record(self):
    t0 = time.time()
    result = self.evaluate_fn(self.model)
    eval_seconds = time.time() - t0
    stage_minutes = self.base_minutes + (time.time() - self.start) / 60.0
    loss = _finite_or_none(None if self.loss is None else float(self.loss))
    point = {"step": self.step, "images": self.step * self.images_per_step,
             "minutes": self.minutes_offset + stage_minutes, "stage_minutes": stage_minutes,
             "eval_seconds": eval_seconds, "train_loss": loss}
    point.update({k: _finite_or_none(result.get(k)) for k in METRIC_KEYS})
    self.points = [p for p in self.points if p["step"] < self.step] + [point]
    self.last_eval = self.step
    # Re-read so that points another stage wrote since on_train_begin survive.
    data = _read(self.json_path)
    data[self.key] = self.points
    parent = os.path.dirname(self.json_path)
    if parent:
      os.makedirs(parent, exist_ok=True)
    atomic.write_text(self.json_path, json.dumps(
        dict(sorted(data.items(), key=lambda kv: _stage_number(kv[0]))), indent=1))
    if self.writer is not None:
      with self.writer.as_default(step=self.step):
        for k in METRIC_KEYS:
          if point[k] is not None:
            tf.summary.scalar(f"val/{k}", point[k])
        if loss is not None:
          tf.summary.scalar("train/loss", loss)
      self.writer.flush()
    fmt = lambda v, d: "n/a" if v is None else f"{v:.{d}f}"
    logging.info("stage %d step %d (%s %s, %.1f min): val PCP %s PDJ@0.2 %s loss %s "
                 "(eval %.1f s)", self.stage, self.step, f"{point['images']:,}",
                 "images" if self.stage == 1 else "crops", point["minutes"],
                 fmt(point["pcp"], 3), fmt(point["pdj@0.2"], 2), fmt(loss, 4), eval_seconds)


def _stage_number(key: str) -> int:
  try:
    return int(key[len("stage"):])
  except ValueError:
    return 1 << 30  # unknown keys last, kept as they are


def last_minutes(json_path: str, stage: int) -> float:
  """The "minutes" of stage `stage`'s last point (0.0 when it has none): the minutes_offset
  for stage + 1, so the run's minutes axis is cumulative over stages."""
  points = _read(json_path).get(f"stage{_check_int('stage', stage, 1)}", [])
  return float(points[-1]["minutes"]) if points else 0.0


def plot_curves(json_path: str, png_path: str) -> None:
  """curves.png: val PCP vs images seen (left) and vs the run's wall minutes (right), one
  line per stage. Does nothing (and logs it) when curves.json holds no points."""
  data = _read(json_path)
  stages = sorted((k for k, v in data.items() if v), key=_stage_number)
  if not stages:
    logging.info("no validation curve points in %s; %s not written", json_path, png_path)
    return
  from deeppose_tf import report  # matplotlib only when plotting
  import matplotlib
  fig = report._new_figure((11.0, 4.2))
  by_images, by_minutes = fig.subplots(1, 2, sharey=True)
  colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, len(stages)))
  for color, key in zip(colors, stages):
    points = data[key]
    pcp = [np.nan if p.get("pcp") is None else p["pcp"] for p in points]
    label = f"stage {_stage_number(key)}" if key.startswith("stage") else key
    style = dict(color=color, linewidth=2.0, marker="o", markersize=3, label=label)
    by_images.plot([p["images"] for p in points], pcp, **style)
    by_minutes.plot([p["minutes"] for p in points], pcp, **style)
  by_images.set_title("Validation PCP vs data seen")
  by_images.set_xlabel("images (stage 1) / crops (stage >= 2) seen")
  by_images.set_ylabel("val strict PCP@0.5")
  by_minutes.set_title("Validation PCP vs wall time")
  by_minutes.set_xlabel("wall minutes since the run began")
  top = max([p["pcp"] for key in stages for p in data[key] if p.get("pcp") is not None],
            default=0.0)
  _finish_pcp_axes((by_images, by_minutes), top)
  report._save_png(fig, png_path)


def _finish_pcp_axes(axes, top: float) -> None:
  # Scaled to the data: early curves live far below 1 and would look flat on [0, 1].
  for ax in axes:
    ax.set_ylim(0.0, min(1.0, max(0.05, 1.15 * top)))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")


def runs_at_minutes(runs: Sequence[tuple], minutes: Sequence[float]) -> dict:
  """{label: [val PCP of the last point at or before each of `minutes`, or None]} over all
  stages of each run's curves.json (the minutes axis is the run's, cumulative over
  stages). runs: (label, curves.json path) pairs."""
  out = {}
  for label, json_path in runs:
    data = _read(json_path)
    points = sorted((p for key in data for p in data[key] if p.get("pcp") is not None),
                    key=lambda p: p["minutes"])
    out[label] = [next((p["pcp"] for p in reversed(points) if p["minutes"] <= m), None)
                  for m in minutes]
  return out


def plot_runs(runs: Sequence[tuple], png_path: str) -> None:
  """One picture of several runs: val PCP vs the run's wall minutes, one line per run
  through all its stages (a hollow marker where a refinement stage begins). runs: (label,
  curves.json path) pairs. ValueError when no run has a point."""
  data = [(label, _read(path)) for label, path in runs]
  if not any(v for _, d in data for v in d.values()):
    raise ValueError(f"no validation curve points in {[p for _, p in runs]}")
  from deeppose_tf import report  # matplotlib only when plotting
  import matplotlib
  fig = report._new_figure((7.5, 4.6))
  ax = fig.subplots(1, 1)
  colors = matplotlib.colormaps["tab10"](np.arange(len(data)) % 10)
  top = 0.0
  for color, (label, d) in zip(colors, data):
    xs, ys, starts = [], [], []
    for key in sorted((k for k, v in d.items() if v), key=_stage_number):
      if xs:
        starts.append(len(xs))
      for p in d[key]:
        xs.append(p["minutes"])
        ys.append(np.nan if p.get("pcp") is None else p["pcp"])
    ax.plot(xs, ys, color=color, linewidth=2.0, marker="o", markersize=3, label=label)
    ax.plot([xs[i] for i in starts], [ys[i] for i in starts], linestyle="none", marker="o",
            markersize=8, markerfacecolor="none", color=color)
    top = max([top] + [y for y in ys if not np.isnan(y)])
  ax.set_title("Validation PCP vs wall time (hollow: a refinement stage begins)")
  ax.set_xlabel("wall minutes since the run began")
  ax.set_ylabel("val strict PCP@0.5")
  _finish_pcp_axes((ax,), top)
  report._save_png(fig, png_path)


def main(argv):
  """python -m deeppose_tf.curves --runs=LABEL=CURVES_JSON,... --output=PNG"""
  from absl import flags
  del argv
  runs = []
  for item in flags.FLAGS.runs:
    label, sep, path = item.partition("=")
    if not sep or not label or not path:
      raise SystemExit(f"--runs entry {item!r}: expected LABEL=path/to/curves.json")
    if not os.path.isfile(path):
      raise SystemExit(f"--runs entry {item!r}: no such file {path}")
    runs.append((label, path))
  minutes = [float(m) for m in flags.FLAGS.at_minutes]
  for label, values in runs_at_minutes(runs, minutes).items():
    print(label + ": " + ", ".join(
        f"{m:g} min {'-' if v is None else f'{v:.3f}'}" for m, v in zip(minutes, values)))
  if flags.FLAGS.output:
    plot_runs(runs, flags.FLAGS.output)
    print(f"wrote {flags.FLAGS.output}")


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_list("runs", None, "LABEL=curves.json pairs, one per run to compare "
                    "(a workdir's curves.json or a copy in experiments/)", required=True)
  flags.DEFINE_string("output", "", "PNG to draw the runs into (val PCP vs wall minutes); "
                      "empty: print the table only")
  flags.DEFINE_list("at_minutes", ["15", "30", "60", "120"], "wall minutes at which to "
                    "print each run's val PCP (its last point at or before them)")
  from deeppose_tf import cli
  cli.run(main, "curves")
