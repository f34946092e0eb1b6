"""One cascade stage from start to finish, in the order `train_stage` reads: skip it when
finished, prepare its inputs (prepare_stage_inputs), fit its network (fit_stage_network),
write its outputs (write_stage_outputs: the model and the displacement statistics).

Stage s >= 2 needs stage s-1's model (for the displacement statistics it was trained on)
and statistics; a stage is finished when its model.keras exists and, unless it is the run's
last stage, its displacement.json (workdir.is_finished).

Multi-worker: every worker trains (the fit is collective); only the chief writes the model,
the statistics and mean_pose.json. The statistics pass is not distributed: the chief runs
it while the other workers wait at a collective barrier, then everyone reads the chief's
files from the shared --workdir. A barrier waits exactly as long as the chief needs and
fails (MultiWorkerMirroredStrategy's peer health check) if the chief dies, where polling
for the file would need a guessed timeout, and recomputing the statistics on every worker
would repeat the pass and could differ in the last float bits between machines, giving the
workers different refinement crops.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Optional

import numpy as np
from absl import logging

from deeppose_tf import cascade, curves, distribute, pipeline, predict, trainer
from deeppose_tf import workdir as workdir_lib
from deeppose_tf.config import Settings
from deeppose_tf.methods import tompson
from deeppose_tf.models import builder as model_lib


def mean_pose(workdir: str, settings: Settings, write: bool = True) -> np.ndarray:
  """The mean box-normalized training pose (K, 2), cached in WORKDIR/mean_pose.json.

  write=False (non-chief workers) computes it without caching: it is a cheap,
  deterministic pass over the annotations."""
  if os.path.exists(workdir_lib.mean_pose_path(workdir)):
    return workdir_lib.read_mean_pose(workdir, settings.skeleton.num_joints)
  pose = pipeline.mean_pose(settings.train_dirs, settings.train_split, settings.skeleton,
                            settings.stage1_box)
  if write:
    workdir_lib.write_mean_pose(workdir, pose)
  return pose


def train_stage(strategy, workdir: str, stage: int, settings: Settings) -> bool:
  """Trains stage `stage` unless finished; returns True when it trained.

  Top to bottom: skip a finished stage, prepare the stage's inputs, fit its network, write
  its outputs. Every worker of a multi-worker strategy calls this with the same arguments."""
  # The last stage's statistics would only train a next stage: they are skipped (on LSPET
  # with test-time flips the pass takes minutes), and computed from its model if the run is
  # later resumed with more stages.
  last = stage >= settings.num_stages
  if _finish_trained_stage(strategy, workdir, stage, settings, last):
    return False
  inputs = prepare_stage_inputs(workdir, stage, settings,
                                chief=distribute.is_chief(strategy))
  net = fit_stage_network(strategy, workdir, stage, settings, inputs)
  write_stage_outputs(strategy, workdir, stage, settings, net, last)
  return True


@dataclasses.dataclass(frozen=True)
class StageInputs:
  """What fitting stage s needs besides the settings.

  bias: (K, 2) the output layer's start (stage 1: the mean pose; a refinement stage: minus
    the previous stage's mean displacement). refine: the refinement crops' displacement
    distribution (None for stage 1). pretrained: {layer name: weights} to start from, or
    None; init_from: where they come from (for the log). model_config: the stage network's."""

  bias: np.ndarray
  refine: Optional[object]
  pretrained: Optional[dict]
  init_from: Optional[str]
  model_config: object


def _finish_trained_stage(strategy, workdir: str, stage: int, settings: Settings,
                          last: bool) -> bool:
  """True when stage `stage` needs no training: finished, or trained with its statistics
  lost (then recomputed from its model, which the later stages were trained against)."""
  chief = distribute.is_chief(strategy)
  finished = workdir_lib.is_finished(workdir, stage, last=last)
  distribute.check_same_on_workers(strategy, finished, f"whether stage {stage} is finished")
  if finished:
    logging.info("stage %d is already trained in %s; skipping", stage, workdir)
    return True
  has_model = os.path.exists(workdir_lib.model_path(workdir, stage))
  distribute.check_same_on_workers(strategy, has_model, f"whether stage {stage} has a model")
  if not has_model:
    return False
  # Trained, but its statistics were lost (deleted, or a crash between the two writes).
  # Retraining would overwrite a model the later stages were trained against: recompute
  # the statistics from it instead.
  logging.warning("stage %d has a model but no displacement statistics (%s); recomputing "
                  "them from %s", stage, workdir_lib.stats_path(workdir, stage),
                  workdir_lib.model_path(workdir, stage))
  if chief:
    write_stats(workdir, stage, settings)
  distribute.barrier(strategy)
  if not chief:
    distribute.wait_for_files([workdir_lib.stats_path(workdir, stage)])
  return True


def curve_reframe(settings: Settings) -> int:
  """The learning curve's reframing passes: none (the cheap, plain reading) for a stage 1
  trained on whole photos; one for a stage 1 trained on the joints' framing
  (--stage1_box=joints), which is read where it was trained, as --reframe reads it."""
  return 1 if settings.stage1_box == "joints" else 0


def prepare_stage_inputs(workdir: str, stage: int, settings: Settings,
                         chief: bool = True) -> StageInputs:
  """The output layer's start, the refinement distribution and the starting weights of
  stage `stage` (StageInputs). Checks that every earlier stage's model exists; chief=False
  (another worker) computes the mean pose without writing it."""
  refine = None
  if stage == 1:
    bias = mean_pose(workdir, settings, write=chief)
  else:
    for s in range(1, stage):
      if not os.path.exists(workdir_lib.model_path(workdir, s)):
        raise ValueError(
            f"stage {stage} needs stage {s}'s model at {workdir_lib.model_path(workdir, s)}; "
            f"train it with `python -m deeppose_tf.train --workdir={workdir} --stage={s}` "
            "(same flags)")
    stats = workdir_lib.load_stats(workdir, stage - 1)
    refine = settings.refine_for(stats)
    # A refinement target is the joint seen from a box centred at y + delta: -delta on
    # average, so the output starts at minus the previous stage's mean displacement.
    bias = -np.asarray(stats["mean"], np.float32)

  pretrained = (model_lib.pretrained_weights(settings.init_weights)
                if settings.init_weights else None)
  model_config = settings.model_for(stage)
  same_network = stage > 1 and (settings.model_for(stage - 1).backbone == model_config.backbone)
  if stage > 1 and settings.refine_init == "previous" and not same_network:
    # The hybrid (a Tompson stage 1 under DeepPose refinement stages): no layer to share.
    logging.info("stage %d is a %s network and stage %d a %s one: stage %d starts from "
                 "random initialization", stage, model_config.backbone, stage - 1,
                 settings.model_for(stage - 1).backbone, stage)
    pretrained, init_from = None, None
  elif stage > 1 and settings.refine_init == "previous":
    # Stage s starts from stage s-1's trained network: its features already see people in
    # these images, which a refinement stage on a CPU budget cannot learn from scratch.
    # The fc head's output layer keeps its own start (minus the mean displacement).
    pretrained = {name: w for name, w in model_lib.pretrained_weights(
        workdir_lib.model_path(workdir, stage - 1)).items() if name != "fc8"}
    init_from = workdir_lib.model_path(workdir, stage - 1)
  else:
    init_from = settings.init_weights
  return StageInputs(bias, refine, pretrained, init_from, model_config)


def fit_stage_network(strategy, workdir: str, stage: int, settings: Settings,
                      inputs: StageInputs):
  """Builds stage `stage`'s network from `inputs` and fits it (resuming from its
  checkpoint; Tompson's stages phase by phase), with its learning-curve callbacks. Returns
  the trained network (the training precision's)."""
  skeleton = settings.skeleton
  model_config = inputs.model_config
  steps = settings.steps_for(stage)
  fit = settings.fit_for(stage)
  logging.info("stage %d: %d steps at global batch %d (%s)", stage, steps,
               settings.batch_size, "images" if stage == 1 else "joint crops")
  nets = {}

  def build_net():
    net = model_lib.build_regressor(model_config, inputs.bias, name=f"stage{stage}",
                                    edges=skeleton.edge_indices)
    if inputs.pretrained is not None:
      # Before the checkpoint restore in fit_stage: a resumed stage keeps its own weights.
      copied, skipped = model_lib.assign_by_name(net, inputs.pretrained)
      logging.info("stage %d starts from %s: copied %s; kept the initialization of %s",
                   stage, inputs.init_from, copied, skipped or "none")
    nets["net"] = net
    return net

  def build():
    net = build_net()
    # The heatmap loss needs the heatmap logits as a second output (same variables); the
    # heatmap head always trains through training_model (its soft-argmax: the peak has no
    # gradient).
    if settings.fit.heatmap_loss_weight > 0 or model_config.head == "heatmap":
      return model_lib.training_model(net)
    return net

  def curve_callbacks(start_step):
    if not settings.curve_every or not settings.eval_split:
      return []
    prev = (cascade.Cascade.load(workdir, num_stages=stage - 1).stages if stage > 1 else [])
    evaluator = curves.make_val_evaluator(
        prev, skeleton, settings.sigma, settings.model.input_size, settings.data_dir,
        settings.eval_split, settings.curve_images, refine_step=settings.refine_step,
        reframe=curve_reframe(settings), left_right=settings.left_right)
    json_path = workdir_lib.curves_json(workdir)
    tb_dir = os.path.join(workdir_lib.log_dir(workdir, stage), "curves")
    return [curves.ValCurve(lambda _model: evaluator(nets["net"]), settings.curve_every,
                            stage, json_path, tb_dir,
                            initial_step=start_step, batch_size=settings.batch_size,
                            minutes_offset=curves.last_minutes(json_path, stage - 1)
                            if stage > 1 else 0.0)]

  def dataset(start_step):
    return pipeline.train_dataset(
        settings.train_dirs, settings.train_split, skeleton, settings.model.input_size,
        settings.batch_size, settings.seed + 1000 * stage, settings.augment, inputs.refine,
        start_index=start_step * settings.batch_size, cache_max_side=settings.cache_max_side,
        box_source=settings.stage1_box)

  os.makedirs(workdir_lib.stage_dir(workdir, stage), exist_ok=True)
  if model_config.head == "tompson":
    tompson.fit_phases(strategy, workdir, stage, settings, build_net, dataset, curve_callbacks,
                       lambda model, path: _save_shared(strategy, model, path))
  else:
    trainer.fit_stage(strategy, build, dataset, workdir_lib.checkpoint_dir(workdir, stage),
                      fit, log_dir=workdir_lib.log_dir(workdir, stage),
                      extra_callbacks=curve_callbacks)
  return nets["net"]


def write_stage_outputs(strategy, workdir: str, stage: int, settings: Settings, net,
                        last: bool) -> None:
  """Saves stage `stage`'s model (float32 whatever the training precision: export and
  TFLite see a float32 graph), its curves plot and, unless it is the run's last stage, its
  displacement statistics; then waits until every worker can read them."""
  chief = distribute.is_chief(strategy)
  model = model_lib.with_precision(net, "float32")
  if chief and settings.curve_every:
    curves.plot_curves(workdir_lib.curves_json(workdir), workdir_lib.curves_png(workdir))
  model_path = workdir_lib.model_path(workdir, stage)
  if chief:
    workdir_lib.save_model(model, model_path)
    logging.info("stage %d model saved to %s", stage, model_path)
    if not last:
      write_stats(workdir, stage, settings)
  else:
    _save_on_worker(strategy, model, workdir_lib.stage_dir(workdir, stage))
  # The next stage (on every worker) reads these files: nobody goes on before they exist.
  distribute.barrier(strategy)
  if not chief:
    distribute.wait_for_files([model_path] + ([] if last else
                                              [workdir_lib.stats_path(workdir, stage)]))


def _save_shared(strategy, model, path: str) -> None:
  """Saves `model` to `path` on the chief (every worker saves, see _save_on_worker) and
  returns when every worker can read it."""
  if distribute.is_chief(strategy):
    workdir_lib.save_model(model, path)
  else:
    _save_on_worker(strategy, model, os.path.dirname(path))
  distribute.barrier(strategy)
  if not distribute.is_chief(strategy):
    distribute.wait_for_files([path])


def _save_on_worker(strategy, model, sdir: str) -> None:
  """A non-chief worker's save. Saving reads every variable and may run collective ops, so
  every worker saves: the others into a temporary dir of their own, removed at once."""
  temp_dir = distribute.worker_temp_dir(sdir, distribute.task_of(strategy)[1])
  os.makedirs(temp_dir, exist_ok=True)
  try:
    workdir_lib.save_model(model, os.path.join(temp_dir, "model.keras"))
  finally:
    shutil.rmtree(temp_dir, ignore_errors=True)


MIN_STAT_SAMPLES = 20  # per joint; fewer make a poor covariance estimate


def write_stats(workdir: str, stage: int, settings: Settings) -> dict:
  """Runs stages 1..stage over training images and saves stage's displacement statistics."""
  skeleton = settings.skeleton
  casc = cascade.Cascade.load(workdir, num_stages=stage)
  out = predict.predict_split(casc, settings.data_dir, settings.train_split,
                              limit=settings.stats_images or None, batch_size=16,
                              desc=f"stage {stage} statistics")
  stats = cascade.displacement_stats(out["poses"][:, -1], out["joints"], out["visible"],
                                     skeleton, settings.sigma, settings.stats_trim)
  workdir_lib.save_stats(workdir, stage, stats)
  few = {name: n for name, n in zip(skeleton.joints, stats["count"]) if n < MIN_STAT_SAMPLES}
  if few:
    # Below 3 samples the covariance falls back to an isotropic guess (displacement_stats).
    logging.warning("stage %d statistics measured fewer than %d displacements for %d of %d "
                    "joints (%s) in %d images; their simulated errors for the next stage are "
                    "guesses. Use more --stats_images or check the split's annotations.",
                    stage, MIN_STAT_SAMPLES, len(few), skeleton.num_joints,
                    ", ".join(f"{k}: {v}" for k, v in few.items()), len(out["joints"]))
  spread = np.sqrt(np.trace(np.asarray(stats["cov"]), axis1=1, axis2=2))
  logging.info("stage %d displacement (box sides, fitted to the %.0f%% smallest): |mean| %.3f, "
               "spread %.3f; joints inside their box: %.0f%% (avg over joints)", stage,
               100 * settings.stats_trim, float(np.linalg.norm(stats["mean"], axis=-1).mean()),
               float(spread.mean()), 100 * float(np.mean(stats["inside"])))
  return stats
