"""Tests of data/records.py: the schema round trip, validation, and crash-safe writes."""

import os

import numpy as np
import pytest
import tensorflow as tf

from deeppose_tf.data import records

from helpers import encode, random_records

K = 14


def read_all(data_dir, split, num_joints=K):
  files = records.list_shards(data_dir, split)
  ds = tf.data.TFRecordDataset(files).map(lambda s: records.parse(s, num_joints))
  out = {}
  for f in ds:
    f = {k: v.numpy() for k, v in f.items()}
    out[f["image_id"].decode()] = f
  return out


def one_record(rid="rec/0001", h=20, w=30, fmt="JPEG"):
  image = np.random.default_rng(0).integers(0, 256, (h, w, 3)).astype(np.uint8)
  joints = (np.random.default_rng(1).uniform(0, 1, (K, 2)) * [w, h]).astype(np.float32)
  return records.PoseRecord(rid, encode(image, fmt), joints, np.ones(K, np.float32))


# ------------------------------------------------------------------------------ round trip

@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_write_list_parse_round_trip(tmp_path, fmt):
  d = str(tmp_path)
  recs = random_records(10, seed=3, fmt=fmt)
  for i, r in enumerate(recs):
    if i % 4 == 1:
      r.box = np.float32([10.0 + i, 12.0, 20.0, 30.0])
    if i % 3 == 0:  # an unannotated joint with junk coordinates
      r.joints[r.visible == 0] = np.nan
  n = records.write_split(recs, d, "train", K, num_shards=3, meta={"dataset": "tiny"})
  assert n == 10
  shards = records.list_shards(d, "train")
  assert [os.path.basename(p) for p in shards] == [
      f"train-{i:05d}-of-00003.tfrecord" for i in range(3)]
  meta = records.read_meta(d, "train")
  annotated = int(sum(r.visible.sum() for r in recs))
  assert meta["dataset"] == "tiny" and meta["num_records"] == 10 and meta["num_shards"] == 3
  assert meta["annotated_joints"] == annotated
  assert meta["masked_joints"] == 10 * K - annotated
  parsed = read_all(d, "train")
  assert sorted(parsed) == sorted(r.image_id for r in recs)
  for r in recs:
    f = parsed[r.image_id]
    assert f["image"] == r.image  # the original bytes, never re-encoded
    h, w = np.asarray(tf.io.decode_image(r.image).shape[:2])
    assert (f["height"], f["width"]) == (h, w)
    vis = r.visible > 0
    np.testing.assert_array_equal(f["visible"], r.visible)
    np.testing.assert_array_equal(f["joints"][vis], r.joints[vis])
    np.testing.assert_array_equal(f["joints"][~vis], 0.0)  # NaN junk stored as zeros
    assert np.all(np.isfinite(f["joints"]))
    assert bool(f["has_box"]) == (r.box is not None)
    np.testing.assert_array_equal(f["box"], r.box if r.box is not None else np.zeros(4))


def test_parse_inside_dataset_map_and_eagerly_agree(tmp_path):
  d = str(tmp_path)
  recs = random_records(3, seed=4)
  recs[1].box = np.float32([5, 6, 7, 8])
  records.write_split(recs, d, "s", K, num_shards=1)
  raw = list(tf.data.TFRecordDataset(records.list_shards(d, "s")))
  mapped = list(tf.data.TFRecordDataset(records.list_shards(d, "s")).map(
      lambda s: records.parse(s, K)))
  for s, m in zip(raw, mapped):
    e = records.parse(s, K)
    for key in e:
      np.testing.assert_array_equal(e[key].numpy(), m[key].numpy())


def test_rewrite_replaces_old_shards(tmp_path):
  d = str(tmp_path)
  records.write_split(random_records(6, seed=1), d, "train", K, num_shards=3)
  records.write_split(random_records(4, seed=2), d, "train", K, num_shards=2)
  assert sorted(os.listdir(d)) == ["train-00000-of-00002.tfrecord",
                                   "train-00001-of-00002.tfrecord", "train.json"]
  assert len(read_all(d, "train")) == 4


# ------------------------------------------------------------------------------ validation

def _bad(mutate):
  r = one_record()
  mutate(r)
  return r


def _truncate(r):
  r.image = r.image[:len(r.image) // 2]


def _truncate_jpeg(r):
  """Cuts a JPEG half way through its entropy-coded scan, after every header segment
  (cutting inside the headers would fail to open at all and test nothing new)."""
  r.image = encode(np.random.default_rng(0).integers(0, 256, (48, 64, 3)).astype(np.uint8))
  sos = r.image.index(b"\xff\xda")
  r.image = r.image[:(sos + len(r.image)) // 2]


def _truncate_png(r):
  r.image = encode(np.random.default_rng(0).integers(0, 256, (20, 30, 3)).astype(np.uint8),
                   "PNG")
  _truncate(r)


BAD = {
    "corrupt_image": lambda r: setattr(r, "image", b"this is not an image at all"),
    "empty_image": lambda r: setattr(r, "image", b""),
    "truncated_jpeg": _truncate_jpeg,
    "truncated_png": _truncate_png,
    "nan_annotated_joint": lambda r: r.joints.__setitem__((3, 0), np.nan),
    "inf_annotated_joint": lambda r: r.joints.__setitem__((5, 1), np.inf),
    "wrong_joint_shape": lambda r: setattr(r, "joints", r.joints[:10]),
    "flat_joints": lambda r: setattr(r, "joints", r.joints.ravel()),
    "wrong_visible_shape": lambda r: setattr(r, "visible", r.visible[:13]),
    "visible_not_binary": lambda r: r.visible.__setitem__(2, 0.5),
    "no_annotated_joint": lambda r: setattr(r, "visible", np.zeros(K, np.float32)),
    "box_wrong_shape": lambda r: setattr(r, "box", np.float32([1, 2, 3])),
    "box_nan": lambda r: setattr(r, "box", np.float32([10, np.nan, 5, 5])),
    "box_zero_width": lambda r: setattr(r, "box", np.float32([10, 10, 0, 5])),
    "box_negative_height": lambda r: setattr(r, "box", np.float32([10, 10, 5, -1])),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_validate_rejects_bad_record_naming_it(name):
  r = _bad(BAD[name])
  with pytest.raises(ValueError, match="rec/0001"):
    records.validate(r, K)


def test_validate_zeroes_unannotated_nan_joints_and_fills_size():
  r = one_record(h=21, w=33, fmt="PNG")
  r.visible[[1, 6]] = 0
  r.joints[1] = np.nan
  r.joints[6] = [1e9, -5.0]
  v = records.validate(r, K)
  assert (v.height, v.width) == (21, 33)
  np.testing.assert_array_equal(v.joints[[1, 6]], 0.0)
  np.testing.assert_array_equal(v.joints[v.visible > 0], r.joints[r.visible > 0])
  assert v.joints.dtype == np.float32 and v.visible.dtype == np.float32
  assert np.isnan(r.joints[1, 0])  # the caller's record is not modified in place


def test_validate_accepts_good_record_with_box():
  r = one_record()
  r.box = [15, 10, 30, 20]
  v = records.validate(r, K)
  assert v.box.dtype == np.float32 and v.box.shape == (4,)


def test_image_over_pixel_limit_rejected_from_header(monkeypatch):
  r = one_record(h=20, w=30)
  monkeypatch.setattr(records, "MAX_IMAGE_PIXELS", 600)
  assert records.validate(r, K).height == 20  # exactly at the limit is fine
  monkeypatch.setattr(records, "MAX_IMAGE_PIXELS", 599)
  with pytest.raises(ValueError, match=r"rec/0001.*600 pixels"):
    records.validate(r, K)


# -------------------------------------------------------------------------- crash safety

def _failing(recs, after):
  for i, r in enumerate(recs):
    if i == after:
      raise RuntimeError("reader crashed")
    yield r


def test_failed_write_leaves_nothing_behind(tmp_path):
  d = str(tmp_path / "out")
  with pytest.raises(RuntimeError, match="reader crashed"):
    records.write_split(_failing(random_records(6), 3), d, "train", K, num_shards=2)
  assert os.listdir(d) == []  # no shard, no temp file, no json
  with pytest.raises(ValueError, match="prepare"):
    records.list_shards(d, "train")


def test_invalid_record_midway_leaves_nothing_behind(tmp_path):
  d = str(tmp_path)
  recs = random_records(6)
  recs[4].image = b"garbage"
  with pytest.raises(ValueError, match=recs[4].image_id):
    records.write_split(recs, d, "train", K, num_shards=2)
  assert os.listdir(d) == []


def test_failed_rewrite_keeps_the_old_split_and_the_others(tmp_path):
  """A crashed rewrite leaves the previous split exactly as it was (issue 13: prepare used
  to delete a good split before validating a single new record), no temporary files, and
  the other splits untouched."""
  d = str(tmp_path)
  records.write_split(random_records(4, seed=1), d, "train", K, num_shards=2)
  records.write_split(random_records(3, seed=2), d, "test", K, num_shards=1)
  before = sorted(os.listdir(d))
  with pytest.raises(RuntimeError):
    records.write_split(_failing(random_records(6), 3), d, "train", K, num_shards=2)
  assert sorted(os.listdir(d)) == before
  assert len(read_all(d, "train")) == 4 and records.verify_split(d, "train") == 4
  assert len(read_all(d, "test")) == 3


def test_list_shards_refuses_incomplete_split(tmp_path):
  d = str(tmp_path)
  records.write_split(random_records(4), d, "train", K, num_shards=2)
  os.remove(os.path.join(d, "train.json"))  # shards without json: never completed
  with pytest.raises(ValueError, match="prepare"):
    records.list_shards(d, "train")
  with pytest.raises(ValueError, match="prepare"):
    records.list_shards(d, "nonexistent")


def test_list_shards_refuses_split_with_missing_shard(tmp_path):
  d = str(tmp_path)
  records.write_split(random_records(4), d, "train", K, num_shards=2)
  os.remove(os.path.join(d, "train-00001-of-00002.tfrecord"))
  with pytest.raises(ValueError, match="train-00001-of-00002"):
    records.list_shards(d, "train")
