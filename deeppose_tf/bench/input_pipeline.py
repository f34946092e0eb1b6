"""tf.data throughput of the stage-1 and refinement training pipelines alone, in the steady
state after the first epoch (the in-memory image cache full), against the train step."""

from __future__ import annotations

import time
from typing import List, Optional

from deeppose_tf.bench import inputs
from deeppose_tf.bench.results import Ratio, Result


def warm_cache(it, data_dir: str, batch_size: int, refine=None) -> None:
  """Reads the iterator `it` until its in-memory image cache is complete (one pass over
  the split, plus the shuffle buffer), so timings see training's steady state after the
  first epoch rather than the one-off JPEG decoding of the first."""
  from deeppose_tf.data import records
  n = records.read_meta(data_dir, "train")["num_records"] + 2048
  per_batch = batch_size if refine is None else batch_size / refine.draws
  for _ in range(int(n / per_batch) + 2):
    next(it)


def throughput(data_dir: str, skeleton, input_size: int, batch_size: int, refine=None,
               batches: int = 30, augment: str = "recipe",
               cache_max_side: Optional[int] = 320) -> float:
  """Examples (images for stage 1, crops for refinement, refine: a config.RefineConfig) per
  second out of tf.data (after the in-memory cache is filled when cache_max_side is not
  None)."""
  from deeppose_tf import pipeline
  ds = pipeline.train_dataset(data_dir, "train", skeleton, input_size, batch_size, seed=0,
                              refine=refine, augment=inputs.augment_config(augment),
                              cache_max_side=cache_max_side)
  it = iter(ds)
  if cache_max_side is not None:
    warm_cache(it, data_dir, batch_size, refine)
  for _ in range(3):
    next(it)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch_size / (time.perf_counter() - t)


def pipeline_results(data_dir: str, skeleton, input_size: int, batch_size: int, refine,
                     augment: str = "recipe", cache_max_side: Optional[int] = 320,
                     train_rate: Optional[float] = None) -> List[Result]:
  """Stage-1 images and refinement crops per second, each against the fp32 train step's
  images per second when it was measured in the same run (train_rate)."""
  out = []
  for name, r, unit, key, ratio_key in (
      ("pipeline stage 1", None, "img/s", "stage1_images_per_s", "stage1_over_train_step"),
      (f"pipeline refine ({refine.draws} draws)", refine, "crops/s", "refine_crops_per_s",
       "refine_over_train_step")):
    rate = throughput(data_dir, skeleton, input_size, batch_size, r, augment=augment,
                      cache_max_side=cache_max_side)
    ratios = (Ratio(rate / train_rate, "fp32 train step", ratio_key),) if train_rate else ()
    out.append(Result(name, rate, unit, "pipeline", key, ratios, {"draws": refine.draws}))
  return out
