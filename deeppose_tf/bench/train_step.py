"""The Keras train step on in-memory tensors, float32 against bfloat16, each against its
own measured matmul peak; also the trainer-equivalent model and step timer e2e uses."""

from __future__ import annotations

import dataclasses
import time
from typing import List

import numpy as np

from deeppose_tf.bench.results import Ratio, Result


def compiled_training_model(config, loss: str = "l2", heatmap_loss_weight: float = 0.0):
  """The stage-1 regressor of `config` as the trainer trains it: model_lib.training_model
  when heatmap_loss_weight > 0 (the heatmap logits as a second output), compiled with
  trainer.FitConfig's compile args (Adam 1e-4, `loss`, the weighted heatmap loss). A
  tompson network (head "tompson", LSP14 graph) trains as in its joint phase: detector
  MSE + spatial cross-entropy. Call inside a strategy's scope to build under it."""
  from deeppose_tf.models import builder as model_lib
  from deeppose_tf import trainer
  from deeppose_tf.methods import tompson
  from deeppose_tf.skeleton import LSP14
  net = model_lib.build_regressor(config, edges=LSP14.edge_indices)
  fit = trainer.FitConfig(steps=1, loss=loss, heatmap_loss_weight=heatmap_loss_weight)
  if config.head == "tompson":
    net = tompson.phase_model(net, tompson.PHASES[-1])
    fit = tompson.phase_fit(fit, tompson.PHASES[-1], fit.steps)
  elif heatmap_loss_weight > 0 or config.head == "heatmap":
    net = model_lib.training_model(net)
  net.compile(**fit.compile_args(net))
  return net


def training_setup(config, batch_size: int, loss: str = "l2",
                   heatmap_loss_weight: float = 0.0, seed: int = 0):
  """(compiled_training_model, an in-memory dataset repeating one random batch with the
  targets as the trainer feeds them). The batch is drawn from `seed`: calls with the same
  sizes get the same batch."""
  import tensorflow as tf
  from deeppose_tf.trainer import targets_for
  net = compiled_training_model(config, loss, heatmap_loss_weight)
  s, k = config.input_size, config.num_joints
  gen = tf.random.Generator.from_seed(seed)
  x = gen.uniform([batch_size, s, s, 3], 0, 255)
  y = tf.concat([gen.uniform([batch_size, k, 2], -0.5, 0.5), tf.ones([batch_size, k, 1])], -1)
  return net, targets_for(net, tf.data.Dataset.from_tensors((x, y)).repeat())


def fit_step_times(net, dataset, steps: int, warmup: int, callbacks=(),
                   restore_malloc: bool = True) -> np.ndarray:
  """Seconds of each of `steps` Keras fit steps after `warmup` steps, from one fit call (so
  the dataset's iterator, prefetch and autotuning stay live across the timed steps). The
  trainer's NaN guard is added: it reads every step's loss, as in training, so each step
  ends synchronized and its time is its own; so is its AllocatorSettings (allocator.py), as
  in training, unless restore_malloc is False (experiments/malloc_ab.py times the steps
  under TensorFlow's patch)."""
  import keras
  from deeppose_tf import trainer

  class StepTimes(keras.callbacks.Callback):
    def __init__(self):
      super().__init__()
      self.times = []

    def on_train_batch_end(self, batch, logs=None):
      self.times.append(time.perf_counter())

  timer = StepTimes()
  net.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, verbose=0, shuffle=False,
          callbacks=[trainer.NanGuard(0),
                     *([trainer.AllocatorSettings()] if restore_malloc else []),
                     *callbacks, timer])
  return np.diff(timer.times[warmup - 1:])


def precision_setups(config, batch_size: int, loss: str = "l2",
                     heatmap_loss_weight: float = 0.0) -> dict:
  """{"float32": training_setup, "bfloat16": training_setup}: the config with precision
  'float32' / 'bfloat16', otherwise the same model with the same initial weights, on the
  same batch."""
  import keras
  setups = {}
  for precision in ("float32", "bfloat16"):
    keras.utils.set_random_seed(0)
    setups[precision] = training_setup(dataclasses.replace(config, precision=precision),
                                       batch_size, loss, heatmap_loss_weight)
  # mixed_bfloat16 keeps float32 variables: the bf16 model starts from the fp32 weights.
  setups["bfloat16"][0].set_weights(setups["float32"][0].get_weights())
  return setups


def step_rates(config, batch_size: int, loss: str = "l2", heatmap_loss_weight: float = 0.0,
               steps: int = 10, warmup: int = 3, rounds: int = 2) -> dict:
  """Images per second of the Keras train step in float32 and in bfloat16 (precision_setups).
  Rounds alternate (fp32, bf16, fp32, ...) so drift on a shared machine hits both; each
  rate is the batch over the median step time of its rounds' pooled steps."""
  setups = precision_setups(config, batch_size, loss, heatmap_loss_weight)
  times = {precision: [] for precision in setups}
  for _ in range(rounds):
    for precision, (net, ds) in setups.items():
      times[precision].extend(fit_step_times(net, ds, steps, warmup).tolist())
  return {p: batch_size / float(np.median(t)) for p, t in times.items()}


def train_step_results(config, batch_size: int, fwd_flops: float, fp32_gflops: float,
                       bf16_gflops: float, loss: str = "l2", heatmap_loss_weight: float = 0.0,
                       rounds: int = 2) -> List[Result]:
  """The train step in both precisions, each against its own precision's matmul peak
  (forward + backward counted as 3 x forward FLOPs), and bf16 over fp32."""
  rates = step_rates(config, batch_size, loss, heatmap_loss_weight, rounds=rounds)
  fp32, bf16 = rates["float32"], rates["bfloat16"]
  return [
      Result(f"train step fp32, batch {batch_size}", fp32, "img/s", "train_step",
             "images_per_s", (Ratio(3 * fwd_flops * fp32 / 1e9 / fp32_gflops,
                                    "fp32 matmul peak", "fraction_of_matmul_peak"),),
             {"batch": batch_size}),
      Result(f"train step bfloat16, batch {batch_size}", bf16, "img/s", "train_step_bf16",
             "images_per_s", (Ratio(3 * fwd_flops * bf16 / 1e9 / bf16_gflops,
                                    "bf16 matmul peak", "fraction_of_bf16_matmul_peak"),),
             {"batch": batch_size}),
      Result("  train step bfloat16 / fp32", bf16 / fp32, "x", "",
             "bf16_over_fp32_train_step"),
  ]
