"""PCP and PDJ on tiny hand-computed examples."""

import numpy as np
import pytest

from deeppose_tf import metrics
from deeppose_tf.skeleton import FLIC10, LSP14

# A standing person facing the camera (their right on the image left), image pixels.
# Upper arms and lower arms are 20 px, upper and lower legs 30 px, head 20 px, and the
# torso diameter (l_shoulder (60, 30) to r_hip (30, 70)) is exactly 50 px.
_LSP_POSE = {
    "head_top": (45, 10), "neck": (45, 30),
    "r_shoulder": (30, 30), "r_elbow": (30, 50), "r_wrist": (30, 70),
    "l_shoulder": (60, 30), "l_elbow": (60, 50), "l_wrist": (60, 70),
    "r_hip": (30, 70), "r_knee": (30, 100), "r_ankle": (30, 130),
    "l_hip": (60, 70), "l_knee": (60, 100), "l_ankle": (60, 130),
}


def lsp_pose(n=1):
  pose = np.array([_LSP_POSE[j] for j in LSP14.joints], np.float64)
  return np.repeat(pose[None], n, axis=0)


def flic_pose(n=1):
  pose = np.array([_LSP_POSE[j] for j in FLIC10.joints if j in _LSP_POSE] +
                  [(45, 20)], np.float64)  # the FLIC nose is last
  assert FLIC10.joints[-1] == "nose"
  return np.repeat(pose[None], n, axis=0)


def J(name, skeleton=LSP14):
  return skeleton.index(name)


def test_torso_diameter():
  np.testing.assert_allclose(metrics.torso_diameter(lsp_pose(3), LSP14), [50.0] * 3)


def test_perfect_prediction_scores_one():
  true = lsp_pose(2)
  res = metrics.summarize(true.copy(), true, np.ones((2, 14)), LSP14)
  assert res["pcp_mean"] == 1.0
  assert all(v == 1.0 for v in res["pcp_per_limb"].values())
  assert res["pdj"]["mean"] == [1.0] * len(metrics.PDJ_RADII)  # even at r = 0
  assert res["pdj_mean_at"] == {"0.05": 1.0, "0.1": 1.0, "0.2": 1.0}
  assert res["pcp_counts"]["r_lower_arm"] == 2 and res["num_images"] == 2


@pytest.mark.parametrize("shift, correct", [(9.9, True), (10.0, True), (10.1, False)])
def test_pcp_threshold_is_half_the_true_limb_length(shift, correct):
  true = lsp_pose()
  pred = true.copy()
  pred[0, J("r_wrist"), 0] += shift  # the lower arm is 20 px: threshold 10 px, inclusive
  res = metrics.pcp(pred, true, np.ones((1, 14)), LSP14)
  assert res["per_limb"]["r_lower_arm"] == float(correct)
  assert res["per_limb"]["l_lower_arm"] == 1.0
  assert res["per_type"]["lower_arm"] == (1.0 if correct else 0.5)
  assert res["mean"] == (1.0 if correct else 0.875)  # (1 + 0.5 + 1 + 1) / 4


def test_pcp_is_strict_both_endpoints_must_be_close():
  true = lsp_pose()
  pred = true.copy()
  # The elbow moves 12 px > 0.5 x 20 px: both arm limbs through it break, although each
  # limb's other endpoint is perfect.
  pred[0, J("l_elbow"), 1] += 12
  res = metrics.pcp(pred, true, np.ones((1, 14)), LSP14)
  assert res["per_limb"]["l_upper_arm"] == 0.0 and res["per_limb"]["l_lower_arm"] == 0.0
  # A larger threshold lets both pass.
  res = metrics.pcp(pred, true, np.ones((1, 14)), LSP14, thresh=0.6)
  assert res["per_limb"]["l_upper_arm"] == 1.0 and res["per_limb"]["l_lower_arm"] == 1.0


def test_pcp_mean_averages_the_four_types_not_the_head():
  true = lsp_pose()
  pred = true.copy()
  pred[0, J("r_wrist")] += 100
  pred[0, J("l_wrist")] += 100
  pred[0, J("head_top")] += 100
  res = metrics.pcp(pred, true, np.ones((1, 14)), LSP14)
  assert res["per_type"] == {"upper_arm": 1.0, "lower_arm": 0.0, "upper_leg": 1.0,
                             "lower_leg": 1.0}
  assert res["per_limb"]["head"] == 0.0
  assert res["mean"] == 0.75  # a 6-part or all-limb average would differ


def test_pcp_type_pools_left_and_right_counts():
  true = lsp_pose(2)
  pred = true.copy()
  visible = np.ones((2, 14))
  pred[1, J("r_wrist")] += 50      # r_lower_arm: 1 of 2
  visible[1, J("l_wrist")] = 0     # l_lower_arm: 1 of 1
  res = metrics.pcp(pred, true, visible, LSP14)
  assert res["per_limb"]["r_lower_arm"] == 0.5 and res["per_limb"]["l_lower_arm"] == 1.0
  assert res["counts"]["l_lower_arm"] == 1 and res["counts"]["r_lower_arm"] == 2
  assert res["per_type"]["lower_arm"] == pytest.approx(2 / 3)  # pooled, not (0.5 + 1) / 2


@pytest.mark.parametrize("wild", [1e6, np.nan])
def test_unannotated_joint_is_masked_out(wild):
  true = lsp_pose(2)
  visible = np.ones((2, 14))
  visible[0, J("l_ankle")] = 0
  reference = metrics.summarize(true.copy(), true, visible, LSP14)
  pred = true.copy()
  pred[0, J("l_ankle")] = wild
  true_wild = true.copy()
  true_wild[0, J("l_ankle")] = wild  # unannotated truth may be garbage (FLIC has NaN)
  res = metrics.summarize(pred, true_wild, visible, LSP14)
  assert res == reference
  assert res["pcp_mean"] == 1.0 and res["pcp_counts"]["l_lower_leg"] == 1
  assert res["pdj"]["counts"]["l_ankle"] == 1


def test_nan_prediction_is_a_miss():
  true = lsp_pose()
  pred = true.copy()
  pred[0, J("r_wrist")] = np.nan
  pred[0, J("l_wrist"), 0] = np.inf
  res = metrics.summarize(pred, true, np.ones((1, 14)), LSP14)
  assert res["pcp_per_type"]["lower_arm"] == 0.0
  assert res["pdj"]["per_joint"]["r_wrist"] == [0.0] * len(metrics.PDJ_RADII)
  assert res["pdj"]["per_joint"]["l_wrist"] == [0.0] * len(metrics.PDJ_RADII)
  assert res["pdj"]["mean"][-1] == pytest.approx(12 / 14)


def test_pdj_hand_computed():
  true = lsp_pose()
  pred = true.copy()
  pred[0, J("r_wrist"), 0] += 4.75  # 0.095 x the 50 px torso diameter, between radii
  res = metrics.pdj(pred, true, np.ones((1, 14)), LSP14)
  radii = np.asarray(res["radii"])
  wrist = np.asarray(res["per_joint"]["r_wrist"])
  np.testing.assert_array_equal(wrist, (radii >= 0.095).astype(float))
  np.testing.assert_allclose(res["per_type"]["wrist"], np.where(radii >= 0.095, 1.0, 0.5))
  np.testing.assert_allclose(res["mean"], np.where(radii >= 0.095, 1.0, 13 / 14))
  assert res["per_type"].keys() == {"ankle", "knee", "hip", "wrist", "elbow", "shoulder",
                                    "neck", "head_top"}
  assert metrics.pdj_at(res, 0.05) == pytest.approx(13 / 14)
  assert metrics.pdj_at(res, 0.1) == 1.0


def test_pdj_excludes_images_without_a_torso_diameter():
  true = lsp_pose(3)
  visible = np.ones((3, 14))
  visible[1, J("l_shoulder")] = 0                  # diameter joint not annotated
  true[2, J("l_shoulder")] = true[2, J("r_hip")]   # diameter 0
  pred = true + 1000.0                             # all wrong ...
  pred[0] = true[0]                                # ... except the one used image
  res = metrics.pdj(pred, true, visible, LSP14)
  assert res["num_images_used"] == 1 and res["num_images_excluded"] == 2
  assert res["mean"] == [1.0] * len(metrics.PDJ_RADII)
  assert res["counts"]["l_shoulder"] == 1


def test_pdj_is_monotone_in_r():
  rng = np.random.default_rng(0)
  true = lsp_pose(50) + rng.normal(0, 5, (50, 14, 2))
  pred = true + rng.normal(0, 10, (50, 14, 2))
  visible = rng.random((50, 14)) > 0.2
  res = metrics.pdj(pred, true, visible, LSP14)
  curves = [res["mean"]] + list(res["per_joint"].values()) + list(res["per_type"].values())
  for curve in curves:
    curve = np.asarray(curve)
    curve = curve[np.isfinite(curve)]
    assert (np.diff(curve) >= 0).all()
  assert 0.0 < res["mean"][10] < res["mean"][-1] <= 1.0


def test_pdj_at_interpolates():
  res = {"radii": [0.0, 0.1, 0.2], "mean": [0.0, 0.5, 1.0]}
  assert metrics.pdj_at(res, 0.05) == pytest.approx(0.25)
  assert metrics.pdj_at(res, 0.1) == 0.5
  assert metrics.pdj_at(res, 0.15) == pytest.approx(0.75)
  with pytest.raises(ValueError, match="outside"):
    metrics.pdj_at(res, 0.3)


def test_flic10():
  true = flic_pose(2)
  pred = true.copy()
  visible = np.ones((2, 10))
  res = metrics.summarize(pred, true, visible, FLIC10)
  assert res["pcp_mean"] == 1.0
  assert set(res["pcp_per_type"]) == {"upper_arm", "lower_arm"}
  pred[0, J("l_wrist", FLIC10), 0] += 15  # lower arm 20 px: miss
  res = metrics.summarize(pred, true, visible, FLIC10)
  assert res["pcp_per_type"] == {"upper_arm": 1.0, "lower_arm": 0.75}
  assert res["pcp_mean"] == pytest.approx(0.875)
  assert res["pdj"]["num_images_used"] == 2


def test_value_errors():
  true = lsp_pose(2)
  vis = np.ones((2, 14))
  with pytest.raises(ValueError, match=r"\(2, 13, 2\)"):
    metrics.pcp(true[:, :13], true, vis, LSP14)
  with pytest.raises(ValueError, match=r"\(N, 10, 2\)"):
    metrics.pdj(true, true, vis, FLIC10)
  with pytest.raises(ValueError, match="visible"):
    metrics.pcp(true, true, vis[:, :5], LSP14)
  with pytest.raises(ValueError, match="0 and 1"):
    metrics.pcp(true, true, vis * 2, LSP14)
  bad = true.copy()
  bad[1, J("neck"), 0] = np.nan
  with pytest.raises(ValueError, match="'neck' of image 1"):
    metrics.summarize(true, bad, vis, LSP14)
  with pytest.raises(ValueError, match="thresh"):
    metrics.pcp(true, true, vis, LSP14, thresh=0)
  with pytest.raises(ValueError, match="radii"):
    metrics.pdj(true, true, vis, LSP14, radii=[0.2, 0.1])
  with pytest.raises(ValueError, match=r"\(N, 14, 2\)"):
    metrics.torso_diameter(np.zeros((2, 14, 3)), LSP14)
