"""Tests of pipeline.py: decoding, stage-1 and refinement examples, flips, displacement
sampling, the evaluation dataset, NaN safety, and no skew between training and inference."""

import io
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeppose_tf import cascade as cascade_lib
from deeppose_tf import geometry, pipeline
from deeppose_tf.config import RefineConfig
from deeppose_tf.data import records
from deeppose_tf.skeleton import LSP14

from helpers import encode, random_records

K = LSP14.num_joints
S = 32
PERM = LSP14.flip_permutation


def features_of(record):
  """A PoseRecord -> parsed features, through the real schema (validate, serialize, parse)."""
  rec = records.validate(record, K)
  return records.parse(tf.constant(records.serialize(rec)), K)


def seed_pair(i):
  return tf.constant([i, 0], tf.int64)


def image_of(record):
  return pipeline.decode_image(tf.constant(record.image)).numpy()


def make_record(seed=0, height=48, width=64, fmt="PNG", unannotated=(), box=None):
  """A record with a smooth random image (PNG: exact pixels) and a pose inside it."""
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
  joints = (rng.uniform(0.15, 0.85, (K, 2)) * [width, height]).astype(np.float32)
  visible = np.ones(K, np.float32)
  visible[list(unannotated)] = 0
  return records.PoseRecord(f"test/{seed:03d}", encode(image, fmt), joints, visible,
                            box=None if box is None else np.float32(box))


# --------------------------------------------------------------------------- decode_image

def _png(array, mode=None):
  buf = io.BytesIO()
  (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buf, "PNG")
  return buf.getvalue()


def test_decode_gray_png_is_replicated():
  gray = np.random.default_rng(0).integers(0, 256, (20, 30)).astype(np.uint8)
  out = pipeline.decode_image(tf.constant(_png(gray))).numpy()
  assert out.shape == (20, 30, 3) and out.dtype == np.uint8
  for c in range(3):
    np.testing.assert_array_equal(out[..., c], gray)


def test_decode_rgba_png_drops_alpha():
  rgba = np.random.default_rng(1).integers(0, 256, (17, 23, 4)).astype(np.uint8)
  rgba[..., 3] = np.arange(23, dtype=np.uint8)[None, :] * 10  # alpha must not matter
  out = pipeline.decode_image(tf.constant(_png(rgba))).numpy()
  assert out.shape == (17, 23, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(out, rgba[..., :3])


def test_decode_palette_png():
  rgb = np.random.default_rng(2).integers(0, 256, (12, 14, 3)).astype(np.uint8)
  pal = Image.fromarray(rgb).quantize(16)
  buf = io.BytesIO()
  pal.save(buf, "PNG")
  out = pipeline.decode_image(tf.constant(buf.getvalue())).numpy()
  np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB")))


def test_decode_rgb_jpeg():
  ys, xs = np.mgrid[0:32, 0:48]
  rgb = np.stack([xs * 5, ys * 7, 255 - xs * 3], -1).astype(np.uint8)  # smooth: JPEG-friendly
  data = encode(rgb, "JPEG")
  out = pipeline.decode_image(tf.constant(data)).numpy()
  assert out.shape == (32, 48, 3) and out.dtype == np.uint8
  pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
  assert np.abs(out.astype(int) - pil).max() <= 3  # two libjpeg builds, same stream
  assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3


def test_decode_in_dataset_map_equals_eager():
  rgba = np.random.default_rng(3).integers(0, 256, (9, 11, 4)).astype(np.uint8)
  gray = np.random.default_rng(4).integers(0, 256, (9, 11)).astype(np.uint8)
  data = [_png(rgba), _png(gray), encode(rgba[..., :3], "JPEG")]
  mapped = list(tf.data.Dataset.from_tensor_slices(data).map(pipeline.decode_image))
  for d, m in zip(data, mapped):
    assert m.shape == (9, 11, 3)
    np.testing.assert_array_equal(m.numpy(), pipeline.decode_image(tf.constant(d)).numpy())


# --------------------------------------------------------------------------------- stage 1

def test_initial_box_is_stored_box_else_full_image():
  with_box = features_of(make_record(0, box=[20.0, 22.0, 30.0, 40.0]))
  without = features_of(make_record(1))
  np.testing.assert_allclose(pipeline.initial_box(with_box).numpy(), [20, 22, 30, 40])
  np.testing.assert_allclose(pipeline.initial_box(without).numpy(), [32, 24, 64, 48])


@pytest.mark.parametrize("box", [None, [30.0, 20.0, 40.0, 36.0]])
def test_stage1_example_without_augmentation(box):
  rec = make_record(5, unannotated=(0, 13), box=box)
  f = features_of(rec)
  crop, target = pipeline.stage1_example(f, seed_pair(0), LSP14, S, pipeline.NO_AUGMENT)
  assert crop.shape == (S, S, 3) and crop.dtype == tf.float32
  assert target.shape == (K, 3)
  b = pipeline.initial_box(f)
  expected = geometry.normalize(rec.joints, b).numpy()
  target = target.numpy()
  vis = rec.visible > 0
  np.testing.assert_allclose(target[vis, :2], expected[vis], atol=1e-6)
  np.testing.assert_array_equal(target[~vis], 0.0)  # zero target and zero mask
  np.testing.assert_array_equal(target[:, 2], rec.visible)
  ref = geometry.crop(image_of(rec)[None], b[None], [0], S)[0]
  np.testing.assert_allclose(crop.numpy(), ref.numpy(), atol=1e-4)


def test_joints_framing_box_is_the_square_around_the_annotated_joints_only():
  """--stage1_box=joints: the square of side 1.3 x the annotated joints' longer extent,
  centred on their bounding box; an unannotated joint, even a NaN one, moves nothing."""
  joints = np.float32([[10, 20], [50, 30], [30, 100], [np.nan, np.nan], [400, 400]])
  visible = np.float32([1, 1, 1, 0, 0])
  box = pipeline.joints_framing_box(joints, visible, [100.0, 100.0, 200.0, 200.0]).numpy()
  np.testing.assert_allclose(box, [30, 60, 1.3 * 80, 1.3 * 80], rtol=1e-6)
  # One annotated joint: no extent, so the floor (a tenth of the image's longer side).
  one = pipeline.joints_framing_box(joints, np.float32([0, 1, 0, 0, 0]), [0, 0, 300.0, 200.0])
  np.testing.assert_allclose(one.numpy(), [50, 30, 30, 30], rtol=1e-6)


def test_stage1_example_on_the_joints_framing_crops_that_square():
  """stage1_box='joints' trains on the joints' square where a record has no box, and on the
  stored box where it has one (COCO's framing); 'image' is the whole image."""
  rec = make_record(7, height=48, width=96, unannotated=(4,))
  f = features_of(rec)
  crop, target = pipeline.stage1_example(f, seed_pair(0), LSP14, S, pipeline.NO_AUGMENT,
                                         "joints")
  square = pipeline.joints_framing_box(rec.joints, rec.visible, [48, 24, 96, 48]).numpy()
  assert square[2] == square[3] and square[2] < 96
  vis = rec.visible > 0
  np.testing.assert_allclose(target.numpy()[vis, :2],
                             geometry.normalize(rec.joints, square).numpy()[vis], atol=1e-6)
  # The annotated joints fill the square's middle 1/1.3 along their longer extent.
  extent = target.numpy()[vis, :2].max(0) - target.numpy()[vis, :2].min(0)
  np.testing.assert_allclose(extent.max(), 1 / 1.3, rtol=1e-5)
  ref = geometry.crop(image_of(rec)[None], square[None], [0], S)[0]
  np.testing.assert_allclose(crop.numpy(), ref.numpy(), atol=1e-4)
  boxed = features_of(make_record(7, box=[30.0, 20.0, 40.0, 36.0]))
  _, t_boxed = pipeline.stage1_example(boxed, seed_pair(0), LSP14, S, pipeline.NO_AUGMENT,
                                       "joints")
  _, t_image = pipeline.stage1_example(boxed, seed_pair(0), LSP14, S, pipeline.NO_AUGMENT)
  np.testing.assert_array_equal(t_boxed.numpy(), t_image.numpy())
  with pytest.raises(ValueError, match="stage1_box must be one of"):
    pipeline.stage1_example(f, seed_pair(0), LSP14, S, pipeline.NO_AUGMENT, "person")


def test_mean_pose_on_the_joints_framing_is_centred(tiny_data):
  """The mean pose (the output layer's start) is taken in the frame stage 1 trains in: in
  the joints' framing every pose's extent is centred, so its mean sits near the middle."""
  image = pipeline.mean_pose(tiny_data, "train", LSP14)
  framed = pipeline.mean_pose(tiny_data, "train", LSP14, "joints")
  a = pipeline.annotations(tiny_data, "train", LSP14, "joints")
  assert np.all(a["box"][:, 2] == a["box"][:, 3])  # squares
  norm = geometry.normalize(a["joints"], a["box"]).numpy()
  lo = np.where(a["visible"][..., None] > 0, norm, np.inf).min(1)
  hi = np.where(a["visible"][..., None] > 0, norm, -np.inf).max(1)
  np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=1e-5)
  np.testing.assert_allclose((hi - lo).max(-1), 1 / 1.3, rtol=1e-4)
  assert framed.shape == image.shape == (K, 2) and not np.allclose(framed, image)


def test_stage1_example_augmented_keeps_unannotated_masked():
  rec = make_record(6, unannotated=(2, 7))
  f = features_of(rec)
  for i in range(8):
    _, target = pipeline.stage1_example(f, seed_pair(i), LSP14, S, pipeline.AugmentConfig())
    t = target.numpy()
    masked = t[:, 2] == 0
    assert masked.sum() == 2
    np.testing.assert_array_equal(t[masked], 0.0)
    assert np.all(np.isfinite(t))


def test_train_dataset_targets_match_records(tiny_data):
  """Without augmentation every element is (crop of the full image, normalized pose) of
  exactly one record of the split."""
  recs = [records.validate(r, K) for r in random_records(24, seed=1)]
  ds = pipeline.train_dataset(tiny_data, "train", LSP14, S, 4, seed=0,
                              augment=pipeline.NO_AUGMENT, shuffle_buffer=8)
  refs = []
  for r in recs:
    box = geometry.full_image_box(r.height, r.width)
    t = geometry.normalize(r.joints, box).numpy() * r.visible[:, None]
    refs.append(np.concatenate([t, r.visible[:, None]], -1))
  seen = set()
  for crops, targets in ds.take(3):
    assert crops.shape == (4, S, S, 3) and targets.shape == (4, K, 3)
    for crop, target in zip(crops.numpy(), targets.numpy()):
      matches = [j for j, ref in enumerate(refs) if np.allclose(target, ref, atol=1e-6)]
      assert len(matches) == 1
      r = recs[matches[0]]
      box = geometry.full_image_box(r.height, r.width)
      ref_crop = geometry.crop(image_of(r)[None], box[None], [0], S)[0].numpy()
      np.testing.assert_allclose(crop, ref_crop, atol=1e-3)
      seen.add(matches[0])
  assert len(seen) >= 8  # shuffled across records, not one record repeated


def _first_batch(ds):
  return [x.numpy() for x in next(iter(ds))]


def test_train_dataset_is_deterministic_under_its_seed(tiny_data):
  make = lambda seed: pipeline.train_dataset(tiny_data, "train", LSP14, S, 4, seed=seed)
  a, b, c = _first_batch(make(3)), _first_batch(make(3)), _first_batch(make(4))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])
  assert not np.array_equal(a[1], c[1])


def test_refine_train_dataset_is_deterministic_and_shaped(tiny_data):
  refine = RefineConfig(sigma=1.0, mean=np.zeros((K, 2)),
                        chol=np.tile(np.eye(2) * 0.1, (K, 1, 1)), draws=16)  # the crop shuffle buffer holds max(4 * draws, 256) crops
  make = lambda seed: pipeline.train_dataset(tiny_data, "train", LSP14, S, 4, seed=seed,
                                             refine=refine)
  a, b, c = _first_batch(make(3)), _first_batch(make(3)), _first_batch(make(4))
  assert a[0].shape == (4, S, S, 3) and a[1].shape == (4, K, 3)
  np.testing.assert_array_equal(a[1][..., 2].sum(-1), 1.0)  # one trained joint per crop
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[1], c[1])


# -------------------------------------------------------------------------------- flipping

def _flipped_reference(image, joints, visible, box, size):
  """Flip the whole image, the pose and the box, then crop and normalize."""
  width = image.shape[1]
  f_image = tf.image.flip_left_right(image)
  f_joints, f_vis = geometry.flip_joints(joints, visible, width, PERM)
  f_box = geometry.flip_box(box, width)
  crop = geometry.crop(f_image[None], f_box[None], [0], size)[0]
  return crop.numpy(), geometry.normalize(f_joints, f_box).numpy(), f_vis.numpy()


def test_flip_by_negative_width_equals_flipping_the_image():
  """_flip's signed box cuts the crop of the mirrored image, and normalizing by it then
  reordering gives the mirrored image's targets; without the flip nothing changes."""
  rec = make_record(7, unannotated=(3,))
  image = image_of(rec)
  box = tf.constant([27.0, 22.0, 36.0, 30.0])  # off-centre, so a wrong mirror shows
  f_box, order = pipeline._flip(box, tf.constant(True), PERM)
  f_crop = geometry.crop(image[None], f_box[None], [0], S)[0]
  f_target = tf.gather(geometry.normalize(rec.joints, f_box), order)
  ref_crop, ref_target, ref_vis = _flipped_reference(image, rec.joints, rec.visible, box, S)
  np.testing.assert_allclose(f_crop.numpy(), ref_crop, atol=0.05)
  np.testing.assert_allclose(f_target.numpy(), ref_target, atol=1e-5)
  np.testing.assert_array_equal(tf.gather(rec.visible, order).numpy(), ref_vis)
  # do_flip=False passes everything through.
  same_box, same_order = pipeline._flip(box, tf.constant(False), PERM)
  np.testing.assert_array_equal(same_box.numpy(), box.numpy())
  np.testing.assert_array_equal(same_order.numpy(), np.arange(K))


def test_stage1_example_flip_equals_flipping_the_image():
  """Through the public example function: draws that flipped match the full-image flip
  reference, draws that did not match the plain crop, and both occur."""
  rec = make_record(8, unannotated=(9,), box=[28.0, 25.0, 40.0, 34.0])
  f = features_of(rec)
  image = image_of(rec)
  box = tf.constant(rec.box)
  only_flip = pipeline.AugmentConfig(translate=0.0, scale=(1.0, 1.0), flip=True)
  plain_crop, plain_target = pipeline.stage1_example(f, seed_pair(0), LSP14, S,
                                                     pipeline.NO_AUGMENT)
  ref_crop, ref_target, ref_vis = _flipped_reference(image, rec.joints, rec.visible, box, S)
  ref_target = np.concatenate([ref_target * ref_vis[:, None], ref_vis[:, None]], -1)
  kinds = set()
  for i in range(12):
    crop, target = pipeline.stage1_example(f, seed_pair(i), LSP14, S, only_flip)
    if np.allclose(crop.numpy(), plain_crop.numpy(), atol=1e-3):
      np.testing.assert_allclose(target.numpy(), plain_target.numpy(), atol=1e-6)
      kinds.add("plain")
    else:
      np.testing.assert_allclose(crop.numpy(), ref_crop, atol=1e-3)
      np.testing.assert_allclose(target.numpy(), ref_target, atol=1e-5)
      kinds.add("flipped")
  assert kinds == {"plain", "flipped"}


# ------------------------------------------------------------------------------ refinement

def _refine(features, seed, sigma=0.8, mean=None, chol=None, draws=24,
            augment=pipeline.NO_AUGMENT):
  mean = np.zeros((K, 2), np.float32) if mean is None else np.float32(mean)
  chol = np.zeros((K, 2, 2), np.float32) if chol is None else np.float32(chol)
  crops, targets = pipeline.refine_example(features, seed_pair(seed), LSP14, S, sigma,
                                           tf.constant(mean), tf.constant(chol), draws,
                                           augment)
  return crops.numpy(), targets.numpy()


def test_refine_example_shapes_and_one_hot_mask_at_annotated_joints():
  unannotated = (0, 4, 11)
  rec = make_record(9, unannotated=unannotated)
  crops, targets = _refine(features_of(rec), 0, draws=40,
                           chol=np.tile(np.eye(2) * 0.2, (K, 1, 1)))
  assert crops.shape == (40, S, S, 3) and targets.shape == (40, K, 3)
  mask = targets[..., 2]
  np.testing.assert_array_equal(mask.sum(-1), 1.0)
  assert set(np.unique(mask)) <= {0.0, 1.0}
  hot = mask.argmax(-1)
  assert not set(hot.tolist()) & set(unannotated)
  assert len(set(hot.tolist())) >= 5  # joints are drawn, not one joint over and over
  # Only row i carries a target.
  off = np.ones_like(mask, bool)
  off[np.arange(40), hot] = False
  np.testing.assert_array_equal(targets[off][:, :2], 0.0)


def test_refine_example_zero_displacement_targets_zero_and_crops_joint_box():
  rec = make_record(10, unannotated=(5,))
  f = features_of(rec)
  sigma = 0.8
  crops, targets = _refine(f, 1, sigma=sigma)
  hot = targets[..., 2].argmax(-1)
  np.testing.assert_allclose(targets[np.arange(len(hot)), hot, :2], 0.0, atol=1e-6)
  boxes = geometry.joint_boxes(rec.joints, LSP14.diameter_indices, sigma)
  ref = geometry.crop(image_of(rec)[None], tf.gather(boxes, hot), np.zeros(len(hot), np.int32),
                      S).numpy()
  np.testing.assert_allclose(crops, ref, atol=1e-3)


def test_refine_example_mean_displacement_gives_minus_mean_target():
  rec = make_record(11)
  mean = np.random.default_rng(0).uniform(-0.3, 0.3, (K, 2)).astype(np.float32)
  # The box is centred at y_i + m_i * side, so y_i sits at -m_i in its frame.
  _, targets = _refine(features_of(rec), 2, mean=mean)
  hot = targets[..., 2].argmax(-1)
  np.testing.assert_allclose(targets[np.arange(len(hot)), hot, :2], -mean[hot], atol=1e-5)


def test_refine_example_crop_and_target_agree_under_random_displacement():
  """With random displacements the crop must still be the box that the target is
  relative to: box centre = y_i - target_i * side."""
  rec = make_record(12)
  sigma = 0.7
  chol = np.tile(np.linalg.cholesky([[0.04, 0.01], [0.01, 0.02]]), (K, 1, 1))
  crops, targets = _refine(features_of(rec), 3, sigma=sigma, chol=chol)
  hot = targets[..., 2].argmax(-1)
  t = targets[np.arange(len(hot)), hot, :2]
  assert np.abs(t).max() > 0.05  # displacements really happened
  side = geometry.joint_boxes(rec.joints, LSP14.diameter_indices, sigma).numpy()[0, 2]
  centres = rec.joints[hot] - t * side
  boxes = np.concatenate([centres, np.full((len(hot), 2), side)], -1).astype(np.float32)
  ref = geometry.crop(image_of(rec)[None], boxes, np.zeros(len(hot), np.int32), S).numpy()
  np.testing.assert_allclose(crops, ref, atol=0.05)


def test_refine_example_flip_is_consistent():
  """Flipped draws are mirror images of an unflipped (crop, target) pair whose joint is the
  flip partner: reversing the crop, negating x and un-permuting gives a consistent pair."""
  rec = make_record(13, unannotated=(8,))
  sigma = 0.7
  only_flip = pipeline.AugmentConfig(translate=0.0, scale=(1.0, 1.0), flip=True)
  chol = np.tile(np.eye(2) * 0.1, (K, 1, 1))
  crops, targets = _refine(features_of(rec), 4, sigma=sigma, chol=chol, draws=32,
                           augment=only_flip)
  image = image_of(rec)
  side = geometry.joint_boxes(rec.joints, LSP14.diameter_indices, sigma).numpy()[0, 2]

  def consistent(crop, joint, t):
    box = np.float32([[*(rec.joints[joint] - t * side), side, side]])
    return np.allclose(crop, geometry.crop(image[None], box, [0], S).numpy()[0], atol=0.05)

  kinds = []
  for crop, target in zip(crops, targets):
    h = target[:, 2].argmax()
    t = target[h, :2]
    if consistent(crop, h, t):
      assert rec.visible[h] == 1
      kinds.append("plain")
    else:
      i = PERM[h]
      assert rec.visible[i] == 1  # the joint drawn was annotated before the flip
      assert consistent(crop[:, ::-1], i, t * [-1, 1])
      kinds.append("flipped")
  assert set(kinds) == {"plain", "flipped"}


def test_sample_displacements_mean_and_covariance():
  """20000 draws split over two joints. Tolerances are 5 standard errors: the sample mean
  of n draws has SE sqrt(Sigma_aa / n); a sample covariance entry of a Gaussian has SE
  sqrt((Sigma_aa Sigma_bb + Sigma_ab^2) / n)."""
  n = 20000
  mean = np.zeros((K, 2), np.float32)
  cov = np.zeros((K, 2, 2))
  cov[:] = np.eye(2)
  mean[3] = [0.2, -0.1]
  cov[3] = [[0.04, 0.03], [0.03, 0.09]]
  mean[10] = [-0.3, 0.05]
  cov[10] = [[0.01, -0.008], [-0.008, 0.02]]
  chol = np.linalg.cholesky(cov).astype(np.float32)
  ids = np.where(np.arange(n) % 2 == 0, 3, 10).astype(np.int32)
  d = pipeline.sample_displacements(seed_pair(7), tf.constant(ids), tf.constant(mean),
                                    tf.constant(chol)).numpy()
  assert d.shape == (n, 2)
  for j in (3, 10):
    x = d[ids == j].astype(np.float64)
    m = len(x)
    se_mean = np.sqrt(np.diag(cov[j]) / m)
    assert np.all(np.abs(x.mean(0) - mean[j]) < 5 * se_mean), (j, x.mean(0), mean[j])
    c = np.cov(x, rowvar=False)
    se_cov = np.sqrt((np.outer(np.diag(cov[j]), np.diag(cov[j])) + cov[j] ** 2) / m)
    assert np.all(np.abs(c - cov[j]) < 5 * se_cov), (j, c, cov[j])
  same = pipeline.sample_displacements(seed_pair(7), tf.constant(ids), tf.constant(mean),
                                       tf.constant(chol)).numpy()
  np.testing.assert_array_equal(d, same)


# -------------------------------------------------------------------- no train/serve skew

class ConstPose(keras.Model):
  """A stage-1 'network' that ignores its crop and outputs a fixed box-normalized pose."""

  def __init__(self, pose):
    super().__init__()
    self.pose = np.asarray(pose, np.float32)

  def call(self, x, training=False):
    return tf.broadcast_to(tf.constant(self.pose), [tf.shape(x)[0], *self.pose.shape])


class CropLog:
  crops = None


class RecordingStage(keras.Model):
  """A stage-2 'network' that remembers the crops it was given and outputs the fixed
  (K, 2) matrix `out` for every crop (crop i's own row is out[i])."""

  def __init__(self, out, log):
    super().__init__()
    self.out = np.asarray(out, np.float32)
    self.log = log  # a plain object: Keras would copy a dict into a tracked one

  def call(self, x, training=False):
    self.log.crops = np.array(x)
    return tf.broadcast_to(tf.constant(self.out), [tf.shape(x)[0], *self.out.shape])


def _skew_setup(seed=20):
  # Two records, different pixels, the same pose; 64 x 32 images and poses on quarter
  # pixels keep normalize/denormalize exact in float32.
  rng = np.random.default_rng(seed)
  pose = (np.round(rng.uniform(0.2, 0.8, (K, 2)) * [64, 32] * 4) / 4).astype(np.float32)
  recs = []
  for i in range(2):
    image = rng.integers(0, 256, (32, 64, 3)).astype(np.uint8)
    recs.append(records.PoseRecord(f"skew/{i}", encode(image, "PNG"), pose,
                                   np.ones(K, np.float32)))
  images = np.stack([image_of(r) for r in recs])
  boxes = np.tile(geometry.full_image_box(32, 64).numpy(), (2, 1))
  return pose, recs, images, boxes


def test_cascade_stage2_crops_equal_training_crops():
  """The crop the refinement pipeline trains on for joint i (zero displacement) is the
  crop the cascade feeds stage 2 for joint i when stage 1 predicted the true pose."""
  sigma = 0.9
  pose, recs, images, boxes = _skew_setup()
  log = CropLog()
  stage1 = ConstPose(geometry.normalize(pose, boxes[0]).numpy())
  stage2 = RecordingStage(np.zeros((K, 2)), log)
  casc = cascade_lib.Cascade([stage1, stage2], LSP14, sigma, S)
  poses = casc.predict(images, boxes).numpy()
  assert poses.shape == (2, 2, K, 2)
  np.testing.assert_allclose(poses[:, 0], np.broadcast_to(pose, (2, K, 2)), atol=1e-4)
  served = log.crops.reshape(2, K, S, S, 3)  # crops come image-major, joint-minor
  covered = set()
  for b, rec in enumerate(recs):
    crops, targets = _refine(features_of(rec), b, sigma=sigma, draws=40)
    for crop, target in zip(crops, targets):
      i = target[:, 2].argmax()
      np.testing.assert_allclose(target[i, :2], 0.0, atol=1e-6)
      np.testing.assert_allclose(crop, served[b, i], atol=1e-3)
      covered.add((b, i))
  assert len(covered) >= 16
  # And the cascade's crops are geometry.crop of geometry.joint_boxes of the stage-1 pose.
  jboxes = geometry.joint_boxes(poses[:, 0], LSP14.diameter_indices, sigma).numpy()
  ref = geometry.crop(images, jboxes.reshape(-1, 4), np.repeat([0, 1], K), S).numpy()
  np.testing.assert_allclose(log.crops, ref, atol=1e-3)


def test_cascade_stage2_applies_output_i_of_crop_i():
  sigma = 0.9
  pose, _, images, boxes = _skew_setup(21)
  stage1 = ConstPose(geometry.normalize(pose, boxes[0]).numpy())
  zero = cascade_lib.Cascade([stage1, RecordingStage(np.zeros((K, 2)), CropLog())], LSP14, sigma, S)
  p = zero.predict(images, boxes).numpy()
  np.testing.assert_allclose(p[:, 1], p[:, 0], atol=1e-6)  # zero output: pose unchanged
  c = np.linspace(-0.4, 0.4, 2 * K).reshape(K, 2).astype(np.float32)  # row i differs per i
  moved = cascade_lib.Cascade([stage1, RecordingStage(c, CropLog())], LSP14, sigma, S)
  p = moved.predict(images, boxes).numpy()
  side = sigma * geometry.diameter(p[:, 0], LSP14.diameter_indices).numpy()  # (B,)
  np.testing.assert_allclose(p[:, 1], p[:, 0] + c[None] * side[:, None, None], atol=1e-4)


def test_training_displacements_reproduce_inference_errors():
  """Stage 1 is off by m box sides (the same shift for every joint, so the diameter is
  unchanged). displacement_stats measures m; the refinement pipeline with that mean cuts
  exactly the crops the cascade cuts, with target -m; a stage 2 that outputs -m lands the
  cascade on the true pose."""
  sigma = 0.9
  pose, recs, images, boxes = _skew_setup(22)
  m = np.float32([0.125, -0.0625])
  side = sigma * float(geometry.diameter(pose, LSP14.diameter_indices))
  pred = pose + m * side
  # One image is too few for a covariance (the function falls back to a guess): use 3 copies.
  stats = cascade_lib.displacement_stats(np.stack([pred] * 3), np.stack([pose] * 3),
                                         np.ones((3, K)), LSP14, sigma)
  np.testing.assert_allclose(stats["mean"], np.broadcast_to(m, (K, 2)), atol=1e-5)
  log = CropLog()
  stage1 = ConstPose(geometry.normalize(pred, boxes[0]).numpy())
  stage2 = RecordingStage(np.broadcast_to(-m, (K, 2)), log)
  poses = cascade_lib.Cascade([stage1, stage2], LSP14, sigma, S).predict(images, boxes).numpy()
  np.testing.assert_allclose(poses[:, 1], np.broadcast_to(pose, (2, K, 2)), atol=1e-3)
  served = log.crops.reshape(2, K, S, S, 3)
  crops, targets = _refine(features_of(recs[0]), 5, sigma=sigma, mean=stats["mean"], draws=20)
  for crop, target in zip(crops, targets):
    i = target[:, 2].argmax()
    np.testing.assert_allclose(target[i, :2], -m, atol=1e-5)
    np.testing.assert_allclose(crop, served[0, i], atol=1e-2)


# --------------------------------------------------------------------------- eval_dataset

@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("eval"))
  recs = random_records(7, seed=5, size=(32, 64), fmt="PNG")
  recs[2].box = np.float32([20.0, 18.0, 24.0, 30.0])
  recs[5].box = np.float32([10.0, 12.0, 16.0, 16.0])
  records.write_split(recs, d, "test", K, num_shards=2)
  return d, [records.validate(r, K) for r in recs]


def test_eval_dataset_every_record_once_padded_with_full_boxes(eval_dir):
  d, recs = eval_dir
  by_id = {r.image_id: r for r in recs}
  ids = []
  sizes = []
  for batch in pipeline.eval_dataset(d, "test", LSP14, batch_size=3):
    b = {k: v.numpy() for k, v in batch.items()}
    n = len(b["image_id"])
    sizes.append(n)
    hs, ws = b["height"], b["width"]
    assert b["image"].shape == (n, hs.max(), ws.max(), 3) and b["image"].dtype == np.uint8
    for j in range(n):
      rid = b["image_id"][j].decode()
      ids.append(rid)
      r = by_id[rid]
      assert (hs[j], ws[j]) == (r.height, r.width)
      np.testing.assert_array_equal(b["image"][j, :r.height, :r.width], image_of(r))
      assert not b["image"][j, r.height:].any() and not b["image"][j, :, r.width:].any()
      box = r.box if r.box is not None else [r.width / 2, r.height / 2, r.width, r.height]
      np.testing.assert_allclose(b["box"][j], box)
      np.testing.assert_allclose(b["joints"][j], r.joints)
      np.testing.assert_array_equal(b["visible"][j], r.visible)
  assert sorted(ids) == sorted(by_id) and len(ids) == len(set(ids))
  assert sizes == [3, 3, 1]
  again = [i.decode() for batch in pipeline.eval_dataset(d, "test", LSP14, 3)
           for i in batch["image_id"].numpy()]
  assert again == ids  # a fixed order, run after run
  limited = [i for batch in pipeline.eval_dataset(d, "test", LSP14, 3, limit=4)
             for i in batch["image_id"].numpy()]
  assert len(limited) == 4


# ------------------------------------------------------------------------------ NaN safety

def _write_raw_split(d, split, serialized):
  path = os.path.join(d, f"{split}-00000-of-00001.tfrecord")
  with tf.io.TFRecordWriter(path) as w:
    for s in serialized:
      w.write(s)
  with open(os.path.join(d, f"{split}.json"), "w") as f:
    json.dump({"split": split, "num_shards": 1, "num_records": len(serialized),
               "num_joints": K}, f)


@pytest.fixture(scope="module", params=["nan_joint", "none_annotated"])
def bad_split(request, tmp_path_factory):
  """A split holding one record that records.validate would refuse, written around it."""
  d = str(tmp_path_factory.mktemp("bad"))
  good = [records.validate(r, K) for r in random_records(2, seed=9)]
  bad = make_record(30)
  bad = records.PoseRecord("bad/record-0042", bad.image, bad.joints.copy(), bad.visible.copy(),
                           height=48, width=64)
  if request.param == "nan_joint":
    bad.joints[4] = np.nan  # visible[4] == 1
  else:
    bad.visible[:] = 0
  _write_raw_split(d, "train", [records.serialize(r) for r in good + [bad]])
  return d


@pytest.mark.parametrize("path", ["stage1", "refine", "eval"])
def test_bad_record_fails_with_its_id(bad_split, path):
  if path == "eval":
    ds = pipeline.eval_dataset(bad_split, "train", LSP14, 1)
  else:
    refine = None if path == "stage1" else RefineConfig(
        sigma=1.0, mean=np.zeros((K, 2)), chol=np.zeros((K, 2, 2)), draws=16)
    ds = pipeline.train_dataset(bad_split, "train", LSP14, S, 1, seed=0, refine=refine)
  with pytest.raises(tf.errors.InvalidArgumentError, match="bad/record-0042"):
    for _, _ in zip(range(12), ds):  # the bad record is within the first epoch
      pass
