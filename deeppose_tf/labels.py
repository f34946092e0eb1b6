"""Left/right label conventions: person-centric and observer-centric.

  person    (PC) "left" is the person's own left, whichever way they face. The official LSP
            and LSP-extended files, COCO, BlazePose and MoveNet label this way, and so do
            the package's models unless told otherwise.
  observer  (OC) "left" is decided by where a limb lies in the image, as if every person
            faced the camera: of each mirrored pair of limb chains (an arm: shoulder, elbow,
            wrist; a leg: hip, knee, ankle), the one further right in the image is the
            left one. FLIC's original labels, and the LSP test labels that the DeepPose
            paper's Table 1 scores, are observer-centric; the paper marks person-centric
            results with a footnote.

`observer_centric` turns any pose into the observer-centric labelling, from its coordinates
alone: a pose annotated person-centric, or a model's output (so any model can be scored on
observer-centric labels, and a cascade can be told to output them). It is idempotent, and
it commutes with a horizontal flip (mirror the x and swap the pairs, then relabel: the same
as relabel, then mirror and swap), so flip augmentation keeps observer-centric targets
observer-centric.

The chains are the connected parts of the skeleton's PCP limbs among the joints that have a
mirror partner (LSP14: the two arms and the two legs; FLIC10: the arms, and the hips as a
pair of single joints). A chain is compared with its mirror by the mean x of the joints
annotated in both; a pair with none annotated keeps its labels.

Frames: poses are (..., K, 2), x before y, in any frame whose x grows to the image's right
(image pixels, box-normalized; not a mirrored crop's frame). Plain TF ops (gather, select,
sums), so the relabelling runs eagerly, in tf.data, in a SavedModel and in a builtins-only
TFLite graph.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf

from deeppose_tf.skeleton import Skeleton, _side

LABELS = ("person", "observer")


def check(labels: str) -> str:
  """labels, or a ValueError naming the known conventions."""
  if labels not in LABELS:
    raise ValueError(f"unknown label convention {labels!r}: one of {list(LABELS)} "
                     "(person: the person's own left and right, as LSP, COCO and MoveNet "
                     "label; observer: left and right by image position, as the DeepPose "
                     "paper's LSP test labels)")
  return labels


def chains(skeleton: Skeleton) -> List[Tuple[Tuple[int, ...], Tuple[int, ...]]]:
  """[(left joint ids, right joint ids)], the mirrored chains observer_centric compares.

  The left chain's i-th joint is the mirror of the right chain's i-th. Raises ValueError
  when a mirrored joint's side cannot be told (a flip pair without side markers is read as
  (left, right), as Skeleton.flip_pairs documents it).
  """
  perm = skeleton.flip_permutation
  k = skeleton.num_joints
  if skeleton.flip_pairs is not None:
    left = {skeleton.index(a) for a, _ in skeleton.flip_pairs}
  else:
    left = {i for i, name in enumerate(skeleton.joints) if _side(name)[0] == "l"}
  sided = [i for i in range(k) if perm[i] != i]
  # Union-find over the PCP limbs that join two joints of one side.
  root = list(range(k))

  def find(i):
    while root[i] != i:
      root[i] = root[root[i]]
      i = root[i]
    return i

  for a, b in skeleton.limb_indices:
    if perm[a] != a and perm[b] != b and ((a in left) == (b in left)):
      root[find(int(a))] = find(int(b))
  groups = {}
  for i in sided:
    if i in left:
      groups.setdefault(find(i), []).append(i)
  out = []
  for members in groups.values():
    members = sorted(members)
    out.append((tuple(members), tuple(int(perm[i]) for i in members)))
  return sorted(out)


def observer_centric(joints, skeleton: Skeleton, visible=None):
  """Person-centric (or any) labels -> observer-centric, by the joints' positions.

  joints: (..., K, 2); visible: None (every joint counts, as for a model's output) or
  (..., K) in {0, 1}. Returns (joints, visible) relabelled, the visibility flags moving
  with their joints; visible is None when it was given as None. Poses with non-finite
  coordinates at unannotated joints are fine: only annotated joints are averaged.
  """
  joints = tf.convert_to_tensor(joints, tf.float32)
  vis = None if visible is None else tf.convert_to_tensor(visible, tf.float32)
  weight = tf.ones_like(joints[..., 0]) if vis is None else tf.cast(vis > 0, tf.float32)
  x = tf.where(weight > 0, joints[..., 0], 0.0)  # where, not a product: NaN x 0 is NaN
  out_j, out_v = joints, vis
  for lefts, rights in chains(skeleton):
    l_ids, r_ids = list(lefts), list(rights)
    # Joints annotated on both sides, so a chain missing its wrist is not compared by
    # its shoulder against the other's shoulder-to-wrist mean.
    both = tf.gather(weight, l_ids, axis=-1) * tf.gather(weight, r_ids, axis=-1)
    n = tf.reduce_sum(both, -1)
    lx = tf.reduce_sum(tf.gather(x, l_ids, axis=-1) * both, -1)
    rx = tf.reduce_sum(tf.gather(x, r_ids, axis=-1) * both, -1)
    swap = (n > 0) & (lx < rx)  # the "left" chain lies further left: it is the right one
    perm = np.arange(skeleton.num_joints)
    perm[l_ids], perm[r_ids] = r_ids, l_ids
    out_j = tf.where(swap[..., None, None], tf.gather(out_j, perm, axis=-2), out_j)
    if out_v is not None:
      out_v = tf.where(swap[..., None], tf.gather(out_v, perm, axis=-1), out_v)
  return out_j, out_v


def relabel(joints, skeleton: Skeleton, labels: str, visible=None):
  """joints (and visible) in the convention `labels`: unchanged for "person" (the data's
  own labels are kept), observer_centric for "observer". Shapes as observer_centric."""
  if check(labels) == "person":
    return joints, visible
  return observer_centric(joints, skeleton, visible)


def relabel_numpy(joints: np.ndarray, skeleton: Skeleton, labels: str,
                  visible: Optional[np.ndarray] = None):
  """relabel for numpy arrays, returning numpy arrays (dtypes of the inputs)."""
  if check(labels) == "person":
    return joints, visible
  j, v = observer_centric(joints, skeleton, visible)
  return (j.numpy().astype(np.asarray(joints).dtype),
          None if v is None else v.numpy().astype(np.asarray(visible).dtype))
