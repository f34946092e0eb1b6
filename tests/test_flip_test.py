"""Test-time flips (Cascade flip_test) and stage-1 reframing (Cascade reframe): the
flip-tested stage is exactly mirror-symmetric, for heads averaged as logit maps (heatmap,
integral) and as coordinates (fc); reframing crops the box that frames the first pass's
pose; both settings travel through config.json, evaluate, a SavedModel in a fresh process
and a builtins-only TFLite file."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeppose_tf import cascade, evaluate, export, geometry, pipeline
from deeppose_tf import workdir as workdir_lib
from deeppose_tf.models import builder as model_lib
from deeppose_tf.skeleton import LSP14
from deeppose_tf.tflite_cascade import TFLiteCascade

SIZE = 64
H, W = 80, 96
PERM = LSP14.flip_permutation


def _casc(head: str, flip_test: bool, seed: int = 3, reframe: int = 0):
  keras.utils.set_random_seed(seed)
  if head == "fc":
    config = model_lib.ModelConfig(input_size=SIZE, backbone="resnet", width=0.1, fc_units=16,
                                   output_init="default")
  else:
    config = model_lib.ModelConfig(input_size=SIZE, backbone="resnet", width=0.1, head=head,
                                   head_channels=8)
  nets = [model_lib.build_regressor(config, name=f"s{s}") for s in (1, 2)]
  if head != "fc":
    # Random logits are nearly flat; scale them so the peak decoder has clear peaks.
    for net in nets:
      kernel, bias = net.get_layer("heatmaps").get_weights()
      net.get_layer("heatmaps").set_weights([kernel * 50.0, bias])
  return cascade.Cascade(nets, LSP14, 2.0, SIZE, flip_test=flip_test, reframe=reframe)


def _image_and_box():
  rng = np.random.RandomState(0)
  image = rng.randint(0, 256, (1, H, W, 3)).astype(np.uint8)
  return image, np.array([[50.0, 38.0, 70.0, 60.0]], np.float32)


def _mirror(poses):
  """(B, S, K, 2) image pixels in the W-wide image -> the same poses of the mirrored image."""
  x = W - poses[..., 0]
  mirrored = np.stack([x, poses[..., 1]], axis=-1)
  return mirrored[..., PERM, :]


def _both_ways(casc):
  image, box = _image_and_box()
  mbox = box.copy()
  mbox[:, 0] = W - box[:, 0]
  a = casc.predict(tf.constant(image), tf.constant(box)).numpy()
  b = casc.predict(tf.constant(image[:, :, ::-1].copy()), tf.constant(mbox)).numpy()
  return a, _mirror(b)


@pytest.mark.parametrize("head", ["heatmap", "integral", "fc"])
def test_the_flip_tested_stage_answers_the_mirror_image_with_the_mirrored_pose(head):
  casc = _casc(head, flip_test=True)
  # Stage 1 alone: the refinement stages' joint boxes are not mirror-symmetric themselves
  # (the torso diameter reads one shoulder and the opposite hip), so the whole cascade is
  # not; each network call is (next test).
  one = cascade.Cascade(casc.stages[:1], LSP14, 2.0, SIZE, flip_test=True)
  got, mirrored = _both_ways(one)
  assert got.shape == (1, 1, 14, 2)
  np.testing.assert_allclose(got, mirrored, atol=0.05)
  # The same random network without the flips is not symmetric: the check can fail.
  plain, plain_mirrored = _both_ways(cascade.Cascade(casc.stages[:1], LSP14, 2.0, SIZE))
  assert np.abs(plain - plain_mirrored).max() > 1.0


@pytest.mark.parametrize("head", ["heatmap", "fc"])
def test_every_stage_network_call_is_mirror_equivariant_in_all_its_outputs(head):
  # What refinement crops rely on: the mirrored crop of joint i answers, in slot i, the
  # mirror of the plain crop's slot perm[i].
  casc = _casc(head, flip_test=True)
  crops = tf.constant(np.random.RandomState(1).uniform(0, 255, (3, SIZE, SIZE, 3)),
                      tf.float32)
  for net in casc.stages:
    a = casc._run(net, crops).numpy()
    b = casc._run(net, tf.reverse(crops, axis=[2])).numpy()
    np.testing.assert_allclose(a, b[:, PERM] * [-1.0, 1.0], atol=1e-4)


def test_heatmap_heads_average_logits_not_coordinates():
  casc = _casc("heatmap", flip_test=True)
  net = casc.stages[0]
  image, box = _image_and_box()
  crops = casc.crop(tf.constant(image), tf.constant(box), tf.range(1), SIZE)
  logits = keras.Model(net.inputs, net.get_layer("heatmaps").output)
  maps = logits(tf.concat([crops, tf.reverse(crops, axis=[2])], 0), training=False).numpy()
  mean = 0.5 * (maps[:1] + maps[1:, :, ::-1, PERM])
  want = net.get_layer("joints")(tf.constant(mean)).numpy()
  np.testing.assert_allclose(casc._run(net, crops).numpy(), want, atol=1e-3)


def _workdir(path, flip_test, data_dir="unused"):
  casc = _casc("heatmap", flip_test=False)
  for s, net in enumerate(casc.stages, 1):
    os.makedirs(path / f"stage{s}")
    workdir_lib.save_model(net, str(path / f"stage{s}" / "model.keras"))
  config = {"skeleton": "lsp14", "input_size": SIZE, "sigma": 2.0, "num_stages": 2,
            "data_dir": data_dir, "train_split": "train"}
  if flip_test is not None:
    config.update(flip_test=flip_test, reframe=2, reframe_grow=1.3)
  workdir_lib.write_config(str(path), config)
  return str(path)


@pytest.mark.slow  # 10-22 s: the default run stays under 10 minutes
def test_config_json_carries_the_setting_and_evaluate_can_override_it(tmp_path, tiny_data):
  old = _workdir(tmp_path / "old", None)
  on = _workdir(tmp_path / "on", True, tiny_data)
  assert not cascade.Cascade.load(old).flip_test  # written before the setting existed
  assert cascade.Cascade.load(on).flip_test
  assert not cascade.Cascade.load(on, flip_test=False).flip_test
  assert cascade.Cascade.load(on, precision="bfloat16").flip_test
  assert (cascade.Cascade.load(old).reframe, cascade.Cascade.load(on).reframe) == (0, 2)
  assert cascade.Cascade.load(on, reframe=0, reframe_grow=1.5).reframe_grow == 1.5
  workdir_lib.write_mean_pose(on, pipeline.mean_pose(tiny_data, "train", LSP14))
  flipped = evaluate.run(on, "test", limit=4, report_dir=str(tmp_path / "a"))
  plain = evaluate.run(on, "test", limit=4, report_dir=str(tmp_path / "b"), flip_test=False)
  assert flipped["flip_test"] and not plain["flip_test"]
  assert flipped["reframe"] == 2 and plain["reframe"] == 2
  with open(str(tmp_path / "a" / "report.json")) as f:
    assert json.load(f)["flip_test"] is True
  with pytest.raises(ValueError, match="--refine_step and --left_right apply to "):
    evaluate.run(on, tflite="model.tflite", flip_test=True)
  assert cascade.Cascade.load(old).refine_step == 1.0  # the paper's, in old workdirs
  assert cascade.Cascade.load(on, refine_step=0.5).refine_step == 0.5


@pytest.mark.slow  # 10-22 s: the default run stays under 10 minutes
def test_flip_tested_reframing_cascade_converts_to_builtin_tflite_with_the_same_poses(
    tmp_path):
  casc = _casc("heatmap", flip_test=True, reframe=1)
  path = str(tmp_path / "m.tflite")
  with open(path, "wb") as f:
    f.write(export.convert_tflite(casc, H, W))
  lite = TFLiteCascade(path, LSP14, num_threads=1)
  image, box = _image_and_box()
  got = lite.predict(image, box)
  want = casc.predict(tf.constant(image), tf.constant(box)).numpy()
  np.testing.assert_allclose(got, want, atol=0.05)


@pytest.mark.slow  # a SavedModel written and loaded in a fresh process: about 20 s
def test_flip_tested_reframing_cascade_saves_as_a_saved_model_with_the_same_poses(tmp_path):
  import subprocess
  import sys
  from helpers import subprocess_env
  casc = _casc("heatmap", flip_test=True, reframe=1)
  path = str(tmp_path / "served")
  export.save_saved_model(casc, path)
  image, box = _image_and_box()
  np.save(str(tmp_path / "image.npy"), image)
  fresh = (
      "import sys, json, numpy as np, tensorflow as tf\n"
      "m = tf.saved_model.load(sys.argv[1])\n"
      "out = m.signatures['predict_images'](images=tf.constant(np.load(sys.argv[2])),\n"
      "    boxes=tf.constant(json.loads(sys.argv[3]), tf.float32))\n"
      "print(json.dumps(out['joints_per_stage'].numpy().tolist()))\n")
  run = subprocess.run([sys.executable, "-c", fresh, path, str(tmp_path / "image.npy"),
                        json.dumps(box.tolist())], capture_output=True, text=True,
                       env=subprocess_env(), timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  served = np.asarray(json.loads(run.stdout.strip().splitlines()[-1]))
  want = casc.predict(tf.constant(image), tf.constant(box)).numpy()
  np.testing.assert_allclose(served, want, atol=1e-3)


def test_framing_box_is_the_square_around_the_pose_grown_and_floored():
  pose = np.array([[[10.0, 20.0], [50.0, 40.0], [30.0, 100.0]]], np.float32)  # 40 x 80
  box = geometry.framing_box(pose, np.array([[100.0, 100.0, 200.0, 160.0]]), 1.3).numpy()
  np.testing.assert_allclose(box, [[30.0, 60.0, 104.0, 104.0]], rtol=1e-6)
  # A collapsed pose gets at least min_fraction of the longer side of the box it came from.
  point = np.full((1, 3, 2), 7.0, np.float32)
  box = geometry.framing_box(point, np.array([[100.0, 100.0, -200.0, 160.0]]), 1.3).numpy()
  np.testing.assert_allclose(box, [[7.0, 7.0, 40.0, 40.0]], rtol=1e-6)


class _FixedPose(keras.Model):
  """A stage-1 'network': the same box-normalized pose for every crop, and a log of the
  crops it saw."""

  def __init__(self, pose):
    super().__init__()
    self.pose = np.asarray(pose, np.float32)
    self.seen = []

  def call(self, x, training=False):
    self.seen.append(np.array(x))
    return tf.broadcast_to(tf.constant(self.pose), [tf.shape(x)[0], *self.pose.shape])


def test_reframing_runs_stage_1_again_on_the_box_framing_its_pose():
  rng = np.random.RandomState(4)
  pose = rng.uniform(-0.1, 0.1, (14, 2)).astype(np.float32)  # a person 1/5 of the photo
  net = _FixedPose(pose)
  image, box = _image_and_box()
  casc = cascade.Cascade([net], LSP14, 2.0, SIZE, reframe=1, reframe_grow=1.3)
  got = casc.predict(tf.constant(image), tf.constant(box)).numpy()[0, 0]
  first = geometry.denormalize(pose, box[0]).numpy()
  framed = geometry.framing_box(first[None], box, 1.3).numpy()
  assert framed[0, 2] < 0.35 * box[0, 2]  # the second pass zooms in
  np.testing.assert_allclose(got, geometry.denormalize(pose, framed[0]).numpy(), atol=1e-4)
  assert len(net.seen) == 2
  want = geometry.crop(tf.constant(image), tf.constant(framed), tf.range(1), SIZE).numpy()
  np.testing.assert_allclose(net.seen[1], want, atol=1e-3)


@pytest.mark.slow  # 10-22 s: the default run stays under 10 minutes
def test_refine_step_applies_that_fraction_of_the_refinement_move(tmp_path):
  """refine_step=0.5: stage 2 answers the mean of stage 1's joint and its own (its crops,
  around stage 1's joints, are the same); the TFLite graph agrees; a bad value is refused."""
  full = _casc("heatmap", flip_test=True)
  half = full._with()
  half.refine_step = 0.5
  image, box = _image_and_box()
  p = full.predict(tf.constant(image), tf.constant(box)).numpy()
  q = half.predict(tf.constant(image), tf.constant(box)).numpy()
  np.testing.assert_allclose(q[:, 0], p[:, 0], atol=1e-5)
  np.testing.assert_allclose(q[:, 1], 0.5 * (p[:, 0] + p[:, 1]), atol=1e-4)
  assert not np.allclose(p[:, 0], p[:, 1], atol=1e-2)  # the stages differ: the test can fail
  assert half.inference_settings["refine_step"] == 0.5
  path = str(tmp_path / "half.tflite")
  with open(path, "wb") as f:
    f.write(export.convert_tflite(half, H, W))
  got = TFLiteCascade(path, LSP14, num_threads=1).predict(image, box)
  np.testing.assert_allclose(got, q, atol=0.05)
  with pytest.raises(ValueError, match="refine_step must be in"):
    cascade.Cascade(full.stages, LSP14, 2.0, SIZE, refine_step=0.0)
