"""Property-based hostile inputs for the exported serving signatures (hypothesis).

A loaded SavedModel gets random bytes, mutated JPEG/PNG, forged headers and hostile boxes.
Every call ends in a clean tf.errors.InvalidArgumentError (or, for inputs that happen to be
valid, finite joints of the right shape); the process stays alive and answers a good request
afterwards; each property's example count is asserted.
"""

import io
import struct
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from deeppose_tf import cascade, export, geometry
from deeppose_tf.models import builder as model_lib
from deeppose_tf.skeleton import LSP14

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
_rng = np.random.RandomState(0)
GOOD = {}
for _fmt in ("JPEG", "PNG"):
  _buf = io.BytesIO()
  Image.fromarray(_rng.randint(0, 256, (30, 40, 3)).astype(np.uint8)).save(_buf, _fmt)
  GOOD[_fmt] = _buf.getvalue()
tried = {"bytes": 0, "mutated": 0, "headers": 0, "boxes": 0, "tflite": 0}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  keras.utils.set_random_seed(1)
  config = model_lib.ModelConfig(input_size=72, width=0.1, fc_units=16)
  casc = cascade.Cascade([model_lib.build_regressor(config, name=f"s{s}") for s in (1, 2)],
                         LSP14, 2.0, 72)
  out = str(tmp_path_factory.mktemp("hostile_serving"))
  path = export.export_saved_model("", out, version=1, casc=casc)
  return tf.saved_model.load(path)


def _call_bytes(served, blobs, boxes=None):
  """'ok' (after checking the outputs) or the InvalidArgumentError message."""
  try:
    if boxes is None:
      out = served.signatures["serving_default"](image_bytes=tf.constant(blobs))
    else:
      out = served.signatures["predict_bytes_with_boxes"](
          image_bytes=tf.constant(blobs), boxes=tf.constant(boxes, tf.float32))
  except tf.errors.InvalidArgumentError as e:
    assert e.message.strip()
    return e.message
  joints = out["joints"].numpy()
  assert joints.shape == (len(blobs), 14, 2) and np.all(np.isfinite(joints))
  return "ok"


def _still_serves(served):
  assert _call_bytes(served, [GOOD["JPEG"], GOOD["PNG"]]) == "ok"


@SETTINGS
@given(st.lists(st.binary(max_size=600), min_size=1, max_size=3))
def test_random_bytes(served, blobs):
  tried["bytes"] += 1
  assert _call_bytes(served, blobs) != "ok"


@SETTINGS
@given(fmt=st.sampled_from(["JPEG", "PNG"]), cut=st.floats(0.0, 1.0),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=5))
def test_truncated_and_bitflipped_images(served, fmt, cut, flips):
  tried["mutated"] += 1
  data = bytearray(GOOD[fmt][:int(len(GOOD[fmt]) * cut)] if cut < 1 else GOOD[fmt])
  for where, value in flips:
    if data:
      data[min(int(where * len(data)), len(data) - 1)] = value
  _call_bytes(served, [bytes(data)])


@SETTINGS
@given(width=st.integers(0, 2 ** 31 - 1), height=st.integers(0, 2 ** 31 - 1),
       fmt=st.sampled_from(["JPEG", "PNG"]))
def test_forged_header_sizes(served, width, height, fmt):
  """Huge or zero declared sizes are refused before decoding; a plausible forged size
  fails at decoding; nothing crashes the process."""
  tried["headers"] += 1
  data = bytearray(GOOD[fmt])
  if fmt == "PNG":
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
  else:
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))
  message = _call_bytes(served, [bytes(data)])
  w, h = (width, height) if fmt == "PNG" else (min(width, 65535), min(height, 65535))
  if w * h > 50_000_000 or w == 0 or h == 0:
    assert message != "ok"


@SETTINGS
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=4,
                max_size=4))
def test_hostile_boxes(served, box):
  tried["boxes"] += 1
  message = _call_bytes(served, [GOOD["PNG"]], boxes=[box])
  if not np.all(np.isfinite(box)):
    assert message != "ok", box


@pytest.fixture(scope="module")
def tflite_casc(tmp_path_factory):
  from deeppose_tf.tflite_cascade import TFLiteCascade
  keras.utils.set_random_seed(1)
  config = model_lib.ModelConfig(input_size=72, width=0.1, fc_units=16)
  casc = cascade.Cascade([model_lib.build_regressor(config, name=f"s{s}") for s in (1, 2)],
                         LSP14, 2.0, 72, crop=geometry.crop_builtin)
  path = str(tmp_path_factory.mktemp("hostile_tflite") / "m.tflite")
  with open(path, "wb") as f:
    f.write(export.convert_tflite(casc, 96, 96))
  return TFLiteCascade(path, LSP14)


_COORD = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.floats(-200, 200))


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.one_of(st.tuples(st.integers(0, 130), st.integers(0, 130), st.just(3)),
                       st.tuples(st.integers(1, 40), st.integers(1, 40)),
                       st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 5))),
       dtype=st.sampled_from(["uint8", "float32", "float64", "int32", "bool"]),
       poison=st.sampled_from([None, np.nan, np.inf, -np.inf]),
       box=st.lists(_COORD, min_size=3, max_size=5))
def test_hostile_tflite_wrapper_inputs(tflite_casc, shape, dtype, poison, box):
  """The interpreter checks nothing: the wrapper must refuse, naming the entry, what the
  SavedModel refuses, and answer finite joints otherwise."""
  tried["tflite"] += 1
  image = np.full(shape, 77).astype(dtype)
  if poison is not None and image.size and np.issubdtype(image.dtype, np.floating):
    image.flat[0] = poison
  try:
    out = tflite_casc.predict_one(image, box)
  except ValueError as e:
    assert "image 0" in str(e) or "box 0" in str(e), str(e)
    return
  assert len(shape) == 3 and shape[2] == 3 and shape[0] * shape[1] > 0 and dtype != "bool"
  assert len(box) == 4 and np.all(np.isfinite(box))
  assert not (poison is not None and np.issubdtype(image.dtype, np.floating))
  assert out.shape == (2, 14, 2) and np.all(np.isfinite(out))


def test_process_survives_and_every_property_ran(served):
  _still_serves(served)
  assert all(n >= 50 for n in tried.values()), tried
