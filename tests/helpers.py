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
