"""Poses from a trained model: `predict_split` runs a cascade over a prepared split (evaluation,
statistics); `python -m deeppose_tf.predict` runs any model on your own photos and videos
(see __main__.py)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from deeppose_tf import pipeline
from deeppose_tf.cascade import Cascade
from deeppose_tf.data import records
from deeppose_tf.progress import Progress


def predict_split(casc, data_dir: str, split: str, limit: Optional[int] = None,
                  batch_size: int = 16, keep_images: int = 0, desc: str = "predict",
                  box_fn: Optional[Callable[..., np.ndarray]] = None,
                  box_fn_reads_labels: bool = False) -> dict:
  """Cascade predictions on a split, in record order. casc: a Cascade, or a
  tflite_cascade.TFLiteCascade (the same results from a converted .tflite file).

  box_fn: None uses each record's initial box; else box_fn(image (h, w, 3) uint8) -> (4,)
  (cx, cy, w, h) replaces it (e.g. a person detector's box). box_fn_reads_labels: box_fn
  is called as box_fn(image, joints (K, 2), visible (K,)) with the record's annotation (an
  evaluation that picks which detected person is the annotated one: detect.match_person).
  Returns poses (N, S, K, 2), joints (N, K, 2), visible (N, K), boxes (N, 4) (image
  pixels, the boxes used), ids (N,), areas (N,) (the records' person areas, -1 where none
  is stored), and `images`: the first `keep_images` images (uint8,
  own sizes).
  """
  skeleton = casc.skeleton
  total = records.read_meta(data_dir, split)["num_records"]
  if limit:
    total = min(total, limit)
  if isinstance(casc, Cascade):
    fn = casc.traced_predict()

    def run(batch):
      return fn(batch["image"], batch["box"]).numpy()
  else:
    def run(batch):
      sizes = np.stack([batch["height"].numpy(), batch["width"].numpy()], -1)
      return casc.predict(batch["image"].numpy(), batch["box"].numpy(), sizes)
  parts, images = [], []
  bar = Progress(desc, total, unit="images")
  for batch in pipeline.eval_dataset(data_dir, split, skeleton, batch_size, limit):
    if box_fn is not None:
      batch = dict(batch)
      labels = ((batch["joints"].numpy(), batch["visible"].numpy()) if box_fn_reads_labels
                else None)
      batch["box"] = tf.constant(np.stack([
          box_fn(batch["image"][i, :int(h), :int(w)].numpy(),
                 *((labels[0][i], labels[1][i]) if labels else ()))
          for i, (h, w) in enumerate(zip(batch["height"].numpy(),
                                         batch["width"].numpy()))]).astype(np.float32))
    poses = run(batch)
    parts.append({"poses": poses, "joints": batch["joints"].numpy(),
                  "visible": batch["visible"].numpy(), "boxes": batch["box"].numpy(),
                  "ids": batch["image_id"].numpy(), "areas": batch["area"].numpy()})
    for i in range(len(poses)):
      if len(images) < keep_images:
        h, w = int(batch["height"][i]), int(batch["width"][i])
        images.append(batch["image"][i, :h, :w].numpy())
    bar.update(len(poses))
  bar.close()
  out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
  out["images"] = images
  return out
