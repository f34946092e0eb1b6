"""PCP and PDJ, the two metrics of DeepPose (Toshev & Szegedy, CVPR 2014, Sec. 6); pure numpy.

Every pose here is a float array in image pixels, shape (N, K, 2), x before y, with joints in
`skeleton.joints` order. `visible` (N, K) in {0, 1} marks annotated joints: an unannotated
joint is left out of every number (its true and predicted coordinates are never used, so
they may hold anything, NaN included).

NaN (or inf) in a *prediction* of an annotated joint counts as a miss, never as a hit: a
model that emits NaN must not score better than one that emits a wrong number. NaN in an
annotated *true* joint is a data error and raises ValueError.

Results are plain dicts of Python floats and lists, so they go straight into JSON. A rate
with nothing to count (e.g. a limb never annotated) is NaN.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from deeppose_tf import geometry
from deeppose_tf.skeleton import Skeleton

# The radii of the paper's PDJ curves (Figs. 3-5): fractions of the torso diameter.
PDJ_RADII = np.linspace(0.0, 0.5, 51)

# The PDJ radii a summary reports as single numbers (keys of summary["pdj_mean_at"]).
PDJ_REPORT_RADII = ("0.05", "0.1", "0.2")


def _check(pred, true, visible, skeleton: Skeleton):
  """Validates and converts the inputs; returns float64 pred, true and bool visible."""
  pred = np.asarray(pred, np.float64)
  true = np.asarray(true, np.float64)
  visible = np.asarray(visible)
  k = skeleton.num_joints
  if true.ndim != 3 or true.shape[1:] != (k, 2):
    raise ValueError(f"true poses must have shape (N, {k}, 2) for skeleton "
                     f"{skeleton.name!r}; got {true.shape}")
  if pred.shape != true.shape:
    raise ValueError(f"pred shape {pred.shape} does not match true shape {true.shape}")
  if visible.shape != true.shape[:2]:
    raise ValueError(f"visible must have shape {true.shape[:2]} (N, K); got {visible.shape}")
  if not np.isin(visible, (0, 1)).all():
    raise ValueError(f"visible must hold only 0 and 1; got values {np.unique(visible)[:8]}")
  visible = visible.astype(bool)
  bad = visible & ~np.isfinite(true).all(axis=-1)
  if bad.any():
    n, j = np.argwhere(bad)[0]
    raise ValueError(
        f"true joint {skeleton.joints[j]!r} of image {n} is annotated (visible=1) but is "
        f"{true[n, j].tolist()}; {int(bad.sum())} annotated true joints are not finite")
  return pred, true, visible


def _joint_errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
  """(N, K) Euclidean pixel error; inf wherever it is not finite, so it never passes `<=`."""
  with np.errstate(invalid="ignore", over="ignore"):
    err = np.linalg.norm(pred - true, axis=-1)
  err[~np.isfinite(err)] = np.inf
  return err


def _rate(hits, counts):
  """hits / counts as floats, NaN where counts is 0 (nothing to measure is not 0%)."""
  hits = np.asarray(hits, np.float64)
  counts = np.asarray(counts, np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def torso_diameter(joints, skeleton: Skeleton) -> np.ndarray:
  """Torso diameter of each pose: distance between the `skeleton.diameter` joints.

  Args:
    joints: (N, K, 2) poses in image pixels (any leading shape (..., K, 2) works).
  Returns:
    (N,) float64 diameters in pixels; NaN where a diameter joint is NaN.
  """
  joints = np.asarray(joints, np.float64)
  if joints.ndim < 2 or joints.shape[-2:] != (skeleton.num_joints, 2):
    raise ValueError(f"joints must have shape (N, {skeleton.num_joints}, 2) for skeleton "
                     f"{skeleton.name!r}; got {joints.shape}")
  # geometry.diameter is the one formula; float64 in, float64 out (NaN stays NaN).
  return geometry.diameter(joints, skeleton.diameter_indices).numpy()


def pcp(pred, true, visible, skeleton: Skeleton, thresh: float = 0.5) -> dict:
  """Strict Percentage of Correct Parts (paper Sec. 6, Table 1).

  A limb is correct when BOTH predicted endpoints lie within `thresh` x the true limb
  length of their true endpoints (distance <= threshold counts as correct). This is the
  strict PCP; the looser variant that averages the two endpoint errors is not computed.
  A limb counts only in images where both its endpoints are annotated.

  Args:
    pred, true: (N, K, 2) poses in image pixels, x before y.
    visible: (N, K) in {0, 1}; 1 = annotated.
    thresh: fraction of the true limb length (0.5 = PCP@0.5).
  Returns:
    {"per_limb": {limb: rate}, "per_type": {type: rate}, "mean": float,
     "counts": {limb: number of images where the limb counts}}.
    A type's rate pools its limbs (correct left + right) / (counted left + right).
    "mean" is the paper's Table 1 average over `skeleton.pcp_average` types (upper/lower
    arms and legs for LSP; arms only for FLIC), averaged over the types that were counted
    at least once. It is NOT the 6-part average (with torso and head) that some other
    ports report; the two are not comparable.
  """
  correct, counted = pcp_hits(pred, true, visible, skeleton, thresh)
  hits, counts = correct.sum(axis=0), counted.sum(axis=0)  # (L,)

  names = skeleton.limb_names
  per_limb = dict(zip(names, _rate(hits, counts).tolist()))
  per_type = {}
  for type_name, type_limbs in skeleton.pcp_average:
    ids = [names.index(limb) for limb in type_limbs]
    per_type[type_name] = float(_rate(hits[ids].sum(), counts[ids].sum()))
  type_rates = np.asarray(list(per_type.values()))
  counted_types = type_rates[np.isfinite(type_rates)]
  mean = float(counted_types.mean()) if counted_types.size else float("nan")
  return {"per_limb": per_limb, "per_type": per_type, "mean": mean,
          "counts": dict(zip(names, counts.tolist()))}


def pcp_hits(pred, true, visible, skeleton: Skeleton, thresh: float = 0.5):
  """Strict PCP per image and limb (`pcp`'s rule, before it pools them).

  Args as `pcp`. Returns (correct, counted), both (N, L) bool in `skeleton.limbs` order:
  counted where both endpoints are annotated, correct where, in addition, both predicted
  endpoints lie within `thresh` x the true limb length of their true endpoints."""
  pred, true, visible = _check(pred, true, visible, skeleton)
  if not (np.isfinite(thresh) and thresh > 0):
    raise ValueError(f"thresh must be a positive fraction of the limb length; got {thresh}")
  err = _joint_errors(pred, true)
  limbs = skeleton.limb_indices
  a, b = limbs[:, 0], limbs[:, 1]
  with np.errstate(invalid="ignore", over="ignore"):
    length = np.linalg.norm(true[:, a] - true[:, b], axis=-1)  # (N, L)
  counted = visible[:, a] & visible[:, b]
  with np.errstate(invalid="ignore"):  # NaN lengths only occur where counted is False
    correct = counted & (err[:, a] <= thresh * length) & (err[:, b] <= thresh * length)
  return correct, counted


def _check_radii(radii) -> np.ndarray:
  radii = np.asarray(radii, np.float64).ravel()
  if radii.size == 0 or not np.isfinite(radii).all() or (radii < 0).any() \
      or (np.diff(radii) < 0).any():
    raise ValueError(f"radii must be a non-empty, non-decreasing list of fractions >= 0; "
                     f"got {radii.tolist()}")
  return radii


def pdj(pred, true, visible, skeleton: Skeleton, radii=PDJ_RADII) -> dict:
  """Percent of Detected Joints (paper Sec. 6, Figs. 3-5).

  A joint is detected at radius r when its predicted position lies within
  r x torso_diameter(true) pixels of the truth (distance <= threshold). Images whose two
  diameter joints are not both annotated, or whose diameter is 0, have no scale and are
  excluded from PDJ entirely; their number is reported.

  Args:
    pred, true: (N, K, 2) poses in image pixels, x before y.
    visible: (N, K) in {0, 1}; 1 = annotated.
    radii: (R,) non-decreasing fractions of the torso diameter.
  Returns:
    {"radii": [R floats],
     "per_joint": {joint: [R rates]},
     "per_type": {type: [R rates]}  left and right pooled (skeleton.joint_type),
     "mean": [R rates]  all annotated joints of the used images pooled,
     "counts": {joint: annotated occurrences in the used images},
     "num_images_used": int, "num_images_excluded": int}
  """
  radii = _check_radii(radii)
  pred, true, visible = _check(pred, true, visible, skeleton)
  da, db = skeleton.diameter_indices
  diam = torso_diameter(true, skeleton)
  with np.errstate(invalid="ignore"):
    used = visible[:, da] & visible[:, db] & np.isfinite(diam) & (diam > 0)
  vis = visible[used]                                             # (M, K)
  rel_err = _joint_errors(pred[used], true[used]) / diam[used, None]  # (M, K), inf = miss
  hits = (rel_err[..., None] <= radii) & vis[..., None]           # (M, K, R)
  joint_hits, joint_counts = hits.sum(axis=0), vis.sum(axis=0)    # (K, R), (K,)

  per_joint = {name: _rate(joint_hits[j], joint_counts[j]).tolist()
               for j, name in enumerate(skeleton.joints)}
  groups: Dict[str, list] = {}
  for j, name in enumerate(skeleton.joints):
    groups.setdefault(skeleton.joint_type(name), []).append(j)
  per_type = {t: _rate(joint_hits[ids].sum(axis=0), joint_counts[ids].sum()).tolist()
              for t, ids in groups.items()}
  mean = _rate(joint_hits.sum(axis=0), joint_counts.sum()).tolist()
  return {"radii": radii.tolist(), "per_joint": per_joint, "per_type": per_type,
          "mean": mean, "counts": dict(zip(skeleton.joints, joint_counts.tolist())),
          "num_images_used": int(used.sum()),
          "num_images_excluded": int((~used).sum())}


def pdj_at(pdj_result: dict, r: float) -> float:
  """The pooled mean PDJ curve of a `pdj` result, linearly interpolated at radius r.

  Raises ValueError when r lies outside the result's radii (no extrapolation).
  """
  radii = np.asarray(pdj_result["radii"], np.float64)
  mean = np.asarray(pdj_result["mean"], np.float64)
  if not radii[0] <= r <= radii[-1]:
    raise ValueError(f"radius {r} is outside the PDJ radii [{radii[0]}, {radii[-1]}]")
  return float(np.interp(r, radii, mean))


def summarize(pred, true, visible, skeleton: Skeleton) -> dict:
  """PCP@0.5 and PDJ curves of one set of predictions, as one JSON-ready dict.

  Args:
    pred, true: (N, K, 2) poses in image pixels, x before y.
    visible: (N, K) in {0, 1}; 1 = annotated.
  Returns:
    {"pcp_mean", "pcp_per_limb", "pcp_per_type", "pcp_counts",
     "pdj_mean_at": {"0.05": rate, "0.1": rate, "0.2": rate}, "pdj": pdj(...) result,
     "num_images": N}. pcp_mean is the strict-PCP Table 1 average (see `pcp`).
  """
  pcp_result = pcp(pred, true, visible, skeleton)
  pdj_result = pdj(pred, true, visible, skeleton)
  return {
      "pcp_mean": pcp_result["mean"],
      "pcp_per_limb": pcp_result["per_limb"],
      "pcp_per_type": pcp_result["per_type"],
      "pcp_counts": pcp_result["counts"],
      "pdj_mean_at": {key: pdj_at(pdj_result, float(key)) for key in PDJ_REPORT_RADII},
      "pdj": pdj_result,
      "num_images": int(np.asarray(true).shape[0]),
  }
