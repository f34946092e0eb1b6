"""The evaluation report: the paper's PCP table (Markdown), a console summary, PDJ curves and
stick-figure pictures (PNG).

Inputs are `metrics.summarize` outputs, one per cascade stage, each with an extra
"stage" int key; an optional `baseline` summary (no "stage" key) is the mean-pose row.
Plots use matplotlib's Agg canvas directly (no pyplot, so no global figure state and no
display needed) and are imported lazily so the rest of the package never pays for them.
Every file is written crash-safely through `atomic` (temporary name, then rename).
"""

from __future__ import annotations

import io
import math
import os
from typing import List, Optional, Sequence

import numpy as np

from deeppose_tf import atomic
from deeppose_tf import metrics
from deeppose_tf.skeleton import Skeleton

BASELINE_LABEL = "mean pose"

# Person-left limbs in cool colours, person-right limbs in warm ones, centre limbs in
# yellow/white, so a left/right swap is visible at a glance (as in the paper's Fig. 8).
# Entry i of LEFT and RIGHT colour the two mirror images of one limb, in matching shades.
LEFT_COLORS = ("#1f4e9c", "#3c8ee8", "#00b7c7", "#2e9e44", "#7fd67f", "#6a5acd")
RIGHT_COLORS = ("#b2182b", "#ff4d4d", "#ff8c1a", "#e040a0", "#ff9eb5", "#ff7f50")
CENTER_COLORS = ("#ffe600", "#ffffff", "#c8c8c8")


def _pretty(name: str) -> str:
  """'upper_arm' -> 'Upper arm'."""
  return name.replace("_", " ").capitalize()


def _fmt(value, digits: int = 3) -> str:
  return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _rows(stage_summaries: Sequence[dict], baseline: Optional[dict]):
  """(label, summary) for every table row / curve: the stages, then the baseline."""
  rows = []
  for s in stage_summaries:
    if "stage" not in s:
      raise ValueError(f"stage summaries need a 'stage' key; got keys {sorted(s)}")
    rows.append((s.get("label") or f"stage {s['stage']}", s))
  if baseline is not None:
    rows.append((BASELINE_LABEL, baseline))
  if not rows:
    raise ValueError("nothing to report: no stage summaries and no baseline")
  return rows


def pcp_table_markdown(stage_summaries: Sequence[dict], skeleton: Skeleton,
                       baseline: Optional[dict] = None) -> str:
  """The paper's Table 1 layout: one row per stage (+ the mean-pose row), one column per
  `skeleton.pcp_average` limb type, then Mean. Values are strict PCP@0.5 rates."""
  types = [t for t, _ in skeleton.pcp_average]
  rows = _rows(stage_summaries, baseline)
  lines = ["| Method | " + " | ".join(_pretty(t) for t in types) + " | Mean |",
           "|:---|" + "---:|" * (len(types) + 1)]
  for label, s in rows:
    values = [s["pcp_per_type"].get(t, float("nan")) for t in types] + [s["pcp_mean"]]
    lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in values) + " |")
  n = rows[0][1].get("num_images")
  on = f" on {n} images" if n is not None else ""
  lines += ["", f"Strict PCP@0.5{on}: a limb is correct when both predicted endpoints lie "
            f"within 0.5 x the true limb length of the true endpoints. Mean averages the "
            f"{len(types)} limb types above, as the paper's Table 1 does for LSP (not the "
            f"6-part average with torso and head). '{BASELINE_LABEL}' predicts the mean "
            f"training pose."]
  return "\n".join(lines) + "\n"


def per_type_pdj_markdown(summaries: Sequence[dict], skeleton: Skeleton, radius: float = 0.2
                          ) -> str:
  """PDJ@radius per joint type (left and right pooled), one row per labelled summary, and
  when there are two rows a last row with their difference (second minus first): e.g. a
  Tompson stage against its detector alone, the spatial model's gain per joint type."""
  rows = _rows(summaries, None)
  types = list(dict.fromkeys(skeleton.joint_type(j) for j in skeleton.joints))

  def value(s, t):
    return float(np.interp(radius, s["pdj"]["radii"], s["pdj"]["per_type"][t]))

  lines = [f"| PDJ@{radius} | " + " | ".join(_pretty(t) for t in types) + " | All |",
           "|:---|" + "---:|" * (len(types) + 1)]
  table = [[value(s, t) for t in types] + [metrics.pdj_at(s["pdj"], radius)] for _, s in rows]
  for (label, _), values in zip(rows, table):
    lines.append(f"| {label} | " + " | ".join(_fmt(v) for v in values) + " |")
  if len(rows) == 2:
    lines.append("| difference | " + " | ".join(
        f"{b - a:+.3f}" for a, b in zip(*table)) + " |")
  return "\n".join(lines) + "\n"


def pdj_table_text(stage_summaries: Sequence[dict], baseline: Optional[dict] = None) -> str:
  """A plain fixed-width console table: method, PCP mean, PDJ at the report radii."""
  rows = _rows(stage_summaries, baseline)
  width = max(len("method"), *(len(label) for label, _ in rows))
  header = ["PCP"] + [f"PDJ@{r}" for r in metrics.PDJ_REPORT_RADII]
  lines = ["method".ljust(width) + "".join(h.rjust(10) for h in header)]
  for label, s in rows:
    values = [s["pcp_mean"]] + [s["pdj_mean_at"][r] for r in metrics.PDJ_REPORT_RADII]
    lines.append(label.ljust(width) + "".join(_fmt(v).rjust(10) for v in values))
  excluded = rows[0][1]["pdj"].get("num_images_excluded", 0)
  if excluded:
    lines.append(f"({excluded} images without an annotated torso diameter are left out "
                 f"of PDJ)")
  return "\n".join(lines) + "\n"


def _new_figure(figsize):
  """A figure on the Agg canvas, detached from pyplot (nothing to close, thread-safe)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=figsize, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _save_png(fig, path: str, dpi: int = 100) -> None:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  atomic.write_bytes(path, buf.getvalue())


def plot_pdj_curves(stage_summaries: Sequence[dict], skeleton: Skeleton, path: str,
                    baseline: Optional[dict] = None) -> None:
  """PNG of PDJ curves like the paper's Figs. 3-5: one panel per joint type (left and
  right pooled) plus one for all joints; x = normalized distance r (fraction of the
  torso diameter), y = detection rate; one line per stage, the baseline dashed."""
  rows = _rows(stage_summaries, baseline)
  types = list(dict.fromkeys(skeleton.joint_type(j) for j in skeleton.joints))
  panels = [(_pretty(t), ("per_type", t)) for t in types] + [("All joints", ("mean", None))]
  ncols = math.ceil(math.sqrt(len(panels)))
  nrows = math.ceil(len(panels) / ncols)
  fig = _new_figure((3.2 * ncols, 2.7 * nrows + 0.6))
  axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
  import matplotlib
  stage_colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, max(len(rows), 1)))
  for ax, (title, (key, sub)) in zip(axes, panels):
    for i, (label, s) in enumerate(rows):
      curve = s["pdj"][key] if sub is None else s["pdj"][key][sub]
      if label == BASELINE_LABEL:
        style = dict(color="0.35", linestyle="--", linewidth=1.5)
      else:  # a summary may carry its own matplotlib style (compare.py: one colour a method)
        style = {"color": stage_colors[i], "linewidth": 2.0, **s.get("plot_style", {})}
      ax.plot(s["pdj"]["radii"], curve, label=label, **style)
    ax.set_title(title)
    ax.set_xlim(0.0, 0.5)
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
  for ax in axes[len(panels):]:
    ax.set_axis_off()
  for ax in axes[(nrows - 1) * ncols:]:
    ax.set_xlabel("normalized distance r")
  for ax in axes[::ncols]:
    ax.set_ylabel("detection rate")
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3),
             frameon=False)
  pdj0 = rows[0][1]["pdj"]
  note = f"{pdj0['num_images_used']} images"
  if pdj0["num_images_excluded"]:
    note += f", {pdj0['num_images_excluded']} without a torso diameter left out"
  fig.suptitle(f"PDJ: joint within r x torso diameter of the truth ({note})")
  _save_png(fig, path)


def limb_colors(skeleton: Skeleton) -> List[str]:
  """One colour per `skeleton.edges` edge, the same in every panel: cool for the person's
  left, warm for the right (mirror limbs in matching shades), yellow/white for edges that
  join the two sides or lie on the midline."""
  mirror_ids = {}  # limb up to side, e.g. ("elbow", "wrist") -> palette index
  centre = 0
  colors = []
  for a, b in skeleton.edges:
    sides = {name[:2] for name in (a, b)} & {"l_", "r_"}
    if len(sides) != 1:
      colors.append(CENTER_COLORS[centre % len(CENTER_COLORS)])
      centre += 1
      continue
    key = tuple(sorted((skeleton.joint_type(a), skeleton.joint_type(b))))
    i = mirror_ids.setdefault(key, len(mirror_ids))
    palette = LEFT_COLORS if sides == {"l_"} else RIGHT_COLORS
    colors.append(palette[i % len(palette)])
  return colors


def drawable_edges(pose: np.ndarray, skeleton: Skeleton,
                   visible: Optional[np.ndarray] = None) -> List[int]:
  """Indices of the `skeleton.edges` to draw for one (K, 2) pose in image pixels: both
  endpoints finite and, when `visible` (K,) is given, both annotated."""
  pose = np.asarray(pose, np.float64)
  ok = np.isfinite(pose).all(axis=-1)
  if visible is not None:
    ok &= np.asarray(visible) > 0
  return [e for e, (a, b) in enumerate(skeleton.edge_indices) if ok[a] and ok[b]]


def _draw_pose(ax, image, pose, skeleton, colors, visible=None):
  import matplotlib.patheffects as pe
  h, w = image.shape[:2]
  # Pixel i spans [i, i+1) (records.py), so the extent puts pixel centres at i + 0.5.
  ax.imshow(image, extent=(0, w, h, 0), cmap="gray" if image.ndim == 2 else None,
            interpolation="bilinear")
  outline = [pe.Stroke(linewidth=4.0, foreground="black", alpha=0.6), pe.Normal()]
  for e in drawable_edges(pose, skeleton, visible):
    a, b = skeleton.edge_indices[e]
    ax.plot(pose[[a, b], 0], pose[[a, b], 1], color=colors[e], linewidth=2.4,
            solid_capstyle="round", path_effects=outline)
  # Wild predictions are clipped at the image border instead of shrinking the picture.
  ax.set_xlim(0, w)
  ax.set_ylim(h, 0)
  ax.set_axis_off()


def plot_stick_figures(images: Sequence[np.ndarray], true, visible,
                       preds_per_stage: Sequence[np.ndarray], skeleton: Skeleton,
                       path: str, max_images: int = 8) -> None:
  """PNG grid like the paper's Fig. 6: one row per image (the first `max_images`), columns
  ground truth, stage 1, ..., stage S. Limb colours are fixed per limb (`limb_colors`).

  Args:
    images: N uint8 arrays (H, W, 3) (or (H, W)), sizes may differ.
    true: (N, K, 2) true poses in image pixels, x before y.
    visible: (N, K) in {0, 1}; unannotated joints are not drawn in the ground truth.
    preds_per_stage: S arrays (N, K, 2) of predictions in image pixels.
  """
  true = np.asarray(true, np.float64)
  visible = np.asarray(visible)
  k = skeleton.num_joints
  if true.ndim != 3 or true.shape[1:] != (k, 2):
    raise ValueError(f"true must have shape (N, {k}, 2); got {true.shape}")
  if visible.shape != true.shape[:2]:
    raise ValueError(f"visible must have shape {true.shape[:2]}; got {visible.shape}")
  if len(images) != true.shape[0]:
    raise ValueError(f"got {len(images)} images for {true.shape[0]} poses")
  preds = [np.asarray(p, np.float64) for p in preds_per_stage]
  for s, p in enumerate(preds, start=1):
    if p.shape != true.shape:
      raise ValueError(f"stage {s} predictions have shape {p.shape}; expected {true.shape}")
  if max_images < 1:
    raise ValueError(f"max_images must be >= 1; got {max_images}")
  n = min(len(images), max_images)
  if n == 0:
    raise ValueError("no images to draw")
  colors = limb_colors(skeleton)
  titles = ["ground truth"] + [f"stage {s}" for s in range(1, len(preds) + 1)]
  fig = _new_figure((2.4 * len(titles), 2.4 * n + 0.3))
  axes = fig.subplots(n, len(titles), squeeze=False)
  for i in range(n):
    image = np.asarray(images[i])
    if image.ndim not in (2, 3):
      raise ValueError(f"image {i} must be (H, W, 3) or (H, W); got {image.shape}")
    _draw_pose(axes[i, 0], image, true[i], skeleton, colors, visible=visible[i])
    for s, p in enumerate(preds, start=1):
      _draw_pose(axes[i, s], image, p[i], skeleton, colors)
  for ax, title in zip(axes[0], titles):
    ax.set_title(title)
  _save_png(fig, path)


def draw_poses(image: np.ndarray, poses, skeleton: Skeleton, boxes=None,
               width: Optional[int] = None) -> np.ndarray:
  """Stick figures drawn onto a copy of an image, in the report's limb colours (for the
  predict command's overlays and videos; fast: PIL, no matplotlib figure).

  image (H, W, 3) uint8 RGB; poses (P, K, 2) image pixels (non-finite joints are skipped);
  boxes (P, 4) (cx, cy, w, h) or None: drawn as thin grey rectangles. Returns (H, W, 3) uint8.
  """
  from PIL import Image, ImageDraw
  canvas = Image.fromarray(np.ascontiguousarray(image, np.uint8))
  draw = ImageDraw.Draw(canvas)
  h, w = image.shape[:2]
  line = width or max(2, round(max(h, w) / 160))
  colors = limb_colors(skeleton)
  for p, pose in enumerate(np.asarray(poses, np.float64).reshape(-1, skeleton.num_joints, 2)):
    if boxes is not None:
      cx, cy, bw, bh = np.asarray(boxes, np.float64)[p]
      draw.rectangle([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2],
                     outline=(200, 200, 200), width=max(1, line // 2))
    for e in drawable_edges(pose, skeleton):
      a, b = skeleton.edge_indices[e]
      xy = [tuple(pose[a]), tuple(pose[b])]
      draw.line(xy, fill=(0, 0, 0), width=line + 2)  # outline, as the report's figures
      draw.line(xy, fill=colors[e], width=line)
  return np.asarray(canvas)
