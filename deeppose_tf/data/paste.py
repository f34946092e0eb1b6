"""Small people: a prepared split's photos pasted into canvases several times their size.

  python -m deeppose_tf.data.paste --data_dir=runs/lsp_imagenet/lspet --split=val \\
      --output_dir=runs/small_people --scale=3 --canvas=photo

Each record's photo goes, at its own size, to a random place on a canvas `--scale` times its
width and height: a plain grey one (`plain`), or a mosaic of background patches cut from other
photos of the split away from their annotated people (`photo`: clutter, but no second, larger
person than the one pasted). The joints move
with the photo; the record has no box, so the split's box is the whole canvas, as a user's
photo of a small person off-centre would be. The new split has the source's name and
skeleton. It measures person framing (`evaluate --boxes=auto|detect` against the source
split): on the photos themselves the person fills the frame, here a third of it or less.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
from absl import app, flags, logging
from PIL import Image, ImageFilter

from deeppose_tf.data import records

CANVASES = ("plain", "photo")


def _decode(data: bytes, image_id: str) -> Image.Image:
  try:
    with Image.open(io.BytesIO(data)) as im:
      return im.convert("RGB")
  except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a damaged file
    raise ValueError(f"record {image_id}: its image does not decode ({e})") from None


def read_split(data_dir: str, split: str, limit: int = 0):
  """The split's records in file order: [(image_id, image bytes, joints (K, 2) image px,
  visible (K,))]."""
  import tensorflow as tf
  meta = records.read_meta(data_dir, split)
  k = meta["num_joints"]
  ds = tf.data.TFRecordDataset(records.list_shards(data_dir, split))
  out = []
  for serialized in ds:
    f = records.parse(serialized, k)
    out.append((f["image_id"].numpy().decode(), f["image"].numpy(),
                f["joints"].numpy(), f["visible"].numpy()))
    if limit and len(out) >= limit:
      break
  return out


def paste(photo: Image.Image, joints: np.ndarray, canvas: Image.Image,
          rng: np.random.RandomState):
  """Pastes `photo` (w x h) at a uniformly random place inside `canvas` (W x H, W >= w,
  H >= h). joints (K, 2) photo pixels -> the pasted image and the joints in its pixels."""
  w, h = photo.size
  big_w, big_h = canvas.size
  x0 = int(rng.randint(0, big_w - w + 1))
  y0 = int(rng.randint(0, big_h - h + 1))
  out = canvas.copy()
  out.paste(photo, (x0, y0))
  return out, (np.asarray(joints, np.float32) + np.float32([x0, y0]))


def background_patch(photo: Image.Image, joints: np.ndarray, visible: np.ndarray, side: int,
                     rng: np.random.RandomState, tries: int = 20):
  """A side x side patch of `photo` that keeps clear of its annotated person (the joints'
  box grown 1.3x), or None when none of `tries` random places does."""
  w, h = photo.size
  if side > min(w, h):
    return None
  pts = np.asarray(joints, np.float32)[np.asarray(visible) > 0]
  if len(pts):
    lo, hi = pts.min(0), pts.max(0)
    c, half = (lo + hi) / 2, (hi - lo) * 0.65
    lo, hi = c - half, c + half
  for _ in range(tries):
    x, y = int(rng.randint(0, w - side + 1)), int(rng.randint(0, h - side + 1))
    if not len(pts) or x + side <= lo[0] or x >= hi[0] or y + side <= lo[1] or y >= hi[1]:
      return photo.crop((x, y, x + side, y + side))
  return None


def make_canvas(kind: str, size, rng: np.random.RandomState = None, others=()) -> Image.Image:
  """A W x H canvas: uniform grey (plain), or (photo) a mosaic of background patches, each an
  eighth of the canvas' shorter side, cut from other photos away from their annotated
  person (so the canvas holds clutter but no second, larger person to find), blurred a little
  so the seams do not look like limbs. others: [(PIL image, joints (K, 2), visible (K,))]."""
  if kind == "plain":
    return Image.new("RGB", size, (128, 128, 128))
  if kind != "photo":
    raise ValueError(f"canvas must be one of {CANVASES}, got {kind!r}")
  canvas = Image.new("RGB", size, (128, 128, 128))
  side = max(8, min(size) // 8)
  for y in range(0, size[1], side):
    for x in range(0, size[0], side):
      for _ in range(8):
        image, joints, visible = others[int(rng.randint(len(others)))]
        patch = background_patch(image, joints, visible, min(side, min(image.size) // 3), rng)
        if patch is not None:
          canvas.paste(patch.resize((side, side), Image.BILINEAR), (x, y))
          break
  return canvas.filter(ImageFilter.GaussianBlur(1.5))


def pasted_records(source, scale: float, canvas: str, seed: int = 0):
  """Yields records.PoseRecord: each source record's photo pasted into a canvas `scale`
  times its size (JPEG, quality 95), box None (the whole canvas)."""
  if scale < 1:
    raise ValueError(f"scale must be at least 1, got {scale}")
  rng = np.random.RandomState(seed)
  for i, (image_id, data, joints, visible) in enumerate(source):
    photo = _decode(data, image_id)
    size = (int(round(photo.width * scale)), int(round(photo.height * scale)))
    others = []
    if canvas == "photo":  # ten other photos of the split
      for j in rng.choice(len(source), size=min(11, len(source)), replace=False):
        if int(j) != i and len(others) < 10:
          others.append((_decode(source[j][1], source[j][0]), source[j][2], source[j][3]))
      if not others:  # a one-record split: its own background
        others = [(photo, joints, visible)]
    image, moved = paste(photo, joints, make_canvas(canvas, size, rng, others), rng)
    # Unannotated joints keep the zeros the records store for them.
    moved = np.where(np.asarray(visible)[:, None] > 0, moved, joints).astype(np.float32)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95)
    yield records.PoseRecord(f"{image_id}@pasted", buf.getvalue(), moved,
                             np.asarray(visible, np.float32))


def write(data_dir: str, split: str, output_dir: str, scale: float = 3.0,
          canvas: str = "plain", seed: int = 0, limit: int = 0) -> int:
  """Writes `output_dir/{split}` (the pasted split); returns its record count."""
  if canvas not in CANVASES:
    raise ValueError(f"canvas must be one of {CANVASES}, got {canvas!r}")
  if os.path.abspath(output_dir) == os.path.abspath(data_dir):
    raise ValueError("--output_dir must differ from --data_dir: the pasted split would "
                     "replace its source")
  meta = records.read_meta(data_dir, split)
  source = read_split(data_dir, split, limit)
  keep = {k: v for k, v in meta.items() if k in ("dataset", "skeleton", "seed", "source")}
  keep.update({"pasted_from": os.path.abspath(data_dir), "paste_scale": scale,
               "paste_canvas": canvas, "paste_seed": seed})
  from deeppose_tf.progress import Progress
  bar = Progress(f"paste {split}", len(source), unit="images")
  count = records.write_split(pasted_records(source, scale, canvas, seed), output_dir, split,
                              meta["num_joints"], num_shards=1, meta=keep,
                              progress=lambda n: bar.update(1))
  bar.close()
  return count


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("data_dir", None, "Folder of the prepared split to paste from.")
  flags.DEFINE_string("split", "val", "The split to paste (its name is kept).")
  flags.DEFINE_string("output_dir", None, "Folder for the pasted split (not --data_dir).")
  flags.DEFINE_float("scale", 3.0, "Canvas width and height over the photo's.", lower_bound=1)
  flags.DEFINE_enum("canvas", "plain", list(CANVASES), "plain: uniform grey; photo: a "
                    "mosaic of background patches from other photos of the split.")
  flags.DEFINE_integer("seed", 0, "Seed of the places and the canvas photos.")
  flags.DEFINE_integer("limit", 0, "Paste at most this many records (0 = all).", lower_bound=0)
  flags.mark_flags_as_required(["data_dir", "output_dir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  n = write(FLAGS.data_dir, FLAGS.split, FLAGS.output_dir, FLAGS.scale, FLAGS.canvas,
            FLAGS.seed, FLAGS.limit)
  logging.info("wrote %d pasted records to %s", n, FLAGS.output_dir)
  print(json.dumps({"records": n, "output_dir": FLAGS.output_dir, "split": FLAGS.split}))


if __name__ == "__main__":
  define_flags()
  from deeppose_tf import cli
  cli.run(main, "paste")
