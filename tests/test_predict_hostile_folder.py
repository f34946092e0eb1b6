"""Issue 21's hostile-folder suite: one predict run over a generated folder tree of 300+
inputs, good, damaged and odd (every Pillow format and mode, EXIF orientations, truncated and
random files, a decompression bomb, dangling links and link loops, the same name in several
folders, the same file by two paths, a box file of good and bad boxes). Every good image gets
its record, every bad input its named error, every bad box its named refusal; no output file
is shared, lost or left half-written. Seeded: a failure reproduces."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, subprocess_env, tiny_predict_workdir
from test_predict_faults import _bomb_png, _photo

SEED = 21
FORMATS = (("JPEG", ".jpg", ("RGB", "L", "CMYK")), ("PNG", ".png", ("RGB", "L", "P", "RGBA",
                                                                   "LA", "1")),
           ("BMP", ".bmp", ("RGB", "L", "P")), ("GIF", ".gif", ("P", "L")),
           ("WEBP", ".webp", ("RGB", "RGBA")), ("TIFF", ".tif", ("RGB", "CMYK", "L")))


def _write_good(path, rng, fmt, mode):
  h, w = rng.randint(24, 140, 2)
  im = Image.fromarray(_photo(h, w, seed=rng.randint(1 << 30)))
  im = im.convert(mode) if mode != "RGBA" else im.convert("RGBA")
  kwargs = {}
  if fmt == "JPEG" and rng.rand() < 0.4:  # phone photos: an EXIF orientation
    exif = Image.Exif()
    exif[0x0112] = int(rng.choice([3, 6, 8]))
    kwargs["exif"] = exif.tobytes()
  im.save(path, fmt, **kwargs)


def _write_bad(path, rng, good_bytes):
  kind = rng.randint(5)
  if kind == 0:
    open(path, "wb").close()  # empty
  elif kind == 1:
    with open(path, "wb") as f:
      f.write(rng.bytes(rng.randint(1, 3000)))  # noise
  elif kind == 2:
    with open(path, "wb") as f:
      f.write(good_bytes[:rng.randint(8, max(9, len(good_bytes) // 3))])  # truncated
  elif kind == 3:
    with open(path, "w") as f:
      f.write("not a picture\n" * rng.randint(1, 50))
  else:
    with open(path, "wb") as f:  # a real header, damaged data
      data = bytearray(good_bytes)
      for i in rng.randint(min(64, len(data) - 1), len(data), 40):
        data[i] = rng.randint(256)
      f.write(bytes(data[:len(data) // 2]))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
  """(root, inputs given on the command line, good real paths, bad paths, boxes file,
  expected refused boxes)."""
  rng = np.random.RandomState(SEED)
  root = tmp_path_factory.mktemp("hostile")
  folders = [root / "a", root / "b", root / "b" / "deep", root / "c"]
  for d in folders:
    d.mkdir(parents=True, exist_ok=True)
  good, bad = [], []
  for i in range(220):
    fmt, ext, modes = FORMATS[rng.randint(len(FORMATS))]
    d = folders[rng.randint(len(folders))]
    # Names repeat across folders on purpose (photo0007.jpg in a/ and in c/).
    path = d / f"photo{rng.randint(150):04d}{ext}"
    if path.exists():
      continue
    _write_good(path, rng, fmt, modes[rng.randint(len(modes))])
    good.append(path)
  sample = open(good[0], "rb").read()
  for i in range(90):
    ext = FORMATS[rng.randint(len(FORMATS))][1]
    path = folders[rng.randint(len(folders))] / f"broken{i:03d}{ext}"
    _write_bad(path, rng, sample)
    bad.append(path)
  _bomb_png(root / "a" / "bomb.png")
  bad.append(root / "a" / "bomb.png")
  for i in range(8):  # links: to a good file (the same file twice), dangling, loops
    os.symlink(str(good[i]), str(root / "c" / f"link{i}.jpg"))
    os.symlink(str(root / "nowhere" / f"{i}.jpg"), str(root / "c" / f"dangling{i}.jpg"))
    bad.append(root / "c" / f"dangling{i}.jpg")
  for i in range(3):
    os.symlink(str(root / "c" / f"loop{i}b.png"), str(root / "c" / f"loop{i}a.png"))
    os.symlink(str(root / "c" / f"loop{i}a.png"), str(root / "c" / f"loop{i}b.png"))
    bad += [root / "c" / f"loop{i}a.png", root / "c" / f"loop{i}b.png"]
  (root / "a" / "notes.txt").write_text("not an input")  # no image extension: not listed
  boxes, refused = {}, 0
  for path in good[::7]:  # keyed by path: names repeat across folders
    w, h = Image.open(path).size
    rows = [[0, 0, w, h], [w * 0.2, h * 0.1, w * 0.5, h * 0.8]]
    if rng.rand() < 0.5:
      rows.append([-10 * w, -10 * h, 5, 5])  # outside
      refused += 1
    if rng.rand() < 0.5:
      rows.append([0, 0, 1e7, 1e7])  # absurd
      refused += 1
    boxes[str(path)] = rows
  box_file = root / "boxes.json"
  box_file.write_text(json.dumps(boxes))
  inputs = [str(d) for d in folders] + [str(root / "c" / "*.jpg"),  # c/*.jpg again by glob
                                        os.path.join(str(good[0].parent), ".", good[0].name)]
  return root, inputs, {os.path.realpath(p) for p in good}, bad, box_file, refused, boxes


@pytest.mark.slow  # 10-22 s: the default run stays under 10 minutes
def test_a_hostile_tree_of_300_inputs(tree, tmp_path):
  root, inputs, good, bad, box_file, refused, boxes = tree
  assert len(good) + len(bad) >= 300
  workdir = tiny_predict_workdir(str(tmp_path / "model"), 67)
  out = str(tmp_path / "out")
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.predict", *inputs,
                        f"--model={workdir}", f"--output={out}", f"--boxes={box_file}",
                        "--coco"], capture_output=True, text=True, env=subprocess_env(),
                       cwd=REPO, timeout=900)
  assert run.returncode == 1, run.stderr[-3000:]
  assert "Traceback" not in run.stderr
  with open(os.path.join(out, "predictions.jsonl"), encoding="utf-8") as f:
    recs = [json.loads(line) for line in f]
  # Every good image once (links and repeated arguments included), nothing else.
  seen = {}
  for r in recs:
    seen.setdefault(os.path.realpath(r["image"]), set()).add(r["image"])
  assert set(seen) == good
  assert all(len(paths) == 1 for paths in seen.values())  # one path per file: once
  # Every bad input named, and counted.
  for path in bad:
    assert str(path) in run.stderr, path
  failed_line = [ln for ln in run.stderr.splitlines() if "input(s) failed" in ln]
  assert failed_line and failed_line[0].startswith(f"{len(bad)} input(s) failed"), (
      sorted(set(failed_line[0].split(": ", 1)[1].split(", ")) ^ {str(p) for p in bad})
      if failed_line else run.stderr[-2000:])
  assert f"{refused} box(es) refused" in run.stderr
  # Box files: each good box gives a person, each bad one none.
  for key, rows in boxes.items():
    people = [r for r in recs if os.path.realpath(r["image"]) == os.path.realpath(key)]
    assert len(people) == 2, key
  # Every record's overlay is its own and exists; nothing half-written is left.
  overlay_of = {}
  for r in recs:
    overlay_of.setdefault(r["overlay"], set()).add(os.path.realpath(r["image"]))
  assert all(len(v) == 1 for v in overlay_of.values())
  assert len(overlay_of) == len(good)
  names = os.listdir(out)
  for name in overlay_of:
    assert name in names
    assert Image.open(os.path.join(out, name)).size[0] > 0
  assert not [n for n in names if ".tmp" in n or n.endswith(".partial")]
  coco = json.load(open(os.path.join(out, "keypoints_coco.json")))
  assert len(coco["annotations"]) == sum(r["person"] is not None for r in recs)
