"""Plain, typed run settings: what a stage needs, built from flags or directly by tests.

Library code receives these objects; only entry points read absl flags (flags.py builds a
`Settings` from them). Nothing here imports the flags module.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np

from deeppose_tf import geometry
from deeppose_tf.models.builder import ModelConfig
from deeppose_tf import skeleton as skeleton_lib
from deeppose_tf.skeleton import Skeleton
from deeppose_tf.trainer import FitConfig


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Random augmentation applied while training (stage 1 and refinement stages).

  translate: max shift of the box centre, as a fraction of its size (uniform, per axis).
  scale: (min, max) uniform factor on the box size.
  rotate: max rotation in degrees (uniform in [-rotate, rotate]); rotation, scale, shift
    and the mirror are one affine warp per crop (geometry.affine_crop), and the joints are
    mapped by the same transform.
  flip: mirror with probability 1/2 (labels swapped by the skeleton's permutation).
  brightness: max additive change, as a fraction of the 0-255 range.
  contrast, saturation: max relative change (factor uniform in [1 - c, 1 + c]).
  The defaults are the paper's light jitter; the flags (deeppose_tf/flags.py) default to
  the stronger recipe that learns on CPU budgets.
  """

  translate: float = 0.05
  scale: tuple = (0.9, 1.1)
  flip: bool = True
  rotate: float = 0.0
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0

  def __post_init__(self):
    for name in ("translate", "rotate", "brightness", "contrast", "saturation"):
      value = getattr(self, name)
      if not 0.0 <= value or value != value:
        raise ValueError(f"augment {name} must be >= 0, got {value}")
    if self.contrast >= 1.0 or self.saturation >= 1.0:
      raise ValueError(f"augment contrast and saturation must be < 1, got {self.contrast}, "
                       f"{self.saturation}")
    if len(self.scale) != 2 or not 0.0 < self.scale[0] <= self.scale[1]:
      raise ValueError(f"augment scale must be (min, max) with 0 < min <= max, got "
                       f"{self.scale}")

  @property
  def colour(self) -> bool:
    return self.brightness > 0 or self.contrast > 0 or self.saturation > 0


NO_AUGMENT = AugmentConfig(translate=0.0, scale=(1.0, 1.0), flip=False)


@dataclasses.dataclass(frozen=True)
class RefineConfig:
  """How a refinement stage (s >= 2) samples its simulated previous-stage predictions.

  sigma: crop side in torso diameters (the paper's sigma); > 0.
  mean: (K, 2) float32 mean displacement of the previous stage, in joint-box units.
  chol: (K, 2, 2) float32 Cholesky factor of its covariance, same units.
  draws: simulated predictions drawn per joint per image; >= 1.
  """

  sigma: float
  mean: np.ndarray
  chol: np.ndarray
  draws: int

  def __post_init__(self):
    mean = np.asarray(self.mean, np.float32)
    chol = np.asarray(self.chol, np.float32)
    if mean.ndim != 2 or mean.shape[1] != 2 or chol.shape != (mean.shape[0], 2, 2):
      raise ValueError(f"RefineConfig: mean must be (K, 2) and chol (K, 2, 2); got "
                       f"{mean.shape} and {chol.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(chol).all()):
      raise ValueError("RefineConfig: the displacement statistics are not finite")
    if not self.sigma > 0:
      raise ValueError(f"RefineConfig: sigma must be > 0, got {self.sigma}")
    if int(self.draws) < 1:
      raise ValueError(f"RefineConfig: draws must be >= 1, got {self.draws}")
    object.__setattr__(self, "mean", mean)
    object.__setattr__(self, "chol", chol)
    object.__setattr__(self, "draws", int(self.draws))

  @classmethod
  def from_stats(cls, stats: dict, sigma: float, draws: int) -> "RefineConfig":
    """From `cascade.displacement_stats`' dict (or its displacement.json)."""
    return cls(sigma=float(sigma), mean=stats["mean"], chol=stats["chol"], draws=draws)


@dataclasses.dataclass
class Settings:
  """Everything a stage needs, from flags (flags.stage_settings) or built directly."""

  data_dir: str
  train_split: str
  model: ModelConfig
  augment: AugmentConfig
  steps: List[int]
  batch_size: int
  fit: FitConfig  # optimizer, loss and schedule; steps is set per stage by fit_for
  sigma: float
  draws: int
  seed: int
  stats_images: int
  num_stages: int
  skeleton: Skeleton
  init_weights: Optional[str] = None
  cache_max_side: Optional[int] = None
  curve_every: int = 0
  curve_images: int = 200
  eval_split: Optional[str] = None
  stats_trim: float = 1.0
  refine_init: str = "scratch"
  phase_steps: Tuple[int, ...] = ()  # tompson stages: steps of each phase (empty: split)
  # The hybrid (--method=hybrid): stage 1's network when it differs from `model`, the
  # network of the refinement stages.
  stage1_model: Optional[ModelConfig] = None
  # More prepared datasets of the same skeleton whose train split joins data_dir's in
  # training (the paper trains LSP on LSP + LSP-extended). Evaluation stays on data_dir.
  extra_train_dirs: Tuple[str, ...] = ()
  # Inference: every stage also reads the mirrored crop (Cascade flip_test). It shapes the
  # statistics that train the next stage, so it is part of the cascade, not a viewer option.
  flip_test: bool = False
  # Inference: stage 1 re-reads the box framing its own pose this many more times (Cascade
  # reframe), with that box this many times the pose's extent. Part of the cascade for the
  # same reason.
  reframe: int = 0
  reframe_grow: float = geometry.FRAMING_GROW
  # Inference: the fraction of each refinement stage's move applied (Cascade refine_step).
  refine_step: float = 1.0
  # Where stage 1 trains (pipeline.STAGE1_BOXES): "image", the whole photo as the paper
  # does, or "joints", the square framing of the annotated joints that --reframe reads.
  stage1_box: str = "image"
  # The left/right labels of the training data (labels.py; the prepared splits' json, see
  # data/relabel.py), which the cascade answers in: "person" or "observer".
  left_right: str = "person"

  def __post_init__(self):
    if isinstance(self.skeleton, str):
      raise TypeError("Settings.skeleton is a Skeleton object (skeleton.get_skeleton(name)), "
                      f"not the name {self.skeleton!r}")

  @property
  def train_dirs(self) -> Tuple[str, ...]:
    """Every folder whose train split trains the stages: data_dir first."""
    return (self.data_dir,) + tuple(self.extra_train_dirs)

  def model_for(self, stage: int) -> ModelConfig:
    """The network of `stage`: `stage1_model` for stage 1 when set, else `model`."""
    return self.stage1_model if stage == 1 and self.stage1_model else self.model

  def steps_for(self, stage: int) -> int:
    return self.steps[min(stage, len(self.steps)) - 1]

  def fit_for(self, stage: int) -> FitConfig:
    """The fit of `stage`: its step count, with the checkpoint interval and the warm-up
    capped to it."""
    steps = self.steps_for(stage)
    return dataclasses.replace(self.fit, steps=steps,
                               checkpoint_every=min(self.fit.checkpoint_every, steps),
                               warmup_steps=min(self.fit.warmup_steps, steps - 1))

  def refine_for(self, stats: dict) -> RefineConfig:
    """The refinement sampling of the stage after the one `stats` measured."""
    return RefineConfig.from_stats(stats, self.sigma, self.draws)

  @property
  def config(self) -> dict:
    """What config.json records: enough to rebuild and run the cascade."""
    return {"skeleton": skeleton_lib.stored(self.skeleton), "input_size": self.model.input_size,
            "sigma": self.sigma, "num_stages": self.num_stages, "data_dir": self.data_dir,
            "train_split": self.train_split, "model": dataclasses.asdict(self.model),
            "flip_test": self.flip_test, "reframe": self.reframe,
            "reframe_grow": self.reframe_grow, "refine_step": self.refine_step,
            "stage1_box": self.stage1_box, "left_right": self.left_right,
            **({"extra_train_dirs": list(self.extra_train_dirs)}
               if self.extra_train_dirs else {}),
            **({"stage1_model": dataclasses.asdict(self.stage1_model)}
               if self.stage1_model else {})}
