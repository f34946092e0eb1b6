"""The integral head, fully convolutional: the coarsest pyramid map is upsampled and fused
with the finer ones down to `heatmap_stride` into K heatmaps (logits, layer "heatmaps",
(B, H, W, K)); a spatial softmax and the expected (x, y) over the heatmap's cell centres
give the joints (soft-argmax, as DSNT and integral regression). The refinement crop around
joint i reads heatmap i, like the fc head's output i. Every op is a TFLite builtin (softmax,
matmul, resize)."""

from __future__ import annotations

from typing import Dict

import keras

from deeppose_tf.models.heads.base import Head
from deeppose_tf.models.layers import SoftArgmax, conv_bn_relu


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
    x = conv_bn_relu(x, channels, 3, 1, f"head{s}")
  # float32 logits and soft-argmax under bfloat16 training: a softmax over 256+ cells and
  # sub-cell coordinates need more than bfloat16's 8 significant bits.
  return keras.layers.Conv2D(num_joints, 1, name="heatmaps", dtype="float32")(x)


def integral(feats: Dict[int, keras.KerasTensor], num_joints: int, channels: int,
             heatmap_stride: int = 8) -> keras.KerasTensor:
  """`fused_logits` -> joints (B, K, 2) by soft-argmax (the expected position)."""
  logits = fused_logits(feats, num_joints, channels, heatmap_stride)
  return SoftArgmax(name="joints", dtype="float32")(logits)


HEAD = Head(lambda f, c, mean_pose, edges: integral(
    f.pyramid, c.num_joints, c.head_channels, c.heatmap_stride), pyramid=True)
