"""bench.run on a tiny config: every figure lands in the JSON and in the table."""

import json

import pytest

from deeppose_tf import bench, export


def test_infer_benchmark_tiny(monkeypatch):
  convert = export.convert_tflite

  def fp32_only(casc, height, width, quantize="none", representative=None):
    if quantize != "none":  # a failing conversion is recorded, not raised (and saves time)
      raise RuntimeError(f"no {quantize} here")
    return convert(casc, height, width, quantize, representative)

  monkeypatch.setattr(export, "convert_tflite", fp32_only)
  result, rows = bench.run(["peak", "infer"], input_size=72, width=0.1, fc_units=32, stages=2,
                           infer_batches=[1, 2], tflite=True, min_time=0.02, matmul_n=128)
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
  assert result["matmul_bf16_gflops"] > 0 and infer["bfloat16"]["matmul_gflops"] > 0
  for name in ("keras", "saved_model"):
    assert entry | {"x_bf16_flops_bound"} <= set(infer["bfloat16"][name])
  assert entry | {"convert_s", "size_mb"} <= set(infer["tflite"]["fp32"])
  assert infer["tflite"]["int8"] == {"error": "RuntimeError: no int8 here"}
  assert "error" in infer["tflite"]["float16"]
  assert {"stage1_crop", "stage1_net", "refine_crops", "refine_net", "cascade",
          "sum_of_pieces", "other"} <= set(infer["profile_batch1_ms"])
  assert [(e["joints"], e["stages"]) for e in infer["scaling"]] == [
      (10, 1), (10, 2), (14, 1), (14, 2)]
  table = bench.format_table(rows)
  assert "tflite int8, batch 1" in table and "failed" in table and "S=2 K=10" in table


@pytest.mark.slow  # 6 short Keras fits and 2 pipelines, about 35 s
def test_train_pipeline_and_end_to_end_tiny(tiny_data):
  result, rows = bench.run(["peak", "train", "pipeline", "e2e"], input_size=72, width=0.1,
                           fc_units=16, batch_size=4, draws=3, data_dir=tiny_data,
                           min_time=0.02, matmul_n=128)
  result = json.loads(json.dumps(result))
  assert result["data"] == "given"
  assert result["train_step"]["images_per_s"] > 0
  assert 0 < result["train_step"]["fraction_of_matmul_peak"]
  assert result["pipeline"]["stage1_images_per_s"] > 0
  assert result["pipeline"]["refine_crops_per_s"] > 0
  for name in ("stage1", "refine"):
    e = result["e2e"][name]
    assert e["in_memory_per_s"] > 0 and e["pipeline_per_s"] > 0
    assert e["pipeline_over_in_memory"] == pytest.approx(
        e["pipeline_per_s"] / e["in_memory_per_s"])
    assert e["steps_timed"] == 30  # 3 rounds x 10 steps
  table = bench.format_table(rows)
  assert "e2e stage1" in table and "e2e refine" in table and "of in-memory" in table


def test_train_step_both_precisions_integral_head_tiny():
  # The trainer's model: resnet + integral head trained with the heatmap loss (two outputs).
  result, rows = bench.run(["train"], input_size=64, width=0.25, batch_size=2,
                           min_time=0.02, matmul_n=128, backbone="resnet", head="integral",
                           heatmap_stride=8, head_channels=16, loss="l1",
                           heatmap_loss_weight=0.1, train_rounds=2)
  result = json.loads(json.dumps(result))  # JSON-serializable as written
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
  table = bench.format_table(rows)
  for row in ("matmul bfloat16", "train step fp32, batch 2", "train step bfloat16, batch 2",
              "bfloat16 / fp32", "of bf16 matmul"):
    assert row in table


def test_precisions_share_model_weights_and_batch():
  """The two precisions train the same model from the same weights on the same batch (no
  fit here: tracing the train steps is the slow part, done once in the test above)."""
  from deeppose_tf import model as model_lib
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


def test_unknown_benchmark_and_quant_without_workdir_are_refused():
  with pytest.raises(ValueError, match="unknown benchmarks \\['speed'\\]"):
    bench.run(["speed"])
  with pytest.raises(ValueError, match="pass --workdir"):
    bench.run(["quant"])
  with pytest.raises(ValueError, match="needs head='integral'"):
    bench.run(["train"], heatmap_loss_weight=0.1)
