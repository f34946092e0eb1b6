"""Accuracy of a trained cascade as shipped: Keras fp32 and bfloat16, TFLite fp32 and int8."""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

from deeppose_tf.bench import results as results_lib
from deeppose_tf.bench.results import Result, Row

MODELS = (("keras", None), ("keras_bf16", "bfloat16"), ("tflite_fp32", "none"),
          ("tflite_int8", "int8"))


def accuracy_results(workdir: str, tmp: str, split: str = "test",
                     limit: Optional[int] = None) -> List[Result]:
  """The Keras cascade in fp32 and bfloat16, and TFLite fp32 and int8 (export.export_tflite,
  int8 calibrated on training images), evaluated by evaluate.run on `split` (at most `limit`
  images): the last stage's PCP (PDJ@0.1/0.2 in the JSON), then int8 minus fp32 and
  bfloat16 minus fp32."""
  from deeppose_tf import evaluate, export
  out, pcp = [], {}
  for name, quantize in MODELS:
    path, precision = None, "float32"
    if quantize == "bfloat16":
      precision = quantize
    elif quantize:
      path = export.export_tflite(workdir, os.path.join(tmp, f"{name}.tflite"), quantize)
    report = evaluate.run(workdir, split, limit=limit, tflite=path, precision=precision,
                          report_dir=os.path.join(tmp, name), num_examples=0)
    last = report["stages"][-1]
    pcp[name] = last["pcp_mean"]
    out.append(Result(f"accuracy {name} ({split}, stage {len(report['stages'])})",
                      last["pcp_mean"], "PCP", f"quant.{name}", "pcp",
                      extra={"pdj@0.1": last["pdj_mean_at"]["0.1"],
                             "pdj@0.2": last["pdj_mean_at"]["0.2"],
                             "stages": len(report["stages"]),
                             "num_images": report["num_images"]}))
  out.append(Result("  int8 - fp32 (TFLite)", pcp["tflite_int8"] - pcp["tflite_fp32"], "PCP",
                    "quant", "int8_minus_fp32_pcp"))
  out.append(Result("  bfloat16 - fp32 (Keras)", pcp["keras_bf16"] - pcp["keras"], "PCP",
                    "quant", "bf16_minus_fp32_pcp"))
  return out


def quantized_accuracy(workdir: str, tmp: str, split: str = "test",
                       limit: Optional[int] = None) -> Tuple[dict, List[Row]]:
  """accuracy_results as (its JSON "quant" section, its table rows), both from the one
  renderer; for callers of the former bench.quantized_accuracy."""
  res = accuracy_results(workdir, tmp, split, limit)
  return results_lib.to_json(res)["quant"], results_lib.rows(res)
