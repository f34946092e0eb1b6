"""What every backbone shares: the registry entry `Backbone`, the nested-network taps of the
ImageNet backbones (`nested_taps`) and their partial freezing (`freeze_to_stride`).

A backbone maps the scaled image (B, S, S, 3) in [-1, 1] to a `Features` (layers.py):
  pyramid  {stride: (B, S/stride, S/stride, C)}, the maps a dense head fuses (the integral
           head reads strides heatmap_stride and coarser);
  top      the map a global head flattens (the fc head).
All layers are named, so `builder.assign_by_name` copies pretrained weights between networks
of the same backbone.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Tuple

import keras

from deeppose_tf.models.layers import Features


@dataclasses.dataclass(frozen=True)
class Backbone:
  """A registry entry. build(x, config) -> Features, x the scaled image and config a
  builder.ModelConfig. strides: the pyramid's keys. min_input / input_multiple: the input
  sizes its strides allow. fc_layers: hidden layers of the fc head on it (the paper's
  fc6, fc7 on AlexNet)."""

  build: Callable[..., Features]
  strides: Tuple[int, ...]
  min_input: int = 32
  input_multiple: int = 16
  fc_layers: int = 1


def nested_taps(base: keras.Model, taps: Dict[int, str], x) -> Features:
  """`base`'s layers `taps` {stride: layer name} as one nested layer named "backbone",
  called on x. The nested model outputs a list in stride order, not a dict: Keras 3 wires
  a nested model's dict outputs back in another order on load (int keys sorted as
  strings), which fed the stride-16 map where the stride-32 one belonged."""
  strides = sorted(taps)
  nested = keras.Model(base.input, [base.get_layer(taps[s]).output for s in strides],
                       name="backbone")
  feats = dict(zip(strides, nested(x)))
  return Features(feats, feats[strides[-1]])


def freeze_to_stride(nested: keras.Model, input_size: int, stride: int) -> list:
  """Freezes every layer of the nested backbone whose output is at `stride` or finer (its
  maps at least input_size / stride cells high); returns their names.

  Why: on a CPU the backward pass of an ImageNet backbone's high-resolution depthwise
  layers costs most of a training step (MobileNetV2 at 128 px, batch 32: 1.02 s per step
  trainable, 0.46 s with stride <= 8 frozen; BUILD.md), and their ImageNet features (edges,
  textures) are the ones a pose task changes least. Frozen BatchNorm layers run on their
  stored ImageNet statistics, which also spares them noisy small-batch statistics."""
  if stride <= 0:
    return []
  cells = -(-input_size // stride)
  frozen = []
  for layer in nested.layers:
    shape = getattr(layer, "output", None)
    shape = getattr(shape, "shape", None)
    if shape is not None and len(shape) == 4 and shape[1] is not None and shape[1] >= cells:
      layer.trainable = False
      if layer.weights:
        frozen.append(layer.name)
  return frozen
