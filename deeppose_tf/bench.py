"""Performance benchmarks: a readable table on stdout and JSON.

  python -m deeppose_tf.bench [--only=peak,pipeline,train,e2e,infer,quant] [--json=FILE]
      [--data_dir=DIR] [--input_size=220] [--width=1.0] [--fc_units=4096]
      [--backbone=alexnet] [--head=fc] [--heatmap_stride=8] [--head_channels=128]
      [--loss=l2] [--heatmap_loss_weight=0] [--precision=float32] [--augment=recipe]
      [--cache_max_side=320] [--batch_size=32] [--draws=40] [--stages=3] [--infer_batches=1,8,32] [--tflite]
      [--workdir=TRAINED --eval_split=test --eval_limit=N]

Every figure is measured in the same run as the machine's fp32 matmul rate, so it is also
reported as a fraction of that peak (absolute times on shared machines drift). Inference
times are reported against the FLOPs bound: the cascade's convolution and dense FLOPs
(forward_flops x (1 + (S - 1) K) per image) at the measured matmul rate ("x_flops_bound").
Every section uses the network of --backbone/--head/--heatmap_stride/--head_channels (and
--input_size/--width/--fc_units); the training sections (train, e2e) train it as the trainer
does: model_lib.training_model when --heatmap_loss_weight > 0, trainer.FitConfig's compile
args (Adam 1e-4, --loss, the weighted heatmap loss).
  train     the stage-1 regressor's Keras train step on in-memory tensors in both training
            precisions, float32 and bfloat16 (Keras mixed_bfloat16), on the same batch and
            the same model otherwise, measured alternately (fp32, bf16, fp32, bf16) so drift
            on a shared machine hits both; each precision's rate is the batch over the
            median of its pooled step times, reported against its own measured matmul
            peak (forward + backward counted as 3 x forward FLOPs: fp32 against the fp32
            matmul rate, bf16 against the bfloat16 matmul rate), and bf16 / fp32;
  pipeline  tf.data throughput of the stage-1 and refinement pipelines alone (--augment's
            augmentation, images from the --cache_max_side in-memory cache as in training);
  e2e       training through the real pipeline against training on in-memory tensors, in
            the same process and alternating, for stage 1 and a refinement stage;
  infer     cascade latency and throughput (Keras, SavedModel, bfloat16 Keras and
            SavedModel, TFLite fp32/float16/int8), a batch-1 profile and the cost against
            stages and joints;
  quant     accuracy of a trained cascade (--workdir) as Keras fp32 and bfloat16 and as
            TFLite fp32 and int8.
Data: --data_dir (prepared TFRecords), else ../shared/data/lspet prepared into a temp dir
when present, else a freshly generated synthetic set. `infer` needs no data: random-weight
stage networks on random 2 x input_size square uint8 images with the full-image box.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
Row = Tuple[str, str, str]
BENCHMARKS = ("peak", "pipeline", "train", "e2e", "infer", "quant")


def _timeit(fn: Callable[[], object], min_time: float = 3.0, warmup: int = 2) -> float:
  """Median seconds per call of fn over at least `min_time` seconds (after warm-up)."""
  for _ in range(warmup):
    fn()
  times = []
  start = time.perf_counter()
  while time.perf_counter() - start < min_time or len(times) < 3:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def matmul_peak(n: int = 2048, min_time: float = 3.0, dtype: str = "float32"
                ) -> Dict[str, float]:
  """GEMM rate of this machine through TF (the same kernels the network uses), fp32 or
  bfloat16."""
  import tensorflow as tf
  a = tf.cast(tf.random.normal([n, n]), dtype)
  b = tf.cast(tf.random.normal([n, n]), dtype)
  mm = tf.function(lambda: tf.reduce_sum(tf.cast(tf.linalg.matmul(a, b), tf.float32)))
  sec = _timeit(lambda: mm().numpy(), min_time)
  return {"matmul_n": n, "matmul_gflops": 2 * n ** 3 / sec / 1e9}


# What the pipeline and e2e sections feed: the flags' training recipe ("recipe": rotation,
# scale, shift, flips and colour jitter, as experiments/lspet.flags) or the paper's jitter.
AUGMENTS = ("recipe", "paper")


def augment_config(name: str):
  from deeppose_tf import pipeline
  if name == "recipe":
    return pipeline.AugmentConfig(translate=0.15, scale=(0.7, 1.3), flip=True, rotate=30.0,
                                  brightness=0.2, contrast=0.3, saturation=0.3)
  if name == "paper":
    return pipeline.AugmentConfig()
  raise ValueError(f"augment must be one of {AUGMENTS}, got {name!r}")


def warm_cache(it, data_dir: str, batch_size: int, refine: dict = None) -> None:
  """Reads the iterator `it` until its in-memory image cache is complete (one pass over
  the split, plus the shuffle buffer), so timings see training's steady state after the
  first epoch rather than the one-off JPEG decoding of the first."""
  from deeppose_tf.data import records
  n = records.read_meta(data_dir, "train")["num_records"] + 2048
  per_batch = batch_size if refine is None else batch_size / refine["draws"]
  for _ in range(int(n / per_batch) + 2):
    next(it)


def pipeline_throughput(data_dir: str, skeleton, input_size: int, batch_size: int,
                        refine: dict = None, batches: int = 30, augment: str = "recipe",
                        cache_max_side: Optional[int] = 320) -> float:
  """Examples (images for stage 1, crops for refinement) per second out of tf.data (after
  the in-memory cache is filled when cache_max_side is not None)."""
  from deeppose_tf import pipeline
  ds = pipeline.train_dataset(data_dir, "train", skeleton, input_size, batch_size, seed=0,
                              refine=refine, augment=augment_config(augment),
                              cache_max_side=cache_max_side)
  it = iter(ds)
  if cache_max_side is not None:
    warm_cache(it, data_dir, batch_size, refine)
  for _ in range(3):
    next(it)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * batch_size / (time.perf_counter() - t)


def compiled_training_model(config, loss: str = "l2", heatmap_loss_weight: float = 0.0):
  """The stage-1 regressor of `config` as the trainer trains it: model_lib.training_model
  when heatmap_loss_weight > 0 (the heatmap logits as a second output), compiled with
  trainer.FitConfig's compile args (Adam 1e-4, `loss`, the weighted heatmap loss). Call
  inside a strategy's scope to build under it."""
  from deeppose_tf import model as model_lib, trainer
  net = model_lib.build_regressor(config)
  if heatmap_loss_weight > 0:
    net = model_lib.training_model(net)
  fit = trainer.FitConfig(steps=1, loss=loss, heatmap_loss_weight=heatmap_loss_weight)
  net.compile(**fit.compile_args(net))
  return net


def training_setup(config, batch_size: int, loss: str = "l2",
                   heatmap_loss_weight: float = 0.0, seed: int = 0):
  """(compiled_training_model, an in-memory dataset repeating one random batch with the
  targets as the trainer feeds them). The batch is drawn from `seed`: calls with the same
  sizes get the same batch."""
  import tensorflow as tf
  net = compiled_training_model(config, loss, heatmap_loss_weight)
  s, k = config.input_size, config.num_joints
  gen = tf.random.Generator.from_seed(seed)
  x = gen.uniform([batch_size, s, s, 3], 0, 255)
  y = tf.concat([gen.uniform([batch_size, k, 2], -0.5, 0.5), tf.ones([batch_size, k, 1])], -1)
  return net, _targets_for(net, tf.data.Dataset.from_tensors((x, y)).repeat())


def _targets_for(net, dataset):
  """`dataset` of (x, y) as the trainer feeds `net`: y for both outputs of a dict model."""
  if isinstance(net.output, dict):
    return dataset.map(lambda x, y: (x, {"joints": y, "heatmaps": y}))
  return dataset


def train_step_throughput(config, batch_size: int, steps: int = 10, warmup: int = 3,
                          loss: str = "l2", heatmap_loss_weight: float = 0.0) -> float:
  """Images per second of the Keras train step on in-memory tensors (no strategy: the
  network's own rate), in config.precision."""
  from deeppose_tf import trainer
  net, ds = training_setup(config, batch_size, loss, heatmap_loss_weight)
  # The NaN guard reads every step's loss, as in training: each step ends synchronized.
  step_times = _fit_step_times(net, ds, steps, warmup, [trainer.NanGuard(0)])
  return batch_size * len(step_times) / float(step_times.sum())


def precision_setups(config, batch_size: int, loss: str = "l2",
                     heatmap_loss_weight: float = 0.0) -> dict:
  """{"float32": training_setup, "bfloat16": training_setup}: the config with precision
  'float32' / 'bfloat16', otherwise the same model with the same initial weights, on the
  same batch."""
  import dataclasses
  import keras
  setups = {}
  for precision in ("float32", "bfloat16"):
    keras.utils.set_random_seed(0)
    setups[precision] = training_setup(dataclasses.replace(config, precision=precision),
                                       batch_size, loss, heatmap_loss_weight)
  # mixed_bfloat16 keeps float32 variables: the bf16 model starts from the fp32 weights.
  setups["bfloat16"][0].set_weights(setups["float32"][0].get_weights())
  return setups


def train_step_precisions(config, batch_size: int, loss: str = "l2",
                          heatmap_loss_weight: float = 0.0, steps: int = 10, warmup: int = 3,
                          rounds: int = 2) -> dict:
  """Images per second of the Keras train step in float32 and in bfloat16 (precision_setups).
  Rounds alternate (fp32, bf16, fp32, ...) so drift on a shared machine hits both; each
  rate is the batch over the median step time of its rounds' pooled steps. Returns
  {"float32": rate, "bfloat16": rate, "steps_timed": per precision}."""
  from deeppose_tf import trainer
  setups = precision_setups(config, batch_size, loss, heatmap_loss_weight)
  times = {precision: [] for precision in setups}
  for _ in range(rounds):
    for precision, (net, ds) in setups.items():
      # The NaN guard reads every step's loss, as in training: each step ends synchronized.
      times[precision].extend(
          _fit_step_times(net, ds, steps, warmup, [trainer.NanGuard(0)]).tolist())
  out = {p: batch_size / float(np.median(t)) for p, t in times.items()}
  out["steps_timed"] = len(times["float32"])
  return out


def _fit_step_times(net, dataset, steps: int, warmup: int, callbacks) -> np.ndarray:
  """Seconds of each of `steps` Keras fit steps after `warmup` steps, from one fit call (so
  the dataset's iterator, prefetch and autotuning stay live across the timed steps)."""
  import keras

  class StepTimes(keras.callbacks.Callback):
    def __init__(self):
      super().__init__()
      self.times = []

    def on_train_batch_end(self, batch, logs=None):
      self.times.append(time.perf_counter())

  timer = StepTimes()
  net.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, verbose=0, shuffle=False,
          callbacks=list(callbacks) + [timer])
  return np.diff(timer.times[warmup - 1:])


def end_to_end(config, data_dir: str, skeleton, batch_size: int, refine: dict = None,
               steps: int = 10, warmup: int = 3, rounds: int = 3, loss: str = "l2",
               heatmap_loss_weight: float = 0.0, augment: str = "recipe",
               cache_max_side: Optional[int] = 320) -> dict:
  """Training through the real pipeline against the same training on in-memory tensors.

  Both use what `trainer.fit_stage` uses: the MirroredStrategy (one CPU device), the
  training model and compile args (compiled_training_model), Keras fit
  and the NaN guard, which reads the loss every step, so each step
  ends synchronized and its time is its own. The in-memory dataset repeats one batch of the
  real pipeline, so shapes and values match. Rounds alternate (memory, pipeline, memory,
  ...) so drift on a shared machine hits both, and each rate is the batch over the median
  step time of its rounds' pooled steps (robust to the other tenants' spikes).
  refine: None (stage 1) or refine_example's dict. Returns images (or crops) per second for
  both and their ratio. With the in-memory cache, every fit call's iterator starts a fresh
  cache (Keras distributes the dataset anew), so this measures the FIRST epoch of
  training, which decodes every JPEG; later epochs read decoded images from memory (the
  pipeline section measures that steady state).
  """
  import tensorflow as tf
  from deeppose_tf import pipeline, trainer
  strategy = trainer.make_strategy(1)
  with strategy.scope():
    net = compiled_training_model(config, loss, heatmap_loss_weight)
  real = pipeline.train_dataset(data_dir, "train", skeleton, config.input_size, batch_size,
                                seed=0, refine=refine, augment=augment_config(augment),
                                cache_max_side=cache_max_side)
  memory = _targets_for(net, tf.data.Dataset.from_tensors(next(iter(real))).repeat())
  real = _targets_for(net, real)
  callbacks = [trainer.NanGuard(0)]
  times = {"in_memory": [], "pipeline": []}
  for _ in range(rounds):
    for name, ds in (("in_memory", memory), ("pipeline", real)):
      times[name].extend(_fit_step_times(net, ds, steps, warmup, callbacks).tolist())
  mem, pipe = (batch_size / float(np.median(times[k])) for k in ("in_memory", "pipeline"))
  return {"batch": batch_size, "in_memory_per_s": mem, "pipeline_per_s": pipe,
          "pipeline_over_in_memory": pipe / mem, "steps_timed": len(times["pipeline"]),
          "mean_rate_in_memory": batch_size * len(times["in_memory"]) / sum(times["in_memory"]),
          "mean_rate_pipeline": batch_size * len(times["pipeline"]) / sum(times["pipeline"])}


def _data_dir(tmp: str, data_dir: str = None) -> tuple:
  from deeppose_tf.data import prepare
  if data_dir:
    return data_dir, "given"
  lspet = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "lspet")
  out = os.path.join(tmp, "data")
  if os.path.isdir(lspet):
    from deeppose_tf.data import lsp, records
    recs = (r for i, r in enumerate(lsp.read_lspet(lspet, "train")) if i < 1000)
    records.write_split(recs, out, "train", 14)
    return out, "lspet (first 1000 training images)"
  prepare.prepare("synthetic", out, num_train=1000, num_test=10)
  return out, "synthetic (1000 images)"


# ---------------------------------------------------------------------------- inference


def random_cascade(config, skeleton, stages: int, sigma: float = 2.0, seed: int = 0):
  """An untrained cascade: S random-weight regressors (random output layer, so the joint
  boxes move with the image like a trained cascade's, rather than all sitting on one point)."""
  import dataclasses
  import keras
  from deeppose_tf import model as model_lib
  from deeppose_tf.cascade import Cascade
  keras.utils.set_random_seed(seed)
  config = dataclasses.replace(config, num_joints=skeleton.num_joints, output_init="default")
  nets = [model_lib.build_regressor(config, name=f"stage{s + 1}") for s in range(stages)]
  return Cascade(nets, skeleton, sigma, config.input_size)


def _images(batch: int, casc, seed: int = 0):
  """(uint8 (B, 2S, 2S, 3) random images, float32 (B, 4) full-image boxes)."""
  side = 2 * casc.input_size
  rng = np.random.RandomState(seed)
  images = rng.randint(0, 256, (batch, side, side, 3)).astype(np.uint8)
  boxes = np.tile(np.array([[side / 2, side / 2, side, side]], np.float32), (batch, 1))
  return images, boxes


def _entry(sec: float, batch: int, bound_sec: float) -> dict:
  """One measurement: seconds per call of `batch` images against the per-image bound."""
  return {"batch": batch, "ms": 1e3 * sec, "ms_per_image": 1e3 * sec / batch,
          "images_per_s": batch / sec, "x_flops_bound": sec / batch / bound_sec}


def _no_rate() -> Optional[float]:
  """The default peak_now: no local matmul rate, so entries carry the run's ratio only."""
  return None


def _localize(e: dict, local: Optional[float], gflops: float) -> dict:
  """Adds the ratio against the matmul rate measured just before this entry (`local`): a
  shared machine's speed drifts within a run (first and last rates of one run differed by
  26% here), so the local ratio is the better estimate."""
  if local:
    e["matmul_gflops_local"] = local
    e["x_flops_bound_local"] = e["x_flops_bound"] * local / gflops
  return e


def _row(name: str, e: dict) -> Row:
  """Batch 1 as latency, larger batches as throughput."""
  rate = (f"{e['ms']:.1f} ms" if e["batch"] == 1 else f"{e['images_per_s']:.2f} img/s")
  ratio = f"{e['x_flops_bound']:.2f}x bound"
  if "x_flops_bound_local" in e:
    ratio += f" ({e['x_flops_bound_local']:.2f}x local)"
  return (name, rate, ratio)


def time_keras(casc, batch: int, min_time: float) -> float:
  """Seconds per call of tf.function(casc.predict) with a fixed (batch, 2S, 2S, 3) uint8
  input signature."""
  import tensorflow as tf
  images, boxes = (tf.constant(a) for a in _images(batch, casc))
  fn = tf.function(casc.predict, input_signature=[tf.TensorSpec.from_tensor(images),
                                                  tf.TensorSpec.from_tensor(boxes)])
  return _timeit(lambda: fn(images, boxes).numpy(), min_time)


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
  images, boxes = (tf.constant(a) for a in _images(batch, casc))
  return _timeit(lambda: fn(images=images, boxes=boxes)["joints"].numpy(), min_time)


def time_tflite(casc, quantize: str, min_time: float, calibration: int = 8) -> dict:
  """Converts (export.convert_tflite) and times batch 1 in the LiteRT interpreter, 2 threads.
  int8 calibrates on random images with full-image boxes."""
  from ai_edge_litert.interpreter import Interpreter
  from deeppose_tf import export
  side = 2 * casc.input_size
  rep = None
  if quantize == "int8":
    images, boxes = _images(calibration, casc, seed=1)
    rep = [(images[i:i + 1].astype(np.float32), boxes[i:i + 1]) for i in range(calibration)]
  t = time.perf_counter()
  model = export.convert_tflite(casc, side, side, quantize, rep)
  convert_s = time.perf_counter() - t
  runner = Interpreter(model_content=model, num_threads=2).get_signature_runner(
      "serving_default")
  images, boxes = _images(1, casc)
  images = images.astype(np.float32)
  sec = _timeit(lambda: runner(image=images, box=boxes), min_time)
  return {"sec": sec, "convert_s": convert_s, "size_mb": len(model) / 1e6}


def profile_batch1(casc, min_time: float) -> Dict[str, float]:
  """Milliseconds of the pieces of one batch-1 cascade call, each timed on its own (its own
  tf.function, so each also pays one call's dispatch): the stage-1 crop and network, one
  refinement stage's K crops and its network on the K crops, and the rest of the whole call
  (joint boxes, output selection; negative when the pieces' dispatch outweighs it)."""
  import tensorflow as tf
  from deeppose_tf import geometry
  k, size = casc.skeleton.num_joints, casc.input_size
  images, boxes = (tf.constant(a) for a in _images(1, casc))
  pose = casc.predict(images, boxes)[:, 0]
  jboxes = tf.reshape(geometry.joint_boxes(pose, casc.skeleton.diameter_indices, casc.sigma),
                      [-1, 4])
  one, many = tf.zeros([1], tf.int32), tf.zeros([k], tf.int32)  # crop box -> image 0
  crops1, crops_k = tf.zeros([1, size, size, 3]), tf.zeros([k, size, size, 3])
  crop = tf.function(lambda i, b, n: geometry.crop(i, b, n, size))
  net = tf.function(lambda x: casc.stages[-1](x, training=False))
  ms = {"stage1_crop": _timeit(lambda: crop(images, boxes, one).numpy(), min_time),
        "stage1_net": _timeit(lambda: net(crops1).numpy(), min_time),
        "refine_crops": _timeit(lambda: crop(images, jboxes, many).numpy(), min_time),
        "refine_net": _timeit(lambda: net(crops_k).numpy(), min_time),
        "cascade": time_keras(casc, 1, min_time)}
  ms = {name: 1e3 * sec for name, sec in ms.items()}
  refinements = casc.num_stages - 1
  ms["sum_of_pieces"] = (ms["stage1_crop"] + ms["stage1_net"]
                         + refinements * (ms["refine_crops"] + ms["refine_net"]))
  ms["other"] = ms["cascade"] - ms["sum_of_pieces"]
  return ms


def scaling_table(config, casc, bound: Callable[[int, int], float],
                  min_time: float, peak_now: Callable[[], Optional[float]] = _no_rate,
                  gflops: float = None) -> List[dict]:
  """Batch-1 Keras cascade latency for S = 1..casc.num_stages and K = 10 (FLIC10) and the
  cascade's own skeleton (LSP14: K = 14), on the first S stages."""
  from deeppose_tf.cascade import Cascade
  from deeppose_tf.skeleton import FLIC10
  table = []
  for full in (random_cascade(config, FLIC10, casc.num_stages), casc):
    k = full.skeleton.num_joints
    for s in range(1, full.num_stages + 1):
      local = peak_now()
      sec = time_keras(Cascade(full.stages[:s], full.skeleton, full.sigma, full.input_size),
                       1, min_time)
      table.append({"skeleton": full.skeleton.name, "joints": k, "stages": s,
                    "crops_per_image": 1 + (s - 1) * k,
                    **_localize(_entry(sec, 1, bound(s, k)), local, gflops)})
  return table


def _tflite_section(casc, quantizations: Sequence[str], per_image: float,
                    min_time: float, peak_now: Callable[[], Optional[float]] = _no_rate,
                    gflops: float = None) -> Tuple[dict, List[Row]]:
  """TFLite batch 1 per quantization; a failed conversion is recorded, not raised."""
  out, rows = {}, []
  for q in quantizations:
    name = {"none": "fp32"}.get(q, q)
    try:
      local = peak_now()
      t = time_tflite(casc, q, min_time)
    except Exception as err:  # pylint: disable=broad-except
      logging.exception("TFLite %s failed", name)
      out[name] = {"error": f"{type(err).__name__}: {err}"[:1000]}
      rows.append((f"  tflite {name}, batch 1", "failed", "see JSON"))
      continue
    out[name] = e = {**_localize(_entry(t["sec"], 1, per_image), local, gflops),
                     "convert_s": t["convert_s"], "size_mb": t["size_mb"]}
    rows.append(_row(f"  tflite {name}, batch 1", e))
  return out, rows


def _profile_rows(prof: dict, casc) -> List[Row]:
  k, refinements = casc.skeleton.num_joints, casc.num_stages - 1
  return [("  profile: stage-1 crop + net",
           f"{prof['stage1_crop']:.1f} + {prof['stage1_net']:.1f} ms",
           f"net {prof['stage1_net'] / prof['stage1_net_bound']:.2f}x bound"),
          (f"  profile: {k} crops + net, x{refinements}",
           f"{prof['refine_crops']:.1f} + {prof['refine_net']:.1f} ms",
           f"net {prof['refine_net'] / prof['refine_net_bound']:.2f}x bound"),
          ("  profile: whole call - pieces", f"{prof['other']:.1f} ms", "")]


def infer_benchmark(config, gflops: float, bf16_gflops: float, stages: int = 3,
                    batches: Sequence[int] = (1, 8, 32),
                    tflite: bool = True, min_time: float = 3.0,
                    quantizations: Sequence[str] = ("none", "float16", "int8"),
                    peak_now: Callable[[], Optional[float]] = _no_rate
                    ) -> Tuple[dict, List[Row]]:
  """Inference of a random-weight LSP14 cascade of `stages` stages: Keras at `batches`,
  the SavedModel at the batches up to 8, bfloat16 and TFLite at batch 1, a batch-1 profile
  and the scaling table. peak_now() -> the matmul rate now: measured before each entry for
  its local ratio. Returns the JSON dict and table rows."""
  from deeppose_tf import model as model_lib
  from deeppose_tf.skeleton import LSP14
  start = time.perf_counter()
  casc = random_cascade(config, LSP14, stages)
  fwd = model_lib.forward_flops(casc.stages[0])

  def bound(s: int, k: int) -> float:  # seconds per image at the matmul rate
    return fwd * (1 + (s - 1) * k) / (gflops * 1e9)

  per_image = bound(stages, LSP14.num_joints)
  out = {"stages": stages, "skeleton": LSP14.name, "image_side": 2 * config.input_size,
         "cascade_gflops_per_image": per_image * gflops,
         "flops_bound_ms_per_image": 1e3 * per_image, "keras": {}, "saved_model": {}}
  rows = [(f"infer: {stages}-stage LSP14 cascade bound", f"{1e3 * per_image:.1f} ms",
           f"{out['cascade_gflops_per_image']:.3g} GFLOP")]

  for b in batches:
    rate = peak_now()
    out["keras"][str(b)] = e = _localize(_entry(time_keras(casc, b, min_time), b, per_image),
                                         rate, gflops)
    rows.append(_row(f"  keras cascade, batch {b}", e))
  with tempfile.TemporaryDirectory() as tmp:
    fn = load_saved_model(casc, os.path.join(tmp, "saved_model"))
    for b in [b for b in batches if b <= 8]:
      rate = peak_now()
      sec = time_saved_model(fn, casc, b, min_time)
      out["saved_model"][str(b)] = e = _localize(_entry(sec, b, per_image), rate, gflops)
      rows.append(_row(f"  SavedModel predict_images, batch {b}", e))
  # bfloat16 networks (export --precision=bfloat16), against the same fp32 bound and
  # against the bound at the measured bfloat16 matmul rate.
  bf16 = casc.with_precision("bfloat16")
  out["bfloat16"] = {"matmul_gflops": bf16_gflops}
  with tempfile.TemporaryDirectory() as tmp:
    bf16_fn = load_saved_model(bf16, os.path.join(tmp, "saved_model"))
    timers = {"keras": lambda: time_keras(bf16, 1, min_time),
              "saved_model": lambda: time_saved_model(bf16_fn, bf16, 1, min_time)}
    for name, timer in timers.items():
      rate = peak_now()
      sec = timer()
      out["bfloat16"][name] = e = _localize(_entry(sec, 1, per_image), rate, gflops)
      e["x_bf16_flops_bound"] = sec / (per_image * gflops / bf16_gflops)
      rows.append((f"  {name} bfloat16, batch 1", f"{e['ms']:.1f} ms",
                   f"{e['x_flops_bound']:.2f}x fp32 bound, "
                   f"{e['x_bf16_flops_bound']:.2f}x bf16 bound"))
  if tflite:
    out["tflite"], tflite_rows = _tflite_section(casc, quantizations, per_image, min_time,
                                                 peak_now, gflops)
    rows += tflite_rows
  rate = peak_now() or gflops
  out["profile_batch1_ms"] = prof = profile_batch1(casc, min_time)
  prof["matmul_gflops_local"] = rate  # the nets' bounds below are at this rate
  prof["stage1_net_bound"] = 1e3 * fwd / (rate * 1e9)
  prof["refine_net_bound"] = prof["stage1_net_bound"] * LSP14.num_joints
  rows += _profile_rows(prof, casc)
  out["scaling"] = scaling_table(config, casc, bound, min_time, peak_now, gflops)
  rows += [_row(f"  keras batch 1, S={e['stages']} K={e['joints']}", e)
           for e in out["scaling"]]
  out["wall_s"] = time.perf_counter() - start
  return out, rows


# ---------------------------------------------------------------------------- accuracy


def quantized_accuracy(workdir: str, tmp: str, split: str = "test",
                       limit: int = None) -> Tuple[dict, List[Row]]:
  """Accuracy of a trained cascade as shipped: the Keras cascade in fp32 and bfloat16, and
  TFLite fp32 and int8 (export.export_tflite, int8 calibrated on training images), evaluated
  by evaluate.run on `split`. Reports the last stage's PCP and PDJ@0.1/0.2, int8 minus fp32
  and bfloat16 minus fp32."""
  from deeppose_tf import evaluate, export
  out, rows = {}, []
  for name, quantize in (("keras", None), ("keras_bf16", "bfloat16"), ("tflite_fp32", "none"),
                         ("tflite_int8", "int8")):
    path, precision = None, "float32"
    if quantize == "bfloat16":
      precision = quantize
    elif quantize:
      path = export.export_tflite(workdir, os.path.join(tmp, f"{name}.tflite"), quantize)
    report = evaluate.run(workdir, split, limit=limit, tflite=path, precision=precision,
                          report_dir=os.path.join(tmp, name), num_examples=0)
    last = report["stages"][-1]
    out[name] = {"pcp": last["pcp_mean"], "pdj@0.1": last["pdj_mean_at"]["0.1"],
                 "pdj@0.2": last["pdj_mean_at"]["0.2"], "stages": len(report["stages"]),
                 "num_images": report["num_images"]}
    rows.append((f"accuracy {name} ({split}, stage {len(report['stages'])})",
                 f"PCP {last['pcp_mean']:.3f}",
                 f"PDJ@0.2 {last['pdj_mean_at']['0.2']:.3f}"))
  out["int8_minus_fp32_pcp"] = out["tflite_int8"]["pcp"] - out["tflite_fp32"]["pcp"]
  out["bf16_minus_fp32_pcp"] = out["keras_bf16"]["pcp"] - out["keras"]["pcp"]
  rows.append(("  int8 - fp32 (TFLite)", f"PCP {out['int8_minus_fp32_pcp']:+.3f}", ""))
  rows.append(("  bfloat16 - fp32 (Keras)", f"PCP {out['bf16_minus_fp32_pcp']:+.3f}", ""))
  return out, rows


# ---------------------------------------------------------------------------- driver


def run(only: Sequence[str], input_size: int = 220, width: float = 1.0, fc_units: int = 4096,
        batch_size: int = 32, draws: int = 40, data_dir: str = None, stages: int = 3,
        infer_batches: Sequence[int] = (1, 8, 32), tflite: bool = True,
        min_time: float = 3.0, matmul_n: int = 2048, workdir: str = None,
        eval_split: str = "test", eval_limit: int = None, backbone: str = "alexnet",
        head: str = "fc", heatmap_stride: int = 8, head_channels: int = 128,
        loss: str = "l2", heatmap_loss_weight: float = 0.0,
        train_rounds: int = 2, precision: str = "float32", augment: str = "recipe",
        cache_max_side: Optional[int] = 320) -> Tuple[dict, List[Row]]:
  """Runs the selected benchmarks (the peak always); returns the JSON dict and table rows.
  backbone, head, heatmap_stride, head_channels: the network of every section
  (model_lib.ModelConfig); loss, heatmap_loss_weight: how train and e2e train it
  (trainer.FitConfig); train_rounds: alternating fp32/bf16 rounds of the train section;
  precision: the training precision of the e2e section; augment, cache_max_side: what the
  pipeline and e2e sections feed (pipeline.train_dataset)."""
  import tensorflow as tf
  from deeppose_tf import model as model_lib
  from deeppose_tf.skeleton import LSP14
  only = set(only)
  unknown = only - set(BENCHMARKS)
  if unknown:
    raise ValueError(f"unknown benchmarks {sorted(unknown)}; choose from {BENCHMARKS}")
  if "quant" in only and not workdir:
    raise ValueError("the quant benchmark measures a trained cascade: pass --workdir")
  if heatmap_loss_weight < 0:
    raise ValueError(f"heatmap_loss_weight must be >= 0, got {heatmap_loss_weight}")
  if heatmap_loss_weight > 0 and head != "integral":
    raise ValueError("heatmap_loss_weight > 0 needs head='integral' (the heatmap loss "
                     "trains the integral head's heatmaps)")
  result: Dict[str, object] = {"tensorflow": tf.__version__, "cpus": os.cpu_count()}
  peak = matmul_peak(matmul_n, min_time)
  result.update(peak)
  gflops = peak["matmul_gflops"]
  config = model_lib.ModelConfig(num_joints=14, input_size=input_size, width=width,
                                 fc_units=fc_units, backbone=backbone, head=head,
                                 heatmap_stride=heatmap_stride, head_channels=head_channels)
  fwd = model_lib.forward_flops(model_lib.build_regressor(config))
  result["model"] = {"input_size": config.input_size, "width": config.width,
                     "fc_units": config.fc_units, "backbone": config.backbone,
                     "head": config.head, "heatmap_stride": config.heatmap_stride,
                     "head_channels": config.head_channels,
                     "forward_gflops_per_crop": fwd / 1e9,
                     "cascade_gflops_per_image_3_stages_14_joints": fwd * (1 + 2 * 14) / 1e9}
  if only & {"train", "e2e"}:
    result["training"] = {"loss": loss, "heatmap_loss_weight": heatmap_loss_weight}
  rows = [("matmul fp32", f"{gflops:.0f} GFLOP/s", "1.00")]
  bf16_gflops = None
  if only & {"train", "infer"}:  # measured once, for both
    bf16_gflops = matmul_peak(matmul_n, min_time, "bfloat16")["matmul_gflops"]
    result["matmul_bf16_gflops"] = bf16_gflops
    rows.append(("matmul bfloat16", f"{bf16_gflops:.0f} GFLOP/s", f"{bf16_gflops / gflops:.2f}"))
  with tempfile.TemporaryDirectory() as tmp:
    if "train" in only:
      rates = train_step_precisions(config, batch_size, loss, heatmap_loss_weight,
                                    rounds=train_rounds)
      rate, bf16_rate = rates["float32"], rates["bfloat16"]
      frac = 3 * fwd * rate / 1e9 / gflops
      bf16_frac = 3 * fwd * bf16_rate / 1e9 / bf16_gflops
      result["train_step"] = {"batch": batch_size, "images_per_s": rate,
                              "fraction_of_matmul_peak": frac}
      result["train_step_bf16"] = {"batch": batch_size, "images_per_s": bf16_rate,
                                   "fraction_of_bf16_matmul_peak": bf16_frac}
      result["bf16_over_fp32_train_step"] = bf16_rate / rate
      rows.append((f"train step fp32, batch {batch_size}", f"{rate:.1f} img/s",
                   f"{frac:.2f} of fp32 matmul"))
      rows.append((f"train step bfloat16, batch {batch_size}", f"{bf16_rate:.1f} img/s",
                   f"{bf16_frac:.2f} of bf16 matmul"))
      rows.append(("  train step bfloat16 / fp32", f"{bf16_rate / rate:.2f}x", ""))
    if only & {"pipeline", "e2e"}:
      data_dir, result["data"] = _data_dir(tmp, data_dir)
    # Refinement crops around joints displaced by N(0, 0.2 I) joint-box sides.
    refine = {"sigma": 2.0, "mean": np.zeros((14, 2)),
              "chol": np.tile(np.eye(2) * 0.2, (14, 1, 1)), "draws": draws}
    if "pipeline" in only:
      s1 = pipeline_throughput(data_dir, LSP14, config.input_size, batch_size,
                               augment=augment, cache_max_side=cache_max_side)
      s2 = pipeline_throughput(data_dir, LSP14, config.input_size, batch_size, refine,
                               augment=augment, cache_max_side=cache_max_side)
      result["pipeline"] = {"stage1_images_per_s": s1, "refine_crops_per_s": s2,
                            "draws": draws}
      rows.append(("pipeline stage 1", f"{s1:.0f} img/s", ""))
      rows.append((f"pipeline refine ({draws} draws)", f"{s2:.0f} crops/s", ""))
      if "train_step" in result:
        need = result["train_step"]["images_per_s"]
        result["pipeline"]["stage1_over_train_step"] = s1 / need
        result["pipeline"]["refine_over_train_step"] = s2 / need
        rows.append(("  pipeline / train step", f"{s1 / need:.2f}x, {s2 / need:.2f}x", ""))
    if "e2e" in only:
      result["e2e"] = {}
      for name, r in (("stage1", None), ("refine", refine)):
        result["e2e"][name] = e = end_to_end(
            dataclasses.replace(config, precision=precision), data_dir, LSP14, batch_size, r,
            loss=loss, heatmap_loss_weight=heatmap_loss_weight, augment=augment,
            cache_max_side=cache_max_side)
        unit = "img/s" if r is None else "crops/s"
        rows.append((f"e2e {name}: in memory -> pipeline",
                     f"{e['in_memory_per_s']:.1f} -> {e['pipeline_per_s']:.1f} {unit}",
                     f"{e['pipeline_over_in_memory']:.2f} of in-memory"))
  if "infer" in only:
    result["infer"], infer_rows = infer_benchmark(
        config, gflops, bf16_gflops, stages, infer_batches, tflite, min_time,
        peak_now=lambda: matmul_peak(matmul_n, min(min_time, 1.5))["matmul_gflops"])
    rows.extend(infer_rows)
  if "quant" in only:
    with tempfile.TemporaryDirectory() as tmp:
      result["quant"], quant_rows = quantized_accuracy(workdir, tmp, eval_split, eval_limit)
    result["quant"]["workdir"] = workdir
    rows.extend(quant_rows)
  if only - {"peak"}:
    # The machine's rate drifts on shared hosts: measured again at the end, so a reader can
    # see how far the ratios above could move.
    end = matmul_peak(matmul_n, min_time)["matmul_gflops"]
    result["matmul_gflops_end"] = end
    rows.append(("matmul fp32 again, at the end", f"{end:.0f} GFLOP/s", f"{end / gflops:.2f}"))
  return result, rows


def format_table(rows: Sequence[Row]) -> str:
  width = max(len(r[0]) for r in rows)
  lines = [f"{'benchmark':<{width}}  {'rate':>22}  of peak / bound"]
  lines += [f"{name:<{width}}  {rate:>22}  {frac}" for name, rate, frac in rows]
  return "\n".join(lines)


def main(argv):
  del argv
  result, rows = run(FLAGS.only, FLAGS.input_size, FLAGS.width, FLAGS.fc_units,
                     FLAGS.batch_size, FLAGS.draws, FLAGS.data_dir, FLAGS.stages,
                     [int(b) for b in FLAGS.infer_batches], FLAGS.tflite,
                     workdir=FLAGS.workdir, eval_split=FLAGS.eval_split,
                     eval_limit=FLAGS.eval_limit or None, backbone=FLAGS.backbone,
                     head=FLAGS.head, heatmap_stride=FLAGS.heatmap_stride,
                     head_channels=FLAGS.head_channels, loss=FLAGS.loss,
                     heatmap_loss_weight=FLAGS.heatmap_loss_weight,
                     precision=FLAGS.precision, augment=FLAGS.augment,
                     cache_max_side=None if FLAGS.cache_max_side < 0 else FLAGS.cache_max_side)
  print(format_table(rows))
  if FLAGS.json:
    from deeppose_tf import atomic
    atomic.write_text(FLAGS.json, json.dumps(result, indent=1))
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  flags.DEFINE_list("only", ["peak", "pipeline", "train"], "Benchmarks to run, from "
                    f"{', '.join(BENCHMARKS)} (the matmul peak always runs). train: the train "
                    "step in float32 and bfloat16, alternating, each against its own measured "
                    "matmul peak, and bf16/fp32; e2e: training "
                    "through the pipeline against in-memory data; quant: Keras fp32/bfloat16 and "
                    "TFLite fp32/int8 accuracy of the trained cascade in --workdir.")
  flags.DEFINE_string("workdir", None, "quant: workdir of a trained cascade.")
  flags.DEFINE_string("eval_split", "test", "quant: split to evaluate.")
  flags.DEFINE_integer("eval_limit", 0, "quant: at most this many images (0 = all).")
  flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
  flags.DEFINE_string("data_dir", None, "Prepared TFRecords with a 'train' split.")
  flags.DEFINE_integer("input_size", 220, "Network input size.")
  flags.DEFINE_float("width", 1.0, "Filter multiplier.")
  flags.DEFINE_integer("fc_units", 4096, "Fully connected units.")
  flags.DEFINE_enum("backbone", "alexnet", ["alexnet", "resnet", "mobilenetv2"],
                    "Network backbone of every section (model.ModelConfig.backbone).")
  flags.DEFINE_enum("head", "fc", ["fc", "integral"], "Network head of every section: fc "
                    "(fully connected) or integral (heatmaps + soft-argmax).")
  flags.DEFINE_integer("heatmap_stride", 8, "Integral head: heatmap cell size in input "
                       "pixels, 4 or 8.")
  flags.DEFINE_integer("head_channels", 128, "Integral head: channels of its lateral and fusion "
                       "convolutions.")
  flags.DEFINE_enum("loss", "l2", ["l2", "l1", "smooth_l1"], "train, e2e: the coordinate "
                    "loss (trainer.FitConfig.loss).")
  flags.DEFINE_float("heatmap_loss_weight", 0.0, "train, e2e: weight of the heatmap "
                     "cross-entropy (integral head; > 0 trains model.training_model with "
                     "both outputs, as the trainer does).")
  flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"], "e2e: training "
                    "precision (the train section always measures both).")
  flags.DEFINE_enum("augment", "recipe", list(AUGMENTS), "pipeline, e2e: the augmentation fed: "
                    "the flags' training recipe (rotation, scale, shift, flip, colour) or the "
                    "paper's light jitter.")
  flags.DEFINE_integer("cache_max_side", 320, "pipeline, e2e: the in-memory image cache as "
                       "train's --cache_max_side (-1: decode every JPEG every visit).")
  flags.DEFINE_integer("batch_size", 32, "Batch size (images or crops).")
  flags.DEFINE_integer("draws", 40, "Refinement crops per image visit.")
  flags.DEFINE_integer("stages", 3, "infer: cascade stages S (the scaling table: 1..S).")
  flags.DEFINE_list("infer_batches", ["1", "8", "32"], "infer: Keras cascade batch sizes.")
  flags.DEFINE_boolean("tflite", True, "infer: also convert to TFLite (fp32, float16, int8) "
                       "and time batch 1.")
  app.run(main)
