"""Tests of geometry.py: round trips, the crop against tf.image.crop_and_resize, joint boxes,
and every op eagerly and inside tf.data.Dataset.map."""

import numpy as np
import pytest
import tensorflow as tf

from deeppose_tf import geometry
from deeppose_tf.skeleton import FLIC10, LSP14


def random_pose(rng, k, height, width, margin=0.0):
  return (rng.uniform(margin, 1.0 - margin, (k, 2)) * [width, height]).astype(np.float32)


def random_boxes(rng, n, height, width):
  """Boxes (n, 4) well inside an image so every bilinear tap is a real pixel."""
  w = rng.uniform(4.0, width / 2.0, n)
  h = rng.uniform(4.0, height / 2.0, n)
  cx = rng.uniform(w / 2 + 1.0, width - w / 2 - 1.0)
  cy = rng.uniform(h / 2 + 1.0, height - h / 2 - 1.0)
  return np.stack([cx, cy, w, h], axis=-1).astype(np.float32)


@pytest.fixture(params=["crop", "crop_builtin"])
def crop_fn(request):
  """Both crop implementations (crop_and_resize and the TFLite-builtin gathers) must pass
  every crop test: they are one contract."""
  return getattr(geometry, request.param)



def crop_and_resize_reference(images, boxes, box_indices, size):
  """tf.image.crop_and_resize sampling exactly where geometry.crop samples.

  geometry.crop samples crop column j at the index-frame x = cx - w/2 + (j + 0.5) w/S - 0.5
  (pixel i's centre at i); crop_and_resize samples x1 (W - 1) + j (x2 - x1)(W - 1)/(S - 1),
  so x1, x2 are the first and last sample positions divided by W - 1.
  """
  images = np.asarray(images, np.float32)
  height, width = images.shape[1:3]
  cx, cy, w, h = np.asarray(boxes, np.float64).T
  x_first = cx - w / 2 + 0.5 * w / size - 0.5
  x_last = cx + w / 2 - 0.5 * w / size - 0.5
  y_first = cy - h / 2 + 0.5 * h / size - 0.5
  y_last = cy + h / 2 - 0.5 * h / size - 0.5
  norm = np.stack([y_first / (height - 1), x_first / (width - 1), y_last / (height - 1),
                   x_last / (width - 1)], axis=-1).astype(np.float32)
  return tf.image.crop_and_resize(images, norm, box_indices, [size, size],
                                  method="bilinear", extrapolation_value=0.0).numpy()


# ------------------------------------------------------------------ normalize / denormalize

@pytest.mark.parametrize("joint_shape,box_shape", [
    ((14, 2), (4,)),
    ((3, 14, 2), (3, 4)),
    ((2, 5, 10, 2), (2, 5, 4)),
])
def test_normalize_matches_formula_and_round_trips(joint_shape, box_shape):
  rng = np.random.default_rng(0)
  joints = rng.uniform(-20, 80, joint_shape).astype(np.float32)
  boxes = np.concatenate([rng.uniform(10, 50, box_shape[:-1] + (2,)),
                          rng.uniform(5, 40, box_shape[:-1] + (2,))], -1).astype(np.float32)
  norm = geometry.normalize(joints, boxes).numpy()
  assert norm.shape == joint_shape
  expected = (joints - boxes[..., None, 0:2]) / boxes[..., None, 2:4]  # paper Eq. 1
  np.testing.assert_allclose(norm, expected, rtol=1e-6, atol=1e-6)
  back = geometry.denormalize(norm, boxes).numpy()
  np.testing.assert_allclose(back, joints, atol=1e-4)
  again = geometry.normalize(geometry.denormalize(joints / 100.0, boxes), boxes).numpy()
  np.testing.assert_allclose(again, joints / 100.0, atol=1e-5)


def test_normalize_box_covers_unit_square():
  box = np.array([30.0, 20.0, 16.0, 8.0], np.float32)
  corners = np.array([[22.0, 16.0], [38.0, 24.0], [30.0, 20.0]], np.float32)
  np.testing.assert_allclose(geometry.normalize(corners, box).numpy(),
                             [[-0.5, -0.5], [0.5, 0.5], [0.0, 0.0]])


def test_full_image_box():
  np.testing.assert_allclose(geometry.full_image_box(48, 64).numpy(), [32, 24, 64, 48])
  np.testing.assert_allclose(geometry.full_image_box(tf.constant([48, 10]),
                                                     tf.constant([64, 20])).numpy(),
                             [[32, 24, 64, 48], [10, 5, 20, 10]])


def test_jitter_box_shifts_in_box_units_and_scales():
  box = tf.constant([[30.0, 20.0, 16.0, 8.0]])
  out = geometry.jitter_box(box, tf.constant([[0.25, -0.5]]), tf.constant([2.0])).numpy()
  np.testing.assert_allclose(out, [[34.0, 16.0, 32.0, 16.0]])


# ----------------------------------------------------------------------------------- flips

@pytest.mark.parametrize("skel", [LSP14, FLIC10], ids=lambda s: s.name)
def test_flip_joints_twice_is_identity(skel):
  rng = np.random.default_rng(1)
  k = skel.num_joints
  joints = random_pose(rng, k, 48, 64)
  visible = (rng.uniform(size=k) > 0.3).astype(np.float32)
  perm = skel.flip_permutation
  fj, fv = geometry.flip_joints(joints, visible, 64, perm)
  assert not np.allclose(fj.numpy(), joints)  # the flip really does something
  ffj, ffv = geometry.flip_joints(fj, fv, 64, perm)
  np.testing.assert_allclose(ffj.numpy(), joints, atol=1e-5)
  np.testing.assert_array_equal(ffv.numpy(), visible)


@pytest.mark.parametrize("skel", [LSP14, FLIC10], ids=lambda s: s.name)
def test_flip_joints_mirrors_x_and_swaps_left_right(skel):
  rng = np.random.default_rng(2)
  joints = random_pose(rng, skel.num_joints, 48, 64)
  visible = np.ones(skel.num_joints, np.float32)
  visible[skel.index("l_shoulder")] = 0
  fj, fv = geometry.flip_joints(joints, visible, 64, skel.flip_permutation)
  fj, fv = fj.numpy(), fv.numpy()
  for name in skel.joints:
    partner = ("r_" + name[2:] if name.startswith("l_") else
               "l_" + name[2:] if name.startswith("r_") else name)
    i, p = skel.index(name), skel.index(partner)
    np.testing.assert_allclose(fj[i], [64.0 - joints[p, 0], joints[p, 1]], atol=1e-5)
    assert fv[i] == visible[p]
  assert fv[skel.index("r_shoulder")] == 0  # the missing left shoulder is now the right one


def test_flip_joints_agrees_with_image_flip():
  """x -> W - x is the mirror of tf.image.flip_left_right: a bright pixel's centre follows."""
  h, w = 24, 37
  image = np.zeros((h, w, 1), np.float32)
  px, py = 5, 11
  image[py, px] = 1.0
  flipped = tf.image.flip_left_right(image).numpy()[..., 0]
  fy, fx = np.unravel_index(np.argmax(flipped), flipped.shape)
  point = np.array([[px + 0.5, py + 0.5]], np.float32)
  fj, _ = geometry.flip_joints(point, np.ones(1, np.float32), w, np.array([0], np.int32))
  np.testing.assert_allclose(fj.numpy(), [[fx + 0.5, fy + 0.5]])


def test_flip_box_twice_is_identity():
  boxes = np.array([[10.0, 20.0, 8.0, 6.0], [60.0, 5.0, 30.0, 2.0]], np.float32)
  once = geometry.flip_box(boxes, 64).numpy()
  np.testing.assert_allclose(once, [[54.0, 20.0, 8.0, 6.0], [4.0, 5.0, 30.0, 2.0]])
  np.testing.assert_allclose(geometry.flip_box(once, 64).numpy(), boxes)


# --------------------------------------------------------------------- crop <-> image frames

def test_crop_to_image_round_trip():
  rng = np.random.default_rng(3)
  points = rng.uniform(-10, 70, (3, 7, 2)).astype(np.float32)
  boxes = random_boxes(rng, 3, 64, 64)
  crop_pts = geometry.image_to_crop(points, boxes, 32)
  np.testing.assert_allclose(geometry.crop_to_image(crop_pts, boxes, 32).numpy(), points,
                             atol=1e-4)
  # The box corners are the crop's corners (0, 0) and (S, S).
  corners = np.stack([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
  np.testing.assert_allclose(geometry.image_to_crop(corners, boxes, 32).numpy(),
                             np.broadcast_to([[0, 0], [32, 32]], (3, 2, 2)), atol=1e-4)


def test_point_through_joint_box_crop_and_back():
  """A point mapped into a joint box's crop frame and back lands where it started (far
  under 0.5 px), and every joint sits at the centre of its own crop."""
  rng = np.random.default_rng(4)
  size = 24
  pose = random_pose(rng, 14, 64, 64, margin=0.1)
  boxes = geometry.joint_boxes(pose, LSP14.diameter_indices, 0.7)  # (K, 4)
  np.testing.assert_allclose(geometry.image_to_crop(pose[:, None, :], boxes, size).numpy(),
                             np.full((14, 1, 2), size / 2.0), atol=1e-3)
  points = (pose + rng.uniform(-3, 3, pose.shape)).astype(np.float32)[:, None, :]
  in_crop = geometry.image_to_crop(points, boxes, size)
  back = geometry.crop_to_image(in_crop, boxes, size).numpy()
  assert np.max(np.abs(back - points)) < 1e-3  # implies the 0.5 px bound with room to spare


@pytest.mark.parametrize("size,sigma", [(16, 0.5), (8, 0.5), (32, 1.0)])
def test_bright_pixel_found_in_joint_box_crop_maps_back(size, sigma, crop_fn):
  """Content test: the crop really shows what crop_to_image says it shows.

  A joint at a non-integer point p gets a bright pixel at floor(p); that pixel's centre c
  is within 0.5 px of p per axis. The crop samples on a grid with spacing s/S (s = box
  side) and bilinear interpolation of a single bright pixel is the tent
  max(0, 1 - |dx|) * max(0, 1 - |dy|), so (as long as s/S < 2, so that some sample sees the
  pixel) the argmax crop pixel is the sample nearest c per axis: within s/(2S) of c.
  Mapping that crop pixel's centre back with crop_to_image is exact, so the per-axis error
  against the true joint is at most 0.5 * s/S + 0.5 px (plus float slack).
  """
  rng = np.random.default_rng(5)
  height, width = 64, 64
  pose = random_pose(rng, 14, height, width, margin=0.15)
  boxes = geometry.joint_boxes(pose, LSP14.diameter_indices, sigma).numpy()
  for i in range(14):
    side = boxes[i, 2]
    if side / size >= 2.0:
      continue
    image = np.zeros((1, height, width, 1), np.float32)
    image[0, int(pose[i, 1]), int(pose[i, 0]), 0] = 255.0
    out = crop_fn(image, boxes[i:i + 1], [0], size).numpy()[0, ..., 0]
    assert out.max() > 0
    r, c = np.unravel_index(np.argmax(out), out.shape)
    found = geometry.crop_to_image([[c + 0.5, r + 0.5]], boxes[i], size).numpy()[0]
    tol = 0.5 * side / size + 0.5 + 1e-4
    assert np.all(np.abs(found - pose[i]) <= tol), (i, found, pose[i], tol)


def test_crop_samples_where_crop_to_image_says(crop_fn):
  """On a linear ramp (value = pixel index) bilinear sampling is exact: crop pixel (r, c)
  holds the index-frame coordinates of crop_to_image((c + 0.5, r + 0.5))."""
  h, w, size = 40, 56, 12
  ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                       indexing="ij")
  image = np.stack([xs, ys], -1)[None]
  boxes = random_boxes(np.random.default_rng(6), 4, h, w)
  out = crop_fn(image, boxes, np.zeros(4, np.int32), size).numpy()
  grid = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1)  # (S,S,2)
  for n in range(4):
    pts = geometry.crop_to_image(grid.reshape(-1, 2), boxes[n], size).numpy()
    np.testing.assert_allclose(out[n].reshape(-1, 2), pts - 0.5, atol=1e-3)


# ------------------------------------------------------------------------------ the crop op

@pytest.mark.parametrize("size", [7, 16, 33])
def test_crop_matches_crop_and_resize_inside_image(size, crop_fn):
  rng = np.random.default_rng(7)
  images = rng.uniform(0, 1, (2, 40, 52, 3)).astype(np.float32)
  boxes = random_boxes(rng, 6, 40, 52)
  idx = np.array([0, 1, 1, 0, 1, 0], np.int32)
  ours = crop_fn(images, boxes, idx, size).numpy()
  ref = crop_and_resize_reference(images, boxes, idx, size)
  assert ours.shape == (6, size, size, 3)
  np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_crop_is_zero_outside_the_image(crop_fn):
  rng = np.random.default_rng(8)
  images = rng.uniform(1, 2, (1, 32, 32, 3)).astype(np.float32)  # no zero pixel inside
  far = np.array([[-100.0, -100.0, 10.0, 10.0], [200.0, 16.0, 20.0, 20.0],
                  [16.0, 40.0, 8.0, 12.0]], np.float32)  # the last one starts at y = 34
  out = crop_fn(images, far, np.zeros(3, np.int32), 8).numpy()
  np.testing.assert_array_equal(out, 0.0)


def test_crop_straddling_the_edge_is_zero_padded(crop_fn):
  """Columns sampling at x <= -1 (index frame) are zero; columns sampling inside the image
  match crop_and_resize at the same positions; nothing outside the image leaks in."""
  rng = np.random.default_rng(9)
  image = rng.uniform(1, 2, (1, 32, 32, 3)).astype(np.float32)
  size = 16
  box = np.array([[2.0, 16.0, 24.0, 16.0]], np.float32)  # x from -10 to 14
  ours = crop_fn(image, box, [0], size).numpy()[0]
  xs = box[0, 0] - box[0, 2] / 2 + (np.arange(size) + 0.5) * box[0, 2] / size - 0.5
  ys = box[0, 1] - box[0, 3] / 2 + (np.arange(size) + 0.5) * box[0, 3] / size - 0.5
  outside, inside = xs <= -1.0, xs >= 0.0
  assert outside.sum() >= 4 and inside.sum() >= 4
  np.testing.assert_array_equal(ours[:, outside], 0.0)
  cols = np.flatnonzero(inside)
  norm = [[ys[0] / 31, xs[cols[0]] / 31, ys[-1] / 31, xs[cols[-1]] / 31]]
  ref = tf.image.crop_and_resize(image, np.float32(norm), [0], [size, len(cols)]).numpy()[0]
  np.testing.assert_allclose(ours[:, cols], ref, atol=1e-4)


def test_crop_zero_padding_of_the_image_changes_nothing(crop_fn):
  """What eval_dataset relies on: padding images with zeros (right/bottom, as
  padded_batch does) leaves every crop unchanged, even boxes that cross the border."""
  rng = np.random.default_rng(10)
  image = rng.uniform(0, 255, (1, 30, 41, 3)).astype(np.float32)
  padded = np.zeros((1, 50, 64, 3), np.float32)
  padded[:, :30, :41] = image
  boxes = np.concatenate([random_boxes(rng, 3, 30, 41),
                          [[38.0, 28.0, 20.0, 14.0], [-2.0, 3.0, 9.0, 9.0]]]).astype(np.float32)
  a = crop_fn(image, boxes, np.zeros(5, np.int32), 16).numpy()
  b = crop_fn(padded, boxes, np.zeros(5, np.int32), 16).numpy()
  # crop_and_resize scales sample positions by the image size: float rounding only.
  np.testing.assert_allclose(a, b, atol=1e-2)  # of 0..255


def test_crop_uint8_equals_float(crop_fn):
  rng = np.random.default_rng(11)
  image = rng.integers(0, 256, (1, 32, 48, 3)).astype(np.uint8)
  boxes = np.concatenate([random_boxes(rng, 3, 32, 48), [[0.0, 0.0, 20.0, 20.0]]]).astype(
      np.float32)
  a = crop_fn(image, boxes, np.zeros(4, np.int32), 16)
  b = crop_fn(image.astype(np.float32), boxes, np.zeros(4, np.int32), 16)
  assert a.dtype == tf.float32
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  # Against crop_and_resize for the boxes fully inside (values now up to 255).
  np.testing.assert_allclose(
      a.numpy()[:3], crop_and_resize_reference(image, boxes[:3], np.zeros(3, np.int32), 16),
      atol=2e-2)


@pytest.mark.parametrize("seed", range(3))
def test_crop_and_crop_builtin_agree_anywhere(seed):
  """The fast crop (training, evaluation, SavedModel) and the builtin-ops crop (TFLite) cut
  the same pixels: boxes of any size and position, inside, straddling and outside the
  image, several images of a batch, uint8 values up to 255."""
  rng = np.random.default_rng(100 + seed)
  b, h, w, n, size = 2, int(rng.integers(20, 90)), int(rng.integers(20, 90)), 40, 23
  images = rng.integers(0, 256, (b, h, w, 3)).astype(np.uint8)
  boxes = np.stack([rng.uniform(-30, w + 30, n), rng.uniform(-30, h + 30, n),
                    rng.uniform(1, 2 * w, n), rng.uniform(1, 2 * h, n)], -1).astype(np.float32)
  idx = rng.integers(0, b, n).astype(np.int32)
  fast = geometry.crop(images, boxes, idx, size).numpy()
  builtin = geometry.crop_builtin(images, boxes, idx, size).numpy()
  assert fast.std() > 10  # real content, not two all-zero crops
  np.testing.assert_allclose(fast, builtin, atol=0.05)  # 0.02% of the 0..255 range


def test_crop_n_boxes_from_b_images(crop_fn):
  rng = np.random.default_rng(12)
  images = rng.uniform(0, 1, (3, 24, 24, 2)).astype(np.float32)
  boxes = random_boxes(rng, 5, 24, 24)
  idx = np.array([2, 0, 1, 2, 0], np.int32)
  out = crop_fn(images, boxes, idx, 10).numpy()
  assert out.shape == (5, 10, 10, 2)
  for n in range(5):
    single = crop_fn(images[idx[n]:idx[n] + 1], boxes[n:n + 1], [0], 10).numpy()[0]
    np.testing.assert_allclose(out[n], single, atol=1e-6)
  # Boxes from different images really differ (the index is honoured).
  assert not np.allclose(crop_fn(images, boxes[:1], [0], 10).numpy(),
                         crop_fn(images, boxes[:1], [1], 10).numpy())


# ------------------------------------------------------------------------------ joint boxes

def test_joint_boxes_shape_and_side():
  rng = np.random.default_rng(13)
  poses = rng.uniform(0, 64, (3, 14, 2)).astype(np.float32)
  a, b = LSP14.diameter_indices
  boxes = geometry.joint_boxes(poses, LSP14.diameter_indices, 0.6).numpy()
  assert boxes.shape == (3, 14, 4)
  diam = np.linalg.norm(poses[:, a] - poses[:, b], axis=-1)
  np.testing.assert_allclose(geometry.diameter(poses, LSP14.diameter_indices).numpy(), diam,
                             rtol=1e-5)
  np.testing.assert_allclose(boxes[..., :2], poses)
  expected_side = np.maximum(0.6 * diam, geometry.MIN_BOX_SIDE)
  np.testing.assert_allclose(boxes[..., 2], np.broadcast_to(expected_side[:, None], (3, 14)),
                             rtol=1e-5)
  np.testing.assert_array_equal(boxes[..., 2], boxes[..., 3])
  single = geometry.joint_boxes(poses[0], LSP14.diameter_indices, 0.6).numpy()
  assert single.shape == (14, 4)
  np.testing.assert_allclose(single, boxes[0])


def test_joint_boxes_floor_for_degenerate_pose():
  pose = np.full((10, 2), 7.0, np.float32)  # every joint on one point: diameter 0
  boxes = geometry.joint_boxes(pose, FLIC10.diameter_indices, 1.0).numpy()
  np.testing.assert_array_equal(boxes[:, 2:], geometry.MIN_BOX_SIDE)
  assert np.all(np.isfinite(geometry.normalize(pose + 1.0, boxes[0]).numpy()))


# ----------------------------------------------------- every op eagerly and in Dataset.map

def _in_map(fn, args):
  ds = tf.data.Dataset.from_tensors(tuple(tf.convert_to_tensor(a) for a in args))
  return next(iter(ds.map(lambda *a: fn(*a))))


_R = np.random.default_rng(14)
_POSE = random_pose(_R, 14, 40, 48)
_POSES = np.stack([_POSE, random_pose(_R, 14, 40, 48)])
_BOXES = random_boxes(_R, 2, 40, 48)
_IMAGES = _R.integers(0, 256, (2, 40, 48, 3)).astype(np.uint8)
_PERM = LSP14.flip_permutation
_DIAM = LSP14.diameter_indices

OPS = {
    "normalize": (geometry.normalize, (_POSES, _BOXES)),
    "denormalize": (geometry.denormalize, (_POSES / 50.0, _BOXES)),
    "full_image_box": (geometry.full_image_box, (np.array([40, 30]), np.array([48, 20]))),
    "diameter": (lambda j: geometry.diameter(j, _DIAM), (_POSES,)),
    "joint_boxes": (lambda j: geometry.joint_boxes(j, _DIAM, 0.8), (_POSES,)),
    "jitter_box": (geometry.jitter_box,
                   (_BOXES, np.float32([[0.1, -0.2], [0.0, 0.3]]), np.float32([0.9, 1.2]))),
    "flip_joints": (lambda j, v, w: geometry.flip_joints(j, v, w, _PERM),
                    (_POSE, np.float32(_R.integers(0, 2, 14)), np.int32(48))),
    "flip_box": (geometry.flip_box, (_BOXES, np.int32(48))),
    "crop_to_image": (lambda p, b: geometry.crop_to_image(p, b, 20), (_POSES / 2, _BOXES)),
    "image_to_crop": (lambda p, b: geometry.image_to_crop(p, b, 20), (_POSES, _BOXES)),
    "crop": (lambda im, b, i: geometry.crop(im, b, i, 20),
             (_IMAGES, np.concatenate([_BOXES, [[-5.0, 3.0, 30.0, 12.0]]]).astype(np.float32),
              np.int32([1, 0, 1]))),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_eager_and_in_dataset_map_agree(name):
  fn, args = OPS[name]
  eager = fn(*[tf.convert_to_tensor(a) for a in args])
  mapped = _in_map(fn, args)
  tf.nest.assert_same_structure(eager, mapped)
  for e, m in zip(tf.nest.flatten(eager), tf.nest.flatten(mapped)):
    assert e.shape == m.shape and e.dtype == m.dtype
    np.testing.assert_allclose(e.numpy(), m.numpy(), rtol=1e-6, atol=1e-5)
    assert np.all(np.isfinite(e.numpy()))


def test_crop_in_tf_function_with_unknown_shapes(crop_fn):
  """The crop only needs the static size S: image and box counts may be unknown."""
  fn = tf.function(lambda im, b, i: crop_fn(im, b, i, 12), input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.uint8), tf.TensorSpec([None, 4], tf.float32),
      tf.TensorSpec([None], tf.int32)])
  boxes = OPS["crop"][1][1]
  out = fn(_IMAGES, boxes, np.int32([1, 0, 1]))
  np.testing.assert_allclose(out.numpy(),
                             crop_fn(_IMAGES, boxes, np.int32([1, 0, 1]), 12).numpy(),
                             atol=2e-3)  # graph-mode fusion rounds differently (values ~255)
