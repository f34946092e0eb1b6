"""Runs the selected benchmarks in order and collects their results into one Report."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Sequence

from deeppose_tf.bench import (accuracy, detector, end_to_end, inference, input_pipeline,
                               inputs, model_file, peak, train_step)
from deeppose_tf.bench.options import BenchConfig
from deeppose_tf.bench.results import Report, value_of
from deeppose_tf.skeleton import LSP14


def run(only: Sequence[str] = BenchConfig.only, **options) -> Report:
  """Runs the benchmarks `only` (the matmul peak always) with BenchConfig's `options`."""
  return run_config(BenchConfig(only=tuple(only), **options))


def run_config(cfg: BenchConfig) -> Report:
  import tensorflow as tf
  from deeppose_tf.models import builder as model_lib
  from deeppose_tf.skeleton import LSP14
  only = set(cfg.only)
  info = {"tensorflow": tf.__version__, "cpus": os.cpu_count()}
  first = peak.fp32_peak(cfg.matmul_n, cfg.min_time)
  results = [first]
  gflops = first.value
  config = cfg.model_config()
  fwd = model_lib.forward_flops(model_lib.build_regressor(
      config, edges=LSP14.edge_indices))
  info["model"] = {"input_size": config.input_size, "width": config.width,
                   "fc_units": config.fc_units, "backbone": config.backbone,
                   "head": config.head, "heatmap_stride": config.heatmap_stride,
                   "head_channels": config.head_channels,
                   "freeze_stride": config.freeze_stride,
                   "forward_gflops_per_crop": fwd / 1e9,
                   "cascade_gflops_per_image_3_stages_14_joints": fwd * (1 + 2 * 14) / 1e9}
  if only & {"train", "e2e"}:
    info["training"] = {"loss": cfg.loss, "heatmap_loss_weight": cfg.heatmap_loss_weight}
  bf16_gflops = None
  if only & {"train", "infer"}:  # measured once, for both
    bf16 = peak.bf16_peak(cfg.matmul_n, cfg.min_time, gflops)
    results.append(bf16)
    bf16_gflops = bf16.value
  refine = inputs.refine_config(cfg.draws)
  with tempfile.TemporaryDirectory() as tmp:
    if "train" in only:
      results += train_step.train_step_results(
          config, cfg.batch_size, fwd, gflops, bf16_gflops, cfg.loss, cfg.heatmap_loss_weight,
          cfg.train_rounds)
    if only & {"pipeline", "e2e"}:
      data_dir, info["data"] = inputs.training_data(tmp, cfg.data_dir, cfg.source_dir,
                                                    cfg.dataset, cfg.num_train)
    if "pipeline" in only:
      results += input_pipeline.pipeline_results(
          data_dir, LSP14, config.input_size, cfg.batch_size, refine, cfg.augment, cfg.cache,
          train_rate=value_of(results, "train_step", "images_per_s"))
    if "e2e" in only:
      e2e_config = dataclasses.replace(config, precision=cfg.precision)
      for r in (None, refine):
        results += end_to_end.end_to_end(
            e2e_config, data_dir, LSP14, cfg.batch_size, r, loss=cfg.loss,
            heatmap_loss_weight=cfg.heatmap_loss_weight, augment=cfg.augment,
            cache_max_side=cfg.cache)
  if "infer" in only:
    results += inference.infer_benchmark(
        config, gflops, bf16_gflops, cfg.stages, cfg.infer_batches, cfg.tflite, cfg.min_time,
        peak_now=peak.local_rate(cfg.matmul_n, cfg.min_time))
  if "quant" in only:
    with tempfile.TemporaryDirectory() as tmp:
      results += accuracy.accuracy_results(cfg.workdir, tmp, cfg.eval_split,
                                           cfg.eval_limit or None)
    info["quant"] = {"workdir": cfg.workdir}
  if "model" in only:
    results += model_file.model_results(cfg.models, cfg.min_time, cfg.threads)
  if "detect" in only:
    results += detector.detector_results(detector.parse_detectors(cfg.detectors),
                                         cfg.models[0] if cfg.models else None, cfg.min_time)
  if only - {"peak"}:
    results.append(peak.end_peak(cfg.matmul_n, cfg.min_time, gflops))
  return Report(info, results)
