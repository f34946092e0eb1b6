"""Writes a prepared folder's splits again in other left/right labels (deeppose_tf/labels.py).

  python -m deeppose_tf.data.relabel --data_dir=runs/data/lsp --output_dir=runs/data/lsp_oc
      [--left_right=observer] [--splits=train,val]

The images, boxes, areas and ids are copied as they are; each record's joints and their
visibility flags are relabelled from the record's own coordinates (labels.observer_centric:
of each mirrored pair of arms or legs, the one further right in the image is the left one,
as if the person faced the camera). Each split's json records the labels ("left_right")
and the folder they came from. Training on the new folder trains a cascade that answers in
those labels: train writes them into config.json, and the cascade then relabels its own
answers the same way, so evaluation, export and predict agree.

The source folder is never written to (its person-centric labels could not be recovered
from observer-centric ones), and each split appears in --output_dir only once written
whole (records.write_split).
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np

from deeppose_tf import labels
from deeppose_tf.data import datasets, records
from deeppose_tf.data.to_coco import read_records
from deeppose_tf.progress import Progress

# write_split recomputes these from what it writes.
_COMPUTED = ("split", "num_records", "num_shards", "num_joints", "annotated_joints",
             "masked_joints")


def splits_in(data_dir: str) -> list:
  """The splits of a prepared folder that are complete (their json is in place), sorted."""
  if not os.path.isdir(data_dir):
    raise ValueError(f"--data_dir={data_dir} is not a folder of prepared records")
  names = os.listdir(data_dir)
  shards = [n for n in names if n.endswith(".tfrecord")]
  found = sorted(n[:-5] for n in names if n.endswith(".json")
                 and any(p.startswith(n[:-5] + "-") for p in shards))
  if not found:
    raise ValueError(f"{data_dir} holds no prepared split (no SPLIT.json beside "
                     "SPLIT-*.tfrecord); write one with `python -m deeppose_tf.data.prepare`")
  return found


def relabel_split(data_dir: str, output_dir: str, split: str, left_right: str) -> int:
  """One split of data_dir -> output_dir in labels `left_right`; returns its record count."""
  meta = records.read_meta(data_dir, split)
  was = meta.get("left_right", "person")
  if was != "person" and left_right == "person":
    raise ValueError(f"{data_dir}/{split}.json is labelled {was!r}: person-centric labels "
                     "cannot be recovered from it; relabel the folder it came from "
                     f"({meta.get('relabelled_from', 'its prepare source')})")
  skeleton = datasets.skeleton_in(data_dir, split)
  k = skeleton.num_joints
  total = records.verify_split(data_dir, split)
  bar = Progress(f"relabel {split}", total, unit="records")

  def relabelled():
    for r in read_records(data_dir, split, k):
      joints, visible = labels.relabel_numpy(r["joints"], skeleton, left_right, r["visible"])
      yield records.PoseRecord(
          image_id=r["image_id"].decode("utf-8"), image=r["image"],
          joints=np.asarray(joints, np.float32), visible=np.asarray(visible, np.float32),
          box=np.asarray(r["box"], np.float32) if r["has_box"] else None,
          area=float(r["area"]) if r["area"] >= 0 else None)

  info = {key: v for key, v in meta.items() if key not in _COMPUTED}
  info.update(left_right=left_right, relabelled_from=os.path.abspath(data_dir))
  count = records.write_split(relabelled(), output_dir, split, k,
                              num_shards=meta["num_shards"], meta=info,
                              progress=lambda n: bar.update(1))
  bar.close()
  if count != total:  # read_records stopped early: never a silently shorter split
    raise ValueError(f"{data_dir}/{split}: read {count} of its {total} records")
  return count


def relabel_dir(data_dir: str, output_dir: str, left_right: str = "observer",
                splits: Optional[Sequence[str]] = None) -> Dict[str, int]:
  """Every split (or `splits`) of data_dir written to output_dir in labels `left_right`.
  Returns {split: record count}. Refuses to write into data_dir itself."""
  labels.check(left_right)
  if os.path.realpath(output_dir) == os.path.realpath(data_dir):
    raise ValueError(f"--output_dir is --data_dir ({data_dir}): relabelling in place would "
                     "lose the original labels; give another folder")
  available = splits_in(data_dir)
  splits = list(splits or available)
  missing = [s for s in splits if s not in available]
  if missing:
    raise ValueError(f"{data_dir} has no split {missing}; it has {available}")
  return {s: relabel_split(data_dir, output_dir, s, left_right) for s in splits}


def _main():
  from absl import app, flags
  flags.DEFINE_string("data_dir", None, "Prepared folder to read (python -m "
                      "deeppose_tf.data.prepare); never written to.", required=True)
  flags.DEFINE_string("output_dir", None, "Folder the relabelled splits go to.",
                      required=True)
  flags.DEFINE_enum("left_right", "observer", list(labels.LABELS), "Left/right labels to "
                    "write: observer = by image position, as if every person faced the "
                    "camera (the DeepPose paper's LSP test labels); person = the person's own "
                    "(only from a person-labelled folder: a copy).")
  flags.DEFINE_list("splits", None, "Splits to write (default: every split in --data_dir).")

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    counts = relabel_dir(f.data_dir, f.output_dir, f.left_right, f.splits)
    for split, n in counts.items():
      print(f"{split}: {n} records in {f.left_right}-centric labels -> {f.output_dir}")

  from deeppose_tf import cli
  cli.run(main, "relabel")


if __name__ == "__main__":
  _main()
