"""The import graph has no circle, and no floor imports up the data flow (tests/import_graph.py
reads the imports from the source, lazy ones included)."""

import import_graph

# The bottom floor: pure helpers that import nothing of the package.
FLOOR = ("deeppose_tf.allocator", "deeppose_tf.atomic", "deeppose_tf.cli", "deeppose_tf.geometry",
         "deeppose_tf.models.layers", "deeppose_tf.optim", "deeppose_tf.progress",
         "deeppose_tf.skeleton", "deeppose_tf.torch_file")
# The networks: built from layers and weights files, knowing nothing of data or training.
MODELS = ("deeppose_tf.models", "deeppose_tf.torch_file")
# What sits above the data and the models: training, inference, the commands.
ABOVE = ("deeppose_tf.cascade", "deeppose_tf.stages", "deeppose_tf.trainer",
         "deeppose_tf.pipeline", "deeppose_tf.config", "deeppose_tf.train",
         "deeppose_tf.evaluate", "deeppose_tf.export", "deeppose_tf.predict",
         "deeppose_tf.bench", "deeppose_tf.compare", "deeppose_tf.flags", "deeppose_tf.methods",
         "deeppose_tf.average")


def _under(module, names):
  return any(module == n or module.startswith(n + ".") for n in names)


def test_no_circle():
  edges = import_graph.graph()
  assert len(edges) > 50  # the whole package was read
  assert import_graph.circles(edges) == []


def test_a_circle_is_found():
  """The checker itself can fail: a made-up graph with a circle is reported."""
  edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert import_graph.circles(edges) == [["a", "b", "c"]]


def test_no_floor_imports_up():
  edges = import_graph.graph()
  for module in FLOOR:
    assert edges[module] == set(), (module, edges[module])
  for module, targets in edges.items():
    if _under(module, MODELS):
      assert not {t for t in targets if not _under(t, MODELS)}, (module, targets)
    if module.startswith("deeppose_tf.data."):
      assert not {t for t in targets if _under(t, ABOVE + MODELS)}, (module, targets)
    for target in targets:
      # A command's __main__ is its own: nothing imports it.
      assert not target.endswith(".__main__"), (module, target)
      # bench measures everything; only bench and compare (its latency) import it.
      if _under(target, ("deeppose_tf.bench",)):
        assert _under(module, ("deeppose_tf.bench", "deeppose_tf.compare")), (module, target)
