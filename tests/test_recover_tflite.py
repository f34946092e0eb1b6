"""experiments/recover_tflite.py: a cascade exported to float16 TFLite (BatchNorm folded,
names gone) is recovered into Keras stages that compute what the file computes, and that
`train --init_weights` reads."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from deeppose_tf import cascade
from deeppose_tf.tflite_cascade import TFLiteCascade
from deeppose_tf.skeleton import LSP14

from helpers import REPO, random_records
from helpers import subprocess_env as _env

FLAGS = ["--dataset=lsp", "--backbone=mobilenetv2", "--backbone_weights=", "--head=heatmap",
         "--head_channels=16", "--input_size=64", "--num_stages=2", "--batch_size=4",
         "--draws=2", "--stats_images=0", "--refine_init=scratch", "--flip_test",
         "--reframe=1", "--refine_step=0.5", "--noevaluate", "--noexport"]


def _run(*args):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=_env(),
                        cwd=REPO, timeout=900)


@pytest.mark.slow  # two tiny MobileNetV2 cascades trained, two float16 exports: ~2 minutes
def test_recovered_cascade_computes_what_the_tflite_file_computes(tiny_data, tmp_path):
  trained, skel, out = (str(tmp_path / n) for n in ("trained", "skel", "out"))
  for workdir, steps, seed in ((trained, "3,3", 0), (skel, "1,1", 5)):
    run = _run("-m", "deeppose_tf.train", f"--workdir={workdir}", f"--data_dir={tiny_data}",
               f"--steps_per_stage={steps}", f"--seed={seed}", *FLAGS)
    assert run.returncode == 0, run.stderr[-3000:]
  tfl = str(tmp_path / "cascade.tflite")
  run = _run("-m", "deeppose_tf.export", f"--workdir={trained}", "--format=tflite",
             "--quantize=float16", "--tflite_size=128,128", f"--export_dir={tfl}")
  assert run.returncode == 0, run.stderr[-3000:]

  run = _run(os.path.join("experiments", "recover_tflite.py"), f"--data_dir={tiny_data}",
             f"--workdir={skel}", "--steps_per_stage=1,1", f"--tflite={tfl}",
             f"--skeleton_workdir={skel}", f"--out_workdir={out}", "--check_images=4",
             "--calib_batches=2", *FLAGS)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "recovered 226 of 226 variables" in run.stderr  # every weight of both stages

  # Read back in this process: the recovered Keras stages against the file, and against
  # the trained cascade they were exported from (float16 weights: close, not equal).
  got = cascade.Cascade.load(out)
  want = cascade.Cascade.load(trained)
  lite = TFLiteCascade(tfl, LSP14, xnnpack=False)  # fp32 kernels whatever the CPU
  rng = np.random.default_rng(3)
  close, far = [], []
  for record in random_records(4, seed=9):
    image = tf.io.decode_image(record.image, channels=3).numpy()
    h, w = image.shape[:2]
    box = np.array([[w / 2 + rng.uniform(-5, 5), h / 2, w * 0.9, h * 0.9]], np.float32)
    mine = got.predict(image[None], box).numpy()[0]  # (S, K, 2) image pixels
    # Joints are decoded at heatmap peaks, and these networks are trained 3 steps: their
    # heatmaps are nearly flat, so a difference of 1e-6 between TFLite's kernels and TF's, or
    # float16 weights, can move a near-tie peak anywhere in the crop (CI once saw one joint
    # of 28 move 32 px in a 62 px image). So most coordinates must agree within 1 px, and
    # only a few joints may be more than a cell and a half (box side / 8) away. Weights
    # recovered into the wrong layers move nearly every joint, and fail both.
    cell = 0.9 * max(h, w) / 8
    for other in (lite.predict_one(image, box[0]), want.predict(image[None], box).numpy()[0]):
      diff = np.abs(mine - other)
      close.append(float(np.mean(diff <= 1.0)))
      far.append(int(np.sum(diff.max(axis=-1) > 1.5 * cell)))
  assert np.mean(close) >= 0.9, close  # the share of coordinates within 1 px
  assert max(far) <= 2, far  # joints (of 2 x 14 per image) beyond 1.5 cells, per comparison

  # The recovered stage 1 is a starting point for training (its BatchNorm statistics were
  # measured on training batches, so a training step does not blow up its outputs).
  run = _run("-m", "deeppose_tf.train", f"--workdir={tmp_path / 'again'}",
             f"--data_dir={tiny_data}", "--steps_per_stage=2", "--stage=1",
             f"--init_weights={os.path.join(out, 'stage1', 'model.keras')}", *FLAGS)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "copied ['backbone'" in run.stderr
