"""Trains a DeepPose cascade: flags -> strategy -> data -> fit each stage -> evaluate.

  python -m deeppose_tf.train --flagfile=experiments/synthetic.flags

Every stage resumes from its last checkpoint when rerun with the same --workdir; a finished
stage (its model.keras, and its displacement.json unless it is the last) is skipped. The
last stage's statistics are not computed (no later stage reads them); resuming with a larger
--num_stages computes them first.

--strategy=multi_worker: start this same command on every worker, each with its TF_CONFIG.
All workers train; the chief alone prepares data, writes files and evaluates, while the
others wait for it at collective barriers (so every worker runs the same collective ops).
"""

from __future__ import annotations

import contextlib
import os
import time

from absl import app, flags, logging

from deeppose_tf import flags as dp_flags

FLAGS = flags.FLAGS
dp_flags.define_train_flags()
# The flags live in deeppose_tf/flags.py; adopting them makes `--help` list them here.
flags.adopt_module_key_flags(dp_flags)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The strategy splits the CPU into logical devices: that must precede every TF op.
  from deeppose_tf import distribute
  strategy = distribute.make_strategy(FLAGS.cpu_replicas, kind=FLAGS.strategy)
  chief = distribute.is_chief(strategy)

  from deeppose_tf import atomic
  from deeppose_tf import workdir as workdir_lib
  from deeppose_tf.data import datasets, prepare, records

  prepare.check_dataset(FLAGS.dataset)
  workdir = workdir_lib.check_workdir(FLAGS.workdir)
  distribute.check_shared_dir(strategy, workdir)
  data_dir = dp_flags.resolve_data_dir(FLAGS)
  splits = prepare.SPLITS[FLAGS.dataset]
  # coco's skeleton comes from its prepared files (the train split json); a missing or
  # damaged one is a one-line error naming the file (cli.run).
  skeleton = datasets.skeleton_of(FLAGS.dataset, data_dir)
  try:  # flag combinations the parser cannot check: a usage error, not a traceback
    settings = dp_flags.stage_settings(FLAGS, skeleton, data_dir)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  settings.eval_split = splits[-1]
  try:
    settings.left_right = data_left_right(
        [(d, settings.train_split) for d in settings.train_dirs] + [(data_dir, splits[-1])])
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  lock = contextlib.ExitStack()
  if chief:
    os.makedirs(workdir, exist_ok=True)
    # One training per workdir (the kernel drops the lock however this process ends), and
    # never a resume that would mix stages trained for other geometry.
    lock.enter_context(workdir_lib.RunLock(workdir))
    workdir_lib.check_resume(workdir, settings.config)
    atomic.write_text(os.path.join(workdir, "flags.txt"), FLAGS.flags_into_string())
    prepare.ensure_prepared(FLAGS.dataset, data_dir, FLAGS.source_dir,
                            num_train=FLAGS.num_train, num_test=FLAGS.num_test,
                            seed=FLAGS.seed, generate=not FLAGS.data_dir)
    # Damaged, cut or replaced shards fail here, named, before hours of training.
    # Training reads the train split and the held-out one (the last); a dataset's optional
    # middle split (LSP's val) need not be there.
    for split in (splits[0], splits[-1]):
      records.verify_split(data_dir, split)
    for extra in settings.extra_train_dirs:
      check_extra_train_dir(extra, settings.train_split, skeleton)
    workdir_lib.write_config(workdir, settings.config)
  distribute.barrier(strategy)  # the other workers read the data the chief prepared
  logging.info("training with %d replica(s) on %s", strategy.num_replicas_in_sync,
               [d for d in strategy.extended.worker_devices])

  with lock:
    _train(strategy, chief, workdir, settings, data_dir, splits)


def data_left_right(dir_splits) -> str:
  """The left/right labels (labels.py) that the prepared splits' json files name (a split
  not written yet, as a synthetic run's before it generates it: "person", what prepare
  writes). ValueError when they differ: a run trains and scores in one convention."""
  from deeppose_tf import labels
  from deeppose_tf.data import records
  found = {}
  for data_dir, split in dir_splits:
    if os.path.exists(os.path.join(data_dir, f"{split}.json")):
      path = f"{data_dir}/{split}.json"
      found[path] = records.read_meta(data_dir, split).get("left_right", "person")
      if found[path] not in labels.LABELS:
        raise ValueError(f"{path} is damaged: left_right {found[path]!r} is not one of "
                         f"{list(labels.LABELS)}; write the split again")
  kinds = sorted(set(found.values()))
  if len(kinds) > 1:
    raise ValueError("the run's prepared splits use different left/right labels: " +
                     ", ".join(f"{k}: {v}" for k, v in found.items()) + "; relabel them "
                     "alike (python -m deeppose_tf.data.relabel)")
  return kinds[0] if kinds else "person"


def check_extra_train_dir(data_dir: str, split: str, skeleton) -> None:
  """An --extra_train_dirs folder: a complete, undamaged `split` of the same skeleton."""
  from deeppose_tf.data import records
  records.verify_split(data_dir, split)
  meta = records.read_meta(data_dir, split)
  # Splits that prepare wrote name their skeleton; others (written by records.write_split
  # directly) at least carry their joint count.
  from deeppose_tf import skeleton as skeleton_lib
  theirs = meta.get("skeleton")
  if theirs is not None and theirs != skeleton_lib.stored(skeleton):
    name = theirs.get("name") if isinstance(theirs, dict) else theirs
    raise app.UsageError(f"--extra_train_dirs={data_dir}: its {split} split is on skeleton "
                         f"{name!r}, the run's is {skeleton.name!r}; a mixed run needs "
                         "one skeleton")
  if meta.get("num_joints", skeleton.num_joints) != skeleton.num_joints:
    raise app.UsageError(f"--extra_train_dirs={data_dir}: its {split} split has "
                         f"{meta['num_joints']} joints, the run's skeleton "
                         f"{skeleton.name!r} {skeleton.num_joints}")
  logging.info("training also on %s (%d %s records)", data_dir, meta["num_records"], split)


def _train(strategy, chief: bool, workdir: str, settings, data_dir: str, splits) -> None:
  from deeppose_tf import distribute, evaluate, stages
  todo = [FLAGS.stage] if FLAGS.stage else list(range(1, FLAGS.num_stages + 1))
  for stage in todo:
    t0 = time.time()
    done = stages.train_stage(strategy, workdir, stage, settings)
    if done:
      logging.info("stage %d finished in %.0f s", stage, time.time() - t0)
  # --stage=k trains one stage: evaluate the cascade up to it; export needs every stage.
  last = max(todo)
  if FLAGS.evaluate and chief:
    evaluate.run(workdir, split=splits[-1], data_dir=data_dir, limit=FLAGS.eval_limit,
                 batch_size=FLAGS.eval_batch_size, num_stages=last)
  if FLAGS.export and chief and last < FLAGS.num_stages:
    logging.warning("not exporting: stages %d..%d are not trained yet", last + 1,
                    FLAGS.num_stages)
  elif FLAGS.export and chief:
    from deeppose_tf import export
    out = FLAGS.export_dir or os.path.join(workdir, "export")
    path = export.export_saved_model(workdir, out)
    logging.info("exported the cascade for TF Serving to %s", path)
  # Workers leave together: a worker that quits early looks like a failure to the others.
  distribute.barrier(strategy)


if __name__ == "__main__":
  from deeppose_tf import cli
  cli.run(main, "train")
