"""Trains a DeepPose cascade: flags -> strategy -> data -> fit each stage -> evaluate.

  python -m deeppose_tf.train --flagfile=experiments/synthetic.flags

Every stage resumes from its last checkpoint when rerun with the same --workdir; a finished
stage (its model.keras and displacement.json exist) is skipped.

--strategy=multi_worker: start this same command on every worker, each with its TF_CONFIG.
All workers train; the chief alone prepares data, writes files and evaluates, while the
others wait for it at collective barriers (so every worker runs the same collective ops).
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

from deeppose_tf import flags as dp_flags

FLAGS = flags.FLAGS
dp_flags.define_train_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The strategy splits the CPU into logical devices: that must precede every TF op.
  from deeppose_tf import trainer
  strategy = trainer.make_strategy(FLAGS.cpu_replicas, kind=FLAGS.strategy)
  chief = trainer.is_chief(strategy)

  from deeppose_tf import atomic, evaluate, stages
  from deeppose_tf.data import prepare
  from deeppose_tf.skeleton import get_skeleton

  prepare.check_dataset(FLAGS.dataset)
  workdir = FLAGS.workdir
  trainer.check_shared_dir(strategy, workdir)
  data_dir = dp_flags.resolve_data_dir(FLAGS)
  splits = prepare.SPLITS[FLAGS.dataset]
  skeleton = get_skeleton(FLAGS.dataset)
  settings = dp_flags.stage_settings(FLAGS, skeleton, data_dir)
  settings.eval_split = splits[1]
  if chief:
    os.makedirs(workdir, exist_ok=True)
    atomic.write_text(os.path.join(workdir, "flags.txt"), FLAGS.flags_into_string())
    if FLAGS.dataset == "synthetic" and not FLAGS.data_dir:
      prepare.ensure_synthetic(data_dir, FLAGS.num_train, FLAGS.num_test, FLAGS.seed)
    elif FLAGS.source_dir and not os.path.exists(os.path.join(data_dir, f"{splits[1]}.json")):
      prepare.prepare(FLAGS.dataset, data_dir, FLAGS.source_dir, seed=FLAGS.seed)
    atomic.write_text(os.path.join(workdir, "config.json"),
                      json.dumps(settings.config, indent=1))
  trainer.barrier(strategy)  # the other workers read the data the chief prepared
  logging.info("training with %d replica(s) on %s", strategy.num_replicas_in_sync,
               [d for d in strategy.extended.worker_devices])

  todo = [FLAGS.stage] if FLAGS.stage else list(range(1, FLAGS.num_stages + 1))
  for stage in todo:
    t0 = time.time()
    done = stages.train_stage(strategy, workdir, stage, settings)
    if done:
      logging.info("stage %d finished in %.0f s", stage, time.time() - t0)
  if FLAGS.evaluate and chief:
    evaluate.run(workdir, split=splits[1], data_dir=data_dir, limit=FLAGS.eval_limit,
                 batch_size=FLAGS.eval_batch_size)
  if FLAGS.export and chief:
    from deeppose_tf import export
    out = FLAGS.export_dir or os.path.join(workdir, "export")
    path = export.export_saved_model(workdir, out)
    logging.info("exported the cascade for TF Serving to %s", path)
  # Workers leave together: a worker that quits early looks like a failure to the others.
  trainer.barrier(strategy)


if __name__ == "__main__":
  app.run(main)
