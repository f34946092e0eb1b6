"""Why stage 2 of lsp_imagenet_160.flags loses strict PCP while it gains PDJ: what each stage's
joints score when stage 2's answer is kept only where it moved a joint less than r torso
diameters, and when the two stages' joints are averaged.

Reads the poses of a cascade on a val split, dumped once (`--dump`: predict_split with the
workdir's inference settings, flips and reframing; about 14 min for LSPET's 900 val images
on one core), then scores the variants from the dump (seconds):

  python experiments/refine_move.py --workdir=runs/restart160 --dump \\
      --data_dir=runs/lsp_imagenet/lspet --poses=runs/poses_lspet.npz
  python experiments/refine_move.py --poses=runs/poses_lspet.npz

The torso diameter is stage 1's predicted one (what a cascade has at inference).
"""

import json
import os

import numpy as np
from absl import app, flags

flags.DEFINE_string("poses", None, "The .npz of poses (N, S, K, 2), joints, visible.")
flags.DEFINE_boolean("dump", False, "Run --workdir's cascade on --data_dir's val split first.")
flags.DEFINE_string("workdir", None, "With --dump: the cascade.")
flags.DEFINE_string("data_dir", None, "With --dump: prepared records with a val split.")
flags.mark_flag_as_required("poses")
FLAGS = flags.FLAGS
RADII = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def main(argv):
  del argv
  from deeppose_tf import metrics
  from deeppose_tf.skeleton import LSP14
  if FLAGS.dump:
    from deeppose_tf import predict
    from deeppose_tf.cascade import Cascade
    out = predict.predict_split(Cascade.load(FLAGS.workdir), FLAGS.data_dir, "val",
                                batch_size=16, desc="val")
    np.savez(FLAGS.poses, poses=out["poses"], joints=out["joints"], visible=out["visible"])
  d = np.load(FLAGS.poses)
  poses, joints, visible = d["poses"], d["joints"], d["visible"]
  s1, s2 = poses[:, 0], poses[:, 1]
  a, b = LSP14.diameter_indices
  diam = np.linalg.norm(s1[:, a] - s1[:, b], axis=-1)[:, None]
  move = np.linalg.norm(s2 - s1, axis=-1) / np.maximum(diam, 1e-6)  # (N, K)

  def score(p):
    m = metrics.summarize(p, joints, visible, LSP14)
    return {"pcp": round(m["pcp_mean"], 4), "pdj@0.1": round(m["pdj_mean_at"]["0.1"], 4),
            "pdj@0.2": round(m["pdj_mean_at"]["0.2"], 4)}

  rows = {"stage 1": score(s1), "stage 2": score(s2), "mean of stages 1 and 2":
          score(0.5 * (s1 + s2))}
  for r in RADII:
    keep = move > r
    rows[f"stage 2 where it moved < {r} diameters"] = {**score(np.where(keep[..., None], s1, s2)),
                                                      "stage 1 kept": round(keep.mean(), 3)}
  report = {"poses": FLAGS.poses, "images": int(len(poses)),
            "move_quantiles_50_75_90_95_99": np.round(
                np.quantile(move, [.5, .75, .9, .95, .99]), 3).tolist(), "rows": rows}
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  app.run(main)
