"""Does int8 pay on this CPU? Keras' MobileNetV2 alone (no head, no crop, no decoding),
converted by the stock TFLite converter to float32 and to full int8, timed in LiteRT at
batch 1, the two files taking turns in the same run.

  python experiments/int8_backbone_speed.py [--size=192] [--threads=1] [--rounds=50]

Prints one JSON object: each file's median latency (ms), int8 / float32, and the CPU's
SIMD flags from /proc/cpuinfo (XNNPACK's int8 kernels gain most from AVX512-VNNI or
AVX-VNNI, which turn 4 int8 products into one instruction; with AVX2 alone they run at
about the float32 kernels' rate). Random weights: the speed of a network does not depend
on its values, and nothing here is downloaded.

Measured 2026-12-06 (defaults; AMD EPYC Zen 3, `avx avx2` only; both cores loaded by a
training run): float32 10.6 ms, int8 12.2 ms, int8 / float32 1.14x.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np


def cpu_flags():
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          return sorted(x for x in line.split(":", 1)[1].split()
                        if "avx" in x or "vnni" in x or "amx" in x)
  except OSError:
    pass
  return []


def convert(size: int, folder: str):
  """The float32 and int8 files of MobileNetV2 at size x size: {name: path}."""
  import keras
  import tensorflow as tf
  model = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False,
                                         weights=None)
  saved = os.path.join(folder, "saved")
  model.export(saved, verbose=False)
  rng = np.random.default_rng(0)
  paths = {}
  for name in ("float32", "int8"):
    conv = tf.lite.TFLiteConverter.from_saved_model(saved)
    if name == "int8":
      conv.optimizations = [tf.lite.Optimize.DEFAULT]
      conv.representative_dataset = lambda: (
          [rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)] for _ in range(16))
      conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    paths[name] = os.path.join(folder, f"mobilenetv2_{name}.tflite")
    with open(paths[name], "wb") as f:
      f.write(conv.convert())
  return paths


def time_files(paths: dict, threads: int, rounds: int) -> dict:
  """Median batch-1 latency (ms) of each file, the files taking turns round by round."""
  from ai_edge_litert.interpreter import Interpreter
  runs = {}
  for name, path in paths.items():
    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()  # the first call sets up XNNPACK
    runs[name] = it
  times = {name: [] for name in runs}
  for _ in range(rounds):
    for name, it in runs.items():
      t0 = time.perf_counter()
      it.invoke()
      times[name].append(time.perf_counter() - t0)
  return {name: float(np.median(t) * 1e3) for name, t in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", type=int, default=192, help="input side, pixels")
  parser.add_argument("--threads", type=int, default=1, help="LiteRT interpreter threads")
  parser.add_argument("--rounds", type=int, default=50, help="timed calls per file")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as folder:
    paths = convert(args.size, folder)
    sizes = {name: os.path.getsize(p) / 1e6 for name, p in paths.items()}
    ms = time_files(paths, args.threads, args.rounds)
  print(json.dumps({"size": args.size, "threads": args.threads, "rounds": args.rounds,
                    "latency_ms": ms, "size_mb": sizes,
                    "int8_over_float32": ms["int8"] / ms["float32"],
                    "cpu_simd_flags": cpu_flags()}, indent=1))


if __name__ == "__main__":
  main()
