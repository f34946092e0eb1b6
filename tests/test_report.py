"""The evaluation report: Markdown/console tables and PNG plots."""

import colorsys
import os

import numpy as np
import pytest
from matplotlib import colors as mcolors
from PIL import Image

from deeppose_tf import metrics, report
from deeppose_tf.skeleton import FLIC10, LSP14


def fake_eval(skeleton, n=6, stages=3, seed=0):
  """True poses, visibility and per-stage predictions that improve with the stage."""
  rng = np.random.default_rng(seed)
  k = skeleton.num_joints
  true = rng.uniform(10, 54, (n, k, 2))
  visible = (rng.random((n, k)) > 0.1).astype(np.float32)
  visible[:, list(skeleton.diameter_indices)] = 1
  preds = [true + rng.normal(0, 12.0 / s, true.shape) for s in range(1, stages + 1)]
  summaries = [dict(metrics.summarize(p, true, visible, skeleton), stage=s)
               for s, p in enumerate(preds, start=1)]
  mean_pose = np.broadcast_to(true.mean(axis=0), true.shape)
  baseline = metrics.summarize(mean_pose, true, visible, skeleton)
  return true, visible, preds, summaries, baseline


def assert_nontrivial_png(path, min_size=(200, 200)):
  with Image.open(path) as im:
    assert im.format == "PNG"
    assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
    pixels = np.asarray(im.convert("RGB"))
  assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # not blank, not one colour
  assert pixels.std() > 10


def test_pcp_table_markdown_lsp():
  _, _, _, summaries, baseline = fake_eval(LSP14)
  md = report.pcp_table_markdown(summaries, LSP14, baseline)
  rows = [line for line in md.splitlines() if line.startswith("|")]
  assert rows[0] == "| Method | Upper arm | Lower arm | Upper leg | Lower leg | Mean |"
  assert len(rows) == 2 + 3 + 1  # header, separator, three stages, the baseline
  assert [r.split("|")[1].strip() for r in rows[2:]] == [
      "stage 1", "stage 2", "stage 3", "mean pose"]
  stage1 = rows[2].split("|")
  assert stage1[-2].strip() == f"{summaries[0]['pcp_mean']:.3f}"
  assert stage1[2].strip() == f"{summaries[0]['pcp_per_type']['upper_arm']:.3f}"
  assert "Strict PCP" in md and "Table 1" in md


def test_pcp_table_markdown_flic_has_only_arms_and_no_baseline_row_when_none():
  _, _, _, summaries, _ = fake_eval(FLIC10, stages=2)
  md = report.pcp_table_markdown(summaries, FLIC10)
  rows = [line for line in md.splitlines() if line.startswith("|")]
  assert rows[0] == "| Method | Upper arm | Lower arm | Mean |"
  assert len(rows) == 2 + 2 and "mean pose |" not in md


def test_tables_reject_summaries_without_stage():
  _, _, _, summaries, _ = fake_eval(LSP14, stages=1)
  del summaries[0]["stage"]
  with pytest.raises(ValueError, match="stage"):
    report.pcp_table_markdown(summaries, LSP14)


def test_pdj_table_text():
  _, _, _, summaries, baseline = fake_eval(LSP14)
  text = report.pdj_table_text(summaries, baseline)
  lines = text.splitlines()
  assert lines[0].split() == ["method", "PCP", "PDJ@0.05", "PDJ@0.1", "PDJ@0.2"]
  assert [l.rsplit(None, 4)[0] for l in lines[1:5]] == [
      "stage 1", "stage 2", "stage 3", "mean pose"]
  assert lines[3].split()[-1] == f"{summaries[2]['pdj_mean_at']['0.2']:.3f}"


@pytest.mark.parametrize("skeleton", [LSP14, FLIC10])
def test_plot_pdj_curves(tmp_path, skeleton):
  _, _, _, summaries, baseline = fake_eval(skeleton)
  path = str(tmp_path / "pdj.png")
  report.plot_pdj_curves(summaries, skeleton, path, baseline)
  assert_nontrivial_png(path, (600, 400))
  assert os.listdir(tmp_path) == ["pdj.png"]  # no temporary files left behind


def test_plot_stick_figures(tmp_path):
  true, visible, preds, _, _ = fake_eval(LSP14, n=5)
  rng = np.random.default_rng(1)
  images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            for h, w in [(64, 64), (48, 80), (80, 40), (64, 64), (32, 32)]]
  preds[0][1, 3] = np.nan  # a NaN prediction is skipped, not drawn
  path = str(tmp_path / "sub" / "sticks.png")
  report.plot_stick_figures(images, true, visible, preds, LSP14, path, max_images=4)
  assert_nontrivial_png(path, (4 * 150, 4 * 150))
  assert os.listdir(tmp_path / "sub") == ["sticks.png"]
  with pytest.raises(ValueError, match="stage 2"):
    report.plot_stick_figures(images, true, visible, [preds[0], preds[1][:3]], LSP14, path)
  with pytest.raises(ValueError, match="images"):
    report.plot_stick_figures(images[:2], true, visible, preds, LSP14, path)


def _hue(color):
  return colorsys.rgb_to_hsv(*mcolors.to_rgb(color))[0] * 360


@pytest.mark.parametrize("skeleton", [LSP14, FLIC10])
def test_limb_colors_left_cool_right_warm(skeleton):
  colors = report.limb_colors(skeleton)
  assert len(colors) == len(skeleton.edges)
  for (a, b), color in zip(skeleton.edges, colors):
    sides = {a[:2], b[:2]} & {"l_", "r_"}
    if sides == {"l_"}:
      assert 100 <= _hue(color) <= 260, (a, b, color)
    elif sides == {"r_"}:
      assert _hue(color) <= 30 or _hue(color) >= 300, (a, b, color)
  # Same-side limbs differ from each other so individual limbs can be told apart.
  left = [c for (a, b), c in zip(skeleton.edges, colors) if "l_" in a + b and "r_" not in a + b]
  assert len(set(left)) == len(left)
  # A limb and its mirror image get matching shades (entry i of each palette).
  color_of = dict(zip(skeleton.edges, colors))
  mirror = {"l_": "r_", "r_": "l_"}
  for (a, b), color in color_of.items():
    if "l_" in a[:2] + b[:2] and "r_" not in a[:2] + b[:2]:
      twin = tuple(mirror.get(n[:2], n[:2]) + n[2:] for n in (a, b))
      twin_color = color_of.get(twin, color_of.get(twin[::-1]))
      assert report.LEFT_COLORS.index(color) == report.RIGHT_COLORS.index(twin_color)


def test_drawable_edges_skip_unannotated_and_nan():
  pose = np.zeros((14, 2))
  visible = np.ones(14)
  visible[LSP14.index("l_wrist")] = 0
  pose[LSP14.index("r_ankle")] = np.nan
  drawn = {LSP14.edges[e] for e in report.drawable_edges(pose, LSP14, visible)}
  assert ("l_elbow", "l_wrist") not in drawn and ("r_ankle", "r_knee") not in drawn
  assert len(drawn) == len(LSP14.edges) - 2
  # Without a mask (a prediction panel) the unannotated wrist is drawn.
  drawn = {LSP14.edges[e] for e in report.drawable_edges(pose, LSP14)}
  assert ("l_elbow", "l_wrist") in drawn
