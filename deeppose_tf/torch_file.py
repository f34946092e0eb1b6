"""Reads a PyTorch state dict saved in the legacy (pre-1.6, non-zip) torch.save format with
numpy alone, without running anything the file asks for.

The legacy format is five concatenated pickles and the raw storages:
  magic number, protocol version, sys info (plain values),
  the state dict, whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset,
  size, stride, ...)` calls on persistent ids ('storage', torch.FloatStorage, key, device,
  numel, view),
  the list of storage keys,
then for each key in that order an int64 element count and the storage's bytes.

An unpickler runs whatever callable the file names: a crafted file can run any code. This
one resolves exactly the globals such a state dict needs (an OrderedDict, the tensor
rebuild, the typed storages) to local stand-ins and refuses every other, naming it, before
anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from typing import BinaryIO, Dict

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001

# torch's typed storages -> numpy dtypes (what a weights file can hold).
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
             "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32,
             "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
             "BoolStorage": np.bool_}


class _StorageType:
  def __init__(self, name: str):
    self.name, self.dtype = name, np.dtype(_STORAGES[name])


class _StorageRef:
  """A persistent id: which storage, of what dtype and size; filled after the pickle."""

  def __init__(self, key: str, dtype: np.dtype, numel: int):
    self.key, self.dtype, self.numel = key, dtype, int(numel)
    self.array = None


class _TensorRef:
  def __init__(self, storage: _StorageRef, offset: int, size, stride):
    self.storage, self.offset = storage, int(offset)
    self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

  def materialize(self) -> np.ndarray:
    base = self.storage.array
    itemsize = base.dtype.itemsize
    needed = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
    if any(n == 0 for n in self.size):
      return np.zeros(self.size, base.dtype)
    if self.offset < 0 or needed > base.size or any(s < 0 for s in self.stride):
      raise ValueError(f"a tensor of size {self.size} at offset {self.offset} reaches past "
                       f"its storage of {base.size} elements")
    view = np.lib.stride_tricks.as_strided(
        base[self.offset:], shape=self.size, strides=[s * itemsize for s in self.stride])
    return np.array(view)  # a copy: the storage buffer is not kept alive


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  if not isinstance(storage, _StorageRef):
    raise pickle.UnpicklingError("a tensor rebuild without a storage")
  return _TensorRef(storage, storage_offset, size, stride)


def _allowed(module: str, name: str):
  if (module, name) == ("collections", "OrderedDict"):
    return collections.OrderedDict
  if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
    return _rebuild_tensor_v2
  if module == "torch" and name in _STORAGES:
    return _StorageType(name)
  return None


class _SafeUnpickler(pickle.Unpickler):
  def find_class(self, module, name):
    found = _allowed(module, name)
    if found is None:
      raise pickle.UnpicklingError(
          f"the file asks for {module}.{name}, which a weights file never needs; refused "
          "(unpickling it could run code from the file)")
    return found

  def persistent_load(self, pid):
    if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
        or not isinstance(pid[1], _StorageType)):
      raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
    _, storage_type, key, _location, numel = pid[:5]
    refs = self.storages
    if key not in refs:
      refs[key] = _StorageRef(str(key), storage_type.dtype, numel)
    return refs[key]


def _load(f: BinaryIO, storages: Dict[str, _StorageRef]):
  unpickler = _SafeUnpickler(f)
  unpickler.storages = storages
  return unpickler.load()


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """{name: array} of a legacy-format torch.save file of a state dict.

  Raises ValueError naming the file for anything else: a refused global (a file crafted to
  run code), the zip format of torch >= 1.6, a truncated file, a value that is not a
  tensor."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    return _parse(io.BytesIO(data))
  except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError,
          AttributeError, IndexError, KeyError) as e:
    if data[:2] == b"PK":
      raise ValueError(f"{path}: a zip-format torch file (torch >= 1.6); only the legacy "
                       "format is read") from None
    raise ValueError(f"{path} is not a readable legacy torch state dict: {e}") from None


def _parse(f: BinaryIO) -> Dict[str, np.ndarray]:
  storages: Dict[str, _StorageRef] = {}
  magic = _load(f, storages)
  if magic != MAGIC:
    raise ValueError("no torch legacy magic number at the start")
  protocol = _load(f, storages)
  if protocol != PROTOCOL:
    raise ValueError(f"torch protocol version {protocol}, expected {PROTOCOL}")
  info = _load(f, storages)
  if not isinstance(info, dict) or not info.get("little_endian", False):
    raise ValueError("a big-endian or unknown system info header")
  state = _load(f, storages)
  keys = _load(f, storages)
  if not isinstance(state, dict) or not isinstance(keys, list):
    raise ValueError("the file does not hold a state dict")
  for key in keys:
    ref = storages.get(key)
    if ref is None:
      raise ValueError(f"storage {key!r} is listed but no tensor uses it")
    (numel,) = struct.unpack("<q", f.read(8))
    if numel != ref.numel:
      raise ValueError(f"storage {key!r} holds {numel} elements, its tensors say {ref.numel}")
    nbytes = numel * ref.dtype.itemsize
    raw = f.read(nbytes)
    if len(raw) != nbytes:
      raise ValueError(f"truncated: storage {key!r} needs {nbytes} bytes, {len(raw)} remain")
    ref.array = np.frombuffer(raw, ref.dtype)
  out = {}
  for name, value in state.items():
    if not isinstance(value, _TensorRef):
      raise ValueError(f"entry {name!r} is not a tensor")
    if value.storage.array is None:
      raise ValueError(f"entry {name!r}: its storage is missing from the file")
    out[str(name)] = value.materialize()
  return out
