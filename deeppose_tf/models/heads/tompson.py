"""Tompson, Jain, LeCun & Bregler (NIPS 2014), the network's head: the part detector's
heatmaps and the spatial model over them, in the cascade's frames. `--method=tompson` builds
backbone "multires" (backbones/multires.py) + this head; its training phases are
methods/tompson.py.

  tompson   the paper's large-kernel convolutions on the multires sum: C(9x9, head_channels)
            - C(1x1, head_channels) - C(1x1, K) = the detector heatmaps "heatmaps" (B, S/4,
            S/4, K), linear, trained with masked MSE against Gaussians at the joints.
            Then the spatial model "spatial" (PairwiseSpatialModel) and the decoding
            "joints" (PeakDecode of the spatial model's log-beliefs) -> (B, K, 2)
            box-normalized, the cascade's stage output.

The spatial model (the paper's eq. for e-bar): for joint A and each partner v in
{A} + the skeleton neighbours of A (`skeleton.edges`, both directions),

  log ebar_A = sum_v log( softplus(k_A|v) * relu(e_v) + softplus(b_A|v) )

with * a 2-D convolution over the partner's heatmap: k_A|v is the prior of where A lies
relative to v. The kernels start as the training set's displacement histograms
(methods/tompson.pairwise_prior, from the records) and are trained. log ebar is
unnormalized: its spatial softmax is the model's belief, trained with the heatmap
cross-entropy against the same Gaussian (losses.heatmap_loss).

Coordinate frames: heatmap cell (i, j) of an H x W map stands for the box-normalized point
((j + 0.5) / W - 0.5, (i + 0.5) / H - 0.5) (layers.cell_centres), as for the integral head.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from deeppose_tf.models import layers
from deeppose_tf.models.heads.base import Head


@keras.saving.register_keras_serializable(package="deeppose_tf")
class PairwiseSpatialModel(keras.layers.Layer):
  """Detector heatmaps (B, H, W, K) -> log-beliefs (B, H, W, K), float32.

  pairs: P (target A, partner v) joint index pairs; every joint needs at least one pair
  with it as target (its own (A, A) pair). kernel_size: odd side k of the prior kernels, in
  taps; rate: heatmap cells between taps (a dilated kernel reaches (k // 2) * rate cells).
  Weights: "kernel" (k, k, P, 1) and "bias" (P,), both pre-softplus.
  Every op is a TFLite builtin (gather, depthwise conv, log, matmul); softplus of the
  weights is folded into constants at export."""

  def __init__(self, pairs: Sequence[Sequence[int]], kernel_size: int, rate: int = 1,
               **kwargs):
    super().__init__(**kwargs)
    self.pairs = [tuple(int(i) for i in p) for p in pairs]
    self.kernel_size = int(kernel_size)
    self.rate = int(rate)
    if self.kernel_size < 1 or self.kernel_size % 2 == 0:
      raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if self.rate < 1:
      raise ValueError(f"rate must be >= 1, got {rate}")

  def build(self, input_shape):
    k = input_shape[-1]
    targets = {a for a, _ in self.pairs}
    if targets != set(range(k)) or any(not 0 <= v < k for _, v in self.pairs):
      raise ValueError(f"pairs must name joints 0..{k - 1} and give every joint a pair; "
                       f"got {self.pairs}")
    p, n = len(self.pairs), self.kernel_size
    # Default start: every kernel a tiny constant (softplus(-9) ~ 1e-4), so every term is
    # about log(bias): no structure yet. Training replaces it with the training set's
    # histograms (set_prior) before the first step.
    self.kernel = self.add_weight(name="kernel", shape=(n, n, p, 1),
                                  initializer=keras.initializers.Constant(-9.0))
    self.bias = self.add_weight(name="bias", shape=(p,),
                                initializer=keras.initializers.Constant(
                                    float(inverse_softplus(0.01))))
    self._sources = tf.constant([v for _, v in self.pairs], tf.int32)
    assign = np.zeros((p, k), np.float32)
    for i, (a, _) in enumerate(self.pairs):
      assign[i, a] = 1.0
    self._assign = tf.constant(assign)

  def call(self, heatmaps):
    e = tf.nn.relu(tf.cast(heatmaps, tf.float32))
    partners = tf.gather(e, self._sources, axis=3)  # (B, H, W, P)
    kernel = tf.math.softplus(tf.cast(self.kernel, tf.float32))
    bias = tf.math.softplus(tf.cast(self.bias, tf.float32))
    conv = tf.nn.depthwise_conv2d(partners, kernel, [1, 1, 1, 1], "SAME",
                                  dilations=[self.rate, self.rate])
    terms = tf.math.log(conv + bias)  # (B, H, W, P), each > log(bias) > -inf
    shape = tf.shape(terms)
    flat = tf.matmul(tf.reshape(terms, [-1, len(self.pairs)]), self._assign)  # sum per A
    return tf.reshape(flat, [shape[0], shape[1], shape[2], self._assign.shape[1]])

  def set_prior(self, kernels: np.ndarray, bias: float = 0.01) -> None:
    """kernels: (P, k, k) non-negative priors (`pairwise_prior`), row i for pair i."""
    kernels = np.asarray(kernels, np.float32)
    n = self.kernel_size
    if kernels.shape != (len(self.pairs), n, n):
      raise ValueError(f"prior kernels must be {(len(self.pairs), n, n)}, got {kernels.shape}")
    raw = inverse_softplus(np.maximum(kernels, 1e-6))
    self.kernel.assign(np.transpose(raw, (1, 2, 0))[..., None])
    self.bias.assign(np.full(len(self.pairs), inverse_softplus(bias), np.float32))

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "pairs": [list(p) for p in self.pairs],
            "kernel_size": self.kernel_size, "rate": self.rate}


def inverse_softplus(y):
  """x with softplus(x) = y, for y > 0 (numpy; exact also for small y)."""
  y = np.asarray(y, np.float64)
  return (y + np.log(-np.expm1(-y))).astype(np.float32)


def graph_pairs(num_joints: int, edges: np.ndarray) -> Tuple[Tuple[int, int], ...]:
  """(A, v) pairs of the spatial model: every (A, A), then both directions of every edge
  (E, 2) of the skeleton: the tree-like graph around each joint."""
  pairs = [(a, a) for a in range(num_joints)]
  for a, b in np.asarray(edges, np.int64).reshape(-1, 2):
    pairs += [(int(a), int(b)), (int(b), int(a))]
  return tuple(pairs)


# Widest prior kernel: TF's CPU gradient of a depthwise filter leaves its fast path above
# 13 x 13 (measured, batch 32, 42 pairs: 13 x 13 at 32 x 32 fwd+bwd 0.08 s, 15 x 15 0.33 s,
# 31 x 31 1.2 s), so larger reaches come from dilation instead of larger kernels.
MAX_KERNEL = 13


def kernel_for(heatmap_size: int) -> Tuple[int, int]:
  """(kernel_size, rate) of the prior kernels on a heatmap_size map: odd, at most
  MAX_KERNEL taps, dilated so they reach half the box from the partner (displacements
  between neighbouring joints beyond that are rare)."""
  half = max(1, heatmap_size // 2)
  rate = max(1, -(-half // (MAX_KERNEL // 2)))
  return min(MAX_KERNEL, 2 * -(-half // rate) + 1), rate


def tompson_head(feats: Dict[int, keras.KerasTensor], num_joints: int, channels: int,
                 edges) -> keras.KerasTensor:
  """feats {4: (B, S/4, S/4, C)} -> joints (B, K, 2); layers "heatmaps" (detector),
  "spatial" (log-beliefs) and "joints"."""
  if edges is None:
    raise ValueError("the tompson head needs the skeleton's edges (build_regressor(..., "
                     "edges=skeleton.edge_indices))")
  x = layers.conv_bn_relu(feats[4], channels, 9, 1, "part9x9")
  x = layers.conv_bn_relu(x, channels, 1, 1, "part1x1")
  # float32 like every output layer (heads/integral.py): the MSE targets and the spatial
  # model's products need more than bfloat16's 8 significant bits. Zero-initialized: the
  # detector starts at the all-zero map, the MSE's easy baseline, instead of spending its
  # first hundreds of steps unlearning random maps (synthetic: mean loss over the first 175
  # steps 669 from random init, 68 from zero).
  heatmaps = keras.layers.Conv2D(num_joints, 1, name="heatmaps", dtype="float32",
                                 kernel_initializer="zeros")(x)
  kernel, rate = kernel_for(heatmaps.shape[1])
  spatial = PairwiseSpatialModel(graph_pairs(num_joints, edges), kernel, rate,
                                 name="spatial", dtype="float32")(heatmaps)
  return layers.PeakDecode(log_space=True, name="joints", dtype="float32")(spatial)


def is_tompson(net: keras.Model) -> bool:
  return any(isinstance(layer, PairwiseSpatialModel) for layer in net.layers)


def detector_only(net: keras.Model) -> keras.Model:
  """The detector of a tompson network (same weights) decoded without the spatial model:
  image -> joints (B, K, 2), the detector phase's pose."""
  heat = net.get_layer("heatmaps").output
  joints = layers.PeakDecode(name="detector_joints", dtype="float32")(heat)
  return keras.Model(net.inputs, joints, name=f"{net.name}_detector")


HEAD = Head(lambda f, c, mean_pose, edges: tompson_head(
    f.pyramid, c.num_joints, c.head_channels, edges), pyramid=True)
