"""The datasets the package knows, as data: one `DatasetSpec` each, in `DATASETS`.

A spec says everything dataset-specific: its skeleton, the splits `prepare` writes (train
first, the held-out split last), how to read a split, whether it needs the original
files (--source_dir), and its own prepare options (each becomes a flag of `python -m
deeppose_tf.data.prepare`).  prepare, the train/prepare --dataset flags and
datasets.skeleton_of(dataset name) all read this table, so adding a dataset is one
`DatasetSpec` here (plus its reader module).

Readers are imported only when a split is read: listing the datasets costs nothing.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

from deeppose_tf import skeleton as skeleton_lib
from deeppose_tf.data.records import PoseRecord


@dataclasses.dataclass(frozen=True)
class Option:
  """A dataset's own prepare option: a keyword of prepare(), a flag of its CLI."""

  name: str
  default: Any  # its type sets the flag's: bool, int, str
  help: str
  choices: Optional[Tuple[str, ...]] = None


@dataclasses.dataclass
class ReadRequest:
  """What a reader is given to read one split."""

  split: str
  source: Optional[str]  # folder of the original files (None for generated datasets)
  output: str  # the folder the split is written to (a reader may keep side files there)
  seed: int
  num_train: int  # generated datasets: records of the train / every other split
  num_test: int
  options: Mapping[str, Any]  # the spec's Option values, by name
  meta: dict  # the split json's metadata: a reader may add to it, until the split is written
  # A dataset whose skeleton comes from its files (spec.skeleton None: coco) sets it here
  # when the reader is called, before any record is read.
  skeleton: Optional[skeleton_lib.Skeleton] = None


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One dataset.

  Attributes:
    name: the --dataset value.
    skeleton: the joint layout of its records; None where it comes from the files (coco:
      the reader sets request.skeleton, and the split json stores it whole).
    splits: the splits prepare writes, in order: "train" first, the held-out split
      (evaluation, learning curves) last.
    reader: ReadRequest -> PoseRecords of request.split.  It is called just before the
      split is written, so it may fill request.meta eagerly; records may fill it while
      being consumed (FLIC's box counts).
    description: one line for the --dataset help.
    needs_source: False for datasets generated from a seed (no --source_dir).
    options: the dataset's own prepare options.
    size: (split, num_train, num_test) -> records the split will hold, when known before
      reading (the progress total; a generated dataset's completeness check).
  """

  name: str
  skeleton: Optional[skeleton_lib.Skeleton]
  splits: Tuple[str, ...]
  reader: Callable[[ReadRequest], Iterator[PoseRecord]]
  description: str
  needs_source: bool = True
  options: Tuple[Option, ...] = ()
  size: Optional[Callable[[str, int, int], int]] = None

  @property
  def eval_split(self) -> str:
    return self.splits[-1]


# ------------------------------------------------------------------------------ readers

def _synthetic_range(split: str, num_train: int, num_test: int) -> Tuple[int, int]:
  # (start, num): test images come from a disjoint index range of the same seed.
  return (0, num_train) if split == "train" else (num_train, num_test)


def _read_synthetic(request: ReadRequest) -> Iterator[PoseRecord]:
  from deeppose_tf.data import synthetic
  start, num = _synthetic_range(request.split, request.num_train, request.num_test)
  return synthetic.generate(num, seed=request.seed, start=start)


def _read_lsp(request: ReadRequest) -> Iterator[PoseRecord]:
  from deeppose_tf.data import lsp
  return lsp.read_lsp(request.source, request.split, request.options["lsp_val"])


def _read_lspet(request: ReadRequest) -> Iterator[PoseRecord]:
  from deeppose_tf.data import lsp
  fold_val = request.options["fold_val"]
  if fold_val:
    request.meta["val_in_train"] = True
  # fold_val: train on every image; val stays the same images, no longer held out.
  return lsp.read_lspet(request.source, "all" if fold_val and request.split == "train"
                        else request.split, seed=request.seed)


def _read_flic(request: ReadRequest) -> Iterator[PoseRecord]:
  from deeppose_tf.data import face_box, flic
  box = request.options["flic_box"]
  # Train fits and writes the scaler, test (written after train) reads it back.
  scaler = os.path.join(request.output, face_box.SCALER_FILE) if box == "face" else None
  # The reader fills meta's box statistics while the split is written.
  return flic.read_flic(request.source, request.split, box=box, face_scaler=scaler,
                        box_stats=request.meta)


def _read_coco(request: ReadRequest) -> Iterator[PoseRecord]:
  from deeppose_tf.data import coco
  if not request.source:
    raise ValueError("dataset 'coco' needs --images=DIR (or --source_dir), the folder its "
                     "file names are relative to")
  request.skeleton, records = coco.read(request.source, request.split, request.options,
                                        request.seed, request.meta)
  return records


# ----------------------------------------------------------------------------- registry

FLIC_BOXES = ("torso", "face")

DATASETS: Dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec(
        "synthetic", skeleton_lib.LSP14, ("train", "test"), _read_synthetic,
        "rendered figures on the LSP14 skeleton, deterministic by --seed (sizes: "
        "--num_train, --num_test), no source files",
        needs_source=False, size=lambda *args: _synthetic_range(*args)[1]),
    DatasetSpec(
        "lsp", skeleton_lib.LSP14, ("train", "val", "test"), _read_lsp,
        "Leeds Sports Pose: train = images 1-1000, test = 1001-2000 (val: the last "
        "--lsp_val training images, empty by default)",
        options=(Option(
            "lsp_val", 0,
            "LSP: hold out the last N images of the training half (1000-N+1..1000) as a "
            "'val' split, left out of 'train' (0: none, the official 1000 train)."),)),
    DatasetSpec(
        "lspet", skeleton_lib.LSP14, ("train", "val"), _read_lspet,
        "LSP-extended: a seeded (--seed) 90/10 train/val split of the images at hand",
        options=(Option(
            "fold_val", False,
            "LSPET: the train split holds every image, val included (for a final model "
            "once the recipe is chosen); val is then no longer held out (each split's json "
            "says so)."),)),
    DatasetSpec(
        "flic", skeleton_lib.FLIC10, ("train", "test"), _read_flic,
        "FLIC, 10 upper-body joints: train = istrain, test = istest",
        options=(Option(
            "flic_box", "torso",
            "FLIC initial box: 'torso' = FLIC's torso box; 'face' = the paper's "
            "face-detector box (needs opencv: pip install \"deeppose_tf[face]\"), its face "
            "-> person box scaler fitted on train and saved as flic_face_scaler.json beside "
            "the shards.", choices=FLIC_BOXES),)),
    DatasetSpec(
        "coco", None, ("train", "val"), _read_coco,
        "your own COCO-keypoints JSON (CVAT, Label Studio, Roboflow, COCO, CrowdPose...): "
        "--annotations=FILE --images=DIR, one record per labelled person, the skeleton from "
        "the file's category",
        options=(
            Option("annotations", "", "COCO: the keypoints JSON file (train; val too unless "
                   "--val_annotations)."),
            Option("val_annotations", "", "COCO: a second keypoints JSON for the val split "
                   "(same category); default: --coco_val of --annotations' images."),
            Option("coco_val", 0.1, "COCO without --val_annotations: the fraction of images "
                   "(with all their people) held out as val, chosen by --seed."),
            Option("category", "", "COCO: the keypoint category to read, by name (needed "
                   "when several categories have keypoints)."),
            Option("flip_pairs", "", "COCO: left:right joint pairs a mirror image swaps, "
                   "a:b,c:d ('none': no pairs); default: from the names (left_*/right_*, "
                   "l_*/r_*, *_l/*_r)."),
            Option("torso", "", "COCO: the two joints whose distance is the torso diameter "
                   "(PDJ, refinement boxes), a,b; default: the left shoulder and right hip."),
            Option("pcp_limbs", "", "COCO: PCP limbs as joint pairs a:b,c:d; default: every "
                   "edge of the category's skeleton."),
            Option("oks_sigmas", "", "COCO: per-joint OKS sigmas for AP, K comma-separated "
                   "numbers; default: the category's 'sigmas', else COCO's by joint type."),
        )),
)}


def names() -> Tuple[str, ...]:
  return tuple(DATASETS)


def get(name: str) -> DatasetSpec:
  """The spec of dataset `name`; ValueError naming the known datasets otherwise."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
  return DATASETS[name]


def skeleton_of(name: str, data_dir: Optional[str] = None) -> skeleton_lib.Skeleton:
  """The skeleton of dataset `name` ('lspet' -> LSP14), or the skeleton of that name
  ('lsp14'). ValueError naming both registries' entries otherwise.

  A dataset whose skeleton comes from its files (coco) reads it from the train split json
  in `data_dir` (prepare stored it there)."""
  if name in skeleton_lib.SKELETONS:
    return skeleton_lib.SKELETONS[name]
  if name not in DATASETS:
    raise ValueError(f"unknown skeleton or dataset {name!r}; expected one of "
                     f"{sorted(set(skeleton_lib.SKELETONS) | set(DATASETS))}")
  if DATASETS[name].skeleton is not None:
    return DATASETS[name].skeleton
  if not data_dir:
    raise ValueError(f"dataset {name!r} takes its skeleton from its files: prepare it first "
                     f"(python -m deeppose_tf.data.prepare --dataset={name} ...) and give "
                     "its --data_dir")
  return skeleton_in(data_dir, DATASETS[name].splits[0])


def skeleton_in(data_dir: str, split: str) -> skeleton_lib.Skeleton:
  """The skeleton a prepared split's json names (a preset) or holds (a custom one)."""
  from deeppose_tf.data import records
  meta = records.read_meta(data_dir, split)
  if "skeleton" not in meta:
    raise ValueError(f"{data_dir}/{split}.json names no skeleton; write the split again with "
                     "`python -m deeppose_tf.data.prepare`")
  try:
    return skeleton_lib.resolve(meta["skeleton"])
  except ValueError as e:
    raise ValueError(f"{data_dir}/{split}.json: its skeleton is damaged ({e}); write the "
                     "split again with `python -m deeppose_tf.data.prepare`") from None


def describe() -> str:
  """The datasets, one "name: description" each, for flag help."""
  return "; ".join(f"{s.name}: {s.description}" for s in DATASETS.values())


def all_options() -> Tuple[Option, ...]:
  """Every dataset's options, each name once."""
  seen: Dict[str, Option] = {}
  for spec in DATASETS.values():
    for option in spec.options:
      if seen.setdefault(option.name, option) != option:
        raise ValueError(f"datasets define option {option.name!r} differently")
  return tuple(seen.values())


def option_values(spec: DatasetSpec, given: Mapping[str, Any]) -> Dict[str, Any]:
  """The values of `spec`'s options: `given` ones, defaults for the rest.

  ValueError for an option no dataset has, a value outside its choices, or an option of
  another dataset set to anything but its default.
  """
  known = {option.name: option for option in all_options()}
  own = {option.name for option in spec.options}
  for name, value in given.items():
    if name not in known:
      raise ValueError(f"unknown prepare option {name!r}; dataset options are "
                       f"{sorted(known)}")
    option = known[name]
    if option.choices is not None and value not in option.choices:
      raise ValueError(f"unknown {name} {value!r}; expected one of {list(option.choices)}")
    if name not in own and value != option.default:
      owners = [s.name for s in DATASETS.values() if name in {o.name for o in s.options}]
      raise ValueError(f"{name}={value!r} applies to dataset "
                       f"{' / '.join(repr(o) for o in owners)} only, not {spec.name!r}")
  return {option.name: given.get(option.name, option.default) for option in spec.options}
