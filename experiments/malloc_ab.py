"""A/B of TensorFlow's malloc patch in one process (BUILD.md, "Training speed: TensorFlow's
malloc patch, undone"): a stage-1 network (heatmap head, freeze_stride 8, batch 32; by default
the 96 px main job's EfficientNet-Lite0) trains on one in-memory batch under MirroredStrategy, as
`bench.end_to_end` does, in rounds of 10 timed steps. Rounds before --restore_after run with
the patch TensorFlow applied; then allocator.restore() runs. Each round prints its rate, the
CPU seconds (user, system) so far and the minor page faults so far.

  python experiments/malloc_ab.py --data_dir=runs/synthetic/data
  python experiments/malloc_ab.py --data_dir=DIR --backbone=mobilenetv2 --input_size=160

Each round is bench.train_step.fit_step_times (NaN guard, 3 warm-up steps) without its
AllocatorSettings, so the patch stays until --restore_after.

Measured (2026-12-06): the defaults on ONE core (`taskset -c 1`): 29.6-30.5 img/s in rounds 0-1,
66.0-67.0 after; `--backbone=mobilenetv2 --input_size=160 --rounds=4` on 2 idle cores:
17.9-20.9, then 48.2-49.2.
"""

import resource

import numpy as np
from absl import app, flags

flags.DEFINE_string("data_dir", "runs/synthetic/data", "A prepared LSP14 folder (train split).")
flags.DEFINE_integer("rounds", 5, "Rounds of 10 timed steps.")
flags.DEFINE_integer("restore_after", 2, "allocator.restore() before this round.")
flags.DEFINE_string("backbone", "efficientnet_lite0", "The network's backbone (the main job's; "
                    "mobilenetv2 is the LSP recipes').")
flags.DEFINE_integer("input_size", 96, "Crop side in pixels (the main job: 160 since 2026-12-06; "
                     "the A/B in BUILD.md ran at 96).")
FLAGS = flags.FLAGS


def main(_):
  import tensorflow as tf
  from deeppose_tf import allocator, distribute, pipeline
  from deeppose_tf.bench.train_step import compiled_training_model, fit_step_times
  from deeppose_tf.models.builder import ModelConfig
  from deeppose_tf.skeleton import LSP14
  from deeppose_tf.trainer import targets_for

  cfg = ModelConfig(num_joints=14, input_size=FLAGS.input_size, backbone=FLAGS.backbone,
                    head="heatmap", freeze_stride=8)
  strategy = distribute.make_strategy(1)
  with strategy.scope():
    net = compiled_training_model(cfg, "l2", 0.0)
  real = pipeline.train_dataset(FLAGS.data_dir, "train", LSP14, FLAGS.input_size, 32, seed=0,
                                cache_max_side=320)
  memory = targets_for(net, tf.data.Dataset.from_tensors(next(iter(real))).repeat())

  for r in range(FLAGS.rounds):
    if r == FLAGS.restore_after:
      print("allocator.restore():", allocator.restore())
    step_seconds = fit_step_times(net, memory, steps=10, warmup=3, restore_malloc=False)
    rate = 32 / float(np.median(step_seconds))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"round {r}: {rate:.1f} img/s, cpu user {usage.ru_utime:.1f} s system "
          f"{usage.ru_stime:.1f} s, minor faults {usage.ru_minflt:,}", flush=True)


if __name__ == "__main__":
  app.run(main)
