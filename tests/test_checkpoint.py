"""A damaged newest checkpoint: training falls back to the previous one with a warning."""

import glob
import os

import pytest
import tensorflow as tf

from deeppose_tf.models import builder as model_lib
from deeppose_tf import pipeline, trainer
from deeppose_tf.skeleton import LSP14

CONFIG = model_lib.ModelConfig(input_size=72, width=0.1, fc_units=16, dropout=0.0)


def _fit(tiny_data, ckpt, steps):
  fit = trainer.FitConfig(steps=steps, learning_rate=1e-3, checkpoint_every=2, verbose=0)
  data = lambda step: pipeline.train_dataset(tiny_data, "train", LSP14, 72, 4, seed=0)
  return trainer.fit_stage(tf.distribute.get_strategy(),
                           lambda: model_lib.build_regressor(CONFIG), data, ckpt, fit)


@pytest.mark.slow  # 11 s each: the default run stays under 10 minutes
@pytest.mark.parametrize("damage", ["truncate", "delete_index"])
def test_damaged_latest_checkpoint_falls_back_to_previous(tiny_data, tmp_path, damage,
                                                          caplog):
  ckpt = str(tmp_path / "ckpt")
  _fit(tiny_data, ckpt, steps=4)
  assert tf.train.latest_checkpoint(ckpt).endswith("ckpt-4")
  if damage == "truncate":
    (data_file,) = glob.glob(os.path.join(ckpt, "ckpt-4.data-*"))
    size = os.path.getsize(data_file)
    with open(data_file, "r+b") as f:
      f.truncate(size // 2)
  else:
    os.remove(os.path.join(ckpt, "ckpt-4.index"))

  # The absl logger's own level, set for this block only (set_verbosity would leak
  # into every later test).
  with caplog.at_level("INFO", logger="absl"):
    model, history = _fit(tiny_data, ckpt, steps=6)
  text = caplog.text
  assert "ckpt-4 does not restore" in text, text[-2000:]
  assert "resumed from" in text and "(step 2)" in text
  # It retrained steps 3-6 (two epochs of 2 steps) and wrote a good step-6 checkpoint.
  assert len(history["loss"]) == 2
  assert tf.train.latest_checkpoint(ckpt).endswith("ckpt-6")
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(ckpt))
  assert any("iteration" in k for k in reader.get_variable_to_shape_map())
