"""Cascade inference latency and throughput against the FLOPs bound: Keras, SavedModel,
bfloat16, TFLite fp32/float16/int8, a batch-1 profile and the cost against stages and joints.

Random-weight stage networks on random 2 x input_size square uint8 images with the
full-image box: no data or training needed. The bound of an image is the cascade's
convolution and dense FLOPs (forward_flops x (1 + (S - 1) K)) at the run's matmul rate;
each entry is also compared with the bound at the rate measured just before it ("local"):
a shared machine's speed drifts within a run (by 26% here), so that is the better estimate.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from absl import logging

from deeppose_tf.bench.peak import timeit
from deeppose_tf.bench.results import Ratio, Result


def _no_rate() -> Optional[float]:
  """The default peak_now: no local matmul rate, so entries carry the run's ratio only."""
  return None


def random_cascade(config, skeleton, stages: int, sigma: float = 2.0, seed: int = 0):
  """An untrained cascade: S random-weight regressors (random output layer, so the joint
  boxes move with the image like a trained cascade's, rather than all sitting on one point)."""
  import dataclasses
  import keras
  from deeppose_tf.models import builder as model_lib
  from deeppose_tf.cascade import Cascade
  keras.utils.set_random_seed(seed)
  config = dataclasses.replace(config, num_joints=skeleton.num_joints, output_init="default")
  nets = [model_lib.build_regressor(config, name=f"stage{s + 1}",
                                    edges=skeleton.edge_indices) for s in range(stages)]
  return Cascade(nets, skeleton, sigma, config.input_size)


def images_for(batch: int, casc, seed: int = 0):
  """(uint8 (B, 2S, 2S, 3) random images, float32 (B, 4) full-image boxes)."""
  side = 2 * casc.input_size
  rng = np.random.RandomState(seed)
  images = rng.randint(0, 256, (batch, side, side, 3)).astype(np.uint8)
  boxes = np.tile(np.array([[side / 2, side / 2, side, side]], np.float32), (batch, 1))
  return images, boxes


def latency(name: str, entry: str, sec: float, batch: int, bound_sec: float,
            local: Optional[float] = None, gflops: Optional[float] = None,
            extra: Optional[dict] = None, ratios: Sequence[Ratio] = ()) -> Result:
  """One timing: `sec` per call of `batch` images against the per-image bound `bound_sec`
  (and the bound at the `local` matmul rate, when given). Batch 1 reads as latency (ms),
  larger batches as throughput (img/s)."""
  x = sec / batch / bound_sec
  fields = {"batch": batch, "ms": 1e3 * sec, "ms_per_image": 1e3 * sec / batch,
            "images_per_s": batch / sec}
  all_ratios = [Ratio(x, "FLOPs bound", "x_flops_bound")]
  if local:
    fields["matmul_gflops_local"] = local
    all_ratios.append(Ratio(x * local / gflops, "local bound", "x_flops_bound_local"))
  key, unit = ("ms", "ms") if batch == 1 else ("images_per_s", "img/s")
  value = fields.pop(key)
  return Result(name, value, unit, entry, key, tuple(all_ratios) + tuple(ratios),
                {**fields, **(extra or {})})


def time_keras(casc, batch: int, min_time: float) -> float:
  """Seconds per call of tf.function(casc.predict) with a fixed (batch, 2S, 2S, 3) uint8
  input signature."""
  import tensorflow as tf
  images, boxes = (tf.constant(a) for a in images_for(batch, casc))
  fn = tf.function(casc.predict, input_signature=[tf.TensorSpec.from_tensor(images),
                                                  tf.TensorSpec.from_tensor(boxes)])
  return timeit(lambda: fn(images, boxes).numpy(), min_time)


def load_saved_model(casc, path: str):
  """Exports `casc` to `path` (export.save_saved_model) and returns the reloaded
  predict_images signature."""
  import tensorflow as tf
  from deeppose_tf import export
  export.save_saved_model(casc, path)
  return tf.saved_model.load(path).signatures["predict_images"]


def time_saved_model(fn, casc, batch: int, min_time: float) -> float:
  """Seconds per call of a loaded predict_images signature `fn` (load_saved_model) on
  `batch` of casc's benchmark images."""
  import tensorflow as tf
  images, boxes = (tf.constant(a) for a in images_for(batch, casc))
  return timeit(lambda: fn(images=images, boxes=boxes)["joints"].numpy(), min_time)


def time_tflite(casc, quantize: str, min_time: float, calibration: int = 8) -> dict:
  """Converts (export.convert_tflite) and times batch 1 in the LiteRT interpreter, 2 threads.
  int8 calibrates on random images with full-image boxes."""
  from ai_edge_litert.interpreter import Interpreter
  from deeppose_tf import export
  side = 2 * casc.input_size
  rep = None
  if quantize == "int8":
    images, boxes = images_for(calibration, casc, seed=1)
    rep = [(images[i:i + 1].astype(np.float32), boxes[i:i + 1]) for i in range(calibration)]
  t = time.perf_counter()
  model = export.convert_tflite(casc, side, side, quantize, rep)
  convert_s = time.perf_counter() - t
  runner = Interpreter(model_content=model, num_threads=2).get_signature_runner(
      "serving_default")
  images, boxes = images_for(1, casc)
  images = images.astype(np.float32)
  sec = timeit(lambda: runner(image=images, box=boxes), min_time)
  return {"sec": sec, "convert_s": convert_s, "size_mb": len(model) / 1e6}


def tflite_results(casc, quantizations: Sequence[str], per_image: float, min_time: float,
                   peak_now: Callable[[], Optional[float]] = _no_rate,
                   gflops: float = None) -> List[Result]:
  """TFLite batch 1 per quantization; a failed conversion is recorded, not raised."""
  out = []
  for q in quantizations:
    name = {"none": "fp32"}.get(q, q)
    label, entry = f"  tflite {name}, batch 1", f"infer.tflite.{name}"
    try:
      local = peak_now()
      t = time_tflite(casc, q, min_time)
    except Exception as err:  # pylint: disable=broad-except
      logging.exception("TFLite %s failed", name)
      out.append(Result(label, None, "ms", entry, "ms",
                        error=f"{type(err).__name__}: {err}"[:1000]))
      continue
    out.append(latency(label, entry, t["sec"], 1, per_image, local, gflops,
                       {"convert_s": t["convert_s"], "size_mb": t["size_mb"]}))
  return out


def profile_batch1(casc, min_time: float) -> Dict[str, float]:
  """Milliseconds of the pieces of one batch-1 cascade call, each timed on its own (its own
  tf.function, so each also pays one call's dispatch): the stage-1 crop and network, one
  refinement stage's K crops and its network on the K crops, and the rest of the whole call
  (joint boxes, output selection; negative when the pieces' dispatch outweighs it)."""
  import tensorflow as tf
  from deeppose_tf import geometry
  k, size = casc.skeleton.num_joints, casc.input_size
  images, boxes = (tf.constant(a) for a in images_for(1, casc))
  pose = casc.predict(images, boxes)[:, 0]
  jboxes = tf.reshape(geometry.joint_boxes(pose, casc.skeleton.diameter_indices, casc.sigma),
                      [-1, 4])
  one, many = tf.zeros([1], tf.int32), tf.zeros([k], tf.int32)  # crop box -> image 0
  crops1, crops_k = tf.zeros([1, size, size, 3]), tf.zeros([k, size, size, 3])
  crop = tf.function(lambda i, b, n: geometry.crop(i, b, n, size))
  net = tf.function(lambda x: casc.stages[-1](x, training=False))
  ms = {"stage1_crop": timeit(lambda: crop(images, boxes, one).numpy(), min_time),
        "stage1_net": timeit(lambda: net(crops1).numpy(), min_time),
        "refine_crops": timeit(lambda: crop(images, jboxes, many).numpy(), min_time),
        "refine_net": timeit(lambda: net(crops_k).numpy(), min_time),
        "cascade": time_keras(casc, 1, min_time)}
  ms = {name: 1e3 * sec for name, sec in ms.items()}
  refinements = casc.num_stages - 1
  ms["sum_of_pieces"] = (ms["stage1_crop"] + ms["stage1_net"]
                         + refinements * (ms["refine_crops"] + ms["refine_net"]))
  ms["other"] = ms["cascade"] - ms["sum_of_pieces"]
  return ms


def profile_results(casc, fwd_flops: float, rate: float, min_time: float) -> List[Result]:
  """profile_batch1 as results; the networks against their FLOPs bound at `rate` (GFLOP/s,
  measured just before)."""
  ms = profile_batch1(casc, min_time)
  k, refinements = casc.skeleton.num_joints, casc.num_stages - 1
  entry = "infer.profile_batch1_ms"
  net1_bound = 1e3 * fwd_flops / (rate * 1e9)
  net_k_bound = net1_bound * k

  def piece(label, key, ratios=(), extra=None):
    return Result(f"  profile: {label}", ms[key], "ms", entry, key, ratios, extra or {})

  return [
      piece("stage-1 crop", "stage1_crop"),
      piece("stage-1 net", "stage1_net",
            (Ratio(ms["stage1_net"] / net1_bound, "net FLOPs bound", "stage1_net_x_bound"),),
            {"stage1_net_bound": net1_bound, "matmul_gflops_local": rate}),
      piece(f"{k} refinement crops (x{refinements})", "refine_crops"),
      piece(f"refinement net on {k} crops (x{refinements})", "refine_net",
            (Ratio(ms["refine_net"] / net_k_bound, "net FLOPs bound", "refine_net_x_bound"),),
            {"refine_net_bound": net_k_bound}),
      piece("whole call", "cascade"),
      piece("sum of the pieces", "sum_of_pieces"),
      piece("whole call - pieces", "other"),
  ]


def scaling_results(config, casc, bound: Callable[[int, int], float], min_time: float,
                    peak_now: Callable[[], Optional[float]] = _no_rate,
                    gflops: float = None) -> List[Result]:
  """Batch-1 Keras cascade latency for S = 1..casc.num_stages and K = 10 (FLIC10) and the
  cascade's own skeleton (LSP14: K = 14), on the first S stages."""
  from deeppose_tf.cascade import Cascade
  from deeppose_tf.skeleton import FLIC10
  out = []
  for full in (random_cascade(config, FLIC10, casc.num_stages), casc):
    k = full.skeleton.num_joints
    for s in range(1, full.num_stages + 1):
      local = peak_now()
      sec = time_keras(Cascade(full.stages[:s], full.skeleton, full.sigma, full.input_size),
                       1, min_time)
      out.append(latency(f"  keras batch 1, S={s} K={k}", "infer.scaling[]", sec, 1,
                         bound(s, k), local, gflops,
                         {"skeleton": full.skeleton.name, "joints": k, "stages": s,
                          "crops_per_image": 1 + (s - 1) * k}))
  return out


def infer_benchmark(config, gflops: float, bf16_gflops: float, stages: int = 3,
                    batches: Sequence[int] = (1, 8, 32), tflite: bool = True,
                    min_time: float = 3.0,
                    quantizations: Sequence[str] = ("none", "float16", "int8"),
                    peak_now: Callable[[], Optional[float]] = _no_rate) -> List[Result]:
  """Inference of a random-weight LSP14 cascade of `stages` stages: Keras at `batches`,
  the SavedModel at the batches up to 8, bfloat16 and TFLite at batch 1, a batch-1 profile
  and the scaling table. peak_now() -> the matmul rate now: measured before each entry for
  its local ratio."""
  from deeppose_tf.models import builder as model_lib
  from deeppose_tf.skeleton import LSP14
  start = time.perf_counter()
  casc = random_cascade(config, LSP14, stages)
  fwd = model_lib.forward_flops(casc.stages[0])

  def bound(s: int, k: int) -> float:  # seconds per image at the matmul rate
    return fwd * (1 + (s - 1) * k) / (gflops * 1e9)

  per_image = bound(stages, LSP14.num_joints)
  out = [Result(f"infer: {stages}-stage LSP14 cascade, FLOPs per image",
                per_image * gflops, "GFLOP", "infer", "cascade_gflops_per_image",
                extra={"stages": stages, "skeleton": LSP14.name,
                       "image_side": 2 * config.input_size}),
         Result("  its FLOPs bound at the fp32 matmul rate", 1e3 * per_image, "ms", "infer",
                "flops_bound_ms_per_image")]
  for b in batches:
    rate = peak_now()
    out.append(latency(f"  keras cascade, batch {b}", f"infer.keras.{b}",
                       time_keras(casc, b, min_time), b, per_image, rate, gflops))
  with tempfile.TemporaryDirectory() as tmp:
    fn = load_saved_model(casc, os.path.join(tmp, "saved_model"))
    for b in [b for b in batches if b <= 8]:
      rate = peak_now()
      out.append(latency(f"  SavedModel predict_images, batch {b}", f"infer.saved_model.{b}",
                         time_saved_model(fn, casc, b, min_time), b, per_image, rate, gflops))
  # bfloat16 networks (export --precision=bfloat16), against the same fp32 bound and
  # against the bound at the measured bfloat16 matmul rate.
  bf16 = casc.with_precision("bfloat16")
  with tempfile.TemporaryDirectory() as tmp:
    bf16_fn = load_saved_model(bf16, os.path.join(tmp, "saved_model"))
    timers = {"keras": lambda: time_keras(bf16, 1, min_time),
              "saved_model": lambda: time_saved_model(bf16_fn, bf16, 1, min_time)}
    for name, timer in timers.items():
      rate = peak_now()
      sec = timer()
      bf16_bound = Ratio(sec / (per_image * gflops / bf16_gflops), "bf16 FLOPs bound",
                         "x_bf16_flops_bound")
      out.append(latency(f"  {name} bfloat16, batch 1", f"infer.bfloat16.{name}", sec, 1,
                         per_image, rate, gflops, ratios=(bf16_bound,)))
  if tflite:
    out += tflite_results(casc, quantizations, per_image, min_time, peak_now, gflops)
  out += profile_results(casc, fwd, peak_now() or gflops, min_time)
  out += scaling_results(config, casc, bound, min_time, peak_now, gflops)
  out.append(Result("infer: wall time", time.perf_counter() - start, "s", "infer", "wall_s"))
  return out
