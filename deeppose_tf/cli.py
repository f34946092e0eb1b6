"""The commands' entry point: an expected failure is one line, not a traceback.

  if __name__ == "__main__":
    define_flags()
    cli.run(main, "train")

The package reports what a user can fix (a refused resume, a damaged or missing file, a bad
box, a wrong model file) as ValueError with a message that names the thing and the fix, and
the operating system reports its own (a missing or unwritable path) as OSError. Those print
`NAME: error: MESSAGE` on stderr, on one line, and exit 2. `--verbosity=1` (or the
environment variable DEEPPOSE_TRACEBACK=1) re-raises them with the traceback, for a bug
report. Anything else is unexpected and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

from absl import app, flags

EXIT_EXPECTED = 2


def one_line(error: BaseException) -> str:
  """The error's message on one line (whitespace runs, newlines included, become spaces)."""
  text = " ".join(str(error).split())
  return text or type(error).__name__


def show_traceback() -> bool:
  """Whether expected errors keep their traceback: --verbosity >= 1 or DEEPPOSE_TRACEBACK."""
  if os.environ.get("DEEPPOSE_TRACEBACK", "") not in ("", "0"):
    return True
  try:
    return flags.FLAGS.verbosity >= 1
  except (flags.UnparsedFlagAccessError, AttributeError):
    return False


def guard(main: Callable, name: str) -> Callable:
  """main(argv) wrapped so that ValueError and OSError end as one line and exit 2."""
  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except (ValueError, OSError) as e:
      if show_traceback():
        raise
      print(f"{name}: error: {one_line(e)} (--verbosity=1 shows the traceback)",
            file=sys.stderr)
      sys.exit(EXIT_EXPECTED)
  return wrapped


def run(main: Callable, name: str) -> None:
  """absl's app.run of `main`, guarded (see the module doc)."""
  app.run(guard(main, name))
