"""The package's one progress reporter, for loops over records or images.

On a terminal (stderr is a TTY) it redraws one carriage-return line; otherwise (a log
file, a pipe) it writes a logging.info line every `log_every` seconds.  Either way the
line holds the count, the total when known, and the rate:

  predict: 480/1016 images (47%), 35.2/s
  train: 2250 records, 410.7/s
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

from absl import logging


class Progress:
  """Progress of one loop: `update(n)` adds n done, `set(count)` sets the count done.

  `close()` (or leaving a `with` block) writes the final line.  `set` fits the
  `progress=` callback of records.write_split, which passes the running count.
  """

  def __init__(self, desc: str, total: Optional[int] = None, unit: str = "items",
               log_every: float = 10.0, draw_every: float = 0.2,
               stream: Optional[TextIO] = None, interactive: Optional[bool] = None,
               clock: Callable[[], float] = time.time):
    self.desc, self.total, self.unit = desc, total, unit
    self.stream = stream if stream is not None else sys.stderr
    self.interactive = (self.stream.isatty() if interactive is None else interactive)
    self.every = draw_every if self.interactive else log_every
    self.clock = clock
    self.count = 0
    self.start = clock()
    self._last_time = self.start
    self._shown = None  # the count of the last line written
    self._closed = False

  def text(self) -> str:
    rate = self.count / max(self.clock() - self.start, 1e-9)
    if self.total:
      done = f"{self.count}/{self.total} {self.unit} ({100 * self.count // self.total}%)"
    else:
      done = f"{self.count} {self.unit}"
    return f"{self.desc}: {done}, {rate:.1f}/s"

  def update(self, n: int = 1) -> None:
    self.set(self.count + n)

  def set(self, count: int) -> None:
    self.count = count
    now = self.clock()
    finished = self.total is not None and count >= self.total
    if finished or now - self._last_time >= self.every:
      self._show(now, final=finished)

  __call__ = set

  def close(self) -> None:
    """Writes the final line (ends the terminal line), unless the loop's end already did."""
    if not self._closed and (self.interactive or self._shown != self.count):
      self._show(self.clock(), final=True)
    self._closed = True

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _show(self, now: float, final: bool) -> None:
    if self._closed:
      return
    self._last_time = now
    self._shown = self.count
    if self.interactive:
      self.stream.write("\r" + self.text() + ("\n" if final else ""))
      self.stream.flush()
    else:
      logging.info("%s", self.text())
    self._closed = final
