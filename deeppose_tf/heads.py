"""Heads: backbone `Features` -> "joints" (B, K, 2), box-normalized (x, y) in [-0.5, 0.5]^2.

  fc        the paper's: flatten the backbone's top map, fully connected layers (fc6, and
            fc7 on AlexNet as the paper), a linear 2K output fc8.
  integral  fully convolutional: the coarsest pyramid map is upsampled and fused with the
            finer ones down to `heatmap_stride` into K heatmaps (logits, layer
            "heatmaps", (B, H, W, K)); a spatial softmax and the expected (x, y) over the
            heatmap's cell centres give the joints (soft-argmax, as DSNT and integral
            regression). The refinement crop around joint i reads heatmap i, like the fc
            head's output i. Every op is a TFLite builtin (softmax, matmul, resize).
  heatmap   the integral head's layers and training, decoded at each heatmap's peak
            (argmax, refined in its 3x3 neighbourhood) instead of its expected position:
            no pull toward the crop centre when a heatmap is broad or has two modes.
  tompson   Tompson et al. 2014 (tompson.py): 9x9 convolutions to K detector heatmaps
            "heatmaps" at stride 4, the spatial model "spatial" over them and the peak
            decoding "joints". Needs the skeleton's edges.

A new head is one function plus one `HEADS` entry.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from deeppose_tf import backbones
# The decoders live in layers.py (Tompson's network uses them too); their names stay here.
from deeppose_tf.layers import (HeatmapPeak, PeakDecode, SoftArgmax,  # noqa: F401
                                cell_centres, flat_heatmaps)


def _conv_bn_relu(x, filters, kernel, name):
  x = keras.layers.Conv2D(filters, kernel, padding="same", use_bias=False,
                          name=f"{name}_conv")(x)
  x = keras.layers.BatchNormalization(synchronized=True, name=f"{name}_bn")(x)
  return keras.layers.ReLU(name=f"{name}_relu")(x)


def fused_logits(feats: Dict[int, keras.KerasTensor], num_joints: int, channels: int,
                 heatmap_stride: int = 8) -> keras.KerasTensor:
  """feats: {stride: (B, S/stride, S/stride, C)} with the strides up to 16 or 32 and down
  to `heatmap_stride` (4 or 8) -> heatmap logits "heatmaps" (B, S/heatmap_stride,
  S/heatmap_stride, K) float32: the coarsest map upsampled and fused with the finer ones."""
  strides = sorted(s for s in feats if s >= heatmap_stride)
  if heatmap_stride not in feats:
    raise ValueError(f"heatmap_stride {heatmap_stride} needs backbone features at stride "
                     f"{heatmap_stride}; this backbone has {sorted(feats)}")
  x = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"lat{strides[-1]}")(
      feats[strides[-1]])
  for s in reversed(strides[:-1]):
    target = feats[s]
    x = keras.layers.Resizing(target.shape[1], target.shape[2], interpolation="bilinear",
                              name=f"up{s}")(x)
    lateral = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"lat{s}")(target)
    x = keras.layers.Add(name=f"fuse{s}")([x, lateral])
    x = _conv_bn_relu(x, channels, 3, f"head{s}")
  # float32 logits and soft-argmax under bfloat16 training: a softmax over 256+ cells and
  # sub-cell coordinates need more than bfloat16's 8 significant bits.
  return keras.layers.Conv2D(num_joints, 1, name="heatmaps", dtype="float32")(x)


def integral(feats: Dict[int, keras.KerasTensor], num_joints: int, channels: int,
             heatmap_stride: int = 8) -> keras.KerasTensor:
  """`fused_logits` -> joints (B, K, 2) by soft-argmax (the expected position)."""
  logits = fused_logits(feats, num_joints, channels, heatmap_stride)
  return SoftArgmax(name="joints", dtype="float32")(logits)


def heatmap(feats: Dict[int, keras.KerasTensor], num_joints: int, channels: int,
            heatmap_stride: int = 8) -> keras.KerasTensor:
  """`fused_logits` -> joints (B, K, 2) at the heatmap's peak (HeatmapPeak), sub-cell by the
  softmax-weighted mean of its 3x3 neighbourhood. The same layers and names as the integral
  head (weights move between the two by name) and the same training (model.training_model
  substitutes the soft-argmax). Why: the expected position of a heatmap with two modes (a
  left and a right wrist, say) lies between them, far from both, and a broad one pulls every
  joint toward the crop's centre; the peak picks one mode. Measured on the integral-trained
  lsp_imagenet_long cascade (LSPET val, 900 images): PCP stage 1 0.180 -> 0.248, stage 2
  0.272 -> 0.329 from decoding the same logits at the peak (BUILD.md)."""
  logits = fused_logits(feats, num_joints, channels, heatmap_stride)
  return HeatmapPeak(log_space=True, name="joints", dtype="float32")(logits)


def fc(x, num_joints: int, fc_units: int, dropout: float, mean_pose: Optional[np.ndarray],
       hidden: int = 1, output_init: str = "mean_pose") -> keras.KerasTensor:
  """Flatten -> `hidden` (1 or 2) Dense(fc_units) ReLU layers fc6[, fc7] with dropout ->
  linear 2K fc8. output_init 'mean_pose': zero kernel, bias the mean pose (B, K, 2) (zeros
  when None); 'default': Keras' glorot init (the paper)."""
  if hidden not in (1, 2):
    raise ValueError(f"the fc head has 1 or 2 hidden layers (fc6, fc7), got {hidden}")
  x = keras.layers.Flatten(name="flatten")(x)
  for i in range(6, 6 + hidden):
    x = keras.layers.Dense(fc_units, activation="relu", name=f"fc{i}")(x)
    if dropout > 0:
      x = keras.layers.Dropout(dropout, name=f"drop{i}")(x)
  if output_init == "mean_pose":
    bias = np.zeros(2 * num_joints, np.float32) if mean_pose is None else np.asarray(
        mean_pose, np.float32).reshape(2 * num_joints)
    out = keras.layers.Dense(2 * num_joints, kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant(bias), name="fc8",
                             dtype="float32")(x)
  else:
    out = keras.layers.Dense(2 * num_joints, name="fc8", dtype="float32")(x)
  return keras.layers.Reshape((num_joints, 2), name="joints", dtype="float32")(out)


@dataclasses.dataclass(frozen=True)
class Head:
  """A registry entry. build(features, config, mean_pose, edges) -> joints (B, K, 2),
  features a backbones.Features, config a model.ModelConfig and edges the skeleton's (E, 2)
  joint pairs (or None). pyramid: reads the pyramid at config.heatmap_stride and coarser
  (the backbone must have that stride)."""

  build: Callable[..., keras.KerasTensor]
  pyramid: bool = False


HEADS: Dict[str, Head] = {
    "fc": Head(lambda f, c, mean_pose, edges: fc(
        f.top, c.num_joints, c.fc_units, c.dropout, mean_pose,
        hidden=backbones.BACKBONES[c.backbone].fc_layers, output_init=c.output_init)),
    "integral": Head(lambda f, c, mean_pose, edges: integral(
        f.pyramid, c.num_joints, c.head_channels, c.heatmap_stride), pyramid=True),
    "heatmap": Head(lambda f, c, mean_pose, edges: heatmap(
        f.pyramid, c.num_joints, c.head_channels, c.heatmap_stride), pyramid=True),
    "tompson": Head(lambda f, c, mean_pose, edges: _tompson().tompson_head(
        f.pyramid, c.num_joints, c.head_channels, edges), pyramid=True),
}


def _tompson():
  from deeppose_tf import tompson  # imports this module
  return tompson
