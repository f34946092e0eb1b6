"""keras.applications.MobileNetV2 (include_top=False) as a backbone, with `weights`: None
(random init), a user-supplied weights file of that network, or "imagenet" from Keras' cache
(downloaded by Keras on a machine that can). Pyramid {4, 8, 16, 32}, top the stride-32 map."""

from __future__ import annotations

import os
from typing import Optional

import keras

from deeppose_tf.models.backbones.base import Backbone, nested_taps
from deeppose_tf.models.layers import Features

# MobileNetV2 layers whose outputs are the feature maps at each stride (the names are
# keras.applications' own).
_MOBILENET_TAPS = {4: "block_3_expand_relu", 8: "block_6_expand_relu",
                   16: "block_13_expand_relu", 32: "out_relu"}


def _mobilenet_file(width: float, rows: int = 224) -> str:
  # keras.applications.mobilenet_v2's own cache name for a no-top file.
  return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(width)}_{rows}_no_top.h5"


def _keras_cache_dir() -> str:
  home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
  return os.path.join(home, "models")


def mobilenet_imagenet_file(width: float, input_size: int) -> Optional[str]:
  """The cached ImageNet file of MobileNetV2 alpha `width` for `input_size`: the one Keras
  would download for it (rows 96-224 have their own files), else the 224-row one, which
  Keras itself uses for other sizes. The no-top network is fully convolutional, so every
  file fits every input size. None when neither is in Keras' cache."""
  rows = input_size if input_size in (96, 128, 160, 192, 224) else 224
  for name in dict.fromkeys([_mobilenet_file(width, rows), _mobilenet_file(width)]):
    path = os.path.join(_keras_cache_dir(), name)
    if os.path.isfile(path):
      return path
  return None


def mobilenetv2(x, input_size: int, width: float = 1.0, weights: Optional[str] = None
                ) -> Features:
  """width is the network's alpha (0.35, 0.5, 0.75, 1.0, 1.3 or 1.4 for which ImageNet
  weights exist; [-1, 1] is its own input range). weights: None, "imagenet" (from Keras'
  cache, see mobilenet_imagenet_file; downloaded by Keras when neither file is there), or
  the path of a weights file saved from keras.applications.MobileNetV2(include_top=False)
  of the same alpha. Returns pyramid {4, 8, 16, 32} and top the stride-32 map; the network
  is one nested layer named "backbone"."""
  if weights and weights != "imagenet" and not os.path.isfile(weights):
    raise ValueError(f"backbone_weights {weights!r}: no such file (or use 'imagenet')")
  if weights == "imagenet":
    weights = mobilenet_imagenet_file(width, input_size) or weights
  try:
    base = keras.applications.MobileNetV2(input_shape=(input_size, input_size, 3),
                                          alpha=width, include_top=False, weights=weights)
  except Exception as e:  # urllib / Keras raise assorted types when the download fails
    if weights != "imagenet":
      raise
    cached = os.path.join(_keras_cache_dir(), _mobilenet_file(width))
    raise ValueError(
        f"MobileNetV2 ImageNet weights (alpha {width}) are not in Keras' cache ({cached}) and "
        f"could not be downloaded ({type(e).__name__}: {str(e)[:120]}). Put the file there, "
        "or pass its path as --backbone_weights.") from None
  return nested_taps(base, _MOBILENET_TAPS, x)


BACKBONE = Backbone(lambda x, c: mobilenetv2(x, c.input_size, c.width, c.backbone_weights),
                    strides=(4, 8, 16, 32))
