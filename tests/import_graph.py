"""The package's import graph, read from the source (no module is imported): every
`import deeppose_tf...` and `from deeppose_tf... import`, at module level or inside a
function (a lazy import is still a dependency), as edges module -> module.

  python tests/import_graph.py            # the edges, then the circles (none, we hope)
  python tests/import_graph.py --dot      # Graphviz

tests/test_import_graph.py runs it: a new circle, or a floor importing up, fails CI.
"""

from __future__ import annotations

import ast
import os
import sys
from typing import Dict, List, Set

PACKAGE = "deeppose_tf"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules(root: str = ROOT) -> Dict[str, str]:
  """{dotted module name: file path} of every .py file of the package."""
  out = {}
  for folder, _, files in os.walk(os.path.join(root, PACKAGE)):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
        out[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
  return out


def _resolve(name: str, known) -> str:
  """The module `name` denotes: itself, or its longest known prefix (a name imported from a
  module, `from deeppose_tf.pipeline import AugmentConfig`)."""
  while name and name not in known:
    name = name.rpartition(".")[0]
  return name


def graph(root: str = ROOT) -> Dict[str, Set[str]]:
  """{module: the package modules it imports}. A module importing its own package (or a
  parent package, whose __init__ runs first anyway) is not an edge."""
  known = modules(root)
  edges: Dict[str, Set[str]] = {m: set() for m in known}
  for mod, path in known.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    package = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
    for node in ast.walk(tree):
      names: List[str] = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from . import x / from .y import z
          parent = package
          for _ in range(node.level - 1):
            parent = parent.rpartition(".")[0]
          base = f"{parent}.{base}" if base else parent
        names = [f"{base}.{a.name}" for a in node.names] + [base]
      for name in names:
        if name == PACKAGE or name.startswith(PACKAGE + "."):
          target = _resolve(name, known)
          if target and target != mod and not mod.startswith(target + "."):
            edges[mod].add(target)
  return edges


def circles(edges: Dict[str, Set[str]]) -> List[List[str]]:
  """The strongly connected components of more than one module (Tarjan), each sorted."""
  index: Dict[str, int] = {}
  low: Dict[str, int] = {}
  stack: List[str] = []
  on_stack: Set[str] = set()
  found: List[List[str]] = []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(edges.get(v, ())):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        found.append(sorted(component))

  sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
  for v in sorted(edges):
    if v not in index:
      visit(v)
  return found


def main(argv: List[str]) -> int:
  edges = graph()
  if "--dot" in argv:
    print("digraph deeppose_tf {")
    for m in sorted(edges):
      for t in sorted(edges[m]):
        print(f'  "{m}" -> "{t}";')
    print("}")
    return 0
  for m in sorted(edges):
    print(f"{m} -> {', '.join(sorted(edges[m])) or '(nothing of the package)'}")
  found = circles(edges)
  print(f"\n{len(found)} circle(s)" + "".join(f"\n  {' <-> '.join(c)}" for c in found))
  return 1 if found else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
