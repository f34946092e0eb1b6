"""Tompson et al. (--method=tompson): Gaussian targets, peak decoding, the spatial model and
its histogram prior, the training phases, fitting distinct poses, and export parity."""

import dataclasses
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeppose_tf import cascade, geometry, losses, pipeline, trainer
from deeppose_tf.methods import tompson
from deeppose_tf.models import layers
from deeppose_tf.models.heads import tompson as tompson_head
from deeppose_tf.models import builder as model_lib
from deeppose_tf import workdir as workdir_lib
from deeppose_tf.skeleton import LSP14

from helpers import REPO, encode
from helpers import subprocess_env as _env

SIZE = 64  # heatmaps 16 x 16
CONFIG = model_lib.ModelConfig(input_size=SIZE, width=0.25, backbone="multires",
                               head="tompson", heatmap_stride=4, head_channels=8)


def _argmax_cells(maps):
  """(B, H, W, K) -> (B, K, 2) (col, row) of each map's maximum."""
  b, h, w, k = maps.shape
  flat = np.transpose(maps, (0, 3, 1, 2)).reshape(b, k, h * w).argmax(-1)
  return np.stack([flat % w, flat // w], axis=-1)


def _in_cells(points, h, w):
  """Box-normalized (x, y) -> continuous heatmap coordinates, cell (c, r) spanning
  [c, c + 1) x [r, r + 1): cell centres sit at c + 0.5."""
  return (np.asarray(points) + 0.5) * [w, h]


@pytest.mark.parametrize("h, w", [(24, 24), (16, 20)])
def test_gaussian_target_argmax_is_the_joint_also_after_a_flip(h, w):
  rng = np.random.RandomState(0)
  img_w = 80.0
  boxes = np.tile([[40.0, 50.0, 80.0, 100.0]], (64, 1)).astype(np.float32)  # the image
  joints = rng.uniform([2, 2], [78, 98], (64, 14, 2)).astype(np.float32)  # image pixels
  visible = np.ones((64, 14), np.float32)
  fj, _ = geometry.flip_joints(joints, visible, img_w, LSP14.flip_permutation)
  for pose in (joints, fj.numpy()):
    norm = geometry.normalize(pose, boxes).numpy()
    maps = losses.gaussian_heatmaps(norm, h, w, 1.5).numpy()  # (B, H, W, K)
    assert maps.shape == (64, h, w, 14)
    centre = _argmax_cells(maps) + 0.5
    err = np.abs(centre - _in_cells(norm, h, w))
    assert err.max() <= 0.5 + 1e-5, err.max()
    np.testing.assert_allclose(maps.max(axis=(1, 2)), np.exp(
        -np.sum(np.square(err), -1) / (2 * 1.5 ** 2)), rtol=1e-5)
  # The flipped pose's targets are the mirrored targets with left and right swapped.
  a = losses.gaussian_heatmaps(geometry.normalize(joints, boxes), h, w, 1.5).numpy()
  b = losses.gaussian_heatmaps(geometry.normalize(fj, boxes), h, w, 1.5).numpy()
  np.testing.assert_allclose(b, a[:, :, ::-1][..., LSP14.flip_permutation], atol=1e-5)


@pytest.mark.parametrize("log_space", [False, True])
def test_peak_decode_recovers_sub_cell_positions(log_space):
  rng = np.random.RandomState(1)
  points = rng.uniform(-0.45, 0.45, (8, 14, 2)).astype(np.float32)
  maps = losses.gaussian_heatmaps(points, 24, 24, 1.0)
  if log_space:
    maps = tf.math.log(maps + 1e-3)
  got = layers.PeakDecode(log_space=log_space)(maps).numpy()
  err_cells = np.abs(got - points) * 24
  assert err_cells.max() < 0.25, err_cells.max()  # argmax alone errs up to 0.5 cell
  # A flat (all non-positive) linear map answers its argmax cell, not NaN.
  flat = layers.PeakDecode()(-tf.ones((1, 24, 24, 14))).numpy()
  assert np.isfinite(flat).all()


@pytest.mark.parametrize("rate", [1, 2])
def test_spatial_model_with_a_hand_set_prior_suppresses_a_planted_false_peak(rate):
  """3 joints in a chain 0 - 1 - 2. The prior (from consistent training poses) says joint 0
  lies 4 cells above joint 1 and joint 2 4 cells below. Joint 1's detector map has its true
  peak (0.8) where joints 0 and 2 agree and a STRONGER false peak (1.0) elsewhere: the
  detector alone picks the false one, the spatial model the true one."""
  h = w = 24
  pairs = tompson_head.graph_pairs(3, [[0, 1], [1, 2]])
  poses = np.tile(np.array([[[0.0, -4.0], [0.0, 0.0], [0.0, 4.0]]], np.float32) / h, (50, 1, 1))
  prior = tompson.pairwise_prior(poses, np.ones((50, 3), bool), pairs, h, 13, rate,
                                 blur=0.5)
  layer = tompson_head.PairwiseSpatialModel(pairs, 13, rate)
  maps = np.zeros((1, h, w, 3), np.float32)
  true, false = (12, 10), (5, 4)  # (row, col) of joint 1's peaks
  maps[0, true[0] - 4, true[1], 0] = 1.0
  maps[0, true[0], true[1], 1] = 0.8
  maps[0, false[0], false[1], 1] = 1.0
  maps[0, true[0] + 4, true[1], 2] = 1.0
  layer.build(maps.shape)
  layer.set_prior(prior, bias=0.01)
  belief = layer(maps).numpy()
  assert tuple(np.unravel_index(maps[0, :, :, 1].argmax(), (h, w))) == false
  assert tuple(np.unravel_index(belief[0, :, :, 1].argmax(), (h, w))) == true
  # Joints 0 and 2 stay where their own detector put them.
  assert tuple(np.unravel_index(belief[0, :, :, 0].argmax(), (h, w))) == (8, 10)
  assert tuple(np.unravel_index(belief[0, :, :, 2].argmax(), (h, w))) == (16, 10)
  # With the partners' kernels zeroed (self terms alone) the false peak wins: the pairwise
  # prior did the work.
  alone = tompson_head.PairwiseSpatialModel(pairs, 13, rate)
  alone.build(maps.shape)
  alone.set_prior(np.where(np.arange(len(pairs))[:, None, None] < 3, prior, 0.0))
  assert tuple(np.unravel_index(alone(maps).numpy()[0, :, :, 1].argmax(), (h, w))) == false


def test_pairwise_prior_is_the_displacement_histogram_and_skips_unannotated():
  pairs = ((0, 0), (1, 1), (0, 1), (1, 0))
  poses = np.array([[[0.1, 0.0], [0.0, 0.0]]] * 3 + [[[-0.3, 0.2], [0.0, 0.0]]], np.float32)
  visible = np.array([[1, 1]] * 3 + [[1, 0]], bool)  # the odd pose lacks joint 1
  k = tompson.pairwise_prior(poses, visible, pairs, 20, 9, blur=0)
  np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, rtol=1e-6)
  assert k[0, 4, 4] == 1.0  # self pairs: a delta at the centre
  # Pair (A=0, v=1): A - v = +2 cells in x -> kernel cell (row 4, col 4 - 2).
  assert k[2, 4, 2] == 1.0 and k[3, 4, 6] == 1.0
  # Dilated (rate 2): the same +2 cells is one tap.
  k = tompson.pairwise_prior(poses, visible, pairs, 20, 9, rate=2, blur=0)
  assert k[2, 4, 3] == 1.0 and k[3, 4, 5] == 1.0
  # Every kernel stays on the gradient's fast path and reaches half the box.
  for size in (8, 16, 24, 32, 64):
    kernel, rate = tompson_head.kernel_for(size)
    assert kernel <= tompson_head.MAX_KERNEL and kernel % 2 == 1
    assert (kernel // 2) * rate >= size // 2, (size, kernel, rate)


def test_phase_steps_and_graph():
  assert tompson.phase_steps(1000) == (700, 100, 200)
  assert tompson.phase_steps(3) == (2, 1, 1) or min(tompson.phase_steps(3)) >= 1
  assert tompson.phase_steps(10, [5, 2, 3]) == (5, 2, 3)
  with pytest.raises(ValueError, match="3 positive integers"):
    tompson.phase_steps(10, [5, 0, 3])
  pairs = tompson_head.graph_pairs(LSP14.num_joints, LSP14.edge_indices)
  assert len(pairs) == 14 + 2 * len(LSP14.edges)
  with pytest.raises(ValueError, match="odd"):
    tompson_head.PairwiseSpatialModel(pairs, 4)
  with pytest.raises(ValueError, match="heatmap_stride=4"):
    dataclasses.replace(CONFIG, heatmap_stride=8)
  with pytest.raises(ValueError, match="edges"):
    model_lib.build_regressor(CONFIG)


def test_network_shapes_flops_and_phase_models():
  net = model_lib.build_regressor(CONFIG, edges=LSP14.edge_indices)
  assert net.output.shape[1:] == (14, 2)
  assert net.get_layer("heatmaps").output.shape[1:] == (SIZE // 4, SIZE // 4, 14)
  spatial = net.get_layer("spatial")
  assert (spatial.kernel_size, spatial.rate) == (9, 2) == tompson_head.kernel_for(16)
  flops = model_lib.forward_flops(net)
  assert flops > 2 * 16 * 16 * len(spatial.pairs) * 9 * 9
  det = tompson.phase_model(net, tompson.PHASES[0])
  assert list(det.output) == ["heatmaps"]
  # phase_model sets the shared layers' trainable flags: each count right after its call.
  sp = tompson.phase_model(net, tompson.PHASES[1])
  assert {v.path for v in sp.trainable_variables} == {v.path for v in spatial.trainable_variables}
  frozen = len(sp.trainable_variables)
  joint = tompson.phase_model(net, tompson.PHASES[2])
  assert len(joint.trainable_variables) > frozen
  # bfloat16 keeps the spatial model and the decoding in float32.
  b = model_lib.with_precision(net, "bfloat16")
  assert b.get_layer("spatial").compute_dtype == "float32"
  assert b.get_layer("bank1_c1_conv").compute_dtype == "bfloat16"


@pytest.mark.slow  # 42 s of fitting; CI runs it in `pytest -m slow`
def test_tompson_network_fits_distinct_poses_not_their_mean():
  """The collapse test for the detector + spatial model: four images whose content fixes
  four very different poses; after the detector and joint phases each image's decoded
  pose is far closer to its own pose than the mean pose is."""
  keras.utils.set_random_seed(0)
  rng = np.random.RandomState(0)
  k = LSP14.num_joints
  poses = rng.uniform(-0.4, 0.4, (4, k, 2)).astype(np.float32)
  images = np.zeros((4, SIZE, SIZE, 3), np.float32)
  for n in range(4):
    y, x = 6 + 14 * n, 54 - 12 * n
    images[n, y:y + 8, x - 8:x, n % 3] = 255.0
  targets = np.concatenate([poses, np.ones((4, k, 1), np.float32)], axis=-1)
  config = dataclasses.replace(CONFIG, width=0.5, head_channels=16)
  net = model_lib.build_regressor(config, edges=LSP14.edge_indices)
  layer = net.get_layer("spatial")
  layer.set_prior(tompson.pairwise_prior(poses, np.ones((4, k), bool), layer.pairs, 16,
                                         layer.kernel_size, layer.rate))
  for phase, epochs in zip(tompson.PHASES, (150, 30, 40)):
    model = tompson.phase_model(net, phase)
    fit = trainer.FitConfig(steps=epochs, learning_rate=3e-3, heatmap_loss="mse",
                            heatmap_loss_weight=1.0, heatmap_sigma=1.0)
    model.compile(**fit.compile_args(model))
    model.fit(images, {o: targets for o in phase.outputs}, batch_size=4, epochs=epochs,
              verbose=0)
  err_mean_pose = np.linalg.norm(poses.mean(0)[None] - poses, axis=-1).mean(axis=-1)

  def err(m, training):
    return np.linalg.norm(m(images, training=training).numpy() - poses, axis=-1).mean(-1)

  # Batch statistics (the fitted function) and inference mode (BatchNorm moving averages
  # lag on a 4-image set), for the detector alone and with the spatial model.
  for m in (tompson_head.detector_only(net), net):
    assert np.all(err(m, True) < 0.15 * err_mean_pose), (m.name, err(m, True), err_mean_pose)
    assert np.all(err(m, False) < 0.6 * err_mean_pose), (m.name, err(m, False))


@pytest.fixture(scope="module")
def workdir(tiny_data, tmp_path_factory):
  """An untrained tompson stage (random weights, the tiny split's histogram prior)."""
  d = str(tmp_path_factory.mktemp("tompson_workdir"))
  keras.utils.set_random_seed(0)
  net = model_lib.build_regressor(CONFIG, name="stage1", edges=LSP14.edge_indices)
  a = pipeline.annotations(tiny_data, "train", LSP14)
  layer = net.get_layer("spatial")
  layer.set_prior(tompson.pairwise_prior(geometry.normalize(a["joints"], a["box"]).numpy(),
                                         a["visible"], layer.pairs, 16, layer.kernel_size,
                                         layer.rate))
  os.makedirs(workdir_lib.stage_dir(d, 1))
  workdir_lib.save_model(net, workdir_lib.model_path(d, 1))
  workdir_lib.write_config(d, {"skeleton": "lsp14", "input_size": SIZE, "sigma": 2.0,
                               "num_stages": 1, "data_dir": tiny_data, "train_split": "train",
                               "model": dataclasses.asdict(CONFIG)})
  workdir_lib.write_mean_pose(d, pipeline.mean_pose(tiny_data, "train", LSP14))
  return d


@pytest.mark.slow  # 24 s: two exports; CI runs it in `pytest -m slow`
def test_saved_model_and_builtin_tflite_agree(workdir, tmp_path):
  """Export parity: the SavedModel (loaded in a fresh process by the export CLI's own
  check) and the builtins-only TFLite file answer the same joints. Argmax decoding is
  discontinuous: a near-tie between two cells may resolve differently under other float
  rounding, so the bar is 0.5 px on at least 95% of the joints and finite everywhere."""
  from ai_edge_litert.interpreter import Interpreter
  from deeppose_tf.tflite_cascade import fit_to_canvas
  saved = str(tmp_path / "serving")
  lite = str(tmp_path / "t.tflite")
  for args in ([f"--export_dir={saved}"], [f"--export_dir={lite}", "--format=tflite"]):
    run = subprocess.run([sys.executable, "-m", "deeppose_tf.export", f"--workdir={workdir}",
                          *args], capture_output=True, text=True, env=_env(), cwd=REPO,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
  loaded = tf.saved_model.load(os.path.join(saved, "1"))
  interpreter = Interpreter(model_path=lite, num_threads=1)
  ops = {op["op_name"] for op in interpreter._get_ops_details()}
  assert not [op for op in ops if "FLEX" in op.upper()], ops
  assert {"DEPTHWISE_CONV_2D", "ARG_MAX", "CONV_2D"} <= ops, ops
  runner = interpreter.get_signature_runner("serving_default")
  rng = np.random.RandomState(3)
  diffs = []
  for _ in range(4):
    h, w = rng.randint(40, 120, 2)
    canvas, _ = fit_to_canvas(rng.randint(0, 256, (h, w, 3)).astype(np.uint8), 2 * SIZE,
                              2 * SIZE)
    box = np.array([[w / 2, h / 2, w, h]], np.float32)
    out = runner(image=canvas[None].astype(np.float32), box=box)["joints"]
    ref = loaded.signatures["predict_images"](
        images=tf.constant(canvas[None].astype(np.uint8)), boxes=box)["joints"].numpy()
    assert np.isfinite(out).all()
    diffs.append(np.abs(out - ref).max(axis=-1).ravel())
  diffs = np.concatenate(diffs)
  assert np.mean(diffs <= 0.5) >= 0.95, np.sort(diffs)[-5:]
  # The SavedModel answers JPEG bytes with what the Keras cascade predicts on them.
  casc = cascade.Cascade.load(workdir)
  assert tompson_head.is_tompson(casc.stages[0])
  jpeg = encode(rng.randint(0, 256, (70, 50, 3)).astype(np.uint8), "JPEG")
  got = loaded.signatures["serving_default"](image_bytes=tf.constant([jpeg]))["joints"]
  image = pipeline.decode_image(jpeg)
  box = tf.constant(geometry.full_image_box(70, 50), tf.float32)[None]
  np.testing.assert_allclose(got.numpy()[0], casc.predict(image[None], box).numpy()[0, -1],
                             atol=1e-3)


def test_evaluate_scores_the_detector_alone_beside_the_stage(workdir, tiny_data, tmp_path):
  from deeppose_tf import evaluate
  out = str(tmp_path / "report")
  report = evaluate.run(workdir, split="test", data_dir=tiny_data, limit=8, report_dir=out)
  assert [s["stage"] for s in report["stages"]] == [1]
  (phase,) = report["phases"]
  assert phase["phase"] == "detector" and phase["num_images"] == report["num_images"] == 8
  assert set(phase["pdj_mean_at"]) == set(report["stages"][0]["pdj_mean_at"])
  with open(os.path.join(out, "report.md")) as f:
    table = f.read()
  assert "| stage 1 detector only |" in table and "| stage 1 |" in table
  # The spatial model's gain per joint type, at PDJ@0.1 and 0.2.
  assert table.count("| difference |") == 2 and "| PDJ@0.2 | Ankle |" in table


def _sha(path):
  import hashlib
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.slow
def test_train_cli_phases_resume_and_method_flags(tmp_path):
  """--method=tompson through the CLI: three phases, their files, a rerun that skips the
  finished detector phase (its file untouched) and retrains the rest, and flags that
  contradict the method refused."""
  w = str(tmp_path / "w")
  base = [sys.executable, "-m", "deeppose_tf.train", f"--workdir={w}", "--dataset=synthetic",
          "--num_train=24", "--num_test=8", "--method=tompson", "--num_stages=1",
          "--steps_per_stage=6", "--phase_steps=2,2,2", "--batch_size=4", "--input_size=64",
          "--width=0.25", "--head_channels=8", "--stats_images=8", "--noexport",
          "--checkpoint_every=2"]
  run = subprocess.run(base, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  sdir = os.path.join(w, "stage1")
  assert {"detector.keras", "spatial.keras", "model.keras", "ckpt_detector", "ckpt_spatial",
          "ckpt_joint"} <= set(os.listdir(sdir))
  assert "stage 1 detector only" in run.stdout
  detector = _sha(os.path.join(sdir, "detector.keras"))
  import shutil
  assert "displacement.json" not in os.listdir(sdir)  # the last stage's are skipped
  for name in ("spatial.keras", "model.keras"):
    os.remove(os.path.join(sdir, name))
  for name in ("ckpt_spatial", "ckpt_joint"):
    shutil.rmtree(os.path.join(sdir, name))
  run = subprocess.run(base, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "phase detector is already trained" in run.stderr
  assert "phase spatial: 2 steps" in run.stderr
  assert _sha(os.path.join(sdir, "detector.keras")) == detector
  assert os.path.exists(os.path.join(sdir, "model.keras"))
  for extra, message in ((["--backbone=resnet"], "--method=tompson uses --backbone=multires"),
                         (["--phase_steps=1,2"], "--phase_steps must be 3 positive")):
    run = subprocess.run(base + extra + [f"--workdir={tmp_path / 'other'}"],
                         capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert run.returncode != 0 and message in run.stderr, run.stderr[-2000:]


@pytest.mark.slow  # 10-22 s: the default run stays under 10 minutes
def test_compare_tables_and_plots_workdirs(workdir, tiny_data, tmp_path):
  """compare: one row per stage and phase of each workdir, their cost, and the PDJ curves of
  all of them in one PNG; workdirs evaluated on different splits are refused. (Latency, two
  timing processes: tests/test_peers.py, in the slow suite.)"""
  import json
  import shutil
  from deeppose_tf import compare, evaluate
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  shutil.copytree(workdir, a)
  shutil.copytree(workdir, b)
  for w in (a, b):
    evaluate.run(w, split="test", data_dir=tiny_data, limit=8)
  out = str(tmp_path / "cmp" / "both")
  result = compare.compare([a, b], ["A", "B"], out, latency=False)
  with open(out + ".md") as f:
    table = f.read()
  for row in ("| A stage 1 detector only |", "| A stage 1 |", "| B stage 1 |", "| mean pose |"):
    assert row in table, table
  net = cascade.Cascade.load(a).stages[0]
  (ma, mb) = result["methods"]
  assert ma["params"] == net.count_params() and ma["gflops"] == pytest.approx(
      model_lib.forward_flops(net) / 1e9)
  assert ma["latency_ms"] is None and "ms 1 thread" in table
  assert os.path.getsize(out + ".png") > 1000
  with open(out + ".json") as f:
    assert json.load(f)["num_images"] == 8
  evaluate.run(b, split="test", data_dir=tiny_data, limit=4)
  with pytest.raises(ValueError, match="compare on the same split"):
    compare.compare([a, b], ["A", "B"], out, latency=False)


@pytest.mark.slow
def test_train_cli_hybrid_tompson_stage1_deeppose_stage2(tmp_path):
  """--method=hybrid: a tompson stage 1 (phases and all) and a DeepPose refinement stage 2
  (--backbone/--head) on its displacement statistics, evaluated and exported together."""
  w = str(tmp_path / "w")
  run = subprocess.run(
      [sys.executable, "-m", "deeppose_tf.train", f"--workdir={w}", "--dataset=synthetic",
       "--num_train=24", "--num_test=8", "--method=hybrid", "--num_stages=2",
       "--backbone=resnet", "--head=integral", "--steps_per_stage=6,3", "--batch_size=4",
       "--input_size=64", "--width=0.25", "--head_channels=8", "--stats_images=8",
       "--draws=2", "--checkpoint_every=3"],
      capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  casc = cascade.Cascade.load(w)
  assert tompson_head.is_tompson(casc.stages[0]) and not tompson_head.is_tompson(casc.stages[1])
  assert casc.stages[1].get_layer("res1_1_a_conv") is not None
  config = workdir_lib.read_config(w)
  assert config["stage1_model"]["head"] == "tompson" and config["model"]["head"] == "integral"
  assert "stage 1 detector only" in run.stdout and "stage 2" in run.stdout
  assert os.path.isdir(os.path.join(w, "export", "1"))


@pytest.fixture(scope="module")
def evaluated(workdir, tiny_data, tmp_path_factory):
  """A copy of `workdir` evaluated on 2 test images of tiny_data with the split's boxes."""
  import shutil
  from deeppose_tf import evaluate
  d = str(tmp_path_factory.mktemp("evaluated") / "a")
  shutil.copytree(workdir, d)
  evaluate.run(d, split="test", data_dir=tiny_data, limit=2, num_examples=0)
  return d


def test_compare_refuses_other_data_and_a_workdir_given_twice(evaluated, tiny_data, tmp_path):
  """compare combines rows only of evaluations on the same data (report.json's data_dir,
  by realpath), each workdir once: a second name (a symlink, a trailing slash) of one
  workdir would repeat its rows as another method's."""
  import shutil
  from deeppose_tf import compare, evaluate
  a, b = evaluated, str(tmp_path / "b")
  shutil.copytree(a, b)
  other_data = str(tmp_path / "other_data")  # other records, the same split and count
  shutil.copytree(tiny_data, other_data)
  evaluate.run(b, split="test", data_dir=other_data, limit=2, num_examples=0)
  out = str(tmp_path / "cmp" / "x")
  with pytest.raises(ValueError, match=re.escape(
      f"{b} was evaluated with data_dir '{other_data}', {a} with data_dir '{tiny_data}' "
      "(their report.json): compare workdirs evaluated on the same data with the same boxes")):
    compare.compare([a, b], ["A", "B"], out, latency=False)
  os.symlink(a, str(tmp_path / "link"))
  real = os.path.realpath(a)
  for twice in (str(tmp_path / "link"), a + os.sep):
    with pytest.raises(ValueError, match=re.escape(
        f"--workdirs names {real} twice ({a} and {twice}): give each workdir once")):
      compare.compare([a, twice], ["A", "A2"], out, latency=False)
  assert not os.path.exists(out + ".md")


def test_compare_refuses_reports_with_other_person_boxes(evaluated, tiny_data, tmp_path):
  """--boxes=detect (HOG people detector) against the split's boxes: not comparable."""
  import shutil
  from deeppose_tf import compare, evaluate
  a, c = evaluated, str(tmp_path / "c")
  shutil.copytree(a, c)
  evaluate.run(c, split="test", data_dir=tiny_data, limit=2, num_examples=0, boxes="detect")
  with pytest.raises(ValueError, match=re.escape(
      f"{c} was evaluated with boxes 'detect', {a} with boxes 'split'")):
    compare.compare([a, c], ["A", "C"], str(tmp_path / "cmp"), latency=False)


def test_rerun_refuses_more_steps_for_a_finished_phase(workdir, tiny_data, tmp_path):
  """A stage whose detector phase finished (detector.keras, its checkpoint at step 2) and
  whose later phases did not: a rerun asking the detector phase for more steps is refused
  before any training, naming the phase and both step counts; the same steps resume."""
  import shutil
  from deeppose_tf import config as config_lib, stages
  w = str(tmp_path / "w")
  shutil.copytree(workdir, w)
  net = workdir_lib.load_model(workdir_lib.model_path(w, 1))
  workdir_lib.save_model(net, workdir_lib.phase_model_path(w, 1, "detector"))
  os.remove(workdir_lib.model_path(w, 1))  # the stage is not finished
  # What fit_stage leaves: a checkpoint of the phase's model per interval, numbered by step.
  checkpoint = tf.train.Checkpoint(model=tompson.phase_model(net, tompson.PHASES[0]))
  tf.train.CheckpointManager(checkpoint, workdir_lib.checkpoint_dir(w, 1, "detector"),
                             max_to_keep=2).save(checkpoint_number=2)

  settings = config_lib.Settings(
      data_dir=tiny_data, train_split="train", model=CONFIG, augment=pipeline.NO_AUGMENT,
      steps=[6], batch_size=4, fit=trainer.FitConfig(steps=6, verbose=0), sigma=2.0,
      draws=1, seed=0, stats_images=8, num_stages=1, skeleton=LSP14, phase_steps=(4, 1, 1))
  strategy = tf.distribute.get_strategy()
  with pytest.raises(ValueError, match=(
      r"^stage 1 phase detector was trained for 2 steps \(\S+detector.keras\), 4 asked now "
      r"\(--phase_steps\): a finished phase is not trained further \(the later phases "
      r"started from it\); train with these steps in a new --workdir$")):
    stages.train_stage(strategy, w, 1, settings)
  assert not os.path.exists(workdir_lib.checkpoint_dir(w, 1, "spatial"))  # nothing trained
  assert tompson.trained_phase_steps(w, 1, "detector") == 2
  tompson.check_finished_phase(w, 1, "detector", 2)  # the steps it had: resumes
  tompson.check_finished_phase(w, 1, "detector", 1)


def test_finished_phase_without_checkpoints_is_kept_with_a_warning(tmp_path, caplog):
  """No checkpoint left to tell the steps a finished phase had: a warning, not an error."""
  import logging
  w = str(tmp_path / "w")
  os.makedirs(workdir_lib.stage_dir(w, 1))
  assert tompson.trained_phase_steps(w, 1, "detector") is None
  with caplog.at_level(logging.WARNING):
    tompson.check_finished_phase(w, 1, "detector", 4)
  assert "stage 1 phase detector is already trained" in caplog.text
  assert "cannot tell whether it had the 4 steps asked" in caplog.text


def test_hybrid_with_the_tompson_head_is_refused_with_what_hybrid_means(tmp_path):
  """--method=hybrid --head=tompson: the message says what hybrid is and which heads its
  refinement stages take, not that hybrid allows --head=tompson."""
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.train",
                        f"--workdir={tmp_path / 'w'}", "--method=hybrid", "--head=tompson",
                        "--num_stages=2"], capture_output=True, text=True, env=_env(),
                       cwd=REPO, timeout=300)
  assert run.returncode != 0
  assert ("--method=hybrid is a Tompson stage 1 under DeepPose refinement stages: --head "
          "sets the refinement stages' head (fc, integral, heatmap), not tompson; for "
          "Tompson networks at every stage use --method=tompson") in run.stderr, \
      run.stderr[-2000:]
  assert "(or hybrid)" not in run.stderr
  assert not os.path.exists(tmp_path / "w" / "config.json")  # refused before any work
