"""Person boxes for the predict command: the whole image, a real people detector, or the
user's own boxes. Every box is (cx, cy, w, h) in image pixels, the cascade's frame.

The detector is OpenCV's HOG people detector (Dalal & Triggs, CVPR 2005), whose linear SVM
ships inside opencv-python-headless: nothing is downloaded (pip install "deeppose_tf[face]"
installs OpenCV).
"""

from __future__ import annotations

import json
import os
from typing import Dict

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
  """detect(image uint8 (h, w, 3) RGB) -> (P, 4) boxes, best first, P >= 0."""

  def __init__(self):
    from deeppose_tf.data.face_box import import_cv2
    self._cv2 = cv2 = import_cv2()
    self._hog = cv2.HOGDescriptor()
    self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

  def detect(self, image: np.ndarray) -> np.ndarray:
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
      return np.zeros((0, 4), np.float32)
    rects, scores = self._hog.detectMultiScale(gray, winStride=(8, 8), padding=(16, 16),
                                               scale=HOG_SCALE)
    if len(rects) == 0:
      return np.zeros((0, 4), np.float32)
    scores = np.asarray(scores, np.float32).reshape(-1)
    keep = cv2.dnn.NMSBoxes([list(map(int, r)) for r in rects], scores.tolist(),
                            HOG_MIN_SCORE, NMS_OVERLAP)
    keep = np.asarray(keep, np.int64).reshape(-1)
    keep = keep[np.argsort(-scores[keep])]
    x, y, bw, bh = (np.asarray(rects, np.float32)[keep] / scale).T
    return np.stack([x + bw / 2 - pad, y + bh / 2 - pad, bw * BOX_GROWTH, bh * BOX_GROWTH],
                    -1).astype(np.float32)


def read_user_boxes(path: str) -> Dict[str, np.ndarray]:
  """Boxes from a JSON file: {"image file name or path": [[x, y, width, height], ...]} with
  (x, y) the top-left corner in pixels (COCO's bbox layout). Returns {key: (P, 4) (cx, cy,
  w, h)}. ValueError naming the file and the entry for anything else."""
  try:
    with open(path) as f:
      data = json.load(f)
  except OSError as e:
    raise ValueError(f"--boxes={path}: cannot read it ({e.strerror})") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"--boxes={path} is not valid JSON: {e}") from None
  if not isinstance(data, dict):
    raise ValueError(f"--boxes={path}: expected {{\"image\": [[x, y, w, h], ...]}}")
  out = {}
  for key, rows in data.items():
    try:
      arr = np.asarray(rows, np.float64).reshape(-1, 4)
    except (TypeError, ValueError):
      raise ValueError(f"--boxes={path}: entry {key!r} is not a list of [x, y, w, h]") from None
    if not np.isfinite(arr).all() or (arr[:, 2:] <= 0).any():
      raise ValueError(f"--boxes={path}: entry {key!r} has a non-finite or empty box")
    out[key] = np.concatenate([arr[:, :2] + arr[:, 2:] / 2, arr[:, 2:]], 1).astype(np.float32)
  return out


def lookup_boxes(boxes: Dict[str, np.ndarray], image_path: str):
  """The user's boxes of an image: by its path as given, its absolute path, or its name."""
  for key in (image_path, os.path.abspath(image_path), os.path.basename(image_path)):
    if key in boxes:
      return boxes[key]
  return None
