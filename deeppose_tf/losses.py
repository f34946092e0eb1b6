"""The training losses: the masked coordinate loss on the joints (l2, l1, smooth_l1), the
heatmap cross-entropy for heads with heatmap logits, and the masked heatmap MSE of Tompson
et al.'s detector; plus the Gaussian target heatmaps both heatmap losses compare with."""

from __future__ import annotations

import tensorflow as tf

from deeppose_tf.models import layers

LOSSES = ("l2", "l1", "smooth_l1")
# smooth_l1 is quadratic below this error (box-normalized units: 2% of the box side) and
# linear above, so it keeps L1's robustness to far-off joints and L2's smooth optimum.
SMOOTH_L1_BETA = 0.02


def coordinate_loss(kind: str = "l2"):
  """The masked coordinate loss: l2 (the paper: squared error), l1 or smooth_l1, summed
  over x, y and the annotated joints.

  The returned fn takes y_true (B, K, 3) = target (x, y) and mask, y_pred (B, K, 2), both
  box-normalized, and returns (B,) per example; Keras averages over the global batch, so
  replicas agree with a single device."""
  if kind not in LOSSES:
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")

  def loss(y_true, y_pred):
    mask = y_true[..., 2]
    err = tf.cast(y_pred, tf.float32) - y_true[..., :2]
    if kind == "l2":
      per = tf.square(err)
    elif kind == "l1":
      per = tf.abs(err)
    else:
      a = tf.abs(err)
      per = tf.where(a < SMOOTH_L1_BETA, 0.5 * tf.square(a) / SMOOTH_L1_BETA,
                     a - 0.5 * SMOOTH_L1_BETA)
    return tf.reduce_sum(tf.reduce_sum(per, axis=-1) * mask, axis=-1)

  loss.__name__ = f"masked_{kind}"
  return loss


masked_l2_loss = coordinate_loss("l2")


def heatmap_loss(sigma: float = 1.0):
  """Cross-entropy between the spatial softmax of the heatmap logits and a Gaussian of
  std `sigma` heatmap cells at the target joint (the DSNT-style regularizer: it gives the
  soft-argmax a peaked, unimodal heatmap to learn instead of any distribution with the
  right mean, which is what makes the integral head learn fast from scratch).

  The returned fn takes y_true (B, K, 3) box-normalized target and mask, y_pred (B, H, W, K)
  logits; returns (B,), summed over annotated joints whose target lies inside the crop."""
  if not sigma > 0:
    raise ValueError(f"heatmap sigma must be > 0, got {sigma}")

  def loss(y_true, y_pred):
    h, w = y_pred.shape[1], y_pred.shape[2]
    flat = layers.flat_heatmaps(y_pred)  # (B, K, HW)
    target = y_true[..., :2]  # (B, K, 2)
    p = tf.nn.softmax(gaussian_exponent(target, h, w, sigma), axis=-1)  # normalized
    inside = tf.cast(tf.reduce_all(tf.abs(target) <= 0.5, axis=-1), tf.float32)
    ce = -tf.reduce_sum(p * tf.nn.log_softmax(flat, axis=-1), axis=-1)  # (B, K)
    return tf.reduce_sum(ce * y_true[..., 2] * inside, axis=-1)

  loss.__name__ = "heatmap_ce"
  return loss


def gaussian_exponent(points, h: int, w: int, sigma: float):
  """points (B, K, 2) box-normalized -> (B, K, H * W) float32: -d^2 / (2 sigma^2), d the
  distance in heatmap cells from each cell centre (layers.cell_centres, row-major) to the
  point. exp() of it is the Gaussian target heatmap with peak 1 (heatmap_mse); its softmax
  the normalized one (heatmap_loss)."""
  centres = tf.constant(layers.cell_centres(h, w))  # (HW, 2) box-normalized
  d = (centres[None, None] - tf.cast(points, tf.float32)[:, :, None]) * tf.constant(
      [w, h], tf.float32)
  return -tf.reduce_sum(tf.square(d), axis=-1) / (2.0 * sigma * sigma)


def gaussian_heatmaps(points, h: int, w: int, sigma: float):
  """points (B, K, 2) box-normalized -> target heatmaps (B, H, W, K), peak 1 at each point
  (Tompson et al.'s targets; the layout the networks output)."""
  g = tf.exp(gaussian_exponent(points, h, w, sigma))  # (B, K, HW)
  k = g.shape[1]
  return tf.reshape(tf.transpose(g, [0, 2, 1]), [-1, h, w, k])


def heatmap_mse(sigma: float = 1.5):
  """Tompson et al.'s detector loss: squared error between the (linear) heatmaps and
  Gaussians of std `sigma` cells, peak 1, at the target joints, summed over the cells and
  the annotated joints (a joint outside the crop has an all-but-zero target: the detector
  must not fire for it). Unannotated joints are masked out.

  The returned fn takes y_true (B, K, 3) box-normalized target and mask, y_pred (B, H, W, K)
  heatmaps; returns (B,)."""
  if not sigma > 0:
    raise ValueError(f"heatmap sigma must be > 0, got {sigma}")

  def loss(y_true, y_pred):
    h, w = y_pred.shape[1], y_pred.shape[2]
    flat = layers.flat_heatmaps(y_pred)  # (B, K, HW)
    target = tf.exp(gaussian_exponent(y_true[..., :2], h, w, sigma))
    se = tf.reduce_sum(tf.square(flat - target), axis=-1)  # (B, K)
    return tf.reduce_sum(se * y_true[..., 2], axis=-1)

  loss.__name__ = "heatmap_mse"
  return loss


HEATMAP_LOSSES = ("ce", "mse")
