"""Benchmark result records and the one renderer: the table and the JSON both come from them.

A benchmark returns `Result`s: a measured value with its unit, and its ratios against the
references it is compared with (the machine's measured matmul peak, a FLOPs bound at that
rate, or another figure measured in the same run). `Report.table()` prints one row per
result and `Report.to_json()` files each under its JSON entry, so the two cannot drift apart.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

Row = Tuple[str, str, str]


@dataclasses.dataclass(frozen=True)
class Ratio:
  """A result against a reference: value = the result over the reference.

  reference: what the result is compared with, as the table reads it ("fp32 matmul peak").
  key: the ratio's key in the result's JSON entry ("fraction_of_matmul_peak").
  """

  value: float
  reference: str
  key: str


@dataclasses.dataclass(frozen=True)
class Result:
  """One measurement.

  name: the table's label (leading spaces indent a detail of the row above).
  value: the figure, in `unit` ("GFLOP/s", "img/s", "crops/s", "ms", "s", "PCP", "GFLOP",
    "x"); None when the measurement failed (`error` says why).
  entry: the JSON entry the result belongs to, dot separated ("" = the top level,
    "infer.keras.1"); a trailing "[]" makes it a new entry appended to a list.
  key: the value's key in that entry ("images_per_s").
  ratios: the value against its references, in the order the table shows them.
  extra: further JSON fields of the entry (batch size, counts); not in the table.
  error: a failed measurement: the table says "failed", the entry is {"error": error}.
  """

  name: str
  value: Optional[float]
  unit: str
  entry: str
  key: str
  ratios: Tuple[Ratio, ...] = ()
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  error: Optional[str] = None


def value_of(results: Sequence[Result], entry: str, key: str) -> Optional[float]:
  """The value of the result filed under `entry` as `key`, or None."""
  for r in results:
    if r.entry == entry and r.key == key and r.error is None:
      return r.value
  return None


def _number(v: float) -> str:
  if abs(v) >= 1000:
    return f"{v:,.0f}"
  if abs(v) >= 100:
    return f"{v:.0f}"
  if abs(v) >= 10:
    return f"{v:.1f}"
  return f"{v:.3g}"


def _plain(v):
  """JSON-ready: numpy scalars and arrays as Python numbers and lists."""
  if isinstance(v, (np.generic, np.ndarray)):
    return v.tolist()
  if isinstance(v, Mapping):
    return {k: _plain(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_plain(x) for x in v]
  return v


def rows(results: Sequence[Result]) -> List[Row]:
  """(name, value with unit, ratios) per result, as the table prints them."""
  out = []
  for r in results:
    if r.error is not None:
      out.append((r.name, "failed", "see JSON"))
      continue
    ratios = "; ".join(f"{q.value:.2f}x {q.reference}" for q in r.ratios)
    out.append((r.name, f"{_number(r.value)} {r.unit}", ratios))
  return out


def table(results: Sequence[Result]) -> str:
  body = rows(results)
  name_w = max([len("benchmark")] + [len(r[0]) for r in body])
  value_w = max([len("measured")] + [len(r[1]) for r in body])
  lines = [f"{'benchmark':<{name_w}}  {'measured':>{value_w}}  against"]
  lines += [f"{name:<{name_w}}  {value:>{value_w}}  {ratios}".rstrip()
            for name, value, ratios in body]
  return "\n".join(lines)


def _entry(root: Dict[str, Any], path: str) -> Dict[str, Any]:
  if not path:
    return root
  node = root
  parts = path.split(".")
  for part in parts[:-1]:
    node = node.setdefault(part, {})
  last = parts[-1]
  if last.endswith("[]"):
    node.setdefault(last[:-2], []).append({})
    return node[last[:-2]][-1]
  return node.setdefault(last, {})


def to_json(results: Sequence[Result], info: Optional[Mapping[str, Any]] = None
            ) -> Dict[str, Any]:
  """The JSON dict: `info` (the run's context: versions, model, data) with every result
  filed under its entry: its value as `key`, its ratios under their keys, and its extra."""
  out = copy.deepcopy(dict(info or {}))
  for r in results:
    entry = _entry(out, r.entry)
    if r.error is not None:
      entry["error"] = r.error
      continue
    entry.update(_plain(dict(r.extra)))
    entry[r.key] = float(r.value)
    for q in r.ratios:
      entry[q.key] = float(q.value)
  return out


@dataclasses.dataclass
class Report:
  """A benchmark run: its context (JSON only) and its results (table and JSON)."""

  info: Dict[str, Any]
  results: List[Result]

  def table(self) -> str:
    return table(self.results)

  def to_json(self) -> Dict[str, Any]:
    return to_json(self.results, self.info)
