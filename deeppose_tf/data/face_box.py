"""FLIC's initial box from a face detector, as in the DeepPose paper (Sec. 4, FLIC).

DeepPose starts FLIC's stage 1 from a box around the upper body derived from a face
detection, enlarged by a fixed scaler fitted on the training set so that the box contains
the labelled joints.  This module holds the detector and the scaler; flic.py uses them
when `read_flic(..., box="face")` is asked for.

Detector: OpenCV's Haar frontal-face cascade (`haarcascade_frontalface_default.xml`,
shipped inside the opencv-python-headless wheel under `cv2.data.haarcascades`, so nothing
is downloaded).  OpenCV is an optional extra: `pip install "deeppose_tf[face]"`.  OpenCV
5 dropped the Haar cascades from its main module, so an OpenCV 4.x build is required.
The image is decoded to grayscale, histogram-equalized and scanned with scaleFactor 1.1,
minNeighbors 5, minSize 30 x 30 px; the largest detection (by area) is the face.  The
classifier is loaded once per process.

Frames: a face is (x, y, w, h) with (x, y) its top-left corner in the 0-based pixel-area
frame of records.py (pixel i spans [i, i+1)), so an OpenCV rectangle is used as is and
the face centre is (x + w / 2, y + h / 2).

Scaler model (a dict, saved as JSON): with face centre c = (x + w/2, y + h/2) and face
size f = (w, h), the person box is
    centre = c + offset * f,    size = scale * f      (elementwise; offset, scale in R^2)
i.e. a box fixed in "face units".  Fitting (`fit_scaler`): every fitting image i with
labelled joints p_ij is expressed in face units, u_ij = (p_ij - c_i) / f_i, and summarized
by its extent [umin_i, umax_i] x [vmin_i, vmax_i].  A box [lo_u, hi_u] x [lo_v, hi_v] in
face units contains all of image i's joints iff it contains that extent, so
  quantile = 1: lo_u = min_i umin_i, hi_u = max_i umax_i (same for v) -- the smallest box
    of this model containing every labelled joint of every fitting image;
  quantile q < 1: greedy peeling: floor((1 - q) * N) times, drop the one image (among
    those defining the current min/max extents) whose removal shrinks the box area most
    (ties: the lowest index), then take the bounding box of the rest.  The box contains
    all joints of at least q of the images (dropped images may still fit); the achieved
    fraction is stored as "coverage".  q < 1 keeps a few wrong detections (a background
    false positive, another person's face in a multi-person frame) from inflating the
    box for everybody.
Then offset = ((lo_u + hi_u) / 2, (lo_v + hi_v) / 2) and scale = (hi_u - lo_u, hi_v - lo_v).
"""

from __future__ import annotations

import json
import math
import os
import threading
from typing import Dict, Optional, Tuple

import numpy as np

from deeppose_tf import atomic

CASCADE_FILE = "haarcascade_frontalface_default.xml"
SCALE_FACTOR = 1.1
MIN_NEIGHBORS = 5
MIN_SIZE = 30  # px; smaller Haar hits on FLIC's 720 x 480 frames are mostly noise
SCALER_FILE = "flic_face_scaler.json"
SCALER_MODEL = ("person box centre = face centre + offset * face size, person box size = "
                "scale * face size (elementwise, face size = detected (w, h))")
# A person box never shrinks below this many face sizes, so a degenerate fit (one joint,
# or all joints on a line) still gives a box with positive width and height.
_MIN_SCALE = 1e-3

_INSTALL_HINT = 'pip install "deeppose_tf[face]"  (or: pip install "opencv-python-headless<5")'
_detector = None
_detector_lock = threading.Lock()


def import_cv2():
  """cv2, or an ImportError that says how to install it (a 4.x build with Haar cascades)."""
  try:
    import cv2  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"FLIC's face box needs OpenCV, an optional extra: {_INSTALL_HINT} "
                      f"({e})") from None
  if not hasattr(cv2, "CascadeClassifier"):
    raise ImportError(f"OpenCV {cv2.__version__} has no Haar CascadeClassifier (OpenCV 5 "
                      f"dropped it); install a 4.x build: {_INSTALL_HINT}")
  return cv2


def _get_detector():
  global _detector
  with _detector_lock:
    if _detector is None:
      cv2 = import_cv2()
      path = cv2.data.haarcascades + CASCADE_FILE
      detector = cv2.CascadeClassifier(path)
      if detector.empty():
        raise ImportError(f"OpenCV could not load its Haar cascade {path!r}; reinstall it: "
                          f"{_INSTALL_HINT}")
      _detector = detector
    return _detector


def detector_info() -> Dict:
  """What produced the detections (stored with the scaler, for reproducibility)."""
  return {"cascade": CASCADE_FILE, "scale_factor": SCALE_FACTOR,
          "min_neighbors": MIN_NEIGHBORS, "min_size": MIN_SIZE,
          "opencv": import_cv2().__version__}


def detect_face(image_bytes: bytes, image_id: str = "") -> Optional[Tuple[int, int, int, int]]:
  """The largest frontal face in encoded JPEG/PNG bytes as (x, y, w, h), or None.

  (x, y) is the top-left corner, in 0-based image pixels (pixel i spans [i, i+1)).
  Raises ImportError without OpenCV, ValueError (naming `image_id`) for undecodable bytes.
  """
  cv2 = import_cv2()
  detector = _get_detector()
  gray = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), cv2.IMREAD_GRAYSCALE)
  if gray is None:
    raise ValueError(f"record {image_id!r}: OpenCV cannot decode the image bytes for face "
                     f"detection")
  gray = cv2.equalizeHist(gray)
  with _detector_lock:
    faces = detector.detectMultiScale(gray, scaleFactor=SCALE_FACTOR,
                                      minNeighbors=MIN_NEIGHBORS,
                                      minSize=(MIN_SIZE, MIN_SIZE))
  if len(faces) == 0:
    return None
  faces = np.asarray(faces).reshape(-1, 4)
  x, y, w, h = faces[int(np.argmax(faces[:, 2] * faces[:, 3]))]
  return int(x), int(y), int(w), int(h)


def _face_units(faces, joints, visible):
  """Checks shapes; returns per-image extents (N, 4) umin, umax, vmin, vmax in face units."""
  faces = np.asarray(faces, np.float64)
  joints = np.asarray(joints, np.float64)
  visible = np.asarray(visible) > 0
  n = faces.shape[0] if faces.ndim == 2 else -1
  if faces.shape != (n, 4) or joints.shape[:1] != (n,) or joints.ndim != 3 or \
      joints.shape[2] != 2 or visible.shape != joints.shape[:2]:
    raise ValueError(f"expected faces (N, 4), joints (N, K, 2), visible (N, K); got "
                     f"{faces.shape}, {joints.shape}, {visible.shape}")
  if not np.all(np.isfinite(faces)) or np.any(faces[:, 2:] <= 0):
    raise ValueError("faces must be finite (x, y, w, h) with w, h > 0")
  if not np.all(visible.any(axis=1)):
    raise ValueError(f"images {np.flatnonzero(~visible.any(axis=1)).tolist()} have no "
                     f"labelled joint")
  if not np.all(np.isfinite(joints[visible])):
    raise ValueError("labelled joints must have finite coordinates")
  size = faces[:, None, 2:]
  centre = faces[:, None, :2] + 0.5 * size
  units = (joints - centre) / size  # (N, K, 2)
  lo = np.where(visible[..., None], units, np.inf).min(axis=1)
  hi = np.where(visible[..., None], units, -np.inf).max(axis=1)
  return np.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]], axis=1)


def _bounds(ext):
  return np.array([ext[:, 0].min(), ext[:, 1].max(), ext[:, 2].min(), ext[:, 3].max()])


def _area(b):
  return max(b[1] - b[0], 0.0) * max(b[3] - b[2], 0.0)


def fit_scaler(faces, joints, visible, quantile: float = 0.99) -> Dict:
  """Fits the face -> person box scaler (model and procedure: the module docstring).

  faces: (N, 4) (x, y, w, h) face boxes, image pixels; joints: (N, K, 2) (x, y) image
  pixels of the same images; visible: (N, K), 1 = labelled (every image needs one).
  quantile in (0, 1]: the fraction of the N images whose labelled joints must all lie in
  their box (1.0 = all of them, the paper's "contains all labelled joints").
  Returns a JSON-able dict: model, offset [ox, oy], scale [sx, sy], quantile, num_faces,
  coverage (achieved fraction on these images).  Raises ValueError for bad shapes, an
  image without labelled joints, a quantile outside (0, 1] or N = 0.
  """
  if not 0.0 < float(quantile) <= 1.0:
    raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
  ext = _face_units(faces, joints, visible)
  n = len(ext)
  if n == 0:
    raise ValueError("fit_scaler needs at least one image with a detected face")
  keep = np.ones(n, bool)
  for _ in range(int(math.floor((1.0 - float(quantile)) * n + 1e-9))):
    idx = np.flatnonzero(keep)
    kept = ext[idx]
    candidates = sorted({int(idx[np.argmin(kept[:, 0])]), int(idx[np.argmax(kept[:, 1])]),
                         int(idx[np.argmin(kept[:, 2])]), int(idx[np.argmax(kept[:, 3])])})
    best, best_area = None, None
    for c in candidates:
      keep[c] = False
      area = _area(_bounds(ext[keep]))
      keep[c] = True
      if best_area is None or area < best_area:
        best, best_area = c, area
    keep[best] = False
  lo_u, hi_u, lo_v, hi_v = _bounds(ext[keep])
  scaler = {
      "model": SCALER_MODEL,
      "offset": [float((lo_u + hi_u) / 2), float((lo_v + hi_v) / 2)],
      "scale": [float(max(hi_u - lo_u, _MIN_SCALE)), float(max(hi_v - lo_v, _MIN_SCALE))],
      "quantile": float(quantile),
      "num_faces": int(n),
  }
  scaler["coverage"] = float(np.mean(contains_joints(faces, joints, visible, scaler)))
  return scaler


def unfitted_scaler(reason: str) -> Dict:
  """The scaler saved when no training image had a face: every record falls back."""
  return {"model": SCALER_MODEL, "offset": None, "scale": None, "num_faces": 0,
          "reason": reason}


def is_fitted(scaler: Dict) -> bool:
  return scaler.get("offset") is not None and scaler.get("scale") is not None


def face_to_person_box(face, scaler: Dict) -> np.ndarray:
  """Face box(es) (x, y, w, h), shape (4,) or (N, 4), image pixels -> person box(es)
  (cx, cy, w, h) float32 of the same shape, image pixels (may extend past the image)."""
  if not is_fitted(scaler):
    raise ValueError(f"the face scaler is not fitted ({scaler.get('reason', 'no offset')})")
  face = np.asarray(face, np.float64)
  if face.shape[-1:] != (4,):
    raise ValueError(f"face must be (x, y, w, h), got shape {face.shape}")
  offset = np.asarray(scaler["offset"], np.float64)
  scale = np.asarray(scaler["scale"], np.float64)
  size = face[..., 2:]
  centre = face[..., :2] + 0.5 * size + offset * size
  return np.concatenate([centre, scale * size], axis=-1).astype(np.float32)


def contains_joints(faces, joints, visible, scaler: Dict, tol: float = 1e-6) -> np.ndarray:
  """(N,) bool: all labelled joints of image i lie in its person box (edges included)."""
  boxes = face_to_person_box(np.asarray(faces, np.float64), scaler).astype(np.float64)
  joints = np.asarray(joints, np.float64)
  visible = np.asarray(visible) > 0
  half = boxes[:, None, 2:] / 2
  slack = tol * np.maximum(1.0, np.abs(joints))
  inside = np.all(np.abs(joints - boxes[:, None, :2]) <= half + slack, axis=-1)
  return np.all(inside | ~visible, axis=1)


def save_scaler(path: str, scaler: Dict) -> None:
  """Writes the scaler as JSON, crash-safely (a reader never sees half a file)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  atomic.write_text(path, json.dumps(scaler, indent=2))


def load_scaler(path: str) -> Dict:
  try:
    with open(path) as f:
      scaler = json.load(f)
  except FileNotFoundError:
    raise ValueError(f"no FLIC face scaler at {path!r}; it is fitted while the train split "
                     f"is read with box='face' (prepare writes train first)") from None
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{path!r} is not a readable face scaler JSON ({e})") from None
  if not isinstance(scaler, dict) or "offset" not in scaler or "scale" not in scaler:
    raise ValueError(f"{path!r} is not a face scaler: expected keys 'offset' and 'scale'")
  if is_fitted(scaler):
    for key in ("offset", "scale"):
      v = np.asarray(scaler[key], np.float64) if isinstance(scaler[key], list) else None
      if v is None or v.shape != (2,) or not np.all(np.isfinite(v)) or \
          (key == "scale" and np.any(v <= 0)):
        raise ValueError(f"{path!r}: {key} must be 2 finite numbers"
                         f"{' > 0' if key == 'scale' else ''}, got {scaler[key]!r}")
  return scaler

