"""The TF Serving SavedModel: the cascade as a tf.Module with one signature per input set,
written crash-safely into TF Serving's OUT/<version>/ layout (signatures: see the package
docstring)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Optional

import tensorflow as tf

from deeppose_tf import geometry
from deeppose_tf.cascade import Cascade
from deeppose_tf.data import records
from deeppose_tf.export import inputs


def serving_outputs(casc: Cascade, images, boxes) -> dict:
  """Cascade.predict as the signatures' outputs: joints [B, K, 2] (last stage) and
  joints_per_stage [B, S, K, 2], image pixels."""
  poses = casc.predict(images, boxes)  # (B, S, K, 2) image pixels
  return {"joints": tf.identity(poses[:, -1], name="joints"),
          "joints_per_stage": tf.identity(poses, name="joints_per_stage")}


class CascadeModule(tf.Module):
  """The cascade as a tf.Module for tf.saved_model.save (see the package docstring)."""

  def __init__(self, casc: Cascade, names_file: str):
    super().__init__(name="deeppose")
    self._cascade = casc
    self.stages = list(casc.stages)  # tracked: their variables go into variables/
    self.joint_names_file = tf.saved_model.Asset(names_file)
    self._names = list(casc.skeleton.joints)
    self._skeleton = casc.skeleton.name
    self._skeleton_json = json.dumps(casc.skeleton.to_dict())
    self._left_right = casc.left_right

  def _predict_encoded(self, pixels, sizes, boxes) -> dict:
    """The cascade on decode_batch's images, each cropped at its own size (crop_each)."""
    c = self._cascade
    each = c.with_crop(inputs.crop_each(sizes))
    return serving_outputs(each, pixels, boxes)

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, "images"),
                                tf.TensorSpec([None, 4], tf.float32, "boxes")])
  def predict_images(self, images, boxes):
    shape = tf.shape(images)
    b = shape[0]
    checks = [
        inputs.check(tf.equal(tf.shape(boxes)[0], b), "boxes has {} rows for {} images; "
                     "expected one row per image", tf.shape(boxes)[0], b),
        inputs.check((shape[1] > 0) & (shape[2] > 0), "images are {}x{} (width x height); "
                     "expected a positive size", shape[2], shape[1]),
        inputs.check(tf.cast(shape[1], tf.int64) * tf.cast(shape[2], tf.int64)
                     <= records.MAX_IMAGE_PIXELS, "images are {}x{} (width x height), over "
                     "the limit of {} pixels", shape[2], shape[1], records.MAX_IMAGE_PIXELS)]
    with tf.control_dependencies(checks):
      boxes = inputs.resolve_boxes(boxes, tf.fill([b], shape[1]), tf.fill([b], shape[2]))
    return serving_outputs(self._cascade, images, boxes)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "image_bytes"),
                                tf.TensorSpec([None, 4], tf.float32, "boxes")])
  def predict_bytes_with_boxes(self, image_bytes, boxes):
    same = tf.equal(tf.shape(boxes)[0], tf.shape(image_bytes)[0])
    with tf.control_dependencies([inputs.check(
        same, "boxes has {} rows for {} images; expected one row per entry of image_bytes",
        tf.shape(boxes)[0], tf.shape(image_bytes)[0])]):
      pixels, sizes = inputs.decode_batch(image_bytes)
    boxes = inputs.resolve_boxes(boxes, sizes[:, 0], sizes[:, 1])
    return self._predict_encoded(pixels, sizes, boxes)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "image_bytes")])
  def serving_default(self, image_bytes):
    pixels, sizes = inputs.decode_batch(image_bytes)
    return self._predict_encoded(pixels, sizes,
                                 geometry.full_image_box(sizes[:, 0], sizes[:, 1]))

  @tf.function(input_signature=[])
  def joint_names(self):
    return tf.constant(self._names)

  @tf.function(input_signature=[])
  def skeleton_name(self):
    return tf.constant(self._skeleton)

  @tf.function(input_signature=[])
  def skeleton_json(self):
    """The whole skeleton (skeleton.Skeleton.to_dict as JSON): joint names, edges, flip
    pairs, PCP limbs, torso pair, OKS sigmas; a custom skeleton's too."""
    return tf.constant(self._skeleton_json)

  @tf.function(input_signature=[])
  def left_right(self):
    """The left/right labels of the answers (labels.py): "person" (the person's own) or
    "observer" (by image position)."""
    return tf.constant(self._left_right)


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


def _next_version(export_dir: str) -> int:
  """The next free TF Serving version number under export_dir (1 when there is none)."""
  existing = ([int(n) for n in os.listdir(export_dir) if n.isdigit()]
              if os.path.isdir(export_dir) else [])
  return max(existing, default=0) + 1


def _fsync_dir(path: str) -> None:
  """Makes a rename inside directory `path` durable."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def export_saved_model(workdir: str, output: str, version: Optional[int] = None,
                       casc: Optional[Cascade] = None, precision: str = "float32") -> str:
  """Exports the workdir's cascade (or `casc`) to OUT/<version> crash-safely; returns the path.

  output: the model base dir (OUT, the --export_dir flag). The SavedModel is written to the
  sibling OUT/.tmp-<version>-<pid> (not a number, so TF Serving ignores it) and renamed into
  place only when complete: a crash never leaves a half-written version for the server to
  load. version defaults to the next free number.
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
