"""The heads' registry entry. A head maps backbone `Features` to "joints" (B, K, 2),
box-normalized (x, y) in [-0.5, 0.5]^2."""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras


@dataclasses.dataclass(frozen=True)
class Head:
  """A registry entry. build(features, config, mean_pose, edges) -> joints (B, K, 2),
  features a layers.Features, config a builder.ModelConfig and edges the skeleton's (E, 2)
  joint pairs (or None). pyramid: reads the pyramid at config.heatmap_stride and coarser
  (the backbone must have that stride)."""

  build: Callable[..., keras.KerasTensor]
  pyramid: bool = False
