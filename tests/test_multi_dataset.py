"""Training on several prepared datasets of one skeleton (--extra_train_dirs), and LSP's
val split carved from its training half."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deeppose_tf import pipeline
from deeppose_tf.data import records
from deeppose_tf.skeleton import LSP14

from helpers import REPO, random_records
from helpers import subprocess_env as _env


@pytest.fixture(scope="module")
def two_dirs(tmp_path_factory):
  a = str(tmp_path_factory.mktemp("a"))
  b = str(tmp_path_factory.mktemp("b"))
  records.write_split(random_records(12, seed=1), a, "train", 14, num_shards=2)
  records.write_split(random_records(6, seed=2), a, "test", 14, num_shards=1)
  records.write_split(random_records(8, seed=3), b, "train", 14, num_shards=1)
  return a, b


def test_pipeline_reads_every_folder(two_dirs):
  a, b = two_dirs
  both = pipeline.annotations((a, b), "train", LSP14)
  alone = [pipeline.annotations(d, "train", LSP14) for d in (a, b)]
  assert len(both["image_id"]) == 12 + 8
  assert set(both["image_id"]) == set(alone[0]["image_id"]) | set(alone[1]["image_id"])
  # The mean pose of the mix weighs every annotated joint once, whichever folder it is in.
  mean = pipeline.mean_pose((a, b), "train", LSP14)
  assert not np.allclose(mean, pipeline.mean_pose(a, "train", LSP14))
  # The training stream draws from both folders' images: crops of all 20 records.
  ds = pipeline.train_dataset((a, b), "train", LSP14, 32, 20, seed=0,
                              augment=pipeline.NO_AUGMENT, cache_max_side=0)
  crops, targets = next(iter(ds))
  assert crops.shape == (20, 32, 32, 3) and targets.shape == (20, 14, 3)


def _train(workdir, data_dir, *extra):
  return subprocess.run(
      [sys.executable, "-m", "deeppose_tf.train", f"--workdir={workdir}", "--dataset=lsp",
       f"--data_dir={data_dir}", "--noexport", "--input_size=72", "--width=0.1",
       "--fc_units=32", "--batch_size=4", "--num_stages=1", "--steps_per_stage=2",
       "--eval_batch_size=8", "--noevaluate", *extra],
      capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)


@pytest.mark.slow  # two CLI runs, about 30 s
def test_train_on_two_datasets_and_refuse_another_skeleton(two_dirs, tmp_path):
  a, b = two_dirs
  run = _train(str(tmp_path / "w"), a, f"--extra_train_dirs={b}")
  assert run.returncode == 0, run.stderr[-3000:]
  assert f"training also on {b} (8 train records)" in run.stderr
  config = json.load(open(tmp_path / "w" / "config.json"))
  assert config["extra_train_dirs"] == [b]
  mean = json.load(open(tmp_path / "w" / "mean_pose.json"))["mean_pose"]
  np.testing.assert_allclose(mean, pipeline.mean_pose((a, b), "train", LSP14), atol=1e-6)
  assert os.path.exists(tmp_path / "w" / "stage1" / "model.keras")
  flic = str(tmp_path / "flic")
  records.write_split(random_records(4, seed=4, num_joints=10), flic, "train", 10,
                      meta={"skeleton": "flic10"})
  run = _train(str(tmp_path / "w2"), a, f"--extra_train_dirs={flic}")
  assert run.returncode != 0
  assert "its train split is on skeleton 'flic10', the run's is 'lsp14'" in run.stderr
