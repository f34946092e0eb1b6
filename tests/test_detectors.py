"""Tests of the person-detector registry (deeppose_tf.predict.detectors) through the real LiteRT
interpreter: BlazePose and MoveNet on real LSPET photos (the files are not part of the
package: those tests skip where ../shared is missing; DEEPPOSE_SHARED moves it), an SSD-style
file built here with TF's converter, and bad files named."""

import os

import numpy as np
import pytest
from PIL import Image

from deeppose_tf.predict import detectors as D
from helpers import REPO, SHARED, need_shared

BLAZEPOSE = os.path.join(SHARED, "detectors", "blazepose_pose_detection.tflite")
MOVENET = os.path.join(SHARED, "detectors", "movenet_multipose_lightning_fp16.tflite")
LSPET = os.path.join(SHARED, "data", "lspet")


def _need(path):
  return need_shared(path, "detectors/ and data/lspet/")


@pytest.fixture(scope="module")
def blazepose():
  return D.make_detector("blazepose", _need(BLAZEPOSE))


@pytest.fixture(scope="module")
def movenet():
  return D.make_detector("movenet", _need(MOVENET))


@pytest.fixture(scope="module")
def photos():
  """10 LSPET photos of its train split (not the val photos the defaults were tuned on):
  [(image uint8 (h, w, 3), joints (14, 2) image px, visible (14,) bool)]."""
  import scipy.io
  from deeppose_tf.data import lsp
  from deeppose_tf.data.matlab import matlab_to_pixels
  path = os.path.join(_need(LSPET), "joints.mat")
  joints = scipy.io.loadmat(path)["joints"]  # (14, 3, N): joint, (x, y, flag), image
  out = []
  for i in lsp.lspet_split_indices(joints.shape[2], "train")[:10]:
    image = np.asarray(Image.open(os.path.join(LSPET, "images", f"im{i + 1:05d}.jpg"))
                       .convert("RGB"))
    out.append((image, matlab_to_pixels(joints[:, :2, i]).astype(np.float32),
                joints[:, 2, i] == 1))
  return out


def _held(box, joints, visible):
  """Fraction of the annotated joints inside box (cx, cy, w, h)."""
  pts = joints[visible]
  inside = np.all(np.abs(pts - box[:2]) <= box[2:] / 2, axis=1)
  return inside.mean()


def _check_output(boxes, scores):
  assert boxes.dtype == np.float32 and scores.dtype == np.float32
  assert boxes.ndim == 2 and boxes.shape[1] == 4 and scores.shape == (len(boxes),)
  assert np.all(np.diff(scores) <= 0), "best first"
  assert np.all(boxes[:, 2:] > 0)


# ------------------------------------------------------------------- real photos, real models

@pytest.mark.parametrize("name", ["blazepose", "movenet"])
def test_finds_the_person_in_real_photos(name, photos, request):
  """The best box, grown by the default, holds >= 80% of the annotated joints in >= 7 of 10
  photos (measured on val: the best box holds every joint in ~85%)."""
  det = request.getfixturevalue(name)
  good = 0
  for image, joints, visible in photos:
    boxes, scores = det.detect(image)
    _check_output(boxes, scores)
    if len(boxes) and _held(boxes[0], joints, visible) >= 0.8:
      good += 1
  assert good >= 7, f"{name}: the best box held the person in only {good} of 10 photos"


def two_people(movenet, photos):
  """Two photos whose person MoveNet finds surely alone, scaled to one height and pasted side
  by side on a grey canvas: (canvas uint8, [(joints (14, 2) canvas px, visible (14,))],
  [(centre (2,), extent)] of each person's annotated joints)."""
  people = []
  for image, joints, visible in photos:  # photos whose person MoveNet finds surely alone
    boxes, scores = movenet.detect(image)
    if len(boxes) and scores[0] >= 0.4 and _held(boxes[0], joints, visible) == 1.0:
      people.append((image, joints, visible))
    if len(people) == 2:
      break
  assert len(people) == 2
  height, gap = 240, 40
  scaled = []
  for image, joints, visible in people:
    s = height / image.shape[0]
    size = (max(1, round(image.shape[1] * s)), height)
    scaled.append((np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)),
                   joints * s, visible))
  canvas = np.full((height, sum(p[0].shape[1] for p in scaled) + gap, 3), 128, np.uint8)
  x = 0
  centres, poses = [], []
  for image, joints, visible in scaled:
    canvas[:, x:x + image.shape[1]] = image
    pts = joints[visible] + [x, 0]
    centres.append(((pts.min(0) + pts.max(0)) / 2, np.ptp(pts, axis=0).max()))
    poses.append((joints + np.float32([x, 0]), visible))
    x += image.shape[1] + gap
  return canvas, poses, centres


def test_movenet_finds_two_people_side_by_side(movenet, photos):
  """Two people side by side: a box near each person (its centre within half the person's
  extent of theirs), distinct boxes."""
  canvas, _, centres = two_people(movenet, photos)
  boxes, scores = movenet.detect(canvas)
  _check_output(boxes, scores)
  assert len(boxes) >= 2
  used = set()
  for centre, extent in centres:
    dist = np.linalg.norm(boxes[:, :2] - centre, axis=1)
    near = [i for i in np.argsort(dist) if dist[i] < 0.5 * extent and i not in used]
    assert near, f"no box near the person at {centre}: boxes {boxes.round()}"
    used.add(near[0])


@pytest.mark.parametrize("name", ["blazepose", "movenet", "hog"])
def test_blank_image_gives_nothing(name, request):
  if name == "hog":
    pytest.importorskip("cv2", reason="opencv-python-headless runs the HOG detector")
    det = D.make_detector("hog")
  else:
    det = request.getfixturevalue(name)
  for shape in [(240, 320, 3), (300, 200, 3)]:
    boxes, scores = det.detect(np.full(shape, 128, np.uint8))
    assert boxes.shape == (0, 4) and scores.shape == (0,)


@pytest.mark.parametrize("name", ["blazepose", "movenet"])
def test_padding_a_photo_does_not_move_its_boxes(name, photos, request):
  """Letterbox and padding are undone: the photo padded to a square on its right (portrait)
  or bottom (landscape) keeps its longer side, so the person is seen at the same scale and the
  best box stays put (to a few % of its size); padded to twice its longer side on the right
  (the person seen at half the scale), it stays within 10%."""
  det = request.getfixturevalue(name)
  checked = 0
  for image, joints, visible in photos:
    boxes, _ = det.detect(image)
    if not len(boxes) or _held(boxes[0], joints, visible) < 0.8:
      continue
    h, w = image.shape[:2]
    side = max(h, w)
    for size, tol in (((side, side), 0.04), ((h, w + side), 0.1)):
      canvas = np.full(size + (3,), 128, np.uint8)
      canvas[:h, :w] = image
      moved, _ = det.detect(canvas)
      assert len(moved), f"{name}: nobody found in the padded {size} photo"
      best = moved[np.argmin(np.linalg.norm(moved[:, :2] - boxes[0, :2], axis=1))]
      scale = boxes[0, 2:].max()
      np.testing.assert_allclose(best[:2], boxes[0, :2], atol=tol * scale)
      np.testing.assert_allclose(best[2:], boxes[0, 2:], atol=tol * scale)
    checked += 1
    if checked == 2:
      break
  assert checked == 2


def test_growth_and_threshold_are_applied(movenet, photos):
  image = photos[0][0]
  boxes, scores = movenet.detect(image)
  raw, raw_scores = movenet.select(movenet.candidates(image), movenet.score_threshold)
  grown = D.grow_boxes(raw, D.MOVENET_GROWTH)
  # By default each grown box becomes the square of its longer side, about its centre.
  np.testing.assert_allclose(boxes, D.square_boxes(grown), rtol=1e-6)
  np.testing.assert_allclose(boxes[:, :2], grown[:, :2], rtol=1e-6)
  np.testing.assert_allclose(boxes[:, 2], np.maximum(grown[:, 2], grown[:, 3]), rtol=1e-6)
  np.testing.assert_array_equal(boxes[:, 2], boxes[:, 3])
  np.testing.assert_array_equal(scores, raw_scores)
  kept = D.make_detector("movenet", MOVENET, square=False)
  np.testing.assert_allclose(kept.detect(image)[0], grown, rtol=1e-6)
  strict = D.make_detector("movenet", MOVENET, score_threshold=0.99, growth=1.0)
  assert len(strict.detect(image)[0]) == 0


# ----------------------------------------------------------------- ssd: a real file, built here

_SSD_BOXES = [[0.1, 0.2, 0.9, 0.5],    # person .9: kept
              [0.0, 0.0, 1.0, 1.0],    # class 2 .95: not a person
              [0.5, 0.5, 0.6, 0.6],    # person .3: under the threshold
              [0.12, 0.22, 0.88, 0.5],  # person .8: the same person as row 0 (NMS)
              [0.2, 0.7, 0.6, 0.9],    # person .7: kept, second
              [0.3, 0.3, 0.4, 0.4]]    # person .99: beyond the count (5)
_SSD_CLASSES = [0, 2, 0, 0, 0, 0]
_SSD_SCORES = [0.9, 0.95, 0.3, 0.8, 0.7, 0.99]


@pytest.fixture(scope="module")
def ssd_files(tmp_path_factory):
  """Two real TFLite files with the detection-postprocess outputs: 'named' (uint8 input,
  outputs named detection_boxes, ... in a shuffled order) and 'unnamed' (float32 input,
  outputs in the order scores, boxes, count, classes with no telling names). The first
  score follows the input's mean so that the input's scaling shows."""
  import tensorflow as tf

  d = tmp_path_factory.mktemp("ssd")
  boxes = tf.constant([_SSD_BOXES], tf.float32)
  classes = tf.constant([_SSD_CLASSES], tf.float32)
  count = tf.constant([5.0])

  def scores_of(mean):  # row 0's score: the mean input in [0, 1]; others fixed
    return tf.concat([tf.reshape(tf.clip_by_value(mean, 0.0, 1.0), [1, 1]),
                      tf.constant([_SSD_SCORES[1:]], tf.float32)], 1)

  class Ssd(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([1, 32, 48, 3], tf.uint8)])
    def named(self, x):
      mean = tf.reduce_mean(tf.cast(x, tf.float32)) / 255.0
      z = 0.0 * mean
      return {"num_detections": count + z, "detection_scores": scores_of(mean),
              "detection_classes": classes + z, "detection_boxes": boxes + z}

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
    def unnamed(self, x):
      mean = tf.reduce_mean(x)  # [-1, 1]: black -1, white 1
      z = 0.0 * mean
      return scores_of(mean), boxes + z, count + z, classes + z

  module = Ssd()
  out = {}
  for name in ("named", "unnamed"):
    fn = getattr(module, name).get_concrete_function()
    path = str(d / f"{name}.tflite")
    with open(path, "wb") as f:
      f.write(tf.lite.TFLiteConverter.from_concrete_functions([fn], module).convert())
    out[name] = path
  return out


@pytest.mark.parametrize("kind", ["named", "unnamed"])
def test_ssd_decodes_person_boxes_to_pixels(ssd_files, kind):
  # Decoding, before the squaring (square=False; the default squares, tested above).
  det = D.make_detector("ssd", ssd_files[kind], growth=1.0, square=False)
  h, w = 100, 200  # another aspect than the model's input: boxes are normalised per axis
  white = np.full((h, w, 3), 255, np.uint8)
  boxes, scores = det.detect(white)
  _check_output(boxes, scores)
  # rows 0 and 4: person, >= 0.5, within the count; row 3 merged into row 0 by NMS.
  np.testing.assert_allclose(scores, [1.0, 0.7], atol=1e-6)
  np.testing.assert_allclose(boxes, [[70, 50, 60, 80], [160, 40, 40, 40]], atol=1e-3)
  # The input's scaling reaches the model: black makes row 0's score 0, so row 3 is kept.
  boxes, scores = det.detect(np.zeros((h, w, 3), np.uint8))
  np.testing.assert_allclose(scores, [0.8, 0.7], atol=1e-6)
  np.testing.assert_allclose(boxes[0], [72, 50, 56, 76], atol=1e-3)
  # Another class, another threshold, the default growth.
  cars = D.make_detector("ssd", ssd_files[kind], person_class=2, growth=1.0, square=False)
  np.testing.assert_allclose(cars.detect(white)[0], [[100, 50, 200, 100]], atol=1e-3)
  low = D.make_detector("ssd", ssd_files[kind], score_threshold=0.2, growth=1.0,
                        square=False)
  assert len(low.detect(white)[0]) == 3  # row 2 (0.3) joins
  grown = D.make_detector("ssd", ssd_files[kind], square=False)
  np.testing.assert_allclose(grown.detect(white)[0][0],
                             [70, 50, 60 * D.SSD_GROWTH, 80 * D.SSD_GROWTH], atol=1e-3)
  square = D.make_detector("ssd", ssd_files[kind])
  np.testing.assert_allclose(square.detect(white)[0][0],
                             [70, 50, 80 * D.SSD_GROWTH, 80 * D.SSD_GROWTH], atol=1e-3)


# ------------------------------------------------------------------------- bad names and files

def test_unknown_detector_lists_the_known_ones():
  with pytest.raises(ValueError, match="blazepose, hog, movenet, ssd"):
    D.make_detector("yolo")
  assert set(D.DETECTORS) == {"hog", "blazepose", "movenet", "ssd"}


@pytest.mark.parametrize("name", ["blazepose", "movenet", "ssd"])
def test_a_model_file_is_required(name):
  with pytest.raises(ValueError, match="--detector_model"):
    D.make_detector(name)
  with pytest.raises(ValueError, match="no such file"):
    D.make_detector(name, "/nonexistent/model.tflite")


@pytest.mark.parametrize("name", ["blazepose", "movenet", "ssd"])
def test_a_file_that_is_not_tflite_is_named(name, tmp_path):
  path = tmp_path / "notes.tflite"
  path.write_text("this is not a model\n" * 20)
  with pytest.raises(ValueError, match=f"{path}.*not a TFLite model"):
    D.make_detector(name, str(path))


def test_a_model_of_another_kind_is_named(ssd_files):
  wrong = [("blazepose", ssd_files["named"]), ("movenet", ssd_files["unnamed"])]
  if os.path.exists(MOVENET) and os.path.exists(BLAZEPOSE):  # else only the SSD files
    wrong += [("blazepose", MOVENET), ("movenet", BLAZEPOSE), ("ssd", BLAZEPOSE)]
  for name, path in wrong:
    with pytest.raises(ValueError, match=f"{path} is not a {name} detector"):
      D.make_detector(name, path)


def test_options_a_detector_does_not_take_are_refused():
  with pytest.raises(ValueError, match="takes no model file"):
    D.make_detector("hog", MOVENET)
  with pytest.raises(ValueError, match="only movenet"):
    D.make_detector("blazepose", BLAZEPOSE, input_size=320)
  with pytest.raises(ValueError, match="growth"):
    D.make_detector("movenet", MOVENET, growth=0)
  with pytest.raises(ValueError, match="multiple of 32"):
    D.make_detector("movenet", _need(MOVENET), input_size=300)


# ------------------------------------------------------------------------------ pure helpers

def test_nms_groups_overlapping_boxes_best_first():
  boxes = np.array([[10, 10, 10, 10], [11, 10, 10, 10], [50, 50, 10, 10], [10, 11, 10, 10]],
                   np.float32)
  scores = np.array([0.5, 0.9, 0.7, 0.1], np.float32)
  groups = D.nms(boxes, scores, 0.5)
  assert [g.tolist() for g in groups] == [[1, 0, 3], [2]]
  assert D.nms(np.zeros((0, 4)), np.zeros(0), 0.5) == []


def test_movenet_at_two_sizes_keeps_the_people_of_each(photos):
  """--detector_input_size=256,512: every person found at either size alone is in the merged
  output (a box overlapping it), and no two merged boxes are one person (NMS across sizes)."""
  from deeppose_tf.predict.detect import iou
  single = {s: D.make_detector("movenet", _need(MOVENET), input_size=s) for s in (256, 512)}
  both = D.make_detector("movenet", _need(MOVENET), input_size=[256, 512])
  assert both.input_sizes == (256, 512)
  small = np.full((900, 900, 3), 128, np.uint8)  # a person small in the frame
  image = photos[0][0]
  small[:image.shape[0] // 3 * 1, :image.shape[1] // 3] = image[::3, ::3][:image.shape[0] // 3,
                                                                         :image.shape[1] // 3]
  for picture in [p[0] for p in photos[:4]] + [small]:
    boxes, scores = both.detect(picture)
    _check_output(boxes, scores)
    for s, det in single.items():
      for b in det.detect(picture)[0]:
        assert len(boxes) and iou(boxes, b[None]).max() > 0.3, (s, b, boxes)
    if len(boxes) > 1:
      overlap = iou(boxes, boxes)[np.triu_indices(len(boxes), 1)]
      assert overlap.max() <= 0.75, overlap  # hard NMS at 0.5 before growth and squaring
  # The bench's synthetic person: a loose box at 256 px around a tight one at 512 px (IoU 0.45)
  # is one person, not two.
  from deeppose_tf.bench.detector import _small_person_image
  assert len(both.detect(_small_person_image())[0]) == 1
  with pytest.raises(ValueError, match="multiple of 32"):
    D.make_detector("movenet", _need(MOVENET), input_size=[256, 300])


def test_a_box_inside_a_better_one_is_the_same_person():
  boxes = np.array([[50, 50, 20, 40], [52, 60, 30, 60], [150, 50, 20, 40]], np.float32)
  np.testing.assert_array_equal(D._not_contained(boxes, 0.8), [True, False, True])
  np.testing.assert_array_equal(D._not_contained(boxes, 1.0), [True, True, True])


def test_match_person_picks_the_box_over_the_annotated_joints():
  from deeppose_tf.predict.detect import match_person
  boxes = np.array([[20, 20, 30, 30], [100, 50, 40, 80], [100, 50, 200, 200]], np.float32)
  joints = np.array([[90, 20], [110, 80], [np.nan, np.nan], [0, 0]], np.float32)
  visible = np.array([1, 1, 0, 0], np.float32)  # the NaN and the far one are unannotated
  assert match_person(boxes, joints, visible) == 1  # the tight box, not the big one around it
  assert match_person(boxes[:1], joints, visible) == 0  # one box: nothing to choose
  assert match_person(boxes, joints, np.array([1, 0, 0, 0])) == 0  # one joint: no extent
  assert match_person(boxes[[2, 0]], joints, visible) == 0  # the only one overlapping


@pytest.mark.slow  # 7 s: the default run stays under 10 minutes
def test_evaluate_scores_the_matched_person_of_a_two_person_photo(movenet, photos, tmp_path):
  """evaluate --boxes=detect on a record of two people side by side whose annotation is the
  person MoveNet does not rank first: --detector_pick=top scores the other person's box (it
  holds not every annotated joint), match the annotated person's (it holds them all)."""
  import io
  from deeppose_tf import evaluate
  from deeppose_tf.data import records
  from helpers import tiny_predict_workdir
  canvas, poses, _ = two_people(movenet, photos)
  boxes, _ = movenet.detect(canvas)
  assert len(boxes) >= 2
  second = [p for p in poses if _held(boxes[0], *p) < 1.0]
  assert second, "both people inside the best box: the test needs them apart"
  joints, visible = second[0]
  buf = io.BytesIO()
  Image.fromarray(canvas).save(buf, "PNG")
  data = str(tmp_path / "data")
  records.write_split([records.PoseRecord("two/0", buf.getvalue(), joints.astype(np.float32),
                                          visible.astype(np.float32))],
                      data, "val", 14, num_shards=1, meta={"skeleton": "lsp14"})
  workdir = tiny_predict_workdir(str(tmp_path / "w"))
  from deeppose_tf import workdir as workdir_lib
  workdir_lib.write_mean_pose(workdir, np.zeros((14, 2), np.float32))  # evaluate's baseline
  got = {pick: evaluate.run(workdir, "val", data, boxes="detect", detector=movenet,
                            detector_pick=pick, num_examples=0,
                            report_dir=str(tmp_path / pick))["detector"]
         for pick in ("top", "match")}
  assert got["top"]["found"] == got["match"]["found"] == 1.0
  assert got["top"]["recall"] == 0.0 and got["top"]["not_top"] == 0.0
  assert got["match"]["recall"] == 1.0 and got["match"]["not_top"] == 1.0
  assert got["match"]["pick"] == "match"
  with pytest.raises(ValueError, match="needs --boxes=detect"):
    evaluate.run(workdir, "val", data, boxes="split", detector_pick="match")


def test_blazepose_anchors_are_mediapipes():
  a = D.blazepose_anchors(224)
  assert a.shape == (2254, 2)
  np.testing.assert_allclose(a[:2], [[0.5 / 28, 0.5 / 28]] * 2)  # 2 per cell, 28 x 28
  np.testing.assert_allclose(a[1568], [0.5 / 14, 0.5 / 14])  # then 14 x 14
  np.testing.assert_allclose(a[1960:1966], [[0.5 / 7, 0.5 / 7]] * 6)  # 6 per cell, 7 x 7
  np.testing.assert_allclose(a[-1], [6.5 / 7, 6.5 / 7])


@pytest.mark.slow  # about 30 s: the predict command with the bundled model
@pytest.mark.parametrize("boxes", [None, pytest.param("detect_auto", marks=pytest.mark.slow)])
def test_predict_gives_each_of_two_people_their_own_pose(movenet, photos, tmp_path, boxes):
  """`predict --detector=movenet --detector_model=...` (which makes --boxes=detect the
  default; or --boxes=detect_auto, each detected box then framed by its pose) on two people
  side by side: two records, people 0 and 1, and each person's annotated joints are nearer
  one of the two poses than the other (each pose scored against its own person)."""
  import json
  import subprocess
  import sys
  from helpers import subprocess_env
  from deeppose_tf.skeleton import LSP14
  canvas, poses, centres = two_people(movenet, photos)
  photo = str(tmp_path / "two.png")
  Image.fromarray(canvas).save(photo)
  out = str(tmp_path / "out")
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.predict", photo, f"--output={out}",
                        "--detector=movenet", f"--detector_model={MOVENET}"]
                       + ([f"--boxes={boxes}"] if boxes else []),
                       capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
                       timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  recs = [json.loads(line) for line in open(os.path.join(out, "predictions.jsonl"))]
  assert [r["person"] for r in recs][:2] == [0, 1]
  found = np.asarray([[r["joints"][n] for n in LSP14.joints] for r in recs], np.float32)
  taken = set()
  for (joints, visible), (_, extent) in zip(poses, centres):
    err = np.linalg.norm(found[:, visible] - joints[visible], axis=-1).mean(-1)  # per record
    best = int(np.argmin(err))
    assert best not in taken and err[best] < 0.25 * extent, (err, extent)
    taken.add(best)
  assert os.path.exists(os.path.join(out, "two.pose.jpg"))
  if boxes == "detect_auto":  # the boxes are the poses' framings, not the detector's
    boxes_out = np.asarray([r["box"] for r in recs], np.float32)
    detected = D.make_detector("movenet", MOVENET).detect(canvas)[0][:len(recs)]
    assert not np.allclose(boxes_out, detected, atol=1.0), (boxes_out, detected)


@pytest.mark.slow  # 25 s: a bench run with every detector at hand
def test_bench_detect_section_times_each_detector_against_full_and_auto(tmp_path):
  """`bench --only=detect`: each detector's ms per image and predict's images/s with it,
  with ratios against --boxes=full measured in the same run (a tiny pose model)."""
  pytest.importorskip("cv2", reason="the hog detector needs OpenCV (the [face] extra)")
  from deeppose_tf import bench
  from helpers import tiny_predict_workdir
  specs = ["hog"] + ([f"movenet:{MOVENET}", f"movenet@320:{MOVENET}"]
                     if os.path.exists(MOVENET) else [])
  work = tiny_predict_workdir(str(tmp_path / "w"))
  report = bench.run(["detect"], detectors=specs, models=(work,), min_time=0.02,
                     matmul_n=64)
  out = report.to_json()["detect"]
  assert out["full"]["images_per_s"] > 0
  assert out["auto"]["images_per_s"] > 0 and out["auto"]["x_full"] > 0
  for spec in specs:
    entry = out[spec.split(":")[0]]
    assert entry["detector_ms"] > 0 and entry["images_per_s"] > 0 and entry["x_full"] > 0
  assert "detector hog: time per image" in report.table()
  if len(specs) > 1:  # the input size reaches the detector, and its entry is its own
    assert out["movenet@320"]["input_size"] == [320] and out["movenet"]["input_size"] is None
  with pytest.raises(ValueError, match="'yolo' is not a known person detector"):
    bench.run(["detect"], detectors=["yolo"])
  with pytest.raises(ValueError, match="must be a whole number"):
    bench.run(["detect"], detectors=["movenet@big:x.tflite"])
  from deeppose_tf.bench.detector import parse_detectors
  assert parse_detectors(["movenet@256+512:m.tflite"]) == [("movenet", "m.tflite", (256, 512))]
