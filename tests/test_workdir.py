"""Tests of workdir.py: the run folder's files, the resume check and the training lock."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from deeppose_tf import workdir as workdir_lib
from helpers import REPO, subprocess_env

CONFIG = {"skeleton": "lsp14", "input_size": 72, "sigma": 2.0, "num_stages": 2,
          "data_dir": "/data", "train_split": "train",
          "model": {"backbone": "alexnet", "width": 0.1, "precision": "float32"}}


def _trained(tmp_path, config=CONFIG):
  d = str(tmp_path / "run")
  workdir_lib.write_config(d, config)
  os.makedirs(workdir_lib.checkpoint_dir(d, 1))
  return d


def test_paths_and_json_round_trip(tmp_path):
  d = str(tmp_path)
  assert workdir_lib.model_path(d, 2) == os.path.join(d, "stage2", "model.keras")
  workdir_lib.write_config(d, CONFIG)
  assert workdir_lib.read_config(d) == CONFIG
  workdir_lib.write_mean_pose(d, np.ones((14, 2)))
  np.testing.assert_array_equal(workdir_lib.read_mean_pose(d, 14), np.ones((14, 2)))
  workdir_lib.save_stats(d, 1, {"mean": [[0, 0]], "chol": [[[1, 0], [0, 1]]]})
  assert workdir_lib.load_stats(d, 1)["mean"] == [[0, 0]]
  assert not workdir_lib.is_finished(d, 1)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe"])
def test_damaged_config_names_the_file(tmp_path, content):
  with open(tmp_path / "config.json", "w", encoding="latin-1") as f:
    f.write(content)
  with pytest.raises(ValueError, match="config.json is damaged"):
    workdir_lib.read_config(str(tmp_path))


def test_nan_mean_pose_is_refused_naming_the_file(tmp_path):
  with open(tmp_path / "mean_pose.json", "w") as f:
    f.write('{"mean_pose": [[NaN, 0.0]]}')
  with pytest.raises(ValueError, match="mean_pose.json holds non-finite"):
    workdir_lib.read_mean_pose(str(tmp_path))


def test_workdir_that_is_a_file_is_refused(tmp_path):
  path = tmp_path / "f"
  path.write_text("x")
  with pytest.raises(ValueError, match="is a file, not a folder"):
    workdir_lib.check_workdir(str(path))


@pytest.mark.parametrize("key,value,name", [
    ("sigma", 1.0, "sigma: 2.0 in the workdir, 1.0 now"),
    ("input_size", 96, "input_size: 72 in the workdir, 96 now"),
    ("skeleton", "flic10", "skeleton: 'lsp14' in the workdir, 'flic10' now"),
    ("model", dict(CONFIG["model"], backbone="resnet"),
     "model.backbone: 'alexnet' in the workdir, 'resnet' now"),
])
def test_resume_with_other_geometry_is_refused_naming_both_values(tmp_path, key, value, name):
  d = _trained(tmp_path)
  with pytest.raises(ValueError, match="trained with other settings") as e:
    workdir_lib.check_resume(d, dict(CONFIG, **{key: value}))
  assert name in str(e.value)


def test_resume_may_change_stage_count_data_dir_and_precision(tmp_path):
  d = _trained(tmp_path)
  workdir_lib.check_resume(d, dict(CONFIG, num_stages=3, data_dir="/moved",
                                   model=dict(CONFIG["model"], precision="bfloat16")))


def test_new_settings_are_fine_while_nothing_is_trained(tmp_path):
  d = str(tmp_path / "run")
  workdir_lib.write_config(d, CONFIG)  # a run that stopped before its first checkpoint
  workdir_lib.check_resume(d, dict(CONFIG, sigma=1.0))


_HOLD = textwrap.dedent("""
    import sys, time
    from deeppose_tf import workdir
    lock = workdir.RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_lock_refuses_a_second_holder_and_a_killed_holder_leaves_no_block(tmp_path):
  d = str(tmp_path)
  proc = subprocess.Popen([sys.executable, "-c", _HOLD, d], stdout=subprocess.PIPE,
                          text=True, env=subprocess_env(), cwd=REPO)
  try:
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(ValueError, match=f"pid {proc.pid} on") as e:
      workdir_lib.RunLock(d).acquire()
    assert "another training process holds" in str(e.value)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  # The killed holder's lock file is still there, naming it, but does not block.
  with open(os.path.join(d, workdir_lib.LOCK_FILE)) as f:
    assert f"pid {proc.pid}" in f.read()
  with workdir_lib.RunLock(d):
    with open(os.path.join(d, workdir_lib.LOCK_FILE)) as f:
      assert f"pid {os.getpid()}" in f.read()
  assert not os.path.exists(os.path.join(d, workdir_lib.LOCK_FILE))  # a clean release
  with workdir_lib.RunLock(d):  # released on exit, so it can be taken again
    pass


TINY = ["--noexport", "--noevaluate", "--dataset=lsp", "--input_size=72", "--width=0.1",
        "--fc_units=32", "--batch_size=4", "--num_stages=1", "--checkpoint_every=10",
        "--stats_images=8", "--curve_every=0"]


@pytest.mark.slow  # three CLI runs, ~25 s; the lock and resume unit tests above run by default
def test_train_cli_lock_stale_lock_and_resume_check(tiny_data, tmp_path):
  """A second train in a running workdir is refused naming the first's PID; after the
  first is SIGKILLed its stale lock does not block; a resume with another sigma is refused
  naming both values."""
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "deeppose_tf.train", f"--workdir={workdir}",
         f"--data_dir={tiny_data}", *TINY]
  first = subprocess.Popen(cmd + ["--steps_per_stage=100000"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=subprocess_env(), cwd=REPO)
  ckpt = os.path.join(workdir, "stage1", "ckpt")
  try:
    deadline = time.time() + 240
    while not (os.path.isdir(ckpt) and any(n.startswith("ckpt-") for n in os.listdir(ckpt))):
      assert first.poll() is None, "the first training ended early"
      assert time.time() < deadline, "no checkpoint within 240 s"
      time.sleep(0.2)
    second = subprocess.run(cmd + ["--steps_per_stage=100000"], capture_output=True, text=True,
                            env=subprocess_env(), cwd=REPO, timeout=300)
    assert second.returncode != 0
    assert f"pid {first.pid} on" in second.stderr, second.stderr[-2000:]
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  with open(os.path.join(workdir, ".lock")) as f:
    assert f"pid {first.pid}" in f.read()  # stale: left by the killed run
  third = subprocess.run(cmd + ["--steps_per_stage=100000", "--sigma=3.0"], capture_output=True,
                         text=True, env=subprocess_env(), cwd=REPO, timeout=300)
  assert third.returncode != 0
  assert "another training process" not in third.stderr
  assert "sigma: 2.0 in the workdir, 3.0 now" in third.stderr, third.stderr[-2000:]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["sigma"] == 2.0  # the refused run changed nothing
