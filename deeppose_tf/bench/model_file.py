"""The predict command's models as a user meets them: load time, the first prediction, and
batch-1 latency per person, for each model file or folder given (--models).

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


def model_results(paths: Sequence[str], min_time: float, num_threads: int = 2
                  ) -> List[Result]:
  from PIL import Image
  from deeppose_tf.data import synthetic
  from deeppose_tf.predict import detect, models
  rec = next(iter(synthetic.generate(1, seed=11)))
  image = np.asarray(Image.open(io.BytesIO(rec.image)).convert("RGB").resize((240, 320)))
  box = detect.full_box(*image.shape[:2])
  results, reference = [], None
  for i, path in enumerate(paths):
    name = os.path.basename(os.path.normpath(path))
    entry = f"models.{i}"
    t0 = time.perf_counter()
    model = models.load(path, num_threads=num_threads)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.predict([image], box)
    first_s = time.perf_counter() - t0
    latency = timeit(lambda: model.predict([image], box), min_time) * 1e3
    ratios = ()
    if reference is None:
      reference = (latency, name)
    else:
      ratios = (Ratio(latency / reference[0], f"{reference[1]} latency", "x_reference"),)
    extra = {"path": path, "size_mb": round(_size_mb(path), 2), "stages": model.num_stages}
    results += [
        Result(f"model {name}: load", load_s, "s", entry, "load_s", extra=extra),
        Result("  first prediction", first_s, "s", entry, "first_prediction_s"),
        Result("  batch-1 latency per person", latency, "ms", entry, "latency_ms", ratios)]
  return results
