"""Crash-safe file writes: write under a temporary name, then rename into place.

A crash (or SIGKILL) mid-write leaves only a `*.tmp-<pid>` file, never a half-written file
under the final name, because `os.replace` within one directory is atomic on POSIX.
"""

from __future__ import annotations

import os
from typing import Union


def temp_name(path: str) -> str:
  """The temporary sibling of `path` that a write goes to before its rename."""
  d, base = os.path.split(path)
  return os.path.join(d, f".{base}.tmp-{os.getpid()}")


def write_bytes(path: str, data: bytes) -> None:
  tmp = temp_name(path)
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str, text: Union[str, bytes]) -> None:
  write_bytes(path, text.encode("utf-8") if isinstance(text, str) else text)
