"""How much the exact observer-centric rule matters: a cascade's answers and the annotations
are each relabelled by one of four rules, and strict PCP is read for every pair of rules.

The rules (LSP14): `chain` is labels.observer_centric (of each pair of arms and of legs, the
one whose joints lie further right on average is the left one); `joint` decides each mirrored
joint pair alone; `torso` swaps every pair when the left shoulder and hip lie left of the
right ones (one decision per person); `girdle` decides the arms by the shoulders and the
legs by the hips. The held-out labels were drawn by people, not by a rule: if the scores
hardly depend on which rule relabels the annotations, they do not hang on guessing theirs.

  python experiments/left_right_rules.py --poses=runs/lr_lsp.npz \\
      --output=experiments/left_right_rules_lsp_val.json

--poses: a dump of experiments/lr_confusions.py (poses (N, S, K, 2), joints, visible);
its last stage is scored. Seconds.
"""

import json

import numpy as np
from absl import app, flags

flags.DEFINE_string("poses", None, "lr_confusions.py's .npz dump.", required=True)
flags.DEFINE_string("output", None, "Where the JSON of figures goes (default: print only).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from deeppose_tf import labels, metrics
  from deeppose_tf.skeleton import LSP14 as S
  i = S.index
  pairs = [(i(f"l_{j}"), i(f"r_{j}")) for j in ("shoulder", "elbow", "wrist", "hip", "knee",
                                                "ankle")]
  arms, legs = pairs[:3], pairs[3:]

  def swap(p, which, m):
    p = p.copy()
    for a, b in which:
      p[m, a], p[m, b] = p[m, b].copy(), p[m, a].copy()
    return p

  def joint(p):
    out = p
    for a, b in pairs:
      out = swap(out, [(a, b)], p[:, a, 0] < p[:, b, 0])
    return out

  def torso(p):
    left = p[:, i("l_shoulder"), 0] + p[:, i("l_hip"), 0]
    right = p[:, i("r_shoulder"), 0] + p[:, i("r_hip"), 0]
    return swap(p, pairs, left < right)

  def girdle(p):
    out = swap(p, arms, p[:, i("l_shoulder"), 0] < p[:, i("r_shoulder"), 0])
    return swap(out, legs, p[:, i("l_hip"), 0] < p[:, i("r_hip"), 0])

  rules = {"none": lambda p: p, "chain": lambda p: labels.relabel_numpy(p, S, "observer")[0],
           "joint": joint, "torso": torso, "girdle": girdle}
  d = np.load(FLAGS.poses)
  pred, true, vis = d["poses"][:, -1], d["joints"], d["visible"] > 0
  ids = [S.limb_names.index(l) for _, limbs in S.pcp_average for l in limbs]

  def pcp(p, t):
    hits, counted = metrics.pcp_hits(p, t, vis, S)
    return float(hits[:, ids].sum() / counted[:, ids].sum())

  # LSP's annotations are complete; unannotated joints (LSPET) hold zeros and only move.
  table = {f"answers {a} / labels {b}": pcp(ra(pred), rb(true))
           for a, ra in rules.items() for b, rb in rules.items()}
  names = list(rules)
  print("rows: the rule relabelling the answers; columns: the rule relabelling the labels")
  print(" " * 8 + "".join(f"{n:>8s}" for n in names))
  for a in names:
    print(f"{a:>8s}" + "".join(f"{table[f'answers {a} / labels {b}']:8.3f}" for b in names))
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump({"poses": FLAGS.poses, "num_images": int(len(pred)), "pcp": table}, f,
                indent=1)


if __name__ == "__main__":
  app.run(main)
