"""A converted .tflite cascade behind the Keras cascade's predict interface, so that what
ships to phones is evaluated with the same code and metrics as what was trained.

  casc = TFLiteCascade("model.tflite", LSP14)
  poses = casc.predict(images, boxes)   # (B, S, K, 2) image pixels, like Cascade.predict

The .tflite model (export.convert_tflite) takes one fixed [1, H, W, 3] float32 canvas and a
[1, 4] box. Each image is placed on that canvas with fit_to_canvas (top-left, shrunk with
its aspect kept when it does not fit); its box goes in and the joints come out scaled by
the same factor. Runs in the LiteRT interpreter (ai_edge_litert).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import tensorflow as tf

from deeppose_tf.skeleton import Skeleton


def fit_to_canvas(image: np.ndarray, height: int, width: int) -> Tuple[np.ndarray, float]:
  """Places an (h, w, 3) image in the top-left corner of a zero (height, width, 3) float32
  canvas, shrinking it (bilinear, aspect kept) when it does not fit. Returns (canvas, scale):
  canvas pixels = image pixels * scale, so divide predicted joints by scale."""
  h, w = image.shape[:2]
  scale = min(1.0, height / h, width / w)
  img = tf.convert_to_tensor(image, tf.float32)
  if scale < 1.0:
    size = (max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale))))
    img = tf.image.resize(img, size, antialias=True)
  img = tf.image.pad_to_bounding_box(img, 0, 0, height, width)
  return img.numpy(), scale


class TFLiteCascade:
  """model_path: a .tflite file from `python -m deeppose_tf.export --format=tflite`."""

  def __init__(self, model_path: str, skeleton: Skeleton, num_threads: int = 2):
    try:
      from ai_edge_litert.interpreter import Interpreter
    except ImportError as err:
      raise ImportError("evaluating a .tflite model needs the LiteRT interpreter: "
                        "pip install 'deeppose_tf[tflite]'") from err
    self.skeleton = skeleton
    self.model_path = model_path
    self._runner = Interpreter(model_path=model_path, num_threads=num_threads
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

  def predict_one(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """image (h, w, 3) any real dtype, box (4,) image pixels -> (S, K, 2) image pixels."""
    canvas, scale = fit_to_canvas(np.asarray(image), self.height, self.width)
    box = np.asarray(box, np.float32).reshape(1, 4) * scale
    out = self._runner(image=canvas[None].astype(np.float32), box=box)
    return out["joints_per_stage"][0] / scale

  def predict(self, images, boxes, sizes=None) -> np.ndarray:
    """images (B, H, W, 3), boxes (B, 4) -> (B, S, K, 2), one interpreter call per image.
    sizes: (B, 2) true (h, w) of zero-padded images (eval batches), else the full array."""
    images = np.asarray(images)
    boxes = np.asarray(boxes, np.float32)
    out = []
    for i in range(len(images)):
      h, w = (int(v) for v in sizes[i]) if sizes is not None else images.shape[1:3]
      out.append(self.predict_one(images[i, :h, :w], boxes[i]))
    return np.stack(out)
