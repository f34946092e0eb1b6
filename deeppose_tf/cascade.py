"""The DeepPose cascade: stage models + sigma + skeleton, one inference path, error statistics.

`Cascade.predict` is the only inference path: evaluation, export and the benchmarks call it.
Stage 1 regresses all joints from the crop of the initial box; stage s >= 2 cuts a box of
side sigma * diam(y^{s-1}) around every joint, sends all B x K crops through its network as
one batch, and moves joint i by output i of crop i (paper Sec. 3.2).

A trained cascade lives in a workdir (its layout and files: workdir.py).
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from deeppose_tf import geometry
from deeppose_tf import labels as labels_lib
from deeppose_tf import workdir as workdir_lib
from deeppose_tf.models import builder as _model  # also registers the custom layers for loading
from deeppose_tf.models import layers
from deeppose_tf.skeleton import Skeleton
from deeppose_tf.skeleton import resolve as resolve_skeleton


class Cascade:
  """A trained cascade. stages: S Keras regressors (image -> (K, 2) box-normalized)."""

  def __init__(self, stages: Sequence[keras.Model], skeleton: Skeleton, sigma: float,
               input_size: int, crop: Callable = geometry.crop, flip_test: bool = False,
               reframe: int = 0, reframe_grow: float = geometry.FRAMING_GROW,
               refine_step: float = 1.0, left_right: str = "person"):
    """crop: geometry.crop, or geometry.crop_builtin for a TFLite graph (same samples).
    flip_test: every stage also sees the mirror of each crop and answers the mean of the two
    (test-time flip augmentation, as pose codebases evaluate); twice the network cost.
    reframe: stage 1 runs 1 + reframe times; each pass after the first reads the square box
    that frames the previous pass's pose (geometry.framing_box, side reframe_grow times the
    joints' extent), so a person small in the given box is seen at the network's resolution
    (DeepPose's coarse-to-fine crop, applied to the person box).
    refine_step: the fraction of each refinement stage's move that is applied: the stage
    answers previous + refine_step * (its joint - previous). 1.0 is the paper's; 0.5, the
    mean of the two stages, scored above both on the val splits of the 160 px cascade
    (experiments/refine_move.py).
    left_right: the left/right labels of the answers (labels.py): "person" as the stages
    answer, "observer" relabels every stage's pose by image position (labels.observer_centric)
    after the cascade has run: the stages refine the joints they were trained on, and only
    the names move."""
    if not stages:
      raise ValueError("a cascade needs at least one stage model")
    self.stages = list(stages)
    self.skeleton = skeleton
    self.sigma = float(sigma)
    self.input_size = int(input_size)
    self.crop = crop
    self.flip_test = bool(flip_test)
    if int(reframe) < 0 or not reframe_grow > 0:
      raise ValueError(f"reframe must be >= 0 and reframe_grow > 0, got {reframe} and "
                       f"{reframe_grow}")
    self.reframe = int(reframe)
    self.reframe_grow = float(reframe_grow)
    if not 0.0 < refine_step <= 1.0:
      raise ValueError(f"refine_step must be in (0, 1], got {refine_step}")
    self.refine_step = float(refine_step)
    self.left_right = labels_lib.check(left_right)
    self._logit_nets = {}

  @property
  def inference_settings(self) -> dict:
    """The inference options, as config.json, the TFLite sidecar and reports name them."""
    return {"flip_test": self.flip_test, "reframe": self.reframe,
            "reframe_grow": self.reframe_grow, "refine_step": self.refine_step,
            "left_right": self.left_right}

  def _with(self, stages: Optional[Sequence[keras.Model]] = None,
            crop: Optional[Callable] = None) -> "Cascade":
    """This cascade with other stage networks or another crop, every setting kept."""
    return Cascade(self.stages if stages is None else stages, self.skeleton, self.sigma,
                   self.input_size, crop=crop or self.crop, **self.inference_settings)

  def with_crop(self, crop: Callable) -> "Cascade":
    """This cascade (same stages and settings) cutting its crops with `crop`."""
    return self._with(crop=crop)

  def _logits(self, net: keras.Model):
    """(logits sub-network, decoder layer) of a stage whose "joints" decode its "heatmaps"
    logits directly (the integral and heatmap heads), else None (fc, Tompson's spatial
    model: their flips are averaged as coordinates)."""
    if id(net) not in self._logit_nets:
      found = None
      try:
        decode = net.get_layer("joints")
        if isinstance(decode, (layers.SoftArgmax, layers.HeatmapPeak)):
          found = (keras.Model(net.inputs, net.get_layer("heatmaps").output), decode)
      except ValueError:  # no such layer
        pass
      self._logit_nets[id(net)] = found
    return self._logit_nets[id(net)]

  def _run(self, net: keras.Model, crops):
    """One stage network on crops (N, S, S, 3) -> (N, K, 2) box-normalized in each crop's
    frame. With flip_test the mirrored crop goes through in the same batch; its answer is
    mirrored back (x negated, left and right swapped: slot j of a mirrored crop shows joint
    perm[j]). Heatmap heads average the two logit maps before decoding, so two answers that
    disagree (a left/right confusion) give the stronger mode, not a point between them."""
    if not self.flip_test:
      return net(crops, training=False)
    n = tf.shape(crops)[0]
    # A crop's columns sample symmetric offsets about the box centre, so reversing them is
    # exactly the crop of the mirrored box.
    both = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
    perm = tf.constant(self.skeleton.flip_permutation, tf.int32)
    logits = self._logits(net)
    if logits is not None:
      sub, decode = logits
      maps = sub(both, training=False)  # (2N, H, W, K)
      mirrored = tf.gather(tf.reverse(maps[n:], axis=[2]), perm, axis=3)
      return decode(0.5 * (maps[:n] + mirrored))
    out = net(both, training=False)  # (2N, K, 2)
    mirrored = tf.gather(out[n:] * tf.constant([-1.0, 1.0]), perm, axis=1)
    return 0.5 * (out[:n] + mirrored)

  @property
  def num_stages(self) -> int:
    return len(self.stages)

  def predict(self, images, boxes):
    """Runs every stage. images: (B, H, W, 3) any real dtype, pixel values in [0, 255];
    boxes: (B, 4) initial boxes (cx, cy, w, h) in image pixels.
    Returns (B, S, K, 2): each stage's pose in image pixels."""
    boxes = tf.cast(boxes, tf.float32)
    b = tf.shape(images)[0]
    k = self.skeleton.num_joints
    size = self.input_size
    crops = self.crop(images, boxes, tf.range(b), size)
    pose = geometry.denormalize(self._run(self.stages[0], crops), boxes)
    for _ in range(self.reframe):
      framed = geometry.framing_box(pose, boxes, self.reframe_grow)
      crops = self.crop(images, framed, tf.range(b), size)
      pose = geometry.denormalize(self._run(self.stages[0], crops), framed)
    poses = [pose]
    # Picks output i of crop i with a mask-and-sum (a TFLite builtin pattern, unlike
    # matrix_diag_part).
    own = tf.eye(k)[None, :, :, None]
    for net in self.stages[1:]:
      jboxes = geometry.joint_boxes(pose, self.skeleton.diameter_indices, self.sigma)
      crops = self.crop(images, tf.reshape(jboxes, [-1, 4]), tf.repeat(tf.range(b), k), size)
      out = tf.reshape(self._run(net, crops), [b, k, k, 2])
      out = tf.reduce_sum(out * own, axis=2)  # (B, K, 2) box-normalized per joint box
      # Each joint back to pixels from its own box (one point per box).
      refined = geometry.denormalize(out[..., None, :], jboxes)[..., 0, :]
      if self.refine_step != 1.0:  # a static choice: the paper's graph is unchanged
        refined = pose + self.refine_step * (refined - pose)
      pose = refined
      poses.append(pose)
    poses = tf.stack(poses, axis=1)
    if self.left_right != "person":  # a static choice: the person-centric graph is unchanged
      poses = labels_lib.relabel(poses, self.skeleton, self.left_right)[0]
    return poses

  def traced_predict(self):
    """`predict` as one tf.function for uint8 image batches of any size: one trace serves
    every batch (image sizes vary from batch to batch). It reads the stages' variables, so
    later weight updates need no retrace."""
    return tf.function(self.predict, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8), tf.TensorSpec([None, 4], tf.float32)])

  @classmethod
  def load(cls, workdir: str, num_stages: Optional[int] = None,
           precision: str = "float32", flip_test: Optional[bool] = None,
           reframe: Optional[int] = None, reframe_grow: Optional[float] = None,
           refine_step: Optional[float] = None,
           left_right: Optional[str] = None) -> "Cascade":
    """Loads stages 1..num_stages (default: config.json's num_stages, every one of which
    must be trained: a missing one is an error, never a silently shorter cascade) from a
    workdir, computing in `precision` (model.with_precision: float32, or bfloat16, faster on
    CPUs with bfloat16 matmuls). flip_test, reframe, reframe_grow, refine_step: None takes
    config.json's (off, or 1.0, in workdirs written before they existed); left_right likewise
    ("person" where config.json does not name it)."""
    config = workdir_lib.read_config(workdir)
    n = num_stages or config["num_stages"]
    models = []
    for s in range(1, n + 1):
      path = workdir_lib.model_path(workdir, s)
      if not os.path.exists(path):
        raise ValueError(f"the cascade in {workdir} has {n} stages but stage {s} has no "
                         f"trained model: {path} is missing; train it with `python -m "
                         f"deeppose_tf.train --workdir={workdir} --stage={s}` (same flags)")
      models.append(workdir_lib.load_model(path))
    if flip_test is None:
      flip_test = bool(config.get("flip_test", False))
    if reframe is None:
      reframe = int(config.get("reframe", 0))
    if reframe_grow is None:
      reframe_grow = float(config.get("reframe_grow", geometry.FRAMING_GROW))
    if refine_step is None:
      refine_step = float(config.get("refine_step", 1.0))
    trained = config.get("left_right", "person")
    if left_right is None:
      left_right = trained
    elif trained != "person" and left_right != trained:
      raise ValueError(f"the cascade in {workdir} was trained on {trained}-centric "
                       f"left/right labels; it cannot answer {left_right}-centric ones (its "
                       "networks no longer tell the person's own left from right)")
    return cls(models, resolve_skeleton(config["skeleton"]), config["sigma"],
               config["input_size"], flip_test=flip_test, reframe=reframe,
               reframe_grow=reframe_grow, refine_step=refine_step,
               left_right=left_right).with_precision(precision)

  def with_precision(self, precision: str) -> "Cascade":
    """This cascade with every stage network computing in `precision` (same weights)."""
    if precision == "float32":
      return self
    return self._with(stages=[_model.with_precision(net, precision) for net in self.stages])


def displacement_stats(pred, true, visible, skeleton: Skeleton, sigma: float,
                       trim: float = 1.0) -> dict:
  """Per-joint mean and covariance of (pred - true) in units of the joint box side
  sigma * diam(true). pred/true: (N, K, 2) image pixels; visible (N, K).

  trim < 1 fits them to the `trim` fraction of each joint's displacements with the smallest
  norm (1.0: all, the paper). Why: the errors are heavy-tailed in box units (an image whose
  torso is foreshortened has a tiny box, so an ordinary miss becomes tens of box sides), and
  a Gaussian fitted to all of them is several box sides wide: most simulated training crops
  of the next stage would then not contain their joint (measured on LSPET stage 1: median
  error 0.31 box sides, 78% of joints inside their box, yet an untrimmed fit 1.3 box sides
  wide). The trimmed fit simulates the errors the next stage can fix.

  Returns {"mean": (K, 2), "cov": (K, 2, 2), "chol": (K, 2, 2), "count": (K,) samples
  used, "inside": (K,) fraction of all usable samples whose joint lies inside its box, "trim"}
  as lists. Images whose diameter joints are not annotated are left out (their box size is
  unknown).
  """
  if not 0.0 < trim <= 1.0:
    raise ValueError(f"displacement trim must be in (0, 1], got {trim}")
  pred = np.asarray(pred, np.float64)
  true = np.asarray(true, np.float64)
  vis = np.asarray(visible) > 0
  a, b = skeleton.diameter_indices
  side = sigma * geometry.diameter(true, (a, b)).numpy()
  usable = vis[:, a] & vis[:, b] & (side > 0)
  k = skeleton.num_joints
  mean = np.zeros((k, 2))
  cov = np.zeros((k, 2, 2))
  counts = np.zeros(k, np.int64)
  inside = np.zeros(k)
  for j in range(k):
    sel = usable & vis[:, j] & np.all(np.isfinite(pred[:, j]), axis=-1)
    d = (pred[sel, j] - true[sel, j]) / side[sel, None]
    inside[j] = float(np.mean(np.all(np.abs(d) <= 0.5, axis=-1))) if len(d) else 0.0
    if trim < 1.0 and len(d):
      norms = np.linalg.norm(d, axis=-1)
      d = d[norms <= np.quantile(norms, trim)]
    counts[j] = len(d)
    if len(d) >= 3:
      mean[j] = d.mean(axis=0)
      cov[j] = np.cov(d, rowvar=False)
    else:  # too few samples: an isotropic guess rather than a singular matrix
      cov[j] = np.eye(2) * 0.01
  # A small floor keeps the Cholesky factor defined when a joint's error is degenerate.
  chol = np.linalg.cholesky(cov + np.eye(2) * 1e-6)
  return {"mean": mean.tolist(), "cov": cov.tolist(), "chol": chol.tolist(),
          "count": counts.tolist(), "inside": inside.tolist(), "trim": trim, "sigma": sigma}
