"""Exports a trained cascade for TF Serving (SavedModel) or for phones (TFLite).

  python -m deeppose_tf.export --workdir=runs/lsp --export_dir=serving/deeppose [--version=N]
      [--precision=float32|bfloat16]
  python -m deeppose_tf.export --workdir=runs/lsp --export_dir=deeppose.tflite --format=tflite
      [--quantize=none|float16|int8] [--tflite_size=440,440]
  Either, for a faster model: [--num_stages=N] [--flip_test=false] [--reframe=0]

Prints the path written. Signatures, inputs and limits: export/README.md.
"""

from absl import app, flags

from deeppose_tf import flags as dp_flags
from deeppose_tf.cascade import Cascade
from deeppose_tf.export.saved_model import export_saved_model
from deeppose_tf.export.tflite import QUANTIZE, export_tflite

FORMATS = ("saved_model", "tflite")

# The flags are defined here at module level because absl's --help lists the flags of the
# main module only. Names shared with the package's other entry points: --workdir (a trained
# run folder), --export_dir (where an export goes), --precision, --seed. --precision is
# defined once for every command in deeppose_tf/flags.py; adopting it makes --help list it.
dp_flags.define_shared_flags(["precision"])
# --num_stages, --flip_test, --reframe, --reframe_grow, --refine_step: what the export runs
# (default: the workdir's config.json), the flags evaluate takes too.
dp_flags.define_inference_flags("export")
flags.adopt_module_key_flags(dp_flags)
flags.DEFINE_string("workdir", None, "Trained run folder of the cascade to export "
                    "(config.json, stage*/model.keras; python -m deeppose_tf.train "
                    "--workdir=...).")
flags.DEFINE_string("export_dir", None, "Where the export goes. saved_model: the model base "
                    "dir TF Serving polls (the version goes in EXPORT_DIR/<version>/); "
                    "tflite: the .tflite file.")
flags.DEFINE_alias("output", "export_dir")  # the flag's name before the entry points agreed
flags.DEFINE_integer("version", None, "saved_model: version number, a positive integer "
                     "(default: the next free one under --export_dir).")
flags.DEFINE_enum("format", "saved_model", list(FORMATS), "Export format: a TF Serving "
                  "SavedModel or a builtin-ops TFLite model.")
flags.DEFINE_enum("quantize", "none", list(QUANTIZE), "tflite: none (float32), float16 "
                  "weights, or int8 stage networks calibrated on the workdir's training "
                  "images.")
flags.DEFINE_list("tflite_size", None, "tflite: fixed input H,W in pixels (default: twice "
                  "the network input size).")
flags.DEFINE_integer("seed", 0, "tflite int8: seed of the random calibration images used "
                     "when the workdir's data cannot be read.")
flags.mark_flags_as_required(["workdir", "export_dir"])


def _tflite_size(value):
  """(H, W) from the flag's list, or None when it is not a pair of positive integers."""
  try:
    size = tuple(int(v) for v in value)
  except (TypeError, ValueError):
    return None
  return size if len(size) == 2 and min(size) > 0 else None


flags.register_validator(
    "tflite_size", lambda v: v is None or _tflite_size(v) is not None,
    "--tflite_size must be H,W: two positive integers (e.g. 440,440)")
flags.register_validator("version", lambda v: v is None or v > 0,
                         "--version must be a positive integer (TF Serving's layout)")


@flags.multi_flags_validator(["format", "quantize", "tflite_size"],
                             message="--quantize and --tflite_size apply to --format=tflite "
                             "only; use --format=tflite or drop them")
def _tflite_flags_need_tflite(f):
  return f["format"] == "tflite" or (f["quantize"] == "none" and not f["tflite_size"])


@flags.multi_flags_validator(["format", "precision", "version"],
                             message="--precision and --version apply to "
                             "--format=saved_model only (TFLite has --quantize)")
def _saved_model_flags_need_saved_model(f):
  return f["format"] == "saved_model" or (f["precision"] == "float32" and
                                          f["version"] is None)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  casc = Cascade.load(f.workdir, precision=f.precision, **dp_flags.inference_overrides(f))
  if f.format == "saved_model":
    print(export_saved_model(f.workdir, f.export_dir, f.version, casc=casc))
  else:
    print(export_tflite(f.workdir, f.export_dir, f.quantize, _tflite_size(f.tflite_size),
                        casc=casc, seed=f.seed))


if __name__ == "__main__":
  from deeppose_tf import cli
  cli.run(main, "export")
