"""tf.data input pipelines: decode -> initial box -> augment -> crop -> normalize.

Stage 1 yields (crop (S, S, 3) float32 in [0, 255], target (K, 3)) where target[..., :2] is
the pose box-normalized by the (augmented) initial box and target[..., 2] the annotation
mask. Refinement stages yield the same shapes per *crop*: a box of side sigma * diam(y)
around joint i, shifted by a displacement drawn from the previous stage's error
distribution; target row i holds joint i normalized by that box and the mask is one-hot at
i, so the one masked L2 loss serves every stage and only output i of a crop is trained.

Randomness is stateless, seeded by (seed, element index): a pipeline is deterministic under
its seed whatever the parallelism.  The evaluation path (`eval_dataset`) and the cascade's
inference path share `decode_image` and `geometry.crop`, so training and serving see the
same pixels.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from deeppose_tf import geometry
# The typed settings live in config.py; pipeline takes them (AugmentConfig and NO_AUGMENT stay
# importable from here for callers of the former layout).
from deeppose_tf.config import NO_AUGMENT, AugmentConfig, RefineConfig  # noqa: F401
from deeppose_tf.data import records
from deeppose_tf.skeleton import Skeleton


# The training recipe (the training flags' defaults): shift, scale, rotation, flip and colour
# jitter, which learns on CPU budgets where the paper's light jitter overfits.
RECIPE_AUGMENT = AugmentConfig(translate=0.15, scale=(0.7, 1.3), flip=True, rotate=30.0,
                               brightness=0.2, contrast=0.3, saturation=0.3)


def jitter_colour(crops, seed_pair, augment: AugmentConfig):
  """Brightness, contrast and saturation jitter of crops (..., S, S, 3) float32 in [0, 255];
  stateless under seed_pair (2,). Returns crops clipped to [0, 255]."""
  if not augment.colour:
    return crops
  seeds = tf.random.experimental.stateless_split(seed_pair, 3)
  if augment.brightness > 0:
    crops = tf.image.stateless_random_brightness(crops, 255.0 * augment.brightness, seeds[0])
  if augment.contrast > 0:
    crops = tf.image.stateless_random_contrast(crops, 1.0 - augment.contrast,
                                               1.0 + augment.contrast, seeds[1])
  if augment.saturation > 0:
    # A blend with the grey image (as torchvision's and timm's ColorJitter): the same
    # effect as scaling HSV saturation for moderate factors, without two colour-space
    # conversions per pixel, which cost more than the warp itself.
    factor = tf.random.stateless_uniform(tf.concat([tf.shape(crops)[:-3], [1, 1, 1]], 0),
                                         seeds[2], 1.0 - augment.saturation,
                                         1.0 + augment.saturation)
    grey = tf.reduce_sum(crops * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    crops = grey + factor * (crops - grey)
  return tf.clip_by_value(crops, 0.0, 255.0)


def _angles(seed, shape, augment: AugmentConfig):
  """Rotation angles in radians, uniform in +-augment.rotate degrees."""
  r = augment.rotate * 3.141592653589793 / 180.0
  return tf.random.stateless_uniform(shape, seed, -r, r)


def decode_image(encoded, image_id=None):
  """Encoded JPEG/PNG/GIF/BMP bytes (scalar string) -> (H, W, 3) uint8 RGB.

  Gray images are replicated to three channels and RGBA loses its alpha (decode_image with
  channels=3 does both), so user images of any mode work.
  """
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def initial_box(features):
  """The stage-1 box of a parsed record: its stored box, else the full image. -> (4,)."""
  full = geometry.full_image_box(features["height"], features["width"])
  return tf.where(features["has_box"], features["box"], full)


# Where stage 1 trains (train --stage1_box). "image": a record's stored box, else its whole
# image, resized to the square input whatever its aspect (the paper's). "joints": a stored
# box, else the square framing the annotated joints (joints_framing_box), the box that
# --reframe and --boxes=auto read at inference, undistorted.
STAGE1_BOXES = ("image", "joints")


def joints_framing_box(joints, visible, box, grow=geometry.FRAMING_GROW):
  """The square of side `grow` x the annotated joints' extent, centred on them
  (geometry.framing_box, at least a tenth of `box`'s longer side).

  joints: (..., K, 2) image pixels; visible (..., K), at least one annotated; box (..., 4)
  the whole image's. Returns (..., 4) image pixels. Unannotated joints, whose coordinates
  may be anything, take the annotated joints' mean, which moves neither extreme."""
  joints = tf.convert_to_tensor(joints, tf.float32)
  vis = (tf.convert_to_tensor(visible) > 0)[..., None]
  count = tf.reduce_sum(tf.cast(vis, tf.float32), -2, keepdims=True)
  # where, not a product: an unannotated joint may be NaN, and NaN x 0 is NaN.
  mean = tf.reduce_sum(tf.where(vis, joints, 0.0), -2, keepdims=True) / tf.maximum(count, 1.0)
  filled = tf.where(vis, joints, mean)
  return geometry.framing_box(filled, box, grow, min_fraction=0.1)


def stage1_box(features, joints, which: str):
  """The box stage 1 trains on (STAGE1_BOXES): features has has_box, box (4,) (initial_box)
  and visible (K,); joints (K, 2) in the box's frame. -> (4,)."""
  if which not in STAGE1_BOXES:
    raise ValueError(f"stage1_box must be one of {STAGE1_BOXES}, got {which!r}")
  if which == "image":
    return features["box"]
  return tf.where(features["has_box"], features["box"],
                  joints_framing_box(joints, features["visible"], features["box"]))


def _check_record(features):
  """Graph-side guard: a record with non-finite annotated joints or none annotated fails
  with its image id in the message, instead of becoming a NaN loss."""
  vis = features["visible"] > 0
  finite = tf.reduce_all(tf.math.is_finite(features["joints"]), axis=-1)
  ok_finite = tf.reduce_all(finite | ~vis)
  ok_any = tf.reduce_any(vis)
  with tf.control_dependencies([
      tf.debugging.Assert(ok_finite, ["record", features["image_id"],
                                      "has non-finite annotated joint coordinates"]),
      tf.debugging.Assert(ok_any, ["record", features["image_id"], "has no annotated joint"]),
  ]):
    return tf.identity(features["joints"])


def _flip(boxes, do_flip, perm):
  """Mirrors by a negative box width, which costs no pixel work: the crop samples column j at
  cx + t_j w, so a box of width -w cuts the mirrored crop, and normalizing by it negates x.

  boxes: (..., 4); do_flip: (...,) bool; perm: the skeleton's flip permutation (K,).
  Returns the signed boxes (..., 4) and the joint order (..., K) that relabels left and
  right where flipped (slot j of a mirrored crop shows joint perm[j]).
  """
  sign = tf.where(do_flip, -1.0, 1.0)[..., None]
  boxes = tf.concat([boxes[..., 0:2], boxes[..., 2:3] * sign, boxes[..., 3:4]], axis=-1)
  perm = tf.constant(perm, tf.int32)
  order = tf.where(do_flip[..., None], perm, tf.range(tf.size(perm)))
  return boxes, order


def _files_dataset(data_dir, split, training, seed):
  # data_dir: one folder, or a sequence of them whose `split`s are read together (training
  # on several prepared datasets of one skeleton).
  dirs = [data_dir] if isinstance(data_dir, str) else list(data_dir)
  files = [f for d in dirs for f in records.list_shards(d, split)]
  ds = tf.data.Dataset.from_tensor_slices(files)
  if training:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=False)
  return ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def load_example(features, max_side: int = 0):
  """A parsed record -> the decoded example that augmentation reads (what the training
  pipeline caches in memory, so JPEGs are decoded once, not once per visit).

  max_side > 0 shrinks images whose longer side exceeds it (antialiased), scaling joints and
  box by the same per-axis factors: image pixel x maps to x * W' / W, the pixel-area frame
  tf.image.resize uses. Returns a dict: pixels (H', W', 3) uint8, joints (K, 2) and box (4,)
  in the pixels' frame, visible (K,), image_id.
  """
  joints = _check_record(features)
  image = decode_image(features["image"], features["image_id"])
  box = initial_box(features)
  if max_side:
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    factor = tf.minimum(1.0, float(max_side) / tf.maximum(h, w))
    new_h = tf.maximum(1, tf.cast(tf.round(h * factor), tf.int32))
    new_w = tf.maximum(1, tf.cast(tf.round(w * factor), tf.int32))
    sx = tf.cast(new_w, tf.float32) / w
    sy = tf.cast(new_h, tf.float32) / h
    resized = tf.image.resize(image, tf.stack([new_h, new_w]), antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    image.set_shape([None, None, 3])
    joints = joints * tf.stack([sx, sy])
    box = box * tf.stack([sx, sy, sx, sy])
  return {"pixels": image, "joints": joints, "box": box, "visible": features["visible"],
          "has_box": features["has_box"], "image_id": features["image_id"]}


def _as_loaded(features):
  return features if "pixels" in features else load_example(features)


def stage1_example(features, seed_pair, skeleton: Skeleton, input_size: int,
                   augment: AugmentConfig, box_source: str = "image"):
  """One record -> (crop (S, S, 3) float32, target (K, 3)). seed_pair: (2,) int64.

  features: a parsed record or `load_example`'s dict. The box (box_source: STAGE1_BOXES) is
  shifted, scaled, rotated and mirrored by one affine warp; the target is the pose in that
  warped box's normalized frame, so crop and target always agree.
  """
  ex = _as_loaded(features)
  joints, image = ex["joints"], ex["pixels"]
  seeds = tf.random.experimental.stateless_split(seed_pair, 5)
  shift = tf.random.stateless_uniform([2], seeds[0], -augment.translate, augment.translate)
  scale = tf.random.stateless_uniform([], seeds[1], augment.scale[0], augment.scale[1])
  box = geometry.jitter_box(stage1_box(ex, joints, box_source), shift, scale)
  do_flip = (tf.random.stateless_uniform([], seeds[2]) < 0.5 if augment.flip
             else tf.constant(False))
  box, order = _flip(box, do_flip, skeleton.flip_permutation)
  if augment.rotate > 0:
    angle = _angles(seeds[3], [], augment)
    crop = geometry.affine_crop(image[None], box[None], angle[None], input_size)[0]
    target = geometry.affine_normalize(joints, box, angle)
  else:
    crop = geometry.crop(image[None], box[None], tf.zeros([1], tf.int32), input_size)[0]
    target = geometry.normalize(joints, box)
  crop = jitter_colour(crop, seeds[4], augment)
  target = tf.gather(target, order)
  mask = tf.gather(ex["visible"], order)
  target = target * mask[:, None]  # unannotated joints carry zeros, never junk
  return crop, tf.concat([target, mask[:, None]], axis=-1)


def sample_displacements(seed_pair, joint_ids, mean, chol):
  """Displacements delta ~ N(mean[i], chol[i] chol[i]^T) for each drawn joint i.

  joint_ids: (D,) int32; mean: (K, 2); chol: (K, 2, 2) lower Cholesky factors.
  Returns (D, 2), in units of the joint box side.
  """
  z = tf.random.stateless_normal([tf.shape(joint_ids)[0], 2], seed_pair)
  return tf.gather(mean, joint_ids) + tf.einsum("dij,dj->di", tf.gather(chol, joint_ids), z)


def refine_example(features, seed_pair, skeleton: Skeleton, input_size: int, sigma: float,
                   disp_mean, disp_chol, draws: int, augment: AugmentConfig):
  """One record -> `draws` refinement crops (D, S, S, 3) and targets (D, K, 3).

  Each draw picks an annotated joint i uniformly, centres a box of side sigma * diam(y) at
  y_i + delta (delta from the previous stage's displacement distribution, in box sides),
  and targets y_i normalized by that box (rotated about its centre when augment.rotate > 0).
  features: a parsed record or `load_example`'s dict; the image is decoded once for all
  draws and the D boxes are cut in one crop op.
  """
  ex = _as_loaded(features)
  joints, image, visible = ex["joints"], ex["pixels"], ex["visible"]
  k = skeleton.num_joints
  seeds = tf.random.experimental.stateless_split(seed_pair, 6)
  logits = tf.math.log(tf.maximum(visible, 1e-12))[None, :]
  joint_ids = tf.cast(tf.random.stateless_categorical(logits, draws, seeds[0])[0], tf.int32)
  boxes = geometry.joint_boxes(joints, skeleton.diameter_indices, sigma)  # (K, 4)
  boxes = tf.gather(boxes, joint_ids)  # (D, 4)
  delta = sample_displacements(seeds[1], joint_ids, disp_mean, disp_chol)
  scale = tf.random.stateless_uniform([draws], seeds[2], augment.scale[0], augment.scale[1])
  boxes = tf.concat([boxes[:, 0:2] + delta * boxes[:, 2:4], boxes[:, 2:4] * scale[:, None]], -1)
  if augment.flip:
    flip = tf.random.stateless_uniform([draws], seeds[3]) < 0.5
  else:
    flip = tf.zeros([draws], tf.bool)
  boxes, order = _flip(boxes, flip, skeleton.flip_permutation)
  points = tf.gather(joints, joint_ids)[:, None, :]  # (D, 1, 2)
  if augment.rotate > 0:
    angles = _angles(seeds[4], [draws], augment)
    crops = geometry.affine_crop(tf.repeat(image[None], draws, axis=0), boxes, angles,
                                 input_size)
    target = geometry.affine_normalize(points, boxes, angles)  # (D, 1, 2)
  else:
    crops = geometry.crop(image[None], boxes, tf.zeros([draws], tf.int32), input_size)
    target = geometry.normalize(points, boxes)  # (D, 1, 2)
  crops = jitter_colour(crops, seeds[5], augment)
  # The mirrored crop of joint i shows it as its flip partner perm[i] (the permutation is
  # its own inverse): train that output instead. order[d] is perm where draw d flipped.
  label = tf.gather(order, joint_ids, batch_dims=1)
  one_hot = tf.one_hot(label, k)  # (D, K)
  target = target * one_hot[:, :, None]  # (D, K, 2): only the drawn joint's row is trained
  return crops, tf.concat([target, one_hot[:, :, None]], axis=-1)


def train_dataset(data_dir: str, split: str, skeleton: Skeleton, input_size: int,
                  batch_size: int, seed: int, augment: AugmentConfig = AugmentConfig(),
                  refine: Optional["RefineConfig"] = None, shuffle_buffer: int = 2048,
                  start_index: int = 0, cache_max_side: Optional[int] = None,
                  box_source: str = "image"):
  """Infinite, shuffled, augmented batches for training one stage.

  data_dir: a prepared folder, or a sequence of folders whose `split`s are mixed (shards
  shuffled together; the same skeleton).
  refine: None for stage 1; for stage s >= 2 a config.RefineConfig (sigma, mean (K, 2),
  chol (K, 2, 2), draws = crops per image). start_index offsets the per-element seeds so a resumed run
  does not replay the augmentations it already trained on.
  cache_max_side: None decodes every JPEG on every visit; an int keeps the decoded split in
  memory (images shrunk to at most that many pixels on their longer side; 0 = full size),
  so the two CPU cores train instead of decoding. The cache is filled during the first pass.
  box_source: stage 1's box (STAGE1_BOXES); refinement crops are framed by the joints anyway.
  Yields (crops (B, S, S, 3) float32, targets (B, K, 3)).
  """
  k = skeleton.num_joints
  if box_source not in STAGE1_BOXES:
    raise ValueError(f"stage1_box must be one of {STAGE1_BOXES}, got {box_source!r}")
  ds = _files_dataset(data_dir, split, True, seed)
  if cache_max_side is not None:
    if cache_max_side < 0:
      raise ValueError(f"cache_max_side must be >= 0 (0 = full size), got {cache_max_side}")
    ds = ds.map(lambda s: load_example(records.parse(s, k), cache_max_side),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    parse = lambda example: example
  else:
    parse = lambda serialized: records.parse(serialized, k)
  # Shuffling the endless stream (after repeat) with a fixed seed makes the order a function
  # of the seed alone: Keras opens a dataset more than once, and reshuffle_each_iteration
  # would give each iterator (and so each run) another order.
  ds = ds.repeat().shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
  ds = ds.enumerate(start=start_index)

  if refine is None:
    def fn(index, example):
      return stage1_example(parse(example), tf.stack([tf.cast(seed, tf.int64), index]),
                            skeleton, input_size, augment, box_source)
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    mean = tf.constant(refine.mean)
    chol = tf.constant(refine.chol)

    def fn(index, example):
      return refine_example(parse(example), tf.stack([tf.cast(seed, tf.int64), index]),
                            skeleton, input_size, refine.sigma, mean, chol,
                            refine.draws, augment)
    ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    # Crops of one image are correlated: mix them with other images' before batching.
    ds = ds.shuffle(max(4 * refine.draws, 256), seed=seed + 1)
  return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(data_dir: str, split: str, skeleton: Skeleton, batch_size: int,
                 limit: Optional[int] = None):
  """Batches of whole images for the cascade, in file order, every record exactly once.

  Images of a batch are zero-padded to the batch's largest size: the crop already reads
  zeros outside an image, so padding changes no pixel any box sees.
  Yields dicts: image (B, Hmax, Wmax, 3) uint8, box (B, 4), joints (B, K, 2) image pixels,
  visible (B, K), image_id (B,), height (B,), width (B,), area (B,) (-1: none stored).
  """
  k = skeleton.num_joints
  ds = _files_dataset(data_dir, split, False, 0)
  if limit:
    ds = ds.take(limit)

  def fn(serialized):
    f = records.parse(serialized, k)
    return {"image": decode_image(f["image"], f["image_id"]), "box": initial_box(f),
            "joints": _check_record(f), "visible": f["visible"], "image_id": f["image_id"],
            "height": f["height"], "width": f["width"], "area": f["area"]}

  ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.padded_batch(batch_size).prefetch(tf.data.AUTOTUNE)


def annotations(data_dir: str, split: str, skeleton: Skeleton, box_source: str = "image"):
  """All poses of a split without decoding images: joints (N, K, 2), visible (N, K), boxes
  (N, 4) stage-1 boxes (box_source: STAGE1_BOXES), ids (N,). Fast: used for the mean pose
  and for statistics.
  data_dir: a folder or a sequence of folders (their splits concatenated in order)."""
  k = skeleton.num_joints

  def pick(f):
    f = dict(f, box=initial_box(f))
    return {"joints": f["joints"], "visible": f["visible"],
            "box": stage1_box(f, f["joints"], box_source), "image_id": f["image_id"]}

  ds = _files_dataset(data_dir, split, False, 0).map(
      lambda s: records.parse(s, k), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(pick).batch(4096)
  parts = [{key: v.numpy() for key, v in b.items()} for b in ds]
  if not parts:
    raise ValueError(f"split {split!r} in {data_dir!r} has no records")
  return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def mean_pose(data_dir: str, split: str, skeleton: Skeleton,
              box_source: str = "image") -> np.ndarray:
  """The masked mean of training poses normalized by their stage-1 boxes (box_source), (K,
  2): the baseline that every model must beat, and the initial bias of the regressor's
  output layer."""
  a = annotations(data_dir, split, skeleton, box_source)
  norm = geometry.normalize(a["joints"], a["box"]).numpy()
  vis = a["visible"][..., None]
  counts = vis.sum(axis=0)
  if np.any(counts == 0):
    missing = [skeleton.joints[i] for i in np.flatnonzero(counts[:, 0] == 0)]
    raise ValueError(f"split {split!r} in {data_dir!r} never annotates joints {missing}")
  return ((norm * vis).sum(axis=0) / counts).astype(np.float32)
