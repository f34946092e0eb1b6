"""Writes a dataset as TFRecords in the one schema (records.py).

  python -m deeppose_tf.data.prepare --dataset=synthetic --output=DIR [--num_train=N
      --num_test=N --seed=S]
  python -m deeppose_tf.data.prepare --dataset=lsp|lspet|flic --source=DIR --output=DIR
      [--flic_box=torso|face]

Splits written: synthetic train/test; lsp train/test; lspet train/val (seeded split of the
images at hand); flic train/test. Each split is complete only once its `{split}.json` is in
place (shards are renamed in first), so an interrupted run never looks finished.

FLIC's initial box (`--flic_box`): "torso" (default) = FLIC's torso box; "face" = the
paper's face-detector box (needs `pip install "deeppose_tf[face]"`): the face -> person box
scaler is fitted on train and saved as `flic_face_scaler.json` beside the shards, test uses
it, and each split's json records {"box", "face_found", "fallback_torso", "face_scaler"}.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Dict, Iterator, Optional

from absl import app, flags, logging

from deeppose_tf.data import records
from deeppose_tf.skeleton import get_skeleton

DATASETS = ("synthetic", "lsp", "lspet", "flic")
SPLITS: Dict[str, tuple] = {
    "synthetic": ("train", "test"), "lsp": ("train", "test"), "lspet": ("train", "val"),
    "flic": ("train", "test"),
}
FLIC_BOXES = ("torso", "face")


def check_dataset(name: str) -> str:
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
  return name


def _reader(dataset: str, split: str, source: Optional[str], num: int, seed: int,
            start: int, output: str = "", flic_box: str = "torso",
            meta: Optional[dict] = None, fold_val: bool = False) -> Iterator[records.PoseRecord]:
  if dataset == "synthetic":
    from deeppose_tf.data import synthetic
    return synthetic.generate(num, seed=seed, start=start)
  if not source:
    raise ValueError(f"dataset {dataset!r} needs --source=DIR, the folder of the original "
                     "files (see BUILD.md)")
  if dataset == "lsp":
    from deeppose_tf.data import lsp
    return lsp.read_lsp(source, split)
  if dataset == "lspet":
    from deeppose_tf.data import lsp
    # fold_val: train on every image; val stays the same images, no longer held out.
    return lsp.read_lspet(source, "all" if fold_val and split == "train" else split,
                          seed=seed)
  from deeppose_tf.data import face_box, flic
  # Train fits and writes the scaler, test (written after train) reads it back.
  scaler = os.path.join(output, face_box.SCALER_FILE) if flic_box == "face" else None
  return flic.read_flic(source, split, box=flic_box, face_scaler=scaler, box_stats=meta)


def _progress(split: str, total: Optional[int]):
  start = time.time()
  interactive = sys.stderr.isatty()

  def report(n):
    if n % 250 and n != total:
      return
    rate = n / max(time.time() - start, 1e-9)
    text = f"{split}: {n}{'/' + str(total) if total else ''} records ({rate:.0f}/s)"
    if interactive:
      sys.stderr.write("\r" + text)
      if n == total:
        sys.stderr.write("\n")
    else:
      logging.info(text)
  return report


def prepare(dataset: str, output: str, source: Optional[str] = None, num_train: int = 5000,
            num_test: int = 500, seed: int = 0, num_shards: int = 4,
            flic_box: str = "torso", fold_val: bool = False) -> Dict[str, int]:
  """Writes every split of `dataset` into `output`; returns {split: record count}.

  flic_box: FLIC's initial box, "torso" or "face" (see the module docstring).
  fold_val: LSPET only; the train split holds every image, val included, for a final model
    trained once the recipe is chosen. Val is written as usual but is no longer held out:
    its scores then measure fit, not generalization (each split's json says so).
  """
  check_dataset(dataset)
  if flic_box not in FLIC_BOXES:
    raise ValueError(f"unknown flic_box {flic_box!r}; expected one of {list(FLIC_BOXES)}")
  if flic_box != "torso" and dataset != "flic":
    raise ValueError(f"flic_box={flic_box!r} applies to dataset 'flic' only, not {dataset!r}")
  if fold_val and dataset != "lspet":
    raise ValueError(f"fold_val applies to dataset 'lspet' only, not {dataset!r}")
  skeleton = get_skeleton(dataset)
  counts = {}
  for split in SPLITS[dataset]:
    # Synthetic test images come from a disjoint index range of the same seed.
    num = num_train if split == "train" else num_test
    start = 0 if split == "train" else num_train
    meta = {"dataset": dataset, "skeleton": skeleton.name, "seed": seed,
            "source": os.path.abspath(source) if source else None}
    if fold_val:
      meta["val_in_train"] = True
    # The FLIC reader fills meta's box statistics while write_split consumes it.
    reader = _reader(dataset, split, source, num, seed, start, output, flic_box, meta,
                     fold_val)
    total = num if dataset == "synthetic" else None
    t0 = time.time()
    counts[split] = records.write_split(reader, output, split, skeleton.num_joints,
                                        num_shards=num_shards, meta=meta,
                                        progress=_progress(split, total))
    logging.info("wrote %d %s records to %s in %.1f s", counts[split], split, output,
                 time.time() - t0)
  return counts


def ensure_synthetic(output: str, num_train: int, num_test: int, seed: int) -> None:
  """Generates the synthetic dataset into `output` unless an identical one is complete."""
  wanted = {"train": num_train, "test": num_test}
  try:
    metas = {s: records.read_meta(output, s) for s in wanted}
    ok = all(metas[s].get("num_records") == n and metas[s].get("seed") == seed
             for s, n in wanted.items())
  except ValueError:
    ok = False
  if ok:
    logging.info("synthetic dataset already in %s", output)
    return
  logging.info("generating the synthetic dataset (%d train, %d test, seed %d) into %s",
               num_train, num_test, seed, output)
  prepare("synthetic", output, num_train=num_train, num_test=num_test, seed=seed)


FLAGS = flags.FLAGS
if __name__ == "__main__":
  flags.DEFINE_enum("dataset", None, list(DATASETS), "Which dataset to convert.")
  flags.DEFINE_string("output", None, "Folder the TFRecord shards and split json go to.")
  flags.DEFINE_string("source", None, "Folder of the original dataset files (not synthetic).")
  flags.DEFINE_integer("num_train", 5000, "Synthetic: training images.")
  flags.DEFINE_integer("num_test", 500, "Synthetic: test images.")
  flags.DEFINE_integer("seed", 0, "Synthetic: generator seed; LSPET: train/val split seed.")
  flags.DEFINE_integer("num_shards", 4, "TFRecord shards per split.")
  flags.DEFINE_enum("flic_box", "torso", list(FLIC_BOXES),
                    "FLIC initial box: the torso box, or the paper's face-detector box "
                    "(needs opencv: pip install \"deeppose_tf[face]\").")
  flags.DEFINE_bool("fold_val", False, "LSPET: the train split holds every image, val "
                    "included (for a final model once the recipe is chosen); val is then no "
                    "longer held out.")
  flags.mark_flags_as_required(["dataset", "output"])


def main(argv):
  del argv
  counts = prepare(FLAGS.dataset, FLAGS.output, FLAGS.source, FLAGS.num_train, FLAGS.num_test,
                   FLAGS.seed, FLAGS.num_shards, FLAGS.flic_box, FLAGS.fold_val)
  for split, n in counts.items():
    meta = records.read_meta(FLAGS.output, split)
    print(f"{split}: {n} images, {meta['annotated_joints']} annotated joints, "
          f"{meta['masked_joints']} masked joints")
    if meta.get("box") == "face":
      print(f"  face box for {meta['face_found']}, torso box fallback (no face) for "
            f"{meta['fallback_torso']}")


if __name__ == "__main__":
  app.run(main)
