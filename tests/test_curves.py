"""Validation learning curves: the evaluator's numbers, ValCurve's points and resume, the plot."""

import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeppose_tf import curves, metrics, pipeline
from deeppose_tf.models import builder as model_lib
from deeppose_tf.cascade import Cascade
from deeppose_tf.predict import predict_split
from deeppose_tf.skeleton import LSP14

# 'default' output init: a zero fc8 kernel (mean_pose init) would give every image one pose.
CONFIG = model_lib.ModelConfig(input_size=67, width=0.1, fc_units=16, dropout=0.0,
                               output_init="default")
SIGMA = 1.0


def _net(seed, name):
  keras.utils.set_random_seed(seed)
  return model_lib.build_regressor(CONFIG, name=name)


def _expected(nets, data_dir, limit, refine_step=1.0, reframe=0):
  """The reference: predict_split over the same images, metrics of the last stage."""
  out = predict_split(Cascade(nets, LSP14, SIGMA, CONFIG.input_size, refine_step=refine_step,
                              reframe=reframe),
                      data_dir, "test", limit=limit, batch_size=3)
  s = metrics.summarize(out["poses"][:, -1], out["joints"], out["visible"], LSP14)
  return s["pcp_mean"], [s["pdj_mean_at"][r] for r in metrics.PDJ_REPORT_RADII]


def test_evaluator_scores_the_last_stage_deterministically_with_one_trace(tiny_data):
  net1, net2 = _net(1, "s1"), _net(2, "s2")
  # batch_size 4 over 6 images: a full and a partial batch of different padded sizes.
  evaluate = curves.make_val_evaluator([], LSP14, SIGMA, 67, tiny_data, "test", limit=6,
                                       batch_size=4)
  first, second = evaluate(net1), evaluate(net1)
  assert set(first) == {"pcp", "pdj@0.05", "pdj@0.1", "pdj@0.2", "num_images"}
  assert first == second and first["num_images"] == 6
  for key in curves.METRIC_KEYS:
    assert first[key] is None or 0.0 <= first[key] <= 1.0
  pcp, pdj = _expected([net1], tiny_data, 6)
  assert first["pcp"] == pytest.approx(pcp) and [first[f"pdj@{r}"] for r in
                                                 metrics.PDJ_REPORT_RADII] == pytest.approx(pdj)
  (_, fn), = evaluate.cache.values()
  assert fn.experimental_get_tracing_count() == 1  # weights change, the trace stays
  # A stage 1 trained on the joints' framing is read with one reframing pass.
  framed = curves.make_val_evaluator([], LSP14, SIGMA, 67, tiny_data, "test", limit=6,
                                     batch_size=4, reframe=1)(net1)
  pcp1, pdj1 = _expected([net1], tiny_data, 6, reframe=1)
  assert framed["pcp"] == pytest.approx(pcp1) and [framed[f"pdj@{r}"] for r in
                                                   metrics.PDJ_REPORT_RADII] == pytest.approx(pdj1)
  assert [framed[f"pdj@{r}"] for r in metrics.PDJ_REPORT_RADII] != pytest.approx(pdj)

  # Changed weights are seen without a retrace: an output far outside every box
  # detects nothing.
  fc8 = net1.get_layer("fc8")
  kernel, bias = fc8.get_weights()
  fc8.set_weights([np.zeros_like(kernel), np.full_like(bias, 50.0)])
  far = evaluate(net1)
  assert far["pcp"] == 0.0 and far["pdj@0.2"] == 0.0
  assert len(evaluate.cache) == 1 and evaluate.cache[id(net1)][1] is fn  # reused, not rebuilt
  assert fn.experimental_get_tracing_count() == 1
  fc8.set_weights([kernel, bias])

  # Stage 2 refines stage 1's pose: the score is the cascade's last stage.
  evaluate2 = curves.make_val_evaluator([net1], LSP14, SIGMA, 67, tiny_data, "test", limit=6,
                                        batch_size=4)
  two = evaluate2(net2)
  pcp2, pdj2 = _expected([net1, net2], tiny_data, 6)
  # With a half refinement step the curve scores the half-step cascade, not the full one.
  half = curves.make_val_evaluator([net1], LSP14, SIGMA, 67, tiny_data, "test", limit=6,
                                   batch_size=4, refine_step=0.5)(net2)
  assert half["pcp"] == pytest.approx(_expected([net1, net2], tiny_data, 6, 0.5)[0])
  assert [half[f"pdj@{r}"] for r in metrics.PDJ_REPORT_RADII] == pytest.approx(
      _expected([net1, net2], tiny_data, 6, 0.5)[1])
  # ... and its poses are the half-step ones: the mean of stage 1's and the full stage 2's.
  # A stage 2 that moves every joint by 0.3 joint-box sides makes the difference visible.
  b = next(iter(pipeline.eval_dataset(tiny_data, "test", LSP14, 4, 6)))
  images, boxes = b["image"], tf.cast(b["box"], tf.float32)
  fc8 = net2.get_layer("fc8")
  saved = fc8.get_weights()
  fc8.set_weights([np.zeros_like(saved[0]), np.full_like(saved[1], 0.3)])
  try:
    full_pose = evaluate2.cache[id(net2)][1](images, boxes).numpy()
    half_eval = curves.make_val_evaluator([net1], LSP14, SIGMA, 67, tiny_data, "test",
                                          limit=6, batch_size=4, refine_step=0.5)
    half_eval(net2)
    half_pose = half_eval.cache[id(net2)][1](images, boxes).numpy()
  finally:
    fc8.set_weights(saved)
  np.testing.assert_allclose(half_pose[:, -1], (full_pose[:, 0] + full_pose[:, -1]) / 2,
                             rtol=1e-5, atol=1e-3)
  # every joint moved less, by far more than the tolerance above (tiny random poses: tiny boxes)
  assert np.abs(half_pose[:, -1] - full_pose[:, -1]).min() > 0.1
  assert two["pcp"] == pytest.approx(pcp2)
  assert [two[f"pdj@{r}"] for r in metrics.PDJ_REPORT_RADII] == pytest.approx(pdj2)
  # A stage 2 that moves every joint 50 joint-box sides away detects nothing, while stage 1
  # alone does detect some joints: the score must be stage 2's.
  assert first["pdj@0.2"] > 0.0
  fc8 = net2.get_layer("fc8")
  fc8.set_weights([np.zeros_like(w) for w in fc8.get_weights()[:1]] +
                  [np.full_like(fc8.get_weights()[1], 50.0)])
  assert evaluate2(net2)["pdj@0.2"] == 0.0


def test_evaluator_rejects_a_bad_limit(tiny_data):
  for bad in (0, -3, 2.5, True):
    with pytest.raises(ValueError, match="limit"):
      curves.make_val_evaluator([], LSP14, SIGMA, 67, tiny_data, "test", limit=bad)


class FakeEval:
  """Scores that depend on the call number; checks the json is valid at every call."""

  def __init__(self, json_path):
    self.json_path, self.calls = json_path, 0

  def __call__(self, net):
    assert isinstance(net, keras.Model)
    if os.path.exists(self.json_path):
      with open(self.json_path) as f:
        json.load(f)  # a valid file after every point
    self.calls += 1
    v = min(0.1 * self.calls, 1.0)
    return {"pcp": v, "pdj@0.05": v / 4, "pdj@0.1": v / 2, "pdj@0.2": v,
            "num_images": 5}


def _fit(callback, steps, batch=2):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  model.compile("sgd", "mse")
  x = np.random.rand(steps * batch, 3).astype(np.float32)
  model.fit(x, x[:, :2], batch_size=batch, epochs=1, verbose=0, shuffle=False,
            callbacks=[callback])


def _points(path, stage=1):
  with open(path) as f:
    return json.load(f)[f"stage{stage}"]


def test_valcurve_points_resume_and_tensorboard(tmp_path):
  path, logs = str(tmp_path / "curves.json"), str(tmp_path / "tb")
  fake = FakeEval(path)
  _fit(curves.ValCurve(fake, 2, 1, path, log_dir=logs, batch_size=2), steps=6)
  points = _points(path)
  assert [p["step"] for p in points] == [2, 4, 6] and fake.calls == 3  # no extra at the end
  assert [p["images"] for p in points] == [4, 8, 12]
  assert [p["pcp"] for p in points] == pytest.approx([0.1, 0.2, 0.3])
  assert all(p["train_loss"] is not None and p["eval_seconds"] >= 0 for p in points)

  # A resume at step 6 appends 8, 10 and keeps the earlier points; minutes keep rising.
  _fit(curves.ValCurve(FakeEval(path), 2, 1, path, initial_step=6, batch_size=2), steps=4)
  points = _points(path)
  assert [p["step"] for p in points] == [2, 4, 6, 8, 10]
  assert [p["pcp"] for p in points] == pytest.approx([0.1, 0.2, 0.3, 0.1, 0.2])
  minutes = [p["minutes"] for p in points]
  assert np.all(np.diff(minutes) >= 0)

  # A resume from an older checkpoint (step 4) replaces the points it retrains; 5 steps
  # end off the grid at 9, which gets its point at the end of training.
  _fit(curves.ValCurve(FakeEval(path), 2, 1, path, initial_step=4, batch_size=2), steps=5)
  points = _points(path)
  assert [p["step"] for p in points] == [2, 4, 6, 8, 9]
  assert [p["pcp"] for p in points] == pytest.approx([0.1, 0.2, 0.1, 0.2, 0.3])
  assert np.all(np.diff([p["minutes"] for p in points]) >= 0)
  assert points[2]["minutes"] >= minutes[-1]  # the lost run's wall time stays counted

  # Stage 2 continues the run's minutes axis and keeps stage 1's points; crops per step.
  offset = curves.last_minutes(path, 1)
  assert offset == points[-1]["minutes"] and curves.last_minutes(path, 2) == 0.0
  _fit(curves.ValCurve(FakeEval(path), 3, 2, path, minutes_offset=offset, batch_size=2,
                       images_per_step=28), steps=3)
  with open(path) as f:
    data = json.load(f)
  assert [p["step"] for p in data["stage1"]] == [2, 4, 6, 8, 9]
  assert [(p["step"], p["images"]) for p in data["stage2"]] == [(3, 84)]
  assert data["stage2"][0]["minutes"] >= offset

  events = glob.glob(os.path.join(logs, "events.out.tfevents*"))
  assert events
  seen = {}
  for e in tf.compat.v1.train.summary_iterator(events[0]):
    for v in e.summary.value:
      seen.setdefault(v.tag, []).append(e.step)
  assert seen["val/pcp"] == [2, 4, 6] and seen["val/pdj@0.2"] == [2, 4, 6]
  assert seen["train/loss"] == [2, 4, 6]


def test_valcurve_disabled_and_bad_arguments(tmp_path):
  path = str(tmp_path / "curves.json")
  fake = FakeEval(path)
  _fit(curves.ValCurve(fake, 0, 1, path, batch_size=2), steps=3)
  assert fake.calls == 0 and not os.path.exists(path)
  with pytest.raises(ValueError, match="every_steps"):
    curves.ValCurve(fake, "2", 1, path, batch_size=2)
  with pytest.raises(ValueError, match="every_steps"):
    curves.ValCurve(fake, 2.0, 1, path, batch_size=2)
  with pytest.raises(ValueError, match="batch_size"):
    curves.ValCurve(fake, 2, 1, path)
  with pytest.raises(ValueError, match="minutes_offset"):
    curves.ValCurve(fake, 2, 1, path, batch_size=2, minutes_offset=float("nan"))


def test_plot_curves_writes_a_png_and_skips_an_empty_file(tmp_path):
  path, png = str(tmp_path / "curves.json"), str(tmp_path / "curves.png")
  curves.plot_curves(path, png)  # no file yet: nothing to draw
  assert not os.path.exists(png)
  point = lambda step, minutes, pcp: {"step": step, "images": step * 4, "minutes": minutes,
                                      "stage_minutes": minutes, "eval_seconds": 0.1,
                                      "train_loss": 0.5, "pcp": pcp, "pdj@0.05": 0.0,
                                      "pdj@0.1": 0.1, "pdj@0.2": 0.2}
  with open(path, "w") as f:
    json.dump({"stage1": [point(2, 0.5, 0.1), point(4, 1.0, None)],
               "stage2": [point(3, 1.7, 0.3)]}, f)
  curves.plot_curves(path, png)
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_runs_compare_at_minutes_and_plot(tmp_path):
  point = lambda step, minutes, pcp: {"step": step, "images": step * 4, "minutes": minutes,
                                      "stage_minutes": minutes, "eval_seconds": 0.1,
                                      "train_loss": 0.5, "pcp": pcp, "pdj@0.05": 0.0,
                                      "pdj@0.1": 0.1, "pdj@0.2": 0.2}
  a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
  with open(a, "w") as f:
    json.dump({"stage1": [point(2, 10.0, 0.1), point(4, 20.0, 0.2)],
               "stage2": [point(2, 40.0, 0.3)]}, f)
  with open(b, "w") as f:
    json.dump({"stage1": [point(2, 16.0, 0.05)]}, f)
  got = curves.runs_at_minutes([("a", a), ("b", b)], [5, 15, 30, 60])
  assert got == {"a": [None, 0.1, 0.2, 0.3], "b": [None, None, 0.05, 0.05]}
  png = str(tmp_path / "runs.png")
  curves.plot_runs([("a", a), ("b", b)], png)
  with open(png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match="no validation curve points"):
    curves.plot_runs([("empty", str(tmp_path / "missing.json"))], str(tmp_path / "x.png"))
