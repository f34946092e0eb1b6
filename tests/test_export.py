"""Export: SavedModel in a fresh process, TF Serving request shapes, bad inputs, TFLite, atomicity.

One tiny untrained 2-stage cascade (input 72, width 0.1, fc 32, random output layer so poses
depend on the image) is written as a workdir and exported once per module.
"""

import base64
import dataclasses
import http.server
import importlib.util
import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import threading
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeppose_tf import cascade, export, geometry, pipeline
from helpers import weight_types as _weight_types
from deeppose_tf.models import builder as model_lib
from deeppose_tf import workdir as workdir_lib
from deeppose_tf.skeleton import LSP14
from deeppose_tf.tflite_cascade import fit_to_canvas

from helpers import REPO
from helpers import encode as _encode
from helpers import subprocess_env as _env

SIZE = 72


def _client():
  spec = importlib.util.spec_from_file_location("deeppose_client",
                                                os.path.join(REPO, "export", "client.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _png_declaring(width, height):
  """A valid small PNG whose IHDR is rewritten to declare width x height (CRC fixed)."""
  data = bytearray(_encode(np.zeros((4, 4, 3), np.uint8), "PNG"))
  data[16:24] = struct.pack(">II", width, height)
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
  return bytes(data)


def _jpeg_declaring(width, height):
  """A small baseline JPEG whose SOF0 frame header declares width x height."""
  data = bytearray(_encode(np.zeros((8, 8, 3), np.uint8), "JPEG"))
  sof = data.index(b"\xff\xc0")
  data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
  return bytes(data)


def _write_workdir(d, tiny_data, size=SIZE, sigma=2.0, num_stages=2):
  """An untrained cascade of `num_stages` tiny AlexNet fc stages at `size` px in folder d."""
  keras.utils.set_random_seed(0)
  config = model_lib.ModelConfig(input_size=size, width=0.1, fc_units=32,
                                 output_init="default")
  for s in range(1, num_stages + 1):
    os.makedirs(workdir_lib.stage_dir(d, s))
    workdir_lib.save_model(model_lib.build_regressor(config, name=f"stage{s}"),
                           workdir_lib.model_path(d, s))
  workdir_lib.write_config(d, {"skeleton": "lsp14", "input_size": size, "sigma": sigma,
                               "num_stages": num_stages, "data_dir": tiny_data,
                               "train_split": "train", "model": dataclasses.asdict(config)})
  # What evaluate compares with.
  workdir_lib.write_mean_pose(d, pipeline.mean_pose(tiny_data, "train", LSP14))
  return d


@pytest.fixture(scope="module")
def workdir(tiny_data, tmp_path_factory):
  return _write_workdir(str(tmp_path_factory.mktemp("export_workdir")), tiny_data)


@pytest.fixture(scope="module")
def casc(workdir):
  return cascade.Cascade.load(workdir)


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
  """Exported through the CLI, as a user would."""
  out = str(tmp_path_factory.mktemp("serving") / "deeppose")
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.export", f"--workdir={workdir}",
                        f"--export_dir={out}", "--version=3"], capture_output=True, text=True,
                       env=_env(), cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert sorted(os.listdir(out)) == ["3"]
  return os.path.join(out, "3")


@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(exported)


@pytest.fixture(scope="module")
def images():
  """A JPEG (50 x 70, h x w) and a PNG (83 x 41) of different sizes."""
  rng = np.random.RandomState(5)
  return [_encode(rng.randint(0, 256, (50, 70, 3)).astype(np.uint8), "JPEG"),
          _encode(rng.randint(0, 256, (83, 41, 3)).astype(np.uint8), "PNG")]


def _reference(casc, encoded, box=None):
  """In-process Cascade.predict on one image decoded by the pipeline: (S, K, 2)."""
  image = pipeline.decode_image(encoded)
  if box is None:
    box = geometry.full_image_box(tf.shape(image)[0], tf.shape(image)[1])
  return casc.predict(image[None], tf.constant(box, tf.float32)[None]).numpy()[0]


_FRESH = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    path, images = sys.argv[1], [bytes.fromhex(h) for h in json.load(sys.stdin)]
    m = tf.saved_model.load(path)
    full = m.signatures["serving_default"](image_bytes=tf.constant(images))
    boxed = m.signatures["predict_bytes_with_boxes"](
        image_bytes=tf.constant(images), boxes=tf.constant([[30, 22, 40, 36], [0, 0, 0, 0]],
                                                           tf.float32))
    with open(os.path.join(path, "assets", "joint_names.txt")) as f:
      asset = f.read().split()
    print(json.dumps({
        "full": full["joints_per_stage"].numpy().tolist(),
        "last": full["joints"].numpy().tolist(),
        "boxed": boxed["joints_per_stage"].numpy().tolist(),
        "names": [n.decode() for n in m.joint_names().numpy()],
        "skeleton": m.skeleton_name().numpy().decode(), "asset": asset,
        "package_imported": any(k.startswith("deeppose_tf") for k in sys.modules)}))
""")


def test_saved_model_in_fresh_process_matches_cascade(exported, casc, images):
  run = subprocess.run([sys.executable, "-c", _FRESH, exported],
                       input=json.dumps([im.hex() for im in images]), capture_output=True,
                       text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                       timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  got = json.loads(run.stdout.strip().splitlines()[-1])
  assert not got["package_imported"]
  assert got["names"] == list(LSP14.joints) == got["asset"] and got["skeleton"] == "lsp14"
  full = np.asarray(got["full"])
  assert full.shape == (2, 2, 14, 2)
  np.testing.assert_array_equal(np.asarray(got["last"]), full[:, -1])
  for i, encoded in enumerate(images):  # each image cropped at its own size
    np.testing.assert_allclose(full[i], _reference(casc, encoded), atol=1e-3)
  boxed = np.asarray(got["boxed"])
  np.testing.assert_allclose(boxed[0], _reference(casc, images[0], [30, 22, 40, 36]),
                             atol=1e-3)
  np.testing.assert_allclose(boxed[1], full[1], atol=1e-3)  # zero box = full image


def test_saved_model_cli_lists_signatures_and_outputs(exported):
  exe = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  cmd = ([exe] if os.path.exists(exe) else
         [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"])
  run = subprocess.run(cmd + ["show", "--all", "--dir", exported], capture_output=True,
                       text=True, env=_env(), timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  for name in ("serving_default", "predict_bytes_with_boxes", "predict_images"):
    assert f"signature_def['{name}']" in run.stdout
  for key in ("inputs['image_bytes']", "inputs['boxes']", "inputs['images']",
              "outputs['joints']", "outputs['joints_per_stage']"):
    assert key in run.stdout, key


def test_rest_json_body_gives_predict_images_joints(loaded, images):
  """The body TF Serving receives for serving_default, decoded the way it does ({"b64"} ->
  DT_STRING bytes), gives the joints of predict_images on the decoded pixels. The PNG is
  decoded by PIL (lossless, so every decoder agrees); JPEG decoders differ by a few levels,
  so the JPEG reference uses TF's decoder."""
  body = json.dumps({"instances": [{"b64": base64.b64encode(im).decode()} for im in images]})
  assert json.loads(body)["instances"] == _client().rest_body(images)["instances"]
  strings = [base64.b64decode(row["b64"]) for row in json.loads(body)["instances"]]
  out = loaded.signatures["serving_default"](image_bytes=tf.constant(strings))
  pixels = [tf.io.decode_jpeg(images[0], channels=3).numpy(),
            np.asarray(Image.open(io.BytesIO(images[1])).convert("RGB"))]
  for i, p in enumerate(pixels):
    ref = loaded.signatures["predict_images"](images=tf.constant(p[None]),
                                              boxes=tf.zeros([1, 4]))
    np.testing.assert_allclose(out["joints"][i], ref["joints"][0], atol=1e-3)


class _FakeServing(http.server.BaseHTTPRequestHandler):
  """Just enough of TF Serving's REST :predict (row and columnar formats) for the client."""

  def do_POST(self):
    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
    sig = self.server.model.signatures[body.get("signature_name", "serving_default")]

    def tensor(v):
      if isinstance(v[0], dict):
        return tf.constant([base64.b64decode(x["b64"]) for x in v])
      return tf.constant(v, tf.float32)

    try:
      if "instances" in body:
        out = sig(image_bytes=tensor(body["instances"]))
        b = out["joints"].shape[0]
        reply = {"predictions": [{k: v[i].numpy().tolist() for k, v in out.items()}
                                 for i in range(b)]}
      else:
        out = sig(**{k: tensor(v) for k, v in body["inputs"].items()})
        reply = {"outputs": {k: v.numpy().tolist() for k, v in out.items()}}
      code = 200
    except tf.errors.InvalidArgumentError as e:
      reply, code = {"error": e.message}, 400
    data = json.dumps(reply).encode()
    self.send_response(code)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


def test_client_rest_round_trip(loaded, images):
  client = _client()
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeServing)
  server.model = loaded
  threading.Thread(target=server.serve_forever, daemon=True).start()
  url = f"http://127.0.0.1:{server.server_address[1]}"
  try:
    full = client.predict_rest(url, "deeppose", images)
    ref = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
    np.testing.assert_allclose(full["joints"], ref["joints"], atol=1e-4)
    boxed = client.predict_rest(url, "deeppose", images, [[30, 22, 40, 36], [0, 0, 0, 0]])
    assert boxed["joints_per_stage"].shape == (2, 2, 14, 2)
    np.testing.assert_allclose(boxed["joints"][1], ref["joints"][1], atol=1e-4)
    with pytest.raises(RuntimeError, match=r"HTTP 400.*image_bytes\[1\] is an empty string"):
      client.predict_rest(url, "deeppose", [images[0], b""])
  finally:
    server.shutdown()
  assert client.joint_names(14) == list(LSP14.joints)


def test_client_grpc_round_trip(loaded, images):
  pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc",
                      reason="the gRPC client needs tensorflow-serving-api "
                             "(pip install -e '.[test]' or '.[serving]')")
  import grpc
  from concurrent import futures
  from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

  class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):
      sig = loaded.signatures[request.model_spec.signature_name]
      out = sig(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
      reply = predict_pb2.PredictResponse()
      for k, v in out.items():
        reply.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
      return reply

  server = grpc.server(futures.ThreadPoolExecutor(2))
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
  port = server.add_insecure_port("127.0.0.1:0")
  server.start()
  try:
    out = _client().predict_grpc(f"127.0.0.1:{port}", "deeppose", images,
                                 [[30, 22, 40, 36], [0, 0, 0, 0]])
  finally:
    server.stop(None)
  ref = loaded.signatures["predict_bytes_with_boxes"](
      image_bytes=tf.constant(images), boxes=tf.constant([[30, 22, 40, 36], [0, 0, 0, 0.]]))
  np.testing.assert_allclose(out["joints"], ref["joints"], atol=1e-4)


@pytest.mark.parametrize("bad, message", [
    (b"GIF89a definitely not a pose image", r"image_bytes\[1\] is not a JPEG or PNG image"),
    (b"", r"image_bytes\[1\] is an empty string"),
    ("png0x0", r"image_bytes\[1\] declares a 0x0 \(width x height\) image"),
    ("png_huge", r"image_bytes\[1\] declares 10000x10000 .* over the limit of 50000000"),
    ("jpeg_huge", r"image_bytes\[1\] declares 12000x9000 .* over the limit of 50000000"),
    ("png_truncated", r"image_bytes\[1\] is a truncated PNG"),
])
def test_bad_images_fail_clearly_and_the_model_survives(loaded, images, bad, message):
  bad = {"png0x0": _png_declaring(0, 0), "png_huge": _png_declaring(10000, 10000),
         "jpeg_huge": _jpeg_declaring(12000, 9000),
         "png_truncated": images[1][:20]}.get(bad, bad)
  for sig, extra in (("serving_default", {}),
                     ("predict_bytes_with_boxes", {"boxes": tf.zeros([2, 4])})):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      loaded.signatures[sig](image_bytes=tf.constant([images[0], bad]), **extra)
  good = loaded.signatures["serving_default"](image_bytes=tf.constant(images[:1]))
  assert np.all(np.isfinite(good["joints"].numpy()))


def test_boxes_must_match_the_images(loaded, images):
  with pytest.raises(tf.errors.InvalidArgumentError, match="boxes has 1 rows for 2 images"):
    loaded.signatures["predict_bytes_with_boxes"](image_bytes=tf.constant(images),
                                                  boxes=tf.zeros([1, 4]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="image_bytes is an empty batch"):
    loaded.signatures["serving_default"](image_bytes=tf.constant([], tf.string))


def test_truncated_jpeg_names_its_batch_entry(loaded, images):
  jpeg = _encode(np.full((40, 30, 3), 128, np.uint8), "JPEG")
  for cut in (jpeg[: len(jpeg) // 2], jpeg[:-2]):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"image_bytes\[1\] is a truncated JPEG"):
      loaded.signatures["serving_default"](image_bytes=tf.constant([images[0], cut]))
  # Data after the end marker (a phone's motion photo) is still a valid JPEG.
  out = loaded.signatures["serving_default"](image_bytes=tf.constant([jpeg + b"trailing"]))
  assert np.all(np.isfinite(out["joints"].numpy()))


def test_request_pixel_budget_is_checked_before_decoding(loaded):
  from deeppose_tf.export.inputs import MAX_REQUEST_PIXELS
  big = _png_declaring(7000, 7000)  # 49 MP each, under the per-image limit
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=f"declare 245000000 pixels in all, over the limit of "
                           f"{MAX_REQUEST_PIXELS} per request"):
    loaded.signatures["serving_default"](image_bytes=tf.constant([big] * 5))


@pytest.mark.parametrize("sig", ["predict_bytes_with_boxes", "predict_images"])
def test_a_box_entirely_outside_its_image_is_refused(loaded, images, sig):
  boxes = tf.constant([[30, 22, 40, 36], [10000, 10000, 50, 50]], tf.float32)
  if sig == "predict_images":
    pixels = tf.stack([tf.image.decode_image(b, channels=3, expand_animations=False)
                       for b in images[:1]] * 2)
    call = lambda: loaded.signatures[sig](images=pixels, boxes=boxes)
  else:
    call = lambda: loaded.signatures[sig](image_bytes=tf.constant(images[:2]), boxes=boxes)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"boxes\[1\] = .* lies entirely outside its"):
    call()
  # A box that overlaps its image only in part is a valid request.
  if sig == "predict_images":
    out = loaded.signatures[sig](images=pixels, boxes=tf.constant([[-5, -5, 20, 20]] * 2,
                                                                   tf.float32))
    assert np.all(np.isfinite(out["joints"].numpy()))


def test_predict_images_refuses_empty_images_and_more_boxes_than_images(loaded):
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"images are 0x0 \(width x height\)"):
    loaded.signatures["predict_images"](images=tf.zeros([1, 0, 0, 3], tf.uint8),
                                        boxes=tf.zeros([1, 4]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="boxes has 3 rows for 1 images"):
    loaded.signatures["predict_images"](images=tf.zeros([1, 40, 30, 3], tf.uint8),
                                        boxes=tf.zeros([3, 4]))


@pytest.mark.parametrize("args, message", [
    (["--precision=float16"], r"flag --precision=float16: value should be one of "
                              r"<float32\|bfloat16>"),
    (["--quantize=int8"], r"quantize=int8.*apply to --format=tflite only"),
    (["--format=tflite", "--precision=bfloat16"],
     r"precision=bfloat16.*apply to --format=saved_model only"),
    (["--format=tflite", "--tflite_size=0,4"],
     r"flag --tflite_size=\['0', '4'\]: --tflite_size must be H,W: two positive integers"),
    (["--version=0"], r"flag --version=0: --version must be a positive integer"),
    ([], r"flag --export_dir=None: Flag --export_dir must have a value"),
])
def test_cli_refuses_bad_flags_naming_flag_value_and_allowed(workdir, tmp_path, args, message):
  """Checked when the flags are parsed: nothing is loaded and nothing is written."""
  out = str(tmp_path / "out")
  dest = [f"--export_dir={out}"] if args else []
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.export", f"--workdir={workdir}",
                        *dest, *args], capture_output=True, text=True, env=_env(), cwd=REPO,
                       timeout=300)
  assert run.returncode != 0
  assert re.search(message, run.stderr), run.stderr[-3000:]
  assert not os.path.exists(out)


def test_cli_help_lists_the_commands_flags():
  """--help lists the flags __main__.py defines (absl lists the main module's only; it
  exits with status 1 after the help)."""
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.export", "--help"],
                       capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
  assert "python -m deeppose_tf.export --workdir=" in run.stdout, run.stderr[-3000:]
  for name in ("workdir", "export_dir", "output", "version", "format", "precision",
               "quantize", "tflite_size", "seed", "num_stages", "flip_test", "reframe",
               "reframe_grow", "refine_step"):
    assert f"  --{name}: " in run.stdout, name
  assert "--output: Alias for --export_dir." in run.stdout


def _tflite_run(path_or_bytes, canvas, box):
  from ai_edge_litert.interpreter import Interpreter
  kwargs = ({"model_path": path_or_bytes} if isinstance(path_or_bytes, str)
            else {"model_content": path_or_bytes})
  interpreter = Interpreter(**kwargs, num_threads=2)
  ops = {op["op_name"] for op in interpreter._get_ops_details()}
  out = interpreter.get_signature_runner("serving_default")(image=canvas, box=box)
  return out, ops, interpreter


def _canvases(count, seed=0):
  """(uint8 (1, 144, 144, 3) canvas, float32 (1, 4) full-image box) of random-size images."""
  rng = np.random.RandomState(seed)
  for _ in range(count):
    h, w = rng.randint(40, 140, 2)
    canvas, _ = fit_to_canvas(rng.randint(0, 256, (h, w, 3)).astype(np.uint8),
                              2 * SIZE, 2 * SIZE)
    yield canvas[None].astype(np.uint8), np.array([[w / 2, h / 2, w, h]], np.float32)


def test_int8_finds_each_ops_layer_by_its_innermost_scope():
  layers = {"backbone": False, "block_2_add": True, "Conv1_relu": True, "heatmaps": False,
            "joints": False, "add": True}
  of = export.tflite.layer_of
  assert of("functional_1/backbone_1/block_2_add_1/Add", layers) == "block_2_add"
  assert of("functional_1/backbone_1/Conv1_relu_1/Relu6;functional_1/backbone_1/x", layers) \
      == "Conv1_relu"
  assert of("functional_1/heatmaps_1/BiasAdd;functional_1/heatmaps_1/convolution",
            layers) == "heatmaps"
  # Geometry is outside every network's scope, even where its name looks like a layer's.
  assert of("add_3", layers) is None and of("joints_1/ArgMax", layers) is None
  assert of("clip_by_value/Minimum", layers) is None


def _check_ops(ops):
  assert not [op for op in ops if "FLEX" in op.upper() or op.startswith("Flex")], ops
  assert not ops & {"READ_VARIABLE", "VAR_HANDLE", "ASSIGN_VARIABLE"}, ops
  assert {"CONV_2D", "FULLY_CONNECTED", "GATHER"} <= ops


@pytest.fixture(scope="module")
def tflite_fp32(workdir, tmp_path_factory):
  """Through the CLI with --output, the former name of --export_dir (an alias)."""
  path = str(tmp_path_factory.mktemp("tflite") / "deeppose.tflite")
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.export", f"--workdir={workdir}",
                        f"--output={path}", "--format=tflite"], capture_output=True,
                       text=True, env=_env(), cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  return path


@pytest.mark.parametrize("image, box, message", [
    (np.full((40, 30, 3), np.nan, np.float32), [15, 20, 30, 40], "image 0 has non-finite"),
    (np.full((40, 30, 3), np.inf, np.float32), [15, 20, 30, 40], "image 0 has non-finite"),
    (np.zeros((0, 0, 3), np.uint8), [0, 0, 0, 0], "image 0 is 0x0"),
    (np.zeros((40, 30), np.uint8), [15, 20, 30, 40], r"image 0 has shape \(40, 30\)"),
    (np.zeros((40, 30, 4), np.uint8), [15, 20, 30, 40], r"image 0 has shape \(40, 30, 4\)"),
    (np.zeros((40, 30, 3), np.uint8), [np.nan, 20, 30, 40], "box 0 .* is not a box"),
    (np.zeros((40, 30, 3), np.uint8), [1e7, 20, 30, 40], "box 0 .* is not a box"),
    (np.zeros((40, 30, 3), np.uint8), [10000, 10000, 50, 50], "box 0 .* entirely outside"),
    (np.zeros((40, 30, 3), np.uint8), [1, 2, 3], r"box 0 is \(3,\)"),
])
def test_tflite_wrapper_checks_inputs_before_invoking(tflite_fp32, image, box, message):
  from deeppose_tf.tflite_cascade import TFLiteCascade
  from deeppose_tf.skeleton import LSP14
  casc = TFLiteCascade(tflite_fp32, LSP14)
  with pytest.raises(ValueError, match=message):
    casc.predict_one(image, box)
  with pytest.raises(ValueError, match=r"expected images \(B, H, W, 3\) and boxes \(B, 4\)"):
    casc.predict(np.zeros((2, 40, 30, 3), np.uint8), np.zeros((3, 4)))
  # A valid request answers with finite joints; w, h <= 0 means the whole image.
  out = casc.predict_one(np.full((40, 30, 3), 100, np.uint8), [0, 0, 0, 0])
  assert out.shape == (casc.num_stages, 14, 2) and np.isfinite(out).all()


def test_tflite_fp32_builtin_ops_matches_saved_model(tflite_fp32, loaded, casc):
  kernels = sum(int(np.prod(w.shape)) for net in casc.stages for w in net.weights
                if w.name == "kernel")
  assert os.path.getsize(tflite_fp32) >= 4 * kernels  # weights are in the file, as float32
  for canvas, box in _canvases(3):
    out, ops, interpreter = _tflite_run(tflite_fp32, canvas.astype(np.float32), box)
    ref = loaded.signatures["predict_images"](images=tf.constant(canvas), boxes=box)
    np.testing.assert_allclose(out["joints_per_stage"], ref["joints_per_stage"], atol=0.5)
    np.testing.assert_allclose(out["joints"], ref["joints"], atol=0.5)
  _check_ops(ops)
  shapes = {d["name"]: list(d["shape"]) for d in interpreter.get_input_details()}
  assert sorted(shapes.values()) == [[1, 4], [1, 2 * SIZE, 2 * SIZE, 3]]


def test_tflite_reads_a_person_in_a_photo_larger_than_its_canvas_at_full_resolution(
    tflite_fp32, casc):
  """A photo larger than the canvas is not shrunk whole onto it: the box's neighbourhood
  (person_region) is, so the person reaches the network at the photo's resolution, as the
  Keras cascade reads it."""
  from deeppose_tf.tflite_cascade import TFLiteCascade, person_region
  lite = TFLiteCascade(tflite_fp32, LSP14)
  canvas = lite.height
  rng = np.random.RandomState(11)
  big = rng.randint(0, 256, (6 * canvas, 5 * canvas, 3)).astype(np.uint8)
  box = np.array([3.1 * canvas, 2.2 * canvas, 0.4 * canvas, 0.45 * canvas], np.float32)
  x0, y0, x1, y1 = person_region(box, *big.shape[:2], canvas, canvas)
  assert (x1 - x0, y1 - y0) <= (canvas, canvas) and x0 <= box[0] - box[2] < box[0] + box[2] <= x1
  ref = casc.predict(big[None], box[None]).numpy()[0]
  np.testing.assert_allclose(lite.predict_one(big, box), ref, atol=0.5)
  # A box near the corner: its neighbourhood is cut at the photo's edge.
  corner = np.array([0.2 * canvas, 0.25 * canvas, 0.4 * canvas, 0.4 * canvas], np.float32)
  assert person_region(corner, *big.shape[:2], canvas, canvas)[:2] == (0, 0)
  np.testing.assert_allclose(lite.predict_one(big, corner),
                             casc.predict(big[None], corner[None]).numpy()[0], atol=0.5)
  # A photo that fits the canvas is placed whole, as exported.
  assert person_region(box, canvas, canvas - 3, canvas, canvas) == (0, 0, canvas - 3, canvas)


def test_evaluate_tflite_matches_the_keras_cascade(workdir, tflite_fp32, casc, tiny_data,
                                                  tmp_path):
  """What ships is measured like what was trained: TFLiteCascade (through predict_split's
  padded batches) predicts the Keras cascade's poses on the test split, and
  `evaluate --tflite` writes its report beside the file, not over the workdir's."""
  from deeppose_tf import predict
  from deeppose_tf.tflite_cascade import TFLiteCascade
  lite = TFLiteCascade(tflite_fp32, LSP14)
  assert (lite.num_stages, lite.height, lite.width) == (2, 2 * SIZE, 2 * SIZE)
  ref = predict.predict_split(casc, tiny_data, "test", batch_size=8)
  got = predict.predict_split(lite, tiny_data, "test", batch_size=3)
  assert got["poses"].shape == ref["poses"].shape == (8, 2, 14, 2)
  np.testing.assert_array_equal(got["ids"], ref["ids"])
  np.testing.assert_allclose(got["poses"], ref["poses"], atol=0.5)
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.evaluate", f"--workdir={workdir}",
                        f"--tflite={tflite_fp32}"], capture_output=True, text=True,
                       env=_env(), cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  report_dir = os.path.splitext(tflite_fp32)[0] + "-report"
  with open(os.path.join(report_dir, "report.json")) as f:
    report = json.load(f)
  assert report["model"] == tflite_fp32 and report["num_images"] == 8
  assert len(report["stages"]) == 2 and os.path.exists(os.path.join(report_dir, "report.md"))
  assert not os.path.exists(os.path.join(workdir, "report.json"))
  with pytest.raises(ValueError, match="predicts 14 joints; skeleton flic10"):
    from deeppose_tf.skeleton import FLIC10
    TFLiteCascade(tflite_fp32, FLIC10)


@pytest.mark.slow  # two commands in child processes: about 20 s
def test_export_bakes_in_the_stages_and_inference_options_asked(workdir, tmp_path):
  """export --num_stages=1 --flip_test=true --reframe=1 (the workdir has neither flips nor
  reframing): the .tflite file runs exactly that cascade, its sidecar says so, and
  evaluate --tflite refuses to override what the file bakes in."""
  from deeppose_tf.tflite_cascade import TFLiteCascade, read_sidecar
  path = str(tmp_path / "fast.tflite")
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.export", f"--workdir={workdir}",
                        f"--export_dir={path}", "--format=tflite", "--num_stages=1",
                        "--flip_test=true", "--reframe=1"], capture_output=True, text=True,
                       env=_env(), cwd=REPO, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  meta = read_sidecar(path)
  assert (meta["stages"], meta["flip_test"], meta["reframe"]) == (1, True, 1)
  want = cascade.Cascade.load(workdir, num_stages=1, flip_test=True, reframe=1)
  plain = cascade.Cascade.load(workdir, num_stages=1)
  lite = TFLiteCascade(path, LSP14)
  assert lite.num_stages == 1
  moved = 0.0
  for canvas, box in _canvases(3):
    got = lite.predict_one(canvas[0], box[0])
    ref = want.predict(canvas.astype(np.float32), tf.constant(box)).numpy()[0]
    np.testing.assert_allclose(got, ref, atol=0.5)
    other = plain.predict(canvas.astype(np.float32), tf.constant(box)).numpy()[0]
    moved = max(moved, float(np.abs(ref - other).max()))
  assert moved > 0.5  # the options change the poses, so the check above can fail
  run = subprocess.run([sys.executable, "-m", "deeppose_tf.evaluate", f"--workdir={workdir}",
                        f"--tflite={path}", "--num_stages=1"], capture_output=True, text=True,
                       env=_env(), cwd=REPO, timeout=300)
  assert run.returncode != 0
  assert "a .tflite file runs what export baked into it" in run.stderr, run.stderr[-3000:]


def test_evaluate_tflite_refuses_a_file_of_another_cascade(workdir, tflite_fp32, tiny_data,
                                                           tmp_path):
  """export --format=tflite writes MODEL.json beside the file (what the graph cannot tell:
  skeleton, stages, input size, sigma); evaluate --tflite refuses a file whose sidecar
  disagrees with the workdir's config.json, or (sidecar or not) that has more stages than
  the workdir, naming both files and every difference, before writing any report."""
  import shutil
  from deeppose_tf import evaluate
  sidecar = os.path.splitext(tflite_fp32)[0] + ".json"
  other = _write_workdir(str(tmp_path / "other"), tiny_data, size=96, sigma=1.0)
  config = os.path.join(other, "config.json")
  with pytest.raises(ValueError, match="^" + re.escape(
      f"--tflite={tflite_fp32} was not exported from --workdir={other}: input_size 72 in "
      f"{sidecar}, 96 in {config}; sigma 2.0 in {sidecar}, 1.0 in {config}. Evaluate it "
      "with the workdir it was exported from, or export this one")):
    evaluate.run(other, "test", tiny_data, limit=2, tflite=tflite_fp32)
  assert not os.path.exists(os.path.join(other, "report.json"))
  # Without a sidecar the graph still tells the stages: 2 do not come from a 1-stage run.
  bare = str(tmp_path / "bare.tflite")
  shutil.copy(tflite_fp32, bare)
  one = _write_workdir(str(tmp_path / "one"), tiny_data, num_stages=1)
  with pytest.raises(ValueError, match=re.escape(
      f"was not exported from --workdir={one}: 2 stages in {bare}, 1 in "
      f"{os.path.join(one, 'config.json')}")):
    evaluate.run(one, "test", tiny_data, limit=2, tflite=bare)
  assert not os.path.exists(str(tmp_path / "bare-report"))
  from deeppose_tf.export.tflite import write_sidecar
  from deeppose_tf.tflite_cascade import read_sidecar
  meta = read_sidecar(tflite_fp32)
  assert meta == {"skeleton": "lsp14", "stages": 2, "input_size": SIZE, "sigma": 2.0,
                  "canvas": [2 * SIZE, 2 * SIZE], "quantize": "none", "flip_test": False,
                  "reframe": 0, "reframe_grow": 1.3, "refine_step": 1.0,
                  "left_right": "person"}
  # Exporting over a model card keeps the card's own keys.
  with open(str(tmp_path / "bare.json"), "w") as f:
    json.dump({"name": "mine", "version": "7", "skeleton": "flic10"}, f)
  write_sidecar(bare, meta)
  assert read_sidecar(bare) == {"name": "mine", "version": "7", **meta}


def test_evaluate_the_bundled_tflite_reports_under_the_workdir(workdir, tiny_data, tmp_path):
  """The bundled model lies inside the installed package (site-packages for a normal
  install): evaluate --tflite's default report folder is then WORKDIR/tflite-<name>-report/,
  and nothing is written beside the model. A file in a writable folder elsewhere keeps
  MODEL-report/ beside it."""
  import shutil
  import deeppose_tf
  from deeppose_tf import evaluate
  models_dir = os.path.join(os.path.dirname(deeppose_tf.__file__), "models")
  bundled = os.path.join(models_dir, "deeppose_lspet.tflite")
  before = sorted(os.listdir(models_dir))
  w = str(tmp_path / "w")
  shutil.copytree(workdir, w)  # lsp14, 2 stages: what the bundled model's sidecar names
  from deeppose_tf import workdir as workdir_lib
  from deeppose_tf.tflite_cascade import read_sidecar
  config = workdir_lib.read_config(w)  # and its crop size and sigma, as its workdir had
  meta = read_sidecar(bundled)
  config.update({k: meta[k] for k in ("input_size", "sigma") if k in meta})
  workdir_lib.write_config(w, config)
  report = evaluate.run(w, "test", tiny_data, limit=2, num_examples=0, tflite=bundled)
  assert report["model"] == bundled and len(report["stages"]) == 2
  with open(os.path.join(w, "tflite-deeppose_lspet-report", "report.json")) as f:
    assert json.load(f)["num_images"] == 2
  assert sorted(os.listdir(models_dir)) == before
  assert evaluate.tflite_report_dir(str(tmp_path / "m.tflite"), w) == str(tmp_path / "m-report")


@pytest.mark.slow  # ~18 s; CI runs the slow suite too
def test_bench_quant_reports_keras_fp32_and_int8_accuracy(workdir, tmp_path):
  """bench --only=quant: the same split through the Keras cascade, TFLite fp32 and int8;
  fp32 scores what Keras scores (same poses within 0.5 px on 8 images)."""
  from deeppose_tf import bench
  out, rows = bench.quantized_accuracy(workdir, str(tmp_path))
  assert set(out) == {"keras", "keras_bf16", "tflite_fp32", "tflite_int8",
                      "int8_minus_fp32_pcp", "bf16_minus_fp32_pcp"}
  for name in ("keras", "keras_bf16", "tflite_fp32", "tflite_int8"):
    assert out[name]["num_images"] == 8 and out[name]["stages"] == 2
    assert 0.0 <= out[name]["pdj@0.2"] <= 1.0
  assert abs(out["tflite_fp32"]["pdj@0.2"] - out["keras"]["pdj@0.2"]) < 1e-9
  assert out["int8_minus_fp32_pcp"] == out["tflite_int8"]["pcp"] - out["tflite_fp32"]["pcp"]
  assert out["bf16_minus_fp32_pcp"] == out["keras_bf16"]["pcp"] - out["keras"]["pcp"]
  assert len(rows) == 6 and "int8 - fp32" in rows[-2][0] and "bfloat16" in rows[-1][0]


@pytest.mark.slow  # 10-22 s: the default run stays under 10 minutes
def test_bfloat16_export_is_close_to_float32(workdir, casc, loaded, tmp_path):
  """export --precision=bfloat16: the networks compute in bfloat16 (variables and the
  output layer float32) and a fresh load predicts the float32 poses to within 2% of the
  image side; the float32 cascade itself is untouched."""
  bf16 = casc.with_precision("bfloat16")
  policies = {layer.name: layer.dtype_policy.name for layer in bf16.stages[0].layers}
  assert policies["conv1"] == policies["fc6"] == "mixed_bfloat16"
  assert policies["fc8"] == policies["scale"] == "float32"
  assert all(w.dtype == "float32" for w in bf16.stages[0].weights)
  assert casc.stages[0].get_layer("conv1").dtype_policy.name == "float32"
  path = export.export_saved_model(None, str(tmp_path / "bf16"), casc=bf16)
  fn = tf.saved_model.load(path).signatures["predict_images"]
  for canvas, box in _canvases(3, seed=2):
    ref = loaded.signatures["predict_images"](images=tf.constant(canvas), boxes=box)
    got = fn(images=tf.constant(canvas), boxes=box)
    err = np.abs(got["joints_per_stage"].numpy() - ref["joints_per_stage"].numpy())
    assert err.max() < 0.02 * box[0, 2:].max(), err.max()
  with pytest.raises(ValueError, match="precision must be one of"):
    casc.with_precision("float16")


# Deviation from the SavedModel in units of the box side (box = the image; a quantization
# error in the box-normalized outputs scales with the box). Measured over 5 random-init
# cascades of this size x 6 random images of 40-140 px: float16 max 0.0045, mean 0.0006;
# int8 (networks only, geometry float) max 0.053, mean 0.020. For this fixture (seed 0):
# float16 0.0010 / 0.0002, int8 0.028 / 0.009. Tolerances: about 2x the worst of the 5.
@pytest.mark.parametrize("quantize, max_rel, mean_rel, size_ratio", [
    ("float16", 0.01, 0.0015, 0.65), ("int8", 0.1, 0.04, 0.5)])
def test_tflite_quantized_deviation(quantize, max_rel, mean_rel, size_ratio, workdir, casc,
                                    loaded, tflite_fp32):
  rep = export.representative_images(workdir, 2 * SIZE, 2 * SIZE, count=8)
  model = export.convert_tflite(casc, 2 * SIZE, 2 * SIZE, quantize, rep)
  assert len(model) < size_ratio * os.path.getsize(tflite_fp32)
  rel = []
  for canvas, box in _canvases(6, seed=1):
    out, ops, _ = _tflite_run(model, canvas.astype(np.float32), box)
    ref = loaded.signatures["predict_images"](images=tf.constant(canvas), boxes=box)
    err = np.linalg.norm(out["joints_per_stage"] - ref["joints_per_stage"].numpy(), axis=-1)
    rel.append(err / box[0, 2:].max())
  _check_ops(ops)
  if quantize == "int8":
    # The feature layers run int8 kernels; the output layer (fc8) stays float, as do the
    # soft-argmax / peak decoding behind a heatmap head (export/tflite.py, int8_plan).
    kinds = _weight_types(model)
    assert {t for n, t in kinds.items() if "fc8" in n} == {"FLOAT32"}, kinds
    assert {t for n, t in kinds.items() if "fc8" not in n} == {"INT8"}, kinds
  rel = np.stack(rel)
  print(f"{quantize}: max {rel.max():.4f}, mean {rel.mean():.4f} of the box side")
  assert rel.max() < max_rel and rel.mean() < mean_rel, (rel.max(), rel.mean())


@pytest.mark.slow  # 10 s: the default run stays under 10 minutes
def test_export_is_atomic(casc, tmp_path, monkeypatch):
  out = str(tmp_path / "deeppose")
  os.makedirs(os.path.join(out, "4"))
  os.makedirs(os.path.join(out, ".tmp-9-1"))  # a dead export's leftovers: not a version
  assert export.export_saved_model(None, out, casc=casc) == os.path.join(out, "5")
  assert os.path.exists(os.path.join(out, "5", "saved_model.pb"))
  assert sorted(os.listdir(out)) == [".tmp-9-1", "4", "5"]  # no temporary of ours left
  with pytest.raises(ValueError, match="already exists"):
    export.export_saved_model(None, out, 5, casc=casc)

  def write_half_then_die(module, path, **kwargs):  # a crash in the middle of the write
    os.makedirs(os.path.join(path, "variables"))
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
      f.write(b"\x08\x01")
    raise OSError("disk full")

  monkeypatch.setattr(tf.saved_model, "save", write_half_then_die)
  with pytest.raises(OSError, match="disk full"):
    export.export_saved_model(None, out, 7, casc=casc)
  assert sorted(os.listdir(out)) == [".tmp-9-1", "4", "5"]


def test_tflite_box_rules_in_numpy_match_geometrys():
  """tflite_cascade.box_rules (numpy, per request) gives geometry's verdicts and boxes
  (box_in_range, empty_to_full_image: the SavedModel's graph) on every edge case."""
  from deeppose_tf import geometry
  from deeppose_tf.tflite_cascade import box_rules
  big = geometry.MAX_BOX_COORD
  boxes = [[50, 40, 30, 20], [np.nan, 40, 30, 20], [50, np.inf, 30, 20], [50, 40, -np.inf, 20],
           [big, 40, 30, 20], [np.nextafter(big, np.inf), 40, 30, 20], [50, -big - 1, 30, 20],
           [50, 40, 0, 20], [50, 40, 30, 0], [50, 40, -5, 20], [0, 0, 0, 0],
           [-20, 40, 30, 20], [-15, 40, 30, 20], [-14.999, 40, 30, 20],  # left edge
           [115, 40, 30, 20], [114.999, 40, 30, 20], [50, -10, 30, 20], [50, 90, 30, 20],
           [50, 40, 1e-7, 1e-7], [1e5, 1e5, 3e5, 3e5], [0.1, 0.2, 0.3, 0.4]]
  rng = np.random.default_rng(0)
  boxes += rng.uniform(-300, 300, (200, 4)).tolist()
  for h, w in ((80, 100), (1, 1), (4000, 3)):
    for box in boxes:
      ok, got, inside = box_rules(np.asarray(box, np.float64), h, w)
      tf_ok = bool(geometry.box_in_range(tf.constant(box, tf.float64)))
      assert ok == tf_ok, (box, h, w)
      if ok:
        ref, ref_inside = geometry.empty_to_full_image(tf.constant(box, tf.float64), h, w)
        np.testing.assert_array_equal(got, ref.numpy())
        assert inside == bool(ref_inside), (box, h, w)
