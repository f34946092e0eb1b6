"""Left/right label conventions (labels.py): the observer-centric relabelling of a pose by
image position, its chains, its properties (idempotent, commutes with a mirror image), and a
cascade that answers in observer-centric labels, in Keras and in a builtins-only TFLite
file and a SavedModel loaded in a fresh process."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeppose_tf import cascade, export, labels
from deeppose_tf.models import builder as model_lib
from deeppose_tf.skeleton import FLIC10, LSP14, Skeleton

I = LSP14.index
PERM = LSP14.flip_permutation
ARM = ("shoulder", "elbow", "wrist")
LEG = ("hip", "knee", "ankle")


def _frontal():
  """An upright person facing the camera: their left (l_*) on the image's right."""
  pose = np.zeros((14, 2), np.float32)
  for side, dx in (("l", 1.0), ("r", -1.0)):
    for j, y in zip(ARM, (30, 45, 60)):
      pose[I(f"{side}_{j}")] = (50 + dx * (12 + (y - 30) / 3), y)
    for j, y in zip(LEG, (70, 90, 110)):
      pose[I(f"{side}_{j}")] = (50 + dx * 8, y)
  pose[I("neck")] = (50, 28)
  pose[I("head_top")] = (50, 10)
  return pose


def _mirror(pose, width=100.0):
  out = pose[..., PERM, :].copy()
  out[..., 0] = width - out[..., 0]
  return out


def test_chains_are_the_mirrored_arms_and_legs():
  assert labels.chains(LSP14) == [
      ((I("l_hip"), I("l_knee"), I("l_ankle")), (I("r_hip"), I("r_knee"), I("r_ankle"))),
      ((I("l_shoulder"), I("l_elbow"), I("l_wrist")),
       (I("r_shoulder"), I("r_elbow"), I("r_wrist")))]
  f = FLIC10.index
  # FLIC's PCP limbs are the arms only: its hips are a pair of single joints.
  assert labels.chains(FLIC10) == [
      ((f("l_shoulder"), f("l_elbow"), f("l_wrist")),
       (f("r_shoulder"), f("r_elbow"), f("r_wrist"))), ((f("l_hip"),), (f("r_hip"),))]


def test_a_person_facing_the_camera_keeps_their_labels_and_one_facing_away_is_relabelled():
  front = _frontal()
  got, _ = labels.observer_centric(front, LSP14)
  np.testing.assert_array_equal(got.numpy(), front)
  # Seen from behind: the same joints, the person's own labels swapped.
  back = front[PERM]
  got, _ = labels.observer_centric(back, LSP14)
  np.testing.assert_array_equal(got.numpy(), front)
  # Arms crossed to the other side, legs not: only the arms are relabelled.
  arms = front.copy()
  for j in ARM:
    arms[[I(f"l_{j}"), I(f"r_{j}")]] = arms[[I(f"r_{j}"), I(f"l_{j}")]]
  got, _ = labels.observer_centric(arms, LSP14)
  np.testing.assert_array_equal(got.numpy(), front)
  assert not np.array_equal(arms, front)  # the check can fail


def test_relabelling_is_idempotent_commutes_with_a_mirror_and_keeps_the_joints():
  rng = np.random.RandomState(0)
  poses = rng.uniform(0, 100, (64, 3, 14, 2)).astype(np.float32)  # any leading dims
  once = labels.observer_centric(poses, LSP14)[0].numpy()
  twice = labels.observer_centric(once, LSP14)[0].numpy()
  np.testing.assert_array_equal(once, twice)
  # Flip augmentation keeps observer-centric targets observer-centric.
  np.testing.assert_allclose(labels.observer_centric(_mirror(poses), LSP14)[0].numpy(),
                             _mirror(once), atol=1e-5)
  # Only names move: each pose holds the same set of points.
  np.testing.assert_array_equal(np.sort(once.reshape(-1, 28), -1),
                                np.sort(poses.reshape(-1, 28), -1))
  changed = np.any(once != poses, axis=(-1, -2))
  assert 0 < changed.mean() < 1


def test_visibility_moves_with_its_joint_and_unannotated_joints_are_not_compared():
  back = _frontal()[PERM]
  vis = np.ones(14, np.float32)
  vis[I("r_wrist")] = 0  # that slot holds the person's right wrist, on the image's right
  back[I("r_wrist")] = np.nan  # an unannotated joint may hold anything
  got, got_vis = labels.observer_centric(back[None], LSP14, vis[None])
  got, got_vis = got.numpy()[0], got_vis.numpy()[0]
  assert got_vis[I("l_wrist")] == 0 and got_vis[I("r_wrist")] == 1
  assert np.isnan(got[I("l_wrist")]).all()
  np.testing.assert_array_equal(np.delete(got, I("l_wrist"), 0),
                                np.delete(_frontal(), I("l_wrist"), 0))
  # A pair with no joint annotated on both sides keeps its labels.
  one_side = np.zeros(14, np.float32)
  one_side[[I("l_hip"), I("r_knee")]] = 1
  legs = _frontal()[PERM]
  got = labels.observer_centric(legs, LSP14, one_side)[0].numpy()
  for j in LEG:
    np.testing.assert_array_equal(got[I(f"l_{j}")], legs[I(f"l_{j}")])


def test_person_labels_pass_through_and_unknown_conventions_are_named():
  pose = _frontal()[PERM]
  same, vis = labels.relabel_numpy(pose, LSP14, "person", np.ones(14))
  assert same is pose and vis.shape == (14,)
  out, _ = labels.relabel_numpy(pose.astype(np.float64), LSP14, "observer")
  assert out.dtype == np.float64
  with pytest.raises(ValueError, match="unknown label convention 'mirror'.*person.*observer"):
    labels.relabel_numpy(pose, LSP14, "mirror")
  with pytest.raises(ValueError, match="left_right must be one of|unknown label convention"):
    cascade.Cascade([keras.Sequential()], LSP14, 2.0, 32, left_right="observers")


def test_a_custom_skeleton_without_side_markers_reads_its_flip_pairs_as_left_right():
  sk = Skeleton.build("two_arms", ["a", "b", "c", "d", "mid"],
                      [("a", "b"), ("c", "d"), ("b", "mid"), ("d", "mid")],
                      flip_pairs=[("a", "c"), ("b", "d")], diameter=("a", "d"))
  assert labels.chains(sk) == [((0, 1), (2, 3))]
  pose = np.array([[10, 0], [10, 5], [20, 0], [20, 5], [15, 9]], np.float32)
  got = labels.observer_centric(pose, sk)[0].numpy()  # "left" a, b lay left: swapped
  np.testing.assert_array_equal(got, pose[[2, 3, 0, 1, 4]])


SIZE, H, W = 64, 80, 96


def _cascades():
  keras.utils.set_random_seed(5)
  config = model_lib.ModelConfig(input_size=SIZE, backbone="resnet", width=0.1,
                                 head="heatmap", head_channels=8)
  nets = [model_lib.build_regressor(config, name=f"s{s}") for s in (1, 2)]
  for net in nets:  # clear peaks from random logits
    kernel, bias = net.get_layer("heatmaps").get_weights()
    net.get_layer("heatmaps").set_weights([kernel * 50.0, bias])
  person = cascade.Cascade(nets, LSP14, 2.0, SIZE)
  observer = cascade.Cascade(nets, LSP14, 2.0, SIZE, left_right="observer")
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, (4, H, W, 3)).astype(np.uint8)
  boxes = np.tile(np.array([[50.0, 38.0, 70.0, 60.0]], np.float32), (4, 1))
  return person, observer, images, boxes


def test_an_observer_cascade_answers_the_person_cascade_relabelled_after_every_stage():
  person, observer, images, boxes = _cascades()
  assert observer.inference_settings["left_right"] == "observer"
  assert observer.with_crop(observer.crop).left_right == "observer"
  a = person.predict(tf.constant(images), tf.constant(boxes)).numpy()
  b = observer.predict(tf.constant(images), tf.constant(boxes)).numpy()
  np.testing.assert_allclose(b, labels.observer_centric(a, LSP14)[0].numpy(), atol=1e-4)
  assert not np.allclose(a, b)  # random networks: some chains were relabelled


@pytest.mark.slow  # a TFLite conversion and a SavedModel in a fresh process: about 40 s
def test_an_observer_cascade_exports_to_builtin_tflite_and_a_saved_model(tmp_path):
  import subprocess
  import sys
  from helpers import subprocess_env
  from deeppose_tf.tflite_cascade import TFLiteCascade
  _, observer, images, boxes = _cascades()
  want = observer.predict(tf.constant(images[:1]), tf.constant(boxes[:1])).numpy()
  path = str(tmp_path / "m.tflite")
  with open(path, "wb") as f:
    f.write(export.convert_tflite(observer, H, W))
  got = TFLiteCascade(path, LSP14, num_threads=1).predict(images[:1], boxes[:1])
  np.testing.assert_allclose(got, want, atol=0.05)
  served = str(tmp_path / "served")
  export.save_saved_model(observer, served)
  np.save(str(tmp_path / "image.npy"), images[:1])
  fresh = (
      "import sys, json, numpy as np, tensorflow as tf\n"
      "m = tf.saved_model.load(sys.argv[1])\n"
      "out = m.signatures['predict_images'](images=tf.constant(np.load(sys.argv[2])),\n"
      "    boxes=tf.constant(json.loads(sys.argv[3]), tf.float32))\n"
      "print(m.left_right().numpy().decode())\n"
      "print(json.dumps(out['joints_per_stage'].numpy().tolist()))\n")
  run = subprocess.run([sys.executable, "-c", fresh, served, str(tmp_path / "image.npy"),
                        json.dumps(boxes[:1].tolist())], capture_output=True, text=True,
                       env=subprocess_env(), timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  lines = run.stdout.strip().splitlines()
  assert lines[-2] == "observer"
  np.testing.assert_allclose(np.asarray(json.loads(lines[-1])), want, atol=1e-3)
