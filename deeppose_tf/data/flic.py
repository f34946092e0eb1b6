"""Reader for FLIC (Frames Labeled In Cinema, Sapp & Taskar, CVPR 2013).

`source_dir/examples.mat` holds `examples`, a 1 x N struct array (N = 5003 in FLIC), one
element per annotated person:
  coords    (2, 29) double, (x; y) of FLIC's 29 points, MATLAB 1-based pixels, NaN where
            unlabelled (FLIC labels points 1-7, 10, 13, 14, 17)
  filepath  image file name, relative to `source_dir/images/`; several people of one
            frame share a file, so record ids carry the example number too
  torsobox  (1, 4) double, x1 y1 x2 y2 (MATLAB 1-based pixels)
  istrain, istest  logical; 3987 / 1016 examples
  imgdims, moviename, currframe, ...  not used here

Joints are the paper's 10 in `skeleton.FLIC10` order (shoulders, elbows, wrists, hips,
neck, nose); FLIC has no neck label, so neck = the midpoint of the two shoulders,
annotated only when both shoulders are.  A NaN (or other non-finite) coordinate makes the
joint unannotated: visible = 0 and its joints row is zeros.

Left/right: FLIC's coordinates are observer-centric in the original release.  They are
kept exactly as released ("lsho" -> "l_shoulder"), as the common FLIC evaluation code
does, so numbers stay comparable with published ones.  Nothing downstream breaks: a
horizontal flip swaps observer-left and observer-right just as it swaps a person's own
left and right, so `FLIC10.flip_permutation` stays right, and the PCP/PDJ numbers
average left and right.  Do not mix FLIC and LSP poses in one model expecting "l_" to
mean the same side.

Coordinate frame as in matlab.py: x_py = x_mat - 0.5 (0-based pixels, pixel i spans
[i, i+1)).  The torso box corners are points in that same frame, so box (cx, cy, w, h) =
((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5, x2 - x1, y2 - y1).

Initial box (`box=`): "torso" (default) stores that torso box; "face" stores the paper's
box from a face detector (face_box.py: OpenCV Haar cascade, optional extra
`pip install "deeppose_tf[face]"`) enlarged by a scaler fitted on the train split so the
box contains the labelled joints, falling back to the torso box for records whose image
has no detected face (counted and logged); "none" stores no box.  The face of a record is
the largest one in its frame: in a multi-person frame every person gets that face's box.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import time
from typing import Dict, Iterator, List, Optional, Union

import numpy as np
import scipy.io
from absl import logging

from deeppose_tf import skeleton as skeleton_lib
from deeppose_tf.data import face_box
from deeppose_tf.data.matlab import (check_split, load_mat_variable, matlab_to_pixels,
                                     read_image_bytes)
from deeppose_tf.data.records import PoseRecord

# FLIC's 29 point names, in the order of the columns of `coords`.
FLIC_POINT_NAMES = (
    "lsho", "lelb", "lwri", "rsho", "relb", "rwri", "lhip", "lkne", "lank", "rhip",
    "rkne", "rank", "leye", "reye", "lear", "rear", "nose", "msho", "mhip", "mear",
    "mtorso", "mluarm", "mruarm", "mllarm", "mrlarm", "mluleg", "mruleg", "mllleg",
    "mrlleg")

# Each FLIC10 joint is the mean of these FLIC points (labels kept as released, see above).
FLIC10_SOURCES = {
    "l_shoulder": ("lsho",), "l_elbow": ("lelb",), "l_wrist": ("lwri",),
    "r_shoulder": ("rsho",), "r_elbow": ("relb",), "r_wrist": ("rwri",),
    "l_hip": ("lhip",), "r_hip": ("rhip",), "neck": ("lsho", "rsho"), "nose": ("nose",),
}
if set(FLIC10_SOURCES) != set(skeleton_lib.FLIC10.joints):
  raise ImportError("FLIC10_SOURCES does not cover exactly skeleton.FLIC10.joints")

# (K, 2) column indices into coords: a joint's two sources (the same one twice when it
# has one), so every joint is 0.5 * (a + b) and annotated when both a and b are.
_SOURCE_COLUMNS = np.asarray(
    [[FLIC_POINT_NAMES.index(FLIC10_SOURCES[j][0]),
      FLIC_POINT_NAMES.index(FLIC10_SOURCES[j][-1])] for j in skeleton_lib.FLIC10.joints],
    np.int64)

FLIC_SPLITS = {"train": "istrain", "test": "istest"}
BOX_CHOICES = ("torso", "face", "none")
_REQUIRED_FIELDS = ("coords", "filepath", "torsobox", "istrain", "istest")


def read_flic(source_dir: str, split: str, box: str = "torso",
              skipped: Optional[List[str]] = None,
              face_scaler: Union[None, str, Dict] = None,
              box_stats: Optional[Dict] = None) -> Iterator[PoseRecord]:
  """FLIC records of one split, in the order of `examples`.

  split: 'train' (examples with istrain) or 'test' (istest).
  box: 'torso' = record.box is the torso box as (cx, cy, w, h) in 0-based image pixels;
    'face' = the person box derived from the largest detected face (face_box.py), or the
    torso box when the image has no detected face (or the scaler is unfitted because no
    training image had one); 'none' = record.box is None.
  skipped: examples of the split without any annotated joint are skipped, logged, and
    their ids appended here when a list is given (FLIC itself has none).
  face_scaler (box='face' only): a scaler dict (used as is), or the path of its JSON.
    Train split with a path or None: the first pass over the split detects faces and
    fits the scaler on them (face_box.fit_scaler, quantile 0.99), writes it to the path
    (crash-safe) when one is given, then the records are yielded.  Test split: required,
    the train split's scaler (never fitted on test).
  box_stats: a dict updated in place while iterating, ready for records.write_split's
    meta: {"box": box}, and for 'face' also "face_found" / "fallback_torso" (records that
    got the face box / the torso box) and "face_scaler" (the scaler dict used).

  Yields PoseRecord(image_id="flic/0001-<file stem>" (1-based example number),
  image=<file bytes of images/<filepath>>, joints (10, 2) float32 in 0-based image pixels,
  visible (10,) float32, box (4,) float32 or None).

  Raises ValueError immediately for an unknown split or box, a missing or malformed
  examples.mat (missing fields, bad istrain/istest), a face box on the test split without
  a face_scaler or with a missing or malformed one (ImportError without OpenCV); while
  iterating, naming the record,
  for a filepath that is absolute or leaves `source_dir/images` through '..', a missing
  image, coords not of shape (2, 29), or a torso box that is not finite with x2 > x1 and
  y2 > y1.  The filepath check is lexical: symlinks inside images/ were put there by
  whoever owns the folder and are followed.
  """
  check_split(split, list(FLIC_SPLITS), "FLIC")
  if box not in BOX_CHOICES:
    raise ValueError(f"unknown FLIC box {box!r}; valid choices are {list(BOX_CHOICES)}")
  stats = box_stats if box_stats is not None else {}
  stats["box"] = box
  scaler, scaler_path = None, None
  if box == "face":
    face_box.import_cv2()  # fail now, not after reading half the split
    if isinstance(face_scaler, dict):
      scaler = face_scaler
    elif face_scaler is not None and not isinstance(face_scaler, str):
      raise ValueError(f"face_scaler must be a dict, a JSON path or None, got {face_scaler!r}")
    elif split == "train":
      scaler_path = face_scaler  # fitted on this split while iterating
    elif face_scaler is None:
      raise ValueError("FLIC box='face' on the test split needs face_scaler: the train "
                       "split's scaler (dict or JSON path); read the train split first")
    else:
      scaler = face_box.load_scaler(face_scaler)
  path = os.path.join(source_dir, "examples.mat")
  examples = load_mat_variable(path, "examples", "FLIC", squeeze_me=True,
                               struct_as_record=False)
  # squeeze_me turns a 1 x 1 struct into the bare struct and 1 x N into a (N,) array.
  if isinstance(examples, scipy.io.matlab.mat_struct):
    examples = [examples]
  elif not (isinstance(examples, np.ndarray) and examples.dtype == object and
            all(isinstance(e, scipy.io.matlab.mat_struct) for e in examples.ravel())):
    raise ValueError(f"{path!r}: 'examples' must be a 1 x N struct array, got "
                     f"{type(examples).__name__} {getattr(examples, 'shape', '')}")
  else:
    examples = list(examples.ravel())
  for i, ex in enumerate(examples):
    missing = [f for f in _REQUIRED_FIELDS if f not in ex._fieldnames]
    if missing:
      raise ValueError(f"{path!r}: examples({i + 1}) lacks fields {missing}; it has "
                       f"{list(ex._fieldnames)}")
  flag_field = FLIC_SPLITS[split]
  chosen = [i for i, ex in enumerate(examples)
            if _flag(getattr(ex, flag_field), f"{path!r}: examples({i + 1}).{flag_field}")]
  if box == "face":
    return _face_records(source_dir, path, examples, chosen, skipped, scaler, scaler_path,
                         split, stats)
  return _flic_records(source_dir, path, examples, chosen, box, skipped)


def _face_records(source_dir, path, examples, chosen, skipped, scaler, scaler_path, split,
                  stats) -> Iterator[PoseRecord]:
  """Records with the face-derived box (see read_flic); torso box when no face is found."""
  detections = {}  # image bytes digest -> face: several people of a frame share a file

  def face_of(record):
    key = hashlib.sha1(record.image).digest()
    if key not in detections:
      detections[key] = face_box.detect_face(record.image, record.image_id)
    return detections[key]

  if scaler is None:  # train: pass 1 detects and fits
    faces, joints, visible = [], [], []
    t0 = time.time()
    n = 0
    for n, record in enumerate(_flic_records(source_dir, path, examples, chosen, "torso",
                                             None, log_skipped=False), 1):
      face = face_of(record)
      if face is not None:
        faces.append(face)
        joints.append(record.joints)
        visible.append(record.visible)
      if n % 500 == 0:
        logging.info("FLIC %s: face detection %d/%d (%.0f ms/image)", split, n, len(chosen),
                     1000 * (time.time() - t0) / len(detections))
    if faces:
      scaler = face_box.fit_scaler(faces, joints, visible)
    else:
      scaler = face_box.unfitted_scaler(f"no face detected in any of the {n} {split} records")
      logging.warning("FLIC %s: no face detected in any record; the face scaler is unfitted "
                      "and every record keeps its torso box", split)
    scaler = dict(scaler, detector=face_box.detector_info(), fitted_on=split)
    if scaler_path:
      face_box.save_scaler(scaler_path, scaler)
    logging.info("FLIC face scaler: %s", {k: scaler.get(k) for k in (
        "offset", "scale", "quantile", "num_faces", "coverage")})
  elif not face_box.is_fitted(scaler):
    logging.warning("FLIC %s: the face scaler is unfitted (%s); every record keeps its "
                    "torso box", split, scaler.get("reason"))
  fitted = face_box.is_fitted(scaler)
  stats.update({"face_found": 0, "fallback_torso": 0, "face_scaler": scaler})
  for record in _flic_records(source_dir, path, examples, chosen, "torso", skipped):
    face = face_of(record) if fitted else None
    if face is None:
      stats["fallback_torso"] += 1
    else:
      stats["face_found"] += 1
      record.box = face_box.face_to_person_box(face, scaler)
    yield record
  total = stats["face_found"] + stats["fallback_torso"]
  logging.info("FLIC %s: face box for %d of %d records; %d (%.1f%%) fell back to the torso "
               "box (no face found)", split, stats["face_found"], total,
               stats["fallback_torso"], 100.0 * stats["fallback_torso"] / max(total, 1))


def _flic_records(source_dir, path, examples, chosen, box, skipped,
                  log_skipped=True) -> Iterator[PoseRecord]:
  num_skipped = 0
  for i in chosen:
    ex = examples[i]
    where = f"examples({i + 1}) of {path!r}"
    filepath = _as_str(ex.filepath, f"{where}: filepath")
    image_id = f"flic/{i + 1:04d}-{os.path.splitext(os.path.basename(filepath))[0]}"
    where = f"record {image_id!r} ({where})"
    image_path = _image_path(source_dir, filepath, where)

    coords = np.asarray(ex.coords)
    if coords.shape != (2, len(FLIC_POINT_NAMES)) or not (
        np.issubdtype(coords.dtype, np.floating) or np.issubdtype(coords.dtype, np.integer)):
      raise ValueError(f"{where}: coords has shape {coords.shape} dtype {coords.dtype}, "
                       f"expected a numeric (2, {len(FLIC_POINT_NAMES)}) array")
    points = coords.T.astype(np.float64)  # (29, 2) x, y
    finite = np.all(np.isfinite(points), axis=1)
    a, b = _SOURCE_COLUMNS[:, 0], _SOURCE_COLUMNS[:, 1]
    annotated = finite[a] & finite[b]
    if not annotated.any():
      num_skipped += 1
      if log_skipped:
        logging.warning("FLIC: skipping %s, no joint of it is annotated", where)
      if skipped is not None:
        skipped.append(image_id)
      continue
    joints = np.zeros((len(a), 2), np.float32)
    joints[annotated] = matlab_to_pixels(0.5 * (points[a[annotated]] + points[b[annotated]]))

    record_box = _torso_box(ex.torsobox, where) if box == "torso" else None
    yield PoseRecord(image_id=image_id, image=read_image_bytes(image_path, image_id),
                     joints=joints, visible=annotated.astype(np.float32), box=record_box)
  if num_skipped and log_skipped:
    logging.warning("FLIC: skipped %d of %d examples that have no annotated joint",
                    num_skipped, len(chosen))


def _torso_box(value, where: str) -> np.ndarray:
  """FLIC torsobox (x1 y1 x2 y2, MATLAB pixels) -> (4,) float32 (cx, cy, w, h), 0-based."""
  corners = np.asarray(value, np.float64).ravel() if _is_numeric(value) else None
  if corners is None or corners.shape != (4,) or not np.all(np.isfinite(corners)):
    raise ValueError(f"{where}: torsobox must be 4 finite numbers x1 y1 x2 y2, got {value!r}")
  x1, y1, x2, y2 = corners
  if x2 <= x1 or y2 <= y1:
    raise ValueError(f"{where}: torsobox {corners.tolist()} is empty or inverted; expected "
                     f"x1 < x2 and y1 < y2")
  cx, cy = matlab_to_pixels([(x1 + x2) / 2, (y1 + y2) / 2])
  return np.asarray([cx, cy, x2 - x1, y2 - y1], np.float32)


def _image_path(source_dir: str, filepath: str, where: str) -> str:
  """source_dir/images/<filepath>, refusing annotation paths that leave that folder."""
  images_dir = os.path.join(source_dir, "images")
  # Backslashes count as separators here so a Windows-written '..\\..\\x' is caught too.
  unified = filepath.replace("\\", "/")
  if (not filepath.strip() or "\x00" in filepath or os.path.isabs(filepath)
      or unified.startswith("/") or re.match(r"^[A-Za-z]:", unified)):
    raise ValueError(f"{where}: image filepath {filepath!r} is empty or absolute; expected "
                     f"a path relative to {images_dir!r}")
  normalized = posixpath.normpath(unified)
  if normalized == ".." or normalized.startswith("../"):
    raise ValueError(f"{where}: image filepath {filepath!r} escapes the dataset folder "
                     f"{images_dir!r}")
  return os.path.join(images_dir, *normalized.split("/"))


def _is_numeric(value) -> bool:
  arr = np.asarray(value)
  return np.issubdtype(arr.dtype, np.number) or arr.dtype == bool


def _flag(value, where: str) -> bool:
  arr = np.asarray(value)
  if not _is_numeric(value) or arr.size != 1 or arr.ravel()[0] not in (0, 1):
    raise ValueError(f"{where} must be a logical 0 or 1, got {value!r}")
  return bool(arr.ravel()[0])


def _as_str(value, where: str) -> str:
  if isinstance(value, str):
    return value
  arr = np.asarray(value)
  if arr.dtype.kind == "U" and arr.size == 0:  # MATLAB '' loads as an empty char array
    return ""
  if arr.dtype.kind == "U" and arr.size == 1:
    return str(arr.ravel()[0])
  raise ValueError(f"{where} must be a string, got {value!r}")
