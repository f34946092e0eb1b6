"""COCO's keypoint metric (OKS-based AP and AR) on the package's predictions, computed by
pycocotools, the reference implementation (not rewritten here).

Evaluation is top-down with the split's person boxes: every annotated person (one record)
gets exactly one prediction, its last stage's joints, with score 1 (DeepPose has no
confidence). Each record is its own COCO image, so no prediction can be matched to another
person of the same photo. AP is then averaged over OKS thresholds 0.50:0.05:0.95 as COCO's.

OKS needs, per joint, a sigma (how far a labeller's clicks spread for that joint, relative to
the person's scale) and, per person, an area:
- sigmas: the skeleton's own (`Skeleton.sigmas`: a COCO category's `sigmas`, or prepare's
  --oks_sigmas), else looked up by joint type in `TYPE_SIGMAS`: COCO's 17 values (from
  pycocotools' COCOeval), and for LSP's neck and head top, which COCO lacks, CrowdPose's
  0.079 (CrowdPose's 14 joints are LSP's). A joint type in neither: no AP (the report says
  which joints need --oks_sigmas).
- area: the record's `area` (a COCO file's, where the split came from one); else the area of
  the bounding box of the person's annotated joints (LSP, FLIC: no segmentation exists).
"""

from __future__ import annotations

import contextlib
import io
from typing import Dict, List, Optional, Sequence

import numpy as np

from deeppose_tf.skeleton import Skeleton

# pycocotools' COCOeval sigmas by joint type (nose .26, eyes .25, ears .35, shoulders .79,
# elbows .72, wrists .62, hips 1.07, knees .87, ankles .89, all / 10); neck and head top:
# CrowdPose's (.79 / 10 each).
TYPE_SIGMAS: Dict[str, float] = {
    "nose": 0.026, "eye": 0.025, "ear": 0.035, "shoulder": 0.079, "elbow": 0.072,
    "wrist": 0.062, "hip": 0.107, "knee": 0.087, "ankle": 0.089,
    "neck": 0.079, "head_top": 0.079, "head": 0.079,
}

STATS = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")


def sigmas_for(skeleton: Skeleton) -> np.ndarray:
  """(K,) OKS sigmas of a skeleton; ValueError naming the joints that have none."""
  if skeleton.sigmas:
    return np.asarray(skeleton.sigmas, np.float64)
  found = [TYPE_SIGMAS.get(skeleton.joint_type(j).lower()) for j in skeleton.joints]
  missing = [j for j, s in zip(skeleton.joints, found) if s is None]
  if missing:
    raise ValueError(f"no OKS sigma for joints {missing} of skeleton {skeleton.name!r}; give "
                     "each joint's sigma when preparing the data (--oks_sigmas=s1,...,sK)")
  return np.asarray(found, np.float64)


def joint_box_areas(joints: np.ndarray, visible: np.ndarray) -> np.ndarray:
  """(N,) area of the bounding box of each person's annotated joints (pixels^2), at least 1."""
  big = np.where(visible[..., None] > 0, joints, np.nan)
  lo, hi = np.nanmin(big, axis=1), np.nanmax(big, axis=1)
  return np.maximum(np.prod(hi - lo, axis=1), 1.0)


def keypoint_ap(poses: np.ndarray, joints: np.ndarray, visible: np.ndarray,
                skeleton: Skeleton, areas: Optional[np.ndarray] = None) -> Dict[str, float]:
  """COCO keypoint AP/AR of one prediction per person.

  poses, joints: (N, K, 2) predicted / true joints, image pixels; visible: (N, K) 1 where
  annotated; areas: (N,) person areas, entries < 0 (or None: all) replaced by the joint-box
  area. Returns {stat: value} for STATS, plus "sigmas" (list) and "area" (what scaled OKS).
  """
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  poses = np.asarray(poses, np.float64)
  joints = np.asarray(joints, np.float64)
  visible = np.asarray(visible, np.float64)
  n, k = visible.shape
  sigmas = sigmas_for(skeleton)
  fallback = joint_box_areas(joints, visible)
  stored = np.full(n, -1.0) if areas is None else np.asarray(areas, np.float64)
  use = np.where(stored >= 0, stored, fallback)
  images, anns, dets = [], [], []
  for i in range(n):
    kp = np.concatenate([joints[i], 2 * (visible[i][:, None] > 0)], axis=1)
    kp[visible[i] == 0, :2] = 0
    x0, y0 = joints[i][visible[i] > 0].min(0)
    x1, y1 = joints[i][visible[i] > 0].max(0)
    images.append({"id": i + 1})
    anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                 "keypoints": kp.ravel().tolist(), "num_keypoints": int(visible[i].sum()),
                 "area": float(use[i]), "bbox": [float(x0), float(y0), float(x1 - x0),
                                                 float(y1 - y0)]})
    pred = np.nan_to_num(poses[i], nan=-1e6, posinf=1e6, neginf=-1e6)
    det = np.concatenate([pred, np.ones((k, 1))], axis=1)
    dets.append({"image_id": i + 1, "category_id": 1, "keypoints": det.ravel().tolist(),
                 "score": 1.0})
  gt = COCO()
  gt.dataset = {"images": images, "annotations": anns,
                "categories": [{"id": 1, "name": "person", "keypoints": list(skeleton.joints),
                                "skeleton": []}]}
  with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
    gt.createIndex()
    dt = gt.loadRes(dets) if dets else COCO()
    ev = COCOeval(gt, dt, "keypoints")
    ev.params.kpt_oks_sigmas = sigmas
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  out = {name: float(v) for name, v in zip(STATS, ev.stats)}
  out["sigmas"] = sigmas.tolist()
  out["area"] = ("the records' areas" if (stored >= 0).all() else
                 "the annotated joints' bounding box" if (stored < 0).all() else
                 "the records' areas, else the annotated joints' bounding box")
  return out
