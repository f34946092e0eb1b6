"""Shared fixtures: tiny datasets written as real TFRecords with real JPEG/PNG bytes."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from deeppose_tf.data import records
from helpers import random_records


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
  """A data_dir with 'train' (24 records) and 'test' (8 records) splits, LSP14."""
  d = str(tmp_path_factory.mktemp("tiny_data"))
  records.write_split(random_records(24, seed=1), d, "train", 14, num_shards=2)
  records.write_split(random_records(8, seed=2), d, "test", 14, num_shards=1)
  return d
