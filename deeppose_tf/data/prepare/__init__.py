"""Writes a dataset's splits as TFRecords in the one schema (records.py).

The library half of `python -m deeppose_tf.data.prepare` (its flags and main are in
__main__.py, so importing this module defines no flags).  What is dataset-specific (the
skeleton, the splits, the reader, the dataset's own options) is its spec in
deeppose_tf/data/datasets.py.

Each split is complete only once its `{split}.json` is in place (shards are renamed in
first), so an interrupted run never looks finished.
"""

from __future__ import annotations

import os
import time
from typing import Dict, Optional

from absl import logging

from deeppose_tf import skeleton as skeleton_lib
from deeppose_tf.data import datasets, records
from deeppose_tf.progress import Progress

# The pre-registry names, derived from datasets.DATASETS.
DATASETS = datasets.names()
SPLITS: Dict[str, tuple] = {name: spec.splits for name, spec in datasets.DATASETS.items()}
FLIC_BOXES = datasets.FLIC_BOXES


def check_dataset(name: str) -> str:
  datasets.get(name)
  return name


def prepare(dataset: str, output: str, source: Optional[str] = None, num_train: int = 5000,
            num_test: int = 500, seed: int = 0, num_shards: int = 4,
            **options) -> Dict[str, int]:
  """Writes every split of `dataset` into `output`; returns {split: record count}.

  source: folder of the original files (every dataset that is not generated).
  num_train, num_test: a generated dataset's (synthetic) train / held-out record counts.
  seed: the generator's seed (synthetic), the split's (lspet); recorded in every json.
  options: the dataset's own options (datasets.py; e.g. flic_box="face" for flic,
    fold_val=True for lspet); another dataset's option is refused unless at its default.
  """
  spec = datasets.get(dataset)
  values = datasets.option_values(spec, options)
  if spec.needs_source and not source:
    raise ValueError(f"dataset {dataset!r} needs --source_dir=DIR, the folder of the "
                     "original files (see BUILD.md)")
  counts = {}
  for split in spec.splits:
    meta = {"dataset": dataset, "seed": seed,
            "source": os.path.abspath(source) if source else None}
    request = datasets.ReadRequest(split=split, source=source, output=output, seed=seed,
                                   num_train=num_train, num_test=num_test, options=values,
                                   meta=meta)
    reader = spec.reader(request)
    skeleton = spec.skeleton or request.skeleton
    # A preset by name, a skeleton read from the files whole (skeleton.stored).
    meta["skeleton"] = skeleton_lib.stored(skeleton)
    total = spec.size(split, num_train, num_test) if spec.size else None
    t0 = time.time()
    with Progress(split, total, unit="records") as bar:
      counts[split] = records.write_split(reader, output, split, skeleton.num_joints,
                                          num_shards=num_shards, meta=meta,
                                          progress=bar.set)
    logging.info("wrote %d %s records to %s in %.1f s", counts[split], split, output,
                 time.time() - t0)
  return counts


def ensure_prepared(dataset: str, data_dir: str, source_dir: Optional[str] = None, *,
                    num_train: int = 5000, num_test: int = 500, seed: int = 0,
                    generate: bool = True) -> bool:
  """Makes sure `data_dir` holds `dataset` prepared (train's data step); True if it wrote.

  A generated dataset (synthetic) is generated into data_dir unless a complete identical
  one (same record counts and seed) is there already; generate=False (data_dir is the
  user's own --data_dir) leaves data_dir as it is.  A dataset of files is converted from
  `source_dir` when that is given and the held-out split's json (written last) is
  missing; without source_dir, data_dir is left as it is (reading it says what is missing).
  """
  spec = datasets.get(dataset)
  if not spec.needs_source:
    if not generate:
      return False
    if _generated_in(spec, data_dir, num_train, num_test, seed):
      logging.info("%s dataset already in %s", dataset, data_dir)
      return False
    logging.info("generating the %s dataset (%d train, %d test, seed %d) into %s", dataset,
                 num_train, num_test, seed, data_dir)
    prepare(dataset, data_dir, num_train=num_train, num_test=num_test, seed=seed)
    return True
  if source_dir and not os.path.exists(os.path.join(data_dir, f"{spec.eval_split}.json")):
    prepare(dataset, data_dir, source_dir, seed=seed)
    return True
  return False


def ensure_synthetic(output: str, num_train: int, num_test: int, seed: int) -> None:
  """Generates the synthetic dataset into `output` unless an identical one is complete."""
  ensure_prepared("synthetic", output, num_train=num_train, num_test=num_test, seed=seed)


def _generated_in(spec: datasets.DatasetSpec, data_dir: str, num_train: int, num_test: int,
                  seed: int) -> bool:
  for split in spec.splits:
    try:
      meta = records.read_meta(data_dir, split)
    except ValueError:
      return False
    if meta.get("seed") != seed or (
        spec.size and meta.get("num_records") != spec.size(split, num_train, num_test)):
      return False
  return True
