"""Writes the legacy artifacts that tests/test_legacy_artifacts.py loads: model files saved by
the package BEFORE the models/ package reorganization (commit 61343ae, where the networks
lived in deeppose_tf/{layers,backbones,heads,tompson,model}.py).

Kept as it was run, on purpose: it imports the old module paths and no longer runs on later
commits. The artifacts must stay the ones the old code wrote; do not regenerate them.

  git worktree add /tmp/old 61343ae && cd /tmp/old && python tests/data/legacy/make.py OUT

Writes into OUT:
  workdir/              a 2-stage cascade of tiny ResNet + heatmap stages (32 px)
  serving/1/            its SavedModel (export_saved_model)
  cascade.tflite(.json) its float32 TFLite file on a 64 x 64 canvas and the sidecar
  networks/*.keras      one tiny network per registered custom layer: the AlexNet LRN +
                        fc, the integral head's SoftArgmax, Tompson's multires + spatial model
  expected.npz          what each gives on fixed inputs
"""

import os
import sys

import keras
import numpy as np

from deeppose_tf import cascade, workdir as workdir_lib
from deeppose_tf import model as model_lib
from deeppose_tf.export import export_saved_model, export_tflite
from deeppose_tf.predict import models

OUT = sys.argv[1]
EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4]])
NETWORKS = {
    "alexnet_lrn_fc": dict(backbone="alexnet", head="fc", norm="lrn", input_size=67,
                           width=0.1, fc_units=16, num_joints=5, output_init="default"),
    "resnet_integral": dict(backbone="resnet", head="integral", input_size=32, width=0.125,
                            head_channels=8, num_joints=5),
    "multires_tompson": dict(backbone="multires", head="tompson", input_size=32, width=0.125,
                             head_channels=8, heatmap_stride=4, num_joints=5),
}


def perturb(net, rng):
  """Random weights everywhere (zero-initialized output layers would give constant outputs,
  which a lost weight could not change); BatchNorm variances stay positive."""
  for w in net.weights:
    v = np.asarray(w.numpy(), np.float32)
    noise = rng.normal(0, 0.3, v.shape).astype(np.float32)
    w.assign(np.abs(v + noise) + 0.5 if "variance" in w.path else v + noise)
  return net


def main():
  keras.utils.set_random_seed(0)
  expected = {}
  os.makedirs(os.path.join(OUT, "networks"), exist_ok=True)
  rng = np.random.RandomState(0)
  for name, kw in NETWORKS.items():
    net = perturb(model_lib.build_regressor(model_lib.ModelConfig(**kw), edges=EDGES,
                                            name=name), rng)
    s = kw["input_size"]
    images = rng.uniform(0, 255, (2, s, s, 3)).astype(np.float32)
    net.save(os.path.join(OUT, "networks", f"{name}.keras"))
    expected[f"{name}/images"] = images
    expected[f"{name}/joints"] = np.asarray(net(images, training=False))

  wd = os.path.join(OUT, "workdir")
  config = model_lib.ModelConfig(backbone="resnet", head="heatmap", input_size=32, width=0.125,
                                 head_channels=8, num_joints=14)
  for s in (1, 2):
    os.makedirs(workdir_lib.stage_dir(wd, s))
    workdir_lib.save_model(perturb(model_lib.build_regressor(config, name=f"stage{s}"), rng),
                           workdir_lib.model_path(wd, s))
  workdir_lib.write_config(wd, {"skeleton": "lsp14", "input_size": 32, "sigma": 2.0,
                                "num_stages": 2,
                                "model": {"backbone": "resnet", "head": "heatmap",
                                          "width": 0.125, "head_channels": 8,
                                          "input_size": 32}})
  casc = cascade.Cascade.load(wd)
  saved = export_saved_model(wd, os.path.join(OUT, "serving"), version=1, casc=casc)
  tflite = export_tflite(wd, os.path.join(OUT, "cascade.tflite"), size=(64, 64), casc=casc)
  image = rng.randint(0, 256, (60, 50, 3)).astype(np.uint8)
  boxes = np.array([[25, 30, 50, 60], [20, 25, 30, 36]], np.float32)
  expected["cascade/image"] = image
  expected["cascade/boxes"] = boxes
  for kind, path in (("workdir", wd), ("saved_model", saved), ("tflite", tflite)):
    expected[f"cascade/{kind}"] = models.load(path).predict([image, image], boxes)
  np.savez_compressed(os.path.join(OUT, "expected.npz"), **expected)
  print("wrote", OUT)


if __name__ == "__main__":
  main()
