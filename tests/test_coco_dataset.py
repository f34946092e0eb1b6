"""Your own data as COCO keypoints (issue 24): a custom skeleton read from the file's
category, several people per image, crowd and unlabelled entries skipped and counted, the
skeleton travelling with the model (config.json, SavedModel, TFLite sidecar, predict's
output), and COCO's OKS AP beside PCP."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import coco_fixture
from deeppose_tf import coco_eval, geometry
from deeppose_tf import skeleton as skeleton_lib
from deeppose_tf.data import coco, datasets, prepare, records
from deeppose_tf.skeleton import LSP14, Skeleton
from helpers import REPO, subprocess_env

COCO17 = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
          "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
          "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
COCO17_EDGES = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7],
                [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
                [4, 6], [5, 7]]
SIGMAS = "0.079,0.062,0.062,0.089,0.089"


def test_coco_category_gives_the_skeleton_from_its_names():
  cat = {"id": 1, "name": "person", "keypoints": COCO17, "skeleton": COCO17_EDGES}
  s = coco.category_skeleton(cat, "test")
  print(json.dumps(s.to_dict()))
  assert s.name == "coco:person" and s.joints == tuple(COCO17)
  assert s.diameter == ("left_shoulder", "right_hip")
  assert s.edges[0] == ("left_ankle", "left_knee")  # 1-based edges
  perm = s.flip_permutation
  assert [COCO17[i] for i in perm[:3]] == ["nose", "right_eye", "left_eye"]
  assert np.array_equal(perm[perm], np.arange(17))
  # PCP averages each limb with its mirror image.
  types = dict(s.pcp_average)
  assert types["ankle-knee"] == ("left_ankle-left_knee", "right_ankle-right_knee")
  # COCO's own sigmas by joint type.
  np.testing.assert_allclose(coco_eval.sigmas_for(s)[[0, 5, 15]], [0.026, 0.079, 0.089])
  assert Skeleton.from_dict(json.loads(json.dumps(s.to_dict()))) == s
  text = s.describe()
  assert "17 joints" in text and "left_eye:right_eye" in text and "left_shoulder to right_hip" in text


def test_side_styles_flags_and_refusals():
  s = Skeleton.build("x", ["Head", "hand_L", "hand_R", "L_Foot", "R_Foot"],
                     [("Head", "hand_L")], diameter=("Head", "L_Foot"))
  assert s.flip_permutation.tolist() == [0, 2, 1, 4, 3]
  assert s.joint_type("hand_R") == "hand"
  with pytest.raises(ValueError, match="no 'r_paw'.*--flip_pairs"):
    Skeleton.build("x", ["head", "l_paw", "tail"], [("head", "tail")], diameter=("head", "tail"))
  none = Skeleton.build("x", ["head", "l_paw", "tail"], [("head", "tail")], flip_pairs=[],
                        diameter=("head", "tail"))
  assert none.flip_permutation.tolist() == [0, 1, 2]
  with pytest.raises(ValueError, match="--torso"):
    Skeleton.build("x", ["a", "b"], [("a", "b")])
  with pytest.raises(ValueError, match="no joint 'c'"):
    Skeleton.build("x", ["a", "b"], [("a", "c")], diameter=("a", "b"))
  with pytest.raises(ValueError, match="sigmas"):
    Skeleton.build("x", ["a", "b"], [("a", "b")], diameter=("a", "b"), sigmas=[0.1])
  for bad in ([], "lsp", {"name": "x"}, {**LSP14.to_dict(), "joints": ["a", "a"]}):
    with pytest.raises(ValueError):
      skeleton_lib.resolve(bad)
  # Presets stay names where they are stored (older readers understand them).
  assert skeleton_lib.stored(LSP14) == "lsp14" and skeleton_lib.resolve("lsp14") is LSP14
  assert skeleton_lib.resolve(LSP14.to_dict()) is LSP14
  assert coco.FRAMING_GROW == geometry.FRAMING_GROW


@pytest.fixture(scope="module")
def coco_data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("coco_src"))
  path = coco_fixture.make(root)
  data_dir = str(tmp_path_factory.mktemp("coco_data"))
  counts = prepare.prepare("coco", data_dir, os.path.join(root, "images"), annotations=path,
                           coco_val=0.25, oks_sigmas=SIGMAS, torso="left_hand,right_foot")
  return root, path, data_dir, counts


def _read(data_dir, split, k):
  ds = tf.data.TFRecordDataset(records.list_shards(data_dir, split)).map(
      lambda s: records.parse(s, k))
  return [{key: v.numpy() for key, v in r.items()} for r in ds]


def test_prepare_writes_one_record_per_person_and_counts_the_skipped(coco_data):
  root, path, data_dir, counts = coco_data
  data = json.load(open(path))
  # 12 images, 2 people each; val is a quarter of the images with all their people.
  assert counts == {"train": 18, "val": 6}
  skel = datasets.skeleton_in(data_dir, "train")
  assert skel.joints == tuple(coco_fixture.JOINTS) and skel.name == "coco:figure"
  assert skel.sigmas == tuple(float(v) for v in SIGMAS.split(","))
  assert datasets.skeleton_of("coco", data_dir) == skel
  metas = [records.read_meta(data_dir, s) for s in ("train", "val")]
  assert sum(m["crowd"] for m in metas) == 1 and sum(m["no_keypoints"] for m in metas) == 1
  anns = {a["id"]: a for a in data["annotations"]}
  images = {im["id"]: im["file_name"] for im in data["images"]}
  seen_images = {}
  for split in ("train", "val"):
    for r in _read(data_dir, split, 5):
      name, aid = r["image_id"].decode().split("#")
      a = anns[int(aid)]
      assert images[a["image_id"]] == name
      seen_images.setdefault(name, set()).add(split)
      kp = np.asarray(a["keypoints"], np.float32).reshape(5, 3)
      np.testing.assert_array_equal(r["visible"], (kp[:, 2] > 0).astype(np.float32))
      np.testing.assert_allclose(r["joints"][kp[:, 2] > 0], kp[kp[:, 2] > 0, :2], atol=1e-4)
      x, y, w, h = a["bbox"]
      side = geometry.FRAMING_GROW * max(w, h)
      np.testing.assert_allclose(r["box"], [x + w / 2, y + h / 2, side, side], rtol=1e-5)
      assert r["area"] == pytest.approx(a["area"])
      with open(os.path.join(root, "images", name), "rb") as f:
        assert r["image"] == f.read()  # the original bytes
  # No photo is in both splits; both people of a photo stay together.
  assert all(len(s) == 1 for s in seen_images.values()) and len(seen_images) == 12


def test_keypoint_ap_is_pycocotools_oks_ap():
  rng = np.random.RandomState(0)
  j = rng.uniform(0, 100, (40, 14, 2))
  v = np.ones((40, 14))
  v[0, 3] = 0
  assert coco_eval.keypoint_ap(j, j, v, LSP14)["AP"] == pytest.approx(1.0)
  noisy = coco_eval.keypoint_ap(j + rng.normal(0, 3, j.shape), j, v, LSP14)["AP"]
  wrong = coco_eval.keypoint_ap(j + rng.normal(0, 30, j.shape), j, v, LSP14)["AP"]
  assert 1.0 > noisy > wrong >= 0.0
  # The stored area scales OKS: a larger person forgives the same pixel error more.
  err = j + 4.0
  small = coco_eval.keypoint_ap(err, j, v, LSP14, np.full(40, 200.0))["AP"]
  large = coco_eval.keypoint_ap(err, j, v, LSP14, np.full(40, 20000.0))["AP"]
  assert large > small


def test_tflite_files_carry_their_metadata_inside():
  """embed_metadata adds the export's facts to the flatbuffer and changes no output."""
  from ai_edge_litert.interpreter import Interpreter
  from deeppose_tf.export import tflite as tflite_export
  from deeppose_tf.tflite_cascade import read_embedded, read_model_meta
  src = os.path.join(REPO, "deeppose_tf", "models", "deeppose_lspet.tflite")
  with open(src, "rb") as f:
    data = f.read()
  meta = {"skeleton": coco.category_skeleton(
      {"id": 1, "name": "person", "keypoints": COCO17, "skeleton": COCO17_EDGES}, "t").to_dict(),
          "stages": 2}
  out = tflite_export.embed_metadata(data, meta)
  again = tflite_export.embed_metadata(out, {"stages": 3})  # replaced, not added twice
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    paths = []
    for i, blob in enumerate((data, out, again)):
      paths.append(os.path.join(d, f"m{i}.tflite"))
      with open(paths[-1], "wb") as f:
        f.write(blob)
    assert read_embedded(paths[1]) == meta and read_embedded(paths[2]) == {"stages": 3}
    assert read_model_meta(paths[1])["skeleton"]["joints"] == COCO17  # no sidecar there
    outs, image = [], None
    for p in paths[:2]:
      run = Interpreter(model_path=p).get_signature_runner("serving_default")
      if image is None:
        shape = run.get_input_details()["image"]["shape"]
        image = np.random.RandomState(0).uniform(0, 255, shape).astype(np.float32)
      outs.append(run(image=image, box=np.array([[150, 200, 220, 300]], np.float32))[
          "joints_per_stage"])
    np.testing.assert_array_equal(outs[0], outs[1])
    bad = os.path.join(d, "bad.tflite")
    with open(bad, "wb") as f:
      f.write(b"not a flatbuffer at all")
    with pytest.raises(ValueError, match="bad.tflite"):
      read_embedded(bad)


def _run(module, *args, timeout=900):
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                        text=True, env=subprocess_env(), cwd=REPO, timeout=timeout)


@pytest.mark.slow  # trains, evaluates, exports twice and predicts: about 3 minutes
def test_custom_skeleton_trains_evaluates_exports_and_predicts_with_its_names(
    coco_data, tmp_path):
  root, _, data_dir, _ = coco_data
  workdir = str(tmp_path / "w")
  run = _run("deeppose_tf.train", f"--workdir={workdir}", "--dataset=coco",
             f"--data_dir={data_dir}", "--input_size=67", "--num_stages=2",
             "--steps_per_stage=3", "--batch_size=4", "--draws=2", "--stats_images=0",
             "--eval_batch_size=8")
  assert run.returncode == 0, run.stderr[-3000:]
  config = json.load(open(os.path.join(workdir, "config.json")))
  assert config["skeleton"]["joints"] == coco_fixture.JOINTS
  report = json.load(open(os.path.join(workdir, "report.json")))
  assert report["num_images"] == 6
  for stage in report["stages"]:
    assert 0.0 <= stage["coco"]["AP"] <= 1.0 and stage["coco"]["sigmas"] == [
        float(v) for v in SIGMAS.split(",")]
  assert "COCO keypoint AP" in run.stdout

  lite = str(tmp_path / "figure.tflite")
  run = _run("deeppose_tf.export", f"--workdir={workdir}", f"--export_dir={lite}",
             "--format=tflite")
  assert run.returncode == 0, run.stderr[-3000:]
  # The .tflite file alone, without its sidecar json: its own metadata names the skeleton.
  alone = str(tmp_path / "alone" / "figure.tflite")
  os.makedirs(os.path.dirname(alone))
  shutil.copy(lite, alone)
  photo = os.path.join(root, "images", "img_000.jpg")
  for model in (os.path.join(workdir, "export", "1"), lite, alone, workdir):
    out = str(tmp_path / f"pred_{len(os.listdir(tmp_path))}")
    run = _run("deeppose_tf.predict", photo, f"--model={model}", f"--output={out}",
               "--boxes=full", "--coco")
    assert run.returncode == 0, (model, run.stderr[-3000:])
    recs = [json.loads(line) for line in open(os.path.join(out, "predictions.jsonl"))]
    assert list(recs[0]["joints"]) == coco_fixture.JOINTS, model
    assert recs[0]["model"]["skeleton"] == "coco:figure", model
    assert np.asarray(recs[0]["joints_per_stage"]).shape == (2, 5, 2)
    results = json.load(open(os.path.join(out, "keypoints_coco.json")))
    assert results["keypoints"] == coco_fixture.JOINTS
    assert len(results["annotations"][0]["keypoints"]) == 15
