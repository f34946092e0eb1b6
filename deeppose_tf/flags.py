"""Every training flag, defined once, and their translation into plain settings objects.

Only entry points (train.py) read flags; library code receives `Settings`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import List, Optional

from absl import flags

from deeppose_tf.model import ModelConfig
from deeppose_tf.pipeline import AugmentConfig


def define_train_flags() -> None:
  d = flags
  d.DEFINE_string("workdir", None, "Folder for data (synthetic), checkpoints, models, logs, "
                  "statistics and the evaluation report. Rerunning resumes.")
  d.DEFINE_string("dataset", "synthetic", "synthetic | lsp | lspet | flic.")
  d.DEFINE_string("data_dir", None, "Folder of prepared TFRecords (deeppose_tf.data.prepare). "
                  "Default: WORKDIR/data.")
  d.DEFINE_string("source_dir", None, "Original dataset files; when given and --data_dir "
                  "holds no records yet, they are prepared first.")
  d.DEFINE_integer("num_train", 5000, "Synthetic: training images to generate.")
  d.DEFINE_integer("num_test", 500, "Synthetic: test images to generate.")
  d.DEFINE_integer("num_stages", 3, "Cascade stages S (the paper: 3).")
  d.DEFINE_integer("stage", None, "Train only this stage (1-based); earlier stages must "
                   "exist in the workdir.")
  d.DEFINE_list("steps_per_stage", ["2000"], "Optimizer steps per stage: one value for all "
                "stages or one per stage (comma separated).")
  d.DEFINE_integer("batch_size", 128, "Global batch size (split over replicas). Refinement "
                   "stages count crops.")
  d.DEFINE_float("learning_rate", 1e-4, "Learning rate (the paper: 5e-4 with Adagrad).")
  d.DEFINE_enum("optimizer", "adam", ["adam", "adagrad", "sgd"], "Optimizer (the paper: "
                "adagrad; adam learns more reliably from scratch, see design.md).")
  d.DEFINE_integer("input_size", 220, "Crop side S in pixels (the paper: 220).")
  d.DEFINE_float("width", 1.0, "Multiplier on the AlexNet convolution filter counts.")
  d.DEFINE_integer("fc_units", 4096, "Units of the two fully connected layers.")
  d.DEFINE_float("dropout", 0.6, "Dropout rate on the fully connected layers.")
  d.DEFINE_enum("norm", "batch", ["batch", "lrn", "none"], "Normalization after convs: "
                "'lrn' is the paper's; 'batch' (default) learns from scratch on CPU budgets.")
  d.DEFINE_enum("output_init", "mean_pose", ["mean_pose", "default"], "Output layer start: "
                "zero weights + mean training pose bias, or Keras' default (the paper).")
  d.DEFINE_float("sigma", 2.0, "Refinement box side in torso diameters (FLIC 1.0, LSP 2.0).")
  d.DEFINE_integer("draws", 40, "Refinement crops drawn per training image per visit (the "
                   "paper: 40 per joint).")
  d.DEFINE_float("translate", 0.05, "Stage-1 box jitter: max centre shift, fraction of size.")
  d.DEFINE_list("scale", ["0.9", "1.1"], "Box scale jitter range min,max.")
  d.DEFINE_boolean("flip", True, "Random left/right mirroring with joint relabelling.")
  d.DEFINE_integer("seed", 0, "Seed for data generation, shuffling and augmentation.")
  d.DEFINE_enum("strategy", "mirrored", ["mirrored", "multi_worker"], "mirrored: one "
                "process over its GPUs or --cpu_replicas CPU devices. multi_worker: one process "
                "per machine, cluster and role from the TF_CONFIG environment variable; the "
                "chief writes, --workdir must be shared (see BUILD.md).")
  d.DEFINE_integer("cpu_replicas", 1, "Split the CPU into this many logical devices for "
                   "MirroredStrategy (ignored when GPUs are present).")
  d.DEFINE_integer("checkpoint_every", 200, "Steps between checkpoints.")
  d.DEFINE_integer("stats_images", 2000, "Training images used for a stage's displacement "
                   "statistics (0 = all).")
  d.DEFINE_boolean("evaluate", True, "Evaluate the cascade on the test split at the end.")
  d.DEFINE_integer("eval_limit", 0, "Evaluate on at most this many test images (0 = all).")
  d.DEFINE_boolean("export", True, "Export the trained cascade as a TF Serving SavedModel "
                   "(next free version under --export_dir) at the end.")
  d.DEFINE_string("export_dir", None, "Where --export writes. Default: WORKDIR/export.")
  d.DEFINE_integer("eval_batch_size", 16, "Images per evaluation batch.")
  d.DEFINE_string("init_weights", None, "A .keras model to start every stage's network from "
                  "(e.g. ImageNet AlexNet features saved with layers named conv1..conv5, "
                  "fc6, fc7, or a stage of another workdir): layers are copied by name where "
                  "their shapes match, the rest keep their initialization. A stage that "
                  "resumes from its checkpoint ignores it.")
  d.mark_flag_as_required("workdir")


def resolve_data_dir(f) -> str:
  return f.data_dir or os.path.join(f.workdir, "data")


@dataclasses.dataclass
class Settings:
  """Everything a stage needs, from flags or built directly by tests."""

  data_dir: str
  train_split: str
  model: ModelConfig
  augment: AugmentConfig
  steps: List[int]
  batch_size: int
  learning_rate: float
  optimizer: str
  sigma: float
  draws: int
  seed: int
  checkpoint_every: int
  stats_images: int
  num_stages: int
  skeleton: str
  verbose: Optional[int] = None
  init_weights: Optional[str] = None

  def steps_for(self, stage: int) -> int:
    return self.steps[min(stage, len(self.steps)) - 1]

  @property
  def config(self) -> dict:
    """What config.json records: enough to rebuild and run the cascade."""
    return {"skeleton": self.skeleton, "input_size": self.model.input_size,
            "sigma": self.sigma, "num_stages": self.num_stages, "data_dir": self.data_dir,
            "train_split": self.train_split, "model": dataclasses.asdict(self.model)}


def stage_settings(f, skeleton, data_dir: str) -> Settings:
  steps = [int(s) for s in f.steps_per_stage]
  if not steps or any(s <= 0 for s in steps):
    raise ValueError(f"--steps_per_stage must be positive integers, got {f.steps_per_stage}")
  scale = tuple(float(s) for s in f.scale)
  if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
    raise ValueError(f"--scale must be min,max with 0 < min <= max, got {f.scale}")
  if f.stage is not None and not 1 <= f.stage <= f.num_stages:
    raise ValueError(f"--stage={f.stage} is outside 1..--num_stages={f.num_stages}")
  if f.init_weights and not os.path.isfile(f.init_weights):
    raise ValueError(f"--init_weights={f.init_weights}: no such file")
  return Settings(
      data_dir=data_dir, train_split="train",
      model=ModelConfig(num_joints=skeleton.num_joints, input_size=f.input_size,
                        width=f.width, fc_units=f.fc_units, dropout=f.dropout, norm=f.norm,
                        output_init=f.output_init),
      augment=AugmentConfig(translate=f.translate, scale=scale, flip=f.flip),
      steps=steps, batch_size=f.batch_size, learning_rate=f.learning_rate,
      optimizer=f.optimizer, sigma=f.sigma, draws=f.draws, seed=f.seed,
      checkpoint_every=f.checkpoint_every, stats_images=f.stats_images,
      num_stages=f.num_stages, skeleton=skeleton.name, init_weights=f.init_weights)
