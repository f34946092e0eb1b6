"""What the pipeline and e2e sections feed: the training data (given TFRecords, the first
training images of a source dataset, or a synthetic set), its augmentation and the
refinement sampling."""

from __future__ import annotations

import itertools
import os
from typing import Tuple

import numpy as np

from deeppose_tf.bench.options import AUGMENTS


def augment_config(name: str):
  """pipeline.RECIPE_AUGMENT (the training flags' defaults) or the paper's light jitter."""
  from deeppose_tf import pipeline
  if name == "recipe":
    return pipeline.RECIPE_AUGMENT
  if name == "paper":
    return pipeline.AugmentConfig()
  raise ValueError(f"--augment={name}: allowed values are {', '.join(AUGMENTS)}")


def refine_config(draws: int, num_joints: int = 14):
  """Refinement crops around joints displaced by N(0, 0.2 I) joint-box sides, sigma 2."""
  from deeppose_tf.config import RefineConfig
  return RefineConfig(sigma=2.0, mean=np.zeros((num_joints, 2)),
                      chol=np.tile(np.eye(2) * 0.2, (num_joints, 1, 1)), draws=draws)


def training_data(tmp: str, data_dir: str = None, source_dir: str = None,
                  dataset: str = "lspet", num_train: int = 1000) -> Tuple[str, str]:
  """(a data_dir with a 'train' split of LSP14 records, what it holds): `data_dir` as given;
  else the first `num_train` training images of `dataset` read from `source_dir`, written
  into `tmp`; else `num_train` synthetic images generated into `tmp`."""
  from deeppose_tf.data import prepare, records
  if data_dir:
    joints = records.read_meta(data_dir, "train").get("num_joints")
    if joints not in (None, 14):
      raise ValueError(f"--data_dir={data_dir}: its train split has {joints} joints; the "
                       "bench network predicts LSP14's 14")
    return data_dir, "given"
  out = os.path.join(tmp, "data")
  if source_dir:
    from deeppose_tf.data import datasets
    spec = datasets.get(dataset)
    meta = {"dataset": dataset, "skeleton": spec.skeleton.name}
    read = spec.reader(datasets.ReadRequest(
        split="train", source=source_dir, output=out, seed=0, num_train=num_train,
        num_test=0, options=datasets.option_values(spec, {}), meta=meta))
    count = records.write_split(itertools.islice(read, num_train), out, "train",
                                spec.skeleton.num_joints, meta=meta)
    return out, f"{dataset} (first {count} training images)"
  prepare.prepare("synthetic", out, num_train=num_train, num_test=10, seed=0)
  return out, f"synthetic ({num_train} images)"
