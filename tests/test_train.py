"""Training: no collapse to the mean pose, mirrored == single device, SIGKILL resume, errors."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeppose_tf.models import builder as model_lib
from deeppose_tf import optim
from deeppose_tf.losses import masked_l2_loss
from deeppose_tf.skeleton import LSP14

from helpers import REPO
from helpers import subprocess_env as _env

TINY_FLAGS = ["--noexport", "--input_size=72", "--width=0.1", "--fc_units=32", "--batch_size=4",
              "--draws=3", "--stats_images=0", "--eval_batch_size=8"]


# Both cases run in `pytest -m slow` (CI runs it), 19 s and as long again without
# normalization: the default run stays under 10 minutes.
@pytest.mark.parametrize("norm", [pytest.param("batch", marks=pytest.mark.slow),
                                  pytest.param("none", marks=pytest.mark.slow)])
def test_small_network_reproduces_distinct_poses_not_their_mean(norm):
  """The collapse users report in other ports: a net that outputs the mean pose for every
  image. Four images whose content determines four very different poses must be fitted
  individually: each prediction ends far closer to its own pose than the mean pose is.

  With BatchNorm the inference-mode output also carries the lag of the moving statistics
  over a 4-image 'dataset', so there the fitted function itself (batch statistics) must be
  near-exact and inference mode clearly better than the mean."""
  keras.utils.set_random_seed(0)  # the BatchNorm inference bound below is init-sensitive
  rng = np.random.RandomState(0)
  size, k = 72, LSP14.num_joints
  poses = rng.uniform(-0.4, 0.4, (4, k, 2)).astype(np.float32)
  images = np.zeros((4, size, size, 3), np.float32)
  for n in range(4):  # a distinct pattern per image: a bright square at a distinct place
    y, x = 8 + 16 * n, 60 - 14 * n
    images[n, y:y + 8, x - 8:x, n % 3] = 255.0
  targets = np.concatenate([poses, np.ones((4, k, 1), np.float32)], axis=-1)
  mean = poses.mean(axis=0)
  config = model_lib.ModelConfig(num_joints=k, input_size=size, width=0.1, fc_units=64,
                                 dropout=0.0, norm=norm)
  keras_model = model_lib.build_regressor(config, mean)
  keras_model.compile(optim.make_optimizer("adam", 3e-3 if norm == "batch" else 1e-3),
                      masked_l2_loss)
  keras_model.fit(images, targets, batch_size=4, epochs=300, verbose=0)
  err_mean_pose = np.linalg.norm(mean[None] - poses, axis=-1).mean(axis=-1)  # ~0.25

  def err(training):
    pred = keras_model(images, training=training).numpy()
    return np.linalg.norm(pred - poses, axis=-1).mean(axis=-1)  # (4,)

  assert np.all(err(norm == "batch") < 0.05 * err_mean_pose), (err(True), err_mean_pose)
  assert np.all(err(False) < (0.6 if norm == "batch" else 0.05) * err_mean_pose), (
      err(False), err_mean_pose)


_MIRROR_SCRIPT = textwrap.dedent("""
    import json, sys
    from deeppose_tf import distribute, trainer
    replicas, data_dir, ckpt = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    strategy = distribute.make_strategy(replicas)
    import keras
    from deeppose_tf.models import builder as model_lib
    from deeppose_tf import pipeline
    from deeppose_tf.skeleton import LSP14
    keras.utils.set_random_seed(7)
    config = model_lib.ModelConfig(input_size=72, width=0.1, fc_units=32, dropout=0.0,
                                   norm="batch")
    build = lambda: model_lib.build_regressor(config)
    data = lambda step: pipeline.train_dataset(data_dir, "train", LSP14, 72, 8, seed=3,
                                               augment=pipeline.NO_AUGMENT)
    fit = trainer.FitConfig(steps=6, learning_rate=1e-3, checkpoint_every=1, verbose=0)
    _, history = trainer.fit_stage(strategy, build, data, ckpt, fit)
    print("LOSSES", json.dumps(history["loss"], separators=(",", ":")), strategy.num_replicas_in_sync)
""")


@pytest.mark.slow  # ~22 s, a subprocess per replica count; CI runs the slow suite too
def test_mirrored_two_cpu_replicas_match_one_device(tiny_data, tmp_path):
  """2 logical CPU devices and 1 device on the same global batch give the same per-step
  losses. Tolerance 1e-4 relative: only the order of the float32 gradient reduction
  differs (synchronized BatchNorm uses global-batch statistics; dropout is off)."""
  losses = {}
  for replicas in (1, 2):
    out = subprocess.run(
        [sys.executable, "-c", _MIRROR_SCRIPT, str(replicas), tiny_data,
         str(tmp_path / f"ckpt{replicas}")], capture_output=True, text=True, env=_env(),
        timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [l for l in out.stdout.splitlines() if l.startswith("LOSSES")][0]
    losses[replicas] = json.loads(line.split(" ", 2)[1])
    assert int(line.split()[-1]) == replicas
  assert len(losses[1]) == 6
  np.testing.assert_allclose(losses[2], losses[1], rtol=1e-4)
  # The weights moved (6 random batches of random poses need not lower the loss).
  assert np.ptp(losses[1]) > 1e-3


def _train_cmd(workdir, data_dir, *extra):
  return [sys.executable, "-m", "deeppose_tf.train", f"--workdir={workdir}", "--dataset=lsp",
          f"--data_dir={data_dir}", *TINY_FLAGS, *extra]


@pytest.mark.slow  # 43 s: a CLI run killed and rerun; CI runs it in `pytest -m slow`
def test_sigkill_mid_stage_then_rerun_resumes_from_last_checkpoint(tiny_data, tmp_path):
  workdir = str(tmp_path / "run")
  cmd = _train_cmd(workdir, tiny_data, "--num_stages=1", "--steps_per_stage=400",
                   "--checkpoint_every=20", "--noevaluate")
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=_env(), cwd=REPO)
  ckpt_dir = os.path.join(workdir, "stage1", "ckpt")
  deadline = time.time() + 240
  try:
    while time.time() < deadline:
      state = tf.train.get_checkpoint_state(ckpt_dir) if os.path.isdir(ckpt_dir) else None
      if state and state.model_checkpoint_path:
        step = int(state.model_checkpoint_path.rsplit("-", 1)[1])
        if step >= 40:
          break
      assert proc.poll() is None, "training ended before it could be killed"
      time.sleep(0.2)
    else:
      pytest.fail("no checkpoint at step >= 40 within 240 s")
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  killed_at = int(tf.train.get_checkpoint_state(ckpt_dir).model_checkpoint_path.rsplit("-", 1)[1])
  assert killed_at < 400 and not os.path.exists(os.path.join(workdir, "stage1", "model.keras"))

  out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  resumed = re.search(r"resumed from \S+ckpt-(\d+) \(step (\d+)\)", out.stderr)
  assert resumed, out.stderr[-3000:]
  assert int(resumed.group(2)) >= killed_at
  # Only the remaining epochs ran: Keras printed epochs starting after the resume point.
  first_epoch = int(re.search(r"Epoch (\d+)/20", out.stdout + out.stderr).group(1))
  assert first_epoch == int(resumed.group(2)) // 20 + 1
  reader = tf.train.load_checkpoint(os.path.join(ckpt_dir, "ckpt-400"))
  iterations = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
                if "iteration" in k and "OPTIMIZER_SLOT" not in k]
  assert 400 in [int(v) for v in iterations]
  assert os.path.exists(os.path.join(workdir, "stage1", "model.keras"))


def test_stage_two_refuses_without_stage_one(tiny_data, tmp_path):
  out = subprocess.run(_train_cmd(str(tmp_path / "w"), tiny_data, "--num_stages=2",
                                  "--stage=2", "--steps_per_stage=2", "--noevaluate"),
                       capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
  assert out.returncode != 0
  assert "stage 2 needs stage 1's model" in out.stderr
  assert "--stage=1" in out.stderr


def test_unknown_dataset_is_named(tmp_path):
  out = subprocess.run([sys.executable, "-m", "deeppose_tf.train", f"--workdir={tmp_path}",
                        "--dataset=mpii"], capture_output=True, text=True, env=_env(),
                       cwd=REPO, timeout=300)
  assert out.returncode != 0
  assert "unknown dataset 'mpii'" in out.stderr


def test_nan_loss_stops_training_with_the_step(tiny_data, tmp_path):
  """A learning rate that blows the weights up must stop training with an error that names
  the step, and leave no checkpoint of the broken weights."""
  from deeppose_tf import pipeline, trainer
  strategy = tf.distribute.get_strategy()
  config = model_lib.ModelConfig(input_size=72, width=0.1, fc_units=32, dropout=0.0,
                                 norm="none", output_init="default")
  fit = trainer.FitConfig(steps=20, learning_rate=1e12, optimizer="sgd", checkpoint_every=20,
                          verbose=0)
  data = lambda step: pipeline.train_dataset(tiny_data, "train", LSP14, 72, 4, seed=0)
  ckpt = str(tmp_path / "ckpt")
  with pytest.raises(FloatingPointError, match=r"at step \d+"):
    trainer.fit_stage(strategy, lambda: model_lib.build_regressor(config), data, ckpt, fit)
  assert not tf.train.get_checkpoint_state(ckpt)


def test_assign_by_name_copies_matching_layers_only(tmp_path):
  """Pretrained weights go where names and shapes match: a 10-joint source fills conv1..fc7
  of a 14-joint regressor and leaves its fc8 (another joint count) as initialized."""
  small = dict(input_size=72, width=0.1, fc_units=32)
  source = model_lib.build_regressor(model_lib.ModelConfig(num_joints=10, output_init="default",
                                                           **small))
  path = str(tmp_path / "pretrained.keras")
  source.save(path)
  target = model_lib.build_regressor(model_lib.ModelConfig(num_joints=14, **small))
  fc8_before = target.get_layer("fc8").get_weights()
  copied, skipped = model_lib.assign_by_name(target, model_lib.pretrained_weights(path))
  assert skipped == ["fc8"]
  assert {"conv1", "conv5", "bn1", "fc6", "fc7"} <= set(copied)
  for name in copied:
    for got, want in zip(target.get_layer(name).get_weights(),
                         source.get_layer(name).get_weights()):
      np.testing.assert_array_equal(got, want)
  for got, want in zip(target.get_layer("fc8").get_weights(), fc8_before):
    np.testing.assert_array_equal(got, want)
  # Nothing in common: an error, not a silent random start.
  other = model_lib.build_regressor(model_lib.ModelConfig(num_joints=14, input_size=72,
                                                          width=0.2, fc_units=16))
  with pytest.raises(ValueError, match="no layer of .* matches"):
    model_lib.assign_by_name(other, {"conv1": [np.zeros(3)]})
  with pytest.raises(ValueError, match="no such file"):
    model_lib.pretrained_weights(str(tmp_path / "missing.keras"))


@pytest.mark.slow  # two CLI trainings, about 40 s; the unit test above runs by default
def test_train_with_init_weights_starts_from_them(tiny_data, tmp_path):
  """--init_weights: stage 1 of a new run starts from another run's stage-1 model (the log
  names the copied layers), and a missing file is refused before any training. The second
  run trains on the joints' framing (--stage1_box=joints): config.json records it and the
  mean pose is taken in that frame."""
  first = str(tmp_path / "first")
  run = subprocess.run(_train_cmd(first, tiny_data, "--num_stages=1", "--steps_per_stage=2",
                                  "--noevaluate"),
                       capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  pretrained = os.path.join(first, "stage1", "model.keras")
  second = str(tmp_path / "second")
  run = subprocess.run(_train_cmd(second, tiny_data, "--num_stages=1", "--steps_per_stage=2",
                                  "--noevaluate", f"--init_weights={pretrained}",
                                  "--stage1_box=joints"),
                       capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert re.search(r"stage 1 starts from \S+model.keras: copied \[.*'conv1'.*'fc8'\]",
                   run.stderr), run.stderr[-3000:]
  # Without --reframe the joints-framed stage 1 would never be read where it trained: said.
  assert "--stage1_box=joints with --reframe=0" in run.stderr
  from deeppose_tf import pipeline, workdir as workdir_lib
  with open(os.path.join(second, "config.json")) as fh:
    assert json.load(fh)["stage1_box"] == "joints"
  with open(os.path.join(first, "config.json")) as fh:
    assert json.load(fh)["stage1_box"] == "image"
  # Resuming the first run on the joints' framing would mix framings: refused, named.
  run = subprocess.run(_train_cmd(first, tiny_data, "--num_stages=1", "--steps_per_stage=2",
                                  "--noevaluate", "--stage1_box=joints"),
                       capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
  assert run.returncode != 0 and "stage1_box: 'image' in the workdir, 'joints' now" in run.stderr
  np.testing.assert_allclose(workdir_lib.read_mean_pose(second, 14),
                             pipeline.mean_pose(tiny_data, "train", LSP14, "joints"), atol=1e-5)
  assert not np.allclose(workdir_lib.read_mean_pose(first, 14),
                         workdir_lib.read_mean_pose(second, 14))
  run = subprocess.run(_train_cmd(str(tmp_path / "third"), tiny_data, "--num_stages=1",
                                  "--init_weights=/nonexistent.keras"),
                       capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
  assert run.returncode != 0 and "--init_weights=/nonexistent.keras: no such file" in run.stderr
