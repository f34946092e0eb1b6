"""Tests of FLIC's face-detector initial box: the scaler (pure), the detector, the reader."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from deeppose_tf.data import face_box, flic, prepare

import fixtures_mat as fm

CV2_REASON = ('OpenCV is an optional extra (pip install "deeppose_tf[face]"); '
              "the face detector cannot run without it")


def need_cv2():
  return pytest.importorskip("cv2", reason=CV2_REASON)


def _people(n, seed=0, k=10):
  """n faces (x, y, w, h) and (n, k, 2) joints of upper bodies hanging below them."""
  rng = np.random.default_rng(seed)
  size = rng.uniform(30, 90, n)
  faces = np.stack([rng.uniform(0, 600, n), rng.uniform(0, 300, n), size, size], axis=1)
  centre = faces[:, :2] + faces[:, 2:] / 2
  # Joints within [-2.5, 2.5] x [-0.5, 5] face sizes of the face centre.
  units = np.stack([rng.uniform(-2.5, 2.5, (n, k)), rng.uniform(-0.5, 5.0, (n, k))], axis=2)
  joints = centre[:, None, :] + units * size[:, None, None]
  return faces, joints, np.ones((n, k))


# ------------------------------------------------------------------ the scaler (no cv2)

def test_face_to_person_box_follows_the_documented_model():
  scaler = {"offset": [0.0, 2.0], "scale": [3.0, 6.0]}
  # Face centre (30, 40), face size 40: centre + (0, 80), size (120, 240).
  np.testing.assert_allclose(face_box.face_to_person_box((10, 20, 40, 40), scaler),
                             (30, 120, 120, 240))
  boxes = face_box.face_to_person_box([(10, 20, 40, 40), (0, 0, 10, 20)], scaler)
  assert boxes.shape == (2, 4) and boxes.dtype == np.float32
  np.testing.assert_allclose(boxes[1], (5, 10 + 40, 30, 120))


def test_quantile_1_box_contains_every_labelled_joint_and_is_tight():
  faces, joints, visible = _people(200)
  scaler = face_box.fit_scaler(faces, joints, visible, quantile=1.0)
  assert scaler["coverage"] == 1.0 and scaler["num_faces"] == 200
  assert face_box.contains_joints(faces, joints, visible, scaler).all()
  # Checked again from the boxes themselves, independently of contains_joints.
  boxes = face_box.face_to_person_box(faces, scaler).astype(np.float64)
  lo = boxes[:, None, :2] - boxes[:, None, 2:] / 2
  hi = boxes[:, None, :2] + boxes[:, None, 2:] / 2
  assert np.all(joints >= lo - 1e-3) and np.all(joints <= hi + 1e-3)
  # Tight: every one of the four sides is touched by some joint (in face units).
  gap = np.concatenate([(joints - lo) / faces[:, None, 2:], (hi - joints) / faces[:, None, 2:]],
                       axis=2).reshape(-1, 4)
  np.testing.assert_allclose(gap.min(axis=0), 0.0, atol=1e-5)
  # The generating box was [-2.5, 2.5] x [-0.5, 5] face sizes.
  np.testing.assert_allclose(scaler["offset"], (0.0, 2.25), atol=0.1)
  np.testing.assert_allclose(scaler["scale"], (5.0, 5.5), atol=0.2)


def test_quantile_drops_the_outliers_and_keeps_the_promised_coverage():
  faces, joints, visible = _people(100, seed=1)
  joints[7] += (0, 50 * faces[7, 3])   # a wrong face far above this person
  joints[42] -= (40 * faces[42, 2], 0)  # and one far to the right
  full = face_box.fit_scaler(faces, joints, visible, quantile=1.0)
  q98 = face_box.fit_scaler(faces, joints, visible, quantile=0.98)
  inside = face_box.contains_joints(faces, joints, visible, q98)
  assert q98["coverage"] == inside.mean() >= 0.98
  assert not inside[7] and not inside[42]
  assert np.prod(q98["scale"]) < np.prod(full["scale"]) / 10
  np.testing.assert_allclose(q98["scale"], (5.0, 5.5), atol=0.3)
  q99 = face_box.fit_scaler(faces, joints, visible, quantile=0.99)  # drops only one
  assert 0.99 <= q99["coverage"] < 1.0
  assert np.prod(q98["scale"]) <= np.prod(q99["scale"]) <= np.prod(full["scale"])


def test_unlabelled_joints_do_not_move_the_box():
  faces, joints, visible = _people(30, seed=2)
  base = face_box.fit_scaler(faces, joints, visible, quantile=1.0)
  junk, mask = joints.copy(), visible.copy()
  junk[3, 4] = (1e6, -1e6)
  junk[5, 0] = np.nan
  mask[3, 4] = mask[5, 0] = 0
  np.testing.assert_allclose(face_box.fit_scaler(faces, junk, mask, 1.0)["scale"],
                             face_box.fit_scaler(faces, np.where(mask[..., None] > 0, joints,
                                                                 0), mask, 1.0)["scale"])
  assert face_box.fit_scaler(faces, junk, mask, 1.0)["coverage"] == 1.0
  assert np.all(np.asarray(base["scale"]) > 0)


def test_scaler_is_scale_and_translation_invariant():
  faces, joints, visible = _people(50, seed=3)
  a = face_box.fit_scaler(faces, joints, visible, 1.0)
  moved = faces * 2 + np.array([7, -3, 0, 0])
  b = face_box.fit_scaler(moved, joints * 2 + np.array([7, -3]), visible, 1.0)
  np.testing.assert_allclose(a["offset"], b["offset"], atol=1e-9)
  np.testing.assert_allclose(a["scale"], b["scale"], atol=1e-9)


def test_fit_scaler_errors():
  faces, joints, visible = _people(5)
  for q in (0.0, -0.5, 1.5):
    with pytest.raises(ValueError, match="quantile"):
      face_box.fit_scaler(faces, joints, visible, q)
  with pytest.raises(ValueError, match=r"faces \(N, 4\)"):
    face_box.fit_scaler(faces[:, :3], joints, visible)
  with pytest.raises(ValueError, match=r"faces \(N, 4\)"):
    face_box.fit_scaler(faces, joints[:4], visible)
  no_labels = visible.copy()
  no_labels[2] = 0
  with pytest.raises(ValueError, match=r"images \[2\] have no labelled joint"):
    face_box.fit_scaler(faces, joints, no_labels)
  with pytest.raises(ValueError, match="at least one"):
    face_box.fit_scaler(np.zeros((0, 4)), np.zeros((0, 10, 2)), np.zeros((0, 10)))
  with pytest.raises(ValueError, match="not fitted"):
    face_box.face_to_person_box((0, 0, 10, 10), face_box.unfitted_scaler("no faces"))


def test_scaler_json_round_trip_and_errors(tmp_path):
  faces, joints, visible = _people(20)
  scaler = face_box.fit_scaler(faces, joints, visible)
  path = str(tmp_path / "sub" / face_box.SCALER_FILE)
  face_box.save_scaler(path, scaler)
  assert face_box.load_scaler(path) == scaler
  assert [f for f in os.listdir(tmp_path / "sub")] == [face_box.SCALER_FILE]  # no temp left
  with pytest.raises(ValueError, match="no FLIC face scaler.*train split"):
    face_box.load_scaler(str(tmp_path / "missing.json"))
  (tmp_path / "bad.json").write_text(json.dumps({"offset": [1, 2], "scale": [1, -1]}))
  with pytest.raises(ValueError, match=r"scale must be 2 finite numbers > 0"):
    face_box.load_scaler(str(tmp_path / "bad.json"))
  (tmp_path / "torn.json").write_text('{"offset": [1,')
  with pytest.raises(ValueError, match="not a readable face scaler"):
    face_box.load_scaler(str(tmp_path / "torn.json"))


def test_prepare_checks_flic_box_without_opencv(tmp_path):
  with pytest.raises(ValueError, match=r"unknown flic_box 'head'.*'torso', 'face'"):
    prepare.prepare("flic", str(tmp_path), source=str(tmp_path), flic_box="head")
  with pytest.raises(ValueError, match=r"flic_box='face' applies to dataset 'flic' only"):
    prepare.prepare("lsp", str(tmp_path), source=str(tmp_path), flic_box="face")


def test_unknown_box_and_missing_opencv_are_clear(monkeypatch, tmp_path):
  with pytest.raises(ValueError, match=r"unknown FLIC box 'head'.*'torso', 'face', 'none'"):
    flic.read_flic(str(tmp_path), "train", box="head")
  monkeypatch.setitem(__import__("sys").modules, "cv2", None)  # as if not installed
  with pytest.raises(ImportError, match=r'pip install "deeppose_tf\[face\]"'):
    face_box.import_cv2()
  with pytest.raises(ImportError, match="optional extra"):  # eagerly, before any record
    flic.read_flic(str(tmp_path), "train", box="face")


# ------------------------------------------------------------------- the detector (cv2)

def _jpeg(array) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, "JPEG", quality=92)
  return buf.getvalue()


def _hopper_frame(left=300, top=60, height=200):
  """A 720 x 480 frame with matplotlib's bundled Grace Hopper portrait pasted in it."""
  import matplotlib.cbook
  try:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
  except Exception as e:  # pylint: disable=broad-except
    pytest.skip(f"matplotlib's sample image grace_hopper.jpg is not available ({e})")
  portrait = Image.open(path).convert("RGB")  # 512 x 600, face near (150, 100, 230, 230)
  width = round(portrait.width * height / portrait.height)
  frame = Image.new("RGB", (720, 480), (90, 100, 110))
  frame.paste(portrait.resize((width, height), Image.BILINEAR), (left, top))
  return _jpeg(np.asarray(frame)), height / portrait.height


def test_detect_face_finds_nothing_in_noise():
  need_cv2()
  rng = np.random.default_rng(0)
  assert face_box.detect_face(_jpeg(rng.integers(0, 256, (480, 720, 3), np.uint8))) is None
  assert face_box.detect_face(_jpeg(np.full((480, 720), 128, np.uint8))) is None
  assert face_box.detect_face(_jpeg(rng.integers(0, 256, (20, 30, 3), np.uint8))) is None


def test_detect_face_finds_a_real_face():
  need_cv2()
  data, s = _hopper_frame(left=300, top=60)
  face = face_box.detect_face(data)
  assert face is not None
  x, y, w, h = face
  # The portrait's face, about (150, 100, 230, 230) at full size, scaled and moved.
  np.testing.assert_allclose((x + w / 2, y + h / 2), (300 + 265 * s, 60 + 215 * s), atol=12)
  assert 0.7 * 230 * s < w < 1.3 * 230 * s
  assert face_box._get_detector() is face_box._get_detector()  # loaded once per process


def test_detect_face_names_undecodable_bytes():
  need_cv2()
  with pytest.raises(ValueError, match=r"record 'flic/0001'.*decode"):
    face_box.detect_face(b"not an image", "flic/0001")


# --------------------------------------------------------------- the FLIC reader (cv2)

def _flic_dir(root, hopper=False):
  """Three train and one test example on tiny noise images; with hopper, example 2 is a
  720 x 480 frame with a real face and joints hanging below it."""
  examples = [
      fm.flic_example("a-1.jpg", fm.flic_coords(0), (3, 4, 13, 18), istrain=True),
      fm.flic_example("a-2.jpg", fm.flic_coords(1), (2, 2, 20, 10), istrain=True),
      fm.flic_example("a-1.jpg", fm.flic_coords(2), (5, 5, 9, 9), istrain=True),
      fm.flic_example("b-7.png", fm.flic_coords(3), (1, 1, 30, 20), istrain=False),
  ]
  if hopper:
    coords = fm.flic_coords(4, width=200, height=150) + np.array([[300.0], [140.0]])
    examples[1] = fm.flic_example("a-2.jpg", coords, (300, 150, 500, 300), istrain=True)
  fm.write_flic_folder(root, examples)
  if hopper:
    data, _ = _hopper_frame()
    with open(os.path.join(root, "images", "a-2.jpg"), "wb") as f:
      f.write(data)
  return examples


def test_flic_face_box_falls_back_to_the_torso_box_and_counts_it(tmp_path):
  need_cv2()
  root = str(tmp_path / "flic")
  _flic_dir(root)
  torso = {r.image_id: r.box for r in flic.read_flic(root, "train")}
  scaler_path = str(tmp_path / "out" / face_box.SCALER_FILE)
  stats = {}
  train = list(flic.read_flic(root, "train", box="face", face_scaler=scaler_path,
                              box_stats=stats))
  assert len(train) == 3
  for r in train:  # 30 x 20 noise images hold no face
    np.testing.assert_array_equal(r.box, torso[r.image_id])
  assert stats["box"] == "face"
  assert (stats["face_found"], stats["fallback_torso"]) == (0, 3)
  saved = face_box.load_scaler(scaler_path)
  assert not face_box.is_fitted(saved) and saved["num_faces"] == 0
  assert saved == stats["face_scaler"]
  stats = {}
  test = list(flic.read_flic(root, "test", box="face", face_scaler=scaler_path,
                             box_stats=stats))
  assert (stats["face_found"], stats["fallback_torso"]) == (0, 1) and test[0].box is not None
  with pytest.raises(ValueError, match="test split needs face_scaler"):
    flic.read_flic(root, "test", box="face")
  with pytest.raises(ValueError, match="no FLIC face scaler"):
    flic.read_flic(root, "test", box="face", face_scaler=str(tmp_path / "none.json"))
  plain = {}
  list(flic.read_flic(root, "train", box_stats=plain))
  assert plain == {"box": "torso"}


def test_flic_face_box_from_a_detected_face(tmp_path):
  need_cv2()
  root = str(tmp_path)
  _flic_dir(root, hopper=True)
  stats = {}
  train = list(flic.read_flic(root, "train", box="face", box_stats=stats))
  assert (stats["face_found"], stats["fallback_torso"]) == (1, 2)
  scaler = stats["face_scaler"]
  assert scaler["num_faces"] == 1 and scaler["coverage"] == 1.0
  assert scaler["detector"]["cascade"] == face_box.CASCADE_FILE
  r = train[1]
  face = face_box.detect_face(r.image)
  np.testing.assert_allclose(r.box, face_box.face_to_person_box(face, scaler))
  xy = r.joints[r.visible > 0]
  assert np.all(np.abs(xy - r.box[:2]) <= r.box[2:] / 2 + 1e-3)  # all joints inside
  assert not np.allclose(r.box, (399.5, 224.5, 200, 150))  # not the torso box
  # The test split maps faces with the train scaler (here: none found -> torso).
  stats = {}
  list(flic.read_flic(root, "test", box="face", face_scaler=scaler, box_stats=stats))
  assert stats["fallback_torso"] == 1 and stats["face_scaler"] is scaler


def test_prepare_flic_face_box_writes_counts_and_scaler(tmp_path):
  need_cv2()
  source, output = str(tmp_path / "flic"), str(tmp_path / "records")
  _flic_dir(source)
  counts = prepare.prepare("flic", output, source=source, num_shards=1, flic_box="face")
  assert counts == {"train": 3, "test": 1}
  from deeppose_tf.data import records
  train, test = records.read_meta(output, "train"), records.read_meta(output, "test")
  assert (train["box"], train["face_found"], train["fallback_torso"]) == ("face", 0, 3)
  assert (test["box"], test["face_found"], test["fallback_torso"]) == ("face", 0, 1)
  assert train["face_scaler"] == face_box.load_scaler(
      os.path.join(output, face_box.SCALER_FILE))
