"""The dataset registry (data/datasets.py) and what prepare writes from it."""

import os
import subprocess
import sys

import numpy as np
import pytest

from deeppose_tf import skeleton
from deeppose_tf.data import datasets, prepare, records

import fixtures_mat as fm
from helpers import REPO, subprocess_env

JOINTS = {"synthetic": 14, "lsp": 14, "lspet": 14, "flic": 10}


def _sources(root):
  """Tiny genuine-format source folders of every dataset that reads files."""
  fm.write_lsp_folder(os.path.join(root, "lsp"), fm.random_lsp_joints(3, seed=1), "lsp",
                      digits=4)
  joints = fm.random_lsp_joints(12, seed=2)
  joints[4, 2:6, 2] = 0  # some unannotated joints
  fm.write_lsp_folder(os.path.join(root, "lspet"), joints, "lspet", digits=5)
  fm.write_flic_folder(os.path.join(root, "flic"), [
      fm.flic_example(f"m-{i:05d}.jpg", fm.flic_coords(i), (3, 4, 13, 18), istrain=i < 2)
      for i in range(3)])
  return {name: os.path.join(root, name) for name in ("lsp", "lspet", "flic")}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  return _sources(str(tmp_path_factory.mktemp("sources")))


def _prepare(name, output, sources, **kwargs):
  if datasets.get(name).needs_source:
    return prepare.prepare(name, output, source=sources[name], num_shards=1, **kwargs)
  return prepare.prepare(name, output, num_train=2, num_test=1, seed=3, num_shards=1,
                         **kwargs)


def test_registry_is_the_one_mapping():
  assert datasets.names() == ("synthetic", "lsp", "lspet", "flic", "coco")
  # coco's skeleton comes from its files (tests/test_coco_dataset.py): none without them.
  assert datasets.get("coco").skeleton is None
  with pytest.raises(ValueError, match="prepare it first"):
    datasets.skeleton_of("coco")
  for name, spec in datasets.DATASETS.items():
    assert spec.name == name
    assert name in datasets.describe()
    if name == "coco":
      continue
    assert spec.skeleton.num_joints == JOINTS[name]
    assert datasets.skeleton_of(name) is spec.skeleton
    assert datasets.skeleton_of(spec.skeleton.name) is spec.skeleton
    assert skeleton.get_skeleton(spec.skeleton.name) is spec.skeleton
    assert spec.splits[0] == "train" and spec.eval_split == spec.splits[-1]
    assert len(set(spec.splits)) == len(spec.splits)
    assert name in datasets.describe()
  # The old module-level names are derived from the registry.
  assert prepare.SPLITS == {n: s.splits for n, s in datasets.DATASETS.items()}
  assert prepare.DATASETS == datasets.names()


@pytest.mark.parametrize("name", list(JOINTS))
def test_prepare_writes_the_spec_splits_with_its_skeleton(name, sources, tmp_path):
  spec = datasets.get(name)
  counts = _prepare(name, str(tmp_path), sources)
  assert tuple(counts) == spec.splits
  written = sorted(f[:-len(".json")] for f in os.listdir(tmp_path) if f.endswith(".json"))
  assert written == sorted(spec.splits)
  for split in spec.splits:
    meta = records.read_meta(str(tmp_path), split)
    assert meta["num_records"] == counts[split]
    assert (meta["dataset"], meta["skeleton"]) == (name, spec.skeleton.name)
    assert meta["num_joints"] == JOINTS[name]
  if spec.size:  # generated: exactly the asked sizes
    assert counts == {"train": 2, "test": 1}


def test_dataset_options(sources, tmp_path):
  out = str(tmp_path / "fold")
  counts = _prepare("lspet", out, sources, fold_val=True)
  plain = _prepare("lspet", str(tmp_path / "plain"), sources)
  assert counts["train"] == plain["train"] + plain["val"] and counts["val"] == plain["val"]
  assert all(records.read_meta(out, s)["val_in_train"] for s in ("train", "val"))
  assert "val_in_train" not in records.read_meta(str(tmp_path / "plain"), "train")
  assert records.read_meta(str(tmp_path / "plain"), "train")["seed"] == 0
  flic = str(tmp_path / "flic")
  _prepare("flic", flic, sources)
  assert records.read_meta(flic, "test")["box"] == "torso"
  # Options: choices, owner, unknown names; another dataset's option at its default is fine.
  with pytest.raises(ValueError, match=r"unknown flic_box 'head'.*'torso', 'face'"):
    _prepare("flic", str(tmp_path / "x"), sources, flic_box="head")
  with pytest.raises(ValueError, match=r"flic_box='face' applies to dataset 'flic' only, "
                                       r"not 'lsp'"):
    _prepare("lsp", str(tmp_path / "x"), sources, flic_box="face")
  with pytest.raises(ValueError, match=r"fold_val=True applies to dataset 'lspet' only"):
    _prepare("synthetic", str(tmp_path / "x"), sources, fold_val=True)
  with pytest.raises(ValueError, match=r"unknown prepare option 'box'.*'flic_box'"):
    _prepare("flic", str(tmp_path / "x"), sources, box="face")
  assert _prepare("lsp", str(tmp_path / "lsp"), sources, fold_val=False,
                  flic_box="torso")["train"] == 3
  assert not os.path.exists(tmp_path / "x")


def test_unknown_dataset_and_missing_source_are_named(tmp_path):
  known = (r"unknown dataset 'mpii'; expected one of \['synthetic', 'lsp', 'lspet', 'flic', "
           r"'coco'\]")
  for call in (lambda: datasets.get("mpii"), lambda: prepare.check_dataset("mpii"),
               lambda: prepare.prepare("mpii", str(tmp_path)),
               lambda: prepare.ensure_prepared("mpii", str(tmp_path))):
    with pytest.raises(ValueError, match=known):
      call()
  with pytest.raises(ValueError, match=r"unknown skeleton or dataset 'mpii'.*'lspet'"):
    datasets.skeleton_of("mpii")
  with pytest.raises(ValueError, match=r"dataset 'coco' needs --source_dir"):
    prepare.prepare("coco", str(tmp_path))
  with pytest.raises(ValueError, match=r"dataset 'coco' needs --annotations=FILE.json"):
    prepare.prepare("coco", str(tmp_path), source=str(tmp_path))
  with pytest.raises(ValueError, match=r"unknown skeleton 'lspet'; expected one of"):
    skeleton.get_skeleton("lspet")  # skeleton.py knows skeletons, not datasets
  with pytest.raises(ValueError, match=r"dataset 'flic' needs --source_dir=DIR"):
    prepare.prepare("flic", str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_ensure_prepared(sources, tmp_path):
  data = str(tmp_path / "synthetic")
  kw = dict(num_train=2, num_test=1, seed=3)
  assert prepare.ensure_prepared("synthetic", data, **kw)
  first = os.path.getmtime(os.path.join(data, "train.json"))
  assert not prepare.ensure_prepared("synthetic", data, **kw)  # identical: kept
  assert os.path.getmtime(os.path.join(data, "train.json")) == first
  assert not prepare.ensure_prepared("synthetic", data, num_train=5, num_test=1, seed=3,
                                     generate=False)  # the user's own data_dir: as it is
  assert records.read_meta(data, "train")["num_records"] == 2
  assert prepare.ensure_prepared("synthetic", data, num_train=2, num_test=1, seed=4)
  assert records.read_meta(data, "test")["seed"] == 4
  prepare.ensure_synthetic(data, 3, 1, 4)  # the pre-registry name, same rule
  assert records.read_meta(data, "train")["num_records"] == 3
  # A dataset of files: converted when its held-out split is missing, and only then.
  lsp = str(tmp_path / "lsp")
  assert not prepare.ensure_prepared("lsp", lsp)  # no source: nothing to do
  assert not os.path.exists(lsp)
  assert prepare.ensure_prepared("lsp", lsp, sources["lsp"])
  assert not prepare.ensure_prepared("lsp", lsp, sources["lsp"])
  np.testing.assert_equal(records.read_meta(lsp, "train")["num_records"], 3)


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "deeppose_tf.data.prepare", *args],
                        capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
                        timeout=300)


def test_cli_help_lists_every_flag_and_old_names_work(sources, tmp_path):
  out = _run_cli("--help")  # absl exits 1 after --help
  for flag in ("--dataset", "--data_dir", "--source_dir", "--num_train", "--num_test",
               "--seed", "--num_shards", "--flic_box", "--[no]fold_val",
               "--output: Alias for --data_dir", "--source: Alias for --source_dir"):
    assert flag in out.stdout, flag
  assert "<synthetic|lsp|lspet|flic|coco>" in out.stdout
  # The pre-rename names still work.
  out = _run_cli("--dataset=lsp", f"--source={sources['lsp']}", f"--output={tmp_path}",
                 "--num_shards=1")
  assert out.returncode == 0, out.stderr
  assert "train: 3 images, 42 annotated joints, 0 masked joints" in out.stdout
  assert records.read_meta(str(tmp_path), "test")["num_records"] == 0
  out = _run_cli("--dataset=lsp", f"--data_dir={tmp_path}")
  assert out.returncode != 0 and "needs --source_dir=DIR" in out.stderr
