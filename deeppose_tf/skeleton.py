"""Skeleton metadata as data: joint names, flip partners, PCP limbs, torso diameter.

Every other module asks a `Skeleton` for joint indices; no joint index literal appears
anywhere else in the package.  Left/right are the person's own (person-centric), as in
the official LSP files.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import numpy as np


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
  """

  name: str
  joints: Tuple[str, ...]
  limbs: Tuple[Tuple[str, str, str], ...]
  pcp_average: Tuple[Tuple[str, Tuple[str, ...]], ...]
  diameter: Tuple[str, str]
  edges: Tuple[Tuple[str, str], ...]

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
    perm = []
    for name in self.joints:
      if name.startswith("l_"):
        partner = "r_" + name[2:]
      elif name.startswith("r_"):
        partner = "l_" + name[2:]
      else:
        partner = name
      perm.append(self.index(partner))
    return np.asarray(perm, np.int32)

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
    """'l_wrist' -> 'wrist': the name PDJ curves average left and right under."""
    return joint[2:] if joint[:2] in ("l_", "r_") else joint


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

def get_skeleton(name: str) -> Skeleton:
  """Skeleton by its name ('lsp14', 'flic10'). Which skeleton a dataset uses is the dataset
  registry's answer (data/datasets.py, skeleton_of): this module knows only skeletons."""
  if name in SKELETONS:
    return SKELETONS[name]
  raise ValueError(f"unknown skeleton {name!r}; expected one of {sorted(SKELETONS)} (a "
                   "dataset's skeleton: deeppose_tf.data.datasets.skeleton_of)")
