"""Compares trained workdirs on one split, e.g. DeepPose against Tompson et al.: a table of
PCP, PDJ@0.05/0.1/0.2, parameters, forward FLOPs per image and batch-1 latency per person,
and the PDJ curves of every method in one plot (like the papers' figures).

  python -m deeppose_tf.compare --workdirs=runs/lspet,runs/tompson_lspet \\
      --labels=DeepPose,Tompson --output=docs/compare_lspet

Each workdir, given once, must hold its evaluation (report.json, written by train or
`python -m deeppose_tf.evaluate`) of the same split and image count, on the same data
(--data_dir) with the same person boxes (--boxes). Rows: every stage of each workdir (and,
for Tompson et al., its detector alone), then the first workdir's mean pose. FLOPs per
image count the cascade as it runs: stage 1 on the person crop plus K joint crops per
refinement stage. Latency: `bench.model_file` (load the workdir as the predict command does,
one 320 x 240 image, the whole image as the box, median over at least --min_time seconds),
measured in this run, the first workdir the reference. Training minutes: the cumulative
wall minutes of the workdir's last learning-curve point (curves.json), when it has curves.

Writes OUTPUT.md (the table), OUTPUT.json and OUTPUT.png (PDJ curves), crash-safely.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

from absl import app, flags

from deeppose_tf import atomic


def _report(workdir: str) -> dict:
  from deeppose_tf import workdir as workdir_lib
  path = os.path.join(workdir, "report.json")
  if not os.path.exists(path):
    raise ValueError(f"{workdir} has no report.json: evaluate it first (python -m "
                     f"deeppose_tf.evaluate --workdir={workdir})")
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
  from deeppose_tf import cascade, model as model_lib
  casc = cascade.Cascade.load(workdir)
  k = casc.skeleton.num_joints
  flops = [model_lib.forward_flops(net) for net in casc.stages]
  return {"params": int(sum(net.count_params() for net in casc.stages)),
          "gflops": (flops[0] + k * sum(flops[1:])) / 1e9}


def compare(workdirs: Sequence[str], labels: Sequence[str], output: str,
            min_time: float = 3.0, latency: bool = True) -> dict:
  """Builds the comparison; returns the JSON dict it writes to OUTPUT.json."""
  from deeppose_tf import report as report_lib
  from deeppose_tf.skeleton import resolve
  if len(workdirs) != len(labels):
    raise ValueError(f"{len(workdirs)} workdirs but {len(labels)} labels")
  check_distinct(workdirs)
  reports = [_report(w) for w in workdirs]
  first = reports[0]
  for w, r in zip(workdirs, reports):
    if (r["split"], r["num_images"]) != (first["split"], first["num_images"]):
      raise ValueError(f"{w} was evaluated on {r['num_images']} images of {r['split']!r}, "
                       f"{workdirs[0]} on {first['num_images']} of {first['split']!r}: "
                       "compare on the same split")
    check_same_evaluation(workdirs[0], first, w, r)
  skeleton = resolve(_skeleton_name(workdirs[0]))
  ms: List[Optional[float]] = [None] * len(workdirs)
  if latency:
    from deeppose_tf.bench import model_file
    for r in model_file.model_results(list(workdirs), min_time):
      if r.key == "latency_ms":
        ms[int(r.entry.split(".")[1])] = r.value
  methods, rows = [], []
  for i, (w, label, r) in enumerate(zip(workdirs, labels, reports)):
    cost = cascade_cost(w)
    entry = {"label": label, "workdir": w, **cost, "latency_ms": ms[i],
             "train_minutes": _train_minutes(w), "rows": []}
    shown = r.get("phases", []) + r["stages"]
    for j, s in enumerate(shown):
      name = (f"{label} stage {s['stage']}" if "phase" not in s
              else f"{label} stage {s['stage']} {s['phase']} only")
      # One colour per method; its final row solid, the earlier ones dotted.
      style = {"color": f"C{i}", "linestyle": "-" if j == len(shown) - 1 else ":"}
      rows.append({**s, "label": name, "plot_style": style})
      entry["rows"].append({"label": name, "pcp": s["pcp_mean"],
                            **{f"pdj@{k}": v for k, v in s["pdj_mean_at"].items()}})
    methods.append(entry)
  baseline = first["mean_pose"]
  lines = [f"Split {first['split']!r}, {first['num_images']} images. PCP: strict PCP@0.5, "
           "Table 1 mean. GFLOPs: forward, per image, the whole cascade. Latency: batch 1, "
           "per person, this machine, measured in one run.", "",
           "| method | PCP | PDJ@0.05 | PDJ@0.1 | PDJ@0.2 | params | GFLOPs | latency ms "
           "| train min |", "|:---|" + "---:|" * 8]
  for m in methods:
    for j, row in enumerate(m["rows"]):
      last = j == len(m["rows"]) - 1  # the cost columns belong to the whole model
      cells = [row["label"], _f(row["pcp"])] + [_f(row[f"pdj@{r}"]) for r in
                                                ("0.05", "0.1", "0.2")]
      cells += ([f"{m['params'] / 1e6:.2f} M", f"{m['gflops']:.2f}", _f(m["latency_ms"], 1),
                 _f(m["train_minutes"], 1)] if last else [""] * 4)
      lines.append("| " + " | ".join(cells) + " |")
  lines.append("| mean pose | " + " | ".join(
      [_f(baseline["pcp_mean"])] + [_f(baseline["pdj_mean_at"][r]) for r in
                                    ("0.05", "0.1", "0.2")]) + " | | | | |")
  table = "\n".join(lines) + "\n"
  result = {"split": first["split"], "num_images": first["num_images"], "methods": methods,
            "mean_pose": {"pcp": baseline["pcp_mean"], **{f"pdj@{k}": v for k, v in
                                                          baseline["pdj_mean_at"].items()}}}
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  atomic.write_text(output + ".md", table)
  atomic.write_text(output + ".json", json.dumps(result, indent=1))
  report_lib.plot_pdj_curves(rows, skeleton, output + ".png", baseline)
  print(table)
  return result


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


def _f(v, digits: int = 3) -> str:
  return "n/a" if v is None else f"{v:.{digits}f}"


def define_flags() -> None:
  flags.DEFINE_list("workdirs", None, "Trained and evaluated workdirs to compare, each once "
                    "(the first is the latency reference), evaluated on the same split, data "
                    "and boxes.")
  flags.DEFINE_list("labels", None, "One label per workdir (default: the folder names).")
  flags.DEFINE_string("output", None, "Output path without extension: writes .md, .json "
                      "and .png.")
  flags.DEFINE_float("min_time", 3.0, "Seconds each latency is measured for (at least).")
  flags.DEFINE_boolean("latency", True, "Measure batch-1 latency (needs idle cores).")
  flags.mark_flags_as_required(["workdirs", "output"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  labels = f.labels or [os.path.basename(os.path.normpath(w)) for w in f.workdirs]
  try:
    compare(f.workdirs, labels, f.output, f.min_time, f.latency)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


if __name__ == "__main__":
  define_flags()
  from deeppose_tf import cli
  cli.run(main, "compare")
