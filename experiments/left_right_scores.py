"""One model's answers scored against a split's labels both ways: as stored (LSP and LSPET
store person-centric labels) and relabelled observer-centric (labels.observer_centric), in
one pass over the images. evaluate scores in the model's own convention only; this shows
what the other convention's benchmark makes of the same answers (an observer-centric model
on a person-centric benchmark, or the reverse).

  python experiments/left_right_scores.py --workdir=runs/d4c \\
      [--tflite=deeppose_tf/models/deeppose_lspet.tflite] \\
      --data_dir=runs/lsp_imagenet/lsp --split=val \\
      --output=experiments/left_right_scores_lsp_val.json

Cost: the model's evaluation time (the bundled float16 file: about 1.5 minutes for LSP's 200
val images on one core, 6 for LSPET's 900).
"""

import json

from absl import app, flags

flags.DEFINE_string("workdir", None, "The cascade (its config.json; the Keras stages unless "
                    "--tflite).", required=True)
flags.DEFINE_string("tflite", None, "Score this .tflite export of the workdir instead.")
flags.DEFINE_string("data_dir", None, "Prepared folder (its labels as stored).", required=True)
flags.DEFINE_string("split", "val", "Split to score.")
flags.DEFINE_string("output", None, "Where the JSON of figures goes (default: print only).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from deeppose_tf import cascade, labels, metrics, predict
  from deeppose_tf import workdir as workdir_lib
  from deeppose_tf.skeleton import resolve
  config = workdir_lib.read_config(FLAGS.workdir)
  skeleton = resolve(config["skeleton"])
  if FLAGS.tflite:
    from deeppose_tf.tflite_cascade import TFLiteCascade, read_model_meta
    casc = TFLiteCascade(FLAGS.tflite, skeleton)
    answers = read_model_meta(FLAGS.tflite).get("left_right", "person")
  else:
    casc = cascade.Cascade.load(FLAGS.workdir)
    answers = casc.left_right
  out = predict.predict_split(casc, FLAGS.data_dir, FLAGS.split, desc="left_right_scores")
  stored, vis = out["joints"], out["visible"]
  observer, ovis = labels.relabel_numpy(stored, skeleton, "observer", vis)
  result = {"model": FLAGS.tflite or FLAGS.workdir, "answers": answers,
            "data_dir": FLAGS.data_dir, "split": FLAGS.split, "num_images": int(len(stored))}
  for name, (true, v) in (("labels as stored", (stored, vis)),
                          ("labels relabelled observer-centric", (observer, ovis))):
    rows = []
    for s in range(out["poses"].shape[1]):
      summary = metrics.summarize(out["poses"][:, s], true, v, skeleton)
      rows.append({"stage": s + 1, "pcp": summary["pcp_mean"],
                   "pdj@0.1": summary["pdj_mean_at"]["0.1"]})
      print(f"{name:36s} stage {s + 1}: PCP {summary['pcp_mean']:.3f}  "
            f"PDJ@0.1 {summary['pdj_mean_at']['0.1']:.3f}")
    result[name] = rows
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
