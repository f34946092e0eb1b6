"""to_coco: a prepared split written out as COCO keypoints and prepared back gives the same
records (image bytes, joints, visible, box, area, order) and the same skeleton."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import coco_fixture
import fixtures_mat as fm
from deeppose_tf import skeleton as skeleton_lib
from deeppose_tf.data import coco, datasets, prepare, records, to_coco
from deeppose_tf.skeleton import LSP14
from helpers import REPO, random_records, subprocess_env

SIGMAS = "0.079,0.062,0.062,0.089,0.089"


def _records(data_dir, split="train"):
  k = records.read_meta(data_dir, split)["num_joints"]
  return list(to_coco.read_records(data_dir, split, k))


def _assert_same_records(a_dir, b_dir):
  a, b = _records(a_dir), _records(b_dir)
  assert len(a) == len(b) > 0
  for i, (x, y) in enumerate(zip(a, b)):
    where = f"record {i} ({x['image_id']!r} vs {y['image_id']!r})"
    assert x["image"] == y["image"], where
    for key in ("joints", "visible", "box", "has_box", "area", "height", "width"):
      np.testing.assert_array_equal(x[key], y[key], err_msg=f"{where}: {key}")


def _assert_same_skeleton(got, want):
  assert got.joints == want.joints and got.edges == want.edges
  np.testing.assert_array_equal(got.flip_permutation, want.flip_permutation)
  assert got.diameter == want.diameter
  assert got.limbs == want.limbs and got.pcp_average == want.pcp_average
  assert got.sigmas == want.sigmas
  assert got == want


def _prepare_coco(export_dir, data_dir, num_shards=2, **options):
  return prepare.prepare("coco", data_dir, os.path.join(export_dir, "images"),
                         annotations=os.path.join(export_dir, "annotations.json"),
                         coco_val=0.0, num_shards=num_shards, **options)


@pytest.fixture(scope="module")
def lsp_data(tmp_path_factory):
  """Prepared LSP: 9 train images from genuine-format .mat fixtures, the last 5 sharing
  one image's bytes (write_lsp_folder's `distinct`), one grayscale; 3 shards."""
  root = str(tmp_path_factory.mktemp("lsp_src"))
  fm.write_lsp_folder(root, fm.random_lsp_joints(9, seed=4), "lsp", digits=4,
                      grayscale=(1,), distinct=4)
  data_dir = str(tmp_path_factory.mktemp("lsp_data"))
  assert prepare.prepare("lsp", data_dir, source=root, num_shards=3)["train"] == 9
  return data_dir


def test_lsp_round_trip(lsp_data, tmp_path):
  export = str(tmp_path / "export")
  out = to_coco.to_coco(lsp_data, "train", export)
  assert out == {"records": 9, "images": 4,
                 "annotations": os.path.join(export, "annotations.json")}
  with open(out["annotations"]) as f:
    data = json.load(f)
  originals = _records(lsp_data)
  assert [r["image_id"].decode() for r in originals] == [f"lsp/im{i:04d}" for i in range(1, 10)]
  # One COCO image per distinct image bytes, its bytes untouched, named after its record.
  assert [im["file_name"] for im in data["images"]] == [
      f"lsp_im{i:04d}.jpg" for i in range(1, 5)]
  for im in data["images"]:
    with open(os.path.join(export, "images", im["file_name"]), "rb") as f:
      raw = f.read()
    first = next(r for r in originals if r["image"] == raw)
    assert (im["width"], im["height"]) == (first["width"], first["height"])
  assert sorted(os.listdir(os.path.join(export, "images"))) == sorted(
      im["file_name"] for im in data["images"])
  anns = data["annotations"]
  assert [a["id"] for a in anns] == list(range(1, 10))
  assert [a["image_id"] for a in anns] == [1, 2, 3, 4, 4, 4, 4, 4, 4]
  a = anns[0]
  assert a["deeppose_box"] is None and "area" not in a and a["iscrowd"] == 0
  assert a["bbox"] == [0.0, 0.0, originals[0]["width"], originals[0]["height"]]
  assert a["num_keypoints"] == 14 and a["keypoints"][2::3] == [2] * 14
  cat, = data["categories"]
  assert (cat["id"], cat["name"], cat["keypoints"]) == (1, "lsp14", list(LSP14.joints))
  assert cat["skeleton"][0] == [1, 2] and "sigmas" not in cat
  assert cat["deeppose_skeleton"] == LSP14.to_dict()

  back = str(tmp_path / "back")
  counts = _prepare_coco(export, back)
  assert counts == {"train": 9, "val": 0}
  _assert_same_records(lsp_data, back)
  _assert_same_skeleton(datasets.skeleton_in(back, "train"), LSP14)
  assert records.read_meta(back, "train")["skeleton"] == "lsp14"  # still the preset


def test_category_skeleton_prefers_deeppose_skeleton():
  cat = to_coco.category(LSP14)
  assert coco.category_skeleton(cat, "x") == LSP14
  # Without it, the names give what they can: same joints, edges, flip pairs and torso;
  # PCP limbs are then every edge.
  plain = {k: v for k, v in cat.items() if k != "deeppose_skeleton"}
  derived = coco.category_skeleton(plain, "x")
  assert derived.name == "coco:lsp14" and derived.edges == LSP14.edges
  np.testing.assert_array_equal(derived.flip_permutation, LSP14.flip_permutation)
  assert derived.diameter == LSP14.diameter and derived.limbs != LSP14.limbs
  # A flag means the user's own choice: the names and flags then, as for any file.
  assert coco.category_skeleton(cat, "x", torso="neck,head_top").diameter == (
      "neck", "head_top")
  bad = json.loads(json.dumps(cat))
  bad["keypoints"][0] = "r_foot"
  with pytest.raises(ValueError, match=r"x: its deeppose_skeleton has joints .*'r_ankle'.*"
                                       r"keypoints are .*'r_foot'.*remove 'deeppose_skeleton'"):
    coco.category_skeleton(bad, "x")
  bad = json.loads(json.dumps(cat))
  bad["deeppose_skeleton"]["diameter"] = ["neck", "nowhere"]
  with pytest.raises(ValueError, match=r"x: its deeppose_skeleton is damaged .*'nowhere'"):
    coco.category_skeleton(bad, "x")


def test_custom_coco_round_trip(tmp_path):
  src = str(tmp_path / "src")
  path = coco_fixture.make(src, num_images=4)
  first = str(tmp_path / "first")
  counts = prepare.prepare("coco", first, os.path.join(src, "images"), annotations=path,
                           coco_val=0.0, oks_sigmas=SIGMAS, torso="left_hand,right_foot",
                           num_shards=3)
  assert counts == {"train": 8, "val": 0}
  skeleton = datasets.skeleton_in(first, "train")
  assert skeleton.name == "coco:figure" and len(skeleton.sigmas) == 5

  export = str(tmp_path / "export")
  assert to_coco.to_coco(first, "train", export)["images"] == 4
  with open(os.path.join(export, "annotations.json")) as f:
    data = json.load(f)
  assert [im["file_name"] for im in data["images"]] == [f"img_{i:03d}.jpg" for i in range(4)]
  cat, = data["categories"]
  assert cat["name"] == "figure" and cat["sigmas"] == list(skeleton.sigmas)
  assert cat["skeleton"] == coco_fixture.EDGES
  a = data["annotations"][1]  # the second person: right foot not labelled
  assert a["keypoints"][-3:] == [0.0, 0.0, 0] and a["num_keypoints"] == 4
  assert len(a["deeppose_box"]) == 4 and a["area"] > 0

  again = str(tmp_path / "again")
  _prepare_coco(export, again)
  _assert_same_records(first, again)
  _assert_same_skeleton(datasets.skeleton_in(again, "train"), skeleton)
  # Exporting the round trip gives the same file (but for the records' ids).
  export2 = str(tmp_path / "export2")
  to_coco.to_coco(again, "train", export2)
  with open(os.path.join(export2, "annotations.json")) as f:
    data2 = json.load(f)
  for d in (data, data2):
    d.pop("info")
    for ann in d["annotations"]:
      ann.pop("deeppose_record")
  assert data2 == data


def test_refusals_overwrite_and_no_half_written_export(lsp_data, tmp_path, monkeypatch):
  out = tmp_path / "out"
  out.mkdir()  # an empty folder is fine
  to_coco.to_coco(lsp_data, "train", str(out))
  with pytest.raises(ValueError, match=r"out is not empty .*--overwrite"):
    to_coco.to_coco(lsp_data, "train", str(out))
  (out / "images" / "lsp_im0001.jpg").write_bytes(b"stale")
  to_coco.to_coco(lsp_data, "train", str(out), overwrite=True)
  assert (out / "images" / "lsp_im0001.jpg").read_bytes() != b"stale"
  other = tmp_path / "other"
  other.mkdir()
  (other / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match=r"holds \['notes.txt'\], not only an earlier export"):
    to_coco.to_coco(lsp_data, "train", str(other), overwrite=True)
  with pytest.raises(ValueError, match="holds --data_dir"):
    to_coco.to_coco(lsp_data, "train", os.path.dirname(lsp_data), overwrite=True)
  with pytest.raises(ValueError, match="no complete split 'nope'"):
    to_coco.to_coco(lsp_data, "nope", str(tmp_path / "x"))
  # A failure part-way leaves neither the output nor its temporary folder.
  calls = []

  def failing(data, image_id):
    calls.append(image_id)
    if len(calls) == 3:
      raise ValueError("boom")
    return ".jpg"

  monkeypatch.setattr(to_coco, "image_extension", failing)
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(ValueError, match="boom"):
    to_coco.to_coco(lsp_data, "train", str(tmp_path / "broken"))
  assert sorted(os.listdir(tmp_path)) == before


def test_file_stem():
  assert to_coco.file_stem("lsp/im0001") == "lsp_im0001"
  assert to_coco.file_stem("img_003.JPG#17") == "img_003"
  assert to_coco.file_stem("../../etc/passwd") == "etc_passwd"
  assert to_coco.file_stem("#3") == "image" and to_coco.file_stem("..") == "image"
  assert len(to_coco.file_stem("a" * 500)) == to_coco.MAX_STEM


def test_png_masked_joints_and_colliding_names(tmp_path):
  recs = random_records(4, seed=5, fmt="PNG")
  for r, rid in zip(recs, ["x/1", "x_1", "X_1#5", "lsp/im0001.png"]):
    r.image_id = rid
  recs[3].area = 0.0  # an area of 0 is still an area
  data_dir = str(tmp_path / "data")
  records.write_split(recs, data_dir, "train", 14, num_shards=3, meta={"skeleton": "lsp14"})
  export = str(tmp_path / "export")
  to_coco.to_coco(data_dir, "train", export)
  with open(os.path.join(export, "annotations.json")) as f:
    data = json.load(f)
  assert [im["file_name"] for im in data["images"]] == [
      "x_1.png", "x_1-2.png", "X_1-3.png", "lsp_im0001.png"]
  assert data["annotations"][0]["keypoints"][2::3].count(0) == 1  # one masked joint
  assert [("area" in a) for a in data["annotations"]] == [False, False, False, True]
  back = str(tmp_path / "back")
  _prepare_coco(export, back)
  _assert_same_records(data_dir, back)


@pytest.mark.slow  # two subprocesses importing TF: 10-25 s
def test_cli(lsp_data, tmp_path):
  out = str(tmp_path / "cli")
  cmd = [sys.executable, "-m", "deeppose_tf.data.to_coco", f"--data_dir={lsp_data}",
         "--split=train", f"--output={out}"]
  run = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
                       timeout=120)
  assert run.returncode == 0, run.stderr
  assert run.stdout.strip() == (f"train: 9 records, 4 images -> "
                                f"{os.path.join(out, 'annotations.json')}")
  run = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
                       timeout=120)
  assert run.returncode == 2
  assert f"to_coco: error: --output={out} is not empty" in run.stderr
  assert "--overwrite" in run.stderr and "Traceback" not in run.stderr


def _first_step_loss(dataset, data_dir, workdir):
  run = subprocess.run(
      [sys.executable, "-m", "deeppose_tf.train", f"--workdir={workdir}",
       f"--dataset={dataset}", f"--data_dir={data_dir}", "--input_size=67", "--num_stages=1",
       "--steps_per_stage=1", "--batch_size=4", "--stats_images=0", "--curve_every=0",
       "--noevaluate", "--noexport", "--seed=0"],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  import re
  losses = re.findall(r"\bloss: ([0-9.eE+-]+)", run.stderr + run.stdout)
  assert losses, run.stderr[-2000:]
  return float(losses[-1])


@pytest.mark.slow  # two one-step trainings through the CLI: about a minute
def test_lsp_and_its_coco_round_trip_train_to_the_same_first_step_loss(lsp_data, tmp_path):
  export = str(tmp_path / "export")
  to_coco.to_coco(lsp_data, "train", export)
  back = str(tmp_path / "back")
  # The same shard layout as the LSP split: training reads the shards in a seeded order.
  _prepare_coco(export, back, num_shards=3)
  a = _first_step_loss("lsp", lsp_data, str(tmp_path / "w_lsp"))
  b = _first_step_loss("coco", back, str(tmp_path / "w_coco"))
  assert np.isfinite(a) and a > 0
  assert b == pytest.approx(a, rel=1e-5)
