"""SIGKILL while a checkpoint is being written, then resume from the last complete one."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from test_train import REPO, _env


@pytest.mark.slow
def test_sigkill_during_checkpoint_write_resumes_from_last_complete(tiny_data, tmp_path):
  """A wide fully connected layer makes each checkpoint ~0.8 GB (weights + Adam slots), so
  writing one takes long enough to be caught: the test kills the process the moment TF's
  temporary checkpoint folder appears, i.e. during the write."""
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "deeppose_tf.train", f"--workdir={workdir}", "--dataset=lsp",
         f"--data_dir={tiny_data}", "--input_size=72", "--width=0.1", "--fc_units=6144",
         "--batch_size=2", "--num_stages=1", "--steps_per_stage=12", "--checkpoint_every=2",
         "--noevaluate", "--noexport"]
  ckpt_dir = os.path.join(workdir, "stage1", "ckpt")
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=_env(), cwd=REPO)
  caught = None
  deadline = time.time() + 300
  try:
    while time.time() < deadline and proc.poll() is None:
      temps = glob.glob(os.path.join(ckpt_dir, "*_temp*"))
      state = tf.train.get_checkpoint_state(ckpt_dir) if os.path.isdir(ckpt_dir) else None
      if temps and state is not None:  # writing the 2nd or a later checkpoint
        proc.send_signal(signal.SIGKILL)
        caught = temps[0]
        break
      time.sleep(0.001)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait()
  assert caught, "never saw a checkpoint being written (finished or timed out)"
  assert proc.returncode == -signal.SIGKILL
  complete = tf.train.get_checkpoint_state(ckpt_dir).model_checkpoint_path
  last_step = int(complete.rsplit("-", 1)[1])
  writing_step = int(re.search(r"ckpt-(\d+)_temp", caught).group(1))
  assert writing_step > last_step  # the interrupted write is not what the state points to

  out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  resumed = re.search(r"resumed from \S+ckpt-(\d+) \(step (\d+)\)", out.stderr)
  assert resumed and int(resumed.group(2)) == last_step, out.stderr[-3000:]
  assert tf.train.latest_checkpoint(ckpt_dir).endswith("ckpt-12")
  assert not glob.glob(os.path.join(ckpt_dir, "*_temp*"))
  assert os.path.exists(os.path.join(workdir, "stage1", "model.keras"))
