"""Property-based hostile inputs (hypothesis) for flags, workdir files and data shards.

Each property damages one thing at random and asserts the outcome: a clear error that names
the culprit (the flag, the file, the shard), or a correct result when the damage changed
nothing. Each test counts the inputs it tried and a last test asserts the counts, so a
silently skipped property cannot pass.
"""

import os
import shutil
import tempfile

import numpy as np
import pytest
from absl import flags as absl_flags
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deeppose_tf import flags as dp_flags
from deeppose_tf.models import builder as model_lib
from deeppose_tf import workdir as workdir_lib
from deeppose_tf.data import records
from helpers import random_records

tried = {"flag": 0, "flag_combination": 0, "shard": 0, "workdir_file": 0}
EXAMPLES = {"flag": 200, "flag_combination": 100, "shard": 200, "workdir_file": 120}


def _settings(kind):
  return settings(max_examples=EXAMPLES[kind], deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow])


# ---------------------------------------------------------------------------------- flags

_INT_FLAGS = {"num_train", "num_test", "num_stages", "stage", "batch_size", "input_size",
              "fc_units", "draws", "cache_max_side", "heatmap_stride", "head_channels",
              "warmup_steps", "curve_every", "curve_images", "cpu_replicas",
              "checkpoint_every", "stats_images", "eval_limit", "eval_batch_size"}


def _flag_values():
  """A FlagValues holding the numeric training flags with their range validators."""
  fv = absl_flags.FlagValues()
  for name, (lo, hi) in dp_flags.TRAIN_RANGES.items():
    if name in _INT_FLAGS:
      absl_flags.DEFINE_integer(name, None, name, flag_values=fv)
    else:
      absl_flags.DEFINE_float(name, None, name, flag_values=fv)
    dp_flags.register_range(name, lo, hi, flag_values=fv)
  return fv


_FV = _flag_values()


def _in_range(name, value):
  lo, hi = dp_flags.TRAIN_RANGES[name]
  if value != value or value in (float("inf"), float("-inf")):
    return False
  ok = True
  if lo:
    ok &= value > float(lo[1:]) if lo[0] == "(" else value >= float(lo[1:])
  if hi:
    ok &= value < float(hi[:-1]) if hi[-1] == ")" else value <= float(hi[:-1])
  return ok


_VALUES = st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e308", "abc", ""]))


def _parse(args):
  try:
    _FV(["prog", *args])
    return None
  except absl_flags.Error as e:
    return str(e)
  finally:
    _FV.unparse_flags()


@_settings("flag")
@given(name=st.sampled_from(sorted(dp_flags.TRAIN_RANGES)), value=_VALUES)
def test_a_numeric_flag_is_accepted_exactly_in_its_range(name, value):
  tried["flag"] += 1
  text = str(value)
  error = _parse([f"--{name}={text}"])
  try:
    parsed = int(text) if name in _INT_FLAGS else float(text)
  except ValueError:
    parsed = None  # not a number of the flag's type: the parser must refuse it
  if parsed is not None and _in_range(name, parsed):
    assert error is None, (name, text, error)
  else:
    assert error is not None, (name, text)
    assert f"--{name}" in error, (name, text, error)


@_settings("flag_combination")
@given(st.lists(st.tuples(st.sampled_from(sorted(dp_flags.TRAIN_RANGES)), _VALUES),
                min_size=2, max_size=5, unique_by=lambda t: t[0]))
def test_flag_combinations_fail_naming_a_bad_flag(pairs):
  tried["flag_combination"] += 1
  args = [f"--{n}={v}" for n, v in pairs]
  bad = []
  for n, v in pairs:
    try:
      parsed = int(str(v)) if n in _INT_FLAGS else float(str(v))
      if not _in_range(n, parsed):
        bad.append(n)
    except ValueError:
      bad.append(n)
  error = _parse(args)
  if bad:
    assert error is not None and any(f"--{n}" in error for n in bad), (args, error)
  else:
    assert error is None, (args, error)


# --------------------------------------------------------------------------------- shards

@pytest.fixture(scope="module")
def pristine_split(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("pristine"))
  records.write_split(random_records(9, seed=3), d, "train", 14, num_shards=3)
  return d


_SHARD_DAMAGE = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 2), st.floats(0, 0.999)),
    st.tuples(st.just("flip"), st.integers(0, 2),
              st.lists(st.tuples(st.floats(0, 0.999), st.integers(0, 255)), min_size=1,
                       max_size=4)),
    st.tuples(st.just("garbage"), st.integers(0, 2), st.binary(max_size=600)),
    st.tuples(st.just("append"), st.integers(0, 2), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.integers(0, 2), st.none()),
    st.tuples(st.just("swap"), st.integers(0, 2), st.integers(1, 2)),
)


@_settings("shard")
@given(damage=_SHARD_DAMAGE)
def test_a_damaged_shard_is_named_or_the_split_is_intact(pristine_split, damage):
  tried["shard"] += 1
  kind, index, arg = damage
  d = tempfile.mkdtemp()
  try:
    for name in os.listdir(pristine_split):
      shutil.copy(os.path.join(pristine_split, name), d)
    shards = records.list_shards(d, "train")
    path = shards[index]
    data = bytearray(open(path, "rb").read())
    if kind == "truncate":
      data = data[:int(arg * len(data))]
    elif kind == "flip":
      for where, value in arg:
        data[int(where * len(data))] = value
    elif kind == "garbage":
      data = bytearray(arg)
    elif kind == "append":
      data += arg
    elif kind == "swap":  # another shard's (valid) records in its place
      data = bytearray(open(shards[(index + arg) % 3], "rb").read())
    if kind == "delete":
      os.remove(path)
    else:
      with open(path, "wb") as f:
        f.write(bytes(data))
    unchanged = kind != "delete" and bytes(data) == open(
        os.path.join(pristine_split, os.path.basename(path)), "rb").read()
    try:
      n = records.verify_split(d, "train")
    except ValueError as e:
      assert not unchanged, str(e)
      assert os.path.basename(path) in str(e), (damage, str(e))
      return
    # Accepted: only when nothing changed, or a swap between shards of equal size whose
    # records are whole (the count check cannot see that; the records are still valid).
    assert n == 9
    assert unchanged or kind == "swap", damage
  finally:
    shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------- workdir files

@pytest.fixture(scope="module")
def pristine_workdir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("workdir"))
  workdir_lib.write_config(d, {"skeleton": "lsp14", "input_size": 67, "sigma": 1.0,
                               "num_stages": 2, "data_dir": "/none", "train_split": "train"})
  workdir_lib.write_mean_pose(d, np.zeros((14, 2)))
  config = model_lib.ModelConfig(num_joints=14, input_size=67, width=0.1, fc_units=8)
  for s in (1, 2):
    os.makedirs(workdir_lib.stage_dir(d, s))
    workdir_lib.save_model(model_lib.build_regressor(config, name=f"stage{s}"),
                           workdir_lib.model_path(d, s))
    workdir_lib.save_stats(d, s, {"mean": np.zeros((14, 2)).tolist(),
                                  "chol": np.tile(np.eye(2), (14, 1, 1)).tolist()})
  return d


_FILES = ["config.json", "mean_pose.json", "stage1/displacement.json",
          "stage2/displacement.json", "stage1/model.keras", "stage2/model.keras"]
_JSON_JUNK = ["[]", "{}", "null", '{"mean_pose": "x"}', '{"mean": [[1, 2, 3]], "chol": []}',
              '{"skeleton": 3, "input_size": "a", "sigma": -1, "num_stages": 0}',
              '{"mean_pose": [[NaN, 1]]}', '{"mean": [[Infinity, 0]], "chol": [[[1, 0], [0, 1]]]}']
_FILE_DAMAGE = st.tuples(
    st.sampled_from(_FILES),
    st.one_of(st.tuples(st.just("delete"), st.none()),
              st.tuples(st.just("truncate"), st.floats(0, 0.999)),
              st.tuples(st.just("garbage"), st.binary(max_size=300)),
              st.tuples(st.just("json"), st.sampled_from(_JSON_JUNK))))


def _read(d, name):
  """What uses the file: the consumer the package runs for it."""
  if name == "config.json":
    return workdir_lib.read_config(d)
  if name == "mean_pose.json":
    return workdir_lib.read_mean_pose(d, 14)
  stage = int(name[5])
  if name.endswith("displacement.json"):
    return workdir_lib.load_stats(d, stage)
  return workdir_lib.load_model(workdir_lib.model_path(d, stage))


@_settings("workdir_file")
@given(damage=_FILE_DAMAGE)
def test_a_damaged_workdir_file_is_named(pristine_workdir, damage):
  tried["workdir_file"] += 1
  name, (kind, arg) = damage
  d = tempfile.mkdtemp()
  try:
    shutil.copytree(pristine_workdir, d, dirs_exist_ok=True)
    path = os.path.join(d, name)
    original = open(path, "rb").read()
    if kind == "delete":
      os.remove(path)
      data = None
    else:
      data = {"truncate": lambda: original[:int(arg * len(original))],
              "garbage": lambda: arg, "json": lambda: arg.encode()}[kind]()
      with open(path, "wb") as f:
        f.write(data)
    try:
      _read(d, name)
    except ValueError as e:
      assert data != original, str(e)
      assert name in str(e).replace(os.sep, "/"), (damage, str(e))
      return
    assert data == original, ("accepted a damaged file", damage)
  finally:
    shutil.rmtree(d, ignore_errors=True)


def test_every_property_ran_its_examples():
  assert tried == EXAMPLES, tried
