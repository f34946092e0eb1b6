"""The machine's measured matmul rate (the reference of every ratio) and the timer."""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np

from deeppose_tf.bench.results import Ratio, Result


def timeit(fn: Callable[[], object], min_time: float = 3.0, warmup: int = 2) -> float:
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


def matmul_gflops(n: int = 2048, min_time: float = 3.0, dtype: str = "float32") -> float:
  """GEMM rate (GFLOP/s) of this machine through TF (the same kernels the network uses),
  float32 or bfloat16."""
  import tensorflow as tf
  a = tf.cast(tf.random.normal([n, n]), dtype)
  b = tf.cast(tf.random.normal([n, n]), dtype)
  mm = tf.function(lambda: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b), tf.float32)))
  sec = timeit(lambda: mm().numpy(), min_time)
  return 2 * n ** 3 / sec / 1e9


def fp32_peak(n: int, min_time: float) -> Result:
  """The run's fp32 matmul rate: the reference of the ratios that follow."""
  return Result("matmul fp32", matmul_gflops(n, min_time), "GFLOP/s", "", "matmul_gflops",
                extra={"matmul_n": n})


def bf16_peak(n: int, min_time: float, fp32_gflops: float) -> Result:
  """The bfloat16 matmul rate, against the fp32 one."""
  rate = matmul_gflops(n, min_time, "bfloat16")
  return Result("matmul bfloat16", rate, "GFLOP/s", "", "matmul_bf16_gflops",
                (Ratio(rate / fp32_gflops, "fp32 matmul", "matmul_bf16_over_fp32"),))


def end_peak(n: int, min_time: float, fp32_gflops: float) -> Result:
  """The fp32 rate again at the end of the run: the rate drifts on shared machines, so a
  reader sees how far the ratios could move."""
  rate = matmul_gflops(n, min_time)
  return Result("matmul fp32 again, at the end", rate, "GFLOP/s", "", "matmul_gflops_end",
                (Ratio(rate / fp32_gflops, "the first fp32 matmul", "matmul_end_over_start"),))


def local_rate(n: int, min_time: float) -> Callable[[], Optional[float]]:
  """peak_now for the inference section: the fp32 rate measured now, briefly."""
  return lambda: matmul_gflops(n, min(min_time, 1.5))
