"""Tests of the synthetic dataset: determinism, record format, statistics, geometry."""

import io

import numpy as np
import pytest
from PIL import Image

from deeppose_tf.data import records, synthetic
from deeppose_tf.skeleton import LSP14

K = LSP14.num_joints
J = LSP14.index
LIMBS = [(name, LSP14.index(a), LSP14.index(b)) for name, a, b in LSP14.limbs if name != "head"]


@pytest.fixture(scope="module")
def rendered():
  """200 examples of seed 5, with the debug layers (background, person coverage)."""
  return [synthetic._render(5, i, debug=True) for i in range(200)]


def inside(joints, image):
  h, w = image.shape[:2]
  return (joints[:, 0] >= 0) & (joints[:, 0] < w) & (joints[:, 1] >= 0) & (joints[:, 1] < h)


def test_render_is_deterministic_per_seed_and_index():
  a, b = synthetic.render_example(3, 7), synthetic.render_example(3, 7)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  for other in (synthetic.render_example(4, 7), synthetic.render_example(3, 8)):
    assert other[0].shape != a[0].shape or not np.array_equal(other[0], a[0])
    assert not np.array_equal(other[1], a[1])


def test_generate_is_deterministic_and_resumable():
  first = list(synthetic.generate(3, seed=11, start=4, workers=1))
  again = list(synthetic.generate(3, seed=11, start=4, workers=1))
  assert [r.image_id for r in first] == [f"synthetic/11/{i:06d}" for i in (4, 5, 6)]
  assert [r.image for r in first] == [r.image for r in again]
  # Record i depends only on (seed, i): resuming at 6 reproduces the third record exactly.
  resumed = next(synthetic.generate(1, seed=11, start=6, workers=1))
  assert resumed.image == first[2].image
  np.testing.assert_array_equal(resumed.joints, first[2].joints)
  other = list(synthetic.generate(3, seed=12, start=4, workers=1))
  assert all(a.image != b.image for a, b in zip(first, other))


def test_parallel_generation_matches_serial():
  serial = list(synthetic.generate(8, seed=2, workers=1))
  parallel = list(synthetic.generate(8, seed=2, workers=2))
  assert [r.image_id for r in parallel] == [r.image_id for r in serial]
  assert [r.image for r in parallel] == [r.image for r in serial]
  for a, b in zip(parallel, serial):
    np.testing.assert_array_equal(a.joints, b.joints)
    np.testing.assert_array_equal(a.visible, b.visible)


def test_shapes_dtypes_and_sizes(rendered):
  sizes = []
  for image, joints, visible, _ in rendered:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    h, w = image.shape[:2]
    assert synthetic.MIN_SIZE <= h <= synthetic.MAX_SIZE
    assert synthetic.MIN_SIZE <= w <= synthetic.MAX_SIZE
    assert joints.dtype == np.float32 and joints.shape == (K, 2)
    assert visible.dtype == np.float32 and visible.shape == (K,)
    assert set(np.unique(visible)) <= {0.0, 1.0}
    assert np.all(np.isfinite(joints))
    assert np.all(joints[visible == 0] == 0)
    sizes.append((h, w))
  sizes = np.array(sizes)
  # Width and height vary independently over the whole range.
  assert sizes.min() < 180 and sizes.max() > 380
  assert len(set(map(tuple, sizes))) > 150
  assert abs(np.corrcoef(sizes[:, 0], sizes[:, 1])[0, 1]) < 0.3


def test_annotation_statistics(rendered):
  visible = np.stack([v for _, _, v, _ in rendered])
  assert visible.sum(1).min() >= 1  # every record has something to train on
  assert 0.04 <= 1 - visible.mean() <= 0.12  # about 5-10% of joints unannotated
  out = np.stack([(v > 0) & ~inside(info["true_joints"], im) for im, _, v, info in rendered])
  # Some people are partly out of frame; their outside joints stay annotated with their
  # true coordinates.
  assert 0.05 <= out.any(1).mean() <= 0.4
  for (_, joints, _, info), o in zip(rendered, out):
    np.testing.assert_array_equal(joints[o], info["true_joints"][o])
  # The person spans roughly 40-70% of the image height.
  extent = [np.ptp(j[v > 0, 1]) / im.shape[0] for im, j, v, _ in rendered if v.sum() > 1]
  assert 0.4 <= np.median(extent) <= 0.7
  # Occluded joints are mostly unannotated, the others mostly annotated.
  occluded = np.stack([info["occluded"] for *_, info in rendered])
  assert occluded.sum() > 10
  assert visible[occluded].mean() < 0.4 and visible[~occluded].mean() > 0.9


def test_records_validate_and_decode():
  for record in synthetic.generate(12, seed=1, start=30, workers=1):
    checked = records.validate(record, K)
    with Image.open(io.BytesIO(record.image)) as im:
      assert im.format == "JPEG"
      assert im.size == (checked.width, checked.height) == (record.width, record.height)
      decoded = np.asarray(im.convert("RGB"), np.float32)
    index = int(record.image_id.rsplit("/", 1)[1])
    image, joints, visible = synthetic.render_example(1, index)
    assert decoded.shape == image.shape
    assert np.abs(decoded - image).mean() < 6  # the JPEG holds this very image
    np.testing.assert_array_equal(checked.joints, joints)
    np.testing.assert_array_equal(checked.visible, visible)


def test_pixel_centre_convention():
  """A capsule on x = 10.5 covers column 10 symmetrically; one on y = 20 splits rows 19/20."""
  rng = np.random.default_rng(0)
  white = synthetic._Material(rng, [255, 255, 255], 100, 0., "plain", 0.)
  canvas, cover = np.zeros((40, 40, 3), np.float32), np.zeros((40, 40), np.float32)
  synthetic._capsule(canvas, cover, (10.5, 5.5), (10.5, 30.5), 2., 2., white)
  np.testing.assert_allclose(cover[:, 9], cover[:, 11])
  assert np.all(cover[6:30, 9:12] == 1) and np.all(cover[:, 13] == 0)
  # Pixel centres 8.5 and 12.5 lie exactly on the radius-2 edge: half covered.
  np.testing.assert_allclose(cover[6:30, [8, 12]], 0.5)
  cover[:] = 0
  synthetic._capsule(canvas, cover, (5., 20.), (30., 20.), 2., 2., white)
  np.testing.assert_allclose(cover[19], cover[20])
  np.testing.assert_allclose(cover[18], cover[21])
  assert cover[19, 10] == 1 and cover[22, 10] == 0


def test_joints_lie_on_the_drawn_person(rendered):
  differs = []
  for image, joints, visible, info in rendered:
    cover = info["coverage"]
    # The returned (annotated) joints are the ones the person was drawn from.
    np.testing.assert_array_equal(joints[visible > 0], info["true_joints"][visible > 0])
    # head_top is the outline's top, not a limb's axis end: test 1 px towards the neck.
    joints = info["true_joints"].copy()
    head = joints[J("head_top")] - joints[J("neck")]
    joints[J("head_top")] -= head / max(np.hypot(*head), 1e-6)
    keep = (visible > 0) & inside(joints, image)
    px = np.floor(joints[keep]).astype(int)
    # Every annotated joint in frame is on a drawn body part (limb ends are the joints).
    assert np.all(cover[px[:, 1], px[:, 0]] > 0.5), info["kind"]
    # ...and the painted pixels there actually differ from the background.
    diff = np.abs(info["person"] - info["background"]).mean(-1)
    for x, y in px:
      differs.append(diff[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].mean() > 8)
    # Outside the person's silhouette the background is untouched.
    assert np.all(diff[cover == 0] == 0)
  assert np.mean(differs) > 0.9


def test_left_right_follow_the_view(rendered):
  """Front views put the person's right on the image left of their left (in the torso's
  frame); back views mirror that, with labels staying person-centric."""
  fronts = 0
  for _, _, _, info in rendered:
    j = info["true_joints"]
    up = j[J("neck")] - (j[J("r_hip")] + j[J("l_hip")]) / 2
    for a, b in (("r_shoulder", "l_shoulder"), ("r_hip", "l_hip")):
      rl = j[J(b)] - j[J(a)]
      cross = up[0] * rl[1] - up[1] * rl[0]  # > 0: b lies on the image right of a, y down
      assert (cross > 0) == info["front"], (info["kind"], a, b)
    fronts += info["front"]
  assert 0.5 < fronts / len(rendered) < 0.9  # both views occur


def test_limb_length_ratios_are_anthropometric():
  fore_count = total = 0
  for i in range(300):
    joints, info = synthetic._sample_pose(np.random.default_rng([0, i]))
    lengths = info["lengths"]
    assert 0.6 <= lengths["upper_arm"] / lengths["lower_leg"] <= 0.95
    assert 0.65 <= lengths["lower_arm"] / lengths["upper_arm"] <= 0.95
    assert 0.8 <= lengths["upper_leg"] / lengths["lower_leg"] <= 1.25
    assert 0.85 <= (lengths["upper_leg"] + lengths["lower_leg"]) / (
        lengths["torso"] + lengths["head"]) <= 1.25
    for name, a, b in LSP14.limbs:
      if name == "head":
        continue
      f = info["foreshortening"][name]
      assert 0.35 <= f <= 1.0
      d = np.hypot(*(joints[b] - joints[a]))
      np.testing.assert_allclose(d, lengths[LSP14.joint_type(name)] * f, rtol=1e-9)
      fore_count += f < 1
      total += 1
  assert 0.1 < fore_count / total < 0.4  # some limbs foreshortened, most not


def test_rendered_limbs_keep_their_lengths(rendered):
  """The figure is only rotated, scaled and shifted: image limb length / scale is the
  nominal length times its foreshortening."""
  for _, _, _, info in rendered:
    j = info["true_joints"]
    for name, a, b in LIMBS:
      nominal = info["lengths"][LSP14.joint_type(name)]
      expect = nominal * info["foreshortening"][name] * info["scale"]
      assert abs(np.hypot(*(j[b] - j[a])) - expect) < 1e-3 * expect + 0.01


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="non-negative"):
    synthetic.render_example(-1, 0)
  with pytest.raises(ValueError, match="quality"):
    list(synthetic.generate(1, seed=0, quality=0))
