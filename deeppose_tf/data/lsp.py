"""Readers for LSP (Leeds Sports Pose) and LSP-extended (LSPET).

Both yield `PoseRecord`s in the LSP14 joint order (`skeleton.LSP14.joints`, identical to
the row order of the `joints.mat` files):
  joints  (14, 2) float32, (x, y) in image pixels, 0-based: pixel i spans [i, i+1), so
          the centre of the top-left pixel is (0.5, 0.5);
  visible (14,) float32, 1 = annotated, 0 = not annotated (its joints row is zeros);
  image   the original file bytes, never decoded or re-encoded here.

Coordinate frame: the .mat files are MATLAB 1-based pixel indices, where the centre of
the top-left pixel is (1, 1).  That centre is (0.5, 0.5) here, hence
`x_py = x_mat - 1 + 0.5 = x_mat - 0.5` (`matlab_to_pixels`), for x and y alike.

The helpers both MATLAB-format readers share (loading a .mat variable, the coordinate
conversion, reading image bytes) are in matlab.py.
"""

from __future__ import annotations

import hashlib
import os
from typing import Iterator, List, Optional, Sequence

import numpy as np
from absl import logging

from deeppose_tf import skeleton as skeleton_lib
from deeppose_tf.data.matlab import (check_split, load_mat_variable, matlab_to_pixels,
                                     read_image_bytes)
from deeppose_tf.data.records import PoseRecord

NUM_JOINTS = skeleton_lib.LSP14.num_joints  # 14

# Official LSP split, as 0-based [start, stop) column ranges: images 1-1000 / 1001-2000.
LSP_SPLITS = {"train": (0, 1000), "test": (1000, 2000)}
LSP_NUM_IMAGES = 2000
# LSPET has no official split; see `lspet_split_indices`.
LSPET_SPLITS = ("train", "val", "all")


def _joints_array(path: str, value, layouts: Sequence[str]) -> np.ndarray:
  """The `joints` variable as (N, 14, 3) float64 [x, y, flag], from the allowed layouts.

  layouts: "lsp" = (3, 14, N) (coordinate, joint, image), "lspet" = (14, 3, N) (joint,
  coordinate, image).  The first two axes (3 vs 14) tell the layouts apart for every N.
  MATLAB drops trailing singleton dimensions, so a one-image file is 2-D; accept that too.
  """
  arr = np.asarray(value)
  expected = {"lsp": f"(3, {NUM_JOINTS}, N)", "lspet": f"({NUM_JOINTS}, 3, N)"}
  expected_text = " or ".join(expected[l] for l in layouts)
  if arr.ndim == 2:
    arr = arr[:, :, None]
  if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
    raise ValueError(f"{path!r}: 'joints' has dtype {arr.dtype}, expected a numeric array "
                     f"of shape {expected_text}")
  if arr.ndim == 3 and "lsp" in layouts and arr.shape[:2] == (3, NUM_JOINTS):
    return arr.transpose(2, 1, 0).astype(np.float64)
  if arr.ndim == 3 and "lspet" in layouts and arr.shape[:2] == (NUM_JOINTS, 3):
    return arr.transpose(2, 0, 1).astype(np.float64)
  hint = ""
  if arr.ndim == 3 and arr.shape[:2] == (3, NUM_JOINTS):
    hint = " (that is the 2000-image LSP layout: read it with read_lsp)"
  raise ValueError(f"{path!r}: 'joints' has shape {np.asarray(value).shape}, expected "
                   f"{expected_text}{hint}")


def _finite_or_raise(image_id: str, xy: np.ndarray, annotated: np.ndarray) -> None:
  bad = annotated & ~np.all(np.isfinite(xy), axis=1)
  if bad.any():
    raise ValueError(f"record {image_id!r}: annotated joints {np.flatnonzero(bad).tolist()} "
                     f"have non-finite coordinates {xy[bad].tolist()}")


def read_lsp(source_dir: str, split: str, val_images: int = 0) -> Iterator[PoseRecord]:
  """LSP records of one split, in image order.

  Expects `source_dir/joints.mat` (variable `joints`) and `source_dir/images/im0001.jpg`
  .. `im2000.jpg`.  Split 'train' = images 1-1000, 'test' = images 1001-2000 (the
  official split).  A copy with fewer than 2000 images yields the part of each split it
  has; more than 2000 is refused (that is not LSP).  val_images > 0 carves a 'val' split
  from the training half: its last `val_images` images (1000 - N + 1 .. 1000), which
  'train' then leaves out (with 0, 'val' is empty and 'train' the official 1000).

  The official file is (3, 14, 2000): (x, y, flag) x joint x image.  A (14, 3, N) file
  (joint x (x, y, flag) x image, as some re-distributions and LSPET store it) is accepted
  too: the axis order is detected from the shape, whose first two axes (3, 14) vs (14, 3)
  are never ambiguous.  In LSP every joint is annotated (the flag there marks occlusion,
  not missing labels), so visible = 1 for all 14 joints whatever the flag says.

  Yields PoseRecord(image_id="lsp/im0001", image=<file bytes>, joints (14, 2) float32 in
  0-based image pixels (see `matlab_to_pixels`), visible (14,) ones, box=None).
  Raises ValueError (immediately, before the first record) for an unknown split, a missing
  or malformed joints.mat, and (while iterating) for a missing image or non-finite joint.
  """
  check_split(split, list(LSP_SPLITS) + ["val"], "LSP")
  train_start, train_stop = LSP_SPLITS["train"]
  if not 0 <= int(val_images) < train_stop - train_start:
    raise ValueError(f"LSP val_images must be in [0, {train_stop - train_start}), got "
                     f"{val_images}")
  path = os.path.join(source_dir, "joints.mat")
  joints = _joints_array(path, load_mat_variable(path, "joints", "LSP"), ("lsp", "lspet"))
  num = joints.shape[0]
  if num > LSP_NUM_IMAGES:
    raise ValueError(f"{path!r}: 'joints' holds {num} images, LSP has {LSP_NUM_IMAGES}; "
                     f"for LSP-extended use read_lspet")
  if split == "val":
    start, stop = train_stop - int(val_images), train_stop
  else:
    start, stop = LSP_SPLITS[split]
    if split == "train":
      stop -= int(val_images)
  if num < stop and stop > start:
    logging.warning("LSP %s: %s has %d images, so split %r has %d of its %d images",
                    source_dir, path, num, split, max(0, min(num, stop) - start), stop - start)
  return _lsp_records(source_dir, joints, range(start, min(num, stop)))


def _lsp_records(source_dir: str, joints: np.ndarray, indices) -> Iterator[PoseRecord]:
  visible = np.ones((NUM_JOINTS,), np.float32)
  for i in indices:
    name = f"im{i + 1:04d}"
    image_id = f"lsp/{name}"
    xy = joints[i, :, :2]
    _finite_or_raise(image_id, xy, np.ones((NUM_JOINTS,), bool))
    yield PoseRecord(
        image_id=image_id,
        image=read_image_bytes(os.path.join(source_dir, "images", name + ".jpg"), image_id),
        joints=matlab_to_pixels(xy), visible=visible.copy(), box=None)


def lspet_split_indices(num_images: int, split: str, val_fraction: float = 0.1,
                        seed: int = 0) -> np.ndarray:
  """Sorted 0-based image indices of an LSPET split ('train', 'val' or 'all').

  LSPET has no official split.  The images are put in a seeded pseudo-random order, the
  first round(val_fraction * num_images) of it form 'val' and the rest 'train'; 'all' is
  every image.  The order sorts the SHA-256 of f"lspet:{seed}:{image number}", not a numpy
  RNG stream: numpy does not promise that a seeded Generator gives the same permutation in
  every version, and the split must be identical on every machine forever.  The split is
  over all `num_images` columns of joints.mat, before images without annotations are
  skipped, so what a file annotates never moves an image between train and val.
  """
  check_split(split, LSPET_SPLITS, "LSPET")
  if not 0.0 <= val_fraction <= 1.0:
    raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction!r}")
  if split == "all":
    return np.arange(num_images)
  keys = [hashlib.sha256(f"lspet:{seed}:{i + 1}".encode()).digest()
          for i in range(num_images)]
  order = np.asarray(sorted(range(num_images), key=keys.__getitem__), np.int64)
  num_val = int(round(val_fraction * num_images))
  chosen = order[:num_val] if split == "val" else order[num_val:]
  return np.sort(chosen)


def read_lspet(source_dir: str, split: str, val_fraction: float = 0.1, seed: int = 0,
               skipped: Optional[List[str]] = None) -> Iterator[PoseRecord]:
  """LSP-extended records of one split, in image order.

  Expects `source_dir/joints.mat` with `joints` of shape (14, 3, N): joint x (x, y, flag)
  x image (N = 10000 in the official file; any N works) and images
  `source_dir/images/im00001.jpg` .. (column j belongs to im%05d.jpg % (j + 1)).
  flag 1 = annotated, flag 0 = NOT annotated (those coordinates are junk <= 0): visible is
  the flag and the joints row of an unannotated joint is stored as zeros.

  Splits (no official one exists, see `lspet_split_indices`): 'train' and 'val' partition
  the images by a seeded order, `val_fraction` of them in 'val'; 'all' is everything.

  Images with no annotated joint carry nothing to learn or score: they are skipped, each
  is logged as a warning, and their ids are appended to `skipped` when a list is given.

  Yields PoseRecord(image_id="lspet/im00001", image=<file bytes>, joints (14, 2) float32
  in 0-based image pixels (`matlab_to_pixels`), visible (14,) float32, box=None).
  Raises ValueError immediately for an unknown split, a missing or malformed joints.mat
  or flags other than 0/1, and while iterating for a missing image file (naming it) or an
  annotated joint with non-finite coordinates.
  """
  check_split(split, LSPET_SPLITS, "LSPET")
  path = os.path.join(source_dir, "joints.mat")
  joints = _joints_array(path, load_mat_variable(path, "joints", "LSPET"), ("lspet",))
  flags = joints[:, :, 2]
  bad = ~np.isin(flags, (0.0, 1.0))
  if bad.any():
    image, joint = np.argwhere(bad)[0]
    raise ValueError(f"{path!r}: annotation flags must be 0 or 1; image im{image + 1:05d} "
                     f"joint {joint} has {flags[image, joint]!r} ({int(bad.sum())} bad flags)")
  indices = lspet_split_indices(joints.shape[0], split, val_fraction, seed)
  return _lspet_records(source_dir, joints, indices, skipped)


def _lspet_records(source_dir: str, joints: np.ndarray, indices,
                   skipped: Optional[List[str]]) -> Iterator[PoseRecord]:
  num_skipped = 0
  for i in indices:
    name = f"im{i + 1:05d}"
    image_id = f"lspet/{name}"
    annotated = joints[i, :, 2] == 1.0
    if not annotated.any():
      num_skipped += 1
      logging.warning("LSPET: skipping %s, no joint of it is annotated", image_id)
      if skipped is not None:
        skipped.append(image_id)
      continue
    xy = joints[i, :, :2]
    _finite_or_raise(image_id, xy, annotated)
    # Zeros, not the file's junk (0, -26)-style values, so nothing unannotated looks real.
    xy_pixels = np.zeros((NUM_JOINTS, 2), np.float32)
    xy_pixels[annotated] = matlab_to_pixels(xy[annotated])
    yield PoseRecord(
        image_id=image_id,
        image=read_image_bytes(os.path.join(source_dir, "images", name + ".jpg"), image_id),
        joints=xy_pixels, visible=annotated.astype(np.float32), box=None)
  if num_skipped:
    logging.warning("LSPET: skipped %d of %d images that have no annotated joint",
                    num_skipped, len(indices))
