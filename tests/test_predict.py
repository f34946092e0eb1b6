"""The predict command (issue 14): real image files and videos in, JSON records and overlays
out, for every kind of model; person boxes from OpenCV's real HOG detector; bad inputs named,
the batch goes on, nothing written is lost."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deeppose_tf import export
from deeppose_tf.cascade import Cascade
from deeppose_tf.data import synthetic
from deeppose_tf.predict import detect, models
from deeppose_tf.skeleton import LSP14
from helpers import REPO, subprocess_env, tiny_predict_workdir

SIZE = 67
CV2_REASON = ('OpenCV is an optional extra (pip install "deeppose_tf[face]"; the [test] '
              'extra installs it): the HOG detector and videos need it')


def _grace_hopper():
  import matplotlib
  path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data",
                      "grace_hopper.jpg")
  return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return tiny_predict_workdir(str(tmp_path_factory.mktemp("predict_workdir")), SIZE)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """A folder of real JPEG and PNG files: synthetic people of different sizes."""
  d = tmp_path_factory.mktemp("photos")
  for i, rec in enumerate(synthetic.generate(3, seed=5)):
    with open(d / f"person{i}.{'png' if i == 2 else 'jpg'}", "wb") as f:
      f.write(rec.image)
  return str(d)


def _predict(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "deeppose_tf.predict", *args],
                        capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
                        timeout=timeout)


def _records(out):
  with open(os.path.join(out, "predictions.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_folder_of_photos_with_a_workdir_model(workdir, photos, tmp_path):
  out = str(tmp_path / "out")
  run = _predict(photos, f"--model={workdir}", f"--output={out}", "--coco", "--boxes=full")
  assert run.returncode == 0, run.stderr[-3000:]
  recs = _records(out)
  assert [os.path.basename(r["image"]) for r in recs] == ["person0.jpg", "person1.jpg",
                                                          "person2.png"]
  for r in recs:
    assert r["person"] == 0 and list(r["joints"]) == list(LSP14.joints)
    assert np.asarray(r["joints_per_stage"]).shape == (2, 14, 2)
    assert r["model"]["skeleton"] == "lsp14" and r["model"]["left_right"] == "person"
    w, h = Image.open(r["image"]).size
    assert r["box"] == [w / 2, h / 2, w, h]  # --boxes=full
  assert sorted(n for n in os.listdir(out) if n.endswith(".pose.jpg")) == [
      "person0.pose.jpg", "person1.pose.jpg", "person2.pose.jpg"]
  overlay = np.asarray(Image.open(os.path.join(out, "person0.pose.jpg")))
  assert overlay.shape == np.asarray(Image.open(recs[0]["image"])).shape
  coco = json.load(open(os.path.join(out, "keypoints_coco.json")))
  assert len(coco["annotations"]) == 3 and len(coco["annotations"][0]["keypoints"]) == 42
  assert "predicted 3 people in 3 images" in run.stdout and "images/s" in run.stdout


@pytest.mark.slow  # 20 s: three exports; CI runs it in `pytest -m slow`
def test_every_model_kind_gives_the_same_poses(workdir, photos, tmp_path):
  casc = Cascade.load(workdir)
  saved = export.export_saved_model(workdir, str(tmp_path / "serving"), casc=casc)
  tflite = str(tmp_path / "m.tflite")
  export.export_tflite(workdir, tflite)
  image = np.asarray(Image.open(os.path.join(photos, "person0.jpg")).convert("RGB"))
  boxes = np.concatenate([detect.full_box(*image.shape[:2]),
                          [[40, 50, 60, 90]]]).astype(np.float32)
  got = {}
  for name, path in (("workdir", workdir), ("saved_model", saved),
                     ("serving_base", str(tmp_path / "serving")), ("tflite", tflite)):
    model = models.load(path)
    assert model.skeleton is LSP14 and model.num_stages == 2
    got[name] = model.predict([image, image], boxes)
    assert got[name].shape == (2, 2, 14, 2)
  for name in ("saved_model", "serving_base", "tflite"):
    np.testing.assert_allclose(got[name], got["workdir"], atol=0.05, err_msg=name)


def test_user_boxes_file_gives_a_pose_per_box(workdir, photos, tmp_path):
  boxes = tmp_path / "boxes.json"
  boxes.write_text(json.dumps({"person0.jpg": [[10, 10, 40, 80], [30, 5, 50, 100]]}))
  out = str(tmp_path / "out")
  run = _predict(os.path.join(photos, "person0.jpg"), os.path.join(photos, "person1.jpg"),
                 f"--model={workdir}", f"--output={out}", f"--boxes={boxes}")
  assert run.returncode == 0, run.stderr[-3000:]
  recs = _records(out)
  assert [(os.path.basename(r["image"]), r["person"]) for r in recs] == [
      ("person0.jpg", 0), ("person0.jpg", 1), ("person1.jpg", 0)]
  assert recs[0]["box"] == [30.0, 50.0, 40.0, 80.0]  # corner (x, y, w, h) -> centre
  assert "no boxes in --boxes" in run.stderr  # person1.jpg: whole image, with a warning


def test_hog_detector_finds_people_and_says_when_there_are_none(workdir, tmp_path):
  pytest.importorskip("cv2", reason=CV2_REASON)
  det = detect.HogPeopleDetector()
  # A real photo without a standing person (a portrait): HOG finds no pedestrian.
  portrait = np.asarray(Image.open(_grace_hopper()).convert("RGB"))
  assert det.detect(portrait).shape[1] == 4
  blank = np.full((300, 200, 3), 127, np.uint8)
  assert len(det.detect(blank)) == 0
  Image.fromarray(blank).save(tmp_path / "empty.png")
  out = str(tmp_path / "out")
  run = _predict(str(tmp_path / "empty.png"), f"--model={workdir}", f"--output={out}",
                 "--boxes=detect")
  assert run.returncode == 0, run.stderr[-3000:]
  (rec,) = _records(out)
  assert rec["person"] is None and rec["joints"] is None and rec["note"] == "no person found"


def test_video_gives_json_lines_per_frame_and_an_annotated_video(workdir, tmp_path):
  cv2 = pytest.importorskip("cv2", reason=CV2_REASON)
  video = str(tmp_path / "clip.mp4")
  frames = [np.asarray(Image.open(__import__("io").BytesIO(r.image)).convert("RGB").resize(
      (96, 128))) for r in synthetic.generate(5, seed=2)]
  w = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 128))
  for f in frames:
    w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
  w.release()
  out = str(tmp_path / "out")
  run = _predict(video, f"--model={workdir}", f"--output={out}")
  assert run.returncode == 0, run.stderr[-3000:]
  recs = _records(out)
  assert [r["frame"] for r in recs] == [0, 1, 2, 3, 4]
  cap = cv2.VideoCapture(os.path.join(out, "clip.pose.mp4"))
  assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
  cap.release()
  assert "5 video frames" in run.stdout
  # One person (the whole frame) keeps one track id (predict/track.py; the smoothing is
  # measured with the bundled model in test_bundled_model.py: this untrained model's pose
  # does not move).
  assert [r["track"] for r in recs] == [0] * 5


def test_bad_inputs_are_named_the_batch_goes_on_and_exits_nonzero(workdir, photos, tmp_path):
  pytest.importorskip("cv2", reason=CV2_REASON)
  notimage = tmp_path / "notes.jpg"
  notimage.write_text("this is not a picture")
  truncated = tmp_path / "cut.jpg"
  truncated.write_bytes(open(os.path.join(photos, "person0.jpg"), "rb").read()[:200])
  badvideo = tmp_path / "broken.mp4"
  badvideo.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 300)
  empty = tmp_path / "empty_folder"
  empty.mkdir()
  out = str(tmp_path / "out")
  run = _predict(str(notimage), os.path.join(photos, "person0.jpg"), str(truncated),
                 str(badvideo), str(empty), str(tmp_path / "missing.png"),
                 f"--model={workdir}", f"--output={out}")
  assert run.returncode == 1
  for name in ("notes.jpg", "cut.jpg", "broken.mp4", "empty_folder", "missing.png"):
    assert name in run.stderr, name
  assert "5 input(s) failed" in run.stderr
  recs = _records(out)  # the good image's record is kept
  assert [os.path.basename(r["image"]) for r in recs] == ["person0.jpg"]
  assert not os.path.exists(os.path.join(out, "predictions.jsonl.partial"))


@pytest.mark.slow  # 19 s of CLI runs; CI runs it in `pytest -m slow`
def test_unwritable_output_and_no_input_are_named(workdir, photos, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  run = _predict(photos, f"--model={workdir}", f"--output={blocker}/sub")
  assert run.returncode != 0 and f"--output={blocker}/sub: cannot write there" in run.stderr
  run = _predict(str(tmp_path / "nothing*.jpg"), f"--model={workdir}")
  assert run.returncode != 0 and "the pattern matches no file" in run.stderr
  run = _predict(photos, f"--model={tmp_path}")
  assert run.returncode != 0 and "neither a training workdir" in run.stderr


def test_help_lists_the_flags():
  run = _predict("--help")
  for flag in ("--model", "--output", "--boxes", "--batch_size", "--coco"):
    assert flag in run.stdout, flag


def test_bench_model_section_times_load_and_latency(workdir):
  from deeppose_tf import bench
  report = bench.run(["model"], models=(workdir, workdir), min_time=0.02, matmul_n=64)
  out = report.to_json()["models"]
  assert out["0"]["load_s"] > 0 and out["0"]["latency_ms"] > 0 and out["0"]["stages"] == 2
  assert out["1"]["x_reference"] > 0  # the second is compared with the first
  assert "batch-1 latency per person" in report.table()
