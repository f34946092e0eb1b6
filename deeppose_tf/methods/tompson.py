"""Tompson, Jain, LeCun & Bregler (NIPS 2014), the method: a stage of backbone "multires" +
head "tompson" (models/heads/tompson.py) trains in three resumable phases (PHASES): the
detector alone, the spatial model on the frozen detector, then both jointly. The spatial
model starts from the training set's displacement histograms (pairwise_prior).

stages.fit_stage_network calls fit_phases for a tompson stage; the models package never
imports this module.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Optional, Sequence, Tuple

import keras
import numpy as np
from absl import logging

from deeppose_tf import distribute, geometry, pipeline, trainer
from deeppose_tf import workdir as workdir_lib
from deeppose_tf.config import Settings
from deeppose_tf.models import builder


@dataclasses.dataclass(frozen=True)
class Phase:
  """One training phase of a tompson stage: the outputs it trains and whether the
  detector's layers learn."""

  name: str
  outputs: Tuple[str, ...]
  detector_trainable: bool
  lr_scale: float = 1.0  # x --learning_rate; below 1 the phase fine-tunes without warm-up


# The joint phase fine-tunes a trained detector: at the full learning rate (warm-up back to
# the peak after the detector's schedule had decayed) it first undid part of the detector
# (synthetic val PCP 0.200 after the detector, 0.178 100 joint steps later).
PHASES = (Phase("detector", ("heatmaps",), True),
          Phase("spatial", ("spatial",), False),
          Phase("joint", ("heatmaps", "spatial"), True, lr_scale=0.1))
# Default split of a stage's steps over PHASES when --phase_steps is not given.
PHASE_FRACTIONS = (0.7, 0.1, 0.2)


def phase_steps(total: int, given: Sequence[int] = ()) -> Tuple[int, ...]:
  """Steps of each phase: `given` (3 positive ints) or `total` split by PHASE_FRACTIONS
  (every phase at least 1 step)."""
  if given:
    steps = tuple(int(s) for s in given)
    if len(steps) != len(PHASES) or min(steps) < 1:
      raise ValueError(f"phase steps must be {len(PHASES)} positive integers "
                       f"({', '.join(p.name for p in PHASES)}), got {list(given)}")
    return steps
  a = max(1, int(round(total * PHASE_FRACTIONS[0])))
  b = max(1, int(round(total * PHASE_FRACTIONS[1])))
  return a, b, max(1, total - a - b)


def phase_fit(base, phase: Phase, steps: int):
  """The fit of `phase` (a trainer.FitConfig) from its stage's fit `base`: `steps` steps,
  the checkpoint interval capped to them, the learning rate x phase.lr_scale (warm-up
  capped to the phase, none when the phase fine-tunes), and the detector's masked MSE
  weighted by base.heatmap_loss_weight (0 means 1)."""
  return dataclasses.replace(
      base, steps=steps, checkpoint_every=min(base.checkpoint_every, steps),
      learning_rate=base.learning_rate * phase.lr_scale,
      warmup_steps=min(base.warmup_steps, steps - 1) if phase.lr_scale >= 1 else 0,
      heatmap_loss="mse", heatmap_loss_weight=base.heatmap_loss_weight or 1.0)


def phase_model(net: keras.Model, phase: Phase) -> keras.Model:
  """The training model of `phase`: `net`'s layers and variables with the outputs
  {name: logits} the phase trains. The spatial phase freezes every layer up to and
  including "heatmaps" (BatchNorm then runs in inference mode)."""
  spatial = net.get_layer("spatial")
  for layer in net.layers:
    if layer is spatial or layer.name == "joints":
      layer.trainable = True
    elif layer.weights:
      layer.trainable = phase.detector_trainable
  outputs = {"heatmaps": net.get_layer("heatmaps").output, "spatial": spatial.output}
  return keras.Model(net.inputs, {k: outputs[k] for k in phase.outputs},
                     name=f"{net.name}_{phase.name}")


def pairwise_prior(joints: np.ndarray, visible: np.ndarray, pairs, heatmap_size: int,
                   kernel_size: int, rate: int = 1, blur: float = 1.0) -> np.ndarray:
  """The spatial model's starting kernels from training poses.

  joints: (N, K, 2) box-normalized; visible: (N, K). Returns (P, k, k) float32: for pair
  (A, v) the histogram of A - v in kernel taps (`rate` heatmap cells each) over the poses
  annotating both, smoothed by a Gaussian of std `blur` taps and scaled to sum 1, laid out
  for the correlation the layer computes (output(p) = sum_q in(p + rate q) kernel(q + c)):
  a partner peak at x_v votes for x_v + d through tap c - d / rate. Displacements beyond
  the kernel are dropped. A pair with no sample keeps a flat kernel; a self pair (A, A) is
  a delta at the centre (unblurred: a blurred self term would blur the detector's peak and
  cost localization precision, measured on synthetic val: PDJ@0.05 0.024 -> 0.015)."""
  from scipy import ndimage
  joints = np.asarray(joints, np.float64)
  visible = np.asarray(visible, bool)
  c = kernel_size // 2
  out = np.zeros((len(pairs), kernel_size, kernel_size), np.float64)
  for i, (a, v) in enumerate(pairs):
    if a == v:  # the joint's own map: an exact delta, so the detector's precision stays
      out[i, c, c] = 1.0
      continue
    both = visible[:, a] & visible[:, v]
    d = np.rint((joints[both, a] - joints[both, v]) * heatmap_size / rate).astype(np.int64)
    col, row = c - d[:, 0], c - d[:, 1]
    keep = (col >= 0) & (col < kernel_size) & (row >= 0) & (row < kernel_size)
    np.add.at(out[i], (row[keep], col[keep]), 1.0)
    if blur > 0:
      out[i] = ndimage.gaussian_filter(out[i], blur, mode="constant")
    total = out[i].sum()
    out[i] = out[i] / total if total > 0 else 1.0 / kernel_size ** 2
  return out.astype(np.float32)


def fit_phases(strategy, workdir: str, stage: int, settings: Settings, build_net, dataset,
               curve_callbacks, save_shared) -> None:
  """Trains a tompson stage (Tompson et al.: detector, spatial model, then both) as the
  resumable phases PHASES. Phase p checkpoints into stage{s}/ckpt_<p>/ and, when it
  is not the last, saves its network to stage{s}/<p>.keras; a rerun skips every phase whose
  file exists (refusing one asked for more steps than it had: check_finished_phase) and
  starts the next one from it. The last phase's network is the stage's.

  The spatial model starts from the training set's displacement histograms (the records'
  annotations, pairwise_prior), set before the detector phase (for its learning
  curves) and again when the spatial phase starts, so it always starts from this version's
  prior, whatever the detector phase's file holds.

  build_net() builds the stage's network; dataset(start_step) and curve_callbacks(start_step)
  are the stage's (stages.fit_stage_network); save_shared(model, path) saves a phase's
  network on the chief and returns when every worker can read it."""
  steps = phase_steps(settings.steps_for(stage), settings.phase_steps)
  base = settings.fit_for(stage)
  offset = 0
  previous = None
  holder = {}
  for phase, n in zip(PHASES, steps):
    last = phase is PHASES[-1]
    path = workdir_lib.phase_model_path(workdir, stage, phase.name)
    done = not last and os.path.exists(path)
    distribute.check_same_on_workers(strategy, done, f"whether phase {phase.name} is done")
    if done:
      check_finished_phase(workdir, stage, phase.name, n, "--phase_steps" if
                           settings.phase_steps else "--steps_per_stage split 70/10/20%")
      logging.info("stage %d phase %s is already trained (%s); skipping", stage, phase.name,
                   path)
      previous, offset = path, offset + n
      continue
    fit = phase_fit(base, phase, n)
    logging.info("stage %d phase %s: %d steps (trains %s%s; learning rate %g)", stage,
                 phase.name, n, " + ".join(phase.outputs), "" if phase.detector_trainable
                 else "; the detector is frozen", fit.learning_rate)
    start_from = previous

    def build(phase=phase, start_from=start_from):
      net = holder["net"] = build_net()
      if start_from is not None:
        # Before fit_stage's checkpoint restore: a resumed phase keeps its own weights.
        builder.assign_by_name(net, builder.pretrained_weights(start_from))
      if start_from is None or phase.name == "spatial":
        # The spatial model starts from the histograms when its own training starts (the
        # detector phase does not train it; its learning curves use the same prior).
        layer = net.get_layer("spatial")
        layer.set_prior(spatial_prior(settings, layer, stage))
      return phase_model(net, phase)

    first = offset
    trainer.fit_stage(strategy, build, dataset,
                      workdir_lib.checkpoint_dir(workdir, stage, phase.name), fit,
                      log_dir=workdir_lib.log_dir(workdir, stage),
                      extra_callbacks=lambda start, first=first: curve_callbacks(start + first))
    offset += n
    if last:
      return
    save_shared(builder.with_precision(holder["net"], "float32"), path)
    if distribute.is_chief(strategy):  # only the chief writes it (the others save and delete)
      logging.info("stage %d phase %s saved to %s", stage, phase.name, path)
    previous = path


_CKPT_INDEX = re.compile(r"ckpt-(\d+)\.index")  # tf.train.CheckpointManager's files


def trained_phase_steps(workdir: str, stage: int, phase: str) -> Optional[int]:
  """The steps phase `phase` of a tompson stage was trained for: the number of its newest
  checkpoint (stage{s}/ckpt_<phase>/ckpt-N, N = steps done when it was written), or None
  when its checkpoints are gone."""
  ckpt_dir = workdir_lib.checkpoint_dir(workdir, stage, phase)
  names = [os.path.basename(p) for p in glob.glob(os.path.join(ckpt_dir, "ckpt-*.index"))]
  steps = [int(m.group(1)) for m in map(_CKPT_INDEX.fullmatch, names) if m]
  return max(steps) if steps else None


def check_finished_phase(workdir: str, stage: int, phase: str, asked: int,
                         asked_by: str = "--phase_steps") -> None:
  """A finished phase (its <phase>.keras exists) is never trained further: the later phases
  started from that file. Asked for more steps than its checkpoints record, ValueError
  naming the phase, both counts and the way out (a new workdir); with no checkpoint left
  to tell, a warning. asked_by: the flag the `asked` steps come from, for the message."""
  trained = trained_phase_steps(workdir, stage, phase)
  path = workdir_lib.phase_model_path(workdir, stage, phase)
  if trained is None:
    logging.warning("stage %d phase %s is already trained (%s) but its checkpoints (%s) are "
                    "gone: cannot tell whether it had the %d steps asked; keeping it as it is",
                    stage, phase, path, workdir_lib.checkpoint_dir(workdir, stage, phase),
                    asked)
  elif trained < asked:
    raise ValueError(
        f"stage {stage} phase {phase} was trained for {trained} steps ({path}), {asked} asked "
        f"now ({asked_by}): a finished phase is not trained further (the later phases "
        f"started from it); train with these steps in a new --workdir")


def spatial_prior(settings: Settings, layer, stage: int = 1) -> np.ndarray:
  """The tompson spatial model's starting kernels for `layer` (a PairwiseSpatialModel) from
  the training split's annotations, in the frame of the person boxes (stage 1's crops; a
  tompson refinement stage, whose crops are joint boxes, starts from the same histograms
  and learns its own)."""
  a = pipeline.annotations(settings.train_dirs, settings.train_split, settings.skeleton,
                           settings.stage1_box)
  poses = geometry.normalize(a["joints"], a["box"]).numpy()
  model = settings.model_for(stage)
  size = model.input_size // model.heatmap_stride
  return pairwise_prior(poses, a["visible"], layer.pairs, size, layer.kernel_size,
                                layer.rate)
