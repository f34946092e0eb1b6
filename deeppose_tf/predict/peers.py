"""Peer pose models, the ones a user would pick instead of ours, behind the PoseModel interface,
so that `python -m deeppose_tf.compare --peers=...` scores and times them beside our models.

  peer = PeerModel("blazepose", "pose_landmark_full.tflite")
  poses = peer.predict(images, boxes)   # (N, 1, 14, 2) image pixels on the LSP14 skeleton

  blazepose  MediaPipe BlazePose landmark models (pose_landmark_lite/full/heavy.tflite;
             npm @mediapipe/pose): 33 landmarks.
  movenet    MoveNet SinglePose Lightning (a fixed 192 x 192 uint8 input) and MoveNet
             MultiPose Lightning (a dynamic int32 input; the best-scoring person of its 6):
             17 COCO keypoints.

The package ships no third-party weights: the files are the user's. Each format is data
(FORMATS): the variants a file may be (told apart by its inputs' and outputs' shapes and
types), each with its input's type and size and how to decode its output; and the format's
joint mapping onto LSP14 by joint name. LSP14's neck is the mean of the shoulders and its
head top lies beyond the nose, away from the neck: nose + 0.8 (nose - neck) (no peer has
either). Left and right are the person's own in both peers, as in LSP.

What a peer sees: the region of the person box (cx, cy, w, h) in whole pixels (zeros outside
the image), letterboxed into its input (aspect kept, centred, black border). With the whole
image as the box that is the whole photo letterboxed, without the peer's own detector ROI
(MediaPipe crops BlazePose's input to its detector's rotated box; MoveNet's demo re-crops
around the previous frame's pose). MoveNet MultiPose's input has no fixed size: the region's
longer side becomes 256 px and each side is rounded up to a multiple of 32.

Every model runs in the LiteRT interpreter, opened with predict.detectors' helpers. A file
that LiteRT cannot read, or that is no variant of its format, is a ValueError naming it and
what was expected; an unknown format is one listing the formats.
"""

from __future__ import annotations

import os
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from deeppose_tf.predict import detectors
from deeppose_tf.predict.models import PoseModel
from deeppose_tf.skeleton import LSP14

# LSP14's joints that no peer has, from the ones it has (the same rule for every format).
NECK_FROM = ("l_shoulder", "r_shoulder")  # neck = the mean of these LSP14 joints
HEAD_TOP_FROM_NOSE = 0.8  # head top = nose + 0.8 x (nose - neck)

_COCO_TO_LSP14 = {  # COCO keypoint order: nose, eyes, ears, shoulders, elbows, wrists, hips,
    # knees, ankles, each left before right
    "r_ankle": 16, "r_knee": 14, "r_hip": 12, "l_hip": 11, "l_knee": 13, "l_ankle": 15,
    "r_wrist": 10, "r_elbow": 8, "r_shoulder": 6, "l_shoulder": 5, "l_elbow": 7, "l_wrist": 9,
}
_MOVENET_KEYPOINT = {"values": 3, "x": 1, "y": 0}  # (y, x, score), normalised to the input

# Each format: what it is; its variants, each with
#   input:  dtype; shape [1, H, W, 3] (None: any); size "fixed" (the file's H, W) or
#           {"longer_side", "multiple"} (a dynamic input, resized per image); scale (the
#           input is pixel * scale, RGB)
#   output: the shape of the one output that holds the keypoints (None: any); among the
#           file's outputs, exactly one must have it
#   people: None (one person) or {"row": values per person, "keypoints": how many of them
#           are keypoint values, "score": the index of the person's score}
#   keypoint: values per keypoint and the indices of x and y among them
#   units: "pixels" (of the input tensor) or "normalised" (x / W, y / H of the input)
#   expected: the variant in words, for a refused file's message;
# and the joint mapping: LSP14 joint name -> the peer's keypoint index, and its nose.
FORMATS: Dict[str, dict] = {
    "blazepose": {
        "what": "MediaPipe BlazePose landmark model (pose_landmark_lite/full/heavy.tflite), "
                "33 landmarks",
        "variants": {
            "landmarks": {
                "input": {"dtype": "float32", "shape": [1, None, None, 3], "size": "fixed",
                          "scale": 1.0 / 255.0},
                "output": {"shape": [1, 195]},
                "people": None,
                "keypoint": {"values": 5, "x": 0, "y": 1},  # x, y, z, visibility, presence
                "units": "pixels",
                "expected": "one float32 input [1, S, S, 3] (RGB in [0, 1]) and an output "
                            "[1, 195] (39 x (x, y, z, visibility, presence) in input pixels)",
            },
        },
        "joints": {"r_ankle": 28, "r_knee": 26, "r_hip": 24, "l_hip": 23, "l_knee": 25,
                   "l_ankle": 27, "r_wrist": 16, "r_elbow": 14, "r_shoulder": 12,
                   "l_shoulder": 11, "l_elbow": 13, "l_wrist": 15},
        "nose": 0,
    },
    "movenet": {
        "what": "MoveNet Lightning, SinglePose (fixed uint8 input) or MultiPose (dynamic int32 "
                "input, up to 6 people), 17 COCO keypoints",
        "variants": {
            "singlepose": {
                "input": {"dtype": "uint8", "shape": [1, None, None, 3], "size": "fixed",
                          "scale": 1.0},
                "output": {"shape": [1, 1, 17, 3]},
                "people": None,
                "keypoint": _MOVENET_KEYPOINT,
                "units": "normalised",
                "expected": "SinglePose: one uint8 input [1, H, W, 3] (RGB 0-255) and an "
                            "output [1, 1, 17, 3] (17 x (y, x, score), normalised)",
            },
            "multipose": {
                "input": {"dtype": "int32", "shape": [1, None, None, 3],
                          "size": {"longer_side": 256, "multiple": 32}, "scale": 1.0},
                "output": {"shape": [1, None, 56]},
                "people": {"row": 56, "keypoints": 51, "score": 55},
                "keypoint": _MOVENET_KEYPOINT,
                "units": "normalised",
                "expected": "MultiPose: one int32 input [1, -1, -1, 3] (RGB 0-255, any size) "
                            "and an output [1, P, 56] (per person 17 x (y, x, score), box, "
                            "score)",
            },
        },
        "joints": _COCO_TO_LSP14,
        "nose": 0,
    },
}


def _flag(fmt: str, path: str) -> str:
  return f"--peers={fmt}:{path}"


def check_format(fmt: str) -> dict:
  """FORMATS[fmt]; ValueError listing the known formats otherwise."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown peer format {fmt!r}; known formats: {', '.join(sorted(FORMATS))} "
                     "(--peers=FORMAT:PATH[:LABEL])")
  return FORMATS[fmt]


def parse_peers(specs: Sequence[str]) -> list:
  """["FORMAT:PATH[:LABEL]", ...] -> [(format, path, label)]. The label is what follows the
  path's last ':' (default: the file's name without .tflite). ValueError for an entry
  without a path or with an unknown format."""
  out = []
  for spec in specs:
    fmt, sep, rest = spec.partition(":")
    if not sep or not rest:
      raise ValueError(f"--peers entry {spec!r} is not FORMAT:PATH[:LABEL] (formats: "
                       f"{', '.join(sorted(FORMATS))})")
    check_format(fmt)
    path, label = rest, None
    if ":" in rest:
      path, _, label = rest.rpartition(":")
    if not label:
      label = os.path.splitext(os.path.basename(path))[0]
    out.append((fmt, path, label))
  return out


# -------------------------------------------------------------------------- the geometry

class Letterbox(NamedTuple):
  """Where a person box's region goes in a peer's input.

  The region: image columns [x0, x0 + cw), rows [y0, y0 + ch) (whole pixels, the box rounded;
  it may reach outside the image). It is resized to rw x rh (aspect kept) and placed at
  (ox, oy) of a height x width input, centred. Coordinates are continuous, pixel i spanning
  [i, i + 1) in the image and in the input alike (the package's frame)."""
  x0: int
  y0: int
  cw: int
  ch: int
  ox: int
  oy: int
  rw: int
  rh: int
  height: int
  width: int

  def to_image(self, xy) -> np.ndarray:
    """(..., 2) input pixels -> image pixels."""
    xy = np.asarray(xy, np.float64)
    return ((xy - [self.ox, self.oy]) * [self.cw / self.rw, self.ch / self.rh]
            + [self.x0, self.y0])

  def to_input(self, xy) -> np.ndarray:
    """(..., 2) image pixels -> input pixels (the inverse of to_image)."""
    xy = np.asarray(xy, np.float64)
    return ((xy - [self.x0, self.y0]) * [self.rw / self.cw, self.rh / self.ch]
            + [self.ox, self.oy])


def region(box) -> Tuple[int, int, int, int]:
  """A box (cx, cy, w, h) -> its region in whole pixels (x0, y0, cw, ch), cw, ch >= 1.
  ValueError for a box that is not 4 finite numbers with w, h > 0."""
  box = np.asarray(box, np.float64).reshape(-1)
  if box.shape != (4,) or not np.isfinite(box).all() or (box[2:] <= 0).any():
    raise ValueError(f"a person box is (cx, cy, w, h), finite with w, h > 0; got "
                     f"{box.tolist()}")
  cx, cy, w, h = box
  return (int(np.floor(cx - w / 2 + 0.5)), int(np.floor(cy - h / 2 + 0.5)),
          max(1, int(round(w))), max(1, int(round(h))))


def dynamic_size(cw: int, ch: int, longer_side: int, multiple: int) -> Tuple[int, int]:
  """(height, width) of a dynamic input for a cw x ch region: its longer side `longer_side`,
  each side rounded up to a multiple of `multiple`."""
  scale = longer_side / max(cw, ch)
  rw, rh = max(1, int(round(cw * scale))), max(1, int(round(ch * scale)))
  return -(-rh // multiple) * multiple, -(-rw // multiple) * multiple


def letterbox(box, height: int, width: int) -> Letterbox:
  """The Letterbox of box (cx, cy, w, h) image pixels in a height x width input."""
  x0, y0, cw, ch = region(box)
  scale = min(height / ch, width / cw)
  rw = min(width, max(1, int(round(cw * scale))))
  rh = min(height, max(1, int(round(ch * scale))))
  return Letterbox(x0, y0, cw, ch, (width - rw) // 2, (height - rh) // 2, rw, rh,
                   int(height), int(width))


def fill(image: np.ndarray, lb: Letterbox) -> np.ndarray:
  """The peer's input pixels: uint8 (height, width, 3), the region of `image` (zeros outside
  it) resized (bilinear, PIL) into its place, black around it."""
  h, w = image.shape[:2]
  crop = np.zeros((lb.ch, lb.cw, 3), np.uint8)
  ix0, iy0 = max(lb.x0, 0), max(lb.y0, 0)
  ix1, iy1 = min(lb.x0 + lb.cw, w), min(lb.y0 + lb.ch, h)
  if ix1 > ix0 and iy1 > iy0:
    crop[iy0 - lb.y0:iy1 - lb.y0, ix0 - lb.x0:ix1 - lb.x0] = image[iy0:iy1, ix0:ix1]
  canvas = np.zeros((lb.height, lb.width, 3), np.uint8)
  canvas[lb.oy:lb.oy + lb.rh, lb.ox:lb.ox + lb.rw] = detectors._resize(crop, lb.rw, lb.rh)
  return canvas


# --------------------------------------------------------------------- the joint mapping

def to_lsp14(keypoints, fmt: str) -> np.ndarray:
  """A peer's keypoints (..., P, 2) (x, y) -> LSP14 joints (..., 14, 2), by FORMATS[fmt]'s
  mapping: the mapped joints copied, neck = the mean of the shoulders, head top = nose +
  0.8 (nose - neck)."""
  spec = check_format(fmt)
  kp = np.asarray(keypoints, np.float64)
  out = np.full(kp.shape[:-2] + (LSP14.num_joints, 2), np.nan)
  for name, i in spec["joints"].items():
    out[..., LSP14.index(name), :] = kp[..., i, :]
  neck = np.mean([out[..., LSP14.index(n), :] for n in NECK_FROM], axis=0)
  nose = kp[..., spec["nose"], :]
  out[..., LSP14.index("neck"), :] = neck
  out[..., LSP14.index("head_top"), :] = nose + HEAD_TOP_FROM_NOSE * (nose - neck)
  return out


def decode(output: np.ndarray, variant: dict, lb: Letterbox) -> Tuple[np.ndarray, float]:
  """The keypoint output tensor (batch 1) -> (keypoints (P, 2) image pixels, the person's
  score or NaN): the best-scoring person of a multi-person output."""
  out = np.asarray(output, np.float64).reshape(-1)
  score = float("nan")
  people = variant["people"]
  if people is not None:
    rows = out.reshape(-1, people["row"])
    best = int(np.argmax(np.where(np.isfinite(rows[:, people["score"]]),
                                  rows[:, people["score"]], -np.inf)))
    score = float(rows[best, people["score"]])
    out = rows[best, :people["keypoints"]]
  k = variant["keypoint"]
  per = out[:len(out) // k["values"] * k["values"]].reshape(-1, k["values"])
  xy = per[:, [k["x"], k["y"]]]
  if variant["units"] == "normalised":
    xy = xy * [lb.width, lb.height]
  return lb.to_image(xy), score


# ---------------------------------------------------------------------------- the model

def _shape_matches(shape, spec) -> bool:
  return len(shape) == len(spec) and all(s is None or int(v) == s
                                         for v, s in zip(shape, spec))


def _match(variant: dict, ins, outs) -> Optional[int]:
  """The index of the keypoint output when the interpreter's inputs and outputs are
  `variant`'s, else None."""
  spec = variant["input"]
  if len(ins) != 1 or np.dtype(ins[0]["dtype"]) != np.dtype(spec["dtype"]):
    return None
  sig = [int(v) for v in ins[0]["shape_signature"]]
  if not _shape_matches(ins[0]["shape"], spec["shape"]):
    return None
  dynamic = len(sig) == 4 and sig[1] == -1 and sig[2] == -1
  if dynamic != (spec["size"] != "fixed") or (not dynamic and -1 in sig):
    return None
  hits = [d["index"] for d in outs
          if _shape_matches(d["shape"], variant["output"]["shape"])]
  return hits[0] if len(hits) == 1 else None


def _renamed(error: ValueError, fmt: str, path: str) -> ValueError:
  """detectors' helpers name --detector_model and "detector"; a peer is --peers' model."""
  text = str(error).replace(detectors._flag(path), _flag(fmt, path))
  return ValueError(text.replace(f"is not a {fmt} detector", f"is not a {fmt} pose model"))


class PeerModel(PoseModel):
  """A peer pose model file of format `fmt` (a key of FORMATS); see the module docstring.

  predict(images, boxes): list of (h, w, 3) uint8 RGB, (N, 4) (cx, cy, w, h) image pixels ->
  (N, 1, 14, 2) float32 image pixels on LSP14. keypoints(image, box) -> the peer's own
  keypoints (P, 2) image pixels and its person score (NaN for single-person variants)."""

  num_stages = 1
  skeleton = LSP14

  def __init__(self, fmt: str, path: str, num_threads: int = 1, label: Optional[str] = None):
    spec = check_format(fmt)
    if not path or not os.path.isfile(path):
      raise ValueError(f"{_flag(fmt, path)}: no such file")
    try:
      it = detectors._open_interpreter(fmt, path, num_threads)
    except ValueError as e:
      raise _renamed(e, fmt, path) from None
    ins, outs = it.get_input_details(), it.get_output_details()
    found = [(name, v, _match(v, ins, outs)) for name, v in spec["variants"].items()]
    found = [f for f in found if f[2] is not None]
    if len(found) != 1:
      expected = " or ".join(v["expected"] for v in spec["variants"].values())
      raise _renamed(detectors._not_kind(fmt, path, expected, it), fmt, path)
    self.format, self.path, self.num_threads = fmt, path, int(num_threads)
    self.variant_name, self.variant, self._out = found[0]
    self._in = ins[0]["index"]
    self.name = label or os.path.splitext(os.path.basename(path))[0]
    self.version = f"{fmt} {self.variant_name}"
    self._dtype = np.dtype(self.variant["input"]["dtype"])
    size = self.variant["input"]["size"]
    self._fixed = (int(ins[0]["shape"][1]), int(ins[0]["shape"][2])) if size == "fixed" else None
    # A dynamic input: one interpreter per input shape (resizing one costs ~40 ms; a folder of
    # photos has few shapes: at most 15 at MultiPose's 256 / 32).
    self._by_shape = {self._fixed: it} if self._fixed else {}
    self._first = None if self._fixed else it

  def _interpreter(self, shape: Tuple[int, int]):
    it = self._by_shape.get(shape)
    if it is None:
      if self._first is not None:
        it, self._first = self._first, None
      else:
        from ai_edge_litert.interpreter import Interpreter
        it = Interpreter(model_path=self.path, num_threads=self.num_threads)
      it.resize_tensor_input(self._in, [1, shape[0], shape[1], 3])
      it.allocate_tensors()
      self._by_shape[shape] = it
    return it

  def input_size(self, box) -> Tuple[int, int]:
    """(height, width) of the input tensor for a person box."""
    if self._fixed:
      return self._fixed
    _, _, cw, ch = region(box)
    size = self.variant["input"]["size"]
    return dynamic_size(cw, ch, size["longer_side"], size["multiple"])

  def keypoints(self, image: np.ndarray, box) -> Tuple[np.ndarray, float]:
    image = detectors._check_image(image)
    height, width = self.input_size(box)
    lb = letterbox(box, height, width)
    x = fill(image, lb)[None].astype(np.float32) * self.variant["input"]["scale"]
    it = self._interpreter((height, width))
    it.set_tensor(self._in, x.astype(self._dtype))
    try:
      detectors._invoke(it, self.path)
    except ValueError as e:
      raise _renamed(e, self.format, self.path) from None
    return decode(it.get_tensor(self._out), self.variant, lb)

  def predict(self, images, boxes) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) != len(images):
      raise ValueError(f"{len(images)} images but {len(boxes)} boxes: one box per image")
    out = np.zeros((len(images), 1, LSP14.num_joints, 2), np.float32)
    for i, (image, box) in enumerate(zip(images, boxes)):
      out[i, 0] = to_lsp14(self.keypoints(image, box)[0], self.format)
    return out
