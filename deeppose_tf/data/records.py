"""The one TFRecord schema every dataset is written in, and its crash-safe sharded writer.

A record holds one person in one image:
  image/encoded  bytes    the original JPEG/PNG bytes (never re-encoded)
  image/id       bytes    a stable id that error messages name ("lspet/im00042")
  image/height   int64    declared size, checked before decoding
  image/width    int64
  joints         float[2K] (x, y) per joint, image pixels (x right, y down; the
                           top-left corner of the image is (0, 0), pixel i spans [i, i+1))
  visible        float[K] 1 = annotated, 0 = not annotated (masked everywhere)
  box            float[0 or 4] optional initial person box (cx, cy, w, h), image pixels
  area           float[0 or 1] optional person area in pixels (COCO's `area`: the scale
                           OKS divides by); absent in records written before it existed
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
from typing import Iterable, List, Optional

import numpy as np
from PIL import Image

from deeppose_tf import atomic

# Images larger than this are refused before decoding (decompression bombs, bad headers).
MAX_IMAGE_PIXELS = 50_000_000


@dataclasses.dataclass
class PoseRecord:
  """One annotated person, as a dataset reader yields it.

  joints: (K, 2) float32, image pixels; visible: (K,) float32 in {0, 1};
  box: None or (4,) float32 (cx, cy, w, h) in image pixels.
  area: None or the person's area in pixels (COCO AP's scale; coco_eval.py says what stands
  in for it when absent).
  """

  image_id: str
  image: bytes
  joints: np.ndarray
  visible: np.ndarray
  box: Optional[np.ndarray] = None
  height: int = 0
  width: int = 0
  area: Optional[float] = None


def image_size(image_id: str, data: bytes) -> tuple:
  """(height, width) of encoded image bytes, after checking that they fully decode with
  the same TF decoder the pipeline uses.

  The declared size is checked against MAX_IMAGE_PIXELS from the header, before any pixel
  is decoded. Raises ValueError naming the record when the bytes are not a readable image.
  """
  try:
    with Image.open(io.BytesIO(data)) as im:
      width, height = im.size
  except Exception as e:  # PIL raises many types for bad bytes
    raise ValueError(f"record {image_id!r}: not a readable JPEG/PNG image ({e})") from None
  if width <= 0 or height <= 0:
    raise ValueError(f"record {image_id!r}: image has size {width}x{height}")
  if width * height > MAX_IMAGE_PIXELS:
    raise ValueError(
        f"record {image_id!r}: image is {width}x{height} = {width * height} pixels, over the "
        f"limit of {MAX_IMAGE_PIXELS}")
  # The decoder training uses is the judge: what passes here decodes in the pipeline.
  import tensorflow as tf
  try:
    decoded = tf.io.decode_image(data, channels=3, expand_animations=False)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    raise ValueError(f"record {image_id!r}: image data is corrupt or truncated "
                     f"({e.message.splitlines()[0][:200]})") from None
  if tuple(decoded.shape[:2]) != (height, width):
    raise ValueError(f"record {image_id!r}: header says {width}x{height} but the image "
                     f"decodes to {decoded.shape[1]}x{decoded.shape[0]}")
  return height, width


def validate(record: PoseRecord, num_joints: int) -> PoseRecord:
  """Checks a record and fills in its image size; raises ValueError naming the record."""
  rid = record.image_id
  joints = np.asarray(record.joints, np.float32)
  visible = np.asarray(record.visible, np.float32)
  if joints.shape != (num_joints, 2):
    raise ValueError(f"record {rid!r}: joints have shape {joints.shape}, expected "
                     f"({num_joints}, 2)")
  if visible.shape != (num_joints,):
    raise ValueError(f"record {rid!r}: visible has shape {visible.shape}, expected "
                     f"({num_joints},)")
  if not np.all(np.isin(visible, (0.0, 1.0))):
    raise ValueError(f"record {rid!r}: visible must be 0 or 1, got {visible.tolist()}")
  bad = visible.astype(bool) & ~np.all(np.isfinite(joints), axis=1)
  if bad.any():
    raise ValueError(f"record {rid!r}: annotated joints {np.flatnonzero(bad).tolist()} have "
                     f"non-finite coordinates {joints[bad].tolist()}")
  if visible.sum() == 0:
    raise ValueError(f"record {rid!r}: no annotated joint; nothing to train or score on")
  # Unannotated joints may carry NaN or junk in the source files: store zeros instead so
  # no NaN ever enters a tensor (the mask keeps them out of losses and metrics).
  joints = np.where(visible[:, None] > 0, joints, 0.0).astype(np.float32)
  box = None
  if record.box is not None:
    box = np.asarray(record.box, np.float32)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
      raise ValueError(f"record {rid!r}: box must be finite (cx, cy, w, h) with w, h > 0, "
                       f"got {record.box!r}")
  area = record.area
  if area is not None:
    try:
      area = float(area)
    except (TypeError, ValueError):
      area = float("nan")
    if not (np.isfinite(area) and area >= 0):
      raise ValueError(f"record {rid!r}: area must be a finite number >= 0, got "
                       f"{record.area!r}")
  height, width = image_size(rid, record.image)
  return dataclasses.replace(record, joints=joints, visible=visible, box=box,
                             height=height, width=width, area=area)


def serialize(record: PoseRecord) -> bytes:
  """A validated PoseRecord as a serialized tf.train.Example."""
  import tensorflow as tf  # imported late: readers and tests of them need no TF

  def floats(v):
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(v).tolist()))

  def ints(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

  def byts(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

  feature = {
      "image/encoded": byts(record.image),
      "image/id": byts(record.image_id.encode("utf-8")),
      "image/height": ints(record.height),
      "image/width": ints(record.width),
      "joints": floats(record.joints),
      "visible": floats(record.visible),
      "box": floats(record.box if record.box is not None else []),
  }
  if record.area is not None:
    feature["area"] = floats([record.area])
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_split(records: Iterable[PoseRecord], output_dir: str, split: str, num_joints: int,
                num_shards: int = 4, meta: Optional[dict] = None,
                progress=None) -> int:
  """Validates and writes records as `{split}-{i:05d}-of-{n:05d}.tfrecord` shards.

  The new split is built aside: every shard is written under a temporary name, and only
  when every record has been validated and written does it replace the old split (the old
  json is removed first, the shards renamed into place, shards of an old layout removed,
  and `{split}.json` (counts, skeleton) renamed in last). A failure on any record leaves
  the old split as it was. A split without its json is incomplete and `list_shards`
  refuses it.  Returns the record count.
  """
  import tensorflow as tf

  os.makedirs(output_dir, exist_ok=True)
  meta_path = os.path.join(output_dir, f"{split}.json")
  finals = [os.path.join(output_dir, f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord")
            for i in range(num_shards)]
  temps = [atomic.temp_name(p) for p in finals]
  writers = [tf.io.TFRecordWriter(t) for t in temps]
  count = 0
  annotated = 0
  try:
    for record in records:
      record = validate(record, num_joints)
      writers[count % num_shards].write(serialize(record))
      count += 1
      annotated += int(record.visible.sum())
      if progress is not None:
        progress(count)
  except BaseException:
    for w in writers:
      w.close()
    for t in temps:
      if os.path.exists(t):
        os.remove(t)
    raise
  for w in writers:
    w.close()
  # Swap: from here the split is incomplete (no json) until the new json lands.
  if os.path.exists(meta_path):
    os.remove(meta_path)
  for t, p in zip(temps, finals):
    os.replace(t, p)
  for stale in glob.glob(os.path.join(output_dir, f"{split}-[0-9]*-of-[0-9]*.tfrecord")):
    if stale not in finals:
      os.remove(stale)
  info = dict(meta or {})
  info.update({"split": split, "num_records": count, "num_shards": num_shards,
               "num_joints": num_joints, "annotated_joints": annotated,
               "masked_joints": count * num_joints - annotated})
  atomic.write_text(meta_path, json.dumps(info, indent=2))
  return count


def read_meta(data_dir: str, split: str) -> dict:
  path = os.path.join(data_dir, f"{split}.json")
  if not os.path.exists(path):
    raise ValueError(
        f"no complete split {split!r} in {data_dir!r} ({path} is missing); write it with "
        f"`python -m deeppose_tf.data.prepare --data_dir={data_dir} ...`")
  try:
    with open(path) as f:
      meta = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is damaged, not valid JSON: {e}; write the split again with "
                     "`python -m deeppose_tf.data.prepare`") from None
  for key in ("num_records", "num_shards"):
    if not isinstance(meta, dict) or not isinstance(meta.get(key), int) or meta[key] < 0:
      raise ValueError(f"{path} is damaged: no valid {key!r}; write the split again with "
                       "`python -m deeppose_tf.data.prepare`")
  return meta


def list_shards(data_dir: str, split: str) -> List[str]:
  """The shard paths of a completely written split, in order."""
  meta = read_meta(data_dir, split)
  n = meta["num_shards"]
  paths = [os.path.join(data_dir, f"{split}-{i:05d}-of-{n:05d}.tfrecord") for i in range(n)]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise ValueError(f"split {split!r} in {data_dir!r} is missing shards {missing}; write it "
                     "again with `python -m deeppose_tf.data.prepare`")
  return paths


def shard_sizes(num_records: int, num_shards: int) -> List[int]:
  """Records per shard as write_split deals them (round robin)."""
  return [num_records // num_shards + (i < num_records % num_shards) for i in range(num_shards)]


# A TFRecord frames each record with an 8-byte length and two 4-byte CRCs.
_RECORD_OVERHEAD = 16


def verify_split(data_dir: str, split: str) -> int:
  """Reads every shard of a split once (no decoding) and checks it against `{split}.json`.

  Raises ValueError naming the shard when one is damaged (truncated, random bytes: TF's
  record checksums fail) or holds another number of records than the json says (a shard cut
  at a record boundary, or replaced). Returns the record count. (LSPET's 8,100 train
  records, 130 MB: about 2 s on one core.)
  """
  import tensorflow as tf

  meta = read_meta(data_dir, split)
  paths = list_shards(data_dir, split)
  for path, expected in zip(paths, shard_sizes(meta["num_records"], meta["num_shards"])):
    try:
      # Batched: a per-record reduce costs ~3 ms a record, this about 0.2 ms.
      found, framed = (int(v) for v in tf.data.TFRecordDataset(
          path, buffer_size=8 << 20).batch(4096).reduce(
              (tf.constant(0, tf.int64), tf.constant(0, tf.int64)),
              lambda acc, batch: (acc[0] + tf.size(batch, tf.int64),
                                  acc[1] + tf.reduce_sum(tf.cast(
                                      tf.strings.length(batch, "BYTE"), tf.int64))
                                  + _RECORD_OVERHEAD * tf.size(batch, tf.int64))))
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
      raise ValueError(f"{path} is damaged ({e.message.splitlines()[0][:200]}); write split "
                       f"{split!r} again with `python -m deeppose_tf.data.prepare`") from None
    size = os.path.getsize(path)
    if framed != size:  # the reader stops silently at a partial record at the end
      raise ValueError(f"{path} is damaged: its {found} whole records take {framed} bytes of "
                       f"its {size}; write split {split!r} again with `python -m "
                       "deeppose_tf.data.prepare`")
    if found != expected:
      raise ValueError(f"{path} holds {found} records where {split}.json's "
                       f"{meta['num_records']} records in {meta['num_shards']} shards mean "
                       f"{expected}: the shard was cut or replaced; write split {split!r} "
                       "again with `python -m deeppose_tf.data.prepare`")
  return meta["num_records"]


def parse(serialized, num_joints: int) -> dict:
  """Parses a serialized record (graph-safe, for tf.data.Dataset.map).

  Returns image (encoded bytes, scalar string), image_id, height, width (int32 scalars),
  joints (K, 2) float32 image pixels, visible (K,) float32, box (4,) float32,
  has_box (bool scalar) and area (float32 scalar, -1 where the record has none).
  """
  import tensorflow as tf

  spec = {
      "image/encoded": tf.io.FixedLenFeature([], tf.string),
      "image/id": tf.io.FixedLenFeature([], tf.string),
      "image/height": tf.io.FixedLenFeature([], tf.int64),
      "image/width": tf.io.FixedLenFeature([], tf.int64),
      "joints": tf.io.FixedLenFeature([num_joints * 2], tf.float32),
      "visible": tf.io.FixedLenFeature([num_joints], tf.float32),
      "box": tf.io.VarLenFeature(tf.float32),
      "area": tf.io.VarLenFeature(tf.float32),
  }
  ex = tf.io.parse_single_example(serialized, spec)
  box = tf.sparse.to_dense(ex["box"])
  has_box = tf.equal(tf.size(box), 4)
  box = tf.cond(has_box, lambda: tf.reshape(box, [4]), lambda: tf.zeros([4]))
  area = tf.sparse.to_dense(ex["area"])
  has_area = tf.equal(tf.size(area), 1)
  area = tf.cond(has_area, lambda: tf.reshape(area, []), lambda: tf.constant(-1.0))
  return {
      "image": ex["image/encoded"],
      "image_id": ex["image/id"],
      "height": tf.cast(ex["image/height"], tf.int32),
      "width": tf.cast(ex["image/width"], tf.int32),
      "joints": tf.reshape(ex["joints"], [num_joints, 2]),
      "visible": ex["visible"],
      "box": box,
      "has_box": has_box,
      "area": area,  # -1 where the record has none
  }
