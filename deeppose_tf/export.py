"""Exports a whole cascade: a TF Serving SavedModel and a builtin-ops TFLite model.

  python -m deeppose_tf.export --workdir=runs/lsp --output=serving/deeppose [--version=N]
      [--precision=float32|bfloat16]
  python -m deeppose_tf.export --workdir=runs/lsp --output=deeppose.tflite --format=tflite \
      [--quantize=none|float16|int8] [--tflite_size=440,440]

--precision=bfloat16 exports networks that compute in bfloat16 (model.with_precision: about
2x faster on CPUs with AVX512-BF16 or AMX; measure its accuracy with
`evaluate --precision=bfloat16` first).

Both formats wrap `Cascade.predict`, the package's only inference path: no crop or stage logic
is repeated here. Poses are (x, y) in the pixels of the image as given (before any padding).

SavedModel signatures (OUT/<version>/, the layout TF Serving polls):
  serving_default(image_bytes: string [B])                       full-image initial boxes
  predict_bytes_with_boxes(image_bytes: string [B], boxes: float32 [B, 4])
  predict_images(images: uint8 [B, H, W, 3], boxes: float32 [B, 4])
  -> joints float32 [B, K, 2] (last stage), joints_per_stage float32 [B, S, K, 2].
A signature cannot have optional inputs, hence one signature per input set; a box whose width
or height is <= 0 also means "the full image", so one batch can mix boxed and unboxed images.
Boxes are (cx, cy, w, h) in each image's own pixels. Encoded images must be JPEG or PNG of at
most MAX_PIXELS; the size is read from the header before any pixel is decoded.
The module also carries joint_names() -> string [K], skeleton_name() -> string and the asset
assets/joint_names.txt (one name per line, in output order).

TFLite (one signature, fixed size): image float32 [1, H, W, 3] in [0, 255], box float32 [1, 4]
-> joints [1, K, 2], joints_per_stage [1, S, K, 2]. Put smaller images in the top-left corner
of a zero canvas (coordinates unchanged); `fit_to_canvas` also shrinks larger ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf

from deeppose_tf import geometry, pipeline
from deeppose_tf.cascade import Cascade, read_config

MAX_PIXELS = 50_000_000
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUANTIZE = ("none", "float16", "int8")


def _check(cond, fmt: str, *args):
  """A graph assert whose InvalidArgumentError carries one readable sentence."""
  return tf.debugging.Assert(cond, [tf.strings.format(fmt, args)])


def declared_size(encoded, index):
  """(height, width) int64 that an encoded JPEG or PNG declares, read from its header only.

  encoded: scalar string; index: its position in the batch (for the messages). Raises
  InvalidArgumentError for an empty string, an unknown format, a truncated PNG header.
  """
  length = tf.strings.length(encoded)
  is_jpeg = tf.strings.substr(encoded, 0, 3) == _JPEG_MAGIC
  is_png = tf.strings.substr(encoded, 0, 8) == _PNG_MAGIC
  checks = [
      _check(length > 0, "image_bytes[{}] is an empty string; expected JPEG or PNG bytes",
             index),
      _check(is_jpeg | is_png | tf.equal(length, 0), "image_bytes[{}] is not a JPEG or PNG "
             "image (unknown leading bytes, {} bytes in all)", index, length)]

  def jpeg():
    return tf.image.extract_jpeg_shape(encoded, output_type=tf.int64)[:2]

  def png():
    # IHDR: 8-byte signature, 4-byte length, "IHDR", then width and height as big-endian
    # uint32 at bytes 16-24. PNG caps them at 2^31 - 1, so int32 reads any valid value.
    with tf.control_dependencies([_check(length >= 24, "image_bytes[{}] is a truncated PNG "
                                         "({} bytes, no complete IHDR)", index, length)]):
      wh = tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.int32, little_endian=False)
    return tf.cast(tf.stack([wh[1], wh[0]]), tf.int64)

  with tf.control_dependencies(checks):
    return tf.cond(is_jpeg, jpeg, png)


def decode_batch(image_bytes):
  """string [B] (JPEG/PNG) -> (images uint8 [B, Hmax, Wmax, 3], sizes int32 [B, 2] (h, w)).

  Every header is validated before anything is decoded; each image is then decoded with
  pipeline.decode_image (the evaluation path) and zero-padded at its bottom/right to the batch
  maximum, which moves no pixel and changes no crop (the crop reads zeros outside an image).
  """
  b = tf.shape(image_bytes)[0]
  no_batch = tf.debugging.Assert(b > 0, ["image_bytes is an empty batch"])
  with tf.control_dependencies([no_batch]):
    index = tf.range(b)

  def size_of(args):
    encoded, i = args
    hw = declared_size(encoded, i)
    h, w = hw[0], hw[1]
    checks = [
        _check((h > 0) & (w > 0), "image_bytes[{}] declares a {}x{} (width x height) image; "
               "expected a positive size", i, w, h),
        _check(h * w <= MAX_PIXELS, "image_bytes[{}] declares {}x{} (width x height) = {} "
               "pixels, over the limit of {} pixels (checked before decoding)", i, w, h, h * w,
               MAX_PIXELS)]
    with tf.control_dependencies(checks):
      return tf.cast(hw, tf.int32)

  sizes = tf.map_fn(size_of, (image_bytes, index),
                    fn_output_signature=tf.TensorSpec([2], tf.int32))
  hmax, wmax = tf.reduce_max(sizes[:, 0]), tf.reduce_max(sizes[:, 1])

  def decode(args):
    encoded, hw = args
    # Control flow is lowered to per-element dataflow: without this edge the decoder could
    # see the bytes of image i before every header of the batch has passed its checks.
    with tf.control_dependencies([hw, hmax, wmax]):
      image = pipeline.decode_image(encoded)
    return tf.pad(image, [[0, hmax - hw[0]], [0, wmax - hw[1]], [0, 0]])

  images = tf.map_fn(decode, (image_bytes, sizes),
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
  return images, sizes


# Box coordinates beyond this are refused: they can only be garbage, and would overflow the
# crop's int32 pixel indices into meaningless (or non-finite) joints.
MAX_BOX_COORD = 1e6


def resolve_boxes(boxes, heights, widths):
  """Boxes (B, 4) image pixels; a row with w <= 0 or h <= 0 becomes its full-image box.

  Non-finite values or values beyond +-MAX_BOX_COORD raise InvalidArgumentError."""
  boxes = tf.cast(boxes, tf.float32)
  sane = tf.reduce_all(tf.math.is_finite(boxes) & (tf.abs(boxes) <= MAX_BOX_COORD), axis=1)
  bad_row = tf.argmin(tf.cast(sane, tf.int32), output_type=tf.int32)
  with tf.control_dependencies([_check(
      tf.reduce_all(sane), "boxes[{}] = {} is not a box: (cx, cy, w, h) must be finite image "
      "pixels within +-1e6", bad_row, tf.gather(boxes, bad_row))]):
    boxes = tf.identity(boxes)
  full = geometry.full_image_box(heights, widths)
  given = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
  return tf.where(given[:, None], boxes, full)


def _outputs(casc: Cascade, images, boxes) -> dict:
  poses = casc.predict(images, boxes)  # (B, S, K, 2) image pixels
  return {"joints": tf.identity(poses[:, -1], name="joints"),
          "joints_per_stage": tf.identity(poses, name="joints_per_stage")}


class CascadeModule(tf.Module):
  """The cascade as a tf.Module for tf.saved_model.save (see the module docstring)."""

  def __init__(self, casc: Cascade, names_file: str):
    super().__init__(name="deeppose")
    self._cascade = casc
    self.stages = list(casc.stages)  # tracked: their variables go into variables/
    self.joint_names_file = tf.saved_model.Asset(names_file)
    self._names = list(casc.skeleton.joints)
    self._skeleton = casc.skeleton.name

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, "images"),
                                tf.TensorSpec([None, 4], tf.float32, "boxes")])
  def predict_images(self, images, boxes):
    shape = tf.shape(images)
    b = shape[0]
    boxes = resolve_boxes(boxes, tf.fill([b], shape[1]), tf.fill([b], shape[2]))
    return _outputs(self._cascade, images, boxes)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "image_bytes"),
                                tf.TensorSpec([None, 4], tf.float32, "boxes")])
  def predict_bytes_with_boxes(self, image_bytes, boxes):
    same = tf.equal(tf.shape(boxes)[0], tf.shape(image_bytes)[0])
    with tf.control_dependencies([_check(same, "boxes has {} rows for {} images; expected one "
                                         "row per entry of image_bytes", tf.shape(boxes)[0],
                                         tf.shape(image_bytes)[0])]):
      images, sizes = decode_batch(image_bytes)
    return _outputs(self._cascade, images, resolve_boxes(boxes, sizes[:, 0], sizes[:, 1]))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "image_bytes")])
  def serving_default(self, image_bytes):
    images, sizes = decode_batch(image_bytes)
    return _outputs(self._cascade, images, geometry.full_image_box(sizes[:, 0], sizes[:, 1]))

  @tf.function(input_signature=[])
  def joint_names(self):
    return tf.constant(self._names)

  @tf.function(input_signature=[])
  def skeleton_name(self):
    return tf.constant(self._skeleton)


def save_saved_model(casc: Cascade, path: str) -> None:
  """Writes the SavedModel directory `path` (not atomic; see export_saved_model)."""
  with tempfile.TemporaryDirectory() as tmp:
    names_file = os.path.join(tmp, "joint_names.txt")
    with open(names_file, "w") as f:
      f.write("\n".join(casc.skeleton.joints) + "\n")
    module = CascadeModule(casc, names_file)
    signatures = {"serving_default": module.serving_default.get_concrete_function(),
                  "predict_bytes_with_boxes":
                      module.predict_bytes_with_boxes.get_concrete_function(),
                  "predict_images": module.predict_images.get_concrete_function()}
    tf.saved_model.save(module, path, signatures=signatures)


def _next_version(output: str) -> int:
  existing = [int(n) for n in os.listdir(output) if n.isdigit()] if os.path.isdir(output) else []
  return max(existing, default=0) + 1


def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def export_saved_model(workdir: str, output: str, version: Optional[int] = None,
                       casc: Optional[Cascade] = None, precision: str = "float32") -> str:
  """Exports the workdir's cascade (or `casc`) to OUT/<version> crash-safely; returns the path.

  The SavedModel is written to the sibling OUT/.tmp-<version>-<pid> (not a number, so TF
  Serving ignores it) and renamed into place only when complete: a crash never leaves a
  half-written version for the server to load. version defaults to the next free number.
  """
  if casc is None:
    casc = Cascade.load(workdir, precision=precision)
  os.makedirs(output, exist_ok=True)
  version = _next_version(output) if version is None else int(version)
  if version <= 0:
    raise ValueError(f"version must be a positive integer (TF Serving's layout), got {version}")
  final = os.path.join(output, str(version))
  if os.path.exists(final):
    raise ValueError(f"{final} already exists; TF Serving never reloads a version in place, "
                     "so export under a new --version")
  tmp = os.path.join(output, f".tmp-{version}-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    save_saved_model(casc, tmp)
    os.rename(tmp, final)
    _fsync_dir(output)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return final


def fit_to_canvas(image: np.ndarray, height: int, width: int) -> Tuple[np.ndarray, float]:
  """Places an (h, w, 3) image in the top-left corner of a zero (height, width, 3) float32
  canvas, shrinking it (bilinear, aspect kept) when it does not fit. Returns (canvas, scale):
  canvas pixels = image pixels * scale, so divide predicted joints by scale."""
  h, w = image.shape[:2]
  scale = min(1.0, height / h, width / w)
  img = tf.convert_to_tensor(image, tf.float32)
  if scale < 1.0:
    size = (max(1, min(height, round(h * scale))), max(1, min(width, round(w * scale))))
    img = tf.image.resize(img, size, antialias=True)
  img = tf.image.pad_to_bounding_box(img, 0, 0, height, width)
  return img.numpy(), scale


def representative_images(workdir: str, height: int, width: int, count: int = 32,
                          seed: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
  """(image (1, height, width, 3) float32, box (1, 4)) for int8 calibration.

  Real images from the workdir's data (config.json's data_dir: the training split, else
  'val', else 'test'; training images first, so that accuracy measured on the test split
  is not calibrated on it) through pipeline.eval_dataset, fitted with fit_to_canvas; when
  no data is readable, uniform random images with full-canvas boxes (calibration then only
  reflects the value range, not natural image statistics).
  """
  config = read_config(workdir)
  data_dir = config.get("data_dir")
  from deeppose_tf.data import records
  from deeppose_tf.skeleton import get_skeleton
  for split in (config.get("train_split", "train"), "val", "test"):
    try:
      records.list_shards(data_dir, split)
    except (ValueError, TypeError, OSError):
      continue
    ds = pipeline.eval_dataset(data_dir, split, get_skeleton(config["skeleton"]), 1, count)
    for batch in ds:
      hw = (int(batch["height"][0]), int(batch["width"][0]))
      canvas, scale = fit_to_canvas(batch["image"][0, :hw[0], :hw[1]].numpy(), height, width)
      yield canvas[None], batch["box"].numpy().astype(np.float32) * scale
    return
  rng = np.random.RandomState(seed)
  box = np.array([[width / 2, height / 2, width, height]], np.float32)
  for _ in range(count):
    yield rng.uniform(0, 255, (1, height, width, 3)).astype(np.float32), box


def convert_tflite(casc: Cascade, height: int, width: int, quantize: str = "none",
                   representative=None) -> bytes:
  """The cascade at a fixed [1, height, width, 3] input as .tflite bytes, builtin ops only.

  The fixed-shape function goes through a keras.export.ExportArchive SavedModel, from which
  the converter freezes the Keras 3 weights into constants. From a concrete function, or a
  tf.Module holding the models, they stay resource variables (READ_VARIABLE ops, a file
  without the weights, several times slower, int8 calibration fails).
  quantize: 'none', 'float16' (weights), 'int8' (weights and activations calibrated on
  `representative`, an iterable of (image, box) like representative_images; inputs and
  outputs stay float32).
  """
  if quantize not in QUANTIZE:
    raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
  if quantize == "int8" and representative is None:
    raise ValueError("int8 quantization needs representative (image, box) pairs")

  # crop_and_resize is not a TFLite builtin: the same samples from gathers instead.
  builtin = Cascade(casc.stages, casc.skeleton, casc.sigma, casc.input_size,
                    crop=geometry.crop_builtin)

  def serve(image, box):
    boxes = resolve_boxes(box, tf.fill([1], height), tf.fill([1], width))
    return _outputs(builtin, image, boxes)

  import keras
  archive = keras.export.ExportArchive()
  for net in casc.stages:
    archive.track(net)
  archive.add_endpoint("serving_default", serve, input_signature=[
      tf.TensorSpec([1, height, width, 3], tf.float32, "image"),
      tf.TensorSpec([1, 4], tf.float32, "box")])
  with tempfile.TemporaryDirectory() as tmp:
    archive.write_out(tmp, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(tmp, ["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
      converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
      return _quantize_networks_int8(converter, representative)
    return converter.convert()


# The only ops that get int8 kernels. Everything else is the cascade's geometry (crop
# sampling positions, joint boxes, poses in pixels): quantized with calibrated ranges, a pose
# tensor has a resolution of (range / 256) pixels and is clipped to the range it saw during
# calibration, so an image larger than the calibration images loses whole joints. Geometry
# costs next to nothing next to the convolutions, so it stays float.
_INT8_OPS = ("CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D")


def _quantize_networks_int8(converter, representative) -> bytes:
  """Post-training int8 of the stage networks only, calibrated on `representative`; inputs,
  outputs and geometry stay float32.

  An op denylist alone is not enough: the quantizer still puts a quantize/dequantize pair on
  a pose where it meets a CONCATENATION (joint_boxes), which requantizes it. So the
  calibrated model's ranges are dropped from every tensor that no int8 op reads or writes,
  and the quantizer has nothing to quantize them with. Uses the converter's calibrate-only
  mode and mlir_quantize (the calls tf.lite.experimental.QuantizationDebugger makes).
  """
  from tensorflow.lite.python import convert
  from tensorflow.lite.tools import flatbuffer_utils
  pairs = list(representative)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = lambda: ({"image": i, "box": b} for i, b in pairs)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                         tf.lite.OpsSet.TFLITE_BUILTINS]
  converter._experimental_calibrate_only = True  # pylint: disable=protected-access
  model = flatbuffer_utils.convert_bytearray_to_object(bytearray(converter.convert()))
  keep, float_ops = set(), set()
  for graph in model.subgraphs:
    for op in graph.operators:
      name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
      if name in _INT8_OPS:
        keep.update((id(graph), int(t)) for t in list(op.inputs) + list(op.outputs))
      else:
        float_ops.add(name)
    for i, tensor in enumerate(graph.tensors):
      if (id(graph), i) not in keep:
        tensor.quantization = None
  return convert.mlir_quantize(
      bytes(flatbuffer_utils.convert_object_to_bytearray(model)), fully_quantize=False,
      denylisted_ops=sorted(float_ops))


def export_tflite(workdir: str, output: str, quantize: str = "none",
                  size: Optional[Tuple[int, int]] = None,
                  casc: Optional[Cascade] = None) -> str:
  """Converts the workdir's cascade to `output` (.tflite, written atomically). size (H, W)
  defaults to twice the network input size."""
  from deeppose_tf import atomic
  if casc is None:
    casc = Cascade.load(workdir)
  height, width = size or (2 * casc.input_size, 2 * casc.input_size)
  rep = representative_images(workdir, height, width) if quantize == "int8" else None
  data = convert_tflite(casc, height, width, quantize, rep)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  atomic.write_bytes(output, data)
  return output


def _main(argv):
  from absl import flags
  f = flags.FLAGS
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments: {argv[1:]}")
  if f.format == "saved_model":
    if f.quantize != "none" or f.tflite_size:
      raise ValueError("--quantize and --tflite_size apply to --format=tflite only")
    print(export_saved_model(f.workdir, f.output, f.version, precision=f.precision))
    return
  if f.precision != "float32":
    raise ValueError("--precision applies to --format=saved_model; TFLite has --quantize")
  size = tuple(int(v) for v in f.tflite_size) if f.tflite_size else None
  if size is not None and (len(size) != 2 or min(size) <= 0):
    raise ValueError(f"--tflite_size must be H,W positive integers, got {f.tflite_size}")
  print(export_tflite(f.workdir, f.output, f.quantize, size))


if __name__ == "__main__":
  from absl import app, flags
  flags.DEFINE_string("workdir", None, "Workdir of a trained cascade (config.json, stage*/).")
  flags.DEFINE_string("output", None, "saved_model: the model base dir (versions go in "
                      "OUT/<version>); tflite: the .tflite file.")
  flags.DEFINE_integer("version", None, "SavedModel version number (default: next free).")
  flags.DEFINE_enum("format", "saved_model", ["saved_model", "tflite"], "Export format.")
  flags.DEFINE_enum("quantize", "none", list(QUANTIZE), "TFLite quantization.")
  flags.DEFINE_list("tflite_size", None, "TFLite input H,W (default 2 x input_size).")
  flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"], "saved_model: compute "
                    "precision of the networks (bfloat16: about 2x faster on CPUs with "
                    "AVX512-BF16/AMX; variables and the output layer stay float32).")
  flags.mark_flags_as_required(["workdir", "output"])
  app.run(_main)
