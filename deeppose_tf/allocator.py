"""glibc malloc settings for training: undoes the allocator patch that tf.distribute's input
pipeline applies, which made every training step on the CPU 2.2-2.7x slower.

Why. TensorFlow's GeneratorDataset kernel calls `mallopt(M_TRIM_THRESHOLD, 128 kB)` the
first time one is built in a process (it logs "Memory patch applied: M_TRIM_THRESHOLD=128
kb was set"). A MirroredStrategy's distributed dataset builds one for its multi-device
iterator, so every `model.fit` under our strategy triggers it. Setting any threshold
explicitly also switches off glibc's dynamic mmap threshold, which is then frozen where it
stands: at its starting 128 kB, unless a large free had already raised it (the bench's
matmul-peak measurement does; training does not). From then on every tensor above the
threshold (most activations and gradients of a training step) is a fresh `mmap` whose pages
fault in one by one and a `munmap` when freed, and the heap is trimmed back to the kernel
whenever 128 kB lie free at its top. Measured on this package's 96 px main job (EfficientNet-Lite0, batch 32, 2 cores):
761-796 ms per stage-1 step in `model.fit`, half of the CPU time in the kernel, against
312-336 ms with `restore()`; `python experiments/malloc_ab.py`, one core: 30 against 66
images/s (BUILD.md, "Training speed: TensorFlow's malloc patch, undone").

What `restore()` sets is what glibc itself moves to without the patch once a training step
has freed its large tensors: the mmap threshold at its ceiling (32 MiB on 64-bit,
DEFAULT_MMAP_THRESHOLD_MAX) and the trim threshold at twice that. Freed memory stays in the
process for reuse instead of being faulted in again; the cost is memory held in each malloc
arena (glibc makes up to 8 per core). The 96 px main job's peak resident size: 2.33 GB
before, 2.57 GB after, on 2 cores; on many cores it can grow more.

Only glibc (Linux) has mallopt; elsewhere `restore()` does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Optional

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20   # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc (4 MiB * sizeof(long))
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # glibc's own rule when it raises the mmap threshold

_UNSET = object()
_libc = _UNSET  # the glibc handle, or None where there is none (looked up once)


def _glibc() -> Optional[ctypes.CDLL]:
  global _libc
  if _libc is _UNSET:
    _libc = None
    if sys.platform.startswith("linux"):
      try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (musl does not)  # noqa: B018
      except (OSError, AttributeError):
        return None
      libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
      libc.mallopt.restype = ctypes.c_int
      _libc = libc
  return _libc


def restore() -> bool:
  """Sets the mmap and trim thresholds to MMAP_THRESHOLD and TRIM_THRESHOLD; True when both
  were set (glibc), False where there is no glibc or glibc refused one. Cheap (two mallopt
  calls) and idempotent: call it after TensorFlow may have applied its patch, i.e. once a
  distributed dataset's iterator exists (trainer.AllocatorSettings does, after the first
  step of every epoch). It overrides MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set in
  the environment, as TensorFlow's patch already did for the trim threshold. Under another
  allocator loaded with LD_PRELOAD (tcmalloc, jemalloc) glibc's mallopt still answers but
  changes nothing that allocator does."""
  libc = _glibc()
  if libc is None:
    return False
  mmap_ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
  trim_ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
  return bool(mmap_ok and trim_ok)
