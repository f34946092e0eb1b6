"""The heatmap head: the integral head's layers and training, decoded at the peak."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeppose_tf import losses, optim, trainer
from deeppose_tf.models import layers
from deeppose_tf.models import builder as model_lib
from deeppose_tf import workdir as workdir_lib

K = 14


def _config(head, **kw):
  return model_lib.ModelConfig(num_joints=K, input_size=64, backbone="resnet", head=head,
                               width=0.25, head_channels=16, **kw)


def _cell(h, w, i, j):
  return layers.cell_centres(h, w)[i * w + j]


def test_two_mode_heatmap_gives_the_stronger_mode_not_the_midpoint():
  """A wrist heatmap with two modes (left and right): the soft-argmax answers a point between
  them, near neither; the peak decoder answers the stronger mode."""
  h = w = 16
  logits = np.full((1, h, w, 1), -10.0, np.float32)
  logits[0, 8, 2, 0] = 5.0   # the stronger mode, left
  logits[0, 8, 13, 0] = 4.7  # the weaker, right
  soft = layers.SoftArgmax()(logits).numpy()[0, 0]
  peak = layers.HeatmapPeak(log_space=True)(logits).numpy()[0, 0]
  left, right = _cell(h, w, 8, 2), _cell(h, w, 8, 13)
  np.testing.assert_allclose(peak, left, atol=1e-3)
  assert np.linalg.norm(soft - left) > 0.2 and np.linalg.norm(soft - right) > 0.2, soft


def test_heatmap_net_predicts_the_peak_and_trains_through_the_soft_argmax():
  net = model_lib.build_regressor(_config("heatmap"))
  assert isinstance(net.get_layer("joints"), layers.HeatmapPeak)
  train = model_lib.training_model(net)
  assert set(train.output) == {"joints", "heatmaps"}
  x = np.random.RandomState(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
  out = train(x)
  np.testing.assert_allclose(out["joints"].numpy(), layers.SoftArgmax()(out["heatmaps"]).numpy(),
                             atol=1e-6)
  np.testing.assert_allclose(net(x).numpy(),
                             layers.HeatmapPeak(log_space=True)(out["heatmaps"]).numpy(),
                             atol=1e-6)
  # The coordinate loss reaches the heatmap layer's kernel (the argmax alone would not).
  y = tf.concat([tf.zeros((2, K, 2)), tf.ones((2, K, 1))], -1)
  kernel = net.get_layer("heatmaps").kernel
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(losses.coordinate_loss("l1")(y, train(x)["joints"]))
  grad = tape.gradient(loss, kernel)
  assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


def test_an_integral_stage_moves_into_a_heatmap_head_by_name(tmp_path):
  """experiments/heatmap_from_integral.py's premise: every layer copies and the heatmaps are
  identical; only the decoded joints differ. Also through a save and a load."""
  integral = model_lib.build_regressor(_config("integral"))
  path = str(tmp_path / "integral.keras")
  workdir_lib.save_model(integral, path)
  net = model_lib.build_regressor(_config("heatmap"))
  copied, skipped = model_lib.assign_by_name(net, model_lib.pretrained_weights(path))
  assert not skipped and "heatmaps" in copied
  x = np.random.RandomState(1).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
  a = model_lib.training_model(integral)(x)["heatmaps"].numpy()
  b = model_lib.training_model(net)(x)["heatmaps"].numpy()
  np.testing.assert_allclose(a, b, atol=1e-5)
  workdir_lib.save_model(net, str(tmp_path / "heatmap.keras"))
  loaded = workdir_lib.load_model(str(tmp_path / "heatmap.keras"))
  assert isinstance(loaded.get_layer("joints"), layers.HeatmapPeak)
  np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), atol=1e-6)


@pytest.mark.slow  # 20 s; the default run keeps the integral head's (same training)
def test_heatmap_head_fits_four_distinct_poses_with_the_trainers_losses():
  """Trained as the trainer trains it (FitConfig's L1 + heatmap cross-entropy on the training
  model), the peak-decoded predictions end near each image's own pose."""
  keras.utils.set_random_seed(0)
  rng = np.random.RandomState(0)
  poses = rng.uniform(-0.35, 0.35, (4, K, 2)).astype(np.float32)
  images = np.zeros((4, 64, 64, 3), np.float32)
  for n in range(4):
    y, x = 4 + 14 * n, 50 - 12 * n
    images[n, y:y + 10, x - 10:x, n % 3] = 255.0
  net = model_lib.build_regressor(_config("heatmap"))
  train = model_lib.training_model(net)
  fit = trainer.FitConfig(steps=1, learning_rate=3e-3, loss="l1", heatmap_loss_weight=1.0)
  args = fit.compile_args(train)
  args["optimizer"] = optim.make_optimizer("adam", 3e-3)
  train.compile(**args)
  y = np.concatenate([poses, np.ones((4, K, 1), np.float32)], -1)
  train.fit(images, {"joints": y, "heatmaps": y}, batch_size=4, epochs=200, verbose=0)
  pred = net(images, training=True).numpy()
  err_own = np.linalg.norm(pred - poses, axis=-1).mean(axis=-1)
  err_mean = np.linalg.norm(poses.mean(axis=0)[None] - poses, axis=-1).mean(axis=-1)
  assert np.all(err_own < 0.3 * err_mean), (err_own, err_mean)
