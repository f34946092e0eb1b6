"""Peer pose models (deeppose_tf.predict.peers) and `compare --peers`: the joint mapping onto
LSP14 and the letterbox geometry on synthetic outputs (no model file), files refused by
name, BlazePose and MoveNet on real LSP photos, and the compare command with a peer row.

The peer files are not part of the package: those tests skip where ../shared is missing
(DEEPPOSE_SHARED moves it, as for tests/test_detectors.py)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from deeppose_tf.predict import models, peers
from deeppose_tf.skeleton import LSP14
from helpers import REPO, SHARED, need_shared, subprocess_env, tiny_predict_workdir

PEERS = os.path.join(SHARED, "peers")
BLAZEPOSE_FULL = os.path.join(PEERS, "pose_landmark_full.tflite")
MOVENET_SINGLE = os.path.join(PEERS, "movenet_single_pose_lightning_ptq.tflite")
MOVENET_MULTI = os.path.join(SHARED, "detectors", "movenet_multipose_lightning_fp16.tflite")
LSP = os.path.join(SHARED, "data", "lsp")


def _need(path):
  return need_shared(path, "peers/, detectors/ and data/lsp/")


# ------------------------------------------------------------- (a) mapping and geometry

def _lsp_pose(rng, w, h):
  """A random LSP14 pose inside a w x h image whose neck and head top follow the peers'
  rules (neck = mean of the shoulders; head top = nose + 0.8 (nose - neck)), and its nose."""
  pose = rng.uniform([5, 5], [w - 5, h - 5], (14, 2))
  neck = (pose[LSP14.index("l_shoulder")] + pose[LSP14.index("r_shoulder")]) / 2
  nose = neck + rng.uniform(-8, 8, 2)
  pose[LSP14.index("neck")] = neck
  pose[LSP14.index("head_top")] = nose + 0.8 * (nose - neck)
  return pose, nose


def test_formats_map_the_named_joints_as_the_readme_says():
  """BlazePose landmarks 28, 26, 24, 23, 25, 27, 16, 14, 12, 11, 13, 15 and COCO keypoints
  16, 14, 12, 11, 13, 15, 10, 8, 6, 5, 7, 9 are LSP14's first 12 joints, in LSP order."""
  first12 = LSP14.joints[:12]
  assert [peers.FORMATS["blazepose"]["joints"][j] for j in first12] == [
      28, 26, 24, 23, 25, 27, 16, 14, 12, 11, 13, 15]
  assert [peers.FORMATS["movenet"]["joints"][j] for j in first12] == [
      16, 14, 12, 11, 13, 15, 10, 8, 6, 5, 7, 9]
  assert peers.FORMATS["blazepose"]["nose"] == peers.FORMATS["movenet"]["nose"] == 0
  assert set(peers.FORMATS["movenet"]["variants"]) == {"singlepose", "multipose"}


@pytest.mark.parametrize("fmt, count", [("blazepose", 39), ("movenet", 17)])
def test_to_lsp14_copies_named_joints_and_derives_neck_and_head_top(fmt, count):
  rng = np.random.RandomState(0)
  kp = rng.uniform(0, 100, (count, 2))
  out = peers.to_lsp14(kp, fmt)
  for name, i in peers.FORMATS[fmt]["joints"].items():
    np.testing.assert_array_equal(out[LSP14.index(name)], kp[i])
  neck = (out[LSP14.index("l_shoulder")] + out[LSP14.index("r_shoulder")]) / 2
  np.testing.assert_allclose(out[LSP14.index("neck")], neck)
  np.testing.assert_allclose(out[LSP14.index("head_top")], kp[0] + 0.8 * (kp[0] - neck))
  # A batch maps alike.
  np.testing.assert_allclose(peers.to_lsp14(np.stack([kp, kp]), fmt), np.stack([out, out]))


def test_letterbox_of_the_whole_photo_keeps_aspect_and_centres_it():
  """A 100 x 50 photo into 256 x 256: 2.56x, 256 x 128 at rows 64-192; image corners and
  points map there and back."""
  lb = peers.letterbox([50, 25, 100, 50], 256, 256)
  assert (lb.x0, lb.y0, lb.cw, lb.ch, lb.ox, lb.oy, lb.rw, lb.rh) == (0, 0, 100, 50, 0, 64,
                                                                      256, 128)
  np.testing.assert_allclose(lb.to_input([[0, 0], [100, 50], [50, 25]]),
                             [[0, 64], [256, 192], [128, 128]])
  pts = np.random.RandomState(1).uniform(0, 50, (20, 2))
  np.testing.assert_allclose(lb.to_image(lb.to_input(pts)), pts)
  # Portrait into MoveNet SinglePose's 192 x 192: the columns are centred.
  lb = peers.letterbox([30, 60, 60, 120], 192, 192)
  assert (lb.ox, lb.oy, lb.rw, lb.rh) == (48, 0, 96, 192)


def test_fill_places_the_region_and_zeros_outside_the_image():
  image = np.zeros((50, 100, 3), np.uint8)
  image[10:20, 60:80] = 200  # a block at x 60-80, y 10-20
  x = peers.fill(image, peers.letterbox([50, 25, 100, 50], 256, 256))
  assert x.shape == (256, 256, 3) and x.dtype == np.uint8
  assert x[:60].max() == 0 and x[196:].max() == 0  # the black border above and below
  # The block lands at x 60-80 -> 153.6-204.8, y 10-20 -> 89.6-115.2 (bilinear edges).
  assert (x[92:113, 156:202] == 200).all()
  assert x[64:192].sum() == x[86:119, 151:208].sum()
  # A box reaching outside the image: its outside is black, its inside the image's.
  lb = peers.letterbox([100, 25, 100, 50], 50, 100)  # the right half and as much beyond
  x = peers.fill(np.full((50, 100, 3), 255, np.uint8), lb)
  assert (x[:, :50] == 255).all() and (x[:, 50:] == 0).all()


def test_dynamic_size_is_longer_side_256_rounded_up_to_32():
  assert peers.dynamic_size(200, 100, 256, 32) == (128, 256)
  assert peers.dynamic_size(90, 300, 256, 32) == (256, 96)  # 77 px -> 96
  assert peers.dynamic_size(256, 256, 256, 32) == (256, 256)


def test_blazepose_output_decodes_to_lsp14_joints_at_known_image_pixels():
  """A synthetic [1, 195] BlazePose output whose landmarks sit where a known pose's joints
  fall in the letterboxed input comes back as that pose in image pixels."""
  rng = np.random.RandomState(2)
  w, h = 140, 220
  pose, nose = _lsp_pose(rng, w, h)
  box = [w / 2, h / 2, w, h]
  lb = peers.letterbox(box, 256, 256)
  landmarks = np.zeros((39, 5))
  landmarks[:, 2:] = rng.uniform(size=(39, 3))  # z, visibility, presence: ignored
  for name, i in peers.FORMATS["blazepose"]["joints"].items():
    landmarks[i, :2] = lb.to_input(pose[LSP14.index(name)])
  landmarks[0, :2] = lb.to_input(nose)
  variant = peers.FORMATS["blazepose"]["variants"]["landmarks"]
  kp, score = peers.decode(landmarks.reshape(1, 195), variant, lb)
  assert np.isnan(score)
  np.testing.assert_allclose(peers.to_lsp14(kp, "blazepose"), pose, atol=1e-9)


def test_movenet_multipose_output_decodes_the_best_scoring_person():
  rng = np.random.RandomState(3)
  w, h = 300, 180
  pose, nose = _lsp_pose(rng, w, h)
  box = [w / 2, h / 2, w, h]
  th, tw = peers.dynamic_size(w, h, 256, 32)
  lb = peers.letterbox(box, th, tw)
  rows = rng.uniform(size=(6, 56))  # 6 people of noise
  rows[:, 55] = [0.1, 0.3, 0.2, 0.05, 0.25, 0.0]
  yxs = np.zeros((17, 3))
  for name, i in peers.FORMATS["movenet"]["joints"].items():
    yxs[i, 1::-1] = lb.to_input(pose[LSP14.index(name)]) / [tw, th]
  yxs[0, 1::-1] = lb.to_input(nose) / [tw, th]
  rows[1, :51] = yxs.reshape(-1)
  variant = peers.FORMATS["movenet"]["variants"]["multipose"]
  kp, score = peers.decode(rows[None], variant, lb)
  assert score == pytest.approx(0.3)
  np.testing.assert_allclose(peers.to_lsp14(kp, "movenet"), pose, atol=1e-9)
  # SinglePose: one person, [1, 1, 17, 3], into its fixed 192 x 192.
  lb = peers.letterbox(box, 192, 192)
  for name, i in peers.FORMATS["movenet"]["joints"].items():
    yxs[i, 1::-1] = lb.to_input(pose[LSP14.index(name)]) / 192
  yxs[0, 1::-1] = lb.to_input(nose) / 192
  kp, _ = peers.decode(yxs[None, None], peers.FORMATS["movenet"]["variants"]["singlepose"], lb)
  np.testing.assert_allclose(peers.to_lsp14(kp, "movenet"), pose, atol=1e-9)


def test_parse_peers():
  assert peers.parse_peers(["blazepose:/x/pose_landmark_full.tflite:BlazePose-full",
                            "movenet:/y/m.tflite"]) == [
      ("blazepose", "/x/pose_landmark_full.tflite", "BlazePose-full"),
      ("movenet", "/y/m.tflite", "m")]
  with pytest.raises(ValueError, match=re.escape(
      "unknown peer format 'openpose'; known formats: blazepose, movenet")):
    peers.parse_peers(["openpose:/x.tflite"])
  with pytest.raises(ValueError, match="is not FORMAT:PATH"):
    peers.parse_peers(["blazepose"])


# ------------------------------------------------------------------------- (b) refusals

def test_a_file_that_is_no_peer_is_refused_naming_it(tmp_path):
  """The package's own model (two inputs: image and box) is neither a BlazePose landmark
  model nor a MoveNet; a text file is no TFLite model; a missing file is missing."""
  bundled = models.BUNDLED
  assert os.path.exists(bundled)
  for fmt, expected in (("blazepose", "an output [1, 195]"),
                        ("movenet", "SinglePose: one uint8 input")):
    with pytest.raises(ValueError, match=re.escape(
        f"--peers={fmt}:{bundled} is not a {fmt} pose model: expected")) as e:
      peers.PeerModel(fmt, bundled)
    assert expected in str(e.value) and "it has inputs" in str(e.value)
  text = tmp_path / "notes.tflite"
  text.write_text("not a model")
  with pytest.raises(ValueError, match=re.escape(
      f"--peers=movenet:{text} is not a TFLite model that LiteRT can load")):
    peers.PeerModel("movenet", str(text))
  with pytest.raises(ValueError, match=re.escape(
      f"--peers=blazepose:{tmp_path / 'none.tflite'}: no such file")):
    peers.PeerModel("blazepose", str(tmp_path / "none.tflite"))


def test_an_unknown_format_is_refused_listing_the_formats():
  with pytest.raises(ValueError, match=re.escape(
      "unknown peer format 'openpose'; known formats: blazepose, movenet")):
    peers.PeerModel("openpose", models.BUNDLED)


def test_a_peer_file_given_as_the_other_format_is_refused():
  with pytest.raises(ValueError, match=re.escape(
      f"--peers=movenet:{BLAZEPOSE_FULL} is not a movenet pose model")):
    peers.PeerModel("movenet", _need(BLAZEPOSE_FULL))
  with pytest.raises(ValueError, match=re.escape(
      f"--peers=blazepose:{MOVENET_MULTI} is not a blazepose pose model")):
    peers.PeerModel("blazepose", _need(MOVENET_MULTI))


# ------------------------------------------------------------------ (c) real peer files

@pytest.fixture(scope="module")
def lsp_data(tmp_path_factory):
  """A data_dir with a 'val' split of 12 real LSP photos (images 989-1000)."""
  from deeppose_tf.data import lsp, records
  _need(os.path.join(LSP, "joints.mat"))
  d = str(tmp_path_factory.mktemp("lsp_data"))
  records.write_split(lsp.read_lsp(LSP, "val", val_images=12), d, "val", 14, num_shards=1)
  return d


def test_peers_score_well_on_real_lsp_photos(lsp_data):
  """BlazePose full, MoveNet SinglePose and MultiPose on 12 LSP photos, each whole: strict
  PCP well above 0.3 (the README measured 0.73-0.76 on LSP test); MultiPose's input follows
  each photo's shape."""
  from deeppose_tf import compare
  paths = [("blazepose", BLAZEPOSE_FULL), ("movenet", MOVENET_SINGLE),
           ("movenet", MOVENET_MULTI)]
  opened = [peers.PeerModel(fmt, _need(path)) for fmt, path in paths]
  assert [m.variant_name for m in opened] == ["landmarks", "singlepose", "multipose"]
  assert all(m.num_stages == 1 and m.skeleton == LSP14 for m in opened)
  summaries = compare.score_peers(opened, lsp_data, "val", 12)
  for m, s in zip(opened, summaries):
    assert s["num_images"] == 12
    assert s["pcp_mean"] > 0.3, (m.version, s["pcp_mean"])
    assert s["pdj_mean_at"]["0.2"] > 0.3, (m.version, s["pdj_mean_at"])
  assert len(opened[2]._by_shape) > 1  # photos of several shapes, one interpreter each


# ------------------------------------------------------------------------ (d) compare

@pytest.fixture(scope="module")
def evaluated(tiny_data, tmp_path_factory):
  """A tiny untrained 2-stage workdir evaluated on 4 test images of tiny_data (split boxes),
  and a second evaluation of it in another folder (evaluate --report_dir)."""
  from deeppose_tf import evaluate, workdir as workdir_lib
  d = tiny_predict_workdir(str(tmp_path_factory.mktemp("peers_workdir") / "tiny"))
  workdir_lib.write_mean_pose(d, np.zeros((14, 2), np.float32))
  evaluate.run(d, "test", tiny_data, limit=4, num_examples=0)
  elsewhere = str(tmp_path_factory.mktemp("peers_report"))
  evaluate.run(d, "test", tiny_data, limit=4, num_examples=0, report_dir=elsewhere)
  return d, elsewhere


@pytest.mark.slow  # a CLI run importing TF, scoring and timing: 10-15 s
def test_compare_cli_tables_a_workdir_and_a_peer(evaluated, tmp_path):
  work, _ = evaluated
  out = str(tmp_path / "cmp" / "peers")
  peer = _need(MOVENET_SINGLE)
  run = subprocess.run(
      [sys.executable, "-m", "deeppose_tf.compare", f"--workdirs={work}", "--labels=Tiny",
       f"--output={out}", f"--peers=movenet:{peer}:MoveNet-single", "--peer_limit=3",
       "--nolatency"], capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
      timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  with open(out + ".md") as f:
    table = f.read()
  for row in ("| Tiny stage 1 |", "| Tiny stage 2 |", "| MoveNet-single |", "| mean pose |",
              "| ms 1 thread | ms 2 threads | load s | MB |"):
    assert row in table, table
  assert "see the whole photo letterboxed into their input" in table
  assert "without their detector's ROI" in table
  assert "Our models got the split's person box" in table
  assert "scored on the first 3 of the 4 images (--peer_limit)" in table
  assert "PDJ@0.2 | Ankle" in table  # the per joint type table
  # Every row has as many cells as the header.
  lines = [l for l in table.splitlines() if l.startswith("| method") or l.startswith("| Tiny")
           or l.startswith("| MoveNet") or l.startswith("| mean pose |")][:5]
  assert len({l.count("|") for l in lines}) == 1, lines
  with open(out + ".json") as f:
    result = json.load(f)
  peer_entry = result["methods"][1]
  assert peer_entry["peer"] == {"format": "movenet", "path": peer, "variant": "singlepose"}
  assert peer_entry["num_images"] == result["peer_images"] == 3
  assert peer_entry["size_mb"] == pytest.approx(os.path.getsize(peer) / 1e6)
  assert peer_entry["latency_ms_1t"] is None  # --nolatency
  assert os.path.getsize(out + ".png") > 1000


@pytest.mark.slow  # two timing child processes: 15-20 s
def test_compare_times_every_model_at_1_and_2_threads(evaluated, tmp_path):
  """Latency at 1 and 2 threads, load time and size for the workdir (child processes) and
  the peer (its interpreter); the workdir's report read from --reports."""
  from deeppose_tf import compare
  work, elsewhere = evaluated
  result = compare.compare([work], ["Tiny"], str(tmp_path / "t"), min_time=0.05,
                           peers=[f"movenet:{_need(MOVENET_SINGLE)}"], peer_limit=2,
                           reports=[elsewhere])
  ours, peer = result["methods"]
  for m in (ours, peer):
    assert m["latency_ms_1t"] > 0 and m["latency_ms_2t"] > 0 and m["load_s"] > 0
    assert m["latency_ms"] == m["latency_ms_2t"] and m["size_mb"] > 0
  assert peer["label"] == "movenet_single_pose_lightning_ptq"


def test_compare_refuses_a_label_given_twice_and_a_missing_report(evaluated, tmp_path):
  from deeppose_tf import compare
  work, _ = evaluated
  with pytest.raises(ValueError, match=re.escape("labels ['A'] are given twice")):
    compare.compare([work], ["A"], str(tmp_path / "x"), latency=False,
                    peers=[f"movenet:{models.BUNDLED}:A"])
  with pytest.raises(ValueError, match=re.escape(
      f"--peers=movenet:{models.BUNDLED} is not a movenet pose model")):
    compare.compare([work], ["A"], str(tmp_path / "x"), latency=False,
                    peers=[f"movenet:{models.BUNDLED}:B"])
  with pytest.raises(ValueError, match="evaluate .* first"):
    compare.compare([work], ["A"], str(tmp_path / "x"), latency=False,
                    reports=[str(tmp_path)])
  assert not os.path.exists(str(tmp_path / "x.md"))


def test_bench_times_a_peer_beside_our_model_in_one_run():
  """bench --only=model takes FORMAT:PATH entries: the peer is loaded, timed and compared
  with the first model (the bundled one) in the same run."""
  from deeppose_tf.bench import model_file
  results = model_file.model_results([models.BUNDLED, f"movenet:{_need(MOVENET_SINGLE)}"],
                                     min_time=0.05, threads=(1,))
  rows = {(r.entry, r.key): r for r in results}
  peer = rows[("models.1", "latency_ms")]
  assert peer.value > 0 and rows[("models.0", "latency_ms")].value > 0
  (ratio,) = peer.ratios
  assert ratio.value == pytest.approx(peer.value / rows[("models.0", "latency_ms")].value)
  load = rows[("models.1", "load_s")]
  assert "(movenet)" in load.name and load.extra["size_mb"] > 1
  assert load.extra["path"] == f"movenet:{MOVENET_SINGLE}"
