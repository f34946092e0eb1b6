"""Pose-guided framing (`--boxes=auto`): find the person with the model itself, no detector.

DeepPose's refinement crops a box around each joint and looks again at a higher resolution;
this takes the same idea one step up, to the whole person. The cascade runs on a starting box
(the whole image in predict, the split's box in evaluate); the square around its predicted
joints, grown to the framing the model was trained on (geometry.framing_box), becomes the next
box, and the cascade runs again there, while the box still moves. A person a third of the
photo's height is thus read at three times the resolution on the second pass.

Boxes are (cx, cy, w, h) image pixels; poses (P, S, K, 2) image pixels, the last stage last.
"""

from __future__ import annotations

from typing import Callable, Tuple

import numpy as np

from deeppose_tf import geometry
from deeppose_tf.predict.detect import iou

# Passes after the first. Measured on pasted LSPET val photos (BUILD.md, "Small people"):
# most boxes settle after one or two.
AUTO_PASSES = 2
# A box that overlaps the previous one this much (IoU) has settled: another pass would read
# nearly the same pixels.
SETTLE_IOU = 0.9
# The smallest box, as a fraction of the longer side of the box the search started from (the
# whole image): a pose that collapsed onto a few pixels must not zoom into them pass after
# pass (or frame after frame in a video). A tenth lets a person a seventh of the image's
# side be framed at the 1.3x of training.
MIN_FRACTION = 0.1


def next_boxes(poses: np.ndarray, boxes: np.ndarray, outer=None,
               grow: float = geometry.FRAMING_GROW, settle_iou: float = SETTLE_IOU,
               min_fraction: float = MIN_FRACTION) -> Tuple[np.ndarray, np.ndarray]:
  """The framing of each pose, and which boxes it moved.

  poses: (P, K, 2) the last stage's joints, image pixels, found in boxes (P, 4).
  outer: (P, 4) or (4,) the boxes the search started from (the whole image), whose longer
  side sets the smallest box (min_fraction); default `boxes`.
  Returns new boxes (P, 4) (the old box where the pose is not finite or the box settled) and
  moved (P,) bool."""
  poses = np.asarray(poses, np.float32)
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  if len(boxes) == 0:
    return boxes, np.zeros(0, bool)
  outer = boxes if outer is None else np.broadcast_to(np.asarray(outer, np.float32),
                                                      boxes.shape)
  framed = geometry.framing_box(poses, outer, grow, min_fraction).numpy()
  ok = np.isfinite(framed).all(-1) & np.isfinite(poses).all((-1, -2))
  moved = ok & (np.diagonal(iou(framed, boxes)) < settle_iou)
  return np.where(moved[:, None], framed, boxes).astype(np.float32), moved


def frame_by_pose(run: Callable[[np.ndarray], np.ndarray], boxes: np.ndarray, outer=None,
                  passes: int = AUTO_PASSES, grow: float = geometry.FRAMING_GROW,
                  settle_iou: float = SETTLE_IOU) -> Tuple[np.ndarray, np.ndarray]:
  """Runs `run(boxes (Q, 4)) -> poses (Q, S, K, 2)` on `boxes` (P, 4), then up to `passes`
  times on the framing of each pose that still moves. outer: the whole image's box (4,) or
  (P, 4), which bounds how small a box gets (next_boxes); default `boxes`. Returns (boxes
  (P, 4), poses (P, S, K, 2)): the last box of each person and the cascade's poses in it."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  outer = boxes.copy() if outer is None else outer
  poses = np.asarray(run(boxes))
  for _ in range(passes):
    if not len(boxes):
      break
    new, moved = next_boxes(poses[:, -1], boxes, outer, grow, settle_iou)
    if not moved.any():
      break
    boxes = new
    poses = poses.copy()
    poses[moved] = run(boxes[moved])
  return boxes, poses
