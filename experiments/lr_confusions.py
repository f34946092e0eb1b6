"""How many of a cascade's strict-PCP misses are left/right confusions, and how they spread
over the person's orientation.

Runs a workdir's cascade (its inference settings: flips, reframing) on a val split, or reads a
dump of an earlier run, then scores per stage:
  - the poses as they are (strict PCP@0.5, the paper's four limb types);
  - an oracle that, per image, keeps the better of the pose and its left/right relabelling
    (pose[flip_permutation]): what fixing whole-body left/right confusions would give;
  - per limb type, the misses that would be hits against the mirrored labelling;
  - the same by the annotated torso's angle from upright (mid-hip to neck; 180 = upside
    down), for images with both hips and the neck annotated.

  python experiments/lr_confusions.py --workdir=runs/cont_D4 --num_stages=1 \\
      --data_dir=runs/lsp_imagenet/lspet --poses=runs/lr_lspet.npz \\
      --output=experiments/lr_confusions_lspet_val.json

Cost: about 2.5 minutes on one core for LSPET's 900 val images with a stage-1-only
cascade (flips, one reframing pass); seconds with --poses alone. Figures: BUILD.md, "The
192 px stage 1 at its ceiling".
"""

import json
import os

import numpy as np
from absl import app, flags

flags.DEFINE_string("poses", None, "The .npz of poses (N, S, K, 2), joints, visible: written "
                    "by a run with --workdir, read when --workdir is not given.")
flags.DEFINE_string("workdir", None, "The cascade to run on --data_dir's val split.")
flags.DEFINE_integer("num_stages", None, "With --workdir: stages to run (default: all).")
flags.DEFINE_string("data_dir", None, "With --workdir: prepared records with a val split.")
flags.DEFINE_string("output", None, "Where the JSON of figures goes (default: print only).")
flags.mark_flag_as_required("poses")
FLAGS = flags.FLAGS
ANGLE_BINS = ((0, 45), (45, 90), (90, 135), (135, 181))


def torso_angle(joints, visible, skeleton):
  """(N,) degrees in [0, 180] of mid-hip -> neck from image-up, and (N,) where defined."""
  lh, rh, nk = (skeleton.index(n) for n in ("l_hip", "r_hip", "neck"))
  up = joints[:, nk] - (joints[:, lh] + joints[:, rh]) / 2
  angle = np.abs(np.degrees(np.arctan2(up[:, 0], -up[:, 1])))  # image y grows downward
  return angle, visible[:, lh] & visible[:, rh] & visible[:, nk]


def score(pred, joints, visible, skeleton) -> dict:
  from deeppose_tf import metrics
  perm = skeleton.flip_permutation
  h0, counted = metrics.pcp_hits(pred, joints, visible, skeleton)
  h1, _ = metrics.pcp_hits(pred[:, perm], joints, visible, skeleton)
  better = h1.sum(1) > h0.sum(1)
  oracle = np.where(better[:, None], h1, h0)
  names = skeleton.limb_names
  types = {}
  for t, limbs in skeleton.pcp_average:
    ids = [names.index(l) for l in limbs]
    n = counted[:, ids].sum()
    types[t] = {"pcp": float(h0[:, ids].sum() / n),
                "pcp_oracle": float(oracle[:, ids].sum() / n),
                "misses": int((counted[:, ids] & ~h0[:, ids]).sum()),
                "misses_hit_if_mirrored": int((~h0[:, ids] & h1[:, ids]).sum())}
  angle, has_torso = torso_angle(joints, visible, skeleton)
  bins = []
  for lo, hi in ANGLE_BINS:
    m = has_torso & (angle >= lo) & (angle < hi)
    n = max(int(counted[m].sum()), 1)
    bins.append({"degrees": [lo, min(hi, 180)], "images": int(m.sum()),
                 "limb_hits": float(h0[m].sum() / n),
                 "images_better_mirrored": int(better[m].sum())})
  return {"pcp": float(np.mean([v["pcp"] for v in types.values()])),
          "pcp_oracle": float(np.mean([v["pcp_oracle"] for v in types.values()])),
          "images": int(len(pred)), "images_better_mirrored": int(better.sum()),
          "per_type": types, "images_with_torso": int(has_torso.sum()),
          "by_torso_angle": bins}


def main(argv):
  del argv
  from deeppose_tf.skeleton import LSP14
  skeleton = LSP14
  if FLAGS.workdir:
    from deeppose_tf import predict
    from deeppose_tf.cascade import Cascade
    casc = Cascade.load(FLAGS.workdir, num_stages=FLAGS.num_stages)
    skeleton = casc.skeleton
    out = predict.predict_split(casc, FLAGS.data_dir, "val", batch_size=16, desc="val")
    np.savez(FLAGS.poses, poses=out["poses"], joints=out["joints"], visible=out["visible"])
  d = np.load(FLAGS.poses)
  joints, visible = d["joints"].astype(np.float64), d["visible"].astype(bool)
  result = {f"stage {s + 1}": score(d["poses"][:, s].astype(np.float64), joints, visible,
                                    skeleton)
            for s in range(d["poses"].shape[1])}
  text = json.dumps(result, indent=1)
  print(text)
  if FLAGS.output:
    tmp = FLAGS.output + ".partial"
    with open(tmp, "w") as f:
      f.write(text + "\n")
    os.replace(tmp, FLAGS.output)


if __name__ == "__main__":
  app.run(main)
