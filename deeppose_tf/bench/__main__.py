"""Performance benchmarks: a table on stdout, and JSON on stdout and in --json.

  python -m deeppose_tf.bench [--only=peak,pipeline,train,e2e,infer,quant,model] [--json=FILE]
      [--data_dir=DIR | --source_dir=DIR --dataset=lspet] [--workdir=TRAINED] [...]

See `--help` for every flag and deeppose_tf/bench/__init__.py for what each section measures.
"""

from __future__ import annotations

import dataclasses
import json

from absl import app, flags

from deeppose_tf import flags as dp_flags
from deeppose_tf.bench import options
from deeppose_tf.bench.options import BenchConfig

FLAGS = flags.FLAGS

flags.DEFINE_list("only", list(BenchConfig.only), "Benchmarks to run, from "
                  f"{', '.join(options.BENCHMARKS)} (the matmul peak always runs). train: the "
                  "train step in float32 and bfloat16, alternating, each against its own "
                  "measured matmul peak; pipeline: tf.data alone; e2e: training through the "
                  "pipeline against in-memory data; infer: cascade latency against the FLOPs "
                  "bound; quant: Keras fp32/bfloat16 and TFLite fp32/int8 accuracy of the "
                  "trained cascade in --workdir; model: load time and batch-1 latency of the "
                  "--models files as the predict command runs them; detect: each "
                  "--detectors' time per image and predict's images/s with it, against "
                  "--boxes=full and --boxes=auto.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
# Data (pipeline, e2e).
flags.DEFINE_string("data_dir", None, "pipeline, e2e: folder of prepared TFRecords with a "
                    "'train' split of 14-joint (LSP14) records. Without it and --source_dir: "
                    "--num_train generated synthetic images.")
flags.DEFINE_string("source_dir", None, "pipeline, e2e: folder of the original --dataset "
                    "files; its first --num_train training images are prepared into a temp "
                    "folder. Exclusive with --data_dir.")
flags.DEFINE_enum("dataset", BenchConfig.dataset, list(options.SOURCE_DATASETS),
                  "With --source_dir: which dataset's files (the 14-joint sets the bench "
                  "network predicts).")
flags.DEFINE_integer("num_train", BenchConfig.num_train, "pipeline, e2e: training images "
                     "read from --source_dir or generated (synthetic).")
flags.DEFINE_enum("augment", BenchConfig.augment, list(options.AUGMENTS), "pipeline, e2e: "
                  "the augmentation fed: recipe (pipeline.RECIPE_AUGMENT, the training "
                  "flags' defaults: rotation, scale, shift, flip, colour) or paper (the "
                  "paper's light jitter).")
# The network of every section, its training (train, pipeline, e2e) and quant's --eval_split
# and --eval_limit: train's flags (deeppose_tf/flags.py, one help and range for both
# commands) with BenchConfig's defaults; adopting them makes `--help` list them here.
dp_flags.define_shared_flags(dp_flags.MODEL_FLAGS + ("eval_split", "eval_limit"),
                             {f.name: f.default for f in dataclasses.fields(BenchConfig)})
flags.adopt_module_key_flags(dp_flags)
# Training (train, e2e).
flags.DEFINE_integer("train_rounds", BenchConfig.train_rounds, "train: alternating "
                     "fp32/bf16 rounds of 10 timed steps each.")
# Inference.
flags.DEFINE_integer("stages", BenchConfig.stages, "infer: cascade stages S (the scaling "
                     "table: 1..S).")
flags.DEFINE_list("infer_batches", [str(b) for b in BenchConfig.infer_batches],
                  "infer: Keras cascade batch sizes (the SavedModel: those up to 8).")
flags.DEFINE_boolean("tflite", BenchConfig.tflite, "infer: also convert to TFLite (fp32, "
                     "float16, int8) and time batch 1.")
# The predict command's models.
flags.DEFINE_list("models", [], "model: model files or folders to time as the predict "
                  "command loads them (.tflite, SavedModel, workdir), and peer models as "
                  "FORMAT:PATH (blazepose, movenet: compare --peers' formats, on the whole "
                  "image letterboxed); the first is the reference of the others' latency.")
flags.DEFINE_list("threads", [str(t) for t in BenchConfig.threads], "model: interpreter "
                  "threads to time each model with (TFLite files; each count is a row, "
                  "compared with the first model at the same count).")
flags.DEFINE_list("detectors", ["hog"], "detect: person detectors to time, NAME or NAME:FILE "
                  "for the TFLite ones (hog, blazepose:FILE, movenet:FILE, ssd:FILE); "
                  "movenet@512:FILE runs MoveNet at that input size, movenet@256+512:FILE at "
                  "both (--detector_input_size); "
                  "the pose model is the first of --models, else the bundled one.")
# Accuracy.
flags.DEFINE_string("workdir", None, "quant: workdir of a trained cascade.")
# Timing.
flags.DEFINE_float("min_time", BenchConfig.min_time, "Seconds each timing runs at least "
                   "(median of its calls).")
flags.DEFINE_integer("matmul_n", BenchConfig.matmul_n, "Side of the square matmul that "
                     "measures the machine's peak.")


def config_from_flags() -> BenchConfig:
  """BenchConfig from the flags of the same names (checked there; ValueError names the flag)."""
  return BenchConfig(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(BenchConfig)})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    cfg = config_from_flags()
  except ValueError as err:
    raise app.UsageError(str(err)) from err
  from deeppose_tf import atomic
  from deeppose_tf.bench.runner import run_config
  report = run_config(cfg)
  print(report.table())
  out = json.dumps(report.to_json(), indent=1)
  if FLAGS.json:
    atomic.write_text(FLAGS.json, out)
  print(out)


if __name__ == "__main__":
  from deeppose_tf import cli
  cli.run(main, "bench")
