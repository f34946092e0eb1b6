"""The DeepPose regressor: ModelConfig and the one builder joining a backbone and a head.

The paper's network (backbone "alexnet", head "fc"):

  C(96, 11x11 /4) - LRN - P - C(256, 5x5) - LRN - P - C(384, 3x3) - C(384, 3x3) - C(256, 3x3)
  - P - F(4096) - F(4096) - linear 2K       (ReLU everywhere, dropout on the F layers)

Input: "image" (B, S, S, 3) float32 in [0, 255] (crop pixels). Output: "joints" (B, K, 2)
box-normalized (x, y). `width` scales the convolution filters and `fc_units` the fully
connected layers so tests and CPU experiments can shrink the net without changing its shape.
`build_regressor` takes the backbone (backbones.BACKBONES: alexnet, a small ResNet,
MobileNetV2, EfficientNet-Lite0, Tompson's multires) and the head (heads.HEADS: fc, integral,
heatmap, tompson) from the config; a new one is a module plus a registry entry there. This
module also keeps the precision handling (with_precision), pretrained-weight loading by layer
name, training_model and forward_flops. Losses are in losses.py, optimizers and schedules
in optim.py.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np

# Importing the registries imports every backbone and head module, which registers the
# package's custom layers for loading saved models.
from deeppose_tf.models import backbones, heads, layers
from deeppose_tf.models.heads.tompson import PairwiseSpatialModel


# The backbones with ImageNet weights (ModelConfig.backbone_weights).
IMAGENET_BACKBONES = ("mobilenetv2", *backbones.efficientnet_lite.VARIANTS)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture knobs. norm: 'lrn' (the paper), 'batch' (BatchNorm after every conv;
  the default because it learns from scratch on CPU budgets), or 'none' (AlexNet only;
  the other backbones always use BatchNorm).
  output_init: 'mean_pose' (zero kernel, mean training pose as bias: starts at the
  baseline instead of with huge outputs) or 'default' (glorot, as the paper).
  backbone: a backbones.BACKBONES key; head: a heads.HEADS key.
  width: filter multiplier (MobileNetV2's alpha). heatmap_stride: 4 or 8, the integral
  head's heatmap cell size in input pixels. backbone_weights: IMAGENET_BACKBONES only,
  None, "imagenet" or a weights file. freeze_stride: IMAGENET_BACKBONES only; 0 trains
  every layer, 2/4/8/16 keeps the backbone's layers at that stride and finer frozen
  (backbones.freeze_to_stride). precision: the training compute dtype, float32 or bfloat16
  (mixed: variables and the output layers stay float32; saved models are float32).
  """

  num_joints: int = 14
  input_size: int = 220
  width: float = 1.0
  fc_units: int = 4096
  dropout: float = 0.6
  norm: str = "batch"
  output_init: str = "mean_pose"
  backbone: str = "alexnet"
  head: str = "fc"
  heatmap_stride: int = 8
  head_channels: int = 128
  backbone_weights: Optional[str] = None
  precision: str = "float32"
  freeze_stride: int = 0

  def __post_init__(self):
    if self.norm not in ("lrn", "batch", "none"):
      raise ValueError(f"norm must be 'lrn', 'batch' or 'none', got {self.norm!r}")
    if self.output_init not in ("mean_pose", "default"):
      raise ValueError(f"output_init must be 'mean_pose' or 'default', got {self.output_init!r}")
    if self.backbone not in backbones.BACKBONES:
      raise ValueError(f"backbone must be one of {tuple(backbones.BACKBONES)}, "
                       f"got {self.backbone!r}")
    if self.head not in heads.HEADS:
      raise ValueError(f"head must be one of {tuple(heads.HEADS)}, got {self.head!r}")
    if self.heatmap_stride not in (4, 8):
      raise ValueError(f"heatmap_stride must be 4 or 8, got {self.heatmap_stride}")
    if self.precision not in PRECISIONS:
      raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
    if not self.width > 0:
      raise ValueError(f"width must be > 0, got {self.width}")
    if self.backbone_weights and self.backbone not in IMAGENET_BACKBONES:
      raise ValueError(f"backbone_weights applies to backbones {IMAGENET_BACKBONES} only "
                       "(use --init_weights to start other backbones from a saved model)")
    if self.freeze_stride and (self.backbone not in IMAGENET_BACKBONES
                               or self.freeze_stride not in (2, 4, 8, 16)):
      raise ValueError(f"freeze_stride {self.freeze_stride}: 0 (train everything), or 2, 4, "
                       f"8 or 16 for backbones {IMAGENET_BACKBONES}; got backbone "
                       f"{self.backbone!r}")
    if self.backbone in backbones.efficientnet_lite.VARIANTS and self.width != 1.0:
      raise ValueError(f"width {self.width}: {self.backbone} has one width (1.0 here; its "
                       "own multiplier is built in), the one its ImageNet weights were "
                       "trained at")
    spec = backbones.BACKBONES[self.backbone]
    if self.input_size < spec.min_input:
      raise ValueError(f"input_size {self.input_size} is too small for the {self.backbone} "
                       f"strides; use at least {spec.min_input}")
    if self.input_size % spec.input_multiple:
      raise ValueError(f"input_size {self.input_size} must be a multiple of "
                       f"{spec.input_multiple} for the {self.backbone} backbone")
    if self.head == "tompson" and self.heatmap_stride != 4:
      raise ValueError("the tompson head makes heatmaps at stride 4; set heatmap_stride=4")
    if heads.HEADS[self.head].pyramid and self.heatmap_stride not in spec.strides:
      raise ValueError(f"heatmap_stride {self.heatmap_stride}: the {self.backbone} backbone "
                       f"has features at strides {spec.strides} only")


def build_regressor(config: ModelConfig, mean_pose: Optional[np.ndarray] = None,
                    name: str = "deeppose_stage", edges: Optional[np.ndarray] = None
                    ) -> keras.Model:
  """The regressor: "image" (B, S, S, 3) float32 in [0, 255] -> "joints" (B, K, 2)
  box-normalized: backbones.BACKBONES[config.backbone] then heads.HEADS[config.head].
  mean_pose (K, 2) box-normalized seeds the fc head's output bias; edges (E, 2), the
  skeleton's joint pairs (Skeleton.edge_indices), are the tompson head's spatial graph.

  Under config.precision == "bfloat16" the layers compute in bfloat16 (Keras
  mixed_bfloat16: float32 variables) except the input scaling and the output layers."""
  previous = keras.config.dtype_policy()
  if config.precision == "bfloat16":
    keras.config.set_dtype_policy("mixed_bfloat16")
  try:
    inputs = keras.Input((config.input_size, config.input_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale", dtype="float32")(inputs)
    features = backbones.BACKBONES[config.backbone].build(x, config)
    if config.freeze_stride:
      backbones.freeze_to_stride(_nested_backbone(inputs, features), config.input_size,
                                 config.freeze_stride)
    out = heads.HEADS[config.head].build(features, config, mean_pose, edges)
    return keras.Model(inputs, out, name=name)
  finally:
    keras.config.set_dtype_policy(previous)


def _nested_backbone(inputs, features) -> keras.Model:
  """The nested "backbone" layer that produced `features` (IMAGENET_BACKBONES build one)."""
  node = features.top._keras_history.operation
  while node is not None and node.name != "backbone":
    parents = node._inbound_nodes[0].parent_nodes if node._inbound_nodes else []
    node = parents[0].operation if parents else None
  if node is None:
    raise ValueError("freeze_stride needs a nested backbone (one of IMAGENET_BACKBONES)")
  return node


def pretrained_weights(path: str) -> Dict[str, List[np.ndarray]]:
  """Per-layer weights of a saved Keras model (.keras), by layer name, for `assign_by_name`:
  a stage of another workdir, or e.g. ImageNet AlexNet features saved as a Keras model
  whose layers are named conv1..conv5, fc6, fc7 like `build_regressor`'s."""
  if not os.path.isfile(path):
    raise ValueError(f"init weights {path!r}: no such file")
  if not path.endswith(".keras"):
    raise ValueError(f"init weights {path!r}: expected a .keras model file (save one with "
                     "model.save('name.keras'))")
  source = keras.models.load_model(path, compile=False)  # LocalResponseNorm is registered
  return {layer.name: layer.get_weights() for layer in source.layers if layer.weights}


def assign_by_name(net: keras.Model, weights: Dict[str, List[np.ndarray]]
                   ) -> Tuple[List[str], List[str]]:
  """Copies `weights` (pretrained_weights) into every layer of `net` with the same name and
  the same weight shapes. Returns (copied, skipped) layer names; a layer whose shapes differ
  (fc8 for another joint count, a conv with a bias where this one has BatchNorm) keeps its
  initialization. Raises when nothing matches: a wrong file must not pass silently."""
  copied, skipped = [], []
  for layer in net.layers:
    if not layer.weights:
      continue
    source = weights.get(layer.name)
    shapes = [tuple(w.shape) for w in layer.weights]
    if source is None or [tuple(w.shape) for w in source] != shapes:
      skipped.append(layer.name)
      continue
    layer.set_weights(source)
    copied.append(layer.name)
  if not copied:
    raise ValueError(f"no layer of {net.name} matches the pretrained weights by name and "
                     f"shape (pretrained layers: {sorted(weights)[:12]})")
  return copied, skipped


PRECISIONS = ("float32", "bfloat16")
# Kept in float32 under bfloat16: the input scaling (pixel values, before any rounding) and
# the output layer and reshape (joints need more than bfloat16's 8 significant bits: 1/256
# of a 440 px box is 1.7 px).
_FLOAT32_LAYERS = ("image", "scale", "fc8", "joints", "heatmaps", "spatial")


def with_precision(net: keras.Model, precision: str) -> keras.Model:
  """The regressor computing in `precision` with the same weights.

  'bfloat16' rebuilds it under Keras's mixed_bfloat16 policy: the convolutions and fc6/fc7
  run in bfloat16 (oneDNN uses AVX512-BF16 / AMX where the CPU has them; measured speedups
  are in BUILD.md) while variables, normalization statistics and the output layers stay
  float32. 'float32' returns `net` itself when it is
  float32 already, else a float32 rebuild (what a bfloat16-trained stage is saved as, so
  export and TFLite see a float32 graph).
  """
  if precision not in PRECISIONS:
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
  config = net.get_config()
  changed = False
  for layer in config["layers"]:
    # LRN stays float32 too: TF has no bfloat16 CPU kernel for it.
    if layer["class_name"] == "InputLayer":
      continue
    if precision == "bfloat16":
      if layer["class_name"] != "LocalResponseNorm" and layer["name"] not in _FLOAT32_LAYERS:
        layer["config"]["dtype"] = "mixed_bfloat16"
        changed = True
    elif _policy_name(layer["config"].get("dtype")) not in (None, "float32"):
      layer["config"]["dtype"] = "float32"
      changed = True
  if not changed:
    return net
  copy = keras.Model.from_config(config)  # the package's layers are registered
  copy.set_weights(net.get_weights())
  return copy


def _policy_name(dtype) -> Optional[str]:
  if isinstance(dtype, dict):
    return dtype.get("config", {}).get("name")
  return dtype


def training_model(net: keras.Model) -> keras.Model:
  """`net` with its heatmap logits as a second output {"joints", "heatmaps"} (same layers
  and variables), for the heatmap loss; `net` itself when it has no "heatmaps" layer. The
  heatmap head's "joints" are the soft-argmax of its logits here (its peak at inference)."""
  try:
    logits = net.get_layer("heatmaps").output
  except ValueError:
    return net
  joints = net.output
  if isinstance(net.get_layer("joints"), layers.HeatmapPeak):
    # The heatmap head trains as the integral head does: the coordinate loss reaches every
    # cell through the soft-argmax of the same logits (the argmax has no gradient).
    joints = layers.SoftArgmax(name="train_joints", dtype="float32")(logits)
  return keras.Model(net.inputs, {"joints": joints, "heatmaps": logits},
                     name=f"{net.name}_train")


def forward_flops(model: keras.Model) -> int:
  """Multiply-adds x 2 of one forward pass of one image: convolutions (plain, depthwise,
  transposed), dense layers and the spatial model, inside nested models too (the ImageNet
  backbones are a nested keras.Model, and depthwise convolutions are not Conv2D subclasses
  in Keras 3: both were once skipped, which counted only the head of MobileNetV2 and
  EfficientNet-Lite). Shapes are read from the built graph, so a nested model must have
  been built at a fixed input size (ValueError naming the layer otherwise)."""
  total = 0
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      total += forward_flops(layer)
      continue
    if not isinstance(layer, (PairwiseSpatialModel, keras.layers.Conv2D, keras.layers.Dense,
                              keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose)):
      continue
    shape = tuple(layer.output.shape)
    if isinstance(layer, keras.layers.Dense):
      c_in, c_out = layer.kernel.shape
      total += 2 * c_in * c_out  # per image: the network's dense layers act on vectors
      continue
    if any(d is None for d in shape[1:]):
      raise ValueError(f"forward_flops: layer {layer.name} of {model.name} has output shape "
                       f"{shape}: build the model at a fixed input size")
    _, h, w, c_out = shape
    if isinstance(layer, PairwiseSpatialModel):
      total += 2 * h * w * len(layer.pairs) * layer.kernel_size ** 2
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
      kh, kw = layer.kernel.shape[:2]
      total += 2 * h * w * c_out * kh * kw  # one kh x kw filter per output channel
    elif isinstance(layer, keras.layers.Conv2DTranspose):
      _, h_in, w_in, c_in = layer.input.shape  # each input pixel scatters a kh x kw x c_out
      kh, kw = layer.kernel.shape[:2]
      total += 2 * h_in * w_in * c_in * kh * kw * c_out
    else:
      kh, kw, c_in, _ = layer.kernel.shape
      total += 2 * h * w * c_out * kh * kw * c_in
  return int(total)
