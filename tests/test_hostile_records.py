"""Property-based hostile inputs for the record path (hypothesis).

Whatever bytes, joints or serialized records come in, the result is either a valid record or
a clean error naming the record, the process stays alive, and no output file is left
behind. Each test counts the inputs it tried and asserts the count, so a silently skipped
property cannot pass.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deeppose_tf import pipeline
from deeppose_tf.data import records

from helpers import encode

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
_VALID = {fmt: encode(np.random.RandomState(0).randint(0, 256, (24, 32, 3)).astype(np.uint8),
                      fmt) for fmt in ("JPEG", "PNG")}
_JOINTS = np.full((14, 2), 5.0, np.float32)
_VIS = np.ones(14, np.float32)
tried = {"bytes": 0, "mutated": 0, "joints": 0, "serialized": 0}


def _outcome(data, joints=_JOINTS, visible=_VIS):
  """'ok' when the record validates and decodes in TF, else the ValueError text."""
  try:
    rec = records.validate(records.PoseRecord("hostile/1", data, joints, visible), 14)
  except ValueError as e:
    assert "hostile/1" in str(e)  # the message names the record
    return str(e)
  image = pipeline.decode_image(tf.constant(rec.image))
  assert tuple(image.shape) == (rec.height, rec.width, 3)
  return "ok"


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes_are_rejected_cleanly(data):
  tried["bytes"] += 1
  assert _outcome(data) != "ok"


@SETTINGS
@given(fmt=st.sampled_from(["JPEG", "PNG"]), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6))
def test_truncated_or_bitflipped_images_validate_only_if_tf_decodes_them(fmt, cut, flips):
  """What prepare accepts, the training pipeline decodes (checked inside _outcome)."""
  tried["mutated"] += 1
  data = bytearray(_VALID[fmt][:max(1, int(len(_VALID[fmt]) * cut))] if cut < 1
                   else _VALID[fmt])
  for where, value in flips:
    data[min(int(where * len(data)), len(data) - 1)] = value
  _outcome(bytes(data))


@SETTINGS
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32)),
                min_size=0, max_size=40),
       st.lists(st.sampled_from([0.0, 1.0, 2.0, -1.0]), min_size=0, max_size=20))
def test_hostile_joints_give_valueerror_or_finite_record(flat, vis):
  tried["joints"] += 1
  joints = np.asarray(flat, np.float32)
  joints = joints.reshape(-1, 2) if len(flat) % 2 == 0 else joints
  try:
    rec = records.validate(records.PoseRecord("hostile/1", _VALID["PNG"], joints,
                                              np.asarray(vis, np.float32)), 14)
  except ValueError as e:
    assert "hostile/1" in str(e)
    return
  assert np.all(np.isfinite(rec.joints)) and rec.visible.sum() > 0


@SETTINGS
@given(st.binary(max_size=512))
def test_random_serialized_records_fail_in_tf_data_not_the_process(data):
  """TF quotes the offending bytes in its parse error; when they are not UTF-8, TF's own
  Python wrapper raises UnicodeDecodeError while building the message (a TF quirk). Either
  way the error is raised to the caller and the process carries on."""
  tried["serialized"] += 1
  ds = tf.data.Dataset.from_tensors(tf.constant(data)).map(lambda s: records.parse(s, 14))
  with pytest.raises((tf.errors.InvalidArgumentError, UnicodeDecodeError)):
    next(iter(ds))


def test_a_hostile_record_mid_split_leaves_no_files(tmp_path):
  good = records.PoseRecord("hostile/good", _VALID["JPEG"], _JOINTS, _VIS)
  bad = records.PoseRecord("hostile/bad", _VALID["JPEG"][:100], _JOINTS, _VIS)
  with pytest.raises(ValueError, match="hostile/bad"):
    records.write_split([good, good, bad, good], str(tmp_path), "train", 14, num_shards=2)
  assert os.listdir(tmp_path) == []


def test_every_property_ran_its_examples():
  """Run last in this module (pytest keeps file order): each property saw >= 60 inputs."""
  assert all(n >= 60 for n in tried.values()), tried
