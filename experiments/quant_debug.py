"""Where int8 loses accuracy: LiteRT's quantization debugger
(tf.lite.experimental.QuantizationDebugger), layer by layer, on each stage network of a
trained workdir, fed the crops that stage sees.

For stage 1 the crops are the person boxes of --split; for a refinement stage, the joint
boxes around the previous stage's poses (what Cascade.predict feeds it). Each network is
converted alone (up to its heatmap logits, where it has a heatmap head: the decoding after
them stays float in export's int8) with every layer in int8 (as a plain post-training int8 conversion would),
calibrated and debugged on those crops. Per layer (the op's output tensor) the debugger
measures the int8 result against the float one on the same int8 input: rmse/scale is that
error in units of the tensor's quantization step (about 0.29 is pure rounding; much more
means the layer's range is too wide for 256 levels). The script also reports each
network's output error against the float network in its own units (heatmap logits, or
box-normalized joints for the fc head).

  taskset -c 0 python experiments/quant_debug.py --workdir=runs/lsp_imagenet \\
      --split=train --count=32 --output=experiments/quant_debug.json

The JSON lists every layer; the printout shows the worst ten per stage.
"""

import json
import os
import tempfile

import numpy as np
import tensorflow as tf
from absl import app, flags

flags.DEFINE_string("workdir", None, "A trained cascade's workdir.")
flags.DEFINE_string("data_dir", None, "Prepared records (default: config.json's data_dir).")
flags.DEFINE_string("split", "train", "Split whose images make the crops.")
flags.DEFINE_integer("count", 32, "Images (stage 1 crops; K crops each for later stages).")
flags.DEFINE_string("output", None, "JSON file for the per-layer statistics.")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def stage_crops(casc, images, boxes):
  """[(N_s, S, S, 3) float32 crops of each stage]: stage 1 on `boxes`, then each refinement
  stage on the joint boxes of the previous stage's pose (as Cascade.predict does; no flips
  or reframing, which only change which crops stage 1 sees)."""
  from deeppose_tf import geometry
  size = casc.input_size
  b = tf.shape(images)[0]
  k = casc.skeleton.num_joints
  crops = casc.crop(images, boxes, tf.range(b), size)
  out = [crops.numpy()]
  pose = geometry.denormalize(casc.stages[0](crops, training=False), boxes)
  own = tf.eye(k)[None, :, :, None]
  for net in casc.stages[1:]:
    jboxes = geometry.joint_boxes(pose, casc.skeleton.diameter_indices, casc.sigma)
    crops = casc.crop(images, tf.reshape(jboxes, [-1, 4]), tf.repeat(tf.range(b), k), size)
    out.append(crops.numpy())
    res = tf.reshape(net(crops, training=False), [b, k, k, 2])
    pose = geometry.denormalize(tf.reduce_sum(res * own, axis=2)[..., None, :], jboxes)[..., 0, :]
  return out


def converter_for(net, size, tmp):
  """A TFLiteConverter of one stage network at [1, size, size, 3], through an ExportArchive
  SavedModel (the route export/tflite.py takes: the weights become constants)."""
  import keras
  archive = keras.export.ExportArchive()
  archive.track(net)
  archive.add_endpoint("serving_default", lambda x: net(x, training=False),
                       input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, "crop")])
  archive.write_out(tmp, verbose=False)
  converter = tf.lite.TFLiteConverter.from_saved_model(tmp, ["serving_default"])
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  return converter


def debug_stage(net, crops, size):
  """(per-layer rows sorted worst first, output error summary) for one network."""
  import csv
  import io
  with tempfile.TemporaryDirectory() as tmp:
    converter = converter_for(net, size, tmp)
    data = lambda: ([c[None]] for c in crops)  # noqa: E731
    converter.representative_dataset = data
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                         debug_dataset=data)
    debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
  rows = []
  for r in csv.DictReader(io.StringIO(buf.getvalue())):
    scale = float(r["scale"]) if r["scale"] else float("nan")
    rmse = float(np.sqrt(float(r["mean_squared_error"])))
    rows.append({"op": r["op_name"], "tensor": r["tensor_name"].split(";")[0],
                 "rmse_over_scale": rmse / scale if scale else float("nan"),
                 "rmse": rmse, "scale": scale,
                 "max_abs_error": float(r["max_abs_error"])})
  rows.sort(key=lambda r: -np.nan_to_num(r["rmse_over_scale"], nan=-1))
  return rows


def main(argv):
  del argv
  from deeppose_tf import pipeline
  from deeppose_tf.cascade import Cascade
  from deeppose_tf.workdir import read_config
  from deeppose_tf.skeleton import get_skeleton
  casc = Cascade.load(FLAGS.workdir)
  config = read_config(FLAGS.workdir)
  data_dir = FLAGS.data_dir or config["data_dir"]
  ds = pipeline.eval_dataset(data_dir, FLAGS.split, get_skeleton(config["skeleton"]),
                             FLAGS.count, FLAGS.count)
  batch = next(iter(ds))
  stages = stage_crops(casc, tf.cast(batch["image"], tf.float32), batch["box"])
  report = {"workdir": FLAGS.workdir, "split": FLAGS.split, "count": FLAGS.count,
            "stages": []}
  for s, (net, crops) in enumerate(zip(casc.stages, stages)):
    # At most 64 crops per stage: the debugger runs the float and the int8 model per op.
    crops = crops[:: max(1, len(crops) // 64)][:64]
    try:  # the heatmap logits: the decoding after them stays float in export's int8
      import keras
      net = keras.Model(net.inputs, net.get_layer("heatmaps").output)
    except ValueError:  # the fc head: the whole network (fc8 is its output layer)
      pass
    rows = debug_stage(net, crops, casc.input_size)
    report["stages"].append({"stage": s + 1, "crops": int(len(crops)), "layers": rows})
    print(f"stage {s + 1} ({len(crops)} crops): the 10 layers with the largest int8 error, "
          "in quantization steps (rmse / scale; rounding alone is about 0.29)")
    for r in rows[:10]:
      print(f"  {r['rmse_over_scale']:7.2f}  {r['op']:20s} {r['tensor'][:90]}")
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(report, f, indent=1, default=float)


if __name__ == "__main__":
  app.run(main)
