"""Recovers a trainable Keras cascade from a TFLite file this package exported, so that a
shipped model (deeppose_tf/models/deeppose_lspet.tflite) can be fine-tuned when its training
workdir is gone.

The TFLite converter folds every BatchNormalization into the convolution before it and drops
the layer names, so the weights cannot be read back by name. Instead:

1. `--skeleton_workdir`: a workdir of the same architecture and cascade settings (train the
   file's recipe for one step a stage: `train --flagfile=F --steps_per_stage=1,1
   --stats_images=64 --noevaluate --noexport --workdir=SKEL`).
2. Every variable of its networks is set to distinct random values, and every BatchNorm to
   gamma 1, mean 0, variance 1 - epsilon (so it folds to the identity plus beta), and that
   cascade is exported exactly as the file was (`--tflite_size`, `--quantize`). Its constant
   tensors come out in the same order and shapes as the file's; each one is matched to the
   Keras variable it came from by value (sorted values: independent of the layout), which
   gives the layout (transpose) too.
3. The file's constants go back into those variables: kernels as the folded kernels, each
   BatchNorm with its folded bias as beta. The Keras cascade then computes what the file
   computes (checked on real images, step 5).
4. BatchNorm layers that fine-tuning trains see batch statistics, not the stored ones, so a
   folded network would change its function at the first training step. Each BatchNorm's
   input is therefore measured on training batches of its stage (`pipeline.train_dataset`,
   the skeleton's settings): mean m, variance v per channel; the layer becomes mean m,
   variance v, gamma sqrt(v + eps), beta b + m, the same function at inference and nearly
   the same under batch statistics.
5. Checks: the recovered Keras cascade against the TFLite file on `--check_images` val
   photos (joints in pixels), and each stage's training-mode output against its inference
   output on a training batch.

Writes `--out_workdir` (a copy of the skeleton's config.json, mean_pose.json, flags.txt and
the recovered stageN/model.keras). Train from it with `--init_weights=OUT/stage1/model.keras`.

  python experiments/recover_tflite.py --flagfile=experiments/lsp_imagenet_joints.flags \
      --num_stages=2 --steps_per_stage=1,1 --tflite=deeppose_tf/models/deeppose_lspet.tflite \
      --skeleton_workdir=runs/skel --out_workdir=runs/recovered
"""

from __future__ import annotations

import os
import shutil

from absl import app, flags, logging
import numpy as np

from deeppose_tf import flags as dp_flags

dp_flags.define_train_flags()
flags.DEFINE_string("tflite", None, "The TFLite cascade to recover.")
flags.DEFINE_string("skeleton_workdir", None, "A workdir of the same architecture (above).")
flags.DEFINE_string("out_workdir", None, "Where the recovered workdir is written.")
flags.DEFINE_integer("calib_batches", 8, "Training batches per stage for BatchNorm statistics.")
flags.DEFINE_integer("check_images", 20, "Val photos on which Keras and TFLite are compared.")
FLAGS = flags.FLAGS


def _layers(model):
  """Every layer of `model`, nested models' layers included (depth first)."""
  import keras
  out = []
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      out.extend(_layers(layer))
    else:
      out.append(layer)
  return out


def _constants(path_or_bytes):
  """The weights each operator of the file reads: [((operator index, input slot), values
  float32)], in operator order. A weight is a constant buffer, or a float16 buffer behind a
  DEQUANTIZE. Operators, not buffers: the converter stores identical constants once (two
  stages' identical frozen layers), so buffers do not line up between two exports."""
  from tensorflow.lite.python import schema_py_generated as schema
  from tensorflow.lite.tools import flatbuffer_utils
  if isinstance(path_or_bytes, bytes):
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path_or_bytes, 0))
  else:
    model = flatbuffer_utils.read_model(path_or_bytes)
  names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
  graph = model.subgraphs[0]
  dtypes = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16}

  def buffer_value(t):
    tensor = graph.tensors[t]
    data = model.buffers[tensor.buffer].data
    if data is None or len(data) == 0 or tensor.type not in dtypes:
      return None
    return np.frombuffer(bytes(bytearray(data)), dtypes[tensor.type]).astype(
        np.float32).reshape(tensor.shape)

  def op_name(op):
    code = model.operatorCodes[op.opcodeIndex]
    return names.get(max(code.builtinCode, code.deprecatedBuiltinCode))

  value_of = {}
  for op in graph.operators:
    if op_name(op) == "DEQUANTIZE":
      v = buffer_value(op.inputs[0])
      if v is not None:
        value_of[op.outputs[0]] = v
  out = []
  ops = [op for op in graph.operators if op_name(op) != "DEQUANTIZE"]
  for i, op in enumerate(ops):
    for j, t in enumerate(op.inputs):
      if t < 0:
        continue
      v = value_of.get(t)
      if v is None:
        v = buffer_value(t)
      if v is not None and v.size >= 2:
        out.append(((i, op_name(op), j), f"op {i} {op_name(op)} input {j}", v))
  return out


# Keras layout -> TFLite layout candidates (conv (kh,kw,in,out) -> (out,kh,kw,in); depthwise
# (kh,kw,in,1) -> (1,kh,kw,in); dense (in,out) -> (out,in); vectors unchanged).
_LAYOUTS = {
    "same": (lambda k: k, lambda t, shape: t.reshape(shape)),
    "conv": (lambda k: np.transpose(k, (3, 0, 1, 2)),
             lambda t, shape: np.transpose(t.reshape(shape[3], shape[0], shape[1], shape[2]),
                                           (1, 2, 3, 0))),
    "dense": (lambda k: k.T, lambda t, shape: t.reshape(shape[1], shape[0]).T),
}


def _match(fresh, variables):
  """fresh: [(index, name, values)]; variables: [(key, float16-rounded values)]. For each
  fresh constant, the variable it was made from and the layout: [(key or None, layout)]."""
  by_size = {}
  for key, value in variables:
    by_size.setdefault(value.size, []).append((key, value, np.sort(value.ravel())))
  out = []
  for _, name, value in fresh:
    if not np.any(value):
      out.append((None, None))
      continue
    flat = np.sort(value.ravel())
    best = None
    for key, v, sorted_v in by_size.get(value.size, []):
      err = float(np.max(np.abs(sorted_v - flat)))
      if best is None or err < best[0]:
        best = (err, key, v)
    scale = float(np.max(np.abs(flat))) or 1.0
    if best is None or best[0] > 2e-3 * scale:
      out.append((None, None))
      continue
    _, key, v = best
    layout = None
    for lname, (to_tfl, _) in _LAYOUTS.items():
      try:
        t = to_tfl(v)
      except ValueError:
        continue
      if t.size == value.size and np.max(np.abs(t.reshape(value.shape) - value)) <= 2e-3 * scale:
        layout = lname
        break
    out.append((key, layout))
  return out


def main(argv):
  del argv
  import keras
  import tensorflow as tf
  from deeppose_tf import cascade as cascade_lib
  from deeppose_tf import pipeline, tflite_cascade
  from deeppose_tf import workdir as workdir_lib
  from deeppose_tf.data import datasets
  from deeppose_tf.export import tflite as tflite_lib

  skel = FLAGS.skeleton_workdir
  casc = cascade_lib.Cascade.load(skel)
  # The export's facts: embedded in the file, and in its sidecar.
  meta = tflite_cascade.read_model_meta(FLAGS.tflite)
  height, width = meta["canvas"]
  for key in ("flip_test", "reframe", "reframe_grow", "refine_step", "input_size", "sigma"):
    mine = getattr(casc, key)
    if meta.get(key) is not None and float(meta[key]) != float(mine):
      raise SystemExit(f"the skeleton's {key} is {mine}, the file's {meta[key]}")

  # 2. Distinct random values everywhere; BatchNorm folding to identity + beta.
  rng = np.random.default_rng(0)
  variables = {}  # key -> keras variable
  bns = []  # (stage, layer)
  for s, net in enumerate(casc.stages):
    for layer in _layers(net):
      if isinstance(layer, keras.layers.BatchNormalization):
        bns.append((s, layer))
        g, b, m, v = layer.get_weights()
        eps = layer.epsilon
        layer.set_weights([np.ones_like(g), rng.normal(0, 0.5, b.shape).astype(np.float32),
                           np.zeros_like(m), np.full_like(v, 1.0 - eps)])
        variables[(s, layer.name, 1)] = layer
        continue
      ws = layer.get_weights()
      if not ws:
        continue
      layer.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in ws])
      for i in range(len(ws)):
        variables[(s, layer.name, i)] = layer
  values = []
  for key, layer in variables.items():
    w = layer.get_weights()[key[2]]
    values.append((key, np.asarray(w, np.float32).astype(np.float16).astype(np.float32)))
  shapes = {key: v.shape for key, v in values}
  logging.info("exporting the randomized skeleton (%dx%d, %s)", height, width, meta["quantize"])
  fresh_bytes = tflite_lib.convert_tflite(casc, height, width, meta["quantize"])
  fresh = _constants(fresh_bytes)
  shipped = _constants(FLAGS.tflite)
  if [(c[0], c[2].shape) for c in fresh] != [(c[0], c[2].shape) for c in shipped]:
    raise SystemExit(f"the skeleton's export reads {len(fresh)} weights, the file "
                     f"{len(shipped)}, or their operators or shapes differ: not the same "
                     "architecture")
  matches = _match(fresh, values)
  recovered = {}
  for (key, layout), (_, name, value) in zip(matches, shipped):
    if key is None:
      continue
    if layout is None:
      raise SystemExit(f"constant {name} matches {key} by value but in no known layout")
    w = _LAYOUTS[layout][1](value, shapes[key])
    if key in recovered and np.max(np.abs(recovered[key] - w)) > 1e-6:
      raise SystemExit(f"two constants of the file map to {key} with other values")
    recovered[key] = w
  missing = [k for k in variables if k not in recovered]
  logging.info("recovered %d of %d variables; not in the file: %s", len(recovered),
               len(variables), missing)
  bad = [k for k in missing if k[2] != 0 or not isinstance(
      variables[k], keras.layers.Conv2D) or variables[k].use_bias]
  # A bias-free conv whose kernel is all zeros cannot be matched; anything else is an error.
  if bad:
    raise SystemExit(f"variables with no constant in the file: {bad}")
  for key, w in recovered.items():
    layer = variables[key]
    ws = layer.get_weights()
    ws[key[2]] = w
    layer.set_weights(ws)

  # 5a. The recovered cascade against the file, on real val photos.
  data_dir = dp_flags.resolve_data_dir(FLAGS)
  skeleton = datasets.skeleton_of(FLAGS.dataset, data_dir)
  # The builtin fp32 kernels, not XNNPACK: this checks weights, and XNNPACK's arithmetic
  # varies with the CPU (CI saw every one of 4 photos move a joint 40 px on it).
  runner = tflite_cascade.TFLiteCascade(FLAGS.tflite, skeleton, xnnpack=False)
  from deeppose_tf.data import prepare
  ds = pipeline.eval_dataset(data_dir, prepare.SPLITS[FLAGS.dataset][-1], skeleton, 1)
  diffs = []  # (S, K, 2) per photo
  predict = casc.traced_predict()
  for batch in ds.take(FLAGS.check_images):
    image, box = batch["image"], batch["box"]
    keras_pose = predict(tf.cast(image, tf.uint8), box).numpy()[0]
    tfl_pose = runner.predict_one(image.numpy()[0], box.numpy()[0])
    diffs.append(np.abs(tfl_pose - keras_pose))
  close = float(np.mean([np.mean(d <= 1.0) for d in diffs]))
  logging.info("Keras vs TFLite on %d val photos: %.1f%% of joint coordinates within 1 px; "
               "per-photo max difference: median %.2f px, max %.2f px", len(diffs),
               100 * close, float(np.median([d.max() for d in diffs])),
               max(float(d.max()) for d in diffs))
  # Joints are decoded at heatmap peaks. A barely trained network's heatmaps are nearly
  # flat, so float16 rounding can move a near-tie peak anywhere in its crop: a photo's
  # largest difference says little. Weights recovered into the wrong layers move nearly
  # every joint; the share of coordinates that agree tells the two apart.
  if close < 0.9:
    raise SystemExit(f"the recovered cascade differs from {FLAGS.tflite}: only "
                     f"{100 * close:.1f}% of joint coordinates within 1 px (90% needed)")

  # 4. BatchNorm statistics from training batches of each stage.
  settings = dp_flags.stage_settings(FLAGS, skeleton, data_dir)
  for s, net in enumerate(casc.stages):
    stage = s + 1
    refine = None
    if stage > 1:
      refine = settings.refine_for(workdir_lib.load_stats(skel, stage - 1))
    ds = pipeline.train_dataset(settings.train_dirs, settings.train_split, skeleton,
                                settings.model.input_size, settings.batch_size, 7 + stage,
                                settings.augment, refine, cache_max_side=0,
                                box_source=settings.stage1_box)
    layers = [layer for (t, layer) in bns if t == s]
    bn_inputs = _bn_inputs(net, layers)
    sums = [None] * len(layers)
    batches = [b[0] for b in ds.take(FLAGS.calib_batches)]
    for images in batches:
      for j, a in enumerate(bn_inputs(images)):
        a = a.reshape(-1, a.shape[-1]).astype(np.float64)
        part = np.stack([a.sum(0), (a * a).sum(0), np.full(a.shape[1], a.shape[0])])
        sums[j] = part if sums[j] is None else sums[j] + part
    before = net(batches[0], training=False)
    for layer, (s1, s2, n) in zip(layers, sums):
      mean = s1 / n
      var = np.maximum(s2 / n - mean ** 2, 0.0)
      g, b, m, v = layer.get_weights()
      eps = layer.epsilon
      layer.set_weights([np.sqrt(var + eps).astype(np.float32), (b + mean).astype(np.float32),
                         mean.astype(np.float32), var.astype(np.float32)])
    after = net(batches[0], training=False)
    trained = net(batches[0], training=True)
    logging.info("stage %d: %d BatchNorm layers calibrated on %d batches; inference output "
                 "moved %.2e (should be ~0), training-mode output differs by %.3f (mean abs, "
                 "box units)", stage, len(layers), len(batches),
                 float(np.max(np.abs(before - after))), float(np.mean(np.abs(trained - after))))

  out = FLAGS.out_workdir
  os.makedirs(out, exist_ok=True)
  for name in ("config.json", "mean_pose.json", "flags.txt"):
    shutil.copy(os.path.join(skel, name), os.path.join(out, name))
  for s, net in enumerate(casc.stages):
    os.makedirs(workdir_lib.stage_dir(out, s + 1), exist_ok=True)
    workdir_lib.save_model(net, workdir_lib.model_path(out, s + 1))
  # The skeleton's displacement statistics describe its one-step stage 1, not the recovered
  # one: they are not copied (train measures them again, --stage=1 on the new workdir).
  logging.info("wrote %s", out)


def _bn_inputs(net, layers):
  """A function: images -> the inputs of `layers` (BatchNorm layers anywhere in `net`,
  nested backbone included) as numpy arrays, in inference mode. Its probe models are built
  once, here."""
  import keras
  import tensorflow as tf
  # A layer inside a nested model (the backbone) is probed in that model's graph, whose
  # input is the outer "scale" layer's output; the rest in the outer graph.
  groups = []  # (probe model, the layers it returns, reads the scaled images)
  left = list(layers)
  for sub in (l for l in net.layers if isinstance(l, keras.Model)):
    mine = [l for l in left if any(l is m for m in sub.layers)]
    if mine:
      groups.append((keras.Model(sub.inputs, [l.input for l in mine]), mine, True))
      left = [l for l in left if not any(l is m for m in mine)]
  if left:
    groups.append((keras.Model(net.inputs, [l.input for l in left]), left, False))
  scale = net.get_layer("scale")

  def run(images):
    images = tf.convert_to_tensor(images, tf.float32)
    scaled = scale(images)
    outs = {}
    for probe, mine, reads_scaled in groups:
      res = probe(scaled if reads_scaled else images, training=False)
      res = res if isinstance(res, (list, tuple)) else [res]
      outs.update((id(l), np.asarray(r)) for l, r in zip(mine, res))
    return [outs[id(l)] for l in layers]
  return run


if __name__ == "__main__":
  flags.mark_flags_as_required(["tflite", "skeleton_workdir", "out_workdir"])
  app.run(main)
