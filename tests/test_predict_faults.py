"""Issue 21: predict under real folders and real runs. One regression test per finding,
through the CLI where a user meets it: one bad file never stops a run, two runs never share a
file, every photo is read as a viewer shows it, every box is checked once before any model
sees it, and setup errors are one line. The CLI runs (5-8 s each, mostly TensorFlow's
import) are in the slow suite, except the box checks; CI runs both."""

import json
import os
import resource
import signal
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from deeppose_tf.predict import detect, images
from deeppose_tf.predict.output import OutputFolder
from helpers import REPO, subprocess_env, tiny_predict_workdir

SIZE = 67


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return tiny_predict_workdir(str(tmp_path_factory.mktemp("faults_workdir")), SIZE)


def _photo(h=120, w=80, seed=0):
  """A smooth colour image (gradients and a block): JPEG-friendly, every channel differs."""
  rng = np.random.RandomState(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                  (xx + yy) * 255 // max(w + h - 2, 1)], -1).astype(np.uint8)
  y0, x0 = rng.randint(0, h // 2), rng.randint(0, w // 2)
  img[y0:y0 + h // 4, x0:x0 + w // 4] = rng.randint(0, 256, 3)
  return img


def _bomb_png(path, side=20000):
  """A tiny PNG whose header declares side x side RGB (the issue's 169-byte file)."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
  with open(path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2,
                                                              0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _predict(*args, preexec_fn=None, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "deeppose_tf.predict", *args],
                        capture_output=True, text=True, env=subprocess_env(), cwd=cwd,
                        timeout=600, preexec_fn=preexec_fn)


def _records(out):
  with open(os.path.join(out, "predictions.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


# 1. One image never stops the run.

@pytest.mark.slow  # 18 s of CLI runs on one core; CI runs `pytest -m slow`
def test_a_decompression_bomb_is_that_files_error_and_the_run_goes_on(workdir, tmp_path):
  Image.fromarray(_photo()).save(tmp_path / "a.jpg")
  _bomb_png(tmp_path / "bomb.png")
  Image.fromarray(_photo(seed=1)).save(tmp_path / "z.png")
  out = str(tmp_path / "out")
  run = _predict(str(tmp_path / "a.jpg"), str(tmp_path / "bomb.png"), str(tmp_path / "z.png"),
                 f"--model={workdir}", f"--output={out}")
  assert run.returncode == 1, run.stderr[-2000:]
  assert "bomb.png: refused, too many pixels" in run.stderr
  assert "Traceback" not in run.stderr
  assert [os.path.basename(r["image"]) for r in _records(out)] == ["a.jpg", "z.png"]
  assert "1 input(s) failed" in run.stderr


# 2. Two runs never share an output folder.

@pytest.mark.slow  # 16 s of CLI runs on one core; CI runs `pytest -m slow`
def test_a_second_run_on_a_locked_output_is_refused_and_the_first_keeps_its_files(
    workdir, tmp_path):
  Image.fromarray(_photo()).save(tmp_path / "a.jpg")
  out = str(tmp_path / "out")
  holder = OutputFolder(out)  # a run in progress (the same flock a predict process takes)
  try:
    run = _predict(str(tmp_path / "a.jpg"), f"--model={workdir}", f"--output={out}")
    assert run.returncode == 2
    assert f"--output={out}: another predict run (pid {os.getpid()}" in run.stderr
    assert "Traceback" not in run.stderr
    assert not os.path.exists(os.path.join(out, "predictions.jsonl.partial"))
  finally:
    holder.release()
  run = _predict(str(tmp_path / "a.jpg"), f"--model={workdir}", f"--output={out}")
  assert run.returncode == 0, run.stderr[-2000:]
  assert len(_records(out)) == 1 and not os.path.exists(os.path.join(out, ".lock"))


# 3. Every box is checked once, with one rule, before any model sees it.

def test_box_rule_refuses_what_no_model_should_see():
  problems = detect.box_problems(np.array([
      [50, 60, 80, 120],          # the whole 100 x 120 image
      [-500, -500, 10, 10],       # entirely outside
      [50, 60, 1e30, 1e30],       # absurd
      [50, 60, 1e6, 1e6],         # far larger than the image
      [np.nan, 60, 10, 10],
      [50, 60, 0, 10],
      [105, 60, 20, 20]]), 120, 100)  # reaches past the edge: allowed
  assert problems[0] is None and problems[6] is None
  assert "outside" in problems[1] and "more than 4x" in problems[2]
  assert "more than 4x" in problems[3] and "finite" in problems[4] and "empty" in problems[5]


def test_bad_boxes_are_named_by_file_and_index_and_good_ones_are_kept(workdir, tmp_path):
  Image.fromarray(_photo(120, 100)).save(tmp_path / "a.jpg")
  boxes = tmp_path / "boxes.json"
  boxes.write_text(json.dumps({"a.jpg": [[10, 10, 40, 80], [-900, -900, 10, 10],
                                         [0, 0, 1e30, 1e30], [20, 20, 50, 60],
                                         [0, 0, 1e6, 1e6]]}))
  out = str(tmp_path / "out")
  run = _predict(str(tmp_path / "a.jpg"), f"--model={workdir}", f"--output={out}",
                 f"--boxes={boxes}")
  assert run.returncode == 1, run.stderr[-2000:]
  for i, what in ((1, "outside"), (2, "more than 4x"), (4, "more than 4x")):
    assert f"a.jpg: --boxes={boxes} box {i} " in run.stderr and what in run.stderr
  assert "3 box(es) refused" in run.stderr and "Traceback" not in run.stderr
  recs = _records(out)
  assert [r["box"] for r in recs] == [[30.0, 50.0, 40.0, 80.0], [45.0, 50.0, 50.0, 60.0]]
  for r in recs:  # joints stay near their box, not at -4995 or 500,000 px
    assert np.all(np.abs(np.asarray(r["joints_per_stage"])) < 1000)


def test_a_box_row_that_is_not_four_numbers_is_refused_before_the_model_loads(tmp_path):
  boxes = tmp_path / "boxes.json"
  boxes.write_text(json.dumps({"a.jpg": [[10, 10, 40, 80], [1, 2, 30, 40, 0.9, 0]]}))
  with pytest.raises(ValueError, match=r"entry 'a.jpg', box 1: expected \[x, y, w, h\] "
                                       r"\(4 numbers\), got 6 values"):
    detect.read_user_boxes(str(boxes))
  Image.fromarray(_photo()).save(tmp_path / "a.jpg")
  run = _predict(str(tmp_path / "a.jpg"), f"--model={tmp_path / 'no_model'}",
                 f"--boxes={boxes}", f"--output={tmp_path / 'out'}")
  assert run.returncode == 2 and "box 1: expected [x, y, w, h]" in run.stderr
  assert "Traceback" not in run.stderr


# 4. Every photo is read as a viewer shows it.

def test_exif_orientation_is_applied(workdir, tmp_path):
  upright = _photo(210, 316)  # displayed 316 wide, 210 tall
  # Stored 316 tall and 210 wide, turned a quarter anticlockwise: Orientation 6 says "rotate
  # 90 degrees clockwise to display".
  raw = np.ascontiguousarray(np.rot90(upright, k=1))
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 CW to display
  Image.fromarray(raw).save(tmp_path / "phone.jpg", quality=95, exif=exif.tobytes())
  got = images.read_image(str(tmp_path / "phone.jpg"))
  assert got.shape == upright.shape
  assert np.abs(got.astype(int) - upright).mean() < 4
  out = str(tmp_path / "out")
  run = _predict(str(tmp_path / "phone.jpg"), f"--model={workdir}", f"--output={out}",
                 "--boxes=full")  # the whole displayed image: its size after the rotation
  assert run.returncode == 0, run.stderr[-2000:]
  assert _records(out)[0]["box"] == [158.0, 105.0, 316.0, 210.0]


def _grey(rgb):
  return np.asarray(Image.fromarray(rgb).convert("L"), np.float64)


def _as_mode(rgb, mode):
  """The photo in `mode`, made as real files of that mode are (16-bit greys span 0-65535)."""
  im = Image.fromarray(rgb)
  if mode == "I;16":
    return Image.fromarray((_grey(rgb) * 257).astype(np.uint16))
  if mode == "I":
    return Image.fromarray((_grey(rgb) * 257).astype(np.int32), "I")
  if mode == "F":
    return Image.fromarray((_grey(rgb) / 255).astype(np.float32), "F")
  if mode == "RGBA":
    a = np.full(rgb.shape[:2], 255, np.uint8)
    a[:10] = 0  # a transparent band: a viewer shows white there
    return Image.fromarray(np.dstack([rgb, a]), "RGBA")
  if mode == "LA":
    return im.convert("LA")
  if mode == "P":
    return im.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
  if mode == "LAB":
    from PIL import ImageCms
    return ImageCms.applyTransform(im, ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"))
  return im.convert(mode)


# mode: (file formats that store it, colour kept, max mean |error| in grey levels). HSV is
# left out: no format Pillow writes stores it.
MODES = {
    "RGB": (("PNG", "BMP", "TIFF", "WEBP"), True, 1.0),
    "L": (("PNG", "BMP", "TIFF", "JPEG"), False, 1.5),
    "1": (("PNG", "BMP", "TIFF"), False, 25.0),
    "P": (("PNG", "GIF", "BMP", "TIFF"), True, 8.0),
    "RGBA": (("PNG", "TIFF", "WEBP"), True, 1.0),
    "LA": (("PNG",), False, 1.5),
    "CMYK": (("TIFF", "JPEG"), True, 6.0),
    "YCbCr": (("JPEG", "TIFF"), True, 6.0),
    "LAB": (("TIFF",), True, 8.0),
    "I;16": (("PNG", "TIFF"), False, 1.5),
    "I": (("TIFF",), False, 1.5),
    "F": (("TIFF",), False, 1.5),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_pillow_writes_reads_as_the_same_photo(mode, tmp_path):
  rgb = _photo(64, 48)
  formats, colour, tol = MODES[mode]
  expected = rgb.astype(np.float64)
  if mode == "RGBA":
    expected[:10] = 255
  written = 0
  for fmt in formats:
    path = str(tmp_path / f"{mode.replace(';', '_')}.{fmt.lower()}")
    try:
      _as_mode(rgb, mode).save(path, fmt, **{"JPEG": {"quality": 98},
                                             "WEBP": {"lossless": True}}.get(fmt, {}))
    except (OSError, ValueError, KeyError):
      continue  # this format cannot store the mode
    written += 1
    got = images.read_image(path)
    assert got.dtype == np.uint8 and got.shape == rgb.shape, (fmt, got.shape)
    if colour:
      err = np.abs(got - expected).mean()
    elif mode == "1":  # dithered: the local mean is what a viewer sees
      block = lambda a: a[:64, :48].reshape(16, 4, 12, 4).mean(axis=(1, 3))
      err = np.abs(block(_grey(got)) - block(_grey(rgb))).mean()
    else:
      err = np.abs(_grey(got) - _grey(rgb)).mean()
      assert np.abs(got[..., 0].astype(int) - got[..., 2]).max() <= 1  # stays grey
    assert err < tol, (mode, fmt, err)
  assert written, f"no format stored mode {mode}"


# 5. Interrupted and repeated runs leave no misleading file.

@pytest.mark.slow  # 39 s of CLI runs on one core; CI runs `pytest -m slow`
def test_inputs_once_outputs_never_read_and_no_two_inputs_share_an_overlay(workdir, tmp_path):
  photos = tmp_path / "photos"
  (photos / "sub").mkdir(parents=True)
  for i, name in enumerate(("a.jpg", "a.png", "a-2.jpg", "sub/a.jpg")):
    Image.fromarray(_photo(seed=i)).save(photos / name)
  twice = os.path.join(str(photos), ".", "a.jpg")
  # --output is the input folder itself: its overlays must not come back as photos.
  args = [str(photos), str(photos / "sub"), str(photos / "a.jpg"), twice,
          f"--model={workdir}", f"--output={photos}"]
  first = _predict(*args)
  assert first.returncode == 0, first.stderr[-2000:]
  recs = _records(str(photos))
  by_name = {os.path.relpath(r["image"], str(photos)): r["overlay"] for r in recs}
  # a.jpg given three times is predicted once; a-2.jpg keeps its own name, the other "a"s
  # get names no input has.
  assert by_name == {"a-2.jpg": "a-2.pose.jpg", "a.jpg": "a.pose.jpg", "a.png": "a-3.pose.jpg",
                     "sub/a.jpg": "a-4.pose.jpg"}
  for r in recs:
    assert os.path.exists(os.path.join(str(photos), r["overlay"]))
  assert "predicted once" in first.stderr
  again = _predict(*args)
  assert again.returncode == 0, again.stderr[-2000:]
  assert {os.path.relpath(r["image"], str(photos)) for r in _records(str(photos))} == set(
      by_name)
  assert "a.pose.jpg: an overlay in --output" in again.stderr


def _limit_file_size(limit):
  def apply():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
  return apply


@pytest.mark.slow  # 13 s of CLI runs on one core; CI runs `pytest -m slow`
def test_a_failed_write_stops_the_run_names_the_file_and_leaves_no_complete_looking_file(
    workdir, tmp_path):
  """The kernel's file-size limit makes the overlay writes fail as a full disk does (EFBIG
  instead of ENOSPC: the same OSError path)."""
  for i in range(4):
    Image.fromarray(_photo(240, 180, seed=i)).save(tmp_path / f"p{i}.png")
  out = str(tmp_path / "out")
  ok = _predict(str(tmp_path / "p0.png"), f"--model={workdir}", f"--output={out}")
  assert ok.returncode == 0 and os.path.exists(os.path.join(out, "predictions.jsonl"))
  run = _predict(*[str(tmp_path / f"p{i}.png") for i in range(4)], f"--model={workdir}",
                 f"--output={out}", preexec_fn=_limit_file_size(4000))
  assert run.returncode == 1, run.stderr[-2000:]
  assert "predict: error: cannot write " in run.stderr and "p0.pose.jpg" in run.stderr
  assert "4 input(s) not done" in run.stderr and "Traceback" not in run.stderr
  # The previous run's complete file is gone: nothing complete-looking describes this run.
  assert not os.path.exists(os.path.join(out, "predictions.jsonl"))
  assert os.path.exists(os.path.join(out, "predictions.jsonl.partial"))
  assert not [n for n in os.listdir(out) if ".tmp-" in n]


# 6. Setup errors are one line and a non-zero exit.

@pytest.mark.slow  # 52 s of CLI runs on one core; CI runs `pytest -m slow`
def test_setup_errors_are_one_line_without_a_traceback(workdir, tmp_path):
  import tensorflow as tf
  Image.fromarray(_photo()).save(tmp_path / "a.jpg")
  photo = str(tmp_path / "a.jpg")
  blocker = tmp_path / "file"
  blocker.write_text("x")
  bad_json = tmp_path / "boxes.json"
  bad_json.write_text("{not json")
  training = tmp_path / "training"  # a workdir whose stage 2 is still training
  tiny_predict_workdir(str(training), SIZE)
  os.remove(os.path.join(training, "stage2", "model.keras"))
  module = tf.Module()
  module.v = tf.Variable(1.0)
  module.f = tf.function(lambda: module.v * 2, input_signature=[])
  sm = str(tmp_path / "sm")
  tf.saved_model.save(module, sm)
  import shutil
  shutil.rmtree(os.path.join(sm, "variables"))
  cases = [
      ([f"--output={blocker}", f"--model={workdir}"], f"--output={blocker}: cannot write"),
      ([f"--boxes={bad_json}", f"--model={workdir}"], "is not valid JSON"),
      ([f"--model={tmp_path / 'missing'}"], "no such file or folder"),
      ([f"--model={training}"], "stage 2 has no trained model"),
      ([f"--model={sm}"], f"--model={sm}: cannot load it"),
  ]
  for extra, message in cases:
    run = _predict(photo, f"--output={tmp_path / 'out'}", *extra)
    assert run.returncode == 2, (extra, run.stderr[-1500:])
    assert message in run.stderr and "Traceback" not in run.stderr, (extra, run.stderr[-1500:])
    assert [ln for ln in run.stderr.splitlines() if ln.startswith("predict: error:")], extra


# 8. Smaller ones.

@pytest.mark.slow  # 23 s of CLI runs on one core; CI runs `pytest -m slow`
def test_broken_links_are_reported_and_odd_file_names_stay_valid_unicode(workdir, tmp_path):
  d = tmp_path / "photos"
  d.mkdir()
  Image.fromarray(_photo()).save(d / "good.jpg")
  os.symlink(str(d / "gone.jpg"), str(d / "dangling.jpg"))
  os.symlink(str(d / "loop2.jpg"), str(d / "loop1.jpg"))
  os.symlink(str(d / "loop1.jpg"), str(d / "loop2.jpg"))
  latin1 = os.path.join(os.fsencode(str(d)), b"caf\xe9.jpg")
  with open(latin1, "wb") as f:
    f.write(open(d / "good.jpg", "rb").read())
  out = str(tmp_path / "out")
  run = _predict(str(d), f"--model={workdir}", f"--output={out}")
  assert run.returncode == 1, run.stderr[-2000:]
  assert "dangling.jpg: a dangling symbolic link" in run.stderr
  assert "loop1.jpg: a symbolic-link loop" in run.stderr
  assert "3 input(s) failed" in run.stderr
  raw = open(os.path.join(out, "predictions.jsonl"), "rb").read()
  text = raw.decode("utf-8")  # strict: no lone surrogates
  assert "\\udce9" not in text and "caf\\\\xe9.jpg" in text
  names = sorted(os.path.basename(r["image"]) for r in _records(out))
  assert names == ["caf\\xe9.jpg", "good.jpg"]
