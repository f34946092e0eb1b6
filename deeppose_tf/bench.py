"""Performance benchmarks: a readable table on stdout and JSON.

  python -m deeppose_tf.bench [--only=peak,pipeline,train,infer] [--json=FILE]
      [--data_dir=DIR] [--input_size=220] [--width=1.0] [--fc_units=4096]

Every figure is measured in the same run as the machine's fp32 matmul rate, so it is also
reported as a fraction of that peak (absolute times on shared machines drift).
Data: --data_dir (prepared TFRecords), else ../shared/data/lspet prepared into a temp dir
when present, else a freshly generated synthetic set.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Callable, Dict

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS


def _timeit(fn: Callable[[], object], min_time: float = 3.0, warmup: int = 2) -> float:
  """Median seconds per call of fn over at least `min_time` seconds (after warm-up)."""
  for _ in range(warmup):
    fn()
  times = []
  start = time.perf_counter()
  while time.perf_counter() - start < min_time or len(times) < 3:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def matmul_peak(n: int = 2048) -> Dict[str, float]:
  """fp32 GEMM rate of this machine through TF (the same kernels the network uses)."""
  import tensorflow as tf
  a = tf.random.normal([n, n])
  b = tf.random.normal([n, n])
  mm = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
  sec = _timeit(lambda: mm().numpy())
  return {"matmul_n": n, "matmul_gflops": 2 * n ** 3 / sec / 1e9}


def pipeline_throughput(data_dir: str, skeleton, input_size: int, batch_size: int,
                        refine: dict = None, batches: int = 30) -> float:
  """Examples (images for stage 1, crops for refinement) per second out of tf.data."""
  from deeppose_tf import pipeline
  ds = pipeline.train_dataset(data_dir, "train", skeleton, input_size, batch_size, seed=0,
                              refine=refine)
  it = iter(ds)
  for _ in range(3):
    next(it)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch_size / (time.perf_counter() - t)


def train_step_throughput(config, batch_size: int, steps: int = 10) -> float:
  """Images per second of the Keras train step on in-memory tensors."""
  import keras
  import tensorflow as tf
  from deeppose_tf import model as model_lib
  net = model_lib.build_regressor(config)
  net.compile(keras.optimizers.Adam(1e-4), model_lib.masked_l2_loss)
  s, k = config.input_size, config.num_joints
  x = tf.random.uniform([batch_size, s, s, 3], 0, 255)
  y = tf.concat([tf.random.uniform([batch_size, k, 2], -0.5, 0.5), tf.ones([batch_size, k, 1])],
                -1)
  ds = tf.data.Dataset.from_tensors((x, y)).repeat()
  net.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
  t = time.perf_counter()
  net.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
  return steps * batch_size / (time.perf_counter() - t)


def _data_dir(tmp: str) -> tuple:
  from deeppose_tf.data import prepare
  if FLAGS.data_dir:
    return FLAGS.data_dir, "given"
  lspet = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "lspet")
  out = os.path.join(tmp, "data")
  if os.path.isdir(lspet):
    from deeppose_tf.data import lsp, records
    recs = (r for i, r in enumerate(lsp.read_lspet(lspet, "train")) if i < 1000)
    records.write_split(recs, out, "train", 14)
    return out, "lspet (first 1000 training images)"
  prepare.prepare("synthetic", out, num_train=1000, num_test=10)
  return out, "synthetic (1000 images)"


def main(argv):
  del argv
  import tensorflow as tf
  from deeppose_tf import model as model_lib
  from deeppose_tf.skeleton import LSP14
  only = set(FLAGS.only)
  result: Dict[str, object] = {"tensorflow": tf.__version__, "cpus": os.cpu_count()}
  peak = matmul_peak()
  result.update(peak)
  gflops = peak["matmul_gflops"]
  config = model_lib.ModelConfig(num_joints=14, input_size=FLAGS.input_size, width=FLAGS.width,
                                 fc_units=FLAGS.fc_units)
  fwd = model_lib.forward_flops(model_lib.build_regressor(config))
  result["model"] = {"input_size": config.input_size, "width": config.width,
                     "fc_units": config.fc_units, "forward_gflops_per_crop": fwd / 1e9,
                     "cascade_gflops_per_image_3_stages_14_joints": fwd * (1 + 2 * 14) / 1e9}
  rows = [("matmul fp32", f"{gflops:.0f} GFLOP/s", "1.00")]
  with tempfile.TemporaryDirectory() as tmp:
    if "train" in only:
      rate = train_step_throughput(config, FLAGS.batch_size)
      frac = 3 * fwd * rate / 1e9 / gflops
      result["train_step"] = {"batch": FLAGS.batch_size, "images_per_s": rate,
                              "fraction_of_matmul_peak": frac}
      rows.append((f"train step, batch {FLAGS.batch_size}", f"{rate:.1f} img/s", f"{frac:.2f}"))
    if "pipeline" in only:
      data_dir, source = _data_dir(tmp)
      result["pipeline_data"] = source
      s1 = pipeline_throughput(data_dir, LSP14, config.input_size, FLAGS.batch_size)
      refine = {"sigma": 2.0, "mean": np.zeros((14, 2)),
                "chol": np.tile(np.eye(2) * 0.2, (14, 1, 1)), "draws": FLAGS.draws}
      s2 = pipeline_throughput(data_dir, LSP14, config.input_size, FLAGS.batch_size, refine)
      result["pipeline"] = {"stage1_images_per_s": s1, "refine_crops_per_s": s2,
                            "draws": FLAGS.draws}
      rows.append(("pipeline stage 1", f"{s1:.0f} img/s", ""))
      rows.append((f"pipeline refine ({FLAGS.draws} draws)", f"{s2:.0f} crops/s", ""))
      if "train_step" in result:
        need = result["train_step"]["images_per_s"]
        result["pipeline"]["stage1_over_train_step"] = s1 / need
        result["pipeline"]["refine_over_train_step"] = s2 / need
        rows.append(("  pipeline / train step", f"{s1 / need:.2f}x, {s2 / need:.2f}x", ""))
  width = max(len(r[0]) for r in rows)
  print(f"{'benchmark':<{width}}  {'rate':>22}  of peak")
  for name, rate, frac in rows:
    print(f"{name:<{width}}  {rate:>22}  {frac}")
  if FLAGS.json:
    from deeppose_tf import atomic
    atomic.write_text(FLAGS.json, json.dumps(result, indent=1))
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  flags.DEFINE_list("only", ["peak", "pipeline", "train"], "Benchmarks to run.")
  flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
  flags.DEFINE_string("data_dir", None, "Prepared TFRecords with a 'train' split.")
  flags.DEFINE_integer("input_size", 220, "Network input size.")
  flags.DEFINE_float("width", 1.0, "Filter multiplier.")
  flags.DEFINE_integer("fc_units", 4096, "Fully connected units.")
  flags.DEFINE_integer("batch_size", 32, "Batch size (images or crops).")
  flags.DEFINE_integer("draws", 40, "Refinement crops per image visit.")
  app.run(main)
