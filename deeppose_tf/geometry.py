"""Pure tensor functions on poses and boxes: the only place that knows the formulas.

Frames used throughout the package:
  image pixels     x right, y down; (0, 0) is the image's top-left corner and pixel i spans
                   [i, i + 1), so its centre is at i + 0.5.
  box-normalized   (p - c) / (w, h) for a box b = (cx, cy, w, h) (paper Eq. 1): the box
                   covers [-0.5, 0.5]^2.
  crop pixels      the S x S crop of a box, same pixel convention as image pixels.
Poses are (..., K, 2), x before y; boxes are (..., 4) = (cx, cy, w, h) in image pixels.

Every function here is plain TF and works eagerly and inside tf.data / tf.function. The crop
has two implementations that sample the same points: `crop` (tf.image.crop_and_resize, the
fast fused kernel, used by training, evaluation and the SavedModel) and `crop_builtin`
(gathers and arithmetic only, for TFLite, where crop_and_resize would need the Flex
delegate). tests/test_geometry.py holds them to each other.
"""

from __future__ import annotations

import tensorflow as tf

# A joint box never shrinks below this many pixels: a degenerate previous-stage pose
# (all joints on one point) would otherwise give a zero-size box and a division by zero.
MIN_BOX_SIDE = 2.0


def normalize(joints, boxes):
  """Image pixels -> box-normalized (paper Eq. 1).

  joints: (..., K, 2); boxes: (..., 4), broadcast over K. Returns (..., K, 2).
  """
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  center = boxes[..., None, 0:2]
  size = boxes[..., None, 2:4]
  return (tf.convert_to_tensor(joints, tf.float32) - center) / size


def denormalize(joints, boxes):
  """Box-normalized -> image pixels; the inverse of `normalize`. Shapes as there."""
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  return tf.convert_to_tensor(joints, tf.float32) * boxes[..., None, 2:4] + boxes[..., None, 0:2]


def full_image_box(height, width):
  """The box covering a whole image: (cx, cy, w, h) = (W/2, H/2, W, H). Shapes (...,) -> (..., 4)."""
  h = tf.cast(height, tf.float32)
  w = tf.cast(width, tf.float32)
  return tf.stack([w / 2.0, h / 2.0, w, h], axis=-1)


def box_overlaps_image(boxes, height, width):
  """True where a box (cx, cy, w, h) shares area with its image [0, W] x [0, H].

  boxes (..., 4) image pixels; height, width (...,). Returns (...,) bool. A box entirely
  outside its image crops only zeros: any pose found there would be made up.
  """
  boxes = tf.cast(boxes, tf.float32)
  h = tf.cast(height, tf.float32)
  w = tf.cast(width, tf.float32)
  return ((tf.abs(boxes[..., 0] - w / 2.0) < (boxes[..., 2] + w) / 2.0)
          & (tf.abs(boxes[..., 1] - h / 2.0) < (boxes[..., 3] + h) / 2.0))


# A requested box's coordinates beyond this are refused: they can only be garbage, and would
# overflow the crop's int32 pixel indices into meaningless (or non-finite) joints.
MAX_BOX_COORD = 1e6


def box_in_range(boxes):
  """True where a requested box (..., 4) is finite and within +-MAX_BOX_COORD: (...,) bool.

  The serving rules live here, once, for the SavedModel's graph asserts (export/inputs.py)
  and the TFLite wrapper's ValueErrors (tflite_cascade.check_inputs, through its numpy twin
  tflite_cascade.box_rules, which tests/test_export.py holds to these). boxes keep their float
  dtype, so a float64 request is judged on its own values, not on their float32 rounding.
  """
  boxes = tf.convert_to_tensor(boxes)
  return tf.reduce_all(tf.math.is_finite(boxes) & (tf.abs(boxes) <= MAX_BOX_COORD), axis=-1)


def empty_to_full_image(boxes, height, width):
  """A requested box with w <= 0 or h <= 0 means its whole image: (boxes, overlaps).

  boxes (..., 4) image pixels (checked by box_in_range first), height, width (...,). Returns
  the boxes, in their dtype, with those rows replaced by full_image_box, and box_overlaps_image
  of the result: a box False there crops only zeros and must be refused by the caller.
  """
  boxes = tf.convert_to_tensor(boxes)
  given = (boxes[..., 2] > 0) & (boxes[..., 3] > 0)
  boxes = tf.where(given[..., None], boxes, tf.cast(full_image_box(height, width), boxes.dtype))
  return boxes, box_overlaps_image(boxes, height, width)


def diameter(joints, diameter_indices):
  """Torso diameter: distance between the skeleton's diameter joints. (..., K, 2) -> (...,)."""
  a, b = diameter_indices
  d = joints[..., a, :] - joints[..., b, :]
  return tf.sqrt(tf.reduce_sum(tf.square(d), axis=-1))


def joint_boxes(joints, diameter_indices, sigma):
  """Square refinement boxes of side sigma * diam(y) centred on every joint.

  joints: (..., K, 2) image pixels. Returns (..., K, 4) boxes in image pixels.
  """
  joints = tf.convert_to_tensor(joints, tf.float32)
  side = tf.maximum(sigma * diameter(joints, diameter_indices), MIN_BOX_SIDE)
  side = tf.broadcast_to(side[..., None, None], tf.concat([tf.shape(joints)[:-1], [1]], 0))
  return tf.concat([joints, side, side], axis=-1)


# The framing stage 1 is trained on: LSP's people span about 0.76 of their image's longer
# side, so a box 1.3 times a person's extent frames them as training did.
FRAMING_GROW = 1.3


def framing_box(joints, boxes, grow=FRAMING_GROW, min_fraction=0.2):
  """The square box that frames a pose: centred on its joints' bounding box, of side `grow`
  times that box's longer side (FRAMING_GROW: the framing stage 1 was trained on), at
  least `min_fraction` of the longer
  side of `boxes` (a pose collapsed onto a few pixels must not zoom into them).

  joints: (..., K, 2) image pixels; boxes: (..., 4) the boxes the pose was found in.
  Returns (..., 4) image pixels.
  """
  joints = tf.convert_to_tensor(joints, tf.float32)
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  lo = tf.reduce_min(joints, axis=-2)
  hi = tf.reduce_max(joints, axis=-2)
  extent = tf.reduce_max(hi - lo, axis=-1)
  floor = min_fraction * tf.reduce_max(tf.abs(boxes[..., 2:4]), axis=-1)
  side = tf.maximum(tf.maximum(grow * extent, floor), MIN_BOX_SIDE)[..., None]
  return tf.concat([(lo + hi) / 2.0, side, side], axis=-1)


def jitter_box(box, shift, scale):
  """Moves a box by `shift` (fractions of its size, (..., 2)) and scales it by `scale` (...,)."""
  center = box[..., 0:2] + shift * box[..., 2:4]
  size = box[..., 2:4] * scale[..., None]
  return tf.concat([center, size], axis=-1)


def flip_joints(joints, visible, width, flip_permutation):
  """Left/right mirror of a pose in an image of width `width`.

  joints: (K, 2) image pixels; visible: (K,). The mirrored x is W - x (pixel i maps to
  W - 1 - i, whose span [W - 1 - i, W - i] mirrors [i, i + 1]), and joints are relabelled
  with the skeleton's flip permutation so that a left wrist stays a left wrist.
  """
  w = tf.cast(width, tf.float32)
  mirrored = tf.stack([w - joints[..., 0], joints[..., 1]], axis=-1)
  return tf.gather(mirrored, flip_permutation, axis=-2), tf.gather(visible, flip_permutation,
                                                                    axis=-1)


def flip_box(box, width):
  """Mirror of a box (..., 4) in an image of width `width`."""
  w = tf.cast(width, tf.float32)
  return tf.concat([w - box[..., 0:1], box[..., 1:]], axis=-1)


def crop_to_image(points, boxes, size):
  """Crop pixels of an S x S crop of `boxes` -> image pixels. points (..., K, 2), boxes (..., 4)."""
  return denormalize(tf.convert_to_tensor(points, tf.float32) / float(size) - 0.5, boxes)


def image_to_crop(points, boxes, size):
  """Image pixels -> crop pixels of the S x S crop of `boxes`; inverse of `crop_to_image`."""
  return (normalize(points, boxes) + 0.5) * float(size)


def crop(images, boxes, box_indices, size):
  """Bilinear crops of boxes out of a batch of images, with zeros outside the image.

  images: (B, H, W, C) any real dtype; boxes: (N, 4) image pixels; box_indices: (N,) int32,
  which image each box is cut from; size: S (python int).
  Returns (N, S, S, C) float32. Crop pixel (i, j) samples the image at the point
  `crop_to_image((j + 0.5, i + 0.5))`, so `image_to_crop` maps annotations exactly. A box
  with a negative width gives the left-right mirror of its crop (training flips this way).

  tf.image.crop_and_resize puts the first and last samples on the box's corners scaled by
  (H - 1) and gives a whole sample the extrapolation value once it leaves [0, H - 1]. On the
  image with a one-pixel zero border, the first and last sample positions of our grid, +1
  and divided by (H + 1), reproduce the grid, and a sample within one pixel of the edge
  blends the edge pixel with zero, as `crop_builtin` does. Equal to it up to float rounding
  (about 1e-4 of the pixel range).
  """
  boxes = tf.cast(boxes, tf.float32)
  box_indices = tf.cast(box_indices, tf.int32)
  shape = tf.shape(images)
  height = tf.cast(shape[1], tf.float32)
  width = tf.cast(shape[2], tf.float32)
  padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
  # Index-frame positions (pixel i's centre at i) of the first and last samples, then +1 for
  # the border: c - side / 2 + (0.5 / S) side - 0.5 + 1 (and the mirror for the last).
  half = 0.5 - 0.5 / float(size)
  x_first = boxes[:, 0] - half * boxes[:, 2] + 0.5
  x_last = boxes[:, 0] + half * boxes[:, 2] + 0.5
  y_first = boxes[:, 1] - half * boxes[:, 3] + 0.5
  y_last = boxes[:, 1] + half * boxes[:, 3] + 0.5
  normalized = tf.stack([y_first / (height + 1.0), x_first / (width + 1.0),
                         y_last / (height + 1.0), x_last / (width + 1.0)], axis=1)
  return tf.image.crop_and_resize(padded, normalized, box_indices, [size, size],
                                  method="bilinear", extrapolation_value=0.0)


def crop_builtin(images, boxes, box_indices, size):
  """Bilinear crops of boxes out of a batch of images, with zeros outside the image.

  images: (B, H, W, C) any real dtype (computed in float32); boxes: (N, 4) image pixels;
  box_indices: (N,) int32, which image each box is cut from; size: S (python int).
  Returns (N, S, S, C) float32. Crop pixel (i, j) samples the image at the point
  `crop_to_image((j + 0.5, i + 0.5))`, so `image_to_crop` maps annotations exactly.

  The same samples as `crop` (to float rounding), from gathers and arithmetic only so that
  it is a TFLite builtin graph (GATHER, FLOOR, arithmetic). Bilinear sampling is separable:
  whole image rows are gathered first (two per crop row, contiguous W x C copies) and
  blended, then two pixels per crop column are gathered from the blended rows. About 2.5x
  slower than `crop` in TF (and a third faster in TFLite than gathering the four corner
  pixels of every sample), so only the TFLite export uses it.
  """
  images = tf.cast(images, tf.float32)
  boxes = tf.cast(boxes, tf.float32)
  box_indices = tf.cast(box_indices, tf.int32)
  shape = tf.shape(images)
  height, width, channels = shape[1], shape[2], shape[3]
  n = tf.shape(boxes)[0]
  t = (tf.range(size, dtype=tf.float32) + 0.5) / float(size) - 0.5  # (S,) box-normalized
  # Sample positions in the "index" frame where pixel i's centre is at i.
  xs = boxes[:, None, 0] + t[None, :] * boxes[:, None, 2] - 0.5  # (N, S)
  ys = boxes[:, None, 1] + t[None, :] * boxes[:, None, 3] - 0.5  # (N, S)

  def axis_taps(coords, limit):
    """Neighbour indices (clipped), their weights and in-image masks along one axis."""
    lo = tf.floor(coords)
    frac = coords - lo
    lo = tf.cast(lo, tf.int32)
    hi = lo + 1
    limit_m1 = limit - 1
    w_lo = (1.0 - frac) * tf.cast((lo >= 0) & (lo <= limit_m1), tf.float32)
    w_hi = frac * tf.cast((hi >= 0) & (hi <= limit_m1), tf.float32)
    return (tf.clip_by_value(lo, 0, limit_m1), tf.clip_by_value(hi, 0, limit_m1), w_lo, w_hi)

  x0, x1, wx0, wx1 = axis_taps(xs, width)
  y0, y1, wy0, wy1 = axis_taps(ys, height)
  rows = tf.reshape(images, [-1, width * channels])  # (B*H, W*C)
  base = box_indices[:, None] * height  # (N, 1): first row of each box's image

  def row(y):
    return tf.reshape(tf.gather(rows, base + y), [n, size, width, channels])

  blended = tf.reshape(row(y0) * wy0[:, :, None, None] + row(y1) * wy1[:, :, None, None],
                       [-1, channels])  # (N*S*W, C): crop rows at full image width
  first = (tf.range(n)[:, None] * size + tf.range(size)[None, :]) * width  # (N, S)

  def column(x):
    return tf.gather(blended, first[:, :, None] + x[:, None, :])  # (N, S, S, C)

  return column(x0) * wx0[:, None, :, None] + column(x1) * wx1[:, None, :, None]


# Rotated crops (training augmentation). A rotated crop of box b = (cx, cy, w, h) by angle a
# maps crop-normalized u in [-0.5, 0.5]^2 to the image point p = c + A u with
# A = R(a) diag(w, h): the crop's x axis runs along the box's rotated width. With a = 0 this
# is exactly `crop` / `normalize`; a negative w mirrors, as there.


def affine_matrices(boxes, angles):
  """A = R(angle) diag(w, h) of rotated boxes. boxes (..., 4), angles (...,) radians ->
  (..., 2, 2), so that image point p = (cx, cy) + A u for crop-normalized u."""
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  angles = tf.convert_to_tensor(angles, tf.float32)
  cos, sin = tf.cos(angles), tf.sin(angles)
  w, h = boxes[..., 2], boxes[..., 3]
  return tf.stack([tf.stack([cos * w, -sin * h], -1), tf.stack([sin * w, cos * h], -1)], -2)


def affine_normalize(joints, boxes, angles):
  """Image pixels -> crop-normalized coordinates of the rotated box: u = A^-1 (p - c).

  joints: (..., K, 2); boxes: (..., 4); angles: (...,) radians, broadcast over K.
  Equals `normalize` at angle 0. Returns (..., K, 2).
  """
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  angles = tf.convert_to_tensor(angles, tf.float32)[..., None]
  d = tf.convert_to_tensor(joints, tf.float32) - boxes[..., None, 0:2]
  cos, sin = tf.cos(angles), tf.sin(angles)
  # R^T d, then divide by (w, h).
  x = (cos * d[..., 0] + sin * d[..., 1]) / boxes[..., None, 2]
  y = (-sin * d[..., 0] + cos * d[..., 1]) / boxes[..., None, 3]
  return tf.stack([x, y], axis=-1)


def affine_denormalize(points, boxes, angles):
  """Crop-normalized coordinates of the rotated box -> image pixels; inverse of
  `affine_normalize`. Shapes as there."""
  boxes = tf.convert_to_tensor(boxes, tf.float32)
  a = affine_matrices(boxes, angles)[..., None, :, :]  # (..., 1, 2, 2)
  u = tf.convert_to_tensor(points, tf.float32)
  return tf.einsum("...ij,...j->...i", a, u) + boxes[..., None, 0:2]


def affine_crop(images, boxes, angles, size):
  """Rotated bilinear crops, one per image, with zeros outside the image: one warp per crop
  (rotation, scale, shift and mirror in a single resampling, as pose codebases do).

  images: (N, H, W, C) uint8 or float; boxes: (N, 4) image pixels (negative w mirrors);
  angles: (N,) radians. Returns (N, S, S, C) float32. Crop pixel (i, j) samples the image at
  `affine_denormalize(((j + 0.5) / S - 0.5, (i + 0.5) / S - 0.5))`, so `affine_normalize`
  maps annotations exactly; at angle 0 it samples the same points as `crop`.
  """
  # Warped in the images' own dtype (uint8 images stay uint8: casting a whole image to
  # float32 first costs more than the warp, which reads only S x S x 4 pixels); the
  # bilinear result is rounded to that dtype, at most half a grey level for uint8.
  boxes = tf.cast(boxes, tf.float32)
  a = affine_matrices(boxes, angles)  # (N, 2, 2)
  s = float(size)
  off = 0.5 / s - 0.5
  # ImageProjectiveTransformV3 maps output index (x, y) (pixel centres at integers) to the
  # input index a0 x + a1 y + a2, b0 x + b1 y + b2; our pixel centres sit at i + 0.5.
  a0, a1 = a[:, 0, 0], a[:, 0, 1]
  b0, b1 = a[:, 1, 0], a[:, 1, 1]
  a2 = boxes[:, 0] - 0.5 + (a0 + a1) * off
  b2 = boxes[:, 1] - 0.5 + (b0 + b1) * off
  zeros = tf.zeros_like(a0)
  transforms = tf.stack([a0 / s, a1 / s, a2, b0 / s, b1 / s, b2, zeros, zeros], axis=1)
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms, output_shape=tf.constant([size, size], tf.int32),
      fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
  return tf.cast(out, tf.float32)
