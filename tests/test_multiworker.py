"""Multi-worker training: 2 workers == 1 process on the same global batches; the chief writes.

Workers are real processes on 127.0.0.1 with their own TF_CONFIG (MultiWorkerMirroredStrategy
must be created before any other TF op, so never inside the pytest process).
"""

import glob
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from helpers import REPO, subprocess_env
TINY_FLAGS = ["--input_size=72", "--width=0.1", "--fc_units=32", "--batch_size=4",
              "--draws=3", "--stats_images=0", "--eval_batch_size=8"]


def _env(tf_config=None):
  env = subprocess_env()
  env.pop("TF_CONFIG", None)
  if tf_config is not None:
    env["TF_CONFIG"] = json.dumps(tf_config)
  for proxy in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
    env.pop(proxy, None)  # gRPC between the workers stays on loopback
  return env


def _free_ports(n):
  """n distinct free loopback ports (all held open until every one is picked)."""
  socks = [socket.socket() for _ in range(n)]
  try:
    for s in socks:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in socks]
  finally:
    for s in socks:
      s.close()


def _run_cluster(cmd, tmp_path, jobs=("worker", "worker"), timeout=420):
  """Runs `cmd` once per task of a loopback cluster (jobs[i] is task i's job name, e.g.
  ("chief", "worker")). Kills every process when one fails or time runs out.
  Returns [(returncode, stdout, stderr)] in task order."""
  addresses = [f"127.0.0.1:{p}" for p in _free_ports(len(jobs))]
  cluster = {}
  tasks = []
  for job, address in zip(jobs, addresses):
    cluster.setdefault(job, []).append(address)
    tasks.append((job, len(cluster[job]) - 1))
  procs, logs = [], []
  for job, index in tasks:
    out = open(tmp_path / f"{job}{index}.out", "w+")
    err = open(tmp_path / f"{job}{index}.err", "w+")
    logs.append((out, err))
    tf_config = {"cluster": cluster, "task": {"type": job, "index": index}}
    procs.append(subprocess.Popen(cmd, stdout=out, stderr=err, env=_env(tf_config), cwd=REPO))
  deadline = time.time() + timeout
  try:
    while time.time() < deadline:
      codes = [p.poll() for p in procs]
      if all(c is not None for c in codes):
        break
      if any(c not in (None, 0) for c in codes):
        time.sleep(2)  # let the others report their side, then stop them
        break
      time.sleep(0.5)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  results = []
  for p, (out, err) in zip(procs, logs):
    out.seek(0)
    err.seek(0)
    results.append((p.returncode, out.read(), err.read()))
    out.close()
    err.close()
  failed = [(i, r[0]) for i, r in enumerate(results) if r[0] != 0]
  assert not failed, (f"tasks {failed} failed or timed out after {timeout} s:\n" + "\n".join(
      f"--- task {i} stderr:\n{r[2][-3000:]}" for i, r in enumerate(results)))
  return results


# Trains the same tiny model for 6 steps (a checkpoint and a loss per step) on each named
# data source and prints the per-step losses. "pipeline" is the real shuffled tf.data
# pipeline; "memory" are fixed in-memory batches whose order does not depend on how often
# the dataset is opened (Keras' own fit opens it twice, the multi-worker loop once).
_FIT_SCRIPT = textwrap.dedent("""
    import json, sys
    from deeppose_tf import distribute, trainer
    kind, data_dir, out_dir, sources = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    strategy = distribute.make_strategy(kind=kind)
    import keras, numpy as np, tensorflow as tf
    from deeppose_tf.models import builder as model_lib
    from deeppose_tf import pipeline
    from deeppose_tf.skeleton import LSP14

    def memory(step):
      rng = np.random.RandomState(5)
      x = rng.uniform(0, 255, (48, 72, 72, 3)).astype(np.float32)
      y = np.concatenate([rng.uniform(-0.5, 0.5, (48, 14, 2)), np.ones((48, 14, 1))], -1)
      return tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32))).batch(
          8, drop_remainder=True).repeat()

    data = {"memory": memory,
            "pipeline": lambda step: pipeline.train_dataset(
                data_dir, "train", LSP14, 72, 8, seed=3, augment=pipeline.NO_AUGMENT)}
    config = model_lib.ModelConfig(input_size=72, width=0.1, fc_units=32, dropout=0.0,
                                   norm="batch")
    for source in sources.split(","):
      keras.utils.set_random_seed(7)
      fit = trainer.FitConfig(steps=6, learning_rate=1e-3, checkpoint_every=1, verbose=0)
      _, history = trainer.fit_stage(strategy, lambda: model_lib.build_regressor(config),
                                     data[source], f"{out_dir}/{source}", fit)
      print("LOSSES", source, json.dumps(history["loss"]), strategy.num_replicas_in_sync,
            distribute.is_chief(strategy), flush=True)
""")


def _losses(stdout):
  """{source: (losses, replicas, is_chief)} from a _FIT_SCRIPT run."""
  out = {}
  for line in stdout.splitlines():
    if line.startswith("LOSSES "):
      _, source, rest = line.split(" ", 2)
      losses, replicas, chief = rest.rsplit(" ", 2)
      out[source] = (json.loads(losses), int(replicas), chief == "True")
  return out


def _start_single(kind, sources, data_dir, out_dir):
  return subprocess.Popen([sys.executable, "-c", _FIT_SCRIPT, kind, data_dir, out_dir, sources],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=_env(), cwd=REPO)


def _finish_single(proc, timeout=300):
  try:
    stdout, stderr = proc.communicate(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 0, stderr[-3000:]
  return _losses(stdout)


def _max_rel(a, b):
  a, b = np.asarray(a), np.asarray(b)
  return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.slow  # ~25 s, two worker processes; CI runs the slow suite too
def test_two_workers_match_one_process_and_only_the_chief_keeps_checkpoints(tiny_data,
                                                                            tmp_path):
  """2 workers x 1 CPU on the same global batch of 8 give the same per-step losses as one
  process. Tolerance 1e-4 relative: only the order of the float32 reductions differs
  (synchronized BatchNorm uses global-batch statistics; dropout is off).

  - "memory" batches against MirroredStrategy with Keras' own `fit` (1 replica): the
    multi-worker loop does the same training math as `fit`.
  - the real pipeline against the multi_worker strategy as one process: every worker cuts
    its slice out of the same global batches one process reads (AutoShardPolicy.DATA).
  """
  shared = str(tmp_path / "shared")
  cmd = [sys.executable, "-c", _FIT_SCRIPT, "multi_worker", tiny_data, shared,
         "pipeline,memory"]
  t0 = time.time()
  workers = [_losses(r[1]) for r in _run_cluster(cmd, tmp_path)]
  t_cluster = time.time() - t0
  # The two single-process references at once (they share no files).
  singles = [_start_single("multi_worker", "pipeline", tiny_data, str(tmp_path / "one_worker")),
             _start_single("mirrored", "memory", tiny_data, str(tmp_path / "mirrored"))]
  ref = {}
  for proc in singles:
    ref.update(_finish_single(proc))

  for source in ("pipeline", "memory"):
    (l0, n0, chief0), (l1, n1, chief1) = workers[0][source], workers[1][source]
    assert (n0, n1, chief0, chief1) == (2, 2, True, False)
    assert len(l0) == 6 and l0 == l1  # both report the global loss
    assert ref[source][1] == 1
    print(f"{source}: 2 workers vs 1 process, max relative loss difference "
          f"{_max_rel(l0, ref[source][0]):.2e}; cluster run {t_cluster:.0f} s")
    np.testing.assert_allclose(l0, ref[source][0], rtol=1e-4)

    # Only the chief's checkpoints exist; the worker's temporary dir is gone.
    ckpt_dir = os.path.join(shared, source)
    names = sorted(os.listdir(ckpt_dir))
    assert names == ["checkpoint", "ckpt-5.data-00000-of-00001", "ckpt-5.index",
                     "ckpt-6.data-00000-of-00001", "ckpt-6.index"], names
  assert not glob.glob(os.path.join(shared, "**", ".worker*"), recursive=True)


@pytest.mark.slow  # about 95 s on 2 cores
def test_train_cli_two_workers_two_stages(tiny_data, tmp_path):
  """`python -m deeppose_tf.train --strategy=multi_worker` on a chief + a worker sharing one
  workdir: both finish; only the chief saves models and statistics and evaluates, the
  worker waits for them (stage 2 trains on the chief's stage-1 statistics everywhere)."""
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "deeppose_tf.train", "--strategy=multi_worker",
         f"--workdir={workdir}", "--dataset=lsp", f"--data_dir={tiny_data}", *TINY_FLAGS,
         "--num_stages=2", "--steps_per_stage=2", "--checkpoint_every=1", "--eval_limit=8"]
  (_, _, chief_err), (_, _, worker_err) = _run_cluster(cmd, tmp_path, jobs=("chief", "worker"))
  for stage in (1, 2):
    assert os.path.exists(os.path.join(workdir, f"stage{stage}", "model.keras"))
    # Statistics for stage 1 only: the last stage's would train no later stage.
    assert os.path.exists(os.path.join(workdir, f"stage{stage}", "displacement.json")) == (
        stage == 1)
    assert f"stage {stage} model saved" in chief_err
    assert f"stage {stage} model saved" not in worker_err
    assert f"stage {stage} finished" in worker_err  # the worker trained it too
  assert os.path.exists(os.path.join(workdir, "report.json"))  # the chief evaluated
  for name in ("flags.txt", "config.json", "mean_pose.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  leftovers = [p for p in glob.glob(os.path.join(workdir, "**", ".*"), recursive=True)]
  assert not leftovers, leftovers  # no worker temp dirs, no *.tmp files, no .cluster-check
  assert sorted(os.listdir(os.path.join(workdir, "stage1", "ckpt"))) == [
      "checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index",
      "ckpt-2.data-00000-of-00001", "ckpt-2.index"]


@pytest.mark.slow  # two worker processes through three tompson phases
def test_train_cli_two_workers_tompson_phases(tiny_data, tmp_path):
  """--method=tompson under --strategy=multi_worker: both workers train every phase; only
  the chief writes the phase files, the model and the statistics; nothing is left over."""
  workdir = str(tmp_path / "run")
  cmd = [sys.executable, "-m", "deeppose_tf.train", "--strategy=multi_worker",
         f"--workdir={workdir}", "--dataset=lsp", f"--data_dir={tiny_data}", "--method=tompson",
         "--input_size=64", "--width=0.25", "--head_channels=8", "--batch_size=4",
         "--stats_images=0", "--eval_batch_size=8", "--num_stages=1", "--steps_per_stage=3",
         "--phase_steps=1,1,1", "--checkpoint_every=1", "--eval_limit=8", "--noexport"]
  (_, _, chief_err), (_, _, worker_err) = _run_cluster(cmd, tmp_path, jobs=("chief", "worker"))
  sdir = os.path.join(workdir, "stage1")
  for phase in ("detector", "spatial"):
    assert os.path.exists(os.path.join(sdir, f"{phase}.keras"))
    assert f"phase {phase} saved" in chief_err and f"phase {phase} saved" not in worker_err
  assert "phase joint: 1 steps" in worker_err  # the worker trained the last phase too
  assert "stage 1 model saved" in chief_err and "stage 1 finished" in worker_err
  assert os.path.exists(os.path.join(workdir, "report.json"))
  leftovers = [p for p in glob.glob(os.path.join(workdir, "**", ".*"), recursive=True)]
  assert not leftovers, leftovers
