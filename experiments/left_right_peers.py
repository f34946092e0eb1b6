"""BlazePose and MoveNet, which answer person-centric labels, scored on one val split twice:
against its person-centric labels and against the same split relabelled observer-centric
(python -m deeppose_tf.data.relabel). That is what the DeepPose paper's LSP test protocol
(observer-centric labels) does to any model that answers person-centric ones.

  python experiments/left_right_peers.py --person=runs/lsp_imagenet/lsp \\
      --observer=runs/lsp_oc/lsp --split=val \\
      --peers=blazepose:peers/pose_landmark_heavy.tflite:BlazePose-heavy,... \\
      --output=experiments/left_right_peers_lsp_val.json

Each peer sees each photo whole (compare.score_peers). Cost: measured 2026-12-07 on LSP's 200
val images with three peers (BlazePose heavy and full, MoveNet SinglePose): about 20 s a
pass at 10 images/s on one shared core, two passes (both labellings).
"""

import json

from absl import app, flags

flags.DEFINE_string("person", None, "Prepared folder with person-centric labels.")
flags.DEFINE_string("observer", None, "The same split relabelled observer-centric.")
flags.DEFINE_string("split", "val", "Split to score.")
flags.DEFINE_list("peers", None, "FORMAT:PATH[:LABEL] entries (compare --peers).")
flags.DEFINE_string("output", None, "Where the JSON of figures goes (default: print only).")
for _name in ("person", "observer", "peers"):
  flags.mark_flag_as_required(_name)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from deeppose_tf import compare
  from deeppose_tf.data import records
  from deeppose_tf.predict import peers as peers_lib
  specs = peers_lib.parse_peers(FLAGS.peers)
  models = [peers_lib.PeerModel(fmt, path, 1, label) for fmt, path, label in specs]
  n = records.read_meta(FLAGS.person, FLAGS.split)["num_records"]
  out = {}
  for labels, data_dir in (("person", FLAGS.person), ("observer", FLAGS.observer)):
    for (_, path, label), s in zip(specs, compare.score_peers(models, data_dir, FLAGS.split, n)):
      out.setdefault(label, {"file": path})[labels] = {
          "pcp": s["pcp_mean"], "pdj@0.1": s["pdj_mean_at"]["0.1"], "num_images": s["num_images"]}
  for label, row in out.items():
    print(f"{label:20s} PCP person-centric {row['person']['pcp']:.3f}  observer-centric "
          f"{row['observer']['pcp']:.3f}")
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  app.run(main)
