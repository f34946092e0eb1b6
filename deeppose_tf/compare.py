"""Compares trained workdirs on one split, e.g. DeepPose against Tompson et al., and against
the peer models a user would use instead (MediaPipe BlazePose, MoveNet): a table of PCP,
PDJ@0.05/0.1/0.2, parameters, forward FLOPs per image, batch-1 latency per image at 1 and 2
threads, load time and file size, the PCP per limb type and PDJ per joint type, and the PDJ
curves of every method in one plot (like the papers' figures).

  python -m deeppose_tf.compare --workdirs=runs/lspet,runs/tompson_lspet \\
      --labels=DeepPose,Tompson --output=docs/compare_lspet
  python -m deeppose_tf.compare --workdirs=runs/lsp --output=docs/peers_lsp \\
      --peers=blazepose:pose_landmark_full.tflite:BlazePose,movenet:movenet.tflite:MoveNet

Each workdir, given once, must hold its evaluation (report.json, written by train or
`python -m deeppose_tf.evaluate`; --reports names one elsewhere, e.g. evaluate's
--report_dir) of the same split and image count, on the same data (--data_dir) with the same
person boxes (--boxes). Rows: every stage of each workdir (and, for Tompson et al., its
detector alone), then each peer, then the first workdir's mean pose.

Peers (--peers=FORMAT:PATH[:LABEL],...; predict/peers.py: blazepose, movenet) are scored in
this run on the first report's data_dir and split, the same first num_images records (or
the first --peer_limit of them), with the same metrics (metrics.summarize). Each peer sees
the whole photo letterboxed into its input, without its own detector's ROI; our models got
the person box of the report's --boxes (the split's box for "split"). Their joints are
mapped onto LSP14, so peers need an LSP14 workdir.

FLOPs per image count the cascade as it runs: stage 1 on the person crop plus K joint crops
per refinement stage (none for peers). Timing, every model in this run, on one 320 x 240
image with the whole image as the box (bench.model_file's image), median over at least
--min_time seconds, at 1 and at 2 threads: a workdir through `bench.model_file` (loaded as
the predict command does) in a child process per thread count with TensorFlow's intra- and
inter-op threads set to it; a peer in the LiteRT interpreter with that many threads. Load:
opening the model (the 1-thread run). Size: a workdir's stage .keras files, a peer's .tflite
file. Training minutes: the cumulative wall minutes of the workdir's last learning-curve
point (curves.json), when it has curves.

Writes OUTPUT.md (the tables), OUTPUT.json and OUTPUT.png (PDJ curves), crash-safely.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List, Optional, Sequence

from absl import app, flags

from deeppose_tf import atomic

THREADS = (1, 2)  # the thread counts every model is timed at

# A child process times workdirs at one thread count: TensorFlow's threads are set once per
# process, before its first op.
_TIMING_CHILD = """
import json, sys
import tensorflow as tf
threads = int(sys.argv[1])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
from deeppose_tf.bench import model_file
out = {}
for r in model_file.model_results(json.loads(sys.argv[3]), float(sys.argv[2])):
  out.setdefault(r.entry, {})[r.key] = r.value
print("COMPARE_TIMING " + json.dumps(out), flush=True)
"""


def _report(workdir: str, path: Optional[str] = None) -> dict:
  """The evaluation report of `workdir`: `path` (a report.json, or a folder holding one),
  default WORKDIR/report.json."""
  from deeppose_tf import workdir as workdir_lib
  path = path or workdir
  if os.path.isdir(path):
    path = os.path.join(path, "report.json")
  if not os.path.exists(path):
    raise ValueError(f"{path} is missing: evaluate {workdir} first (python -m "
                     f"deeppose_tf.evaluate --workdir={workdir}), or name its report with "
                     "--reports")
  return workdir_lib.read_json(path, "the evaluation report")


def _train_minutes(workdir: str) -> Optional[float]:
  from deeppose_tf import curves, workdir as workdir_lib
  path = workdir_lib.curves_json(workdir)
  if not os.path.exists(path):
    return None
  config = workdir_lib.read_config(workdir)
  return curves.last_minutes(path, config["num_stages"]) or None


def cascade_cost(workdir: str) -> dict:
  """{"params", "gflops"}: every stage's parameters; forward GFLOPs of one image through the
  cascade (stage 1 once, each refinement stage on K joint crops)."""
  from deeppose_tf import cascade
  from deeppose_tf.models import builder as model_lib
  casc = cascade.Cascade.load(workdir)
  k = casc.skeleton.num_joints
  flops = [model_lib.forward_flops(net) for net in casc.stages]
  return {"params": int(sum(net.count_params() for net in casc.stages)),
          "gflops": (flops[0] + k * sum(flops[1:])) / 1e9}


def _workdir_size_mb(workdir: str) -> float:
  """The stages' .keras files (what loading the workdir reads), MB."""
  from deeppose_tf import workdir as workdir_lib
  n = workdir_lib.read_config(workdir)["num_stages"]
  return sum(os.path.getsize(workdir_lib.model_path(workdir, s)) for s in range(1, n + 1)
             if os.path.exists(workdir_lib.model_path(workdir, s))) / 1e6


def workdir_timing(workdirs: Sequence[str], min_time: float,
                   threads: Sequence[int] = THREADS) -> List[dict]:
  """Per workdir {"latency_ms_{N}t" for N in threads, "load_s", "first_prediction_s"} (the
  last two of the first count): `bench.model_file` in one child process per thread count."""
  import deeppose_tf
  root = os.path.dirname(os.path.dirname(os.path.abspath(deeppose_tf.__file__)))
  env = dict(os.environ)
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  out = [{} for _ in workdirs]
  for j, n in enumerate(threads):
    run = subprocess.run([sys.executable, "-c", _TIMING_CHILD, str(n), repr(float(min_time)),
                          json.dumps([os.path.abspath(w) for w in workdirs])],
                         capture_output=True, text=True, env=env)
    lines = [l for l in run.stdout.splitlines() if l.startswith("COMPARE_TIMING ")]
    if run.returncode != 0 or not lines:
      tail = " ".join(run.stderr.strip().splitlines()[-3:])[-600:]
      raise RuntimeError(f"timing {list(workdirs)} at {n} thread(s) failed (exit "
                         f"{run.returncode}): {tail}")
    entries = json.loads(lines[-1][len("COMPARE_TIMING "):])
    for i in range(len(workdirs)):
      e = entries[f"models.{i}"]
      out[i][f"latency_ms_{n}t"] = e["latency_ms"]
      if j == 0:
        out[i]["load_s"], out[i]["first_prediction_s"] = e["load_s"], e["first_prediction_s"]
  return out


def peer_timing(fmt: str, path: str, min_time: float,
                threads: Sequence[int] = THREADS) -> dict:
  """{"latency_ms_{N}t" for N in threads, "load_s", "first_prediction_s"} (the last two of
  the first count) of a peer model file: its LiteRT interpreter at N threads, timed by
  bench.model_file (FORMAT:PATH entries) as the bench times it."""
  from deeppose_tf.bench.model_file import model_results
  rows = {r.key: r.value for r in model_results([f"{fmt}:{path}"], min_time, threads)}
  out = {f"latency_ms_{n}t": rows[f"latency_ms_{n}t" if j else "latency_ms"]
         for j, n in enumerate(threads)}
  out["load_s"], out["first_prediction_s"] = rows["load_s"], rows["first_prediction_s"]
  return out


def score_peers(models: Sequence, data_dir: str, split: str, limit: int) -> List[dict]:
  """metrics.summarize of each peer model on the first `limit` records of the split, each
  photo given whole (the whole image as the box); one pass over the images."""
  import numpy as np
  from deeppose_tf import metrics, pipeline
  from deeppose_tf.data import records
  from deeppose_tf.predict import detect
  from deeppose_tf.progress import Progress
  from deeppose_tf.skeleton import LSP14
  records.verify_split(data_dir, split)
  poses = [[] for _ in models]
  true, vis = [], []
  bar = Progress(f"peers on {split}", limit, unit="images")
  for batch in pipeline.eval_dataset(data_dir, split, LSP14, 8, limit):
    for i, (h, w) in enumerate(zip(batch["height"].numpy(), batch["width"].numpy())):
      image = batch["image"][i, :int(h), :int(w)].numpy()
      box = detect.full_box(int(h), int(w))
      for m, out in zip(models, poses):
        out.append(m.predict([image], box)[0, 0])
      bar.update(1)
    true.append(batch["joints"].numpy())
    vis.append(batch["visible"].numpy())
  bar.close()
  true, vis = np.concatenate(true), np.concatenate(vis)
  return [metrics.summarize(np.stack(p), true, vis, LSP14) for p in poses]


def _boxes_note(report: dict) -> str:
  boxes = report.get("boxes", "split")
  if boxes == "split":
    return "the split's person box (report.json boxes 'split')"
  if boxes == "detect":
    name = report.get("detector", {}).get("name", "the person detector")
    return f"the best box of {name} (report.json boxes 'detect')"
  return f"the person boxes of report.json boxes {boxes!r} (pose-guided framing)"


def compare(workdirs: Sequence[str], labels: Sequence[str], output: str,
            min_time: float = 3.0, latency: bool = True, peers: Sequence[str] = (),
            peer_limit: Optional[int] = None, reports: Optional[Sequence[str]] = None
            ) -> dict:
  """Builds the comparison; returns the JSON dict it writes to OUTPUT.json.

  peers: "FORMAT:PATH[:LABEL]" entries (predict/peers.py); peer_limit: score them on the
  first N images of the evaluation only; reports: one report.json (or its folder) per
  workdir, default each workdir's own."""
  from deeppose_tf import report as report_lib
  from deeppose_tf.predict import peers as peers_lib
  from deeppose_tf.skeleton import LSP14, resolve
  if len(workdirs) != len(labels):
    raise ValueError(f"{len(workdirs)} workdirs but {len(labels)} labels")
  if reports and len(reports) != len(workdirs):
    raise ValueError(f"{len(workdirs)} workdirs but {len(reports)} reports: give one "
                     "report per workdir, or none")
  check_distinct(workdirs)
  reports = [_report(w, r) for w, r in zip(workdirs, reports or [None] * len(workdirs))]
  first = reports[0]
  for w, r in zip(workdirs, reports):
    if (r["split"], r["num_images"]) != (first["split"], first["num_images"]):
      raise ValueError(f"{w} was evaluated on {r['num_images']} images of {r['split']!r}, "
                       f"{workdirs[0]} on {first['num_images']} of {first['split']!r}: "
                       "compare on the same split")
    check_same_evaluation(workdirs[0], first, w, r)
  skeleton = resolve(_skeleton_name(workdirs[0]))
  peer_specs = peers_lib.parse_peers(peers)
  peer_models, num_peer = [], 0
  if peer_specs:
    if skeleton.joints != LSP14.joints:
      raise ValueError(f"--peers give LSP14 joints, but {workdirs[0]} predicts skeleton "
                       f"{skeleton.name!r}: compare peers with LSP14 workdirs")
    if not first.get("data_dir"):
      raise ValueError(f"the report of {workdirs[0]} names no data_dir (evaluated before "
                       "reports kept it): evaluate it again to score peers on its data")
    all_labels = list(labels) + [label for _, _, label in peer_specs]
    twice = sorted({l for l in all_labels if all_labels.count(l) > 1})
    if twice:
      raise ValueError(f"labels {twice} are given twice (--labels and --peers' labels): "
                       "give each method its own")
    if peer_limit is not None and peer_limit < 1:
      raise ValueError(f"--peer_limit must be >= 1, got {peer_limit}")
    num_peer = min(first["num_images"], peer_limit or first["num_images"])
    # Opened before the long work: a wrong file is refused at once.
    peer_models = [peers_lib.PeerModel(fmt, path, 1, label) for fmt, path, label in peer_specs]
  timing = [{} for _ in workdirs]
  peer_times = [{} for _ in peer_specs]
  if latency:
    timing = workdir_timing(workdirs, min_time)
    peer_times = [peer_timing(fmt, path, min_time) for fmt, path, _ in peer_specs]
  methods, rows, finals = [], [], []
  for i, (w, label, r) in enumerate(zip(workdirs, labels, reports)):
    cost = cascade_cost(w)
    entry = {"label": label, "workdir": w, **cost, **_timing_fields(timing[i]),
             "size_mb": _workdir_size_mb(w), "train_minutes": _train_minutes(w), "rows": []}
    shown = r.get("phases", []) + r["stages"]
    for j, s in enumerate(shown):
      name = (f"{label} stage {s['stage']}" if "phase" not in s
              else f"{label} stage {s['stage']} {s['phase']} only")
      # One colour per method; its final row solid, the earlier ones dotted.
      style = {"color": f"C{i}", "linestyle": "-" if j == len(shown) - 1 else ":"}
      rows.append({**s, "label": name, "plot_style": style})
      entry["rows"].append({"label": name, "pcp": s["pcp_mean"],
                            **{f"pdj@{k}": v for k, v in s["pdj_mean_at"].items()}})
    finals.append(rows[-1])
    methods.append(entry)
  if peer_models:
    summaries = score_peers(peer_models, first["data_dir"], first["split"], num_peer)
    for j, ((fmt, path, label), model, s) in enumerate(zip(peer_specs, peer_models,
                                                            summaries)):
      style = {"color": f"C{len(workdirs) + j}", "linestyle": "-."}
      rows.append({**s, "stage": 1, "label": label, "plot_style": style})
      finals.append(rows[-1])
      methods.append({"label": label, "peer": {"format": fmt, "path": path,
                                               "variant": model.variant_name},
                      "params": None, "gflops": None, **_timing_fields(peer_times[j]),
                      "size_mb": os.path.getsize(path) / 1e6, "train_minutes": None,
                      "num_images": num_peer,
                      "rows": [{"label": label, "pcp": s["pcp_mean"],
                                **{f"pdj@{k}": v for k, v in s["pdj_mean_at"].items()}}],
                      "summary": {k: s[k] for k in ("pcp_mean", "pcp_per_type",
                                                    "pcp_per_limb", "pdj_mean_at", "pdj")}})
  baseline = first["mean_pose"]
  lines = [f"Split {first['split']!r}, {first['num_images']} images. PCP: strict PCP@0.5, "
           "Table 1 mean. GFLOPs: forward, per image, the whole cascade. Latency: batch 1, "
           "per image, one 320 x 240 image, this machine, every model measured in this run, "
           "at 1 and 2 threads (TensorFlow's for workdirs, LiteRT's for peers). Load: "
           "opening the model. MB: the stages' .keras files, a peer's .tflite."]
  if peer_models:
    limited = (f" They were scored on the first {num_peer} of the {first['num_images']} "
               "images (--peer_limit)." if num_peer < first["num_images"] else "")
    lines.append("")
    lines.append(f"Our models got {_boxes_note(first)}. The peers ("
                 + ", ".join(l for _, _, l in peer_specs) + ") see the whole photo "
                 "letterboxed into their input (aspect kept, centred), without their "
                 f"detector's ROI; their joints mapped onto LSP14 (neck = mean of the "
                 f"shoulders, head top = nose + {peers_lib.HEAD_TOP_FROM_NOSE} x (nose - "
                 f"neck)).{limited}")
  lines += ["", "| method | PCP | PDJ@0.05 | PDJ@0.1 | PDJ@0.2 | params | GFLOPs | "
            + " | ".join(f"ms {n} thread{'s' if n > 1 else ''}" for n in THREADS)
            + " | load s | MB | train min |", "|:---|" + "---:|" * (9 + len(THREADS))]
  for m in methods:
    for j, row in enumerate(m["rows"]):
      last = j == len(m["rows"]) - 1  # the cost columns belong to the whole model
      cells = [row["label"], _f(row["pcp"])] + [_f(row[f"pdj@{r}"]) for r in
                                                ("0.05", "0.1", "0.2")]
      if last:
        cells += [_f(m["params"] and m["params"] / 1e6, 2, " M"), _f(m["gflops"], 2)]
        cells += [_f(m.get(f"latency_ms_{n}t"), 1) for n in THREADS]
        cells += [_f(m.get("load_s"), 2), _f(m["size_mb"], 1), _f(m["train_minutes"], 1)]
      else:
        cells += [""] * (5 + len(THREADS))
      lines.append("| " + " | ".join(cells) + " |")
  lines.append("| mean pose | " + " | ".join(
      [_f(baseline["pcp_mean"])] + [_f(baseline["pdj_mean_at"][r]) for r in
                                    ("0.05", "0.1", "0.2")]) + " |" + " |" * (5 + len(THREADS)))
  lines += ["", "PCP per limb type, each method's final row:", "",
            report_lib.pcp_table_markdown(finals, skeleton, baseline).rstrip("\n"),
            "", "PDJ per joint type (left and right pooled), each method's final row:", ""]
  for radius in (0.1, 0.2):
    lines.append(report_lib.per_type_pdj_markdown(finals, skeleton, radius))
  table = "\n".join(lines).rstrip("\n") + "\n"
  result = {"split": first["split"], "num_images": first["num_images"],
            "data_dir": first.get("data_dir"), "boxes": first.get("boxes", "split"),
            "threads": list(THREADS), "methods": methods,
            "mean_pose": {"pcp": baseline["pcp_mean"], **{f"pdj@{k}": v for k, v in
                                                          baseline["pdj_mean_at"].items()}}}
  if peer_models:
    result["peer_images"] = num_peer
    result["peer_protocol"] = ("the whole photo letterboxed into the peer's input (aspect "
                               "kept, centred), without the peer's detector ROI")
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  atomic.write_text(output + ".md", table)
  atomic.write_text(output + ".json", json.dumps(_finite_or_none(result), indent=1))
  report_lib.plot_pdj_curves(rows, skeleton, output + ".png", baseline)
  print(table)
  return result


def _timing_fields(t: dict) -> dict:
  """The timing keys of a method's JSON entry; latency_ms (read by older tools) is the
  2-thread latency."""
  out = {f"latency_ms_{n}t": t.get(f"latency_ms_{n}t") for n in THREADS}
  out["latency_ms"] = out.get("latency_ms_2t")
  out["load_s"] = t.get("load_s")
  out["first_prediction_s"] = t.get("first_prediction_s")
  return out


def _finite_or_none(o):
  from deeppose_tf.evaluate import _finite_or_none as finite
  return finite(o)


def check_distinct(workdirs: Sequence[str]) -> None:
  """ValueError when two entries of `workdirs` are one folder (by realpath): its rows would
  appear twice, as if two methods scored the same."""
  seen = {}
  for w in workdirs:
    real = os.path.realpath(w)
    if real in seen:
      raise ValueError(f"--workdirs names {real} twice ({seen[real]} and {w}): give each "
                       "workdir once")
    seen[real] = w


def check_same_evaluation(ref: str, ref_report: dict, workdir: str, report: dict) -> None:
  """ValueError naming both workdirs and the field when `report` (workdir's report.json) was
  evaluated on other data ("data_dir", compared by realpath) or with other person boxes
  ("boxes": "split" or "detect") than `ref_report` (ref's): the scores are not comparable.
  A report without "boxes" predates --boxes and used the split's; one without "data_dir"
  cannot be checked for it."""
  for key, default in (("data_dir", None), ("boxes", "split")):
    ours, theirs = report.get(key, default), ref_report.get(key, default)
    if ours is None or theirs is None:
      continue
    same = (os.path.realpath(ours) == os.path.realpath(theirs) if key == "data_dir"
            else ours == theirs)
    if not same:
      raise ValueError(f"{workdir} was evaluated with {key} {ours!r}, {ref} with {key} "
                       f"{theirs!r} (their report.json): compare workdirs evaluated on the "
                       "same data with the same boxes (python -m deeppose_tf.evaluate "
                       "--workdir=... --data_dir=... --boxes=...)")


def _skeleton_name(workdir: str):
  """config.json's skeleton: a preset's name, or the whole skeleton (skeleton.resolve)."""
  from deeppose_tf import workdir as workdir_lib
  return workdir_lib.read_config(workdir)["skeleton"]


def _f(v, digits: int = 3, unit: str = "") -> str:
  return "n/a" if v is None else f"{v:.{digits}f}{unit}"


def define_flags() -> None:
  flags.DEFINE_list("workdirs", None, "Trained and evaluated workdirs to compare, each once, "
                    "evaluated on the same split, data and boxes.")
  flags.DEFINE_list("labels", None, "One label per workdir (default: the folder names).")
  flags.DEFINE_list("reports", None, "One evaluation report per workdir: a report.json or "
                    "the folder holding it (evaluate --report_dir); default: each workdir's "
                    "own report.json.")
  flags.DEFINE_list("peers", [], "Peer pose models to score and time beside the workdirs, "
                    "FORMAT:PATH[:LABEL] each: blazepose (MediaPipe BlazePose "
                    "pose_landmark_lite/full/heavy.tflite) or movenet (MoveNet SinglePose "
                    "Lightning or MultiPose Lightning .tflite); LABEL defaults to the file's "
                    "name. Scored on the first workdir's report's data_dir and split, each "
                    "photo whole (letterboxed, without the peer's detector ROI); their "
                    "joints mapped onto LSP14. The files are yours: the package ships none.")
  flags.DEFINE_integer("peer_limit", None, "Score the peers on the first N images of the "
                       "evaluation only (default: all of them, as our models were).",
                       lower_bound=1)
  flags.DEFINE_string("output", None, "Output path without extension: writes .md, .json "
                      "and .png.")
  flags.DEFINE_float("min_time", 3.0, "Seconds each latency is measured for (at least).")
  flags.DEFINE_boolean("latency", True, "Measure load time and batch-1 latency at 1 and 2 "
                       "threads (needs idle cores; workdirs are timed in child processes).")
  flags.mark_flags_as_required(["workdirs", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  labels = f.labels or [os.path.basename(os.path.normpath(w)) for w in f.workdirs]
  try:
    compare(f.workdirs, labels, f.output, f.min_time, f.latency, peers=f.peers,
            peer_limit=f.peer_limit, reports=f.reports)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


if __name__ == "__main__":
  define_flags()
  from deeppose_tf import cli
  cli.run(main, "compare")
