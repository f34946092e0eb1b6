"""Pose-guided framing (predict/evaluate --boxes=auto) and the pasted small-people split
(python -m deeppose_tf.data.paste)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeppose_tf import evaluate, geometry
from deeppose_tf.data import paste, records
from deeppose_tf.predict import framing, models
from helpers import REPO, random_records, subprocess_env, tiny_predict_workdir

SIZE = 67


def test_box_iou():
  from deeppose_tf.predict.detect import iou
  a = np.float32([[10, 10, 20, 20]])
  assert iou(a, a)[0, 0] == pytest.approx(1.0)
  assert iou(a, [[30, 10, 20, 20]])[0, 0] == 0.0  # touching edges
  got = iou(a, [[15, 10, 20, 20], [10, 10, 20, 20]])  # 5 px apart; the same box
  np.testing.assert_allclose(got, [[15 * 20 / (2 * 400 - 15 * 20), 1.0]])


def test_next_boxes_frames_the_pose_and_keeps_settled_or_broken_ones():
  pose = np.float32([[100, 100], [120, 160], [90, 140]])
  big = np.float32([100, 100, 300, 300])  # its floor (a fifth: 60 px) is below 78 px
  framed = geometry.framing_box(pose, big).numpy()
  boxes = np.stack([big, framed, big])
  poses = np.stack([pose, pose, np.full_like(pose, np.nan)])
  new, moved = framing.next_boxes(poses, boxes)
  assert moved.tolist() == [True, False, False]  # moved; settled; a NaN pose keeps its box
  np.testing.assert_allclose(new[0], framed)
  np.testing.assert_allclose(new[1:], boxes[1:])
  # The square: side 1.3 x the pose's longer extent (60 px), centred on its extent.
  np.testing.assert_allclose(framed, [105, 130, 78, 78], rtol=1e-6)


def _coarse_model(person, calls, error=0.1):
  """A stand-in cascade whose error grows with the box: the true pose plus an offset of
  `error` times the box side (what a model that reads a small person at low resolution
  does)."""
  def run(boxes):
    calls.append(len(boxes))
    side = boxes[:, 2:3, None]
    pose = person[None] + error * side * np.float32([1, -1])
    return np.stack([pose, pose], 1)  # (Q, S=2, K, 2)
  return run


def test_frame_by_pose_zooms_in_on_a_small_person_and_stops_when_settled():
  person = np.float32([[700, 500], [720, 560], [690, 540], [710, 600]])
  image_box = np.float32([[500, 400, 1000, 800]])
  calls = []
  one, poses_one = framing.frame_by_pose(_coarse_model(person, calls), image_box, passes=0)
  assert calls == [1] and np.array_equal(one, image_box)
  err_full = np.abs(poses_one[0, -1] - person).max()
  calls = []
  boxes, poses = framing.frame_by_pose(_coarse_model(person, calls), image_box, passes=5)
  err_auto = np.abs(poses[0, -1] - person).max()
  assert err_full == pytest.approx(100.0)  # 10% of the 1,000 px image
  assert err_auto < 0.2 * err_full  # read in a box the person's size
  assert len(calls) < 6  # it stopped once the box settled, before the 5 passes ran out
  assert boxes[0, 2] == boxes[0, 3] < 200


def test_a_collapsed_pose_never_zooms_below_a_tenth_of_the_image():
  """A pose on one point (an untrained model's, or a lost person's) frames the smallest box,
  a tenth of the image's longer side, however many passes or frames continue from it."""
  point = lambda boxes: np.broadcast_to(  # noqa: E731
      boxes[:, None, None, :2], (len(boxes), 2, 14, 2)).copy()
  image = np.float32([400, 300, 800, 600])
  boxes, _ = framing.frame_by_pose(point, image[None], passes=3)
  for _ in range(5):  # video frames, each starting from the previous frame's box
    boxes, _ = framing.frame_by_pose(point, boxes, outer=image, passes=3)
  np.testing.assert_allclose(boxes, [[400, 300, 80, 80]])


def test_frame_by_pose_reruns_only_the_people_whose_box_moved():
  person = np.float32([[100, 100], [110, 150]])
  calls = []
  run = _coarse_model(person, calls, error=0.0)
  settled = geometry.framing_box(run(np.float32([[0, 0, 1, 1]]))[0, -1],
                                 np.float32([0, 0, 1, 1])).numpy()
  calls.clear()
  framing.frame_by_pose(run, np.stack([np.float32([300, 300, 600, 600]), settled]), passes=1)
  assert calls == [2, 1]


def test_pasted_split_moves_the_joints_with_the_photo(tmp_path):
  src, out = str(tmp_path / "src"), str(tmp_path / "out")
  recs = random_records(4, seed=3, size=(40, 60), fmt="PNG")
  records.write_split(recs, src, "val", 14, num_shards=1, meta={"skeleton": "lsp14"})
  for canvas in paste.CANVASES:
    assert paste.write(src, "val", out, scale=3, canvas=canvas, seed=1) == 4
    meta = records.read_meta(out, "val")
    assert meta["skeleton"] == "lsp14" and meta["paste_canvas"] == canvas
    got = [records.parse(s, 14) for s in tf.data.TFRecordDataset(
        records.list_shards(out, "val"))]
    for rec, f in zip(recs, got):
      photo = np.asarray(Image.open(io.BytesIO(rec.image)).convert("RGB"), np.float32)
      big = np.asarray(Image.open(io.BytesIO(f["image"].numpy())), np.float32)
      h, w = photo.shape[:2]
      assert big.shape[:2] == (3 * h, 3 * w) and not bool(f["has_box"])
      vis = rec.visible > 0
      shift = (f["joints"].numpy() - rec.joints)[vis]
      assert np.allclose(shift, shift[0], atol=1e-4)  # one offset for every joint
      assert np.all(f["joints"].numpy()[~vis] == 0)  # unannotated: the records' zeros
      x0, y0 = np.round(shift[0]).astype(int)
      assert 0 <= x0 <= 2 * w and 0 <= y0 <= 2 * h
      # The photo's pixels are there: compared in luma, which JPEG keeps at full resolution
      # (its chroma is subsampled, and these photos are random noise); one pixel off is far
      # worse.
      luma = lambda a: a @ np.float32([0.299, 0.587, 0.114])  # noqa: E731
      here = np.abs(luma(big[y0:y0 + h, x0:x0 + w]) - luma(photo)).mean()
      off = np.abs(luma(big[y0 + 1:y0 + 1 + h, x0:x0 + w]) - luma(photo)).mean()
      assert here < 12 and off > 2 * here, (here, off)
      np.testing.assert_array_equal(f["visible"].numpy(), rec.visible)
  with pytest.raises(ValueError, match="must differ"):
    paste.write(src, "val", src)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  from deeppose_tf import workdir as workdir_lib
  d = tiny_predict_workdir(str(tmp_path_factory.mktemp("framing_workdir")), SIZE)
  workdir_lib.write_mean_pose(d, np.zeros((14, 2), np.float32))  # evaluate's baseline
  return d


@pytest.mark.slow  # 10-22 s: the default run stays under 10 minutes
def test_evaluate_auto_records_its_passes(workdir, tmp_path):
  data = str(tmp_path / "data")
  records.write_split(random_records(6, seed=4, size=(60, 90)), data, "val", 14,
                      num_shards=1, meta={"skeleton": "lsp14"})
  split = evaluate.run(workdir, "val", data, batch_size=4, boxes="split",
                       report_dir=str(tmp_path / "r1"))
  auto = evaluate.run(workdir, "val", data, batch_size=4, boxes="auto",
                      report_dir=str(tmp_path / "r2"))
  info = auto["auto_framing"]
  assert 0 <= info["passes"] <= framing.AUTO_PASSES and info["moved"][0] > 0
  assert json.load(open(tmp_path / "r2" / "report.json"))["boxes"] == "auto"
  # detect_auto: the detector's best box (HOG finds nobody in noise: the whole image),
  # then the same framing; the report carries both.
  pytest.importorskip("cv2", reason="the hog detector needs OpenCV (the [face] extra)")
  both = evaluate.run(workdir, "val", data, batch_size=4, boxes="detect_auto",
                      report_dir=str(tmp_path / "r3"))
  assert both["detector"]["name"] == "hog" and both["auto_framing"]["moved"][0] > 0
  np.testing.assert_allclose(both["stages"][-1]["pcp_mean"], auto["stages"][-1]["pcp_mean"])
  # The untrained model's poses are not the image box's: the framing moved them.
  assert split["stages"][-1]["pcp_mean"] != auto["stages"][-1]["pcp_mean"] or \
      info["moved"][0] == 6


@pytest.mark.slow  # 30 s: two predict commands
def test_predict_default_auto_matches_the_library_and_zero_passes_is_full(workdir, tmp_path):
  from deeppose_tf.data import synthetic
  rec = next(iter(synthetic.generate(1, seed=7)))
  photo = tmp_path / "p.jpg"
  photo.write_bytes(rec.image)
  got = {}
  for passes in (0, 2):
    out = str(tmp_path / f"out{passes}")
    run = subprocess.run([sys.executable, "-m", "deeppose_tf.predict", str(photo),
                          f"--model={workdir}", f"--output={out}",  # --boxes=auto: default
                          f"--auto_passes={passes}", "--nooverlay"], capture_output=True,
                         text=True, env=subprocess_env(), cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    [got[passes]] = [json.loads(line) for line in open(os.path.join(out,
                                                                    "predictions.jsonl"))]
  image = np.asarray(Image.open(photo).convert("RGB"))
  h, w = image.shape[:2]
  assert got[0]["box"] == [w / 2, h / 2, w, h]
  model = models.load(workdir)
  boxes, poses = framing.frame_by_pose(lambda b: model.predict([image] * len(b), b),
                                       np.float32([[w / 2, h / 2, w, h]]), passes=2)
  np.testing.assert_allclose(got[2]["box"], boxes[0], atol=1e-3)
  np.testing.assert_allclose(got[2]["joints_per_stage"], poses[0], atol=1e-2)
  assert got[2]["box"] != got[0]["box"]
