"""TensorFlow's malloc patch is undone by training (allocator.py, trainer.AllocatorSettings).

The check counts page faults, not seconds: a loop that allocates, touches and frees a 1 MiB
buffer faults its 256 pages in on every pass while every allocation above 128 kB is a fresh
mmap (TensorFlow's patch), and almost never once freed memory is reused from the heap. It
runs in a fresh process, because the patch is applied once per process."""

import os
import subprocess
import sys
import textwrap

import pytest

from deeppose_tf import allocator

glibc = pytest.mark.skipif(allocator._glibc() is None,
                           reason="mallopt is glibc's (Linux); elsewhere restore() is a no-op")

SCRIPT = textwrap.dedent("""
    import ctypes, resource, sys
    import numpy as np
    import tensorflow as tf
    import keras
    from deeppose_tf import distribute, trainer

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def faults(passes=40, size=1 << 20):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      for _ in range(passes):
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        libc.free(p)
      return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    strategy = distribute.make_strategy(1)
    # What Keras' fit does first: a distributed dataset's iterator (TF's patch happens here).
    iter(strategy.experimental_distribute_dataset(tf.data.Dataset.range(4).batch(2)))
    patched = faults()

    def build():
      x = keras.Input((4,))
      return keras.Model(x, keras.layers.Reshape((2, 2))(keras.layers.Dense(4)(x)))

    def data(step):
      x = np.random.rand(8, 4).astype("float32")
      y = np.concatenate([np.random.rand(8, 2, 2), np.ones((8, 2, 1))], -1).astype("float32")
      return tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()

    trainer.fit_stage(strategy, build, data, sys.argv[1],
                      trainer.FitConfig(steps=2, checkpoint_every=2, verbose=0))
    print("FAULTS", patched, faults())
    """)


@glibc
def test_restore_sets_both_thresholds():
  # In this pytest process too: the values are where glibc moves on its own once a large
  # tensor has been freed, so the tests that follow see ordinary settings.
  assert allocator.restore() is True
  assert allocator.restore() is True  # idempotent


@glibc
def test_training_undoes_the_patch(tmp_path):
  out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "ckpt")],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "1"})
  assert out.returncode == 0, out.stderr[-3000:]
  line = [l for l in out.stdout.splitlines() if l.startswith("FAULTS")]
  assert line, out.stdout[-2000:]
  patched, trained = (int(v) for v in line[0].split()[1:])
  # Under the patch: 40 passes x 256 pages. After training: the heap reuses the buffer.
  if patched < 40 * 200:
    pytest.skip(f"this TensorFlow did not apply its malloc patch ({patched} page faults in "
                "40 passes before training): nothing to undo")
  assert trained < 40 * 20, (patched, trained)
