"""Helpers shared by the tests (import them with `from helpers import ...`; pytest puts
tests/ on sys.path): the repository root, a subprocess environment, and tiny real records
with real JPEG/PNG bytes."""

import io
import os

import numpy as np
from PIL import Image

from deeppose_tf.data import records
from deeppose_tf.skeleton import LSP14

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env() -> dict:
  """The environment for running this checkout's entry points in a child process."""
  env = dict(os.environ)
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
  return env


def encode(array: np.ndarray, fmt: str = "JPEG") -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, fmt)
  return buf.getvalue()


def random_records(n, seed=0, size=(40, 64), num_joints=14, fmt="JPEG"):
  """n PoseRecords with random images of random size in [size[0], size[1]) and random
  poses inside the image; every 3rd record has one unannotated joint."""
  rng = np.random.RandomState(seed)
  a, b = LSP14.diameter_indices
  out = []
  for i in range(n):
    h, w = rng.randint(size[0], size[1], 2)
    image = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
    joints = (rng.rand(num_joints, 2) * [w, h]).astype(np.float32)
    visible = np.ones(num_joints, np.float32)
    if i % 3 == 0:
      visible[(i // 3) % num_joints if (i // 3) % num_joints not in (a, b) else 0] = 0
    out.append(records.PoseRecord(f"tiny/{i:04d}", encode(image, fmt), joints, visible))
  return out


def tiny_predict_workdir(d: str, size: int = 67) -> str:
  """A 2-stage workdir of untrained tiny AlexNet fc stages at `size` px (predict's tests:
  real Keras files, fast to load)."""
  import keras
  from deeppose_tf.models import builder as model_lib
  from deeppose_tf import workdir as workdir_lib
  keras.utils.set_random_seed(0)
  config = model_lib.ModelConfig(input_size=size, width=0.1, fc_units=16)
  for s in (1, 2):
    os.makedirs(workdir_lib.stage_dir(d, s))
    workdir_lib.save_model(model_lib.build_regressor(config, name=f"stage{s}"),
                           workdir_lib.model_path(d, s))
  workdir_lib.write_config(d, {"skeleton": "lsp14", "input_size": size, "sigma": 2.0,
                               "num_stages": 2, "model": {"backbone": "alexnet",
                                                          "head": "fc"}})
  return d


def weight_types(model: bytes) -> dict:
  """{output tensor name: weight type name} of the CONV_2D, DEPTHWISE_CONV_2D and
  FULLY_CONNECTED ops of a .tflite file's bytes."""
  from tensorflow.lite.python import schema_py_generated as schema
  from tensorflow.lite.tools import flatbuffer_utils
  m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
  names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
  out = {}
  for g in m.subgraphs:
    for op in g.operators:
      if flatbuffer_utils.opcode_to_name(m, op.opcodeIndex) in (
          "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        out[g.tensors[op.outputs[0]].name.decode()] = names[g.tensors[op.inputs[1]].type]
  return out


# The folder of the peer models, detectors and datasets that some tests use (../shared on the
# developers' machine); users do not have it, so those tests skip with need_shared's reason.
SHARED = os.environ.get("DEEPPOSE_SHARED", os.path.join(REPO, "..", "shared"))


def need_shared(path: str, holds: str) -> str:
  """`path`, or a skip saying it is missing and what DEEPPOSE_SHARED should hold."""
  import pytest
  if not os.path.exists(path):
    pytest.skip(f"{os.path.abspath(path)} is missing (set DEEPPOSE_SHARED to the folder with "
                f"{holds})")
  return path
