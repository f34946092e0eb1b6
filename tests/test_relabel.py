"""A prepared folder written again in observer-centric labels (data/relabel.py), read back
record by record; what it refuses; and a run trained on it answering and scoring in those
labels (config.json, the cascade, evaluate)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deeppose_tf import labels
from deeppose_tf.data import records, relabel
from deeppose_tf.data.to_coco import read_records
from deeppose_tf.skeleton import LSP14
from deeppose_tf.train import data_left_right

from helpers import REPO, random_records
from helpers import subprocess_env as _env


@pytest.fixture(scope="module")
def person_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("person"))
  records.write_split(random_records(12, seed=1), d, "train", 14, num_shards=2,
                      meta={"skeleton": "lsp14", "dataset": "lsp"})
  records.write_split(random_records(6, seed=2), d, "test", 14, num_shards=1,
                      meta={"skeleton": "lsp14", "dataset": "lsp"})
  return d


def test_relabelled_folder_holds_every_record_with_its_joints_relabelled(person_dir, tmp_path):
  out = str(tmp_path / "oc")
  assert relabel.relabel_dir(person_dir, out) == {"test": 6, "train": 12}
  for split in ("train", "test"):
    meta = records.read_meta(out, split)
    assert meta["left_right"] == "observer" and meta["dataset"] == "lsp"
    assert meta["relabelled_from"] == os.path.abspath(person_dir)
    assert records.verify_split(out, split) == meta["num_records"]
    before = list(read_records(person_dir, split, 14))
    after = list(read_records(out, split, 14))
    assert [r["image_id"] for r in after] == [r["image_id"] for r in before]
    moved = 0
    for a, b in zip(before, after):
      assert a["image"] == b["image"] and a["height"] == b["height"]
      want_j, want_v = labels.relabel_numpy(a["joints"], LSP14, "observer", a["visible"])
      np.testing.assert_array_equal(b["joints"], want_j)
      np.testing.assert_array_equal(b["visible"], want_v)
      moved += not np.array_equal(a["joints"], b["joints"])
    assert 0 < moved  # random poses: some were relabelled, so the check can fail
  # Relabelling an observer folder again changes nothing (idempotent).
  again = str(tmp_path / "oc2")
  relabel.relabel_dir(out, again, splits=["test"])
  for a, b in zip(read_records(out, "test", 14), read_records(again, "test", 14)):
    np.testing.assert_array_equal(a["joints"], b["joints"])


def test_relabel_refuses_in_place_unknown_splits_and_recovering_person_labels(
    person_dir, tmp_path):
  with pytest.raises(ValueError, match="in place would lose the original labels"):
    relabel.relabel_dir(person_dir, person_dir)
  with pytest.raises(ValueError, match=r"has no split \['val'\]; it has \['test', 'train'\]"):
    relabel.relabel_dir(person_dir, str(tmp_path / "x"), splits=["val"])
  with pytest.raises(ValueError, match="unknown label convention 'mirror'"):
    relabel.relabel_dir(person_dir, str(tmp_path / "x"), "mirror")
  with pytest.raises(ValueError, match="holds no prepared split"):
    relabel.relabel_dir(str(tmp_path), str(tmp_path / "x"))
  oc = str(tmp_path / "oc")
  relabel.relabel_dir(person_dir, oc, splits=["test"])
  with pytest.raises(ValueError, match="cannot be recovered from it; relabel the folder it "
                     "came from"):
    relabel.relabel_dir(oc, str(tmp_path / "pc"), "person")
  assert not os.path.exists(tmp_path / "pc" / "test.json")


def test_a_run_reads_its_labels_from_the_splits_and_refuses_a_mix(person_dir, tmp_path):
  oc = str(tmp_path / "oc")
  relabel.relabel_dir(person_dir, oc)
  assert data_left_right([(person_dir, "train"), (person_dir, "test")]) == "person"
  assert data_left_right([(oc, "train"), (oc, "test")]) == "observer"
  assert data_left_right([(str(tmp_path / "not_yet"), "train")]) == "person"
  with pytest.raises(ValueError, match="different left/right labels.*relabel them alike"):
    data_left_right([(oc, "train"), (person_dir, "train")])
  meta = records.read_meta(oc, "test")
  with open(os.path.join(oc, "test.json"), "w") as f:
    json.dump(dict(meta, left_right="mirror"), f)
  with pytest.raises(ValueError, match="test.json is damaged: left_right 'mirror'"):
    data_left_right([(oc, "test")])


@pytest.mark.slow  # a CLI training run and two evaluations: about 40 s
def test_a_run_on_observer_labels_answers_and_scores_in_them(person_dir, tmp_path):
  from deeppose_tf import cascade, evaluate, workdir as workdir_lib
  oc = str(tmp_path / "oc")
  relabel.relabel_dir(person_dir, oc)
  work = str(tmp_path / "w")
  common = [sys.executable, "-m", "deeppose_tf.train", "--dataset=lsp", "--noexport",
            "--input_size=72", "--width=0.1", "--fc_units=32", "--batch_size=4",
            "--num_stages=1", "--steps_per_stage=2", "--noevaluate"]
  run = subprocess.run(common + [f"--workdir={work}", f"--data_dir={oc}"],
                       capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert workdir_lib.read_config(work)["left_right"] == "observer"
  assert cascade.Cascade.load(work).left_right == "observer"
  scored = evaluate.run(work, "test", data_dir=person_dir, limit=4,
                        report_dir=str(tmp_path / "r"))
  assert scored["left_right"] == "observer"
  with open(tmp_path / "r" / "report.json") as f:
    assert json.load(f)["left_right"] == "observer"
  # Scored on the person-labelled copy of the same split: the annotations are relabelled,
  # so the figures are the observer folder's.
  same = evaluate.run(work, "test", data_dir=oc, limit=4, report_dir=str(tmp_path / "r2"))
  assert same["stages"][0]["pcp_mean"] == scored["stages"][0]["pcp_mean"]
  with pytest.raises(ValueError, match="trained on observer-centric left/right labels; it "
                     "cannot answer person-centric ones"):
    evaluate.run(work, "test", data_dir=oc, limit=4, left_right="person")
  person = str(tmp_path / "person_w")
  import shutil
  shutil.copytree(work, person)
  config = workdir_lib.read_config(person)
  workdir_lib.write_config(person, dict(config, left_right="person"))
  with pytest.raises(ValueError, match="holds observer-centric left/right labels but .* "
                     "answers person-centric ones; evaluate with --left_right=observer"):
    evaluate.run(person, "test", data_dir=oc, limit=4, report_dir=str(tmp_path / "r4"))
  mixed = subprocess.run(common + [f"--workdir={tmp_path / 'w2'}", f"--data_dir={oc}",
                                   f"--extra_train_dirs={person_dir}"],
                         capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
  assert mixed.returncode != 0
  assert "use different left/right labels" in mixed.stderr
