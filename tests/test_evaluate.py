"""End to end on tiny data: train 2 stages via the CLI, evaluate, check the report files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deeppose_tf import workdir as workdir_lib
from test_train import REPO, TINY_FLAGS, _env


@pytest.mark.slow  # 37 s: two CLI stages; CI runs it in `pytest -m slow`
def test_train_two_stages_then_evaluate_writes_the_report(tiny_data, tmp_path):
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "deeppose_tf.train", f"--workdir={workdir}", "--dataset=lsp",
         f"--data_dir={tiny_data}", *TINY_FLAGS, "--num_stages=2", "--steps_per_stage=4,2",
         "--checkpoint_every=2", "--export"]
  out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "stage 2" in out.stdout and "mean pose" in out.stdout  # the printed table

  with open(os.path.join(workdir, "report.json")) as f:
    report = json.load(f)  # strict JSON: NaN would not parse with the default hook below
  assert report["num_images"] == 8 and report["split"] == "test"
  assert [s["stage"] for s in report["stages"]] == [1, 2]
  for entry in report["stages"] + [report["mean_pose"]]:
    assert set(entry["pdj_mean_at"]) == {"0.05", "0.1", "0.2"}
    assert 0.0 <= entry["pcp_mean"] <= 1.0
    curve = [v for v in entry["pdj"]["mean"] if v is not None]
    assert np.all(np.diff(curve) >= 0)  # PDJ grows with the radius
  table = open(os.path.join(workdir, "report.md")).read()
  assert "| stage 1 |" in table and "| stage 2 |" in table and "| mean pose |" in table
  for name in ("pdj_curves.png", "examples.png"):
    with Image.open(os.path.join(workdir, name)) as im:
      assert im.format == "PNG" and im.size[0] > 200
  # Stage 1's statistics (which trained stage 2) are finite; the last stage's are skipped.
  stats = workdir_lib.load_stats(workdir, 1)
  assert np.all(np.isfinite(stats["cov"])) and len(stats["mean"]) == 14
  assert not os.path.exists(workdir_lib.stats_path(workdir, 2))

  # Training ends with a TF Serving SavedModel export (version 1).
  assert os.path.exists(os.path.join(workdir, "export", "1", "saved_model.pb"))

  # The evaluate CLI alone reproduces the same numbers from the saved models.
  again = subprocess.run([sys.executable, "-m", "deeppose_tf.evaluate", f"--workdir={workdir}",
                          "--eval_split=test"], capture_output=True, text=True, env=_env(),
                         cwd=REPO, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  with open(os.path.join(workdir, "report.json")) as f:
    report2 = json.load(f)
  for a, b in zip(report["stages"], report2["stages"]):
    assert a["pdj_mean_at"] == b["pdj_mean_at"]
    assert a["pcp_mean"] == b["pcp_mean"]
