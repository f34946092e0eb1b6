"""What a benchmark run measures: BenchConfig, one field per command-line flag (same names),
checked on construction with messages naming the flag, its value and the allowed values."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Tuple

from deeppose_tf import losses
from deeppose_tf.models import builder
from deeppose_tf.models.backbones import BACKBONES as _BACKBONES
from deeppose_tf.models.heads import HEADS as _HEADS
from deeppose_tf.data import datasets
from deeppose_tf.skeleton import LSP14

BENCHMARKS = ("peak", "pipeline", "train", "e2e", "infer", "quant", "model", "detect")
AUGMENTS = ("recipe", "paper")  # pipeline.RECIPE_AUGMENT or the paper's light jitter
# Datasets read from --source_dir: those with original files on the LSP14 skeleton, the
# joints the bench network predicts.
SOURCE_DATASETS = tuple(name for name, spec in datasets.DATASETS.items()
                        if spec.needs_source and spec.skeleton == LSP14)
BACKBONES = tuple(_BACKBONES)
HEADS = tuple(_HEADS)
HEATMAP_STRIDES = (4, 8)
LOSSES = losses.LOSSES
PRECISIONS = builder.PRECISIONS


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """Every option of a run; see __main__.py's flag help for each."""

  only: Tuple[str, ...] = ("peak", "pipeline", "train")
  # data of the pipeline and e2e sections
  data_dir: Optional[str] = None
  source_dir: Optional[str] = None
  dataset: str = "lspet"
  num_train: int = 1000
  augment: str = "recipe"
  cache_max_side: int = 320
  # the network of every section
  input_size: int = 220
  width: float = 1.0
  fc_units: int = 4096
  backbone: str = "alexnet"
  head: str = "fc"
  heatmap_stride: int = 8
  head_channels: int = 128
  freeze_stride: int = 0
  # training (train, e2e)
  loss: str = "l2"
  heatmap_loss_weight: float = 0.0
  precision: str = "float32"
  batch_size: int = 32
  draws: int = 40
  train_rounds: int = 2
  # inference
  stages: int = 3
  infer_batches: Tuple[int, ...] = (1, 8, 32)
  tflite: bool = True
  # the predict command's models (section "model")
  models: Tuple[str, ...] = ()
  # interpreter threads each model is timed with (section "model"; TFLite files)
  threads: Tuple[int, ...] = (1, 2)
  # person boxes (section "detect"): detector names, "NAME:FILE" for the TFLite ones
  detectors: Tuple[str, ...] = ()
  # accuracy
  workdir: Optional[str] = None
  eval_split: str = "test"
  eval_limit: int = 0
  # timing
  min_time: float = 3.0
  matmul_n: int = 2048

  def __post_init__(self):
    only = tuple(self.only)
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
      raise ValueError(f"--only={','.join(only)}: unknown benchmarks {unknown}; allowed: "
                       f"{', '.join(BENCHMARKS)}")
    object.__setattr__(self, "only", only)
    object.__setattr__(self, "models", tuple(self.models))
    object.__setattr__(self, "detectors", tuple(self.detectors))
    for name in ("threads", "infer_batches"):  # lists of positive integers
      given = getattr(self, name)
      try:
        values = tuple(int(v) for v in given)
      except (TypeError, ValueError):
        values = ()
      if not values or min(values) < 1:
        raise ValueError(f"--{name}={','.join(map(str, given))}: must be one or more "
                         "positive integers")
      object.__setattr__(self, name, values)
    for name, allowed in (("augment", AUGMENTS), ("dataset", SOURCE_DATASETS),
                          ("backbone", BACKBONES), ("head", HEADS),
                          ("heatmap_stride", HEATMAP_STRIDES), ("loss", LOSSES),
                          ("precision", PRECISIONS)):
      value = getattr(self, name)
      if value not in allowed:
        raise ValueError(f"--{name}={value}: allowed values are "
                         f"{', '.join(map(str, allowed))}")
    for name in ("num_train", "input_size", "fc_units", "head_channels", "batch_size",
                 "draws", "train_rounds", "stages", "matmul_n"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"--{name}={getattr(self, name)}: must be an integer >= 1")
    for name in ("width", "min_time"):
      if not getattr(self, name) > 0:
        raise ValueError(f"--{name}={getattr(self, name)}: must be > 0")
    if self.eval_limit < 0:
      raise ValueError(f"--eval_limit={self.eval_limit}: must be >= 0 (0 = all)")
    if self.cache_max_side < -1:
      raise ValueError(f"--cache_max_side={self.cache_max_side}: must be >= -1 (-1 = no "
                       "cache, 0 = full size)")
    if not self.heatmap_loss_weight >= 0:
      raise ValueError(f"--heatmap_loss_weight={self.heatmap_loss_weight}: must be >= 0")
    if self.heatmap_loss_weight > 0 and self.head not in ("integral", "heatmap", "tompson"):
      raise ValueError(f"--heatmap_loss_weight={self.heatmap_loss_weight} needs "
                       f"--head=integral, heatmap or tompson, got --head={self.head} (the "
                       "heatmap loss trains a heatmap head's heatmaps)")
    if self.data_dir and self.source_dir:
      raise ValueError(f"--data_dir={self.data_dir} and --source_dir={self.source_dir}: give "
                       "one of them (or neither, for the built-in synthetic set)")
    for name in ("data_dir", "source_dir", "workdir"):
      path = getattr(self, name)
      if path and not os.path.isdir(path):
        raise ValueError(f"--{name}={path}: no such directory")
    if "model" in only and not self.models:
      raise ValueError("--only includes model, which measures model files: pass "
                       "--models=PATH[,PATH...] (a .tflite file, a SavedModel or a workdir)")
    if "detect" in only:
      from deeppose_tf.bench.detector import parse_detectors
      for _, path, _ in parse_detectors(self.detectors):
        if path and not os.path.isfile(path):
          raise ValueError(f"--detectors: {path}: no such file")
    if "quant" in only and not self.workdir:
      raise ValueError("--only includes quant, which measures a trained cascade: pass "
                       "--workdir")

  @property
  def cache(self) -> Optional[int]:
    """pipeline.train_dataset's cache_max_side (None: no cache)."""
    return None if self.cache_max_side < 0 else self.cache_max_side

  def model_config(self):
    """The network of every section (14 joints: LSP14)."""
    return builder.ModelConfig(num_joints=14, input_size=self.input_size, width=self.width,
                               fc_units=self.fc_units, backbone=self.backbone,
                               head=self.head, heatmap_stride=self.heatmap_stride,
                               head_channels=self.head_channels,
                               freeze_stride=self.freeze_stride)
