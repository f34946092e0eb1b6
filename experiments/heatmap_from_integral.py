"""Starts a heatmap-head workdir from a trained integral-head one (issue 20).

The heatmap head has the integral head's layers, names and training (model.training_model
trains it through the same soft-argmax); only its decoding differs (the peak). A trained
integral stage is therefore a trained heatmap stage: this copies the workdir's config (head
"heatmap"), mean pose, curves and stages 1..N (each rebuilt with the heatmap head, weights
copied by name, outputs checked) into a new workdir without the stages' displacement
statistics. `python -m deeppose_tf.train` on the new workdir then recomputes the statistics
from the peak-decoded stages and trains the later stages on them.

  python experiments/heatmap_from_integral.py --src=runs/lsp_imagenet_long \
      --dst=runs/lsp_heatmap_long --stages=1
"""

import json
import os
import shutil

import numpy as np
from absl import app, flags

from deeppose_tf.models import builder as model_lib
from deeppose_tf import workdir as workdir_lib

flags.DEFINE_string("src", None, "Trained integral-head workdir.")
flags.DEFINE_string("dst", None, "New workdir (must not exist).")
flags.DEFINE_integer("stages", 1, "Stages 1..N to carry over.")
FLAGS = flags.FLAGS


def main(_):
  if os.path.exists(FLAGS.dst):
    raise SystemExit(f"--dst={FLAGS.dst} exists; give a new workdir")
  config = workdir_lib.read_config(FLAGS.src)
  if config["model"]["head"] != "integral":
    raise SystemExit(f"{FLAGS.src} has head {config['model']['head']!r}, not 'integral'")
  os.makedirs(FLAGS.dst)
  config["model"]["head"] = "heatmap"
  with open(os.path.join(FLAGS.dst, "config.json"), "w") as f:
    json.dump(config, f, indent=1)
  shutil.copy(os.path.join(FLAGS.src, "mean_pose.json"), FLAGS.dst)
  curves_path = workdir_lib.curves_json(FLAGS.src)
  if os.path.exists(curves_path):  # the carried stages' curves; later stages start anew
    with open(curves_path) as f:
      kept = {k: v for k, v in json.load(f).items() if int(k[len("stage"):]) <= FLAGS.stages}
    with open(workdir_lib.curves_json(FLAGS.dst), "w") as f:
      json.dump(kept, f, indent=1)
  x = np.random.default_rng(0).uniform(0, 255, (2, config["input_size"],
                                                 config["input_size"], 3)).astype(np.float32)
  for stage in range(1, FLAGS.stages + 1):
    src = workdir_lib.load_model(workdir_lib.model_path(FLAGS.src, stage))
    cfg = model_lib.ModelConfig(**{**config["model"], "backbone_weights": None})
    net = model_lib.build_regressor(cfg, name=f"stage{stage}")
    copied, skipped = model_lib.assign_by_name(net, model_lib.pretrained_weights(
        workdir_lib.model_path(FLAGS.src, stage)))
    if skipped:
      raise SystemExit(f"stage {stage}: layers {skipped} did not copy")
    a = model_lib.training_model(src)(x)["heatmaps"]
    b = model_lib.training_model(net)(x)["heatmaps"]
    if not np.allclose(a, b, atol=1e-4):
      raise SystemExit(f"stage {stage}: the heatmaps differ after the copy")
    os.makedirs(workdir_lib.stage_dir(FLAGS.dst, stage))
    workdir_lib.save_model(net, workdir_lib.model_path(FLAGS.dst, stage))
    print(f"stage {stage}: {len(copied)} layers copied, heatmaps identical; saved "
          f"{workdir_lib.model_path(FLAGS.dst, stage)}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["src", "dst"])
  app.run(main)
