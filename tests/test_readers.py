"""Tests of the LSP, LSP-extended and FLIC readers on genuine-format fixture files."""

import itertools
import os

import numpy as np
import pytest
import scipy.io

from deeppose_tf import skeleton
from deeppose_tf.data import flic, lsp, matlab, records

import fixtures_mat as fm

K = skeleton.LSP14.num_joints


# ----------------------------------------------------------------------------- LSP

@pytest.fixture(scope="module")
def lsp_joints():
  # 1003 images so the official 1-1000 / 1001-2000 boundary is really crossed.
  joints = fm.random_lsp_joints(1003, seed=1)
  # LSP's third row marks occlusion: set some to 1 and some to 0; all stay visible.
  joints[:, :, 2] = np.random.default_rng(2).integers(0, 2, joints.shape[:2])
  joints[1001, 0, :2] = (1.0, 1.0)  # the centre of MATLAB's first pixel
  joints[1001, 1, :2] = (30.0, 20.0)  # the centre of the bottom-right pixel
  return joints


@pytest.fixture(scope="module", params=["lsp", "lspet"])
def lsp_dir(request, tmp_path_factory, lsp_joints):
  root = str(tmp_path_factory.mktemp(f"lsp_{request.param}"))
  images = fm.write_lsp_folder(root, lsp_joints, request.param, digits=4, grayscale=(1001,))
  return root, images


def test_matlab_to_pixels_moves_pixel_centres():
  # MATLAB pixel 1 is centred at 1; our pixel 0 spans [0, 1), centred at 0.5.
  np.testing.assert_allclose(matlab.matlab_to_pixels([[1.0, 1.0], [30.0, 20.0], [2.5, 0.0]]),
                             [[0.5, 0.5], [29.5, 19.5], [2.0, -0.5]])


def test_lsp_both_axis_orders_give_same_records(lsp_dir, lsp_joints):
  root, images = lsp_dir
  test = list(lsp.read_lsp(root, "test"))
  assert [r.image_id for r in test] == ["lsp/im1001", "lsp/im1002", "lsp/im1003"]
  for r, i in zip(test, range(1000, 1003)):
    assert r.joints.shape == (K, 2) and r.joints.dtype == np.float32
    np.testing.assert_allclose(r.joints, lsp_joints[i, :, :2] - 0.5, atol=1e-5)
    # Occlusion flags (0 and 1 both present) never mask an LSP joint.
    np.testing.assert_array_equal(r.visible, np.ones(K, np.float32))
    assert r.image == images[i]  # untouched file bytes
    assert r.box is None
  np.testing.assert_allclose(test[1].joints[:2], [[0.5, 0.5], [29.5, 19.5]])


def test_lsp_split_sizes_and_counts(lsp_dir):
  root, _ = lsp_dir
  train = list(lsp.read_lsp(root, "train"))
  assert len(train) == 1000
  assert train[0].image_id == "lsp/im0001" and train[-1].image_id == "lsp/im1000"
  assert matlab.counts(lsp.read_lsp(root, "test")) == {
      "images": 3, "annotated_joints": 3 * K, "masked_joints": 0}


def test_lsp_records_validate_including_grayscale(lsp_dir):
  root, _ = lsp_dir
  for r in lsp.read_lsp(root, "test"):
    v = records.validate(r, K)
    assert (v.height, v.width) == (20, 30)


def test_lsp_errors_are_eager_and_named(tmp_path, lsp_joints):
  root = str(tmp_path)
  with pytest.raises(ValueError, match=r"joints\.mat.*" + str(tmp_path)):
    lsp.read_lsp(root, "train")  # no joints.mat yet; raised before iterating
  fm.write_lsp_folder(root, lsp_joints[:3], "lsp", digits=4)
  with pytest.raises(ValueError, match=r"'train', 'test', 'val'"):
    lsp.read_lsp(root, "all")
  scipy.io.savemat(os.path.join(root, "joints.mat"), {"joints": np.zeros((14, 2, 5))})
  with pytest.raises(ValueError, match=r"joints\.mat.*\(14, 2, 5\).*\(3, 14, N\)"):
    lsp.read_lsp(root, "train")
  scipy.io.savemat(os.path.join(root, "joints.mat"), {"joints": np.zeros((3, 14, 2001))})
  with pytest.raises(ValueError, match="2001 images"):
    lsp.read_lsp(root, "train")
  scipy.io.savemat(os.path.join(root, "joints.mat"), {"other": np.zeros((3, 14, 3))})
  with pytest.raises(ValueError, match="no variable 'joints'"):
    lsp.read_lsp(root, "train")


def test_lsp_missing_image_names_it(tmp_path, lsp_joints):
  root = str(tmp_path)
  fm.write_lsp_folder(root, lsp_joints[:3], "lsp", digits=4)
  os.remove(os.path.join(root, "images", "im0002.jpg"))
  it = lsp.read_lsp(root, "train")
  assert next(it).image_id == "lsp/im0001"
  with pytest.raises(ValueError, match=r"lsp/im0002.*im0002\.jpg"):
    next(it)


def test_lsp_nonfinite_joint_names_record(tmp_path, lsp_joints):
  joints = lsp_joints[:2].copy()
  joints[1, 5, 0] = np.nan
  fm.write_lsp_folder(str(tmp_path), joints, "lsp", digits=4)
  with pytest.raises(ValueError, match=r"lsp/im0002.*\[5\]"):
    list(lsp.read_lsp(str(tmp_path), "train"))


# --------------------------------------------------------------------------- LSPET

@pytest.fixture
def lspet_dir(tmp_path):
  joints = fm.random_lsp_joints(12, seed=3)
  masked = [(0, 0), (0, 13), (4, 6), (4, 7), (4, 8), (9, 12)]
  for i, j in masked:
    # As in the real file: flag 0 and junk coordinates <= 0.
    joints[i, j] = (0.0, -26.1, 0.0)
  joints[7, :] = (0.0, 0.0, 0.0)  # an image with no annotated joint at all
  root = str(tmp_path)
  images = fm.write_lsp_folder(root, joints, "lspet", digits=5, grayscale=(2,))
  return root, joints, images, masked


def test_lspet_masks_unannotated_joints(lspet_dir):
  root, joints, images, masked = lspet_dir
  skipped = []
  recs = list(lsp.read_lspet(root, "all", skipped=skipped))
  assert skipped == ["lspet/im00008"]
  assert [r.image_id for r in recs] == [f"lspet/im{i:05d}" for i in range(1, 13) if i != 8]
  by_id = {r.image_id: r for r in recs}
  r0 = by_id["lspet/im00001"]
  np.testing.assert_array_equal(np.flatnonzero(r0.visible == 0), [0, 13])
  np.testing.assert_array_equal(r0.joints[[0, 13]], np.zeros((2, 2)))  # no junk kept
  np.testing.assert_allclose(r0.joints[1:13], joints[0, 1:13, :2] - 0.5, atol=1e-5)
  assert r0.image == images[0]
  assert by_id["lspet/im00005"].visible.sum() == K - 3
  assert matlab.counts(recs) == {"images": 11, "annotated_joints": 11 * K - len(masked),
                              "masked_joints": len(masked)}
  for r in recs:
    records.validate(r, K)  # includes the grayscale JPEG


def test_lspet_skipped_images_are_logged(lspet_dir, caplog):
  root = lspet_dir[0]
  with caplog.at_level("WARNING"):
    assert matlab.counts(lsp.read_lspet(root, "all"))["images"] == 11
  assert "lspet/im00008" in caplog.text and "skipped 1 of 12" in caplog.text


def test_lspet_split_is_a_deterministic_partition(lspet_dir):
  root = lspet_dir[0]

  def ids(split, **kw):
    return [r.image_id for r in lsp.read_lspet(root, split, **kw)]

  train, val, everything = ids("train", val_fraction=0.25), ids("val", val_fraction=0.25), \
      ids("all")
  assert not set(train) & set(val)
  assert sorted(train + val) == sorted(everything)
  assert train == ids("train", val_fraction=0.25)  # same call, same split
  # The split is made over all 12 columns, skipped image (im00008) included.
  assert sorted(lsp.lspet_split_indices(12, "val", 0.25).tolist() +
                lsp.lspet_split_indices(12, "train", 0.25).tolist()) == list(range(12))
  assert len(lsp.lspet_split_indices(12, "val", 0.25)) == 3
  assert len(ids("val", val_fraction=0.0)) == 0


def test_lspet_split_is_pinned_and_seeded():
  # Pinned: a change here silently moves images between train and val of every user.
  assert lsp.lspet_split_indices(20, "val", 0.25, seed=0).tolist() == [1, 4, 15, 18, 19]
  assert lsp.lspet_split_indices(20, "val", 0.25, seed=1).tolist() == [7, 8, 11, 16, 18]
  val = lsp.lspet_split_indices(9000, "val", 0.1, seed=0)
  assert len(val) == 900 and len(lsp.lspet_split_indices(9000, "train", 0.1)) == 8100
  assert not np.array_equal(val, lsp.lspet_split_indices(9000, "val", 0.1, seed=1))
  with pytest.raises(ValueError, match="val_fraction"):
    lsp.lspet_split_indices(10, "val", 1.5)


def test_lspet_errors(tmp_path):
  root = str(tmp_path)
  with pytest.raises(ValueError, match=r"LSPET annotations not found.*joints\.mat"):
    lsp.read_lspet(root, "all")
  joints = fm.random_lsp_joints(3)
  fm.write_lsp_folder(root, joints, "lspet", digits=5)
  with pytest.raises(ValueError, match=r"'train', 'val', 'all'"):
    lsp.read_lspet(root, "test")
  fm.write_joints_mat(os.path.join(root, "joints.mat"), joints, "lsp")
  with pytest.raises(ValueError, match=r"\(3, 14, 3\).*\(14, 3, N\).*read_lsp"):
    lsp.read_lspet(root, "all")
  bad = joints.copy()
  bad[2, 4, 2] = 2.0
  fm.write_joints_mat(os.path.join(root, "joints.mat"), bad, "lspet")
  with pytest.raises(ValueError, match=r"im00003 joint 4"):
    lsp.read_lspet(root, "all")
  fm.write_joints_mat(os.path.join(root, "joints.mat"), joints, "lspet")
  os.remove(os.path.join(root, "images", "im00003.jpg"))
  with pytest.raises(ValueError, match=r"im00003\.jpg' does not exist"):
    list(lsp.read_lspet(root, "all"))


# ---------------------------------------------------------------------------- FLIC

def _flic_fixture(root, extra=()):
  c0 = fm.flic_coords(0)
  c0[:, 0] = (1.0, 2.0)     # lsho
  c0[:, 3] = (11.0, 4.0)    # rsho -> neck (6, 3) MATLAB = (5.5, 2.5) ours
  c0[:, 16] = (30.0, 20.0)  # nose, bottom-right pixel centre
  c1 = fm.flic_coords(1)
  c1[:, 1] = np.nan         # lelb unlabelled
  c1[0, 3] = np.nan         # rsho x unlabelled -> r_shoulder and neck unannotated
  c2 = fm.flic_coords(2)
  examples = [
      fm.flic_example("movie-a-00001.jpg", c0, (3.0, 4.0, 13.0, 18.0), istrain=True),
      fm.flic_example("movie-a-00002.png", c1, (2.0, 2.0, 20.0, 10.0), istrain=True),
      fm.flic_example("movie-a-00001.jpg", c2, (5.0, 5.0, 9.0, 9.0), istrain=True),
      fm.flic_example("sub/movie-b-00007.jpg", fm.flic_coords(3), (1, 1, 30, 20),
                      istrain=False),
  ] + list(extra)
  images = fm.write_flic_folder(root, examples, image_modes={"movie-a-00002.png": "L"})
  return examples, images


def test_flic_fixture_has_the_real_struct_layout(tmp_path):
  _flic_fixture(str(tmp_path))
  ex = scipy.io.loadmat(os.path.join(str(tmp_path), "examples.mat"))["examples"]
  assert ex.shape == (1, 4)
  assert {"coords", "filepath", "imgdims", "torsobox", "istrain", "istest", "moviename",
          "currframe"} <= set(ex.dtype.names)
  assert ex["coords"][0, 0].shape == (2, 29)
  assert ex["filepath"][0, 1][0] == "movie-a-00002.png"
  assert ex["torsobox"][0, 0].shape == (1, 4)
  assert ex["istrain"][0, 3].item() == 0 and ex["istest"][0, 3].item() == 1


def test_flic_joints_visibility_and_box(tmp_path):
  examples, images = _flic_fixture(str(tmp_path))
  train = list(flic.read_flic(str(tmp_path), "train"))
  assert [r.image_id for r in train] == [
      "flic/0001-movie-a-00001", "flic/0002-movie-a-00002", "flic/0003-movie-a-00001"]
  names = skeleton.FLIC10.joints
  r0, r1, r2 = train
  assert r0.joints.shape == (10, 2) and r0.joints.dtype == np.float32
  np.testing.assert_allclose(r0.joints[names.index("l_shoulder")], (0.5, 1.5))
  np.testing.assert_allclose(r0.joints[names.index("neck")], (5.5, 2.5))
  np.testing.assert_allclose(r0.joints[names.index("nose")], (29.5, 19.5))
  c0 = examples[0]["coords"]
  for joint, col in (("l_wrist", 2), ("r_elbow", 4), ("l_hip", 6), ("r_hip", 9)):
    np.testing.assert_allclose(r0.joints[names.index(joint)], c0[:, col] - 0.5, atol=1e-5)
  np.testing.assert_array_equal(r0.visible, np.ones(10))
  # x1 y1 x2 y2 = 3 4 13 18 -> centre (8, 11) MATLAB = (7.5, 10.5) ours, 10 x 14.
  np.testing.assert_allclose(r0.box, (7.5, 10.5, 10.0, 14.0))
  hidden = {names[i] for i in np.flatnonzero(r1.visible == 0)}
  assert hidden == {"l_elbow", "r_shoulder", "neck"}
  assert np.all(np.isfinite(r1.joints)) and np.all(r1.joints[r1.visible == 0] == 0)
  assert r0.image == r2.image == images["movie-a-00001.jpg"]
  assert r1.image == images["movie-a-00002.png"]
  assert matlab.counts(train) == {"images": 3, "annotated_joints": 27, "masked_joints": 3}
  for r in train:
    v = records.validate(r, 10)  # grayscale PNG included
    assert (v.height, v.width) == (20, 30)
  test = list(flic.read_flic(str(tmp_path), "test", box="none"))
  assert [r.image_id for r in test] == ["flic/0004-movie-b-00007"] and test[0].box is None


def test_flic_one_example_file(tmp_path):
  ex = fm.flic_example("x.jpg", fm.flic_coords(5), (1, 1, 9, 9), istrain=True)
  fm.write_flic_folder(str(tmp_path), [ex])  # a 1 x 1 struct loads as a bare struct
  assert len(list(flic.read_flic(str(tmp_path), "train"))) == 1


@pytest.mark.parametrize("filepath", [
    "../../etc/passwd", "/etc/passwd", "sub/../../outside.jpg", "..\\..\\x.jpg", "..",
    "C:/Windows/x.jpg", ""])
def test_flic_refuses_paths_leaving_the_folder(tmp_path, filepath):
  bad = fm.flic_example(filepath, fm.flic_coords(4), (1, 1, 9, 9), istrain=True)
  _flic_fixture(str(tmp_path), extra=[bad])
  it = flic.read_flic(str(tmp_path), "train")
  assert len(list(itertools.islice(it, 3))) == 3
  with pytest.raises(ValueError, match=r"record 'flic/0005.*examples\(5\)"):
    next(it)


def test_flic_allows_dotdot_that_stays_inside(tmp_path):
  ok = fm.flic_example("sub/../inside.jpg", fm.flic_coords(4), (1, 1, 9, 9), istrain=True)
  _flic_fixture(str(tmp_path), extra=[ok])
  data = fm.write_image(os.path.join(str(tmp_path), "images", "inside.jpg"), seed=9)
  assert list(flic.read_flic(str(tmp_path), "train"))[-1].image == data


def test_flic_shape_and_file_errors(tmp_path):
  root = str(tmp_path)
  with pytest.raises(ValueError, match=r"FLIC annotations not found.*examples\.mat"):
    flic.read_flic(root, "train")
  bad = fm.flic_example("movie-a-00001.jpg", fm.flic_coords(6).T, (1, 1, 9, 9), True)
  _flic_fixture(root, extra=[bad])
  with pytest.raises(ValueError, match=r"'train', 'test'"):
    flic.read_flic(root, "val")
  with pytest.raises(ValueError, match=r"'torso', 'face', 'none'"):
    flic.read_flic(root, "train", box="head")
  with pytest.raises(ValueError, match=r"flic/0005.*\(29, 2\).*\(2, 29\)"):
    list(flic.read_flic(root, "train"))
  inverted = fm.flic_example("movie-a-00001.jpg", fm.flic_coords(6), (9, 1, 1, 9), True)
  _flic_fixture(root, extra=[inverted])
  with pytest.raises(ValueError, match=r"flic/0005.*torsobox"):
    list(flic.read_flic(root, "train"))
  os.remove(os.path.join(root, "images", "movie-a-00002.png"))
  with pytest.raises(ValueError, match=r"movie-a-00002\.png' does not exist"):
    list(flic.read_flic(root, "train", box="none"))


def test_flic_example_without_labels_is_skipped(tmp_path):
  empty = fm.flic_example("movie-a-00001.jpg", np.full((2, 29), np.nan), (1, 1, 9, 9), True)
  _flic_fixture(str(tmp_path), extra=[empty])
  skipped = []
  assert len(list(flic.read_flic(str(tmp_path), "train", skipped=skipped))) == 3
  assert skipped == ["flic/0005-movie-a-00001"]


# ---------------------------------------------------------------- the real LSPET copy

def _real_lspet_dir():
  return os.environ.get("DEEPPOSE_LSPET_DIR") or os.path.join(
      os.path.dirname(__file__), "..", "..", "shared", "data", "lspet")


def test_real_lspet_first_200_images():
  root = _real_lspet_dir()
  if not os.path.isfile(os.path.join(root, "joints.mat")):
    pytest.skip(f"no LSPET copy at {os.path.abspath(root)} (set DEEPPOSE_LSPET_DIR)")
  raw = scipy.io.loadmat(os.path.join(root, "joints.mat"))["joints"]
  assert raw.shape[:2] == (14, 3)
  recs = list(itertools.islice(lsp.read_lspet(root, "all"), 200))
  assert [r.image_id for r in recs[:2]] == ["lspet/im00001", "lspet/im00002"]
  c = matlab.counts(recs)
  first = raw[:, 2, :len(recs)]
  assert c["masked_joints"] == int((first == 0).sum())
  assert c["annotated_joints"] == int((first == 1).sum())
  assert 0.05 < c["masked_joints"] / (c["images"] * K) < 0.25  # README: about 12%
  inside = total = 0
  for r in recs[:50]:
    h, w = records.image_size(r.image_id, r.image)
    xy = r.joints[r.visible > 0]
    inside += int(np.sum((xy[:, 0] >= -1) & (xy[:, 0] <= w + 1) &
                         (xy[:, 1] >= -1) & (xy[:, 1] <= h + 1)))
    total += len(xy)
  assert inside / total > 0.95  # annotations land on the images, in this frame


def test_lsp_val_is_carved_from_the_training_half(lsp_dir):
  root, _ = lsp_dir
  train = list(lsp.read_lsp(root, "train", val_images=200))
  val = list(lsp.read_lsp(root, "val", val_images=200))
  assert len(train) == 800 and train[-1].image_id == "lsp/im0800"
  assert [r.image_id for r in val[:1] + val[-1:]] == ["lsp/im0801", "lsp/im1000"]
  assert list(lsp.read_lsp(root, "val")) == []  # by default the official 1000 train
  assert len(list(lsp.read_lsp(root, "test", val_images=200))) == 3
  with pytest.raises(ValueError, match=r"val_images must be in \[0, 1000\)"):
    lsp.read_lsp(root, "train", val_images=1000)
