"""The networks alone: every backbone with every head it combines with (tiny sizes), the
backbone/head registries, the losses and the learning-rate schedules."""

import os

import keras
import numpy as np
import pytest

from deeppose_tf import losses, optim
from deeppose_tf.models import backbones, heads, layers
from deeppose_tf.models.backbones import alexnet, efficientnet_lite, mobilenetv2
from deeppose_tf.models.heads import fc as fc_head
from deeppose_tf.models import builder as model_lib

K = 5  # joints
# The smallest input each backbone's strides allow, and a width that keeps it tiny.
TINY = {"alexnet": dict(input_size=67, width=0.1),
        "resnet": dict(input_size=32, width=0.125),
        "mobilenetv2": dict(input_size=32, width=0.35),
        # fixed widths: the ImageNet networks
        "efficientnet_lite0": dict(input_size=32),
        "efficientnet_lite1": dict(input_size=32),
        "efficientnet_lite2": dict(input_size=32),
        "multires": dict(input_size=32, width=0.125)}
EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])  # the tompson head's graph of K joints
# The heatmap strides each head takes (the tompson head's maps are at stride 4).
HEAD_STRIDES = {"fc": (8,), "integral": (8, 4), "heatmap": (8, 4), "tompson": (4,)}
# EfficientNet-Lite1 and -Lite2 are Lite0's code with another block table (their scaling and
# taps: test_efficientnet_lite.py), so the matrix takes Lite0's every pair and one pair of
# each of them: a third of the cost of the full matrix of the three.
SCALED = {"efficientnet_lite1", "efficientnet_lite2"}
MATRIX = [b for b in backbones.BACKBONES if b not in SCALED]
COMBOS = [(b, h, s) for b in MATRIX for h in heads.HEADS
          for s in HEAD_STRIDES[h]
          if not heads.HEADS[h].pyramid or s in backbones.BACKBONES[b].strides]
# Pairs no stride makes possible (a pyramid head needing a stride the backbone lacks).
IMPOSSIBLE = {(b, h) for b in MATRIX for h in heads.HEADS} - {(b, h) for b, h, _ in COMBOS}
COMBOS += [(b, "heatmap", 8) for b in sorted(SCALED)]
# Lite1's and Lite2's pairs run with the slow tests: the default run stays under 10 minutes.
PARAMS = [pytest.param(*c, marks=pytest.mark.slow) if c[0] in SCALED else c for c in COMBOS]
PAIRS = [pytest.param(b, h, marks=pytest.mark.slow) if b in SCALED else (b, h)
         for b, h in sorted({(b, h) for b, h, _ in COMBOS})]


def _config(backbone, head, heatmap_stride=8, **kw):
  return model_lib.ModelConfig(num_joints=K, backbone=backbone, head=head, fc_units=8,
                               dropout=0.0, head_channels=8, heatmap_stride=heatmap_stride,
                               **{**TINY[backbone], **kw})


def _images(net, n=2):
  s = net.input_shape[1]
  return np.random.RandomState(0).uniform(0, 255, (n, s, s, 3)).astype(np.float32)


def test_every_backbone_and_head_combination_is_covered():
  assert set(HEAD_STRIDES) == set(heads.HEADS)
  assert IMPOSSIBLE == {("alexnet", "tompson")}  # AlexNet has no stride-4 features
  assert {b for b, _, _ in COMBOS} == set(backbones.BACKBONES)  # each backbone builds
  for b, h in IMPOSSIBLE:
    with pytest.raises(ValueError, match="stride"):
      _config(b, h, HEAD_STRIDES[h][0])


@pytest.mark.parametrize("backbone,head,stride", PARAMS)
def test_each_combination_builds_and_predicts_joints(backbone, head, stride):
  config = _config(backbone, head, stride)
  mean = np.random.RandomState(1).uniform(-0.3, 0.3, (K, 2)).astype(np.float32)
  net = model_lib.build_regressor(config, mean, edges=EDGES)
  assert net.input_shape == (None, config.input_size, config.input_size, 3)
  out = net(_images(net), training=False)
  assert out.shape == (2, K, 2) and out.dtype == "float32"
  assert np.all(np.isfinite(out.numpy()))
  assert model_lib.forward_flops(net) > 0
  train = model_lib.training_model(net)
  if head in ("integral", "heatmap", "tompson"):
    maps = train(_images(net))["heatmaps"]
    side = net.get_layer("heatmaps").output.shape[1]
    assert maps.shape == (2, side, side, K)
    assert abs(side - config.input_size / stride) <= 2
  else:
    assert train is net
    # mean_pose output init: a zero kernel, so the fresh net predicts the mean pose.
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(mean, (2, K, 2)), atol=1e-6)


@pytest.mark.parametrize("backbone,head", PAIRS)
def test_each_combination_under_bfloat16_outputs_float32(backbone, head):
  stride = [s for b, h, s in COMBOS if (b, h) == (backbone, head)][0]
  net = model_lib.build_regressor(_config(backbone, head, stride, precision="bfloat16"),
                                  edges=EDGES)
  assert net.output.dtype == "float32"
  out = net(_images(net), training=False)
  assert out.dtype == "float32" and np.all(np.isfinite(out.numpy()))
  assert any(layer.compute_dtype == "bfloat16" for layer in net.layers)
  assert model_lib.forward_flops(net) > 0
  saved = model_lib.with_precision(net, "float32")
  assert all(layer.compute_dtype == "float32" for layer in saved.layers)
  assert [w.shape for w in saved.weights] == [w.shape for w in net.weights]


@pytest.mark.parametrize("backbone", list(backbones.BACKBONES))
def test_backbones_return_their_taps_the_same_way(backbone):
  """Features.pyramid has the registered strides, finer to coarser; top is the coarsest."""
  config = _config(backbone, "fc")
  spec = backbones.BACKBONES[backbone]
  x = keras.Input((config.input_size, config.input_size, 3))
  feats = spec.build(x, config)
  assert isinstance(feats, layers.Features)
  assert tuple(sorted(feats.pyramid)) == spec.strides
  sides = [feats.pyramid[s].shape[1] for s in spec.strides]
  assert sides == sorted(sides, reverse=True) and len(set(sides)) == len(sides)
  for s, side in zip(spec.strides, sides):
    assert abs(side - config.input_size / s) <= 2, (s, side)
  assert feats.top.shape[1] <= sides[-1]


def test_fc_head_hidden_layers_and_output_init():
  """The paper's fc6, fc7 on AlexNet, fc6 alone on the others; output_init 'default' is
  Keras' glorot output layer (the paper) on every backbone."""
  alex = model_lib.build_regressor(_config("alexnet", "fc"))
  res = model_lib.build_regressor(_config("resnet", "fc"))
  names = lambda net: {layer.name for layer in net.layers}
  assert {"conv1", "conv5", "bn1", "pool5", "fc6", "fc7", "fc8", "joints"} <= names(alex)
  assert {"fc6", "fc8", "joints"} <= names(res) and "fc7" not in names(res)
  for backbone in ("alexnet", "resnet"):
    net = model_lib.build_regressor(_config(backbone, "fc", output_init="default"))
    assert np.abs(net.get_layer("fc8").get_weights()[0]).max() > 0
  with pytest.raises(ValueError, match="hidden"):
    fc_head.fc(keras.Input((4, 4, 2)), K, 8, 0.0, None, hidden=3)


@pytest.mark.parametrize("backbone,head,stride", PARAMS)
def test_each_combination_saves_and_loads_with_identical_outputs(tmp_path, backbone, head,
                                                                  stride):
  """model.keras -> load_model gives the same network: a nested backbone's feature maps
  come back in their places (Keras 3 re-wired a nested dict by string-sorted keys)."""
  net = model_lib.build_regressor(_config(backbone, head, stride), edges=EDGES)
  path = str(tmp_path / "net.keras")
  net.save(path)
  loaded = keras.models.load_model(path, compile=False)
  x = _images(net)
  np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), rtol=0, atol=1e-6)
  assert [w.shape for w in loaded.weights] == [w.shape for w in net.weights]


def test_alexnet_lrn_saves_and_loads(tmp_path):
  net = model_lib.build_regressor(_config("alexnet", "fc", norm="lrn"))
  assert net.get_layer("lrn1").compute_dtype == "float32"
  path = str(tmp_path / "lrn.keras")
  net.save(path)
  loaded = keras.models.load_model(path, compile=False)
  assert isinstance(loaded.get_layer("lrn2"), alexnet.LocalResponseNorm)
  np.testing.assert_array_equal(loaded(_images(net)).numpy(), net(_images(net)).numpy())


def test_config_rejects_what_the_registries_do_not_allow():
  with pytest.raises(ValueError, match="backbone must be one of"):
    model_lib.ModelConfig(backbone="vgg")
  with pytest.raises(ValueError, match="head must be one of"):
    model_lib.ModelConfig(head="transformer")
  with pytest.raises(ValueError, match="too small"):
    model_lib.ModelConfig(input_size=66)
  with pytest.raises(ValueError, match="multiple of 16"):
    model_lib.ModelConfig(backbone="resnet", input_size=40)
  with pytest.raises(ValueError, match="heatmap_stride 4"):
    model_lib.ModelConfig(backbone="alexnet", head="integral", heatmap_stride=4)
  model_lib.ModelConfig(backbone="alexnet", head="fc", heatmap_stride=4)  # unused by fc


def test_each_registry_entry_is_its_own_module():
  """models/backbones/<name>.py and models/heads/<name>.py define each entry (BACKBONE,
  HEAD; the EfficientNet-Lite variants: efficientnet_lite.py's BACKBONES); the registries
  hold exactly those objects."""
  import importlib
  for package, registry, attr in (("backbones", backbones.BACKBONES, "BACKBONE"),
                                  ("heads", heads.HEADS, "HEAD")):
    for name, entry in registry.items():
      if name in efficientnet_lite.VARIANTS:
        # One module for the three EfficientNet-Lite variants: its BACKBONES by name.
        module = importlib.import_module(f"deeppose_tf.models.{package}.efficientnet_lite")
        assert module.BACKBONES[name] is entry, (package, name)
        continue
      module = importlib.import_module(f"deeppose_tf.models.{package}.{name}")
      assert getattr(module, attr) is entry, (package, name)


def test_a_new_backbone_is_one_function_and_one_registry_entry(monkeypatch):
  def toy(x, width):
    c4 = keras.layers.Conv2D(4, 3, strides=4, padding="same", name="toy4")(x)
    c8 = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="toy8")(c4)
    c16 = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="toy16")(c8)
    return layers.Features({4: c4, 8: c8, 16: c16}, c16)

  monkeypatch.setitem(backbones.BACKBONES, "toy", backbones.Backbone(
      lambda x, c: toy(x, c.width), strides=(4, 8, 16)))
  for head in heads.HEADS:
    config = model_lib.ModelConfig(num_joints=K, input_size=32, backbone="toy", head=head,
                                   fc_units=8, head_channels=8,
                                   heatmap_stride=HEAD_STRIDES[head][0])
    net = model_lib.build_regressor(config, edges=EDGES)
    assert net(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, K, 2)


# Moved from test_recipe.py.

def test_soft_argmax_recovers_a_planted_peak():
  """A Gaussian peak at a sub-cell position is recovered to well under 0.5 heatmap cells
  (0.05), and a one-hot heatmap gives its cell's centre exactly."""
  h = w = 16
  rng = np.random.RandomState(0)
  layer = layers.SoftArgmax()
  for _ in range(5):
    peak = rng.uniform(3, 13, 2)  # (x, y) in heatmap cells, centre convention
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    # The log of a Gaussian of std 1 cell: what the heatmap loss trains the logits towards.
    logits = -((xs - peak[0]) ** 2 + (ys - peak[1]) ** 2) / 2.0
    out = layer(np.repeat(logits[None, :, :, None], 3, axis=-1).astype(np.float32)).numpy()
    got = (out[0] + 0.5) * [w, h]
    assert np.abs(got - peak).max() < 0.05, (got, peak)  # (3, 2): every channel alike
  one_hot = np.full((1, h, w, 1), -1e4, np.float32)
  one_hot[0, 4, 11, 0] = 0.0
  np.testing.assert_allclose(layer(one_hot).numpy()[0, 0], [11.5 / w - 0.5, 4.5 / h - 0.5],
                             atol=1e-6)


def test_losses_and_schedule():
  y_true = np.zeros((1, 2, 3), np.float32)
  y_true[0, :, 2] = [1, 0]
  y_pred = np.array([[[0.1, -0.2], [5.0, 5.0]]], np.float32)
  np.testing.assert_allclose(losses.coordinate_loss("l2")(y_true, y_pred), [0.05], rtol=1e-5)
  np.testing.assert_allclose(losses.coordinate_loss("l1")(y_true, y_pred), [0.3], rtol=1e-5)
  b = losses.SMOOTH_L1_BETA
  np.testing.assert_allclose(losses.coordinate_loss("smooth_l1")(y_true, y_pred),
                             [0.3 - b], rtol=1e-5)
  with pytest.raises(ValueError, match="loss"):
    losses.coordinate_loss("l3")
  # The heatmap loss is smallest for logits peaked at the target.
  target = np.array([[[0.1, -0.2, 1.0]]], np.float32)
  centres = layers.cell_centres(8, 8)
  d = np.sum(np.square((centres - target[0, 0, :2]) * 8), -1)
  good = (-d).reshape(1, 8, 8, 1).astype(np.float32)
  bad = (-np.sum(np.square((centres + 0.3) * 8), -1)).reshape(1, 8, 8, 1).astype(np.float32)
  hm = losses.heatmap_loss(1.0)
  assert float(hm(target, good)[0]) < float(hm(target, bad)[0])
  sched = optim.WarmupSchedule(1e-3, 100, 10, "cosine")
  lrs = [float(sched(s)) for s in (0, 9, 10, 55, 99)]
  assert lrs[0] < lrs[1] and lrs[1] == pytest.approx(1e-3) and lrs[2] == pytest.approx(1e-3)
  assert lrs[3] < lrs[2]
  assert lrs[4] < 1e-5
  step = optim.WarmupSchedule(1.0, 100, 0, "step")
  assert [float(step(s)) for s in (0, 75, 95)] == pytest.approx([1.0, 0.1, 0.01])


def test_mobilenetv2_loads_a_user_weights_file(tmp_path):
  """A weights file of keras.applications.MobileNetV2(include_top=False) (what a user saves
  from an ImageNet download) loads into the backbone."""
  keras.utils.set_random_seed(2)
  source = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35,
                                          include_top=False, weights=None)
  path = str(tmp_path / "mobilenet_v2.weights.h5")
  source.save_weights(path)
  config = model_lib.ModelConfig(input_size=64, backbone="mobilenetv2", head="integral",
                                 width=0.35, head_channels=16, backbone_weights=path)
  net = model_lib.build_regressor(config)
  inner = net.get_layer("backbone")
  conv = source.get_layer("Conv1").get_weights()[0]
  np.testing.assert_array_equal(inner.get_layer("Conv1").get_weights()[0], conv)
  fresh = model_lib.build_regressor(model_lib.ModelConfig(
      input_size=64, backbone="mobilenetv2", head="integral", width=0.35, head_channels=16))
  assert not np.array_equal(fresh.get_layer("backbone").get_layer("Conv1").get_weights()[0],
                            conv)
  with pytest.raises(ValueError, match="mobilenetv2"):
    model_lib.ModelConfig(backbone="resnet", input_size=64, backbone_weights=path)


def test_mobilenetv2_imagenet_reads_keras_cache_and_names_the_file(tmp_path, monkeypatch):
  """`imagenet` reads Keras' cache as on a user's machine: the file Keras would fetch for the
  input size, else its 224-row file (what ../shared/weights holds on a machine without
  internet); with neither and no network, the error names the file to put there."""
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  keras.utils.set_random_seed(3)
  source = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35,
                                          include_top=False, weights=None)
  os.makedirs(tmp_path / "models")
  cached = tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
  import h5py
  from keras.src.legacy.saving import legacy_h5_format
  with h5py.File(cached, "w") as f:  # the legacy HDF5 layout of Keras' downloads
    legacy_h5_format.save_weights_to_hdf5_group(f, source)
  assert mobilenetv2.mobilenet_imagenet_file(0.35, 96) == str(cached)
  assert mobilenetv2.mobilenet_imagenet_file(1.0, 96) is None
  config = model_lib.ModelConfig(input_size=96, backbone="mobilenetv2", head="integral",
                                 width=0.35, head_channels=16, backbone_weights="imagenet")
  net = model_lib.build_regressor(config)
  np.testing.assert_array_equal(
      net.get_layer("backbone").get_layer("Conv1").get_weights()[0],
      source.get_layer("Conv1").get_weights()[0])
  os.remove(cached)

  def offline(*args, **kwargs):  # what Keras' download raises without a network
    raise Exception("URL fetch failure: [Errno -2] Name or service not known")
  from keras.src.utils import file_utils
  monkeypatch.setattr(file_utils, "get_file", offline)
  with pytest.raises(ValueError, match="not in Keras' cache .*0.35_224_no_top.h5"):
    model_lib.build_regressor(config)


@pytest.mark.parametrize("backbone", ["mobilenetv2", "efficientnet_lite0"])
def test_freeze_stride_freezes_the_fine_layers_only(tmp_path, backbone):
  """freeze_stride=8: a training step leaves every backbone layer at stride <= 8 as it
  was and moves the coarser ones; the frozen state survives a save and a load."""
  import tensorflow as tf
  config = _config(backbone, "integral", 8, freeze_stride=8)
  net = model_lib.build_regressor(config)
  inner = net.get_layer("backbone")
  frozen = [l for l in inner.layers if l.weights and not l.trainable]
  moving = [l for l in inner.layers if l.weights and l.trainable]
  assert frozen and moving
  assert all(l.output.shape[1] >= 32 // 8 for l in frozen)
  assert all(l.output.shape[1] < 32 // 8 for l in moving)
  before = {l.name: [np.array(w) for w in l.get_weights()] for l in inner.layers if l.weights}
  # Eagerly: tracing a train step of the whole network costs more than the steps.
  net.compile(optim.make_optimizer("adam", 1e-2), losses.coordinate_loss("l1"),
              run_eagerly=True)
  targets = np.concatenate([np.random.RandomState(1).uniform(-0.4, 0.4, (2, K, 2)),
                            np.ones((2, K, 1))], -1).astype(np.float32)
  net.fit(_images(net), targets, epochs=2, verbose=0)
  for l in frozen:
    for a, b in zip(before[l.name], l.get_weights()):
      np.testing.assert_array_equal(a, b, err_msg=l.name)
  assert any(not np.array_equal(before[l.name][0], l.get_weights()[0]) for l in moving)
  path = str(tmp_path / "net.keras")
  net.save(path)
  loaded = keras.models.load_model(path, compile=False).get_layer("backbone")
  assert [l.name for l in loaded.layers if l.weights and not l.trainable] == [
      l.name for l in frozen]
  with pytest.raises(ValueError, match="freeze_stride"):
    _config("resnet", "integral", 8, freeze_stride=8)


def test_forward_flops_counts_nested_backbones_and_depthwise_convolutions():
  """The ImageNet backbones are nested keras.Models built of depthwise convolutions, which
  Keras 3 does not derive from Conv2D; forward_flops once skipped both and counted only the
  head. Keras' MobileNetV2 (alpha 1, 224 px, with its classifier) is 300M multiply-adds in
  its paper (Sandler et al. 2018, Table 4)."""
  import keras
  macs = model_lib.forward_flops(keras.applications.MobileNetV2(weights=None)) / 2
  assert 295e6 < macs < 306e6, macs
  config = model_lib.ModelConfig(backbone="mobilenetv2", head="heatmap", heatmap_stride=8,
                                 head_channels=16, input_size=224)
  net = model_lib.build_regressor(config, edges=EDGES)
  backbone = model_lib.forward_flops(net.get_layer("backbone"))
  assert 2 * 295e6 < backbone < 2 * 306e6  # the feature layers, without the classifier
  assert model_lib.forward_flops(net) > backbone  # and the head on top
