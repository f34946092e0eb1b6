"""Person detectors for the predict command, as a plain-dict registry.

  detector = make_detector("movenet", model_path="movenet_multipose_lightning_fp16.tflite")
  boxes, scores = detector.detect(image)

image: uint8 (h, w, 3) RGB. boxes: (P, 4) float32 (cx, cy, w, h) in image pixels (x right,
y down, (0, 0) the image's top-left corner: the cascade's frame), best first, grown about
their centre (aspect kept) by the detector's growth so that each holds the whole person with
room, as the cascade's training images (LSP) frame their person. scores: (P,) float32, each
box's score in the detector's own units (a probability for the TFLite models, the SVM margin
for HOG); P = 0 when nobody is found.

  hog        OpenCV's HOG people detector (detect.HogPeopleDetector); needs no file.
  blazepose  MediaPipe's BlazePose person detector (pose_detection.tflite): one person near
             the camera; the body box comes from its mid-hip and body-circle keypoints.
  movenet    MoveNet.MultiPose Lightning (TF Hub movenet/multipose/lightning): up to 6 people.
  ssd        Any TFLite detector with the TFLite_Detection_PostProcess outputs (TF's and Coral's
             model zoos: SSD MobileNet, EfficientDet-Lite): boxes, classes, scores, count.

The package ships no third-party weights: a TFLite detector's file is the user's
(`--detector_model`). Every model runs in the LiteRT interpreter. A file that LiteRT cannot
read, or whose inputs and outputs are not the kind asked for, is a ValueError naming it.

Each detector works in two steps that the measurement (experiments/measure_detectors.py)
calls apart, so that one pass over the images serves every threshold and growth:
`candidates(image)` (the model's decoded boxes before any threshold or NMS) and
`select(candidates, threshold)` (threshold + NMS -> un-grown boxes, scores); `detect` is
`grow_boxes(*select(candidates(image), score_threshold), growth)`.
"""

from __future__ import annotations

import collections
import os
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

# The box helpers live in detect.py (HOG's detect uses them too); detectors.nms and
# detectors.grow_boxes stay importable from here.
from deeppose_tf.predict.detect import grow_boxes, intersection, nms, square_boxes  # noqa: F401

# ------------------------------------------------------------------------------ defaults
# Measured on LSPET val (the first 300 records of the prepared `val` split; never test) with
#   taskset -c 1 python experiments/measure_detectors.py --num_images=300 --pose_images=100 \
#       --pose_growths= --output=experiments/measure_detectors.json
# and again with --canvas=3 (each photo on a grey canvas 3x its size: the person a third of
# the frame, as in a user's unframed photo); the tables are in that script's docstring.
# Every LSPET photo shows its annotated person.
# Threshold: the highest on the grid that finds the annotated person in at most 2 points
# fewer photos than the lowest threshold tried. That is 0.3 for BlazePose; for MoveNet 0.15
# on framed photos but 0.05 on the 3x canvas (0.15 found 67% there), so 0.1 (99% and 85%).
# The boxes a lower threshold adds were looked at: MoveNet's are nearly all real spectators,
# BlazePose's mostly second boxes of one person, HOG's below 0.3 half background (so HOG
# keeps 0.3 although 0 finds 4 points more). No default gives a box on a blank or a noise
# image.
# Growth: the smallest of 1.1-1.6 at which the best box holds every annotated joint in at
# most 2 points (about one standard error at 300 photos) fewer photos than the best growth,
# so that the person keeps as many crop pixels as possible. The bundled cascade's PCP on 100
# framed photos moved by no more than its noise (+-0.02) between growths 1.1 and 1.6: it
# reframes the person itself.
HOG_THRESHOLD = 0.3  # SVM margin (as detect.HOG_MIN_SCORE)
HOG_GROWTH = 1.4  # of OpenCV's pedestrian window (the older detect.BOX_GROWTH is 1.6)
BLAZEPOSE_THRESHOLD = 0.3  # sigmoid score (MediaPipe: 0.5, which finds 95% not 97%)
BLAZEPOSE_GROWTH = 1.4  # of the square of side 2 |kp1 - kp0| (MediaPipe grows it 1.25x)
MOVENET_THRESHOLD = 0.1  # the person's score; 0.2 finds 94% (framed) and 51% (3x canvas)
MOVENET_GROWTH = 1.2  # of MoveNet's box (it then frames the joints ~1.43x; LSP's ~1.3x)
SSD_THRESHOLD = 0.5  # not measured (no SSD file is at hand): the zoo's common default
SSD_GROWTH = 1.2  # not measured: SSD person boxes are tight, as MoveNet's

# Boxes overlapping more than this (IoU) are one person.
HOG_NMS_IOU = 0.4  # (detect.NMS_OVERLAP)
BLAZEPOSE_NMS_IOU = 0.3  # MediaPipe's, weighted, on the face boxes
# then hard NMS on the body squares: at 0.5 it drops most second boxes of one person (a face
# found twice) and finds the same people; two people standing shoulder to shoulder (squares
# at IoU ~0.3) stay apart.
BLAZEPOSE_BODY_NMS_IOU = 0.5
MOVENET_NMS_IOU = 0.5
SSD_NMS_IOU = 0.5

MOVENET_INPUT_SIZE = 256  # the longer side of MoveNet's input. 384 finds more small people
# (3x canvas, threshold 0.1: 93% found, not 85%) in 2.6x the time (109 ms, not 42).
# Several input sizes: one person seen at two sizes can get boxes that overlap by less than
# MOVENET_NMS_IOU (a loose box at the small size around a tight one at the large size, IoU
# 0.45 on the bench's synthetic person); a box holding more than this fraction of a better
# box's area (or lying within it as much) is the same person.
MOVENET_CONTAINED = 0.8
MOVENET_INTERPRETERS = 4  # input shapes kept ready (each holds its own copy of the model)
# Candidates below these scores are never kept (any threshold tried is above them).
_BLAZEPOSE_FLOOR = 0.05
_SCORE_CLIP = 100.0  # MediaPipe clips BlazePose's logits to +-100 before the sigmoid


# ------------------------------------------------------------------------------- helpers

def centre_boxes(xyxy: np.ndarray) -> np.ndarray:
  """(N, 4) (x0, y0, x1, y1) -> (N, 4) (cx, cy, w, h), same frame."""
  xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
  return np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)


def _empty() -> Tuple[np.ndarray, np.ndarray]:
  return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)


def _hard_select(boxes, scores, threshold, iou):
  """Threshold, then hard NMS; best first."""
  keep = scores >= threshold
  boxes, scores = boxes[keep], scores[keep]
  if not len(scores):
    return _empty()
  best = np.asarray([g[0] for g in nms(boxes, scores, iou)], np.int64)
  return boxes[best].astype(np.float32), scores[best].astype(np.float32)


def _check_image(image) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
    raise ValueError(f"a detector takes an RGB image (h, w, 3); got shape {image.shape}")
  if image.dtype != np.uint8:
    image = np.clip(image, 0, 255).astype(np.uint8)
  return image


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
  """uint8 (h, w, 3) -> uint8 (height, width, 3), bilinear (PIL)."""
  from PIL import Image
  if image.shape[:2] == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _flag(path) -> str:
  return f"--detector_model={path}"


def _open_interpreter(kind: str, path: Optional[str], num_threads: int):
  """A LiteRT Interpreter of `path` with its tensors allocated; ValueError naming the path
  (and the flag) when there is no path, no file, or no TFLite model in it."""
  if not path:
    raise ValueError(f"--detector={kind} needs its TFLite model file: pass "
                     f"--detector_model=PATH.tflite (the package ships no {kind} weights)")
  if not os.path.isfile(path):
    raise ValueError(f"{_flag(path)}: no such file")
  try:
    from ai_edge_litert.interpreter import Interpreter
  except ImportError as err:
    raise ImportError("a TFLite person detector needs the LiteRT interpreter: "
                      "pip install ai-edge-litert") from err
  try:
    interpreter = Interpreter(model_path=path, num_threads=num_threads)
    interpreter.allocate_tensors()
  except Exception as e:  # noqa: BLE001 - LiteRT raises ValueError, RuntimeError, ...
    first = (str(e).strip().splitlines() or [""])[0][:300]
    raise ValueError(f"{_flag(path)} is not a TFLite model that LiteRT can load "
                     f"({type(e).__name__}: {first})") from None
  return interpreter


def _not_kind(kind: str, path: str, expected: str, interpreter) -> ValueError:
  def shape(d):
    return "[" + ", ".join(str(int(v)) for v in d["shape_signature"]) + "]"
  got_in = ", ".join(f"{shape(d)} {d['dtype'].__name__}" for d in interpreter.get_input_details())
  got_out = ", ".join(shape(d) for d in interpreter.get_output_details())
  return ValueError(f"{_flag(path)} is not a {kind} detector: expected {expected}; it has "
                    f"inputs {got_in} and outputs {got_out}")


def _invoke(interpreter, path: str):
  try:
    interpreter.invoke()
  except Exception as e:  # noqa: BLE001
    first = (str(e).strip().splitlines() or [""])[0][:300]
    raise ValueError(f"{_flag(path)}: the model failed to run ({type(e).__name__}: "
                     f"{first})") from None


class Candidates(NamedTuple):
  """A detector's decoded output before threshold and NMS, image pixels.
  boxes (N, 4) (cx, cy, w, h); scores (N,); keypoints (N, J, 2) (x, y) or None."""
  boxes: np.ndarray
  scores: np.ndarray
  keypoints: Optional[np.ndarray] = None


# ----------------------------------------------------------------------------- detectors

class Detector:
  """detect(image uint8 (h, w, 3) RGB) -> boxes (P, 4) float32 (cx, cy, w, h) image pixels,
  best first, grown; scores (P,) float32. See the module docstring."""

  name = ""
  default_threshold = 0.5
  default_growth = 1.3
  needs_model = True

  def __init__(self, model_path: Optional[str] = None, score_threshold: Optional[float] = None,
               growth: Optional[float] = None, person_class: int = 0, num_threads: int = 1,
               square: bool = True):
    self.model_path = model_path
    # Each grown box becomes the square of its longer side (detect.square_boxes): the
    # cascade reads a box as a square crop, and stage 1 was trained on undistorted people.
    self.square = bool(square)
    self.score_threshold = float(self.default_threshold if score_threshold is None
                                 else score_threshold)
    self.growth = float(self.default_growth if growth is None else growth)
    if not np.isfinite(self.growth) or self.growth <= 0:
      raise ValueError(f"a detector's box growth must be a positive number, got {growth!r}")
    if not np.isfinite(self.score_threshold):
      raise ValueError(f"a detector's score threshold must be a number, got "
                       f"{score_threshold!r}")
    self.person_class = int(person_class)
    self.num_threads = int(num_threads)

  def candidates(self, image: np.ndarray) -> Candidates:
    raise NotImplementedError

  def select(self, cands: Candidates, threshold: float) -> Tuple[np.ndarray, np.ndarray]:
    """Candidates -> (boxes (P, 4) un-grown, scores (P,)), scores >= threshold, after NMS,
    best first."""
    raise NotImplementedError

  def detect(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    boxes, scores = self.select(self.candidates(_check_image(image)), self.score_threshold)
    # A model's NaN or an empty box (BlazePose's two keypoints on one pixel) is no person.
    usable = (np.isfinite(boxes).all(1) & np.isfinite(scores) & (boxes[:, 2:] >= 1).all(1))
    grown = grow_boxes(boxes[usable], self.growth)
    return (square_boxes(grown) if self.square else grown), scores[usable].astype(np.float32)


class HogDetector(Detector):
  """OpenCV's HOG people detector (needs opencv-python-headless, no file). Scores are SVM
  margins. Un-grown boxes are OpenCV's 64 x 128 pedestrian windows."""

  name = "hog"
  default_threshold = HOG_THRESHOLD
  default_growth = HOG_GROWTH
  needs_model = False

  def __init__(self, model_path=None, **kwargs):
    if model_path:
      raise ValueError(f"--detector=hog takes no model file; got {_flag(model_path)}")
    super().__init__(None, **kwargs)
    from deeppose_tf.predict.detect import HogPeopleDetector
    self._hog = HogPeopleDetector()

  def candidates(self, image):
    return Candidates(*self._hog.candidates(image))

  def select(self, cands, threshold):
    return _hard_select(cands.boxes, cands.scores, threshold, HOG_NMS_IOU)


def blazepose_anchors(size: int = 224) -> np.ndarray:
  """MediaPipe's SsdAnchorsCalculator for the pose detector: (2254, 2) anchor centres (x, y)
  normalised to the input for size 224. 5 layers of strides 8, 16, 32, 32, 32; layers of
  one stride share a feature map, 2 anchors per layer and cell (scale and interpolated
  scale, aspect 1): 2 per cell on 28x28 and 14x14, 6 per cell on 7x7; fixed size 1."""
  strides = [8, 16, 32, 32, 32]
  out = []
  layer = 0
  while layer < len(strides):
    per_cell = 0
    last = layer
    while last < len(strides) and strides[last] == strides[layer]:
      per_cell += 2
      last += 1
    fm = int(np.ceil(size / strides[layer]))
    y, x = np.meshgrid(np.arange(fm), np.arange(fm), indexing="ij")
    centres = np.stack([(x + 0.5) / fm, (y + 0.5) / fm], -1).reshape(-1, 1, 2)
    out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    layer = last
  return np.concatenate(out).astype(np.float32)


class BlazePoseDetector(Detector):
  """MediaPipe's BlazePose person detector (pose_detection.tflite).

  Input [1, 224, 224, 3] float32 RGB in [-1, 1], the image letterboxed (aspect kept, centred,
  border 0); outputs [1, 2254, 12] regressors and [1, 2254, 1] logits over SSD anchors
  (`blazepose_anchors`). Each row: face box (x, y, w, h) then 4 keypoints (x, y), in input
  pixels relative to the anchor centre (scale 224, no exp). Scores: sigmoid of the logit;
  overlapping faces (IoU > 0.3) merge by score-weighted averaging (MediaPipe's weighted NMS).
  The body box is MediaPipe's: the square centred on keypoint 0 (mid-hip) of side
  2 |kp1 - kp0| (kp1 lies on the circle around the whole body), grown by `growth`
  (MediaPipe: 1.25, and it rotates the square by the kp0 -> kp1 angle; ours stays upright).
  It finds one person near the camera; two people close together give one box.
  """

  name = "blazepose"
  default_threshold = BLAZEPOSE_THRESHOLD
  default_growth = BLAZEPOSE_GROWTH

  def __init__(self, model_path=None, **kwargs):
    super().__init__(model_path, **kwargs)
    it = self._it = _open_interpreter(self.name, model_path, self.num_threads)
    ins, outs = it.get_input_details(), it.get_output_details()
    expected = ("one float32 input [1, S, S, 3] and outputs [1, N, 12] (boxes, 4 keypoints) "
                "and [1, N, 1] (logits) over MediaPipe's N SSD anchors (S = 224: N = 2254)")
    shape = list(ins[0]["shape"]) if len(ins) == 1 else []
    if (len(ins) != 1 or len(shape) != 4 or shape[0] != 1 or shape[3] != 3
        or shape[1] != shape[2] or shape[1] < 32 or ins[0]["dtype"] != np.float32
        or len(outs) != 2):
      raise _not_kind(self.name, model_path, expected, it)
    self.size = int(shape[1])
    self.anchors = blazepose_anchors(self.size)
    n = len(self.anchors)
    reg = [d for d in outs if list(d["shape"]) == [1, n, 12]]
    logit = [d for d in outs if list(d["shape"]) == [1, n, 1]]
    if len(reg) != 1 or len(logit) != 1:
      raise _not_kind(self.name, model_path, expected, it)
    self._in, self._reg, self._logit = ins[0]["index"], reg[0]["index"], logit[0]["index"]

  def candidates(self, image):
    h, w = image.shape[:2]
    s = self.size
    scale = s / max(h, w)
    rw, rh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    ox, oy = (s - rw) // 2, (s - rh) // 2
    # Zero border in the [-1, 1] tensor (mid grey), as MediaPipe's: a black (-1) border found
    # 91% of the people where this finds 95% (LSPET val, threshold 0.5).
    canvas = np.full((s, s, 3), 127.5, np.float32)
    canvas[oy:oy + rh, ox:ox + rw] = _resize(image, rw, rh)
    canvas = canvas / 127.5 - 1.0
    self._it.set_tensor(self._in, canvas[None])
    _invoke(self._it, self.model_path)
    reg = self._it.get_tensor(self._reg)[0].astype(np.float64)
    logit = self._it.get_tensor(self._logit)[0, :, 0].astype(np.float64)
    scores = 1.0 / (1.0 + np.exp(-np.clip(logit, -_SCORE_CLIP, _SCORE_CLIP)))
    keep = scores >= _BLAZEPOSE_FLOOR
    reg, scores, anchors = reg[keep], scores[keep], self.anchors[keep]
    # Input pixels -> image pixels: x_img = (x_in - ox) / scale (and y with oy).
    offset = np.array([ox, oy], np.float64)
    centre = (reg[:, 0:2] + anchors * s - offset) / scale
    size = reg[:, 2:4] / scale
    kps = (reg[:, 4:12].reshape(-1, 4, 2) + anchors[:, None] * s - offset) / scale
    return Candidates(np.concatenate([centre, size], 1).astype(np.float32),
                      scores.astype(np.float32), kps.astype(np.float32))

  def select(self, cands, threshold):
    keep = cands.scores >= threshold
    faces, scores, kps = cands.boxes[keep], cands.scores[keep], cands.keypoints[keep]
    if not len(scores):
      return _empty()
    boxes, out_scores = [], []
    for group in nms(faces, scores, BLAZEPOSE_NMS_IOU):
      weights = scores[group].astype(np.float64)
      kp = (kps[group] * weights[:, None, None]).sum(0) / weights.sum()
      side = 2.0 * float(np.hypot(*(kp[1] - kp[0])))
      boxes.append([kp[0, 0], kp[0, 1], side, side])
      out_scores.append(scores[group[0]])
    boxes = np.asarray(boxes, np.float32)
    out_scores = np.asarray(out_scores, np.float32)
    # Faces that did not merge can still be one body (its face found twice): merge bodies too.
    best = np.asarray([g[0] for g in nms(boxes, out_scores, BLAZEPOSE_BODY_NMS_IOU)])
    return boxes[best], out_scores[best]


class MoveNetDetector(Detector):
  """MoveNet.MultiPose Lightning (movenet/multipose/lightning).

  Input [1, H, W, 3] int32 RGB 0-255, H and W multiples of 32: the image resized, aspect kept,
  to a longer side of `input_size` (default 256) and padded with black at the right and
  bottom to multiples of 32 (a model with a fixed input size is letterboxed into it the same
  way). Output [1, 6, 56] float32, per person 17 x (y, x, score) (COCO keypoints) then ymin,
  xmin, ymax, xmax, score, normalised to the input tensor. Up to 6 people; overlapping boxes
  (IoU > 0.5) are merged by hard NMS.

  input_size may be several sizes (e.g. (256, 512)): the model runs at each, and the people
  of all runs go through the one NMS, so a person found at two sizes is one box (the higher
  score). A small input finds people who fill the photo, a large one people small in it.
  """

  name = "movenet"
  default_threshold = MOVENET_THRESHOLD
  default_growth = MOVENET_GROWTH

  def __init__(self, model_path=None, input_size=None, **kwargs):
    super().__init__(model_path, **kwargs)
    it = self._it = _open_interpreter(self.name, model_path, self.num_threads)
    ins, outs = it.get_input_details(), it.get_output_details()
    expected = "one int32 input [1, H, W, 3] and one output [1, P, 56]"
    if (len(ins) != 1 or len(outs) != 1 or len(ins[0]["shape"]) != 4
        or ins[0]["shape"][0] != 1 or ins[0]["shape"][3] != 3
        or ins[0]["dtype"] != np.int32 or len(outs[0]["shape"]) != 3
        or outs[0]["shape"][0] != 1 or outs[0]["shape"][2] != 56):
      raise _not_kind(self.name, model_path, expected, it)
    sig = list(ins[0]["shape_signature"])
    self.dynamic = sig[1] == -1 and sig[2] == -1
    self.fixed = None if self.dynamic else (int(ins[0]["shape"][1]), int(ins[0]["shape"][2]))
    if self.fixed is not None and input_size is not None:
      raise ValueError(f"{_flag(model_path)} has a fixed input {self.fixed}: it takes no "
                       "input size")
    sizes = (MOVENET_INPUT_SIZE,) if input_size is None else tuple(
        int(v) for v in np.atleast_1d(input_size))
    if self.dynamic and (not sizes or any(v < 32 or v % 32 for v in sizes)):
      raise ValueError(f"the MoveNet input size must be a positive multiple of 32, got "
                       f"{','.join(map(str, sizes)) or 'none'}")
    self.input_sizes = sizes
    self.input_size = sizes[0]
    self._in, self._out = ins[0]["index"], outs[0]["index"]
    # Resizing the input costs ~40 ms (XNNPACK re-plans): one interpreter per input shape, the
    # few most recent kept (a folder of photos has a few shapes).
    self._by_shape = collections.OrderedDict()
    if not self.dynamic:
      self._by_shape[self.fixed] = it

  def _interpreter(self, shape):
    it = self._by_shape.get(shape)
    if it is None:
      from ai_edge_litert.interpreter import Interpreter
      it = self._it or Interpreter(model_path=self.model_path, num_threads=self.num_threads)
      self._it = None  # the first one serves the first shape
      it.resize_tensor_input(self._in, [1, shape[0], shape[1], 3])
      it.allocate_tensors()
      if len(self._by_shape) >= MOVENET_INTERPRETERS:
        self._by_shape.popitem(last=False)
    self._by_shape[shape] = it
    self._by_shape.move_to_end(shape)
    return it

  def candidates(self, image):
    if not self.dynamic or len(self.input_sizes) == 1:
      return self._candidates(image, self.input_size)
    parts = [self._candidates(image, size) for size in self.input_sizes]
    return Candidates(*(np.concatenate([getattr(c, f) for c in parts])
                        for f in Candidates._fields))

  def _candidates(self, image, input_size):
    h, w = image.shape[:2]
    if self.dynamic:
      scale = input_size / max(h, w)
      rw, rh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
      th, tw = -(-rh // 32) * 32, -(-rw // 32) * 32
    else:
      th, tw = self.fixed
      scale = min(th / h, tw / w)
      rw, rh = min(tw, max(1, int(round(w * scale)))), min(th, max(1, int(round(h * scale))))
    it = self._interpreter((th, tw))
    canvas = np.zeros((1, th, tw, 3), np.int32)
    canvas[0, :rh, :rw] = _resize(image, rw, rh)
    it.set_tensor(self._in, canvas)
    _invoke(it, self.model_path)
    out = it.get_tensor(self._out)[0].astype(np.float64)
    # Normalised to the input tensor -> image pixels: x_img = x * tw / scale.
    ymin, xmin, ymax, xmax = (out[:, 51:55] * [th, tw, th, tw] / scale).T
    xyxy = np.stack([xmin, ymin, xmax, ymax], 1)
    kps = out[:, :51].reshape(-1, 17, 3)[:, :, [1, 0]] * [tw, th] / scale
    return Candidates(centre_boxes(xyxy), out[:, 55].astype(np.float32),
                      kps.astype(np.float32))

  def select(self, cands, threshold):
    boxes, scores = _hard_select(cands.boxes, cands.scores, threshold, MOVENET_NMS_IOU)
    if len(self.input_sizes) > 1 and len(boxes) > 1:
      keep = _not_contained(boxes, MOVENET_CONTAINED)
      boxes, scores = boxes[keep], scores[keep]
    return boxes, scores


def _not_contained(boxes: np.ndarray, fraction: float) -> np.ndarray:
  """boxes (P, 4) (cx, cy, w, h), best first -> (P,) bool: False for a box whose intersection
  with a better kept box exceeds `fraction` of the smaller of the two areas."""
  area = np.prod(np.asarray(boxes, np.float64)[:, 2:], 1)
  inside = intersection(boxes, boxes) > fraction * np.minimum(area[:, None], area[None, :])
  keep = np.ones(len(boxes), bool)
  for i in range(1, len(boxes)):
    keep[i] = not inside[i, :i][keep[:i]].any()
  return keep


def _output_names(interpreter) -> Dict[int, str]:
  """Tensor index -> the output's name: its signature key where the model has a signature
  (a TF2 export: 'detection_scores'...), else the tensor's name
  ('TFLite_Detection_PostProcess:2')."""
  names = {d["index"]: d["name"] for d in interpreter.get_output_details()}
  try:
    for key in interpreter.get_signature_list():
      runner = interpreter.get_signature_runner(key)
      for out_name, d in runner.get_output_details().items():
        names[d["index"]] = out_name
      break
  except Exception:  # noqa: BLE001 - no signature: tensor names it is
    pass
  return names


class SsdDetector(Detector):
  """A TFLite detector with the TFLite_Detection_PostProcess outputs (TF and Coral model zoos).

  Input [1, H, W, 3]: the image resized to H x W (aspect not kept, as those models were
  trained); uint8 0-255, int8 pixel - 128, float32 RGB in [-1, 1] (the TF Object Detection
  API's SSD convention). Outputs, told apart by shape and name, not position: boxes
  [1, N, 4] (ymin, xmin, ymax, xmax) normalised to the image; classes [1, N]; scores [1, N];
  count [1]. Rows beyond count and classes other than `person_class` (COCO's person: 0 in
  the zoo's 0-based label maps) are dropped, then hard NMS at IoU 0.5.
  """

  name = "ssd"
  default_threshold = SSD_THRESHOLD
  default_growth = SSD_GROWTH

  def __init__(self, model_path=None, **kwargs):
    super().__init__(model_path, **kwargs)
    it = self._it = _open_interpreter(self.name, model_path, self.num_threads)
    ins, outs = it.get_input_details(), it.get_output_details()
    expected = ("one input [1, H, W, 3] (uint8, int8 or float32) and four outputs: boxes "
                "[1, N, 4], classes [1, N], scores [1, N], count [1]")
    if (len(ins) != 1 or len(ins[0]["shape"]) != 4 or ins[0]["shape"][0] != 1
        or ins[0]["shape"][3] != 3 or len(outs) != 4
        or ins[0]["dtype"] not in (np.uint8, np.int8, np.float32)):
      raise _not_kind(self.name, model_path, expected, it)
    self._in, self._dtype = ins[0]["index"], ins[0]["dtype"]
    self.height, self.width = int(ins[0]["shape"][1]), int(ins[0]["shape"][2])
    shapes = {d["index"]: [int(v) for v in d["shape"]] for d in outs}
    boxes = [i for i, s in shapes.items() if len(s) == 3 and s[0] == 1 and s[2] == 4]
    count = [i for i, s in shapes.items() if s in ([1], [])]
    if len(boxes) != 1 or len(count) != 1:
      raise _not_kind(self.name, model_path, expected, it)
    n = shapes[boxes[0]][1]
    pair = [i for i, s in shapes.items() if s == [1, n]]
    if len(pair) != 2:
      raise _not_kind(self.name, model_path, expected, it)
    self._boxes, self._count = boxes[0], count[0]
    names = _output_names(it)
    self._classes = self._scores = None
    for i in pair:
      name = names.get(i, "").lower()
      if "class" in name or name.endswith("postprocess:1"):
        self._classes = i
      elif "score" in name or name.endswith("postprocess:2"):
        self._scores = i
    if self._classes is None or self._scores is None or self._classes == self._scores:
      self._classes = self._scores = None
      self._pair = sorted(pair)  # told apart by value at run time (see _split)

  def _split(self):
    """(classes, scores) arrays; by name where the names told, else by value: classes are
    whole numbers, scores are not (ties: the zoo's order, classes first)."""
    if self._classes is not None:
      return self._it.get_tensor(self._classes)[0], self._it.get_tensor(self._scores)[0]
    a, b = (self._it.get_tensor(i)[0] for i in self._pair)
    a_int = np.all(a == np.round(a))
    b_int = np.all(b == np.round(b))
    return (b, a) if (b_int and not a_int) else (a, b)

  def candidates(self, image):
    h, w = image.shape[:2]
    x = _resize(image, self.width, self.height)[None]
    if self._dtype == np.float32:
      x = x.astype(np.float32) / 127.5 - 1.0
    elif self._dtype == np.int8:
      x = (x.astype(np.int16) - 128).astype(np.int8)
    self._it.set_tensor(self._in, x)
    _invoke(self._it, self.model_path)
    boxes = self._it.get_tensor(self._boxes)[0].astype(np.float64)
    classes, scores = self._split()
    count = int(np.clip(np.asarray(self._it.get_tensor(self._count)).reshape(-1)[0], 0,
                        len(boxes)))
    person = np.round(classes[:count]).astype(np.int64) == self.person_class
    ymin, xmin, ymax, xmax = (boxes[:count][person] * [h, w, h, w]).T
    return Candidates(centre_boxes(np.stack([xmin, ymin, xmax, ymax], 1)),
                      scores[:count][person].astype(np.float32))

  def select(self, cands, threshold):
    return _hard_select(cands.boxes, cands.scores, threshold, SSD_NMS_IOU)


# ------------------------------------------------------------------------------ registry

DETECTORS = {
    "hog": HogDetector,
    "blazepose": BlazePoseDetector,
    "movenet": MoveNetDetector,
    "ssd": SsdDetector,
}


def make_detector(name: str, model_path: Optional[str] = None,
                  score_threshold: Optional[float] = None, growth: Optional[float] = None,
                  person_class: int = 0, num_threads: int = 1,
                  input_size=None, square: bool = True) -> Detector:
  """The detector `name` (a key of DETECTORS). model_path: its .tflite (all but hog);
  score_threshold, growth: None = the detector's measured default; person_class: the person's
  class id (ssd only); input_size: MoveNet's longer input side (multiple of 32, movenet only),
  or a sequence of them (each run, one NMS over all);
  square: each box becomes the square of its longer side (Detector.square).
  ValueError for an unknown name (listing the known ones), a missing or unusable model file
  (naming it and --detector_model), or an option the detector does not take."""
  if name not in DETECTORS:
    raise ValueError(f"--detector={name!r} is not a known person detector; known: "
                     f"{', '.join(sorted(DETECTORS))}")
  kwargs = dict(score_threshold=score_threshold, growth=growth, person_class=person_class,
                num_threads=num_threads, square=square)
  if input_size is not None:
    if name != "movenet":
      raise ValueError(f"--detector={name} takes no input size (only movenet does)")
    kwargs["input_size"] = input_size
  return DETECTORS[name](model_path, **kwargs)


# --------------------------------------------------------------------------------- flags

def define_flags(flag_values=None) -> None:
  """The detector flags, one definition for the predict and evaluate commands."""
  from absl import flags
  fv = flag_values or flags.FLAGS
  flags.DEFINE_enum("detector", "hog", sorted(DETECTORS), "Person detector of --boxes=detect: "
                    "hog (OpenCV's, built in), blazepose (MediaPipe's pose_detection.tflite), "
                    "movenet (MoveNet MultiPose Lightning .tflite, several people), ssd (any "
                    "TFLite detector with the detection-postprocess outputs). The TFLite "
                    "files are yours: --detector_model (BUILD.md says where to get each).",
                    flag_values=fv)
  flags.DEFINE_string("detector_model", None, "The detector's .tflite file (all but hog). "
                      "Giving it makes --boxes=detect the default.", flag_values=fv)
  flags.DEFINE_float("detector_threshold", None, "Score a detection needs; default: the "
                     "detector's measured one (hog 0.3, blazepose 0.3, movenet 0.1, ssd 0.5).",
                     flag_values=fv)
  flags.DEFINE_float("detector_growth", None, "Detected boxes grow by this factor about their "
                     "centre; default: the detector's measured one (hog 1.4, blazepose 1.4, "
                     "movenet 1.2, ssd 1.2).", lower_bound=1.0, flag_values=fv)
  flags.DEFINE_bool("detector_square", True, "Make each detected box (after its growth) the "
                    "square of its longer side, about its centre: the cascade reads a box as a "
                    "square crop, so a tall box squeezes the person sideways. Measured with "
                    "MoveNet on LSPET val people pasted small into a 3x canvas (BUILD.md): PCP "
                    "+0.016, boxes holding every joint 58% -> 67%. --nodetector_square keeps "
                    "the detector's aspect.", flag_values=fv)
  flags.DEFINE_integer("detector_class", 0, "ssd: the person's class id (COCO person: 0).",
                       flag_values=fv)
  flags.DEFINE_list("detector_input_size", None, "movenet: the longer side of its input, a "
                    "multiple of 32 (default 256), or several (256,512: the model runs at "
                    "each and one NMS merges the people found; a small size finds people "
                    "who fill the photo, a large one people small in it; BUILD.md, \"People "
                    "small in the frame\": at 256,512 it found 99.3% of the 900 LSPET val "
                    "people in their photos and 98.2% pasted small into a 3x canvas, in about "
                    "5x the time of 256).", flag_values=fv)


def from_flags(flag_values=None, num_threads: int = 1) -> Detector:
  """make_detector from the flags of define_flags."""
  from absl import flags
  f = flag_values or flags.FLAGS
  sizes = None
  if f.detector_input_size:
    try:
      sizes = [int(v) for v in f.detector_input_size]
    except ValueError:
      raise ValueError(f"--detector_input_size={','.join(f.detector_input_size)}: expected "
                       "whole numbers of pixels, such as 256 or 256,512") from None
  return make_detector(f.detector, f.detector_model, f.detector_threshold, f.detector_growth,
                       person_class=f.detector_class, num_threads=num_threads,
                       input_size=sizes, square=f.detector_square)
