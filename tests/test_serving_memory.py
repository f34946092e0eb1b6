"""Serving memory follows a request's real pixels, not B x Hmax x Wmax; image-by-image crops
sample what a crop of the zero-padded batch sampled.

Two small PNGs of 1000 x 20000 and 20000 x 1000 pixels (width x height, 20 MP each, under the
50 MP limit) once made a loaded SavedModel grow to 8.2 GB: every image of a batch was padded
to the largest height times the largest width (2 x 400 MP). A fresh python process loads a
tiny exported cascade, sends that request and reports its peak RSS
(getrusage(RUSAGE_SELF).ru_maxrss), which must stay far below that; the answer must match
each image predicted on its own.
"""

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeppose_tf import cascade, export, geometry
from deeppose_tf.models import builder as model_lib
from deeppose_tf.skeleton import LSP14

# Before the fix the request below peaked at 8.2 GB (848 MB after loading); after it, 1.05 GB.
MAX_PEAK_RSS_MB = 2500


def _chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + kind + data
          + struct.pack(">I", zlib.crc32(kind + data)))


def _striped_png(width: int, height: int, block: int = 64) -> bytes:
  """An RGB PNG of width x height with a checkerboard of block-pixel squares, compressed row
  by row (never holding the raw pixels): a few hundred kB for tens of megapixels."""
  rows = []
  for phase in (0, 1):
    row = bytearray()
    for x in range(0, width, block):
      value = 255 if ((x // block) + phase) % 2 else 40
      row += bytes([value, 255 - value, value // 2]) * min(block, width - x)
    rows.append(b"\x00" + bytes(row))  # filter type 0 (none) per row
  z = zlib.compressobj(6)
  idat = b"".join(z.compress(rows[(y // block) % 2]) for y in range(height)) + z.flush()
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
  return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
          + _chunk(b"IEND", b""))


# Runs in a fresh process: the peak RSS is measured right after the request, before the
# reference (which decodes the images again) is computed.
_PROBE = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    import tensorflow as tf
    path, *pngs = sys.argv[1:]
    blobs = [open(p, "rb").read() for p in pngs]
    m = tf.saved_model.load(path)
    m.signatures["serving_default"](image_bytes=tf.constant(blobs[:1]))  # trace, warm up
    def peak_mb():
      return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    before = peak_mb()
    t = time.perf_counter()
    try:
      out = m.signatures["serving_default"](image_bytes=tf.constant(blobs))
      joints, error = out["joints_per_stage"].numpy(), None
    except tf.errors.InvalidArgumentError as e:
      joints, error = None, e.message
    seconds = time.perf_counter() - t
    result = {"peak_mb_before": before, "peak_mb": peak_mb(), "seconds": seconds,
              "error": error}
    if joints is not None:
      ref = []
      for blob in blobs:  # each image alone, as predict_images sees it
        image = tf.io.decode_png(blob, channels=3)[None]
        ref.append(m.signatures["predict_images"](images=image, boxes=tf.zeros([1, 4]))[
            "joints_per_stage"].numpy()[0])
      result["shape"] = list(joints.shape)
      result["max_diff_px"] = float(np.abs(joints - np.stack(ref)).max())
    print(json.dumps(result))
""")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
  keras.utils.set_random_seed(2)
  config = model_lib.ModelConfig(input_size=72, width=0.1, fc_units=16, output_init="default")
  casc = cascade.Cascade([model_lib.build_regressor(config, name=f"s{s}") for s in (1, 2)],
                         LSP14, 2.0, 72)
  return export.export_saved_model("", str(tmp_path_factory.mktemp("memory")), version=1,
                                   casc=casc)


@pytest.mark.slow  # 12 s: the default run stays under 10 minutes
def test_tall_and_wide_pngs_do_not_pad_to_their_bounding_square(saved_model, tmp_path):
  pngs = []
  for name, (w, h) in {"tall": (1000, 20000), "wide": (20000, 1000)}.items():
    pngs.append(str(tmp_path / f"{name}.png"))
    with open(pngs[-1], "wb") as f:
      f.write(_striped_png(w, h))
  run = subprocess.run([sys.executable, "-c", _PROBE, saved_model, *pngs],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert run.returncode == 0, run.stderr[-3000:]
  got = json.loads(run.stdout.strip().splitlines()[-1])
  print(f"peak RSS {got['peak_mb']:.0f} MB (after loading and warm-up "
        f"{got['peak_mb_before']:.0f} MB), request {got['seconds']:.1f} s")
  assert got["peak_mb"] < MAX_PEAK_RSS_MB, got
  assert got["error"] is None, got["error"]
  assert got["shape"] == [2, 2, 14, 2]
  # The same crops of the same images. Not bit-identical: the batch of 2 and the batches of
  # 1 may take different float32 kernels (reduction order), and joints on a 20,000 px
  # image carry float32's ~1e-7 relative error times 20,000 plus the network's own
  # amplification (CI measured 0.045 px once). A crop of the wrong region or the padded
  # square moves joints by tens of pixels.
  assert got["max_diff_px"] < 0.5, got


@pytest.mark.parametrize("order", ["image order", "shuffled"])
def test_crop_each_matches_the_crop_of_the_padded_batch(order):
  """Boxes inside, across and outside three images of different sizes; crops in image order
  (as Cascade.predict cuts them) and in any order (the scatter path)."""
  rng = np.random.RandomState(0)
  sizes = np.array([[50, 70], [83, 41], [20, 90]], np.int32)  # (h, w)
  images = [rng.randint(0, 256, (h, w, 3)).astype(np.uint8) for h, w in sizes]
  padded = np.zeros((3, sizes[:, 0].max(), sizes[:, 1].max(), 3), np.uint8)
  for i, image in enumerate(images):
    padded[i, :image.shape[0], :image.shape[1]] = image
  index = np.repeat(np.arange(3, dtype=np.int32), 4)
  if order == "shuffled":
    index = rng.permutation(index)
  hw = sizes[index][:, ::-1].astype(np.float32)  # (w, h) of each box's image
  boxes = np.concatenate([rng.uniform(-0.3, 1.3, (12, 2)) * hw,
                          rng.uniform(0.2, 1.5, (12, 2)) * hw], axis=1).astype(np.float32)
  pixels = tf.RaggedTensor.from_row_lengths(
      np.concatenate([im.reshape(-1, 3) for im in images]), sizes[:, 0] * sizes[:, 1])
  got = export.crop_each(tf.constant(sizes))(pixels, boxes, index, 24)
  want = geometry.crop(padded, boxes, index, 24)
  assert got.shape == (12, 24, 24, 3)
  np.testing.assert_allclose(got, want, atol=0.05)  # grey levels: float rounding only
