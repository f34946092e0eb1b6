"""Writers of tiny dataset folders in the genuine on-disk formats, for reader tests.

Every file is written the way the real datasets are: annotations with scipy.io.savemat in
the original MATLAB layouts (LSP (3, 14, N), LSPET (14, 3, N), FLIC a 1 x N struct
array), images as real JPEG/PNG files.  Coordinates given to these writers are MATLAB
1-based pixels, exactly what the .mat files hold.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import scipy.io
from PIL import Image

NUM_LSP_JOINTS = 14
NUM_FLIC_POINTS = 29


def write_image(path: str, width: int = 30, height: int = 20, mode: str = "RGB",
                seed: int = 0) -> bytes:
  """Writes a random-pixel image (format from the extension); returns the file's bytes."""
  rng = np.random.default_rng(seed)
  shape = (height, width) if mode == "L" else (height, width, len(mode))
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
  with open(path, "rb") as f:
    return f.read()


def random_lsp_joints(num_images: int, width: int = 30, height: int = 20,
                      seed: int = 0) -> np.ndarray:
  """(N, 14, 3) float64 [x, y, flag=1], x in [1, width], y in [1, height] (MATLAB pixels)."""
  rng = np.random.default_rng(seed)
  joints = np.ones((num_images, NUM_LSP_JOINTS, 3))
  joints[..., 0] = rng.uniform(1, width, (num_images, NUM_LSP_JOINTS))
  joints[..., 1] = rng.uniform(1, height, (num_images, NUM_LSP_JOINTS))
  return joints


def write_joints_mat(path: str, joints: np.ndarray, layout: str) -> None:
  """joints (N, 14, 3) [x, y, flag] saved as `joints` in the LSP (3, 14, N) or LSPET
  (14, 3, N) layout."""
  joints = np.asarray(joints, np.float64)
  if layout == "lsp":
    arr = joints.transpose(2, 1, 0)
  elif layout == "lspet":
    arr = joints.transpose(1, 2, 0)
  else:
    raise ValueError(f"layout must be 'lsp' or 'lspet', got {layout!r}")
  scipy.io.savemat(path, {"joints": arr})


def write_lsp_folder(root: str, joints: np.ndarray, layout: str, digits: int,
                     grayscale: Sequence[int] = (), distinct: int = 8,
                     width: int = 30, height: int = 20) -> List[bytes]:
  """An LSP (digits=4) or LSPET (digits=5) folder: joints.mat + images/im%0Nd.jpg.

  The first `distinct` images get their own random pixels; the rest reuse the last
  written bytes so folders of a thousand images stay fast to write.  Images whose
  0-based index is in `grayscale` are single-channel JPEGs.  Returns every image's bytes.
  """
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  write_joints_mat(os.path.join(root, "joints.mat"), joints, layout)
  written = []
  data = b""
  for i in range(len(joints)):
    path = os.path.join(root, "images", f"im{i + 1:0{digits}d}.jpg")
    if i < distinct or i in grayscale:
      data = write_image(path, width, height, "L" if i in grayscale else "RGB", seed=i)
    else:
      with open(path, "wb") as f:
        f.write(data)
    written.append(data)
  return written


def flic_example(filepath: str, coords: np.ndarray, torsobox: Sequence[float],
                 istrain: bool, width: int = 30, height: int = 20,
                 moviename: str = "fixture-movie", currframe: int = 1) -> Dict:
  """One FLIC `examples` element's fields, typed as in the real examples.mat."""
  return {
      "poselet_hit_idx": np.zeros((1, 0)),
      "moviename": moviename,
      "coords": np.asarray(coords, np.float64),
      "filepath": filepath,
      "imgdims": np.asarray([[height, width, 3]], np.float64),
      "currframe": np.asarray([[currframe]], np.float64),
      "torsobox": np.asarray([list(torsobox)], np.float64),
      "istrain": np.asarray([[bool(istrain)]]),
      "istest": np.asarray([[not istrain]]),
  }


def flic_coords(seed: int = 0, width: int = 30, height: int = 20,
                labelled: Sequence[int] = (0, 1, 2, 3, 4, 5, 6, 9, 12, 13, 16)) -> np.ndarray:
  """(2, 29) float64 MATLAB pixels; NaN except the 0-based `labelled` columns (FLIC's)."""
  rng = np.random.default_rng(seed)
  coords = np.full((2, NUM_FLIC_POINTS), np.nan)
  cols = list(labelled)
  coords[0, cols] = rng.uniform(1, width, len(cols))
  coords[1, cols] = rng.uniform(1, height, len(cols))
  return coords


def write_examples_mat(path: str, examples: Sequence[Dict]) -> None:
  """Saves `examples` as a 1 x N MATLAB struct array, as FLIC's examples.mat holds it."""
  fields = list(examples[0])
  arr = np.zeros((1, len(examples)), dtype=[(f, object) for f in fields])
  for i, ex in enumerate(examples):
    for f in fields:
      arr[f][0, i] = ex[f]
  scipy.io.savemat(path, {"examples": arr})


def write_flic_folder(root: str, examples: Sequence[Dict],
                      image_modes: Optional[Dict[str, str]] = None,
                      width: int = 30, height: int = 20) -> Dict[str, bytes]:
  """examples.mat + images/<filepath> for every distinct, non-escaping filepath.

  image_modes maps a filepath to a PIL mode ("L" for grayscale); the format follows the
  extension.  Returns {filepath: bytes written}.
  """
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  write_examples_mat(os.path.join(root, "examples.mat"), examples)
  written = {}
  for i, ex in enumerate(examples):
    fp = ex["filepath"]
    if not fp or fp in written or os.path.isabs(fp) or ".." in fp.replace("\\", "/").split("/"):
      continue
    path = os.path.join(root, "images", fp)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    written[fp] = write_image(path, width, height, (image_modes or {}).get(fp, "RGB"),
                              seed=100 + i)
  return written
