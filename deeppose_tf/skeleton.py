"""Skeleton metadata as data: joint names, flip partners, PCP limbs, torso diameter.

Every other module asks a `Skeleton` for joint indices; no joint index literal appears
anywhere else in the package.  Left/right are the person's own (person-centric), as in
the official LSP files; labels.py relabels poses observer-centric (by image position, the
DeepPose paper's LSP test labels).

Two presets are named (LSP14, FLIC10); any other skeleton (a COCO category's, say) is
built from its joint names and edges with `Skeleton.build`, and travels as a dict
(`to_dict` / `from_dict`) in the split json, config.json, the SavedModel and the TFLite
metadata. `resolve` turns what any of those stored back into a Skeleton.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

# Side markers in joint names, in both common styles: "l_wrist" / "left_wrist" and
# "wrist_l" / "wrist_left" (case-insensitive). Flip partners and joint types come from them.
_SIDE = re.compile(r"^(?P<pre>l|r|left|right)_(?P<rest>.+)$|^(?P<rest2>.+)_(?P<suf>l|r|left|right)$",
                   re.IGNORECASE)
_OTHER = {"l": "r", "r": "l", "left": "right", "right": "left"}


def _side(name: str) -> Tuple[Optional[str], str, str]:
  """'left_wrist' -> ('l', 'wrist', partner name 'right_wrist'); 'neck' -> (None, 'neck',
  'neck'). The partner keeps the name's own style and case."""
  m = _SIDE.match(name)
  if not m:
    return None, name, name
  prefix = m.group("pre") is not None
  mark, rest = (m.group("pre"), m.group("rest")) if prefix else (m.group("suf"), m.group("rest2"))
  other = _OTHER[mark.lower()]
  other = other.upper() if mark.isupper() else other.capitalize() if mark[0].isupper() else other
  return mark[0].lower(), rest, f"{other}_{rest}" if prefix else f"{rest}_{other}"


@dataclasses.dataclass(frozen=True)
class Skeleton:
  """Joint layout of one dataset.

  Attributes:
    name: registry key ("lsp14", "flic10").
    joints: joint names, in the order poses are stored (K names).
    limbs: PCP limbs as (limb name, joint a, joint b), joint names.
    pcp_average: limb *types* averaged for the paper's PCP number (Table 1: upper/lower
      arms and legs); each type lists the limb names it averages (left and right).
    diameter: (joint a, joint b) whose distance is the torso diameter used by PDJ and
      by the refinement joint boxes (left shoulder to right hip, as in the paper).
    edges: stick-figure drawing edges (joint a, joint b).
    flip_pairs: (left joint, right joint) pairs that a mirror image swaps; () for none.
      None: read from the names' side markers (l_/r_, left_/right_, _l/_r, _left/_right).
    sigmas: OKS per-joint sigmas for COCO AP (K floats), or empty: metrics then looks
      them up by joint type (coco_eval.py), or needs --oks_sigmas.
  """

  name: str
  joints: Tuple[str, ...]
  limbs: Tuple[Tuple[str, str, str], ...]
  pcp_average: Tuple[Tuple[str, Tuple[str, ...]], ...]
  diameter: Tuple[str, str]
  edges: Tuple[Tuple[str, str], ...]
  flip_pairs: Optional[Tuple[Tuple[str, str], ...]] = None
  sigmas: Tuple[float, ...] = ()

  @property
  def num_joints(self) -> int:
    return len(self.joints)

  def index(self, joint: str) -> int:
    try:
      return self.joints.index(joint)
    except ValueError:
      raise ValueError(
          f"skeleton {self.name!r} has no joint {joint!r}; joints are {self.joints}"
      ) from None

  @property
  def flip_permutation(self) -> np.ndarray:
    """(K,) int32: `flipped_pose = pose[perm]` swaps every left joint with its right."""
    if self.flip_pairs is not None:
      perm = list(range(self.num_joints))
      for a, b in self.flip_pairs:
        ia, ib = self.index(a), self.index(b)
        perm[ia], perm[ib] = ib, ia
      return np.asarray(perm, np.int32)
    return np.asarray([self.index(_side(name)[2]) for name in self.joints], np.int32)

  @property
  def limb_indices(self) -> np.ndarray:
    """(L, 2) int32 joint indices of the PCP limbs, in `limbs` order."""
    return np.asarray([[self.index(a), self.index(b)] for _, a, b in self.limbs], np.int32)

  @property
  def limb_names(self) -> Tuple[str, ...]:
    return tuple(name for name, _, _ in self.limbs)

  @property
  def diameter_indices(self) -> Tuple[int, int]:
    return self.index(self.diameter[0]), self.index(self.diameter[1])

  @property
  def edge_indices(self) -> np.ndarray:
    return np.asarray([[self.index(a), self.index(b)] for a, b in self.edges], np.int32)

  def joint_type(self, joint: str) -> str:
    """'l_wrist' (or 'left_wrist', 'wrist_l') -> 'wrist': the name PDJ curves average left
    and right under."""
    return _side(joint)[1]

  def describe(self) -> str:
    """The skeleton in a few lines, for people (prepare prints a skeleton read from files)."""
    pairs = [(self.joints[i], self.joints[j]) for i, j in enumerate(self.flip_permutation)
             if i < j]
    return "\n".join([
        f"skeleton {self.name!r}: {self.num_joints} joints {list(self.joints)}",
        f"  drawing edges: {[f'{a}-{b}' for a, b in self.edges]}",
        f"  flip pairs: {[f'{a}:{b}' for a, b in pairs] or 'none'}",
        f"  torso diameter: {self.diameter[0]} to {self.diameter[1]}",
        f"  PCP limb types: {[f'{t} ({len(l)} limbs)' for t, l in self.pcp_average]}",
        "  OKS sigmas: " + (str(list(self.sigmas)) if self.sigmas else
                            "none given: evaluate takes COCO's by joint type, and needs "
                            "--oks_sigmas for joints COCO lacks")])

  # ------------------------------------------------------------------ as data

  def to_dict(self) -> Dict[str, Any]:
    """The whole skeleton as JSON-ready data (`from_dict` reads it back)."""
    return {"name": self.name, "joints": list(self.joints),
            "limbs": [list(l) for l in self.limbs],
            "pcp_average": [[t, list(names)] for t, names in self.pcp_average],
            "diameter": list(self.diameter), "edges": [list(e) for e in self.edges],
            "flip_pairs": (None if self.flip_pairs is None
                           else [list(p) for p in self.flip_pairs]),
            "sigmas": list(self.sigmas)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Skeleton":
    """A skeleton from `to_dict`'s data; ValueError saying what is wrong otherwise."""
    if not isinstance(d, Mapping):
      raise ValueError(f"a skeleton is a dict of names, got {type(d).__name__}")
    missing = [k for k in ("name", "joints", "limbs", "pcp_average", "diameter", "edges")
               if k not in d]
    if missing:
      raise ValueError(f"skeleton data lacks {missing}")
    try:
      skeleton = cls(
          name=str(d["name"]), joints=tuple(str(j) for j in d["joints"]),
          limbs=tuple((str(n), str(a), str(b)) for n, a, b in d["limbs"]),
          pcp_average=tuple((str(t), tuple(str(n) for n in names))
                            for t, names in d["pcp_average"]),
          diameter=tuple(str(j) for j in d["diameter"]),
          edges=tuple((str(a), str(b)) for a, b in d["edges"]),
          flip_pairs=(None if d.get("flip_pairs") is None else
                      tuple((str(a), str(b)) for a, b in d["flip_pairs"])),
          sigmas=tuple(float(v) for v in d.get("sigmas") or ()))
    except (TypeError, ValueError) as e:
      raise ValueError(f"skeleton data is malformed ({e})") from None
    return skeleton.check()

  def check(self) -> "Skeleton":
    """Self; ValueError if a name refers to no joint, joints repeat, or a count is off."""
    where = f"skeleton {self.name!r}"
    if len(self.joints) < 2:
      raise ValueError(f"{where}: needs at least 2 joints, has {list(self.joints)}")
    dup = sorted({j for j in self.joints if self.joints.count(j) > 1})
    if dup:
      raise ValueError(f"{where}: joint names {dup} repeat")
    if len(self.diameter) != 2 or self.diameter[0] == self.diameter[1]:
      raise ValueError(f"{where}: the torso diameter needs two different joints, got "
                       f"{list(self.diameter)}")
    for a, b in tuple(self.edges) + tuple((a, b) for _, a, b in self.limbs) + (
        tuple(self.diameter),) + tuple(self.flip_pairs or ()):
      self.index(a), self.index(b)
    names = set(self.limb_names)
    for t, limbs in self.pcp_average:
      unknown = [n for n in limbs if n not in names]
      if unknown:
        raise ValueError(f"{where}: PCP type {t!r} averages limbs {unknown} it does not have")
    if self.sigmas and (len(self.sigmas) != self.num_joints or
                        not all(np.isfinite(v) and v > 0 for v in self.sigmas)):
      raise ValueError(f"{where}: {len(self.sigmas)} OKS sigmas for {self.num_joints} joints "
                       f"(each > 0): {list(self.sigmas)}")
    perm = self.flip_permutation  # raises for a named partner that is missing
    if not np.array_equal(perm[perm], np.arange(self.num_joints)):
      raise ValueError(f"{where}: flip pairs {list(self.flip_pairs or ())} name a joint twice")
    return self

  @classmethod
  def build(cls, name: str, joints: Sequence[str], edges: Sequence[Tuple[str, str]],
            flip_pairs: Optional[Sequence[Tuple[str, str]]] = None,
            diameter: Optional[Tuple[str, str]] = None,
            limbs: Optional[Sequence[Tuple[str, str]]] = None,
            sigmas: Optional[Sequence[float]] = None) -> "Skeleton":
    """A skeleton from joint names and drawing edges, the rest derived from the names.

    flip_pairs: default, the names' side markers ('left_knee' <-> 'right_knee'); a joint
      whose partner is not a joint is an error naming it (pass flip_pairs then).
    diameter: default, the left shoulder and the right hip, in any naming style.
    limbs: PCP limbs as joint pairs; default, every edge. Each is named "a-b"; PCP
      averages a limb with its mirror image (same joint types), as the paper averages the
      left and right upper arms.
    """
    joints = tuple(str(j) for j in joints)
    edges = tuple((str(a), str(b)) for a, b in edges)
    if flip_pairs is None:
      pairs = []
      for j in joints:
        side, _, partner = _side(j)
        if side is None:
          continue
        if partner not in joints:
          raise ValueError(
              f"skeleton {name!r}: joint {j!r} reads as one side, but there is no "
              f"{partner!r} to mirror it to; give the pairs (--flip_pairs=a:b,...), or "
              "--flip_pairs=none for no mirror pairs")
        if side == "l":
          pairs.append((j, partner))
      flip_pairs = pairs
    if diameter is None:
      kinds = {(_side(j)[0], _side(j)[1].lower()): j for j in joints}
      a, b = kinds.get(("l", "shoulder")), kinds.get(("r", "hip"))
      if a is None or b is None:
        raise ValueError(
            f"skeleton {name!r}: no left shoulder and right hip among {list(joints)} for the "
            "torso diameter (PDJ, the refinement boxes); name the pair with --torso=A,B")
      diameter = (a, b)
    pairs_for_limbs = edges if limbs is None else tuple((str(a), str(b)) for a, b in limbs)
    limb_list, types = [], {}
    for a, b in pairs_for_limbs:
      limb = f"{a}-{b}"
      limb_list.append((limb, a, b))
      ta, tb = _side(a)[1], _side(b)[1]
      types.setdefault("-".join(sorted((ta, tb))), []).append(limb)
    skeleton = cls(name=name, joints=joints, limbs=tuple(limb_list),
                   pcp_average=tuple((t, tuple(l)) for t, l in types.items()),
                   diameter=tuple(diameter), edges=edges,
                   flip_pairs=tuple((str(a), str(b)) for a, b in flip_pairs),
                   sigmas=tuple(float(v) for v in sigmas or ()))
    if not skeleton.limbs:
      raise ValueError(f"skeleton {name!r}: no PCP limbs (no edges and no --pcp_limbs)")
    return skeleton.check()


# LSP order (0-based), as in LSP/LSPET joints.mat: R ankle, R knee, R hip, L hip, L knee,
# L ankle, R wrist, R elbow, R shoulder, L shoulder, L elbow, L wrist, neck, head top.
LSP14 = Skeleton(
    name="lsp14",
    joints=("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle",
            "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
            "neck", "head_top"),
    limbs=(
        ("r_upper_leg", "r_hip", "r_knee"), ("l_upper_leg", "l_hip", "l_knee"),
        ("r_lower_leg", "r_knee", "r_ankle"), ("l_lower_leg", "l_knee", "l_ankle"),
        ("r_upper_arm", "r_shoulder", "r_elbow"), ("l_upper_arm", "l_shoulder", "l_elbow"),
        ("r_lower_arm", "r_elbow", "r_wrist"), ("l_lower_arm", "l_elbow", "l_wrist"),
        ("head", "neck", "head_top"),
    ),
    pcp_average=(
        ("upper_arm", ("r_upper_arm", "l_upper_arm")),
        ("lower_arm", ("r_lower_arm", "l_lower_arm")),
        ("upper_leg", ("r_upper_leg", "l_upper_leg")),
        ("lower_leg", ("r_lower_leg", "l_lower_leg")),
    ),
    diameter=("l_shoulder", "r_hip"),
    edges=(
        ("r_ankle", "r_knee"), ("r_knee", "r_hip"), ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
        ("r_hip", "l_hip"), ("r_shoulder", "r_hip"), ("l_shoulder", "l_hip"),
        ("r_wrist", "r_elbow"), ("r_elbow", "r_shoulder"), ("l_shoulder", "l_elbow"),
        ("l_elbow", "l_wrist"), ("r_shoulder", "neck"), ("l_shoulder", "neck"),
        ("neck", "head_top"),
    ),
)

# FLIC's 10 upper-body joints: shoulders, elbows, wrists, hips, nose and a neck
# interpolated between the shoulders (FLIC has no neck label).
FLIC10 = Skeleton(
    name="flic10",
    joints=("l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
            "l_hip", "r_hip", "neck", "nose"),
    limbs=(
        ("l_upper_arm", "l_shoulder", "l_elbow"), ("r_upper_arm", "r_shoulder", "r_elbow"),
        ("l_lower_arm", "l_elbow", "l_wrist"), ("r_lower_arm", "r_elbow", "r_wrist"),
    ),
    pcp_average=(
        ("upper_arm", ("r_upper_arm", "l_upper_arm")),
        ("lower_arm", ("r_lower_arm", "l_lower_arm")),
    ),
    diameter=("l_shoulder", "r_hip"),
    edges=(
        ("l_wrist", "l_elbow"), ("l_elbow", "l_shoulder"), ("r_wrist", "r_elbow"),
        ("r_elbow", "r_shoulder"), ("l_shoulder", "neck"), ("r_shoulder", "neck"),
        ("l_shoulder", "l_hip"), ("r_shoulder", "r_hip"), ("l_hip", "r_hip"),
        ("neck", "nose"),
    ),
)

SKELETONS: Dict[str, Skeleton] = {s.name: s for s in (LSP14, FLIC10)}

def resolve(value: Union[str, Mapping[str, Any], Skeleton]) -> Skeleton:
  """What a split json, config.json or an export stored as the skeleton: a preset's name
  ('lsp14'), or a whole skeleton as `Skeleton.to_dict` wrote it."""
  if isinstance(value, Skeleton):
    return value
  if isinstance(value, str):
    return get_skeleton(value)
  skeleton = Skeleton.from_dict(value)
  # A preset stored whole (a SavedModel's skeleton_json) comes back as the preset itself.
  return SKELETONS[skeleton.name] if SKELETONS.get(skeleton.name) == skeleton else skeleton


def stored(skeleton: Skeleton) -> Union[str, Dict[str, Any]]:
  """How a skeleton is stored: a preset by its name (files stay readable by older
  versions), any other skeleton whole."""
  return skeleton.name if SKELETONS.get(skeleton.name) == skeleton else skeleton.to_dict()


def get_skeleton(name: str) -> Skeleton:
  """Skeleton by its name ('lsp14', 'flic10'). Which skeleton a dataset uses is the dataset
  registry's answer (data/datasets.py, skeleton_of): this module knows only skeletons."""
  if name in SKELETONS:
    return SKELETONS[name]
  raise ValueError(f"unknown skeleton {name!r}; expected one of {sorted(SKELETONS)} (a "
                   "dataset's skeleton: deeppose_tf.data.datasets.skeleton_of)")
