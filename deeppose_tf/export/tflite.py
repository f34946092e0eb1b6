"""The builtin-ops TFLite model: the cascade at one fixed input size, float32, float16
weights or int8 stage networks (calibrated on the workdir's own images).

One signature `serving_default`: image float32 [1, H, W, 3] in [0, 255] and box float32
[1, 4] -> joints [1, K, 2], joints_per_stage [1, S, K, 2]. Smaller images go in the top-left
corner of a zero canvas (coordinates unchanged); tflite_cascade.fit_to_canvas also shrinks
larger ones. Beside MODEL.tflite, MODEL.json (the sidecar) records the skeleton, stages,
input size and sigma the file was made for (sidecar_meta).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Iterator, Optional, Tuple

import numpy as np
import tensorflow as tf

from deeppose_tf import geometry, pipeline
from deeppose_tf.cascade import Cascade
from deeppose_tf.export.inputs import resolve_boxes
from deeppose_tf.export.saved_model import serving_outputs
from deeppose_tf.workdir import read_config

QUANTIZE = ("none", "float16", "int8")


def representative_images(workdir: str, height: int, width: int, count: int = 32,
                          seed: int = 0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
  """(image (1, height, width, 3) float32, box (1, 4)) for int8 calibration.

  Real images from the workdir's data (config.json's data_dir: the training split, else
  'val', else 'test'; training images first, so that accuracy measured on the test split
  is not calibrated on it) through pipeline.eval_dataset, fitted with fit_to_canvas; when
  no data is readable, uniform random images (from `seed`) with full-canvas boxes
  (calibration then only reflects the value range, not natural image statistics).
  """
  from deeppose_tf.data import records
  from deeppose_tf.skeleton import resolve
  from deeppose_tf.tflite_cascade import fit_to_canvas
  config = read_config(workdir)
  data_dir = config.get("data_dir")
  for split in (config.get("train_split", "train"), "val", "test"):
    try:
      records.list_shards(data_dir, split)
    except (ValueError, TypeError, OSError):
      continue
    ds = pipeline.eval_dataset(data_dir, split, resolve(config["skeleton"]), 1, count)
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
  builtin = casc.with_crop(geometry.crop_builtin)

  def serve(image, box):
    boxes = resolve_boxes(box, tf.fill([1], height), tf.fill([1], width))
    return serving_outputs(builtin, image, boxes)

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
      return _quantize_networks_int8(converter, representative, network_layers(casc))
    return converter.convert()


# int8 covers the stage networks' feature layers and nothing else.
#
# - Geometry stays float (crop sampling positions, joint boxes, poses in pixels): quantized
#   with calibrated ranges, a pose tensor has a resolution of (range / 256) pixels and is
#   clipped to the range it saw during calibration, so an image larger than the calibration
#   images loses whole joints. It costs next to nothing beside the convolutions.
# - Each network's output layer stays float (OUTPUT_LAYERS), and so does what follows it
#   (the soft-argmax, the peak decoding, Tompson's spatial model). With int8 heatmap logits,
#   a softmax over 256+ cells sees at most 256 levels over the calibrated range: the integral
#   head's soft-argmax collapsed to the mean of the cells and scored PCP 0.000.
# - Inside the networks every layer of INT8_LAYERS gets int8 kernels, including the
#   depthwise convolutions and residual additions of the ImageNet backbones, so that the
#   backbone runs in int8 from end to end instead of converting at every depthwise layer.
INT8_KERNELS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D",
                "AVERAGE_POOL_2D", "ADD", "CONCATENATION", "PAD", "MEAN",
                "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RELU", "RELU6")
INT8_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense", "MaxPooling2D", "AveragePooling2D",
               "GlobalAveragePooling2D", "Add", "Concatenate", "ZeroPadding2D",
               "BatchNormalization", "ReLU", "Activation", "Resizing", "UpSampling2D")
OUTPUT_LAYERS = ("heatmaps", "fc8")


def network_layers(casc: Cascade) -> dict:
  """{layer name: True if it gets int8 kernels} over every stage network, nested backbones
  included (their layers name the converted ops)."""
  out = {}

  def walk(model):
    for layer in model.layers:
      if hasattr(layer, "layers"):  # a nested model (the ImageNet backbones)
        out[layer.name] = False
        walk(layer)
      else:
        out[layer.name] = (type(layer).__name__ in INT8_LAYERS
                           and layer.name not in OUTPUT_LAYERS)
  for net in casc.stages:
    walk(net)
  return out


def layer_of(tensor_name: str, layers: dict):
  """The innermost Keras layer named in a converted tensor's name, or None (geometry).

  The converter names an op's output after its scopes, innermost last, each with Keras'
  call suffix ("functional_1/backbone_1/block_2_add_1/Add"); fused ops join several names
  with ';', the first being the op's own. Geometry lives outside any network's scope (one
  component, like "add_3"), so only names of two or more components are looked up."""
  import re
  parts = tensor_name.split(";")[0].split("/")
  if len(parts) < 2:
    return None
  for part in reversed(parts[1:]):
    base = re.sub(r"_\d+$", "", part)
    if base in layers:
      return base
    if part in layers:
      return part
  return None


def int8_plan(model, layers: dict):
  """Which ops of a calibrated flatbuffer `model` get int8 kernels: (int8 ops as (subgraph
  index, op index), float op output names, float op types). An op is int8 when its type has
  an int8 kernel (INT8_KERNELS) and it belongs to a feature layer of a network."""
  from tensorflow.lite.tools import flatbuffer_utils
  int8, float_nodes, float_types = set(), set(), set()
  for g, graph in enumerate(model.subgraphs):
    for o, op in enumerate(graph.operators):
      kind = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
      if not len(op.outputs):
        continue
      out_name = graph.tensors[op.outputs[0]].name.decode()
      layer = layer_of(out_name, layers)
      if kind in INT8_KERNELS and layer is not None and layers[layer]:
        int8.add((g, o))
      elif kind in INT8_KERNELS:
        float_nodes.add(out_name)
      else:
        float_types.add(kind)
  return int8, float_nodes, float_types


def _quantize_networks_int8(converter, representative, layers: dict) -> bytes:
  """Post-training int8 of the stage networks' feature layers (int8_plan), calibrated on
  `representative`; inputs, outputs, geometry and the output layers stay float32.

  Denylisting op types alone is not enough: the quantizer still puts a quantize/dequantize
  pair on a pose where it meets a CONCATENATION (joint_boxes), which requantizes it. So the
  calibrated model's ranges are dropped from every tensor that no int8 op reads or writes,
  ops of other types are denylisted by type and float ops of int8 types by name. Uses the
  converter's calibrate-only mode and mlir_quantize (the calls
  tf.lite.experimental.QuantizationDebugger makes).
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
  int8, float_nodes, float_types = int8_plan(model, layers)
  if not int8:
    raise ValueError("int8: no layer of the stage networks was found in the converted "
                     "graph (the converter's tensor names changed?); nothing would be "
                     "quantized")
  for g, graph in enumerate(model.subgraphs):
    keep = set()
    for o, op in enumerate(graph.operators):
      if (g, o) in int8:
        keep.update(int(t) for t in list(op.inputs) + list(op.outputs))
    for i, tensor in enumerate(graph.tensors):
      if i not in keep:
        tensor.quantization = None
  return convert.mlir_quantize(
      bytes(flatbuffer_utils.convert_object_to_bytearray(model)), fully_quantize=False,
      denylisted_ops=sorted(float_types), denylisted_nodes=sorted(float_nodes))


def export_tflite(workdir: str, output: str, quantize: str = "none",
                  size: Optional[Tuple[int, int]] = None,
                  casc: Optional[Cascade] = None, seed: int = 0) -> str:
  """Converts the workdir's cascade to `output` (.tflite, written atomically) and writes its
  sidecar beside it (sidecar_meta). size (H, W) defaults to twice the network input size;
  seed: representative_images' random fallback (int8 without readable training data)."""
  from deeppose_tf import atomic
  if casc is None:
    casc = Cascade.load(workdir)
  height, width = size or (2 * casc.input_size, 2 * casc.input_size)
  rep = (representative_images(workdir, height, width, seed=seed) if quantize == "int8"
         else None)
  data = convert_tflite(casc, height, width, quantize, rep)
  meta = sidecar_meta(casc, height, width, quantize)
  data = embed_metadata(data, meta)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  atomic.write_bytes(output, data)
  write_sidecar(output, meta)
  return output


def embed_metadata(data: bytes, meta: dict) -> bytes:
  """The .tflite flatbuffer `data` with `meta` as JSON in its metadata entry "deeppose"
  (tflite_cascade.METADATA_NAME; replaced if present). The interpreter ignores metadata, so
  the graph and its outputs are unchanged; a copy of the file without its sidecar still
  names its skeleton (tflite_cascade.read_embedded)."""
  from tensorflow.lite.python import schema_py_generated as schema
  from tensorflow.lite.tools import flatbuffer_utils
  from deeppose_tf.tflite_cascade import METADATA_NAME
  model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
  entries = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()]
  buffer = schema.BufferT()
  buffer.data = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
  model.buffers.append(buffer)
  entry = schema.MetadataT()
  entry.name = METADATA_NAME
  entry.buffer = len(model.buffers) - 1
  model.metadata = entries + [entry]
  return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def sidecar_meta(casc: Cascade, height: int, width: int, quantize: str) -> dict:
  """What the .tflite file cannot tell about the cascade inside it, for `evaluate --tflite`
  to check against a workdir's config.json: skeleton, stages, input_size (the networks'
  crop side), sigma (the refinement boxes, in torso diameters); and canvas [H, W], quantize
  flip_test and reframe, reframe_grow (test-time flips and stage-1 reframing, inside the
  graph) for people."""
  from deeppose_tf.skeleton import stored
  return {"skeleton": stored(casc.skeleton), "stages": casc.num_stages,
          "input_size": int(casc.input_size), "sigma": float(casc.sigma),
          "canvas": [int(height), int(width)], "quantize": quantize,
          **casc.inference_settings}


def write_sidecar(model_path: str, meta: dict) -> str:
  """Writes MODEL.json beside MODEL.tflite (crash-safely): `meta` over the keys an existing
  sidecar holds, so a model card's own keys (name, version, card: the bundled model's) stay.
  Returns its path."""
  from deeppose_tf import atomic
  from deeppose_tf.tflite_cascade import read_sidecar, sidecar_path
  try:
    old = read_sidecar(model_path)
  except ValueError:  # damaged: ours replaces it
    old = {}
  path = sidecar_path(model_path)
  atomic.write_text(path, json.dumps({**old, **meta}, indent=1) + "\n")
  return path
