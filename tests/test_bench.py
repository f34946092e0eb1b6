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


def test_unknown_benchmark_and_quant_without_workdir_are_refused():
  with pytest.raises(ValueError, match="unknown benchmarks \\['speed'\\]"):
    bench.run(["speed"])
  with pytest.raises(ValueError, match="pass --workdir"):
    bench.run(["quant"])
