"""The model bundled with the package (issue 14): present, small, loads fast, and finds a
pose inside the person's box on a real photo (matplotlib's grace_hopper.jpg, a portrait
that fills its frame, so the person's box is the whole image)."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from deeppose_tf.predict import detect, models
from deeppose_tf.skeleton import LSP14
from helpers import REPO, subprocess_env


def _photo():
  import matplotlib
  return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data",
                      "grace_hopper.jpg")


def test_bundled_model_is_small_documented_and_finds_the_person():
  assert os.path.getsize(models.BUNDLED) <= 20e6
  assert os.path.exists(os.path.join(models.MODELS_DIR, "MODEL_CARD.md"))
  t0 = time.perf_counter()
  model = models.load(None)
  assert time.perf_counter() - t0 < 5.0
  assert model.skeleton is LSP14 and model.num_stages == 2
  assert model.name == "deeppose-lsp-mobilenetv2-heatmap" and model.version != "unversioned"
  image = np.asarray(Image.open(_photo()).convert("RGB"))
  h, w = image.shape[:2]
  poses = model.predict([image], detect.full_box(h, w))
  assert poses.shape == (1, 2, 14, 2) and np.isfinite(poses).all()
  pose = poses[0, -1]
  j = {name: pose[i] for i, name in enumerate(LSP14.joints)}
  # Inside the person's box (the whole portrait), with the body's layout: the head above
  # the neck, the neck between the shoulders.
  assert (pose[:, 0] >= 0).all() and (pose[:, 0] <= w).all()
  assert (pose[:, 1] >= 0).all() and (pose[:, 1] <= h).all()
  assert j["head_top"][1] < j["neck"][1]
  lo, hi = sorted([j["r_shoulder"][0], j["l_shoulder"][0]])
  assert lo < j["neck"][0] < hi


def test_predict_command_runs_the_bundled_model_by_default(tmp_path):
  out = str(tmp_path / "out")
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.predict", _photo(),
                        f"--output={out}"], capture_output=True, text=True,
                       env=subprocess_env(), cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  (rec,) = [json.loads(line) for line in open(os.path.join(out, "predictions.jsonl"))]
  assert rec["model"]["name"] == "deeppose-lsp-mobilenetv2-heatmap"
  assert list(rec["joints"]) == list(LSP14.joints)
  assert os.path.exists(os.path.join(out, "grace_hopper.pose.jpg"))


def _still_video(path, frames=30, fps=30, seed=0):
  """A still person filmed with a slightly shaking camera: grace_hopper.jpg shifted by 0-2 px
  in x and y at each frame (the person moves as much in the image, small against the
  model's jitter), through the mp4v codec's noise."""
  import cv2
  image = np.asarray(Image.open(_photo()).convert("RGB").resize((256, 300)))
  rng = np.random.RandomState(seed)
  h, w = image.shape[:2]
  out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w - 8, h - 8))
  for _ in range(frames):
    dx, dy = rng.randint(0, 3, 2)
    out.write(cv2.cvtColor(np.ascontiguousarray(image[dy:dy + h - 8, dx:dx + w - 8]),
                           cv2.COLOR_RGB2BGR))
  out.release()


@pytest.mark.slow  # about 30 s: the bundled model on 2 x 30 frames
def test_smoothing_cuts_the_jitter_of_a_still_person(tmp_path):
  pytest.importorskip("cv2", reason="videos need OpenCV (the [face] extra)")
  from deeppose_tf.predict import track
  video = str(tmp_path / "still.mp4")
  _still_video(video)
  joints = {}
  for smooth in ("--smooth", "--nosmooth"):
    out = str(tmp_path / smooth)
    run = subprocess.run([sys.executable, "-m", "deeppose_tf.predict", video,
                          f"--output={out}", smooth, "--nooverlay"], capture_output=True,
                         text=True, env=subprocess_env(), cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    recs = [json.loads(line) for line in open(os.path.join(out, "predictions.jsonl"))]
    assert [r["track"] for r in recs] == [0] * 30 and [r["frame"] for r in recs] == list(
        range(30))
    joints[smooth] = np.asarray([r["joints_per_stage"][-1] for r in recs])
  raw, smooth = track.jitter(joints["--nosmooth"]), track.jitter(joints["--smooth"])
  print(f"jitter of a still person: raw {raw:.2f} px, smoothed {smooth:.2f} px, "
        f"{raw / smooth:.1f}x")
  assert raw > 1.0  # the model does jitter on this video, so the check can fail
  # Measured 2026-12-06, model 2026.12.06.1: --boxes=full raw 16.1 px, smoothed 6.8 px, 2.4x
  # (2.1x with 0-4 px shifts); --boxes=auto (the default; each frame reframed from the last)
  # raw 18.0 px, 1.9x. Model 2026.12.06.2, --boxes=auto: raw 10.8 px, smoothed 4.3 px, 2.5x.
  # Model 2026.12.06.3 (160 px, half refinement step): raw 16.2 px, smoothed 8.9 px, 1.8x.
  # Model 2026.12.06.4 (192 px): raw 10.8 px, smoothed 4.9 px, 2.2x: most of the raw motion
  # is three joints the portrait does not show (a knee, an ankle, a wrist) whose heatmap peak
  # switches 30-100 px between hypotheses, which the 1 Euro filter takes for motion. With
  # the spike gate before the filter (track.JUMP): smoothed 3.2 px, 3.4x (the 3x).
  # Model 2026.12.06.5 (stage 1 on the joints' framing): raw 12.7 px, smoothed 3.2 px, 4.0x.
  # Model 2026.12.07.1 (the wider zoom): raw 12.5 px, smoothed 3.3 px, 3.7x.
  # Model 2026.12.07.2 (the zoom to 1.8): raw 10.6 px, smoothed 2.5 px, 4.3x.
  # Model 2026.12.07.3 (lr 1e-4, stride-8 layers trained): raw 15.9 px, smoothed 5.1 px, 3.1x.
  # The bound leaves room for other library versions' numerics.
  assert smooth * 2.5 <= raw


def test_builtin_kernels_and_xnnpack_agree_on_the_bundled_model():
  """TFLiteCascade(xnnpack=False) runs LiteRT's builtin fp32 kernels (the path that checks
  weights whatever the CPU): on a trained model it answers what XNNPACK answers, to a
  fraction of a pixel."""
  from deeppose_tf.tflite_cascade import TFLiteCascade
  image = np.asarray(Image.open(_photo()).convert("RGB"))
  h, w = image.shape[:2]
  box = np.array([w / 2, h / 2, w, h], np.float32)
  fast = TFLiteCascade(models.BUNDLED, LSP14).predict_one(image, box)
  plain = TFLiteCascade(models.BUNDLED, LSP14, xnnpack=False).predict_one(image, box)
  assert fast.shape == plain.shape == (2, 14, 2)
  assert np.isfinite(plain).all()
  assert np.median(np.abs(fast - plain)) < 0.5, np.abs(fast - plain)
