"""Expected failures of every command are one line and exit 2, without a traceback
(deeppose_tf/cli.py); --verbosity=1 shows the traceback; unexpected errors keep theirs."""

import json
import os
import subprocess
import sys

import pytest

from deeppose_tf import cli
from helpers import REPO, subprocess_env, tiny_predict_workdir


def _run(module, *args):
  return subprocess.run([sys.executable, "-m", f"deeppose_tf.{module}", *args],
                        capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
                        timeout=300)


def _one_line_error(run, name, *needles):
  """The run failed with exit 2 and one `NAME: error:` line holding every needle."""
  assert run.returncode == cli.EXIT_EXPECTED, run.stderr[-2000:]
  assert "Traceback" not in run.stderr, run.stderr[-2000:]
  lines = [ln for ln in run.stderr.splitlines() if ln.startswith(f"{name}: error: ")]
  assert len(lines) == 1, run.stderr[-2000:]
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]


def test_guard_turns_expected_errors_into_one_line_and_keeps_others(capsys, monkeypatch):
  monkeypatch.delenv("DEEPPOSE_TRACEBACK", raising=False)

  def bad(_argv):
    raise ValueError("config.json is damaged:\n  line 1")
  with pytest.raises(SystemExit) as e:
    cli.guard(bad, "demo")([])
  assert e.value.code == 2
  assert capsys.readouterr().err == ("demo: error: config.json is damaged: line 1 "
                                     "(--verbosity=1 shows the traceback)\n")

  def missing(_argv):
    open("/nonexistent/deeppose/file")
  with pytest.raises(SystemExit):
    cli.guard(missing, "demo")([])
  assert "No such file or directory" in capsys.readouterr().err

  def bug(_argv):
    raise KeyError("unexpected")
  with pytest.raises(KeyError):  # a bug is not dressed up as a user error
    cli.guard(bug, "demo")([])
  monkeypatch.setenv("DEEPPOSE_TRACEBACK", "1")
  with pytest.raises(ValueError):
    cli.guard(bad, "demo")([])


@pytest.mark.slow  # 10-22 s: the default run stays under 10 minutes
def test_missing_workdir_is_one_line_and_verbosity_shows_the_traceback(tmp_path):
  missing = str(tmp_path / "nope")
  _one_line_error(_run("evaluate", f"--workdir={missing}"), "evaluate", missing,
                  "holds no trained cascade", "python -m deeppose_tf.train")
  loud = _run("evaluate", f"--workdir={missing}", "--verbosity=1")
  assert loud.returncode != 0 and "Traceback" in loud.stderr


@pytest.mark.slow  # about 60 s: six commands start TensorFlow
def test_five_failures_through_the_commands(tmp_path):
  # 1. A damaged config.json, read by evaluate and by export.
  damaged = tmp_path / "damaged"
  damaged.mkdir()
  (damaged / "config.json").write_text("{broken")
  _one_line_error(_run("evaluate", f"--workdir={damaged}"), "evaluate", "config.json is damaged")
  _one_line_error(_run("export", f"--workdir={damaged}", f"--export_dir={tmp_path / 'e'}"),
                  "export", "config.json")
  # 2. A refused resume: train with another sigma than the workdir's.
  work = tiny_predict_workdir(str(tmp_path / "work"))
  _one_line_error(_run("train", f"--workdir={work}", "--dataset=synthetic", "--sigma=1.0",
                       "--input_size=67"), "train", "sigma: 2.0 in the workdir, 1.0 now")
  with open(os.path.join(work, "config.json")) as f:
    assert json.load(f)["sigma"] == 2.0  # nothing changed
  # 3. A --model that does not exist (predict's own setup error, exit 2 as well).
  photo = os.path.join(REPO, "README.md")
  _one_line_error(_run("predict", photo, f"--model={tmp_path / 'none'}",
                       f"--output={tmp_path / 'o'}"), "predict", "no such file or folder")
  # 4. A prepared split that is not there.
  _one_line_error(_run("data.paste", f"--data_dir={tmp_path / 'nodata'}",
                       f"--output_dir={tmp_path / 'p'}"), "paste", "no complete split 'val'")
  # 5. A bad flag value: absl's own one line, no traceback.
  bad = _run("evaluate", f"--workdir={work}", "--boxes=sideways")
  assert bad.returncode != 0 and "Traceback" not in bad.stderr
  assert "--boxes" in bad.stderr
