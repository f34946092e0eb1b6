"""Person boxes for the predict command: the whole image, a real people detector, or the
user's own boxes. Every box is (cx, cy, w, h) in image pixels, the cascade's frame.

The detector is OpenCV's HOG people detector (Dalal & Triggs, CVPR 2005), whose linear SVM
ships inside opencv-python-headless: nothing is downloaded (pip install "deeppose_tf[face]"
installs OpenCV).
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import numpy as np

from deeppose_tf import geometry

# The HOG window (64 x 128) holds a pedestrian about 96 px tall: the detector needs people at
# least that tall, so small images are enlarged first, up to this many pixels tall.
HOG_MIN_HEIGHT = 400
HOG_MAX_SIDE = 1600  # larger images are shrunk first: detection time grows with pixels
HOG_SCALE = 1.05
HOG_MIN_SCORE = 0.3  # SVM margin; weaker hits are mostly background
NMS_OVERLAP = 0.4
# A HOG box is tight around the walker; the cascade was trained on boxes with room around
# the person (LSP's whole image), so each box grows by this factor, aspect kept.
BOX_GROWTH = 1.6
# HOG cannot find a person whose window would leave the image (one who fills the frame, as in
# LSP): the image is extended by this fraction of its longer side on every side first
# (replicated border). Both values were chosen on LSPET val (300 images): found 35% -> 53%
# of the people, and boxes containing every annotated joint 2% -> 14% (BUILD.md).
BORDER = 0.3


def full_box(height: int, width: int) -> np.ndarray:
  """(1, 4): the whole image, as LSP is evaluated."""
  return geometry.full_image_box(height, width).numpy()[None].astype(np.float32)


class HogPeopleDetector:
  """detect(image uint8 (h, w, 3) RGB) -> (P, 4) boxes, best first, P >= 0.
  detect_scored(image) -> (those boxes, their (P,) SVM margins); candidates(image) -> every
  window before threshold and NMS (predict.detectors' `hog` uses it)."""

  def __init__(self):
    from deeppose_tf.data.face_box import import_cv2
    self._cv2 = cv2 = import_cv2()
    self._hog = cv2.HOGDescriptor()
    self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

  def candidates(self, image: np.ndarray):
    """All of HOG's windows: (N, 4) (cx, cy, w, h) image pixels, un-grown, and (N,) SVM
    margins, in no order, before threshold and NMS."""
    cv2 = self._cv2
    pad = int(round(BORDER * max(image.shape[:2])))
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    h, w = gray.shape[:2]
    scale = min(max(1.0, HOG_MIN_HEIGHT / h), HOG_MAX_SIDE / max(h, w))
    if scale != 1.0:
      gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                        interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    if min(gray.shape) < 128:
      return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    rects, scores = self._hog.detectMultiScale(gray, winStride=(8, 8), padding=(16, 16),
                                               scale=HOG_SCALE)
    if len(rects) == 0:
      return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    scores = np.asarray(scores, np.float32).reshape(-1)
    x, y, bw, bh = (np.asarray(rects, np.float32).reshape(-1, 4) / scale).T
    return (np.stack([x + bw / 2 - pad, y + bh / 2 - pad, bw, bh], -1).astype(np.float32),
            scores)

  def detect_scored(self, image: np.ndarray):
    boxes, scores = self.candidates(image)
    keep = scores >= HOG_MIN_SCORE
    boxes, scores = boxes[keep], scores[keep]
    best = np.asarray([g[0] for g in nms(boxes, scores, NMS_OVERLAP)], np.int64)
    if not len(best):
      return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    return grow_boxes(boxes[best], BOX_GROWTH), scores[best]

  def detect(self, image: np.ndarray) -> np.ndarray:
    return self.detect_scored(image)[0]


def intersection(a, b) -> np.ndarray:
  """Intersection areas of boxes a (N, 4) and b (M, 4), (cx, cy, w, h) pixels -> (N, M)
  float64 (NaN where a box is not finite)."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  a_half, b_half = np.abs(a[:, None, 2:]) / 2, np.abs(b[None, :, 2:]) / 2
  lo = np.maximum(a[:, None, :2] - a_half, b[None, :, :2] - b_half)
  hi = np.minimum(a[:, None, :2] + a_half, b[None, :, :2] + b_half)
  side = np.clip(hi - lo, 0, None)
  return side[..., 0] * side[..., 1]


def iou(a, b) -> np.ndarray:
  """Intersection over union of boxes a (N, 4) and b (M, 4), (cx, cy, w, h) pixels ->
  (N, M); 0 for empty or non-finite boxes."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  inter = intersection(a, b)
  union = (np.prod(np.abs(a[:, 2:]), 1)[:, None] + np.prod(np.abs(b[:, 2:]), 1)[None, :]
           - inter)
  with np.errstate(invalid="ignore", divide="ignore"):
    out = np.where(union > 0, inter / union, 0.0)
  return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def match_person(boxes: np.ndarray, joints: np.ndarray, visible: np.ndarray) -> int:
  """The index of the box (P, 4) (cx, cy, w, h) that best overlaps the annotated person: the
  highest IoU with the bounding box of the annotated joints (joints (K, 2) image pixels,
  visible (K,) in {0, 1}); ties and images with fewer than two annotated joints give 0 (the
  detector's best). Evaluation of a multi-person detector on a one-person record uses it
  as COCO's matching does, by where the people are, never by how good their poses are."""
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  if len(boxes) < 2:
    return 0
  vis = (np.asarray(visible).reshape(-1) > 0)
  pts = np.asarray(joints, np.float64).reshape(-1, 2)[vis]
  pts = pts[np.isfinite(pts).all(-1)]
  if len(pts) < 2:
    return 0
  lo, hi = pts.min(0), pts.max(0)
  person = np.r_[(lo + hi) / 2, np.maximum(hi - lo, 1.0)]
  return int(np.argmax(iou(boxes, person[None])[:, 0]))


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> List[np.ndarray]:
  """Greedy non-maximum suppression, pure numpy.

  boxes (N, 4) (cx, cy, w, h) any one frame; scores (N,). Returns the groups, best first:
  each an int array of indices whose first entry is a kept box (the best score left) and the
  rest the boxes it suppresses (IoU > iou_threshold with it). Hard NMS keeps
  [g[0] for g in groups]; weighted NMS (MediaPipe's) averages each group by score.
  """
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scores = np.asarray(scores, np.float64).reshape(-1)
  left = np.argsort(-scores, kind="stable")
  groups = []
  while left.size:
    best, rest = left[0], left[1:]
    same = iou(boxes[best], boxes[rest])[0] > iou_threshold
    groups.append(np.concatenate([[best], rest[same]]).astype(np.int64))
    left = rest[~same]
  return groups


def grow_boxes(boxes: np.ndarray, growth: float) -> np.ndarray:
  """(P, 4) (cx, cy, w, h) -> the same boxes `growth` times as wide and tall (about their
  centre, aspect kept), float32."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
  boxes[:, 2:] *= np.float32(growth)
  return boxes


def square_boxes(boxes: np.ndarray) -> np.ndarray:
  """(P, 4) (cx, cy, w, h) -> squares of side max(w, h) about the same centres, float32.
  Stage 1 reads any box as a square crop: a tall person's box (w < h) would reach it
  squeezed sideways, where stage 1 was trained on undistorted squares (--stage1_box=joints,
  and the reframing pass)."""
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
  boxes[:, 2:] = boxes[:, 2:].max(axis=1, keepdims=True)
  return boxes


# A box may reach past the image (a person at its edge, a grown detector box) but not be far
# larger than it: joints regressed in a box 1e6 px wide land near 500,000 px.
MAX_BOX_SIDE = 4.0  # times the image's longer side


def box_problems(boxes: np.ndarray, height: int, width: int) -> List[Optional[str]]:
  """One rule for every box source and every model kind, checked before any model sees the
  box. boxes (P, 4) (cx, cy, w, h) image pixels -> P entries: None for a usable box, else
  what is wrong with it (not finite, empty, outside the image, far larger than it)."""
  out = []
  longer = float(max(height, width))
  for cx, cy, w, h in np.asarray(boxes, np.float64).reshape(-1, 4):
    if not np.all(np.isfinite([cx, cy, w, h])):
      out.append("has a coordinate that is not a finite number")
    elif w <= 0 or h <= 0:
      out.append(f"is empty ({w:g} x {h:g} px)")
    elif max(w, h) > MAX_BOX_SIDE * longer:
      out.append(f"is {w:g} x {h:g} px, more than {MAX_BOX_SIDE:g}x the {width}x{height} "
                 "image")
    elif cx + w / 2 <= 0 or cx - w / 2 >= width or cy + h / 2 <= 0 or cy - h / 2 >= height:
      out.append(f"lies outside the {width}x{height} image")
    else:
      out.append(None)
  return out


def read_user_boxes(path: str) -> Dict[str, np.ndarray]:
  """Boxes from a JSON file: {"image file name or path": [[x, y, width, height], ...]} with
  (x, y) the top-left corner in pixels (COCO's bbox layout). Returns {key: (P, 4) (cx, cy,
  w, h)}, rows in the file's order. ValueError naming the file, the entry and the row for
  anything else: a row must be exactly 4 finite numbers with a positive width and height
  (a detector's [x, y, w, h, score, class] row is refused, not reshaped into other boxes).
  Whether a box fits its image is checked per image (box_problems)."""
  try:
    with open(path) as f:
      data = json.load(f)
  except OSError as e:
    raise ValueError(f"--boxes={path}: cannot read it ({e.strerror})") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"--boxes={path} is not valid JSON: {e}") from None
  if not isinstance(data, dict):
    raise ValueError(f"--boxes={path}: expected {{\"image\": [[x, y, w, h], ...]}}, got a "
                     f"{type(data).__name__}")
  out = {}
  for key, rows in data.items():
    where = f"--boxes={path}: entry {key!r}"
    if not isinstance(rows, list):
      raise ValueError(f"{where} is not a list of [x, y, w, h] rows")
    if rows and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rows):
      rows = [rows]  # one box given flat: [x, y, w, h]
    arr = np.zeros((len(rows), 4), np.float64)
    for i, row in enumerate(rows):
      if (not isinstance(row, list) or len(row) != 4 or
          not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)):
        got = (f"{len(row)} values" if isinstance(row, list) else type(row).__name__)
        raise ValueError(f"{where}, box {i}: expected [x, y, w, h] (4 numbers), got {got}")
      arr[i] = row
      if not np.isfinite(arr[i]).all() or (arr[i, 2:] <= 0).any():
        raise ValueError(f"{where}, box {i}: {row} has a non-finite value or an empty size")
    out[key] = np.concatenate([arr[:, :2] + arr[:, 2:] / 2, arr[:, 2:]], 1).astype(np.float32)
  return out


def lookup_boxes(boxes: Dict[str, np.ndarray], image_path: str):
  """The user's boxes of an image: by its path as given, its absolute path, the path it
  resolves to (a link), or its name."""
  for key in (image_path, os.path.abspath(image_path), os.path.realpath(image_path),
              os.path.basename(image_path)):
    if key in boxes:
      return boxes[key]
  return None
