"""What the readers of MATLAB-format datasets (lsp.py, flic.py) share.

Loading one variable of a .mat file with errors that say what is wrong where, the MATLAB
pixel frame -> ours conversion, reading an image file's bytes untouched, the split check,
and `counts` (images / annotated / masked joints of some records).

Coordinate frame: .mat annotations are MATLAB 1-based pixel indices, where the centre of
the top-left pixel is (1, 1).  Ours is 0-based with pixel i spanning [i, i+1), so that
centre is (0.5, 0.5): x_py = x_mat - 1 + 0.5 = x_mat - 0.5 (`matlab_to_pixels`).
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Sequence

import numpy as np
import scipy.io

from deeppose_tf.data.records import PoseRecord


def matlab_to_pixels(xy) -> np.ndarray:
  """MATLAB 1-based pixel coordinates -> 0-based pixel-area coordinates, float32.

  MATLAB puts the centre of pixel (1, 1) at (1, 1); our frame puts it at (0.5, 0.5)
  (pixel i spans [i, i+1)), so both x and y move by -0.5.  Works on any shape.
  """
  return (np.asarray(xy, np.float64) - 0.5).astype(np.float32)


def check_split(split: str, valid: Sequence[str], dataset: str) -> None:
  if split not in valid:
    raise ValueError(f"unknown {dataset} split {split!r}; valid splits are {list(valid)}")


def load_mat_variable(path: str, variable: str, dataset: str, **loadmat_kwargs):
  """Loads one variable of a MATLAB v5 .mat file; ValueError saying what is wrong where."""
  if not os.path.isfile(path):
    raise ValueError(
        f"{dataset} annotations not found: expected {os.path.basename(path)!r} at {path!r}")
  try:
    mat = scipy.io.loadmat(path, variable_names=[variable], **loadmat_kwargs)
  except NotImplementedError as e:  # scipy's answer to v7.3 (HDF5) files
    raise ValueError(f"{path!r}: MATLAB v7.3 (HDF5) .mat files are not supported; re-save "
                     f"it with save(..., '-v7') ({e})") from None
  except Exception as e:  # scipy raises many types for corrupt files
    raise ValueError(f"{path!r}: not a readable MATLAB .mat file ({e})") from None
  if variable not in mat:
    raise ValueError(f"{path!r} has no variable {variable!r}; expected the {dataset} "
                     f"annotation variable {variable!r}")
  return mat[variable]


def read_image_bytes(path: str, image_id: str) -> bytes:
  """The file's bytes, untouched; ValueError naming the record if the file is missing."""
  if not os.path.isfile(path):
    raise ValueError(f"record {image_id!r}: image file {path!r} does not exist")
  with open(path, "rb") as f:
    return f.read()


def counts(records: Iterable[PoseRecord]) -> Dict[str, int]:
  """{"images", "annotated_joints", "masked_joints"} over records (consumes the iterable)."""
  images = annotated = masked = 0
  for record in records:
    visible = np.asarray(record.visible)
    images += 1
    n_annotated = int(np.count_nonzero(visible))
    annotated += n_annotated
    masked += int(visible.size) - n_annotated
  return {"images": images, "annotated_joints": annotated, "masked_joints": masked}
