"""Request decoding for the serving signatures: header checks, size limits, boxes, and the
crop over a batch of images of different sizes.

Every check is a graph assert whose InvalidArgumentError (HTTP 400 / INVALID_ARGUMENT in TF
Serving) names the batch entry. The size of an encoded image is read from its JPEG/PNG
header and checked against records.MAX_IMAGE_PIXELS (the one pixel limit of the package)
before any pixel is decoded.

A decoded batch keeps each image at its own size: uint8 RaggedTensor [B, (H*W), 3] plus
sizes (B, 2), cropped image by image by `crop_each`. Padding the batch to its largest
height times its largest width instead made memory follow that rectangle, not the
request's pixels: a 1000 x 20000 and a 20000 x 1000 PNG (20 MP each) became 2 x 400 MP and
the process peaked at 8.2 GB (ru_maxrss). Every stage crops from the full images (stage
s >= 2 around each joint of stage s - 1), so they stay in memory for the whole cascade,
once each.
"""

from __future__ import annotations

import tensorflow as tf

from deeppose_tf import geometry, pipeline
from deeppose_tf.data import records

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_END = b"\xff\xd9"  # EOI marker
PNG_END = b"IEND"  # the last chunk's type
# Decoded pixels one request may hold (4 images at the per-image limit): a request of many
# small files that decode to huge images is refused before decoding. 200 MP = 600 MB uint8.
MAX_REQUEST_PIXELS = 4 * records.MAX_IMAGE_PIXELS

MAX_BOX_COORD = geometry.MAX_BOX_COORD  # the box rules are geometry's (box_in_range)


def check(cond, fmt: str, *args):
  """A graph assert whose InvalidArgumentError carries one readable sentence."""
  return tf.debugging.Assert(cond, [tf.strings.format(fmt, args)])


def declared_size(encoded, index):
  """(height, width) int64 that an encoded JPEG or PNG declares, read from its header only.

  encoded: scalar string; index: its position in the batch (for the messages). Raises
  InvalidArgumentError for an empty string, an unknown format, a truncated PNG header.
  """
  length = tf.strings.length(encoded)
  is_jpeg = tf.strings.substr(encoded, 0, 3) == JPEG_MAGIC
  is_png = tf.strings.substr(encoded, 0, 8) == PNG_MAGIC
  checks = [
      check(length > 0, "image_bytes[{}] is an empty string; expected JPEG or PNG bytes",
            index),
      check(is_jpeg | is_png | tf.equal(length, 0), "image_bytes[{}] is not a JPEG or PNG "
            "image (unknown leading bytes, {} bytes in all)", index, length)]

  def jpeg():
    return tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)[:2]

  def png():
    # IHDR: 8-byte signature, 4-byte length, "IHDR", then width and height as big-endian
    # uint32 at bytes 16-24. PNG caps them at 2^31 - 1, so int32 reads any valid value.
    with tf.control_dependencies([check(length >= 24, "image_bytes[{}] is a truncated PNG "
                                        "({} bytes, no complete IHDR)", index, length)]):
      wh = tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.int32, little_endian=False)
    return tf.cast(tf.stack([wh[1], wh[0]]), tf.int64)

  def complete(marker, what):
    # The decoders' own error for a cut file names no batch entry: check the end marker
    # first. (A JPEG's end-of-image marker may be followed by other data, e.g. a phone's
    # motion photo, so it is looked for anywhere after the start.)
    found = tf.size(tf.strings.split(tf.strings.substr(encoded, 2, length), sep=marker)) > 1
    return check(found, "image_bytes[{}] is a truncated " + what + " ({} bytes, no "
                 "end marker)", index, length)

  with tf.control_dependencies(checks):
    return tf.cond(is_jpeg,
                   lambda: _after(complete(JPEG_END, "JPEG"), jpeg),
                   lambda: _after(complete(PNG_END, "PNG"), png))


def _after(op, fn):
  with tf.control_dependencies([op]):
    return fn()


def decode_batch(image_bytes):
  """string [B] (JPEG/PNG) -> (pixels uint8 RaggedTensor [B, (H*W), 3], sizes int32 [B, 2]).

  pixels[i] is image i in row-major order and sizes[i] its (h, w): the batch holds the
  request's pixels, never B x Hmax x Wmax. Crop it with `crop_each(sizes)`.
  Every header is validated before anything is decoded; each image is then decoded with
  pipeline.decode_image (the evaluation path), and must have the size its header declared.
  """
  b = tf.shape(image_bytes)[0]
  no_batch = tf.debugging.Assert(b > 0, ["image_bytes is an empty batch"])
  with tf.control_dependencies([no_batch]):
    index = tf.range(b)

  def size_of(args):
    encoded, i = args
    hw = declared_size(encoded, i)
    h, w = hw[0], hw[1]
    limit = records.MAX_IMAGE_PIXELS
    checks = [
        check((h > 0) & (w > 0), "image_bytes[{}] declares a {}x{} (width x height) image; "
              "expected a positive size", i, w, h),
        check(h * w <= limit, "image_bytes[{}] declares {}x{} (width x height) = {} pixels, "
              "over the limit of {} pixels (checked before decoding)", i, w, h, h * w, limit)]
    with tf.control_dependencies(checks):
      return tf.cast(hw, tf.int32)

  sizes = tf.map_fn(size_of, (image_bytes, index),
                    fn_output_signature=tf.TensorSpec([2], tf.int32))
  total = tf.reduce_sum(tf.cast(sizes[:, 0], tf.int64) * tf.cast(sizes[:, 1], tf.int64))
  with tf.control_dependencies([check(
      total <= MAX_REQUEST_PIXELS, "the request's {} images declare {} pixels in all, over "
      "the limit of {} per request (checked before decoding); send fewer or smaller images "
      "per request", b, total, MAX_REQUEST_PIXELS)]):
    sizes = tf.identity(sizes)

  def decode(i, pixels):
    # Control flow is lowered to per-element dataflow: without this edge the decoder could
    # see the bytes of image i before every header of the batch has passed its checks.
    with tf.control_dependencies([sizes]):
      image = pipeline.decode_image(image_bytes[i])
    got = tf.shape(image)[:2]
    with tf.control_dependencies([check(
        tf.reduce_all(got == sizes[i]), "image_bytes[{}] decodes to {}x{} (width x height) "
        "but its header declares {}x{}", i, got[1], got[0], sizes[i][1], sizes[i][0])]):
      return i + 1, pixels.write(i, tf.reshape(image, [-1, 3]))

  pixels = tf.TensorArray(tf.uint8, size=b, infer_shape=False, element_shape=[None, 3])
  _, pixels = tf.while_loop(lambda i, _: i < b, decode, (0, pixels))
  lengths = tf.cast(sizes[:, 0], tf.int64) * tf.cast(sizes[:, 1], tf.int64)
  # (sum of H*W, 3): the request's pixels once, split into one row per image.
  return tf.RaggedTensor.from_row_lengths(pixels.concat(), lengths, validate=False), sizes


def crop_each(sizes):
  """The Cascade crop for decode_batch's pixels: Cascade(..., crop=crop_each(sizes)).

  sizes: int32 (B, 2) (h, w) of each image. The returned crop(pixels, boxes, box_indices,
  size) takes pixels uint8 RaggedTensor [B, (H*W), 3], boxes (N, 4) image pixels,
  box_indices (N,) int32 (which image each box is cut from) and size S (python int), and
  returns (N, S, S, 3) float32, crop n in row n. Each image is cropped at its own size by
  geometry.crop: the same samples as geometry.crop on a zero-padded batch (zeros outside
  an image either way), to float rounding.

  The loop runs one image at a time (parallel_iterations=1) so that the copies
  geometry.crop makes (the image with a one-pixel zero border) exist for one image at a
  time, not for several large ones at once; crop_and_resize itself is multithreaded.
  """
  heights = tf.cast(sizes[:, 0], tf.int64)
  widths = tf.cast(sizes[:, 1], tf.int64)

  def crop(pixels, boxes, box_indices, size):
    boxes = tf.cast(boxes, tf.float32)
    box_indices = tf.cast(box_indices, tf.int32)
    flat, splits = pixels.values, pixels.row_splits
    b = tf.shape(splits)[0] - 1
    n = tf.shape(boxes)[0]

    def body(i, crops, where):
      image = tf.reshape(flat[splits[i]:splits[i + 1]],
                         tf.stack([1, heights[i], widths[i], 3]))
      mine = tf.cast(tf.where(tf.equal(box_indices, i))[:, 0], tf.int32)
      own = geometry.crop(image, tf.gather(boxes, mine), tf.zeros_like(mine), size)
      return i + 1, crops.write(i, own), where.write(i, mine)

    crops = tf.TensorArray(tf.float32, size=b, infer_shape=False,
                           element_shape=[None, size, size, 3])
    where = tf.TensorArray(tf.int32, size=b, infer_shape=False, element_shape=[None])
    _, crops, where = tf.while_loop(lambda i, *_: i < b, body, (0, crops, where),
                                    parallel_iterations=1)
    crops, where = crops.concat(), where.concat()
    # Cascade.predict cuts its boxes in image order (range(B), then repeat(range(B), K)):
    # the crops are then in place already, and the scatter (a copy of every crop) is skipped.
    return tf.cond(tf.reduce_all(tf.equal(where, tf.range(n))), lambda: crops,
                   lambda: tf.scatter_nd(where[:, None], crops, tf.stack([n, size, size, 3])))

  return crop


def resolve_boxes(boxes, heights, widths):
  """Boxes (B, 4) image pixels; a row with w <= 0 or h <= 0 becomes its full-image box.

  Non-finite values, values beyond +-MAX_BOX_COORD, and a box entirely outside its image
  raise InvalidArgumentError naming the row: geometry's rules, as the TFLite wrapper's
  ValueErrors (tflite_cascade.check_inputs). The range check runs first, so a NaN box is
  reported as such, not as a box outside its image."""
  boxes = tf.cast(boxes, tf.float32)
  sane = geometry.box_in_range(boxes)
  bad_row = tf.argmin(tf.cast(sane, tf.int32), output_type=tf.int32)
  with tf.control_dependencies([check(
      tf.reduce_all(sane), "boxes[{}] = {} is not a box: (cx, cy, w, h) must be finite image "
      "pixels within +-1e6", bad_row, tf.gather(boxes, bad_row))]):
    boxes = tf.identity(boxes)
  boxes, inside = geometry.empty_to_full_image(boxes, heights, widths)
  outside_row = tf.argmin(tf.cast(inside, tf.int32), output_type=tf.int32)
  with tf.control_dependencies([check(
      tf.reduce_all(inside), "boxes[{}] = {} lies entirely outside its {}x{} (width x height) "
      "image; a pose there would be made up", outside_row, tf.gather(boxes, outside_row),
      tf.gather(widths, outside_row), tf.gather(heights, outside_row))]):
    return tf.identity(boxes)
