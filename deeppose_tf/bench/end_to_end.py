"""Training through the real input pipeline against the same training on in-memory tensors,
alternating in one process."""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from deeppose_tf.bench import inputs
from deeppose_tf.bench.results import Ratio, Result
from deeppose_tf.bench.train_step import compiled_training_model, fit_step_times


def end_to_end(config, data_dir: str, skeleton, batch_size: int, refine=None,
               steps: int = 10, warmup: int = 3, rounds: int = 3, loss: str = "l2",
               heatmap_loss_weight: float = 0.0, augment: str = "recipe",
               cache_max_side: Optional[int] = 320) -> List[Result]:
  """[in-memory rate, pipeline rate against it] for stage 1 (refine None) or a refinement
  stage (refine: a config.RefineConfig), in images (crops) per second.

  Both use what `trainer.fit_stage` uses: the MirroredStrategy (one CPU device), the
  training model and compile args (compiled_training_model), Keras fit and the NaN guard,
  which reads the loss every step, so each step ends synchronized and its time is its own.
  The in-memory dataset repeats one batch of the real pipeline, so shapes and values match.
  Rounds alternate (memory, pipeline, memory, ...) so drift on a shared machine hits both,
  and each rate is the batch over the median step time of its rounds' pooled steps (robust
  to the other tenants' spikes). With the in-memory cache, every fit call's iterator starts
  a fresh cache (Keras distributes the dataset anew), so this measures the FIRST epoch of
  training, which decodes every JPEG; later epochs read decoded images from memory (the
  pipeline section measures that steady state).
  """
  import tensorflow as tf
  from deeppose_tf import distribute, pipeline
  from deeppose_tf.trainer import targets_for
  strategy = distribute.make_strategy(1)
  with strategy.scope():
    net = compiled_training_model(config, loss, heatmap_loss_weight)
  real = pipeline.train_dataset(data_dir, "train", skeleton, config.input_size, batch_size,
                                seed=0, refine=refine, augment=inputs.augment_config(augment),
                                cache_max_side=cache_max_side)
  memory = targets_for(net, tf.data.Dataset.from_tensors(next(iter(real))).repeat())
  real = targets_for(net, real)
  times = {"in_memory": [], "pipeline": []}
  for _ in range(rounds):
    for name, ds in (("in_memory", memory), ("pipeline", real)):
      times[name].extend(fit_step_times(net, ds, steps, warmup).tolist())
  mem, pipe = (batch_size / float(np.median(times[k])) for k in ("in_memory", "pipeline"))
  stage = "stage1" if refine is None else "refine"
  unit = "img/s" if refine is None else "crops/s"
  entry = f"e2e.{stage}"
  return [
      Result(f"e2e {stage}: in memory", mem, unit, entry, "in_memory_per_s",
             extra={"batch": batch_size,
                    "mean_rate_in_memory": batch_size * len(times["in_memory"])
                    / sum(times["in_memory"])}),
      Result(f"e2e {stage}: through the pipeline", pipe, unit, entry, "pipeline_per_s",
             (Ratio(pipe / mem, "in-memory", "pipeline_over_in_memory"),),
             {"steps_timed": len(times["pipeline"]),
              "mean_rate_pipeline": batch_size * len(times["pipeline"])
              / sum(times["pipeline"])}),
  ]
