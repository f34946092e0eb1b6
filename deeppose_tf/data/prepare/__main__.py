"""Writes a dataset as TFRecords in the one schema (deeppose_tf/data/records.py).

  python -m deeppose_tf.data.prepare --dataset=synthetic --data_dir=DIR [--num_train=N
      --num_test=N --seed=S]
  python -m deeppose_tf.data.prepare --dataset=lsp|lspet|flic --source_dir=DIR
      --data_dir=DIR [dataset options: --flic_box=torso|face, --fold_val]
  python -m deeppose_tf.data.prepare --dataset=coco --annotations=FILE.json --images=DIR
      --data_dir=DIR [--val_annotations=FILE.json | --coco_val=0.1] [--category=NAME
      --flip_pairs=a:b,... --torso=a,b --pcp_limbs=a:b,... --oks_sigmas=s1,...]

--data_dir is the folder train's --data_dir reads, --source_dir the original files, as in
train (the old names --output and --source still work).  The datasets, their splits and
their own options: --dataset and the flags below (deeppose_tf/data/datasets.py).  Each
split is complete only once its `{split}.json` is in place, so an interrupted run never
looks finished.
"""

from __future__ import annotations

from absl import app, flags

from deeppose_tf.data import datasets, prepare, records

FLAGS = flags.FLAGS

flags.DEFINE_enum("dataset", None, list(datasets.names()),
                  f"Dataset to convert. {datasets.describe()}.")
flags.DEFINE_string("data_dir", None, "Folder the TFRecord shards and each split's json go "
                    "to: what train's --data_dir reads.")
flags.DEFINE_string("source_dir", None, "Folder of the original dataset files (every "
                    "dataset but synthetic).")
flags.DEFINE_integer("num_train", 5000, "Synthetic: training images.")
flags.DEFINE_integer("num_test", 500, "Synthetic: test images.")
flags.DEFINE_integer("seed", 0, "Synthetic: generator seed; LSPET: train/val split seed.")
flags.DEFINE_integer("num_shards", 4, "TFRecord shards per split.")


def _define_option(option: datasets.Option) -> None:
  """A dataset's own option as a flag (called here, so --help lists it with the rest)."""
  if isinstance(option.default, bool):
    flags.DEFINE_bool(option.name, option.default, option.help)
  elif option.choices is not None:
    flags.DEFINE_enum(option.name, option.default, list(option.choices), option.help)
  elif isinstance(option.default, int):
    flags.DEFINE_integer(option.name, option.default, option.help)
  elif isinstance(option.default, float):
    flags.DEFINE_float(option.name, option.default, option.help)
  else:
    flags.DEFINE_string(option.name, option.default, option.help)


for _option in datasets.all_options():
  _define_option(_option)
flags.DEFINE_alias("output", "data_dir")
flags.DEFINE_alias("source", "source_dir")
flags.DEFINE_alias("images", "source_dir")
flags.mark_flags_as_required(["dataset", "data_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  options = {option.name: FLAGS[option.name].value for option in datasets.all_options()}
  counts = prepare.prepare(FLAGS.dataset, FLAGS.data_dir, FLAGS.source_dir, FLAGS.num_train,
                           FLAGS.num_test, FLAGS.seed, FLAGS.num_shards, **options)
  if datasets.get(FLAGS.dataset).skeleton is None:  # read from the files: show what was read
    print(datasets.skeleton_in(FLAGS.data_dir, next(iter(counts))).describe())
  for split, n in counts.items():
    meta = records.read_meta(FLAGS.data_dir, split)
    unit = "people" if meta.get("dataset") == "coco" else "images"  # coco: one per person
    print(f"{split}: {n} {unit}, {meta['annotated_joints']} annotated joints, "
          f"{meta['masked_joints']} masked joints")
    if meta.get("dataset") == "coco":
      print(f"  from {meta['annotations']}: {meta['people']} people; skipped "
            f"{meta['crowd']} crowd entries, {meta['no_keypoints']} people with no labelled "
            f"keypoint, {meta['other_category']} annotations of other categories; "
            f"{meta['box_from_keypoints']} boxes taken from the keypoints (no bbox)")
    if meta.get("box") == "face":
      print(f"  face box for {meta['face_found']}, torso box fallback (no face) for "
            f"{meta['fallback_torso']}")


if __name__ == "__main__":
  from deeppose_tf import cli
  cli.run(main, "prepare")
