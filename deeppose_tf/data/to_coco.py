"""Writes a prepared split back out as a COCO-keypoints dataset: an images folder and one
annotations file, what CVAT, Label Studio, Roboflow and pycocotools read.

  python -m deeppose_tf.data.to_coco --data_dir=DIR --split=train --output=OUT_DIR
      [--overwrite]

writes OUT_DIR/images/<files> and OUT_DIR/annotations.json from any prepared split (lsp,
lspet, flic, synthetic, coco).  Records that share identical image bytes become the people
of one COCO image; each image's original bytes are written unchanged (never re-encoded),
named after its first record's id.  One category (id 1): the skeleton's joint names, its
1-based drawing edges, its OKS `sigmas` if it has them, and the whole skeleton (flip pairs,
torso diameter, PCP limbs: COCO has no fields for them) as "deeppose_skeleton".  Each
record is one annotation, in record order (ids 1..N): keypoints [x, y, v] with v = 2 where
annotated and 0 (x = y = 0) where masked; bbox the record's stage-1 box as [x, y, w, h]
clipped to the image (the whole image where the record has no box); "deeppose_box" the
record's box (cx, cy, w, h) exactly, or null; "area" only where the record has one.

So `prepare --dataset=coco --annotations=OUT_DIR/annotations.json --images=OUT_DIR/images
--coco_val=0` gives back the same records (image bytes, joints, visible, box, area) in the
same order, and the same skeleton.

The export is built in a hidden folder beside OUT_DIR and renamed into place at the end, so
an interrupted run leaves no half-written export.  A non-empty OUT_DIR is refused unless
--overwrite, which replaces only a folder that holds nothing but an earlier export.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from typing import Dict, Iterator, Optional

import numpy as np
from absl import app, flags

from deeppose_tf import atomic
from deeppose_tf import skeleton as skeleton_lib
from deeppose_tf.data import datasets, records
from deeppose_tf.progress import Progress

ANNOTATIONS = "annotations.json"
IMAGES = "images"
# File extensions by PIL format (the formats the pipeline's decoder reads).
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp"}
_IMAGE_SUFFIX = re.compile(r"\.(jpe?g|png|gif|bmp|webp|tiff?)$", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_STEM = 100


def read_records(data_dir: str, split: str, num_joints: int) -> Iterator[Dict[str, object]]:
  """The split's parsed records (records.parse's fields as numpy values) in record order:
  write_split deals records round-robin over the shards, so one from each shard in turn."""
  import tensorflow as tf
  paths = records.list_shards(data_dir, split)
  if not paths:
    return iter(())
  shards = tf.data.Dataset.from_tensor_slices(paths).interleave(
      tf.data.TFRecordDataset, cycle_length=len(paths), block_length=1)
  return shards.map(lambda s: records.parse(s, num_joints)).as_numpy_iterator()


def category(skeleton: skeleton_lib.Skeleton) -> dict:
  """The COCO category (id 1) of a skeleton; "deeppose_skeleton" holds all of it."""
  name = skeleton.name[len("coco:"):] if skeleton.name.startswith("coco:") else skeleton.name
  out = {"id": 1, "name": name, "supercategory": "person",
         "keypoints": list(skeleton.joints),
         "skeleton": [[int(a) + 1, int(b) + 1] for a, b in skeleton.edge_indices]}
  if skeleton.sigmas:
    out["sigmas"] = list(skeleton.sigmas)
  out["deeppose_skeleton"] = skeleton.to_dict()
  return out


def file_stem(image_id: str) -> str:
  """A safe file name stem from a record id: 'lsp/im0001' -> 'lsp_im0001',
  'img_003.jpg#17' -> 'img_003'."""
  stem = _IMAGE_SUFFIX.sub("", image_id.split("#", 1)[0])
  stem = _UNSAFE.sub("_", stem).strip("._-")[:MAX_STEM].strip("._-")
  return stem or "image"


def image_extension(data: bytes, image_id: str) -> str:
  """The file extension of encoded image bytes, from their format (PIL reads the header)."""
  from PIL import Image
  try:
    with Image.open(io.BytesIO(data)) as im:
      fmt = im.format or ""
  except Exception as e:  # PIL raises many kinds for bad bytes
    raise ValueError(f"record {image_id!r}: not a readable image ({e})") from None
  return EXTENSIONS.get(fmt, "." + (re.sub(r"[^a-z0-9]", "", fmt.lower()) or "img"))


def annotation(ann_id: int, image_id: int, rec: Dict[str, object]) -> dict:
  """One record as a COCO annotation (see the module doc)."""
  joints = np.asarray(rec["joints"], np.float32)
  visible = np.asarray(rec["visible"], np.float32) > 0
  keypoints = []
  for (x, y), v in zip(joints.tolist(), visible):
    keypoints += [x, y, 2] if v else [0.0, 0.0, 0]
  width, height = float(rec["width"]), float(rec["height"])
  bbox = [0.0, 0.0, width, height]
  box = None
  if rec["has_box"]:
    box = np.asarray(rec["box"], np.float32).tolist()
    cx, cy, w, h = box
    x0, y0 = max(cx - w / 2.0, 0.0), max(cy - h / 2.0, 0.0)
    x1, y1 = min(cx + w / 2.0, width), min(cy + h / 2.0, height)
    if x1 > x0 and y1 > y0:
      bbox = [x0, y0, x1 - x0, y1 - y0]
  out = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
         "keypoints": keypoints, "num_keypoints": int(visible.sum()), "bbox": bbox,
         "deeppose_box": box, "deeppose_record": rec["image_id"].decode("utf-8", "replace")}
  if float(rec["area"]) >= 0:  # parse's -1: the record has no area
    out["area"] = float(rec["area"])
  return out


def _check_output(output: str, data_dir: str, overwrite: bool) -> None:
  if os.path.exists(output) and not os.path.isdir(output):
    raise ValueError(f"--output={output} is a file, not a folder; give a new folder")
  real_out, real_data = os.path.realpath(output), os.path.realpath(data_dir)
  if real_data == real_out or real_data.startswith(real_out.rstrip(os.sep) + os.sep):
    raise ValueError(f"--output={output} holds --data_dir={data_dir}; give another folder")
  entries = sorted(os.listdir(output)) if os.path.isdir(output) else []
  if entries and not overwrite:
    raise ValueError(f"--output={output} is not empty ({len(entries)} entries: "
                     f"{entries[:5]}); give a new or empty folder, or --overwrite to replace "
                     "an earlier export")
  other = [e for e in entries if e not in (ANNOTATIONS, IMAGES)]
  if other:
    raise ValueError(f"--output={output} holds {other[:5]}, not only an earlier export "
                     f"({ANNOTATIONS}, {IMAGES}/); --overwrite replaces only an export, so "
                     "give a new or empty folder")


def _install(temp: str, output: str) -> None:
  """Renames the finished export `temp` to `output` (replacing an empty folder or an earlier
  export)."""
  if os.path.isdir(output) and os.listdir(output):
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.old-",
                           dir=os.path.dirname(output))
    os.replace(output, os.path.join(old, "export"))
    os.replace(temp, output)
    shutil.rmtree(old, ignore_errors=True)
    return
  if os.path.isdir(output):
    os.rmdir(output)
  os.replace(temp, output)


def to_coco(data_dir: str, split: str, output: str, overwrite: bool = False) -> dict:
  """Writes split `split` of the prepared `data_dir` as a COCO-keypoints dataset in
  `output` (see the module doc). Returns {"records", "images", "annotations": path}.

  ValueError for a missing or damaged split, or an `output` that is not a new or empty
  folder (with overwrite, a folder holding an earlier export is replaced)."""
  meta = records.read_meta(data_dir, split)
  skeleton = datasets.skeleton_in(data_dir, split)
  k = meta.get("num_joints", skeleton.num_joints)
  if k != skeleton.num_joints:
    raise ValueError(f"{data_dir}/{split}.json: {k} joints, but its skeleton "
                     f"{skeleton.name!r} has {skeleton.num_joints}; write the split again "
                     "with `python -m deeppose_tf.data.prepare`")
  output = os.path.abspath(output)
  _check_output(output, data_dir, overwrite)
  parent = os.path.dirname(output)
  os.makedirs(parent, exist_ok=True)
  temp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.tmp-", dir=parent)
  try:
    os.mkdir(os.path.join(temp, IMAGES))
    images, anns = [], []
    by_hash: Dict[bytes, int] = {}
    names = set()
    with Progress(f"to_coco {split}", meta["num_records"], unit="records") as bar:
      for rec in read_records(data_dir, split, k):
        data = rec["image"]
        key = hashlib.sha256(data).digest()
        if key not in by_hash:
          rid = rec["image_id"].decode("utf-8", "replace")
          stem, ext = file_stem(rid), image_extension(data, rid)
          name, n = stem + ext, 1
          while name.lower() in names:  # unique, on case-insensitive file systems too
            n += 1
            name = f"{stem}-{n}{ext}"
          names.add(name.lower())
          with open(os.path.join(temp, IMAGES, name), "wb") as f:
            f.write(data)
          by_hash[key] = len(images) + 1
          images.append({"id": len(images) + 1, "file_name": name,
                         "width": int(rec["width"]), "height": int(rec["height"])})
        anns.append(annotation(len(anns) + 1, by_hash[key], rec))
        bar.set(len(anns))
    coco = {"info": {"description": f"deeppose_tf split {split!r} of "
                                    f"{os.path.abspath(data_dir)}",
                     "deeppose_dataset": meta.get("dataset")},
            "images": images, "annotations": anns, "categories": [category(skeleton)]}
    atomic.write_text(os.path.join(temp, ANNOTATIONS), json.dumps(coco, allow_nan=False))
    _install(temp, output)
  except BaseException:
    shutil.rmtree(temp, ignore_errors=True)
    raise
  return {"records": len(anns), "images": len(images),
          "annotations": os.path.join(output, ANNOTATIONS)}


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("data_dir", None, "Folder of the prepared split (prepare's --data_dir).")
  flags.DEFINE_string("split", "train", "The split to export.")
  flags.DEFINE_string("output", None, "New or empty folder for images/ and annotations.json.")
  flags.DEFINE_bool("overwrite", False, "Replace --output if it holds an earlier export.")
  flags.mark_flags_as_required(["data_dir", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  out = to_coco(FLAGS.data_dir, FLAGS.split, FLAGS.output, FLAGS.overwrite)
  print(f"{FLAGS.split}: {out['records']} records, {out['images']} images -> "
        f"{out['annotations']}")


if __name__ == "__main__":
  define_flags()
  from deeppose_tf import cli
  cli.run(main, "to_coco")
