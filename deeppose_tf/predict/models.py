"""Every kind of trained model behind one interface, for the predict command.

  model = load("runs/lspet")            # a training workdir (Keras stages)
  model = load("serving/deeppose")      # a SavedModel (a version dir, or TF Serving's base dir)
  model = load("deeppose.tflite")       # a TFLite file (LiteRT interpreter)
  model = load(None)                    # the model bundled with the package
  poses = model.predict(images, boxes)  # list of (h, w, 3) uint8, (B, 4) -> (B, S, K, 2)

Images are RGB uint8 (h, w, 3); boxes are (cx, cy, w, h) image pixels, one per image entry;
poses are image pixels, x before y, one row per stage.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

import numpy as np

from deeppose_tf.skeleton import SKELETONS, Skeleton, get_skeleton
from deeppose_tf.skeleton import resolve as resolve_skeleton

MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "models")
BUNDLED = os.path.join(MODELS_DIR, "deeppose_lspet.tflite")


class PoseModel:
  """name, version (str), skeleton, num_stages, left_right (the labels' convention,
  labels.py: "person" or "observer"), predict(images, boxes)."""

  name: str
  version: str
  skeleton: Skeleton
  num_stages: int
  left_right: str = "person"

  def predict(self, images: Sequence[np.ndarray], boxes: np.ndarray) -> np.ndarray:
    raise NotImplementedError


def _same_size_batches(images, boxes):
  """Consecutive entries with one image size, as (indices, stacked images, boxes)."""
  start = 0
  for i in range(1, len(images) + 1):
    if i == len(images) or images[i].shape != images[start].shape:
      yield (list(range(start, i)), np.stack(images[start:i]),
             np.asarray(boxes[start:i], np.float32))
      start = i


class _KerasModel(PoseModel):
  def __init__(self, workdir: str):
    from deeppose_tf import workdir as workdir_lib
    from deeppose_tf.cascade import Cascade
    casc = Cascade.load(workdir)
    self.skeleton, self.num_stages = casc.skeleton, casc.num_stages
    self.left_right = casc.left_right
    self.name = os.path.basename(os.path.normpath(workdir))
    config = workdir_lib.read_config(workdir)
    self.version = config.get("model", {}).get("backbone", "alexnet") + "-" + \
        config.get("model", {}).get("head", "fc")
    self._fn = casc.traced_predict()

  def predict(self, images, boxes):
    out = np.zeros((len(images), self.num_stages, self.skeleton.num_joints, 2), np.float32)
    for idx, batch, b in _same_size_batches(images, boxes):
      out[idx] = self._fn(batch, b).numpy()
    return out


class _SavedModel(PoseModel):
  def __init__(self, path: str):
    import tensorflow as tf
    loaded = tf.saved_model.load(path)
    if "predict_images" not in loaded.signatures:
      raise ValueError(f"{path} is a SavedModel without a predict_images signature; export "
                       "it with `python -m deeppose_tf.export`")
    self._loaded = loaded
    self._fn = loaded.signatures["predict_images"]
    if hasattr(loaded, "skeleton_json"):  # every skeleton, custom ones included
      self.skeleton = resolve_skeleton(json.loads(loaded.skeleton_json().numpy().decode()))
    else:  # exports before skeletons travelled whole: a preset's name
      self.skeleton = get_skeleton(loaded.skeleton_name().numpy().decode())
    self.name = os.path.basename(os.path.dirname(os.path.normpath(path)))
    self.version = os.path.basename(os.path.normpath(path))
    if hasattr(loaded, "left_right"):  # exports before it existed answer person-centric
      self.left_right = loaded.left_right().numpy().decode()
    probe = self._fn(images=tf.zeros([1, 8, 8, 3], tf.uint8), boxes=tf.zeros([1, 4]))
    self.num_stages = int(probe["joints_per_stage"].shape[1])

  def predict(self, images, boxes):
    import tensorflow as tf
    out = np.zeros((len(images), self.num_stages, self.skeleton.num_joints, 2), np.float32)
    for idx, batch, b in _same_size_batches(images, boxes):
      out[idx] = self._fn(images=tf.constant(batch), boxes=tf.constant(b))[
          "joints_per_stage"].numpy()
    return out


class _TFLiteModel(PoseModel):
  def __init__(self, path: str, num_threads: int = 2):
    from deeppose_tf.tflite_cascade import TFLiteCascade, read_model_meta
    # The file's own metadata, and MODEL.json beside it: name, version, skeleton...
    meta = read_model_meta(path)
    skeleton = resolve_skeleton(meta["skeleton"]) if meta.get("skeleton") else None
    if skeleton is None:  # no sidecar: the joint count names the skeleton
      from ai_edge_litert.interpreter import Interpreter
      out = Interpreter(model_path=path).get_signature_runner(
          "serving_default").get_output_details()
      k = int(out["joints_per_stage"]["shape"][2]) if "joints_per_stage" in out else -1
      matches = [s for s in SKELETONS.values() if s.num_joints == k]
      if len(matches) != 1:
        raise ValueError(f"{path}: cannot tell its skeleton ({k} joints); put a "
                         f"{os.path.splitext(path)[0]}.json with {{\"skeleton\": ...}} beside it")
      skeleton = matches[0]
    self._casc = TFLiteCascade(path, skeleton, num_threads=num_threads)
    self.skeleton, self.num_stages = skeleton, self._casc.num_stages
    self.name = meta.get("name", os.path.splitext(os.path.basename(path))[0])
    self.version = str(meta.get("version", "unversioned"))
    self.left_right = str(meta.get("left_right", "person"))

  def predict(self, images, boxes):
    return np.stack([self._casc.predict_one(image, box, index=i)
                     for i, (image, box) in enumerate(zip(images, boxes))])


def _latest_version(base: str) -> Optional[str]:
  versions = [n for n in os.listdir(base) if n.isdigit()
              and os.path.exists(os.path.join(base, n, "saved_model.pb"))]
  return os.path.join(base, max(versions, key=int)) if versions else None


def _loaded(kind, path: str, *args) -> PoseModel:
  """kind(path, *args); any failure to load becomes one ValueError naming the model (a
  SavedModel without its variables, a damaged .tflite, a workdir still training)."""
  try:
    return kind(path, *args)
  except ValueError as e:
    message = str(e)
    raise ValueError(message if path in message else f"--model={path}: {message}") from None
  except Exception as e:  # noqa: BLE001 - TF and LiteRT raise many kinds
    first = (str(e).strip().splitlines() or [""])[0][:300]
    raise ValueError(f"--model={path}: cannot load it ({type(e).__name__}: {first})"
                     ) from None


def load(path: Optional[str] = None, num_threads: int = 2) -> PoseModel:
  """The model at `path` (see the module docstring); None: the bundled model."""
  if path is None:
    if not os.path.exists(BUNDLED):
      raise ValueError(f"the bundled model {BUNDLED} is missing from this installation; "
                       "pass --model=WORKDIR|SAVED_MODEL|MODEL.tflite")
    path = BUNDLED
  if not os.path.exists(path):
    raise ValueError(f"--model={path}: no such file or folder")
  if os.path.isfile(path):
    if path.endswith(".tflite"):
      return _loaded(_TFLiteModel, path, num_threads)
    raise ValueError(f"--model={path}: a file must be a .tflite model; a workdir or a "
                     "SavedModel is a folder")
  if os.path.exists(os.path.join(path, "config.json")):
    return _loaded(_KerasModel, path)
  if os.path.exists(os.path.join(path, "saved_model.pb")):
    return _loaded(_SavedModel, path)
  latest = _latest_version(path)
  if latest:
    return _loaded(_SavedModel, latest)
  raise ValueError(f"--model={path}: neither a training workdir (config.json), a SavedModel "
                   "(saved_model.pb, or numbered version folders of one) nor a .tflite file")


def describe(model: PoseModel) -> List[str]:
  return [f"{model.name} {model.version}", f"{model.skeleton.name}",
          f"{model.num_stages} stage(s)", f"{model.left_right}-centric left/right"]
