"""The predict command's models as a user meets them: load time, the first prediction, and
batch-1 latency per person, for each model file or folder given (--models), and for the peer
models a user would run instead (FORMAT:PATH, FORMAT one of predict/peers.py's: blazepose,
movenet; each on the whole image letterboxed into its input).

Each latency is compared with the first model's, measured in the same run (the reference);
the image is a synthetic person of 320 x 240 px, the box the whole image.
"""

from __future__ import annotations

import io
import os
import time
from typing import List, Sequence

import numpy as np

from deeppose_tf.bench.peak import timeit
from deeppose_tf.bench.results import Ratio, Result


def _size_mb(path: str) -> float:
  if os.path.isfile(path):
    return os.path.getsize(path) / 1e6
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
             for f in files) / 1e6


def timing_image():
  """The image every model is timed on: a synthetic person, 320 x 240 px (uint8), and the
  whole image as its box (1, 4)."""
  from PIL import Image
  from deeppose_tf.data import synthetic
  from deeppose_tf.predict import detect
  rec = next(iter(synthetic.generate(1, seed=11)))
  image = np.asarray(Image.open(io.BytesIO(rec.image)).convert("RGB").resize((240, 320)))
  return image, detect.full_box(*image.shape[:2])


def _peer(path: str):
  """(format, file) of a FORMAT:PATH entry naming a peer format, else None."""
  from deeppose_tf.predict import peers
  fmt, sep, rest = path.partition(":")
  return (fmt, rest) if sep and fmt in peers.FORMATS else None


def _load(path: str, peer, num_threads: int):
  """The model of entry `path`; peer: its _peer (format, file), or None."""
  if peer:
    from deeppose_tf.predict import peers
    return peers.PeerModel(*peer, num_threads=num_threads)
  from deeppose_tf.predict import models
  return models.load(path, num_threads=num_threads)


def model_results(paths: Sequence[str], min_time: float, threads: Sequence[int] = (2,)
                  ) -> List[Result]:
  """Load time, first prediction and batch-1 latency of each model in `paths`. A .tflite
  file is loaded and timed once per interpreter thread count in `threads` (its JSON entry:
  latency_ms and x_reference at the first count, latency_ms_{N}t and x_reference_{N}t at
  every count); a workdir or SavedModel once, on TensorFlow's own threads. Each latency is
  compared with the first model's at the same thread count. A peer (FORMAT:PATH) is timed
  like a .tflite file."""
  image, box = timing_image()
  results, reference = [], {}
  threads = tuple(threads) or (2,)
  for i, path in enumerate(paths):
    peer = _peer(path)
    file = peer[1] if peer else path
    name = os.path.basename(os.path.normpath(file)) + (f" ({peer[0]})" if peer else "")
    entry = f"models.{i}"
    tflite = peer is not None or file.endswith(".tflite")  # a peer runs in LiteRT
    for j, count in enumerate(threads if tflite else (None,)):
      t0 = time.perf_counter()
      model = _load(path, peer, count or threads[0])
      load_s = time.perf_counter() - t0
      t0 = time.perf_counter()
      model.predict([image], box)
      first_s = time.perf_counter() - t0
      latency = timeit(lambda: model.predict([image], box), min_time) * 1e3
      suffix = f"_{count}t" if count else ""
      label = (f", {count} thread{'s' if count > 1 else ''}" if count
               else ", TensorFlow's threads")
      ratios = ()
      if count not in reference:
        reference[count] = (latency, name)
      else:
        ref_ms, ref_name = reference[count]
        ratios = (Ratio(latency / ref_ms, f"{ref_name} latency{label}",
                        "x_reference" if j == 0 else f"x_reference{suffix}"),)
      if j == 0:
        extra = {"path": path, "size_mb": round(_size_mb(file), 2),
                 "stages": model.num_stages, "threads": list(threads) if tflite else None}
        if count:  # the first count under its own key too, like the others
          extra[f"latency_ms{suffix}"] = latency
        results += [
            Result(f"model {name}: load", load_s, "s", entry, "load_s", extra=extra),
            Result("  first prediction", first_s, "s", entry, "first_prediction_s"),
            Result(f"  batch-1 latency per person{label}", latency, "ms", entry,
                   "latency_ms", ratios)]
      else:
        results.append(Result(f"  batch-1 latency per person{label}", latency, "ms", entry,
                              f"latency_ms{suffix}", ratios))
  return results
