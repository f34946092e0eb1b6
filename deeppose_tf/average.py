"""Weight averaging: one stage network whose every weight is the mean of several trained
networks of the same architecture (a uniform "model soup", Wortsman et al. 2022; with the
checkpoints of one run, stochastic weight averaging, Izmailov et al. 2018).

  python -m deeppose_tf.average --models=runs/a,runs/b,runs/c --stage=1 \\
      --output=runs/soup/stage1/model.keras

Why: runs fine-tuned from one start (continuations of one stage 1 at a low learning rate,
with other settings or seeds) stay in one basin of the loss, and their mean usually lies
nearer its floor than any of them; it costs nothing at inference. Networks trained from
different starts (two random initializations) do not share a basin, and their mean is
garbage: average only networks that share a start. Whether the mean is better is measured,
not assumed: evaluate it (BUILD.md, "Weight averaging").

Every weight is averaged, BatchNorm's moving mean and variance included (as model soups
do); integer weights (counters) must agree and are kept. The networks must have the same
weights by name, shape and dtype, in the same order: anything else is an error naming the
model and the first weight that differs. A non-finite mean is refused, never written.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence

import keras
import numpy as np
from absl import flags, logging

from deeppose_tf import workdir as workdir_lib
from deeppose_tf.models import builder as _builder  # noqa: F401 (registers the custom layers for loading)


def weight_names(net: keras.Model) -> List[str]:
  """The network's weights' paths (`layer/.../kernel`), in get_weights() order."""
  return [getattr(w, "path", None) or w.name for w in net.weights]


def average_weights(weight_lists: Sequence[Sequence[np.ndarray]],
                    names: Optional[Sequence[str]] = None,
                    labels: Optional[Sequence[str]] = None) -> List[np.ndarray]:
  """The element-wise mean of N networks' weights.

  weight_lists: N lists (one per network, N >= 1), each of the same length W with arrays of
  matching shapes and dtypes (keras.Model.get_weights() order). names: the W weights' names,
  labels: the N networks' names, both only for the errors. Floating weights are averaged in
  float64 and cast back to their dtype; integer and boolean weights must be equal in every
  network and are kept. Raises ValueError on a length, shape or dtype mismatch, on unequal
  integer weights and on a non-finite mean (a NaN in any input).
  """
  if not weight_lists:
    raise ValueError("nothing to average: no networks given")
  labels = list(labels) if labels is not None else [f"network {i + 1}"
                                                     for i in range(len(weight_lists))]
  first = weight_lists[0]
  names = list(names) if names is not None else [f"weight {i}" for i in range(len(first))]
  for label, weights in zip(labels[1:], weight_lists[1:]):
    if len(weights) != len(first):
      raise ValueError(f"{label} has {len(weights)} weights, {labels[0]} has {len(first)}: "
                       "not the same architecture")
  out = []
  for i, name in enumerate(names):
    ref = np.asarray(first[i])
    arrays = [np.asarray(w[i]) for w in weight_lists]
    for label, a in zip(labels[1:], arrays[1:]):
      if a.shape != ref.shape or a.dtype != ref.dtype:
        raise ValueError(f"{label}: weight {name} is {a.dtype}{list(a.shape)}, in "
                         f"{labels[0]} {ref.dtype}{list(ref.shape)}: not the same "
                         "architecture")
    if ref.dtype.kind in "biu":
      for label, a in zip(labels[1:], arrays[1:]):
        if not np.array_equal(a, ref):
          raise ValueError(f"{label}: integer weight {name} differs from {labels[0]}'s; "
                           "integer weights are kept, not averaged, so they must agree")
      out.append(ref.copy())
      continue
    mean = np.mean(np.stack(arrays).astype(np.float64), axis=0)
    if not np.all(np.isfinite(mean)):
      bad = [label for label, a in zip(labels, arrays) if not np.all(np.isfinite(a))]
      raise ValueError(f"weight {name} is not finite in {', '.join(bad) or 'the mean'}: "
                       "refusing to write a network with NaN or inf weights")
    out.append(mean.astype(ref.dtype))
  return out


def resolve_model_path(path: str, stage: int) -> str:
  """A .keras file as given, or a workdir's stage `stage` model (workdir.model_path)."""
  if os.path.isdir(path):
    return workdir_lib.model_path(path, stage)
  return path


def average_models(paths: Sequence[str]) -> keras.Model:
  """Loads the .keras networks at `paths` (at least 2) and returns the first, its weights
  replaced by the mean of all (average_weights). Each network must load
  (workdir.load_model's errors name a missing or damaged file) and share the first's
  weight names, shapes and dtypes."""
  if len(paths) < 2:
    raise ValueError(f"averaging needs at least 2 networks, got {len(paths)}: {list(paths)}")
  nets = []
  for i, path in enumerate(paths):
    logging.info("average: loading %d/%d %s", i + 1, len(paths), path)
    nets.append(workdir_lib.load_model(path))
  names = weight_names(nets[0])
  for path, net in zip(paths[1:], nets[1:]):
    other = weight_names(net)
    if other != names:
      diff = next((f"{a!r} against {b!r}" for a, b in zip(other, names) if a != b),
                  f"{len(other)} weights against {len(names)}")
      raise ValueError(f"{path} is not the architecture of {paths[0]}: weight names "
                       f"differ ({diff})")
  mean = average_weights([net.get_weights() for net in nets], names, list(paths))
  nets[0].set_weights(mean)
  return nets[0]


def define_flags() -> None:
  flags.DEFINE_list("models", None, "The networks to average, at least 2: .keras files, or "
                    "workdirs (their --stage model). They must share one architecture and "
                    "should share a start (see the module doc).")
  flags.DEFINE_integer("stage", 1, "The stage whose model.keras a workdir in --models gives.",
                       lower_bound=1)
  flags.DEFINE_string("output", None, "Where the averaged network is written, a .keras "
                      "file (crash-safely: a temporary file, then a rename). It may be a "
                      "workdir's stageN/model.keras; later stages of that workdir were "
                      "trained on the old stage's errors.")
  flags.mark_flags_as_required(["models", "output"])


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  if not f.output.endswith(".keras"):
    raise ValueError(f"--output={f.output}: must end in .keras (a Keras model file)")
  paths = [resolve_model_path(p, f.stage) for p in f.models]
  net = average_models(paths)
  out_dir = os.path.dirname(os.path.abspath(f.output))
  os.makedirs(out_dir, exist_ok=True)
  workdir_lib.save_model(net, f.output)
  # Read back: a file that does not load must not stand as a result.
  workdir_lib.load_model(f.output)
  print(f"average: {len(paths)} networks -> {f.output}")


if __name__ == "__main__":
  from deeppose_tf import cli
  define_flags()
  cli.run(main, "average")
