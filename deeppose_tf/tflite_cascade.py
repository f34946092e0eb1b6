"""A converted .tflite cascade behind the Keras cascade's predict interface, so that what
ships to phones is evaluated with the same code and metrics as what was trained.

  casc = TFLiteCascade("model.tflite", LSP14)
  poses = casc.predict(images, boxes)   # (B, S, K, 2) image pixels, like Cascade.predict

The .tflite model (export.convert_tflite) takes one fixed [1, H, W, 3] float32 canvas and a
[1, 4] box. Each image, or for an image larger than the canvas the box's neighbourhood
(person_region), is placed on that canvas with fit_to_canvas (top-left, shrunk with its
aspect kept when it does not fit); its box goes in and the joints come out scaled and
shifted back. Runs in the LiteRT interpreter (ai_edge_litert).

Beside MODEL.tflite, MODEL.json (the sidecar, read_sidecar) says what the file was made for:
`export --format=tflite` writes skeleton, stages, input_size, sigma, canvas and quantize; a
model card (the bundled model's) also name, version and card. The same export facts travel
inside the file too, as its flatbuffer metadata entry "deeppose" (read_embedded), so that a
.tflite file copied without its sidecar still names its skeleton; read_model_meta joins both.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Tuple

import numpy as np
import tensorflow as tf

from deeppose_tf import geometry
from deeppose_tf.skeleton import Skeleton


def fit_to_canvas(image: np.ndarray, height: int, width: int) -> Tuple[np.ndarray, float]:
  """Places an (h, w, 3) image in the top-left corner of a zero (height, width, 3) float32
  canvas, shrinking it (bilinear, aspect kept) when it does not fit. Returns (canvas, scale):
  canvas pixels = image pixels * scale, so divide predicted joints by scale.

  An image that fits is copied in numpy: TensorFlow's eager pad cost ~3 ms a call, a sixth
  of a stage-1 model's batch-1 latency (bench --only=model)."""
  h, w = image.shape[:2]
  scale = min(1.0, height / h, width / w)
  if scale < 1.0:
    size = (max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale))))
    image = tf.image.resize(tf.convert_to_tensor(image, tf.float32), size,
                            antialias=True).numpy()
  canvas = np.zeros((height, width, 3), np.float32)
  canvas[:image.shape[0], :image.shape[1]] = image
  return canvas, scale


# A box's neighbourhood that the cascade may read: its stage-1 crop is the box, the reframing
# pass reads the square 1.3x its pose (inside the box unless the pose leaves it) and the
# refinement stages read sigma x torso diameter around each joint. Twice the box's side,
# about its centre, holds them all.
REGION_GROW = 2.0


def person_region(box: np.ndarray, height: int, width: int, canvas_height: int,
                  canvas_width: int) -> Tuple[int, int, int, int]:
  """The part of an image (height x width) placed on the canvas for box (cx, cy, w, h),
  as integer pixel bounds (x0, y0, x1, y1): the whole image when it fits the canvas (as
  exported), else the box grown REGION_GROW times about its centre, within the image.

  Why: a photo larger than the canvas is shrunk to fit it, and a person small in a large
  photo (a phone's 4000 x 3000 frame on the 512 x 512 canvas: 1/8 of the resolution) would
  reach the network blurred. Cut to the person's neighbourhood first, the person is read at
  the photo's own resolution (up to the canvas)."""
  if height <= canvas_height and width <= canvas_width:
    return 0, 0, width, height
  cx, cy, w, h = (float(v) for v in np.asarray(box, np.float64).reshape(4))
  half_w, half_h = REGION_GROW * w / 2, REGION_GROW * h / 2
  x0 = int(np.clip(np.floor(cx - half_w), 0, width - 1))
  y0 = int(np.clip(np.floor(cy - half_h), 0, height - 1))
  x1 = int(np.clip(np.ceil(cx + half_w), x0 + 1, width))
  y1 = int(np.clip(np.ceil(cy + half_h), y0 + 1, height))
  return x0, y0, x1, y1


# The name of the .tflite metadata entry that holds the export's facts (JSON).
METADATA_NAME = "deeppose"


def read_embedded(model_path: str) -> dict:
  """The JSON object in the file's "deeppose" metadata entry ({} when it has none: files
  exported before it existed). ValueError naming the file when it is not a .tflite
  flatbuffer or the entry is not a JSON object."""
  from tensorflow.lite.python import schema_py_generated as schema
  with open(model_path, "rb") as f:
    data = f.read()
  try:
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
      entry = model.Metadata(i)
      if entry.Name() == METADATA_NAME.encode():
        raw = model.Buffers(entry.Buffer()).DataAsNumpy()
        meta = json.loads(bytes(raw).decode("utf-8"))
        break
    else:
      return {}
  except (IndexError, ValueError, TypeError, AttributeError, struct.error) as e:
    raise ValueError(f"{model_path}: not a readable .tflite file, or its {METADATA_NAME!r} "
                     f"metadata is damaged ({str(e)[:200]})") from None
  if not isinstance(meta, dict):
    raise ValueError(f"{model_path}: its {METADATA_NAME!r} metadata is not a JSON object")
  return meta


def read_model_meta(model_path: str) -> dict:
  """What is known about a .tflite file: its embedded metadata, with its sidecar's keys over
  them (a model card's name, version and card live in the sidecar)."""
  return {**read_embedded(model_path), **read_sidecar(model_path)}


def sidecar_path(model_path: str) -> str:
  """MODEL.json for MODEL.tflite."""
  return os.path.splitext(model_path)[0] + ".json"


def read_sidecar(model_path: str) -> dict:
  """The sidecar of `model_path` as a dict ({} when there is none); ValueError naming the
  file when it is not a JSON object."""
  path = sidecar_path(model_path)
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      meta = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} (the sidecar of {model_path}) is damaged: {e}") from None
  if not isinstance(meta, dict):
    raise ValueError(f"{path} (the sidecar of {model_path}) is damaged: expected a JSON "
                     f"object, got {type(meta).__name__}")
  return meta


class TFLiteCascade:
  """model_path: a .tflite file from `python -m deeppose_tf.export --format=tflite`.

  xnnpack: run on LiteRT's default XNNPACK delegate (fast; what phones and the benchmarks
  run). False runs LiteRT's builtin kernels instead: slower, but float32 arithmetic as TF's,
  which a check of weights against TF wants. XNNPACK picks its kernels per CPU, and on a CI
  machine near-tie heatmap peaks of a barely trained cascade moved with them (the cause on
  that CPU was not seen here; this path removes the delegate from the comparison).
  """

  def __init__(self, model_path: str, skeleton: Skeleton, num_threads: int = 2,
               xnnpack: bool = True):
    try:
      from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as err:
      raise ImportError("evaluating a .tflite model needs the LiteRT interpreter: "
                        "pip install 'deeppose_tf[tflite]'") from err
    self.skeleton = skeleton
    self.model_path = model_path
    resolver = (OpResolverType.AUTO if xnnpack
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    self._runner = Interpreter(model_path=model_path, num_threads=num_threads,
                               experimental_op_resolver_type=resolver
                               ).get_signature_runner("serving_default")
    inputs = self._runner.get_input_details()
    outputs = self._runner.get_output_details()
    if set(inputs) != {"image", "box"} or "joints_per_stage" not in outputs:
      raise ValueError(f"{model_path} is not a deeppose_tf cascade: inputs {sorted(inputs)}, "
                       f"outputs {sorted(outputs)} (expected image, box -> joints_per_stage)")
    _, self.height, self.width, _ = (int(d) for d in inputs["image"]["shape"])
    _, self.num_stages, k, _ = (int(d) for d in outputs["joints_per_stage"]["shape"])
    if k != skeleton.num_joints:
      raise ValueError(f"{model_path} predicts {k} joints; skeleton {skeleton.name} has "
                       f"{skeleton.num_joints}")

  def predict_one(self, image: np.ndarray, box: np.ndarray, index: int = 0) -> np.ndarray:
    """image (h, w, 3) any real dtype, box (4,) image pixels -> (S, K, 2) image pixels.

    A box with w <= 0 or h <= 0 means the whole image (as the SavedModel's). The interpreter
    checks nothing, so the inputs are checked here first, as the SavedModel checks them:
    ValueError naming entry `index` for a wrong shape or size, non-finite pixels, or a box
    that is not finite, beyond +-MAX_BOX_COORD, or entirely outside its image.
    """
    image, box = check_inputs(image, box, index)
    x0, y0, x1, y1 = person_region(box, image.shape[0], image.shape[1], self.height,
                                   self.width)
    canvas, scale = fit_to_canvas(image[y0:y1, x0:x1], self.height, self.width)
    box = (box - np.array([x0, y0, 0, 0], np.float32)).reshape(1, 4) * scale
    out = self._runner(image=canvas[None], box=box.astype(np.float32))
    return out["joints_per_stage"][0] / scale + np.array([x0, y0], np.float32)

  def predict(self, images, boxes, sizes=None) -> np.ndarray:
    """images (B, H, W, 3), boxes (B, 4) -> (B, S, K, 2), one interpreter call per image.
    sizes: (B, 2) true (h, w) of zero-padded images (eval batches), else the full array."""
    images = np.asarray(images)
    boxes = np.asarray(boxes)
    if images.ndim != 4 or boxes.ndim != 2 or len(boxes) != len(images):
      raise ValueError(f"expected images (B, H, W, 3) and boxes (B, 4); got {images.shape} "
                       f"and {boxes.shape}")
    out = []
    for i in range(len(images)):
      h, w = (int(v) for v in sizes[i]) if sizes is not None else images.shape[1:3]
      out.append(self.predict_one(images[i, :h, :w], boxes[i], index=i))
    return np.stack(out)


def box_rules(box: np.ndarray, height: int, width: int) -> Tuple[bool, np.ndarray, bool]:
  """geometry's serving rules (box_in_range, empty_to_full_image, box_overlaps_image) for one
  float64 box (4,) in an image of height x width, in numpy: (in range, the box with w or
  h <= 0 replaced by the whole image, overlaps the image). The TF functions cost ~7 ms a
  request eagerly and a ~0.2 s trace as a tf.function; tests/test_export.py checks that
  both give the same verdicts and boxes on the edge cases."""
  box = np.asarray(box, np.float64).reshape(4)
  if not (np.isfinite(box).all() and (np.abs(box) <= geometry.MAX_BOX_COORD).all()):
    return False, box, False
  if not (box[2] > 0 and box[3] > 0):  # the whole image, in float32 as full_image_box
    box = np.array([width / 2.0, height / 2.0, width, height], np.float32).astype(np.float64)
  b = box.astype(np.float32)
  h, w = np.float32(height), np.float32(width)
  inside = (abs(b[0] - w / 2) < (b[2] + w) / 2) and (abs(b[1] - h / 2) < (b[3] + h) / 2)
  return True, box, bool(inside)


def check_inputs(image, box, index: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """The TFLite cascade's request checks, the same as the SavedModel's (export/inputs.py):
  the box rules are geometry's (box_in_range, empty_to_full_image), here in numpy
  (box_rules, checked against them by a test).

  Returns (image, box float32 (4,) with w, h <= 0 replaced by the full image). ValueError
  names entry `index` and the problem.
  """
  from deeppose_tf.data import records
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f"image {index} has shape {image.shape}; expected (height, width, 3)")
  h, w = image.shape[:2]
  if h < 1 or w < 1 or h * w > records.MAX_IMAGE_PIXELS:
    raise ValueError(f"image {index} is {w}x{h} (width x height); expected a positive size "
                     f"of at most {records.MAX_IMAGE_PIXELS} pixels")
  if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
    raise ValueError(f"image {index} has dtype {image.dtype}; expected integer or float pixels")
  if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
    raise ValueError(f"image {index} has non-finite pixels (NaN or inf)")
  try:
    box = np.asarray(box, np.float64).reshape(4)
  except (TypeError, ValueError):
    raise ValueError(f"box {index} is {np.shape(box)}; expected (cx, cy, w, h)") from None
  ok, box, inside = box_rules(box, h, w)
  if not ok:
    raise ValueError(f"box {index} = {box.tolist()} is not a box: (cx, cy, w, h) must be "
                     f"finite image pixels within +-{geometry.MAX_BOX_COORD:g}")
  if not inside:
    raise ValueError(f"box {index} = {box.tolist()} lies entirely outside its {w}x{h} "
                     "(width x height) image; a pose there would be made up")
  return image, box.astype(np.float32)
