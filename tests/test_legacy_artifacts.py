"""Model files written by an older version of the package still load and give the same outputs.

tests/data/legacy holds what commit 61343ae wrote (tests/data/legacy/make.py, run there):
before the networks moved into the deeppose_tf.models package. Keras finds the package's
custom layers by their registered names ("deeppose_tf>SoftArgmax"), not by module path, so
moving a module must not change what a saved file loads as. Checked for one of each kind a
user keeps: a training workdir, a SavedModel (in a fresh process, as a server would load it),
a .tflite file with its sidecar, and a saved network per registered custom layer.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from deeppose_tf.predict import models

from helpers import REPO, subprocess_env

LEGACY = os.path.join(REPO, "tests", "data", "legacy")
NETWORKS = ("alexnet_lrn_fc", "resnet_integral", "multires_tompson")


@pytest.fixture(scope="module")
def expected():
  return dict(np.load(os.path.join(LEGACY, "expected.npz")))


@pytest.mark.parametrize("name", NETWORKS)
def test_saved_networks_load_with_identical_outputs(expected, name):
  import deeppose_tf.models.builder  # noqa: F401  (registers the package's layers)
  net = keras.models.load_model(os.path.join(LEGACY, "networks", f"{name}.keras"), compile=False)
  got = np.asarray(net(expected[f"{name}/images"], training=False))
  want = expected[f"{name}/joints"]
  assert np.abs(want).max() > 0.01 and np.std(want) > 0.01  # not a constant the load could hit
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_workdir_predicts_the_same_poses(expected):
  model = models.load(os.path.join(LEGACY, "workdir"))
  assert model.num_stages == 2 and model.skeleton.num_joints == 14
  got = model.predict([expected["cascade/image"]] * 2, expected["cascade/boxes"])
  np.testing.assert_allclose(got, expected["cascade/workdir"], atol=1e-3)


_CHILD = """
import json, sys
import numpy as np
from deeppose_tf.predict import models
e = np.load(sys.argv[1])
out = {}
for kind, path in (("saved_model", sys.argv[2]), ("tflite", sys.argv[3])):
  m = models.load(path)
  out[kind] = m.predict([e["cascade/image"]] * 2, e["cascade/boxes"]).tolist()
print(json.dumps(out))
"""


@pytest.mark.slow  # a child process loading TensorFlow, a SavedModel and LiteRT: about 15 s
def test_saved_model_and_tflite_give_the_same_poses_in_a_fresh_process(expected):
  run = subprocess.run(
      [sys.executable, "-c", _CHILD, os.path.join(LEGACY, "expected.npz"),
       os.path.join(LEGACY, "serving", "1"), os.path.join(LEGACY, "cascade.tflite")],
      capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  got = json.loads(run.stdout.strip().splitlines()[-1])
  for kind in ("saved_model", "tflite"):
    np.testing.assert_allclose(np.array(got[kind]), expected[f"cascade/{kind}"], atol=1e-3,
                               err_msg=kind)
