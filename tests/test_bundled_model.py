"""The model bundled with the package (issue 14): present, small, loads fast, and finds a
pose inside the person's box on a real photo (matplotlib's grace_hopper.jpg, a portrait
that fills its frame, so the person's box is the whole image)."""

import json
import os
import subprocess
import sys
import time

import numpy as np
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
