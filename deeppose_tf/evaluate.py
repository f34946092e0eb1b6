"""Evaluates a trained cascade on a split: PCP and PDJ per stage against the mean pose.

  python -m deeppose_tf.evaluate --workdir=DIR [--eval_split=test] [--eval_limit=N]
      [--tflite=MODEL.tflite] [--precision=float32|bfloat16] [--report_dir=DIR]

--tflite evaluates a converted model (export --format=tflite, any quantization) in the LiteRT
interpreter instead of the workdir's Keras cascade, so what ships is measured the same way;
a file made from another cascade is refused (check_tflite_matches).
Writes into --report_dir (default: the workdir; with --tflite, MODEL-report/ beside the
file, or WORKDIR/tflite-MODEL-report/ when that folder is not writable or inside the
installed package: tflite_report_dir), each file crash-safely:
  report.json       {"split", "num_images", "stages": [{"stage", "pcp_mean", "pcp_per_limb",
                    "pcp_per_type", "pdj_mean_at": {"0.05", "0.1", "0.2"}, "pdj"}...],
                    "mean_pose": {same fields}, and for a --method=tompson cascade
                    "phases": [{"stage": 1, "phase": "detector", same fields}]: its
                    detector alone, without the spatial model}
  report.md         the PCP table in the layout of the paper's Table 1, a row per stage
                    (and per phase)
  pdj_curves.png    PDJ curves per joint type, a line per stage (paper Fig. 3-5)
  examples.png      stick figures, ground truth and every stage (paper Fig. 6)
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np
from absl import app, flags, logging

from deeppose_tf import atomic, cascade, coco_eval, geometry, labels, metrics, predict, report
from deeppose_tf.models.heads import tompson
from deeppose_tf.predict import framing
from deeppose_tf import workdir as workdir_lib
from deeppose_tf.data import records
from deeppose_tf.skeleton import resolve as resolve_skeleton


def mean_pose_baseline(workdir: str, boxes: np.ndarray) -> np.ndarray:
  """The mean training pose placed in each image's initial box: (N, K, 2) image pixels."""
  pose = workdir_lib.read_mean_pose(workdir)
  return geometry.denormalize(np.broadcast_to(pose, (len(boxes),) + pose.shape),
                              boxes).numpy()


BOXES = ("split", "detect", "auto", "detect_auto")
# Which detected person is scored against a record's one annotated person: `top` the detector's
# highest-scoring box; `match` the box that overlaps the annotated joints' box most
# (detect.match_person), as predict poses every detected person and COCO's evaluation matches
# them to the annotations.
DETECTOR_PICKS = ("top", "match")


def detector_recall(boxes, joints, visible, found) -> dict:
  """found: (N,) whether the detector found a person (boxes (N, 4) then hold its best box).
  recall: the fraction of images whose found box contains every annotated joint."""
  boxes, joints = np.asarray(boxes, np.float64), np.asarray(joints, np.float64)
  lo = boxes[:, None, :2] - boxes[:, None, 2:] / 2
  hi = boxes[:, None, :2] + boxes[:, None, 2:] / 2
  inside = np.all((joints >= lo) & (joints <= hi), axis=-1) | (np.asarray(visible) <= 0)
  contains = found & inside.all(axis=1)
  return {"found": float(np.mean(found)), "recall": float(np.mean(contains)),
          "num_images": int(len(found))}


def _entry(summary: dict, **extra) -> dict:
  return {**extra, **summary}


def run(workdir: str, split: str = "test", data_dir: Optional[str] = None,
        limit: Optional[int] = None, batch_size: int = 16, num_examples: int = 8,
        tflite: Optional[str] = None, report_dir: Optional[str] = None,
        precision: str = "float32", num_stages: Optional[int] = None,
        boxes: str = "split", flip_test: Optional[bool] = None,
        reframe: Optional[int] = None, reframe_grow: Optional[float] = None,
        detector=None, refine_step: Optional[float] = None,
        detector_pick: str = "top", left_right: Optional[str] = None) -> dict:
  """Evaluates the cascade in `workdir` (stages 1..num_stages, default all of config.json's;
  or the .tflite file `tflite` made from it); returns the report dict.

  boxes: "split" uses each record's initial box (the paper's protocol); "detect" the best
  box of `detector` (predict/detectors.py; default OpenCV's HOG; the whole image when it finds
  nobody), and the report adds the detector's recall: the fraction of images whose
  detected box contains every annotated joint; "auto" pose-guided framing (predict/framing.py:
  the split's box, then the framing of each predicted pose while it moves). detector_pick
  (DETECTOR_PICKS): which detected box is the annotated person's, `top` (the detector's
  best) or `match` (the one overlapping the annotated joints most; the same box when the
  detector finds one person). flip_test, reframe, reframe_grow, refine_step, left_right: None
  as config.json says, else this evaluation's value (the Keras cascade only; a .tflite file
  answers in the left/right labels its export baked in, which its sidecar names).
  The split's annotations are scored in the model's left/right labels (labels.py): with
  "observer" they are relabelled by image position first, as the model's answers are.
  """
  if boxes not in BOXES:
    raise ValueError(f"boxes must be one of {list(BOXES)}, got {boxes!r}")
  if detector_pick not in DETECTOR_PICKS:
    raise ValueError(f"detector_pick must be one of {list(DETECTOR_PICKS)}, got "
                     f"{detector_pick!r}")
  if detector_pick != "top" and boxes not in ("detect", "detect_auto"):
    raise ValueError(f"--detector_pick={detector_pick} picks among a detector's boxes; it "
                     f"needs --boxes=detect or detect_auto, not {boxes}")
  config = workdir_lib.read_config(workdir)
  data_dir = data_dir or config["data_dir"]
  if tflite and (num_stages, flip_test, reframe, reframe_grow, refine_step,
                 left_right) != (None,) * 6:
    raise ValueError("--num_stages, --flip_test, --reframe, --refine_step and --left_right "
                     "apply to the Keras "
                     "cascade; a .tflite file runs what export baked into it (its sidecar "
                     "MODEL.json lists them; export takes the same flags)")
  if tflite and precision != "float32":
    raise ValueError("--precision applies to the Keras cascade; a .tflite file has its own "
                     "(export --quantize)")
  if tflite:
    from deeppose_tf.tflite_cascade import TFLiteCascade
    casc = TFLiteCascade(tflite, resolve_skeleton(config["skeleton"]))
    meta = check_tflite_matches(casc, tflite, config, workdir)
    report_dir = report_dir or tflite_report_dir(tflite, workdir)
    what = tflite
    convention = labels.check(meta.get("left_right", "person"))
  else:
    casc = cascade.Cascade.load(workdir, num_stages=num_stages, precision=precision,
                                flip_test=flip_test, reframe=reframe,
                                reframe_grow=reframe_grow, refine_step=refine_step,
                                left_right=left_right)
    report_dir = report_dir or workdir
    what = workdir
    convention = casc.left_right
  records.verify_split(data_dir, split)  # a cut split must not score fewer images silently
  split_meta = records.read_meta(data_dir, split)
  stored = split_meta.get("left_right", "person")
  if stored != "person" and convention != stored:
    # Person-centric labels cannot be recovered from observer-centric ones: scoring
    # person-centric answers against them would count every limb seen from behind wrong.
    raise ValueError(f"{data_dir}/{split}.json holds {stored}-centric left/right labels but "
                     f"{what} answers {convention}-centric ones; evaluate with "
                     f"--left_right={stored}, or on the folder it was relabelled from "
                     f"({split_meta.get('relabelled_from', '?')})")
  os.makedirs(report_dir, exist_ok=True)
  skeleton = casc.skeleton
  box_fn, found, picked = None, [], []
  reads_labels = detector_pick == "match"
  auto = {}
  wholes = []  # detect_auto: each image's whole box, the floor of its framing
  if boxes in ("detect", "detect_auto"):
    from deeppose_tf.predict import detect, detectors
    detector = detector or detectors.make_detector("hog")

    def detected_box(image, joints=None, visible=None):
      people = detector.detect(image)[0]
      found.append(len(people) > 0)
      wholes.append(detect.full_box(*image.shape[:2])[0])
      if not len(people):
        return wholes[-1]
      pick = 0 if joints is None else detect.match_person(people, joints, visible)
      picked.append(pick)
      return people[pick]
    box_fn = detected_box
  if boxes in ("auto", "detect_auto"):
    out = _auto_framed(casc, data_dir, split, limit, batch_size, num_examples, auto,
                       box_fn=box_fn, wholes=wholes if box_fn else None,
                       box_fn_reads_labels=reads_labels and box_fn is not None)
  else:
    out = predict.predict_split(casc, data_dir, split, limit=limit or None,
                                batch_size=batch_size, keep_images=num_examples,
                                desc=f"evaluate {split}", box_fn=box_fn,
                                box_fn_reads_labels=reads_labels and box_fn is not None)
  # The annotations in the labels the model answers in (the answers already are).
  true, vis = labels.relabel_numpy(out["joints"], casc.skeleton, convention, out["visible"])
  summaries = []
  coco_note = None
  for s in range(casc.num_stages):
    summary = metrics.summarize(out["poses"][:, s], true, vis, skeleton)
    entry = _entry(summary, stage=s + 1)
    try:  # COCO's OKS AP beside PCP and PDJ (coco_eval.py: sigmas, areas, protocol)
      entry["coco"] = coco_eval.keypoint_ap(out["poses"][:, s], true, vis, skeleton,
                                            out["areas"])
    except ValueError as e:  # a custom skeleton whose joints have no OKS sigma
      coco_note = str(e)
    summaries.append(entry)
  # Tompson et al.'s stages also score their detector alone (the detector phase's pose,
  # without the spatial model): the spatial model's gain, measured on the same run.
  phases = []
  if not tflite and tompson.is_tompson(casc.stages[0]):
    alone = cascade.Cascade([tompson.detector_only(casc.stages[0])], skeleton, casc.sigma,
                            casc.input_size, left_right=convention)
    used = iter(out["boxes"])  # the same person boxes (no second detection pass)
    det = predict.predict_split(alone, data_dir, split, limit=limit or None,
                                batch_size=batch_size, desc=f"evaluate {split} (detector)",
                                box_fn=(lambda _image: next(used)) if box_fn else None)
    phases.append(_entry(metrics.summarize(det["poses"][:, 0], true, vis, skeleton), stage=1,
                         phase="detector", label="stage 1 detector only"))
  mean_poses = labels.relabel_numpy(mean_pose_baseline(workdir, out["boxes"]), skeleton,
                                    convention)[0]
  baseline = metrics.summarize(mean_poses, true, vis, skeleton)
  result = {"model": what, "split": split, "data_dir": data_dir, "num_images": int(len(true)),
            "pcp": "strict PCP@0.5, mean over upper/lower arms (and legs), paper Table 1",
            "stages": summaries, "mean_pose": baseline, "boxes": boxes,
            "left_right": convention}
  if not tflite:
    result.update(casc.inference_settings)
  if phases:
    result["phases"] = phases
  if coco_note:
    result["coco_ap"] = f"not computed: {coco_note}"
  shown = phases + summaries  # table rows and curves
  if boxes in ("detect", "detect_auto"):
    result["detector"] = detector_recall(out["boxes"], true, vis, np.asarray(found))
    result["detector"]["name"] = detector.name
    result["detector"]["pick"] = detector_pick
    # How often the annotated person was not the detector's best box (match only).
    result["detector"]["not_top"] = float(np.sum(np.asarray(picked) > 0) / max(len(found), 1))
  if boxes in ("auto", "detect_auto"):
    result["auto_framing"] = auto
  atomic.write_text(os.path.join(report_dir, "report.json"),
                    json.dumps(_finite_or_none(result), indent=1, default=_json_default,
                               allow_nan=False))
  table_md = report.pcp_table_markdown(shown, skeleton, baseline)
  if phases:  # the spatial model's gain over the detector alone, per joint type
    table_md += "".join("\n" + report.per_type_pdj_markdown([phases[0], summaries[0]],
                                                            skeleton, r) for r in (0.1, 0.2))
  atomic.write_text(os.path.join(report_dir, "report.md"), table_md)
  report.plot_pdj_curves(shown, skeleton, os.path.join(report_dir, "pdj_curves.png"), baseline)
  n = len(out["images"])
  if n:
    report.plot_stick_figures(out["images"], true[:n], vis[:n],
                              [out["poses"][:n, s] for s in range(casc.num_stages)], skeleton,
                              os.path.join(report_dir, "examples.png"), max_images=n)
  print(f"\nEvaluation on {split} ({len(true)} images), {what} (reports in {report_dir}):")
  if convention != "person":
    print(f"left/right labels: {convention} (labels.py): the split's annotations relabelled "
          "by image position, as the answers are")
  if boxes in ("detect", "detect_auto"):
    d = result["detector"]
    which = ("best" if detector_pick == "top" else
             f"box matched to the annotated person (not its best box in {d['not_top']:.1%} "
             "of the images)")
    print(f"person boxes: {d['name']} detector's {which}; a person found in {d['found']:.1%} of "
          f"the images, a box containing every annotated joint (recall) in {d['recall']:.1%}")
  if boxes in ("auto", "detect_auto"):
    start = "detector's" if boxes == "detect_auto" else "split's"
    print(f"person boxes: pose-guided framing from the {start} boxes, {auto['passes']} "
          f"pass(es) after the first; boxes moved per pass: {auto['moved']}")
  print(report.pdj_table_text(shown, baseline))
  if coco_note:
    print(f"COCO keypoint AP: not computed: {coco_note}")
  else:
    print("COCO keypoint AP (OKS 0.50:0.95, one prediction per annotated person, split's boxes; "
          f"OKS area: {summaries[0]['coco']['area']}): " + ", ".join(
              f"stage {e['stage']} {e['coco']['AP']:.3f} (AP50 {e['coco']['AP50']:.3f})"
              for e in summaries))
  print()
  print(table_md)
  return result


def _auto_framed(casc, data_dir, split, limit, batch_size, num_examples, info,
                 passes: int = framing.AUTO_PASSES, box_fn=None, wholes=None,
                 box_fn_reads_labels: bool = False) -> dict:
  """predict_split from the split's boxes, then up to `passes` more runs in which each
  image's box is the framing of its previous pose (predict/framing.py, the same rule as
  `predict --boxes=auto`); a box that settled keeps its pose. Fills info with the number of
  passes and the boxes moved in each."""
  out = predict.predict_split(casc, data_dir, split, limit=limit or None,
                              batch_size=batch_size, keep_images=num_examples,
                              desc=f"evaluate {split} (framing pass 1)", box_fn=box_fn,
                              box_fn_reads_labels=box_fn_reads_labels)
  info.update({"passes": 0, "moved": [], "settle_iou": framing.SETTLE_IOU,
               "min_fraction": framing.MIN_FRACTION})
  outer = np.asarray(wholes, np.float32) if wholes else out["boxes"]
  for p in range(passes):
    new, moved = framing.next_boxes(out["poses"][:, -1], out["boxes"], outer)
    info["moved"].append(int(moved.sum()))
    if not moved.any():
      break
    used = iter(new)
    again = predict.predict_split(casc, data_dir, split, limit=limit or None,
                                  batch_size=batch_size, keep_images=num_examples,
                                  desc=f"evaluate {split} (framing pass {p + 2})",
                                  box_fn=lambda _image: next(used))
    again["poses"] = np.where(moved[:, None, None, None], again["poses"], out["poses"])
    out = again
    info["passes"] = p + 1
  return out


def check_tflite_matches(lite, tflite: str, config: dict, workdir: str) -> dict:
  """Refuses a .tflite made from another cascade than the workdir's (config.json `config`):
  its scores would be printed against this workdir's mean pose as if they were its own.

  lite: the file's TFLiteCascade (its stage count, from the graph). The sidecar
  (MODEL.json, written by export) must agree on skeleton, input_size and sigma where it
  names them; the file must not have more stages than the workdir (fewer: exported before
  stages were added, evaluated with a warning). ValueError naming both files and every
  difference. Returns the file's metadata (tflite_cascade.read_model_meta), read once."""
  from deeppose_tf.tflite_cascade import read_model_meta, sidecar_path
  meta = read_model_meta(tflite)
  config_file = workdir_lib.config_path(workdir)
  diffs = [f"{key} {meta[key]!r} in {sidecar_path(tflite)}, {config[key]!r} in {config_file}"
           for key in ("skeleton", "input_size", "sigma") if key in meta
           and meta[key] != config[key]]
  if lite.num_stages > config["num_stages"]:
    diffs.append(f"{lite.num_stages} stages in {tflite}, {config['num_stages']} in "
                 f"{config_file}")
  if diffs:
    raise ValueError(f"--tflite={tflite} was not exported from --workdir={workdir}: " +
                     "; ".join(diffs) + ". Evaluate it with the workdir it was exported "
                     "from, or export this one (python -m deeppose_tf.export "
                     f"--workdir={workdir} --format=tflite --export_dir=MODEL.tflite)")
  if lite.num_stages < config["num_stages"]:
    logging.warning("%s has %d stages, %s %d (exported before the later stages were "
                    "trained?): evaluating its %d", tflite, lite.num_stages, config_file,
                    config["num_stages"], lite.num_stages)
  return meta


def tflite_report_dir(tflite: str, workdir: str) -> str:
  """evaluate --tflite's default report folder: MODEL-report/ beside MODEL.tflite, or
  WORKDIR/tflite-MODEL-report/ when that folder is not writable or lies inside the installed
  package (the bundled model, deeppose_tf/models/: reports do not belong in site-packages)."""
  import deeppose_tf
  folder = os.path.dirname(os.path.abspath(tflite))
  package = os.path.dirname(os.path.realpath(deeppose_tf.__file__))
  real = os.path.realpath(folder)
  inside = os.path.commonpath([real, package]) == package
  if inside or not os.access(folder, os.W_OK | os.X_OK):
    name = os.path.splitext(os.path.basename(tflite))[0]
    return os.path.join(workdir, f"tflite-{name}-report")
  return os.path.splitext(tflite)[0] + "-report"


def _finite_or_none(o):
  """NaN (a rate with nothing to count) becomes null: strict JSON has no NaN."""
  if isinstance(o, dict):
    return {k: _finite_or_none(v) for k, v in o.items()}
  if isinstance(o, (list, tuple)):
    return [_finite_or_none(v) for v in o]
  if isinstance(o, np.ndarray):
    return _finite_or_none(o.tolist())
  if isinstance(o, (float, np.floating)):
    return float(o) if np.isfinite(o) else None
  if isinstance(o, np.integer):
    return int(o)
  return o


def _json_default(o):
  if isinstance(o, np.ndarray):
    return o.tolist()
  if isinstance(o, (np.floating, np.integer)):
    return o.item()
  raise TypeError(f"not JSON serializable: {type(o)}")


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags (only when run as the entry point: train imports this module).
  Names shared with train (--workdir, --data_dir, --eval_*, --precision) mean the same."""
  flags.DEFINE_string("workdir", None, "Workdir of a trained cascade (python -m "
                      "deeppose_tf.train --workdir=...).")
  flags.DEFINE_string("data_dir", None, "Folder of prepared TFRecords; default: the one "
                      "training used (config.json).")
  # --eval_* and --precision are defined once for every command (deeppose_tf/flags.py);
  # adopting them makes --help list them here.
  from deeppose_tf import flags as dp_flags
  dp_flags.define_shared_flags(["eval_split", "eval_limit", "eval_batch_size", "precision"])
  flags.adopt_module_key_flags(dp_flags)
  flags.DEFINE_string("tflite", None, "Evaluate this .tflite model of the workdir's cascade "
                      "(LiteRT interpreter, one image per call) instead of the Keras models. "
                      "Refused when its sidecar MODEL.json (written by export) names another "
                      "skeleton, input size or sigma, or it has more stages than the workdir.")
  flags.DEFINE_enum("boxes", "split", list(BOXES), "Person boxes: split = each record's "
                    "initial box (the paper's protocol); detect = the best box of "
                    "--detector (reports its recall too); auto = pose-guided "
                    "framing: the split's box, then the framing of the predicted pose while "
                    "it moves (predict --boxes=auto); detect_auto = the detector's "
                    "best box, then that framing.")
  flags.DEFINE_enum("detector_pick", "top", list(DETECTOR_PICKS), "With --boxes=detect or "
                    "detect_auto, which detected person is scored against each record's "
                    "annotated one: top = the detector's highest-scoring box; match = the box "
                    "that overlaps the annotated joints' bounding box most (IoU), as predict "
                    "poses every detected person and COCO's evaluation matches them to the "
                    "annotations. The match reads where the person is, never the poses.")
  flags.DEFINE_string("report_dir", None, "Where the reports go (default: the workdir; with "
                      "--tflite, MODEL-report/ beside the .tflite file, or "
                      "WORKDIR/tflite-MODEL-report/ when that folder is not writable or is "
                      "inside the installed package, as the bundled model's is).")
  dp_flags.define_inference_flags("evaluate")
  # The names before the flags were unified across commands.
  from deeppose_tf.predict import detectors
  detectors.define_flags()
  flags.DEFINE_alias("split", "eval_split")
  flags.DEFINE_alias("limit", "eval_limit")
  flags.DEFINE_alias("batch_size", "eval_batch_size")
  flags.mark_flag_as_required("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from deeppose_tf import flags as dp_flags
  run(FLAGS.workdir, FLAGS.eval_split, FLAGS.data_dir, FLAGS.eval_limit, FLAGS.eval_batch_size,
      tflite=FLAGS.tflite, report_dir=FLAGS.report_dir, precision=FLAGS.precision,
      boxes=FLAGS.boxes, detector_pick=FLAGS.detector_pick,
      **dp_flags.inference_overrides(FLAGS),
      detector=None if FLAGS.boxes not in ("detect", "detect_auto") else
      _detector_from_flags())


def _detector_from_flags():
  from deeppose_tf.predict import detectors
  return detectors.from_flags()


if __name__ == "__main__":
  define_flags()
  from deeppose_tf import cli
  cli.run(main, "evaluate")
