"""The training recipe: affine augmentation, fitting with each head, bfloat16 training, the
integral cascade's export, and the cached pipeline (the networks, losses and schedules
alone: test_models.py)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import REPO, subprocess_env
from deeppose_tf import cascade, geometry, losses, optim, pipeline
from deeppose_tf.models import builder as model_lib
from deeppose_tf import workdir as workdir_lib
from deeppose_tf.skeleton import LSP14

STRONG = pipeline.AugmentConfig(translate=0.15, scale=(0.7, 1.3), flip=True, rotate=40.0,
                                brightness=0.2, contrast=0.3, saturation=0.3)


def _dot_image(points, h, w):
  """A black image with a 3 x 3 white dot centred on every point (image pixels whose centre
  is at integer + 0.5: the points are pixel centres)."""
  img = np.zeros((h, w, 3), np.uint8)
  for x, y in points:
    i, j = int(y), int(x)
    img[i - 1:i + 2, j - 1:j + 2] = 255
  return img


def _spot(crop, target_px, radius=5):
  """Intensity-weighted centroid (crop pixels, centre convention) of the crop near a point."""
  s = crop.shape[0]
  g = crop[..., 0].astype(np.float64)
  x0, y0 = target_px
  ys, xs = np.mgrid[0:s, 0:s] + 0.5
  near = (np.abs(xs - x0) <= radius) & (np.abs(ys - y0) <= radius)
  wgt = g * near
  return np.array([(wgt * xs).sum() / wgt.sum(), (wgt * ys).sum() / wgt.sum()])


@pytest.mark.parametrize("in_dataset", [False, True])
def test_affine_augmentation_maps_joints_exactly(in_dataset):
  """Dots planted at the joints land where the targets say, to 0.5 px, under rotation,
  scale, shift and flip; eagerly and inside tf.data.Dataset.map."""
  size = 96
  h, w = 120, 100
  rng = np.random.RandomState(3)
  joints = np.stack([rng.uniform(35, 65, 14), rng.uniform(40, 80, 14)], -1).astype(np.float32)
  joints = np.round(joints) + 0.5  # pixel centres, so the 3 x 3 dot is symmetric about them
  # Keep only joints far enough apart that their dots do not blend.
  keep = [0]
  for i in range(1, 14):
    if all(np.abs(joints[i] - joints[j]).max() > 12 for j in keep):
      keep.append(i)
  visible = np.zeros(14, np.float32)
  visible[keep] = 1
  image = _dot_image(joints[keep], h, w)
  features = {"pixels": tf.constant(image), "joints": tf.constant(joints),
              "box": tf.constant([w / 2, h / 2, w, h], tf.float32),
              "visible": tf.constant(visible), "image_id": tf.constant("dots")}
  aug = pipeline.AugmentConfig(translate=0.1, scale=(0.9, 1.2), flip=True, rotate=40.0)
  seeds = [tf.constant([7, i], tf.int64) for i in range(6)]
  if in_dataset:
    ds = tf.data.Dataset.from_tensor_slices(tf.stack(seeds)).map(
        lambda sd: pipeline.stage1_example(features, sd, LSP14, size, aug))
    outs = [(c.numpy(), t.numpy()) for c, t in ds]
  else:
    outs = [(c.numpy(), t.numpy()) for c, t in
            (pipeline.stage1_example(features, sd, LSP14, size, aug) for sd in seeds)]
  checked = 0
  for crop, target in outs:
    for j in range(14):
      if target[j, 2] == 0:
        continue
      px = (target[j, :2] + 0.5) * size
      if np.any(px < 6) or np.any(px > size - 6):
        continue
      found = _spot(crop, px)
      # The dot is 3 px in the image; the crop scale is about size / 100: well under 1 px
      # of blur. The centroid of a bilinear-resampled symmetric dot sits at its centre.
      assert np.abs(found - px).max() < 0.5, (j, found, px)
      checked += 1
  assert checked >= 10


def test_affine_crop_equals_crop_at_angle_zero_and_round_trips():
  rng = np.random.RandomState(0)
  img = rng.uniform(0, 255, (2, 50, 70, 3)).astype(np.float32)
  boxes = np.array([[30, 22, 40, 30], [3, 2, -40, 30]], np.float32)  # one mirrored
  a = geometry.affine_crop(img, boxes, [0.0, 0.0], 16).numpy()
  b = geometry.crop(img, boxes, [0, 1], 16).numpy()
  np.testing.assert_allclose(a, b, atol=0.05)
  p = rng.uniform(0, 60, (2, 5, 2)).astype(np.float32)
  ang = np.array([0.7, -2.0], np.float32)
  u = geometry.affine_normalize(p, boxes, ang)
  np.testing.assert_allclose(geometry.affine_denormalize(u, boxes, ang), p, atol=1e-3)
  np.testing.assert_allclose(geometry.affine_normalize(p, boxes, [0.0, 0.0]),
                             geometry.normalize(p, boxes), atol=1e-6)


def test_refine_example_with_rotation_targets_the_planted_joint():
  """A rotated refinement crop shows its joint's dot where the target row says."""
  h, w, size = 100, 100, 48
  joints = np.full((14, 2), 50.5, np.float32)
  joints[9] = [40.5, 30.5]   # left shoulder
  joints[2] = [60.5, 75.5]   # right hip: torso diameter ~ 49 px
  joints[5] = [70.5, 52.5]   # the joint we look at
  image = _dot_image([joints[5]], h, w)
  visible = np.zeros(14, np.float32)
  visible[[2, 5, 9]] = 1
  features = {"pixels": tf.constant(image), "joints": tf.constant(joints),
              "box": tf.constant([50, 50, 100, 100], tf.float32),
              "visible": tf.constant(visible), "image_id": tf.constant("dot")}
  aug = pipeline.AugmentConfig(translate=0.0, scale=(1.0, 1.0), flip=True, rotate=45.0)
  mean = np.zeros((14, 2), np.float32)
  chol = np.tile(np.eye(2, dtype=np.float32) * 0.05, (14, 1, 1))
  crops, targets = pipeline.refine_example(features, tf.constant([1, 2], tf.int64), LSP14,
                                           size, 1.0, mean, chol, 24, aug)
  checked = 0
  for crop, target in zip(crops.numpy(), targets.numpy()):
    row = int(np.argmax(target[:, 2]))
    if row not in (5, LSP14.flip_permutation[5]):  # joint 5, or its label in a mirrored crop
      continue
    px = (target[row, :2] + 0.5) * size
    if np.any(px < 5) or np.any(px > size - 5):
      continue
    assert np.abs(_spot(crop, px) - px).max() < 0.5
    checked += 1
  assert checked >= 3


def test_colour_jitter_changes_colour_only_and_stays_in_range():
  crop = tf.random.stateless_uniform([4, 8, 8, 3], [0, 1], 0, 255)
  out = pipeline.jitter_colour(crop, tf.constant([3, 4], tf.int64), STRONG)
  assert out.shape == crop.shape
  assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
  assert float(tf.reduce_max(tf.abs(out - crop))) > 1.0
  same = pipeline.jitter_colour(crop, tf.constant([3, 4], tf.int64), pipeline.NO_AUGMENT)
  assert same is crop


def test_augment_config_rejects_bad_values():
  with pytest.raises(ValueError, match="rotate"):
    pipeline.AugmentConfig(rotate=-1.0)
  with pytest.raises(ValueError, match="contrast"):
    pipeline.AugmentConfig(contrast=1.5)
  with pytest.raises(ValueError, match="scale"):
    pipeline.AugmentConfig(scale=(1.2, 0.8))


def test_cached_pipeline_matches_uncached(tiny_data):
  """The in-memory cache (decoded once, full size) gives the batches of decoding per visit;
  a shrinking cache scales the targets' frame, not their normalized values."""
  make = lambda cache: pipeline.train_dataset(tiny_data, "train", LSP14, 32, 4, seed=0,
                                              augment=pipeline.NO_AUGMENT, shuffle_buffer=8,
                                              cache_max_side=cache)
  for (xa, ya), (xb, yb), (xc, yc) in zip(make(None).take(3), make(0).take(3),
                                          make(24).take(3)):
    np.testing.assert_array_equal(xa.numpy(), xb.numpy())
    np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    np.testing.assert_allclose(ya.numpy(), yc.numpy(), atol=1e-5)
    assert not np.array_equal(xa.numpy(), xc.numpy())  # shrunk pixels differ


def _four_poses(size):
  rng = np.random.RandomState(0)
  poses = rng.uniform(-0.35, 0.35, (4, 14, 2)).astype(np.float32)
  images = np.zeros((4, size, size, 3), np.float32)
  for n in range(4):
    y, x = 4 + 14 * n, 50 - 12 * n
    images[n, y:y + 10, x - 10:x, n % 3] = 255.0
  return images, poses


@pytest.mark.parametrize("backbone,head", [
    # All three run in the slow suite (CI runs it): the default run stays under 10 minutes
    # (resnet-integral alone took 29 s of it).
    pytest.param("resnet", "integral", marks=pytest.mark.slow),
    pytest.param("resnet", "fc", marks=pytest.mark.slow),
    pytest.param("alexnet", "integral", marks=pytest.mark.slow)])
def test_small_network_with_each_head_fits_four_distinct_poses(backbone, head):
  """Each prediction ends far closer to its own pose than to the four poses' mean: the net
  fits the poses, not their average (batch statistics: training=True)."""
  keras.utils.set_random_seed(0)
  size = 64 if backbone == "resnet" else 72
  images, poses = _four_poses(size)
  mean = poses.mean(axis=0)
  config = model_lib.ModelConfig(input_size=size, backbone=backbone, head=head, width=0.25,
                                 fc_units=64, dropout=0.0, head_channels=16)
  net = model_lib.build_regressor(config, mean)
  targets = np.concatenate([poses, np.ones((4, 14, 1), np.float32)], -1)
  net.compile(optim.make_optimizer("adam", 3e-3), losses.coordinate_loss("l1"))
  net.fit(images, targets, batch_size=4, epochs=250, verbose=0)
  pred = net(images, training=True).numpy()
  err_own = np.linalg.norm(pred - poses, axis=-1).mean(axis=-1)
  err_mean = np.linalg.norm(mean[None] - poses, axis=-1).mean(axis=-1)
  assert np.all(err_own < 0.25 * err_mean), (err_own, err_mean)


@pytest.mark.slow  # 10-22 s: the default run stays under 10 minutes
def test_bfloat16_training_is_finite_and_saves_float32(tmp_path):
  keras.utils.set_random_seed(1)
  config = model_lib.ModelConfig(input_size=64, backbone="resnet", head="integral", width=0.25,
                                 head_channels=16, precision="bfloat16")
  net = model_lib.build_regressor(config)
  assert net.get_layer("res2_1_a_conv").compute_dtype == "bfloat16"
  assert net.get_layer("heatmaps").compute_dtype == "float32"
  train = model_lib.training_model(net)
  from deeppose_tf import trainer
  fit = trainer.FitConfig(steps=5, learning_rate=1e-3, loss="l1", heatmap_loss_weight=0.1,
                          lr_schedule="cosine", warmup_steps=2, weight_decay=1e-4)
  train.compile(**fit.compile_args(train))
  images, poses = _four_poses(64)
  y = np.concatenate([poses, np.ones((4, 14, 1), np.float32)], -1)
  hist = train.fit(images, {"joints": y, "heatmaps": y}, batch_size=4, epochs=5, verbose=0)
  assert np.all(np.isfinite(hist.history["loss"]))
  saved = model_lib.with_precision(net, "float32")
  assert all(layer.compute_dtype == "float32" for layer in saved.layers)
  path = str(tmp_path / "m.keras")
  workdir_lib.save_model(saved, path)
  loaded = keras.models.load_model(path, compile=False)
  assert loaded.input.dtype == "float32" and loaded.output.dtype == "float32"
  np.testing.assert_allclose(loaded(images).numpy(), net(images).numpy(), atol=0.02)


@pytest.mark.slow  # ~30 s; test_export keeps a default TFLite-vs-SavedModel check
def test_integral_cascade_tflite_matches_saved_model(tiny_data, tmp_path):
  """An integral-head cascade exports as SavedModel and builtins-only TFLite, which agree."""
  from ai_edge_litert.interpreter import Interpreter
  size = 48
  d = str(tmp_path / "work")
  keras.utils.set_random_seed(0)
  config = model_lib.ModelConfig(input_size=size, backbone="resnet", head="integral",
                                 width=0.25, head_channels=16)
  for s in (1, 2):
    os.makedirs(workdir_lib.stage_dir(d, s))
    net = model_lib.build_regressor(config, name=f"stage{s}")
    # Non-trivial heatmaps: random logit weights instead of an all-zero-ish start.
    w = net.get_layer("heatmaps").get_weights()
    net.get_layer("heatmaps").set_weights([np.random.RandomState(s).normal(
        0, 0.5, w[0].shape).astype(np.float32), w[1]])
    workdir_lib.save_model(net, workdir_lib.model_path(d, s))
  workdir_lib.write_config(d, {"skeleton": "lsp14", "input_size": size, "sigma": 2.0,
                               "num_stages": 2, "data_dir": tiny_data, "train_split": "train"})
  env = subprocess_env()
  saved = str(tmp_path / "serving")
  lite = str(tmp_path / "m.tflite")
  for args in ([f"--output={saved}"], [f"--output={lite}", "--format=tflite"]):
    run = subprocess.run([sys.executable, "-m", "deeppose_tf.export", f"--workdir={d}", *args],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
  loaded = tf.saved_model.load(os.path.join(saved, "1"))
  interpreter = Interpreter(model_path=lite, num_threads=2)
  ops = {op["op_name"] for op in interpreter._get_ops_details()}
  assert not [op for op in ops if "FLEX" in op.upper()], ops
  assert "SOFTMAX" in ops
  runner = interpreter.get_signature_runner("serving_default")
  shape = interpreter.get_input_details()
  side = [d["shape"] for d in shape if len(d["shape"]) == 4][0][1]
  rng = np.random.RandomState(4)
  for _ in range(2):
    h, w = rng.randint(30, side, 2)
    canvas = np.zeros((1, side, side, 3), np.uint8)
    canvas[0, :h, :w] = rng.randint(0, 256, (h, w, 3))
    box = np.array([[w / 2, h / 2, w, h]], np.float32)
    out = runner(image=canvas.astype(np.float32), box=box)
    ref = loaded.signatures["predict_images"](images=tf.constant(canvas), boxes=box)
    spread = float(np.ptp(ref["joints"].numpy()))
    assert spread > 1.0  # the heatmaps are not flat: joints differ
    np.testing.assert_allclose(out["joints_per_stage"], ref["joints_per_stage"], atol=0.05)


@pytest.mark.slow  # one CLI training of a 2-stage cascade, about 60 s on 2 cores
def test_train_cli_integral_bfloat16_recipe_end_to_end(tiny_data, tmp_path):
  """The flagfiles' recipe through `python -m deeppose_tf.train`: ResNet + integral head,
  heatmap loss, bfloat16, affine + colour augmentation, cosine schedule, cached pipeline
  and learning curves; it evaluates, exports, and the saved stages are float32."""
  import json
  workdir = str(tmp_path / "run")
  run = subprocess.run(
      [sys.executable, "-m", "deeppose_tf.train", f"--workdir={workdir}", "--dataset=lsp",
       f"--data_dir={tiny_data}", "--num_stages=2", "--steps_per_stage=6,4", "--batch_size=4",
       "--input_size=48", "--backbone=resnet", "--head=integral", "--width=0.25",
       "--head_channels=16", "--precision=bfloat16", "--loss=l1",
       "--heatmap_loss_weight=1.0", "--lr_schedule=cosine", "--warmup_steps=2",
       "--weight_decay=1e-4", "--learning_rate=1e-3", "--draws=2", "--checkpoint_every=3",
       "--stats_images=8", "--curve_every=2", "--curve_images=4", "--eval_limit=4"],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=600)
  assert run.returncode == 0, run.stderr[-4000:]
  with open(os.path.join(workdir, "curves.json")) as f:
    points = json.load(f)
  assert [p["step"] for p in points["stage1"]] == [2, 4, 6]
  assert [p["step"] for p in points["stage2"]] == [2, 4]
  assert points["stage2"][0]["minutes"] >= points["stage1"][-1]["minutes"]
  assert all(0.0 <= p["pdj@0.2"] <= 1.0 for p in points["stage1"])
  with open(os.path.join(workdir, "curves.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  for s in (1, 2):
    net = keras.models.load_model(workdir_lib.model_path(workdir, s), compile=False)
    assert all(layer.compute_dtype == "float32" for layer in net.layers)
    assert net.get_layer("heatmaps") is not None
  assert os.path.exists(os.path.join(workdir, "export", "1", "saved_model.pb"))
  with open(os.path.join(workdir, "report.json")) as f:
    assert json.load(f)["num_images"] == 4


def test_trimmed_displacement_stats_ignore_the_heavy_tail():
  """A few huge misses (tiny torso boxes) must not widen the simulated error distribution:
  trim=0.9 recovers the bulk's spread, trim=1.0 (the paper) is the plain Gaussian fit."""
  rng = np.random.RandomState(0)
  n = 200
  true = np.zeros((n, 14, 2))
  true[:, 9] = [0.0, 0.0]     # left shoulder
  true[:, 2] = [30.0, 40.0]   # right hip: diameter 50 px, box side 100 px at sigma 2
  true += rng.uniform(0, 5, (n, 1, 2))
  pred = true + rng.normal(0, 10.0, (n, 14, 2))  # 0.1 box sides per axis
  pred[:8] += 5000.0                             # 4% wild misses: 50 box sides
  vis = np.ones((n, 14))
  trimmed = cascade.displacement_stats(pred, true, vis, LSP14, 2.0, trim=0.9)
  plain = cascade.displacement_stats(pred, true, vis, LSP14, 2.0)
  std = np.sqrt(np.diagonal(np.asarray(trimmed["cov"]), axis1=1, axis2=2))
  assert np.all((std > 0.06) & (std < 0.11)), std
  assert np.all(np.sqrt(np.diagonal(np.asarray(plain["cov"]), axis1=1, axis2=2)) > 5)
  assert trimmed["count"][0] == 180 and plain["count"][0] == 200
  assert 0.9 < trimmed["inside"][0] <= 0.97
  with pytest.raises(ValueError, match="trim"):
    cascade.displacement_stats(pred, true, vis, LSP14, 2.0, trim=0.0)
