"""bench.run on a tiny config: every figure lands in the JSON and in the table, both rendered
from the same result records."""

import json
import subprocess
import sys

import pytest

from helpers import REPO, subprocess_env
from deeppose_tf import bench, export


@pytest.mark.slow  # ~25 s; CI runs the slow suite too (the default run stays under 10 min)
def test_infer_benchmark_tiny(monkeypatch):
  convert = export.convert_tflite

  def fp32_only(casc, height, width, quantize="none", representative=None):
    if quantize != "none":  # a failing conversion is recorded, not raised (and saves time)
      raise RuntimeError(f"no {quantize} here")
    return convert(casc, height, width, quantize, representative)

  monkeypatch.setattr(export, "convert_tflite", fp32_only)
  report = bench.run(["peak", "infer"], input_size=72, width=0.1, fc_units=32, stages=2,
                     infer_batches=[1, 2], tflite=True, min_time=0.02, matmul_n=128)
  result = report.to_json()
  infer = json.loads(json.dumps(result))["infer"]  # JSON-serializable as written
  entry = {"batch", "ms", "ms_per_image", "images_per_s", "x_flops_bound"}
  assert infer["stages"] == 2 and infer["image_side"] == 144
  assert infer["flops_bound_ms_per_image"] > 0 and infer["cascade_gflops_per_image"] > 0
  assert set(infer["keras"]) == {"1", "2"} and set(infer["saved_model"]) == {"1", "2"}
  for e in list(infer["keras"].values()) + list(infer["saved_model"].values()):
    assert entry <= set(e) and e["x_flops_bound"] > 0
    # The ratio at the matmul rate measured just before the entry, beside the run's own.
    assert e["x_flops_bound_local"] == pytest.approx(
        e["x_flops_bound"] * e["matmul_gflops_local"] / result["matmul_gflops"])
  assert result["matmul_bf16_gflops"] > 0
  for name in ("keras", "saved_model"):
    assert entry | {"x_bf16_flops_bound"} <= set(infer["bfloat16"][name])
  assert entry | {"convert_s", "size_mb"} <= set(infer["tflite"]["fp32"])
  assert infer["tflite"]["int8"] == {"error": "RuntimeError: no int8 here"}
  assert "error" in infer["tflite"]["float16"]
  assert {"stage1_crop", "stage1_net", "refine_crops", "refine_net", "cascade",
          "sum_of_pieces", "other"} <= set(infer["profile_batch1_ms"])
  assert [(e["joints"], e["stages"]) for e in infer["scaling"]] == [
      (10, 1), (10, 2), (14, 1), (14, 2)]
  table = report.table()
  assert "tflite int8, batch 1" in table and "failed" in table and "S=2 K=10" in table
  # One table row per result, each carrying its ratios; failures say so.
  assert len(table.splitlines()) == 1 + len(report.results)
  tflite_int8 = [r for r in bench.results.rows(report.results) if "tflite int8" in r[0]]
  assert tflite_int8 == [("  tflite int8, batch 1", "failed", "see JSON")]
  assert "x FLOPs bound" in table and "x local bound" in table


@pytest.mark.slow  # 6 short Keras fits and 2 pipelines, about 35 s
def test_train_pipeline_and_end_to_end_tiny(tiny_data):
  report = bench.run(["peak", "train", "pipeline", "e2e"], input_size=72, width=0.1,
                     fc_units=16, batch_size=4, draws=3, data_dir=tiny_data,
                     min_time=0.02, matmul_n=128)
  result = json.loads(json.dumps(report.to_json()))
  assert result["data"] == "given"
  assert result["train_step"]["images_per_s"] > 0
  assert 0 < result["train_step"]["fraction_of_matmul_peak"]
  assert result["pipeline"]["stage1_images_per_s"] > 0
  assert result["pipeline"]["refine_crops_per_s"] > 0
  assert result["pipeline"]["stage1_over_train_step"] == pytest.approx(
      result["pipeline"]["stage1_images_per_s"] / result["train_step"]["images_per_s"])
  for name in ("stage1", "refine"):
    e = result["e2e"][name]
    assert e["in_memory_per_s"] > 0 and e["pipeline_per_s"] > 0
    assert e["pipeline_over_in_memory"] == pytest.approx(
        e["pipeline_per_s"] / e["in_memory_per_s"])
    assert e["steps_timed"] == 30  # 3 rounds x 10 steps
  table = report.table()
  assert "e2e stage1" in table and "e2e refine" in table and "x in-memory" in table


@pytest.mark.slow  # 21 s; CI runs it in `pytest -m slow`
def test_train_step_both_precisions_integral_head_tiny():
  # The trainer's model: resnet + integral head trained with the heatmap loss (two outputs).
  report = bench.run(["train"], input_size=64, width=0.25, batch_size=2,
                     min_time=0.02, matmul_n=128, backbone="resnet", head="integral",
                     heatmap_stride=8, head_channels=16, loss="l1",
                     heatmap_loss_weight=0.1, train_rounds=2)
  result = json.loads(json.dumps(report.to_json()))  # JSON-serializable as written
  assert result["model"]["backbone"] == "resnet" and result["model"]["head"] == "integral"
  assert result["model"]["head_channels"] == 16 and result["model"]["heatmap_stride"] == 8
  assert result["training"] == {"loss": "l1", "heatmap_loss_weight": 0.1}
  fp32, bf16 = result["train_step"], result["train_step_bf16"]
  assert set(fp32) == {"batch", "images_per_s", "fraction_of_matmul_peak"}
  assert set(bf16) == {"batch", "images_per_s", "fraction_of_bf16_matmul_peak"}
  assert fp32["batch"] == bf16["batch"] == 2
  for value in (fp32["images_per_s"], bf16["images_per_s"], fp32["fraction_of_matmul_peak"],
                bf16["fraction_of_bf16_matmul_peak"], result["matmul_bf16_gflops"]):
    assert 0 < value < float("inf")
  assert result["bf16_over_fp32_train_step"] == pytest.approx(
      bf16["images_per_s"] / fp32["images_per_s"])
  # Each fraction is against its own precision's matmul peak.
  assert bf16["fraction_of_bf16_matmul_peak"] / fp32["fraction_of_matmul_peak"] == (
      pytest.approx(result["bf16_over_fp32_train_step"] * result["matmul_gflops"]
                    / result["matmul_bf16_gflops"]))
  table = report.table()
  for row in ("matmul bfloat16", "train step fp32, batch 2", "train step bfloat16, batch 2",
              "bfloat16 / fp32", "x bf16 matmul peak"):
    assert row in table


def test_precisions_share_model_weights_and_batch():
  """The two precisions train the same model from the same weights on the same batch (no
  fit here: tracing the train steps is the slow part, done once in the test above)."""
  from deeppose_tf.models import builder as model_lib
  config = model_lib.ModelConfig(input_size=64, width=0.25, backbone="resnet",
                                 head="integral", head_channels=8)
  setups = bench.precision_setups(config, 2, "l2", 0.1)
  (fp32, ds32), (bf16, ds16) = setups["float32"], setups["bfloat16"]
  for net in (fp32, bf16):  # training_model, compiled with the heatmap loss too
    assert set(net.output) == set(net.loss) == {"joints", "heatmaps"}
  assert {l.dtype_policy.name for l in fp32.layers} == {"float32"}
  assert "mixed_bfloat16" in {l.dtype_policy.name for l in bf16.layers}
  assert all((a == b).all() for a, b in zip(fp32.get_weights(), bf16.get_weights()))
  (x32, y32), (x16, y16) = next(iter(ds32)), next(iter(ds16))
  assert x32.shape == (2, 64, 64, 3) and (x32.numpy() == x16.numpy()).all()
  assert set(y32) == {"joints", "heatmaps"}
  assert (y32["joints"].numpy() == y16["joints"].numpy()).all()


def test_unknown_benchmark_and_quant_without_workdir_are_refused(tmp_path):
  with pytest.raises(ValueError, match="--only=speed: unknown benchmarks \\['speed'\\]; "
                     "allowed: peak, pipeline"):
    bench.run(["speed"])
  with pytest.raises(ValueError, match="pass --workdir"):
    bench.run(["quant"])
  with pytest.raises(ValueError, match="needs --head=integral"):
    bench.run(["train"], heatmap_loss_weight=0.1)
  with pytest.raises(ValueError, match="--augment=heavy: allowed values are recipe, paper"):
    bench.run(["pipeline"], augment="heavy")
  with pytest.raises(ValueError, match="--heatmap_stride=6: allowed values are 4, 8"):
    bench.run(["train"], heatmap_stride=6)
  with pytest.raises(ValueError, match="--infer_batches=1,0: must be one or more positive"):
    bench.run(["infer"], infer_batches=[1, 0])
  with pytest.raises(ValueError, match="give one of them"):
    bench.run(["pipeline"], data_dir=str(tmp_path), source_dir=str(tmp_path))
  with pytest.raises(ValueError, match="--source_dir=.*: no such directory"):
    bench.run(["pipeline"], source_dir=str(tmp_path / "missing"))


def test_records_render_to_table_and_json():
  """One record -> one table row and its JSON entry: value, ratios and extra under the
  record's entry; "[]" appends to a list; a failure is {"error": ...} and "failed"."""
  from deeppose_tf.bench.results import Ratio, Result
  results = [
      Result("matmul fp32", 100.0, "GFLOP/s", "", "matmul_gflops", extra={"matmul_n": 8}),
      Result("step", 25.0, "img/s", "train_step", "images_per_s",
             (Ratio(0.5, "fp32 matmul peak", "fraction_of_matmul_peak"),), {"batch": 2}),
      Result("scale 1", 3.0, "ms", "infer.scaling[]", "ms", extra={"stages": 1}),
      Result("scale 2", 4.0, "ms", "infer.scaling[]", "ms", extra={"stages": 2}),
      Result("broken", None, "ms", "infer.tflite.int8", "ms", error="RuntimeError: no"),
  ]
  assert bench.to_json(results, {"cpus": 2}) == {
      "cpus": 2, "matmul_gflops": 100.0, "matmul_n": 8,
      "train_step": {"batch": 2, "images_per_s": 25.0, "fraction_of_matmul_peak": 0.5},
      "infer": {"scaling": [{"stages": 1, "ms": 3.0}, {"stages": 2, "ms": 4.0}],
                "tflite": {"int8": {"error": "RuntimeError: no"}}}}
  lines = bench.table(results).splitlines()
  assert len(lines) == 1 + len(results)
  assert lines[2].split() == ["step", "25.0", "img/s", "0.50x", "fp32", "matmul", "peak"]
  assert lines[-1].split() == ["broken", "failed", "see", "JSON"]


@pytest.mark.slow  # 10-22 s: the default run stays under 10 minutes
def test_cli_help_lists_every_flag_and_rejects_bad_values(tmp_path):
  """python -m deeppose_tf.bench: --help lists the flags; a bad value is refused at entry
  naming the flag, the value and the allowed values; a tiny peak run writes its JSON."""
  def cli(*args):
    return subprocess.run([sys.executable, "-m", "deeppose_tf.bench", *args], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
  helped = cli("--help")  # absl's --help exits with status 1
  for name in ("only", "json", "data_dir", "source_dir", "dataset", "num_train", "augment",
               "workdir", "min_time", "matmul_n", "infer_batches"):
    assert f"--{name}" in helped.stdout
  bad = cli("--only=speed")
  assert bad.returncode != 0 and "--only=speed: unknown benchmarks ['speed']" in bad.stderr
  out = tmp_path / "bench.json"
  ok = cli("--only=peak", "--min_time=0.02", "--matmul_n=64", f"--json={out}")
  assert ok.returncode == 0, ok.stderr
  assert "matmul fp32" in ok.stdout and json.loads(out.read_text())["matmul_gflops"] > 0


def test_training_data_from_source_dir_or_synthetic(tmp_path):
  """pipeline/e2e data without --data_dir: the first --num_train training images of the
  --source_dir files, or --num_train synthetic images."""
  import fixtures_mat as fm
  from deeppose_tf.bench import inputs
  from deeppose_tf.data import records
  src = str(tmp_path / "lspet")
  fm.write_lsp_folder(src, fm.random_lsp_joints(30), "lspet", digits=5)
  out, what = inputs.training_data(str(tmp_path / "a"), source_dir=src, dataset="lspet",
                                   num_train=12)
  assert what == "lspet (first 12 training images)"
  meta = records.read_meta(out, "train")
  assert meta["num_records"] == 12 and meta["num_joints"] == 14
  out, what = inputs.training_data(str(tmp_path / "b"), num_train=5)
  assert what == "synthetic (5 images)" and records.read_meta(out, "train")["num_records"] == 5
  with pytest.raises(ValueError, match="--dataset=flic: allowed values are lsp, lspet"):
    bench.run(["pipeline"], source_dir=src, dataset="flic")
