"""Scores the stage 1 (or first stages) of several workdirs on two val splits, each from the
split's box (the whole photo) and from its square (the longer side), with each workdir's own
test-time flips and reframing. Made for the --stage1_box comparison (BUILD.md, "Stage 1 on
the joints' framing"); run one per core:

  taskset -c 0 python experiments/stage1_box_ab.py --workdirs=runs/ab_joints \\
      --data_dirs=runs/lsp_imagenet/lspet,runs/lsp_imagenet/lsp --output=joints.json

Prints one line per (workdir, split, box) and writes them as JSON: each stage's strict PCP
and PDJ@0.1, and the seconds the pass took.
"""

import json
import os
import time

import numpy as np
from absl import app, flags

from deeppose_tf import cascade, metrics
from deeppose_tf.predict import predict_split

flags.DEFINE_list("workdirs", None, "Trained workdirs to score.", required=True)
flags.DEFINE_list("data_dirs", None, "Prepared datasets whose --split to score on.",
                  required=True)
flags.DEFINE_string("split", "val", "The split of each data_dir.")
flags.DEFINE_integer("num_stages", 1, "Score the first N stages of each cascade.",
                     lower_bound=1)
flags.DEFINE_list("boxes", ["split", "square"], "Which boxes to score: split (the record's, "
                  "the whole photo) and / or square (its longer side).")
flags.DEFINE_string("output", "", "JSON file for the results (empty: print only).")
FLAGS = flags.FLAGS


def square_box(image: np.ndarray) -> np.ndarray:
  """(h, w, 3) -> the square (cx, cy, s, s) of side the image's longer side, centred."""
  h, w = image.shape[:2]
  return np.float32([w / 2, h / 2, max(h, w), max(h, w)])


def main(_):
  out = {}
  for wd in FLAGS.workdirs:
    casc = cascade.Cascade.load(wd, num_stages=FLAGS.num_stages)
    for data_dir in FLAGS.data_dirs:
      for mode, box_fn in (("split", None), ("square", square_box)):
        if mode not in FLAGS.boxes:
          continue
        t = time.time()
        p = predict_split(casc, data_dir, FLAGS.split, batch_size=16, box_fn=box_fn,
                          desc=f"{wd} {os.path.basename(data_dir)} {mode}")
        rows = []
        for s in range(p["poses"].shape[1]):
          m = metrics.summarize(p["poses"][:, s], p["joints"], p["visible"], casc.skeleton)
          rows.append({"pcp": round(float(m["pcp_mean"]), 4),
                       "pdj@0.1": round(float(m["pdj_mean_at"]["0.1"]), 4)})
        key = f"{wd}|{data_dir}|{mode}"
        out[key] = {"stages": rows, "images": int(len(p["poses"])),
                    "seconds": round(time.time() - t, 1)}
        print(key, out[key], flush=True)
  if FLAGS.output:
    with open(FLAGS.output, "w") as fh:
      json.dump(out, fh, indent=1)


if __name__ == "__main__":
  app.run(main)
