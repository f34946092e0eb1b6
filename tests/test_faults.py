"""Faults and misuse (issue 13): each finding of the fault-injection run, reproduced.

Every test asserts the outcome: a clear error naming the culprit (file, record, flag), or
a correct result with nothing lost.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from deeppose_tf import cascade, workdir as workdir_lib
from deeppose_tf.data import records
from helpers import REPO, random_records, subprocess_env

TINY = ["--noexport", "--dataset=lsp", "--input_size=67", "--width=0.1", "--fc_units=16",
        "--batch_size=8", "--checkpoint_every=10", "--draws=2", "--curve_every=0"]


def _sha(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _train(workdir, data_dir, *extra, timeout=600):
  return subprocess.run([sys.executable, "-m", "deeppose_tf.train", f"--workdir={workdir}",
                         f"--data_dir={data_dir}", *TINY, *extra], capture_output=True,
                        text=True, env=subprocess_env(), cwd=REPO, timeout=timeout)


# ------------------------------------------------------------------------ loss of data

def test_rewriting_a_split_with_a_bad_record_keeps_the_old_split(tmp_path):
  d = str(tmp_path)
  records.write_split(random_records(12, seed=1), d, "train", 14, num_shards=3)
  before = {p: _sha(p) for p in records.list_shards(d, "train")}
  meta_before = records.read_meta(d, "train")
  bad = random_records(12, seed=2)
  bad[3].joints[0] = np.nan  # record 3 has a NaN annotated joint
  with pytest.raises(ValueError, match="tiny/0003"):
    records.write_split(bad, d, "train", 14, num_shards=2)
  assert records.read_meta(d, "train") == meta_before
  assert {p: _sha(p) for p in records.list_shards(d, "train")} == before
  assert records.verify_split(d, "train") == 12
  assert not [n for n in os.listdir(d) if n.startswith(".tmp") or "tmp" in n]


def test_rewriting_a_split_with_fewer_shards_removes_the_old_layout(tmp_path):
  d = str(tmp_path)
  records.write_split(random_records(12, seed=1), d, "train", 14, num_shards=3)
  records.write_split(random_records(5, seed=2), d, "train", 14, num_shards=2)
  assert sorted(n for n in os.listdir(d) if n.endswith(".tfrecord")) == [
      "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
  assert records.verify_split(d, "train") == 5


def test_split_cut_at_a_record_boundary_names_the_shard(tmp_path):
  d = str(tmp_path)
  records.write_split(random_records(20, seed=1), d, "test", 14, num_shards=2)
  shard = records.list_shards(d, "test")[1]
  import tensorflow as tf
  kept = list(tf.data.TFRecordDataset(shard).take(7).as_numpy_iterator())
  with tf.io.TFRecordWriter(shard) as w:  # 7 of its 10 records, each whole
    for r in kept:
      w.write(r)
  with pytest.raises(ValueError, match="test-00001-of-00002.tfrecord holds 7 records") as e:
    records.verify_split(d, "test")
  assert "means 10" in str(e.value) or "mean 10" in str(e.value)


@pytest.mark.parametrize("damage", ["truncate", "random_bytes"])
def test_damaged_shard_names_the_file(tmp_path, damage):
  d = str(tmp_path)
  records.write_split(random_records(8, seed=1), d, "test", 14, num_shards=2)
  shard = records.list_shards(d, "test")[0]
  data = open(shard, "rb").read()
  with open(shard, "wb") as f:
    f.write(data[: len(data) // 2] if damage == "truncate"
            else np.random.RandomState(0).bytes(len(data)))
  with pytest.raises(ValueError, match="test-00000-of-00002.tfrecord"):
    records.verify_split(d, "test")


def test_invalid_split_json_names_the_file(tmp_path):
  d = str(tmp_path)
  records.write_split(random_records(4, seed=1), d, "train", 14, num_shards=1)
  with open(os.path.join(d, "train.json"), "w") as f:
    f.write("{broken")
  with pytest.raises(ValueError, match="train.json is damaged"):
    records.read_meta(d, "train")


@pytest.mark.slow  # 24 s: CLI reruns; CI runs it in `pytest -m slow`
def test_missing_statistics_are_recomputed_not_retrained(tiny_data, tmp_path):
  workdir = str(tmp_path / "run")
  # --stage=1 of a 2-stage run: stage 1 is not the last, so its statistics are written.
  run = _train(workdir, tiny_data, "--num_stages=2", "--stage=1", "--steps_per_stage=20",
               "--stats_images=20", "--noevaluate")
  assert run.returncode == 0, run.stderr[-3000:]
  # 20 images, trimmed to the 90% smallest: under 20 displacements per joint, said aloud.
  assert "statistics measured fewer than 20 displacements for 14 of 14 joints" in run.stderr
  model = workdir_lib.model_path(workdir, 1)
  stats = workdir_lib.stats_path(workdir, 1)
  model_sha, stats_before = _sha(model), json.load(open(stats))
  os.remove(stats)
  shutil.rmtree(workdir_lib.checkpoint_dir(workdir, 1))
  again = _train(workdir, tiny_data, "--num_stages=2", "--stage=1", "--steps_per_stage=20",
                 "--stats_images=20", "--noevaluate")
  assert again.returncode == 0, again.stderr[-3000:]
  assert "recomputing them" in again.stderr
  assert _sha(model) == model_sha  # the trained stage 1 was not overwritten
  np.testing.assert_allclose(json.load(open(stats))["mean"], stats_before["mean"], atol=1e-5)
  assert not os.path.exists(workdir_lib.checkpoint_dir(workdir, 1))  # nothing retrained


@pytest.mark.slow  # about 40 s: three CLI runs
def test_the_last_stage_skips_its_statistics_and_resume_adds_a_stage(tiny_data, tmp_path):
  """The last stage's displacement statistics are not computed (no later stage reads them):
  a finished 1-stage run has none, a rerun skips it, and a rerun with --num_stages=2 computes
  them from the unchanged stage-1 model before it trains stage 2."""
  workdir = str(tmp_path / "run")
  flags = ["--steps_per_stage=20", "--stats_images=20", "--noevaluate"]
  run = _train(workdir, tiny_data, "--num_stages=1", *flags)
  assert run.returncode == 0, run.stderr[-3000:]
  model, stats = workdir_lib.model_path(workdir, 1), workdir_lib.stats_path(workdir, 1)
  assert os.path.exists(model) and not os.path.exists(stats)
  assert "displacement (box sides" not in run.stderr  # no statistics pass ran
  assert workdir_lib.is_finished(workdir, 1, last=True)
  assert not workdir_lib.is_finished(workdir, 1)
  model_sha = _sha(model)
  again = _train(workdir, tiny_data, "--num_stages=1", *flags)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "stage 1 is already trained" in again.stderr
  assert not os.path.exists(stats) and _sha(model) == model_sha
  more = _train(workdir, tiny_data, "--num_stages=2", *flags)
  assert more.returncode == 0, more.stderr[-3000:]
  assert "recomputing them" in more.stderr
  assert _sha(model) == model_sha  # stage 1 was not retrained
  assert np.all(np.isfinite(workdir_lib.load_stats(workdir, 1)["cov"]))
  assert os.path.exists(workdir_lib.model_path(workdir, 2))
  assert not os.path.exists(workdir_lib.stats_path(workdir, 2))


# ------------------------------------------------------------ hangs and silent results

_PARSE = textwrap.dedent("""
    import json, sys
    from absl import flags
    from deeppose_tf import flags as dp_flags
    dp_flags.define_train_flags()
    out = {}
    for arg in json.loads(sys.argv[1]):
      try:
        flags.FLAGS(["train", "--workdir=/tmp/x", arg])
        out[arg] = "accepted"
      except flags.Error as e:
        out[arg] = str(e)
      flags.FLAGS.unparse_flags()
    print(json.dumps(out))
""")

BAD_FLAGS = ["--draws=0", "--batch_size=0", "--batch_size=-4", "--eval_batch_size=0",
             "--num_stages=0", "--width=0", "--fc_units=0", "--checkpoint_every=0",
             "--sigma=0", "--sigma=-1", "--learning_rate=nan", "--learning_rate=0",
             "--dropout=1", "--rotate=-5", "--stats_trim=0", "--cpu_replicas=0",
             "--input_size=4", "--heatmap_sigma=0", "--translate=inf", "--eval_limit=-1",
             "--dataset=mpii"]


def test_every_bad_flag_fails_at_parsing_naming_flag_value_and_range():
  run = subprocess.run([sys.executable, "-c", _PARSE, json.dumps(BAD_FLAGS + ["--draws=1"])],
                       capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  out = json.loads(run.stdout.strip().splitlines()[-1])
  assert out.pop("--draws=1") == "accepted"
  for arg, message in out.items():
    name, value = arg[2:].split("=")
    assert message != "accepted", arg
    assert f"--{name}" in message, (arg, message)
    if name != "dataset":
      assert "allowed range" in message, (arg, message)
  assert "expected one of" in out["--dataset=mpii"]


def test_bad_steps_per_stage_is_a_usage_error_not_a_traceback(tmp_path):
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.train", f"--workdir={tmp_path}",
                        "--steps_per_stage=abc"], capture_output=True, text=True,
                       env=subprocess_env(), cwd=REPO, timeout=300)
  assert run.returncode != 0
  assert "--steps_per_stage must be positive integers, got ['abc']" in run.stderr
  assert "Traceback" not in run.stderr


def test_missing_stage_model_is_refused_not_a_shorter_cascade(tmp_path):
  d = str(tmp_path)
  workdir_lib.write_config(d, {"skeleton": "lsp14", "input_size": 67, "sigma": 1.0,
                               "num_stages": 2})
  from deeppose_tf.models import builder as model_lib
  net = model_lib.build_regressor(model_lib.ModelConfig(num_joints=14, input_size=67,
                                                        width=0.1, fc_units=8))
  os.makedirs(workdir_lib.stage_dir(d, 1))
  workdir_lib.save_model(net, workdir_lib.model_path(d, 1))
  with pytest.raises(ValueError, match="has 2 stages but stage 2 has no trained model") as e:
    cascade.Cascade.load(d)
  assert "stage2/model.keras is missing" in str(e.value) and "--stage=2" in str(e.value)
  assert cascade.Cascade.load(d, num_stages=1).num_stages == 1  # asked for explicitly


def test_truncated_model_file_is_reported_as_damaged_not_missing(tmp_path):
  d = str(tmp_path)
  workdir_lib.write_config(d, {"skeleton": "lsp14", "input_size": 67, "sigma": 1.0,
                               "num_stages": 1})
  os.makedirs(workdir_lib.stage_dir(d, 1))
  with open(workdir_lib.model_path(d, 1), "wb") as f:
    f.write(b"PK\x03\x04 truncated")
  with pytest.raises(ValueError, match="model.keras is damaged or not a .keras file"):
    cascade.Cascade.load(d)
