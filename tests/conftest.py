"""Shared fixtures: tiny datasets written as real TFRecords with real JPEG/PNG bytes."""

import io
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
  """A data_dir with 'train' (24 records) and 'test' (8 records) splits, LSP14."""
  d = str(tmp_path_factory.mktemp("tiny_data"))
  records.write_split(random_records(24, seed=1), d, "train", 14, num_shards=2)
  records.write_split(random_records(8, seed=2), d, "test", 14, num_shards=1)
  return d
