"""Weight averaging (deeppose_tf/average.py): the mean is the element-wise mean of real saved
networks, read back from the file written; mismatched or non-finite inputs are refused with
errors naming the model and weight; the command writes a file that loads and predicts."""

import os
import subprocess
import sys

import numpy as np
import pytest

from deeppose_tf import average, cli
from deeppose_tf import workdir as workdir_lib
from deeppose_tf.models import builder as model_lib
from helpers import REPO, subprocess_env

K = 5


def _net(seed, head="heatmap", width=0.125, stride=8):
  import keras
  keras.utils.set_random_seed(seed)
  # The small ResNet at its smallest: these tests are about the weights, not the network.
  config = model_lib.ModelConfig(num_joints=K, input_size=32, backbone="resnet",
                                 head=head, width=width, head_channels=8, heatmap_stride=stride,
                                 dropout=0.0)
  return model_lib.build_regressor(config)


def _saved(tmp_path, name, net):
  path = str(tmp_path / f"{name}.keras")
  workdir_lib.save_model(net, path)
  return path


def test_average_weights_is_the_elementwise_mean_and_keeps_integers():
  a = [np.array([1.0, 2.0], np.float32), np.array([3], np.int64)]
  b = [np.array([3.0, 6.0], np.float32), np.array([3], np.int64)]
  out = average.average_weights([a, b])
  np.testing.assert_array_equal(out[0], [2.0, 4.0])
  assert out[0].dtype == np.float32
  np.testing.assert_array_equal(out[1], [3])
  with pytest.raises(ValueError, match="integer weight counter differs"):
    average.average_weights([a, [b[0], np.array([4], np.int64)]], names=["w", "counter"])
  with pytest.raises(ValueError, match=r"net b: weight w is float32\[3\]"):
    average.average_weights([a, [np.zeros(3, np.float32), b[1]]], names=["w", "counter"],
                            labels=["net a", "net b"])
  with pytest.raises(ValueError, match="net b has 1 weights"):
    average.average_weights([a, b[:1]], labels=["net a", "net b"])
  nan = [np.array([np.nan, 1.0], np.float32), b[1]]
  with pytest.raises(ValueError, match="weight w is not finite in net b.*refusing"):
    average.average_weights([a, nan], names=["w", "counter"], labels=["net a", "net b"])
  with pytest.raises(ValueError, match="nothing to average"):
    average.average_weights([])


def test_averaged_file_holds_the_mean_of_three_saved_networks(tmp_path):
  nets = [_net(seed) for seed in (1, 2, 3)]
  # Two as workdirs (their --stage model), one as a .keras file.
  paths = []
  for i, net in enumerate(nets[:2]):
    os.makedirs(tmp_path / f"w{i}" / "stage2")
    _saved(tmp_path / f"w{i}" / "stage2", "model", net)
    paths.append(str(tmp_path / f"w{i}"))
  paths.append(_saved(tmp_path, "n2", nets[2]))
  assert average.resolve_model_path(paths[0], 2) == workdir_lib.model_path(paths[0], 2)
  out = str(tmp_path / "soup" / "stage1" / "model.keras")
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.average",
                        f"--models={','.join(paths)}", "--stage=2", f"--output={out}"],
                       capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
                       timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "3 networks" in run.stdout
  back = workdir_lib.load_model(out)  # read back from the file, not the object in memory
  weights = [n.get_weights() for n in nets]
  got = back.get_weights()
  assert len(got) == len(weights[0])
  varied = 0
  for i, w in enumerate(got):
    want = np.mean([ws[i] for ws in weights], axis=0)
    np.testing.assert_allclose(w, want, rtol=1e-6, atol=1e-6)
    if not all(np.array_equal(ws[i], weights[0][i]) for ws in weights):
      # A weight the seeds set apart (kernels; BatchNorm's start at constants): its mean
      # is none of the networks.
      varied += 1
      assert not np.allclose(w, weights[0][i]), i
  assert varied >= 10, varied
  x = np.random.RandomState(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
  pose = np.asarray(back(x))
  assert pose.shape == (2, K, 2) and np.all(np.isfinite(pose))
  assert not [f for f in os.listdir(os.path.dirname(out)) if f.startswith(".tmp")]


def test_other_architectures_are_refused_by_name(tmp_path):
  a = _saved(tmp_path, "a", _net(1))
  b = _saved(tmp_path, "b", _net(2, width=0.5))  # same layers, other channel counts
  with pytest.raises(ValueError, match=r"b.keras: weight .* is float32\[.*not the same"):
    average.average_models([a, b])
  c = _saved(tmp_path, "c", _net(3, stride=4))  # a stride-4 branch: more layers
  with pytest.raises(ValueError, match="c.keras is not the architecture of .*a.keras"):
    average.average_models([a, c])
  with pytest.raises(ValueError, match="at least 2 networks"):
    average.average_models([a])
  with pytest.raises(ValueError, match="missing"):
    average.average_models([a, str(tmp_path / "nope.keras")])


@pytest.mark.slow  # a second process start (~10 s): the default run stays under 10 minutes
def test_command_errors_are_one_line(tmp_path):
  a = _saved(tmp_path, "a", _net(1))
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.average", f"--models={a},{a}",
                        f"--output={tmp_path / 'out.h5'}"], capture_output=True, text=True,
                       env=subprocess_env(), cwd=REPO, timeout=300)
  assert run.returncode == cli.EXIT_EXPECTED, run.stderr[-2000:]
  assert "average: error: --output=" in run.stderr and "Traceback" not in run.stderr
  assert not (tmp_path / "out.h5").exists()
