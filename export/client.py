"""Sends images to a TF Serving deeppose model and prints (and optionally draws) the joints.

  python export/client.py person.jpg other.png                      # REST, full-image boxes
  python export/client.py --box=120,200,180,360 person.jpg          # REST, an initial box
  python export/client.py --grpc=localhost:8500 person.jpg          # gRPC
  python export/client.py --draw=out/ --joint_names=serving/deeppose/1/assets/joint_names.txt x.jpg

REST bodies (see export/README.md):
  serving_default, row format:  {"instances": [{"b64": "<base64 JPEG/PNG>"}, ...]}
  with boxes, columnar format:  {"signature_name": "predict_bytes_with_boxes",
                                 "inputs": {"image_bytes": [{"b64": ...}], "boxes": [[cx, cy, w, h]]}}
The gRPC path needs `pip install tensorflow-serving-api` (imported only when used).
Joints are (x, y) in the pixels of each image as sent. Only the standard library is needed
for REST; Pillow for --draw.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request
from typing import List, Optional, Sequence

import numpy as np


def rest_body(images: Sequence[bytes], boxes: Optional[Sequence[Sequence[float]]] = None
              ) -> dict:
  """The JSON body for :predict. images: encoded JPEG/PNG bytes; boxes: (cx, cy, w, h) in
  each image's pixels (a row with w <= 0 means the full image), or None for full images."""
  b64 = [{"b64": base64.b64encode(im).decode("ascii")} for im in images]
  if boxes is None:
    return {"signature_name": "serving_default", "instances": b64}
  if len(boxes) != len(images):
    raise ValueError(f"got {len(boxes)} boxes for {len(images)} images; pass one per image")
  return {"signature_name": "predict_bytes_with_boxes",
          "inputs": {"image_bytes": b64, "boxes": [[float(v) for v in b] for b in boxes]}}


def parse_rest_response(response: dict) -> dict:
  """{"predictions": [...]} (row) or {"outputs": {...}} (columnar) -> {name: np.ndarray}."""
  if "error" in response:
    raise RuntimeError(f"server error: {response['error']}")
  if "outputs" in response:
    return {k: np.asarray(v, np.float32) for k, v in response["outputs"].items()}
  rows = response["predictions"]
  return {k: np.asarray([r[k] for r in rows], np.float32) for k in rows[0]}


def predict_rest(url: str, model: str, images: Sequence[bytes], boxes=None,
                 timeout: float = 60.0) -> dict:
  """POSTs to {url}/v1/models/{model}:predict; returns joints (B, K, 2) and
  joints_per_stage (B, S, K, 2), image pixels."""
  data = json.dumps(rest_body(images, boxes)).encode("utf-8")
  req = urllib.request.Request(f"{url.rstrip('/')}/v1/models/{model}:predict", data=data,
                               headers={"Content-Type": "application/json"})
  try:
    with urllib.request.urlopen(req, timeout=timeout) as r:
      return parse_rest_response(json.loads(r.read()))
  except urllib.error.HTTPError as e:  # TF Serving puts the graph's assert message here
    raise RuntimeError(f"HTTP {e.code} from {req.full_url}: {e.read().decode(errors='replace')}"
                       ) from None


def predict_grpc(target: str, model: str, images: Sequence[bytes], boxes=None,
                 timeout: float = 60.0) -> dict:
  """The same request over gRPC (PredictionService/Predict) to host:port."""
  try:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
  except ImportError as e:
    raise SystemExit(f"gRPC needs tensorflow-serving-api ({e}); install it with "
                     "`pip install tensorflow-serving-api` or use REST (--rest)") from None
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = (
      "serving_default" if boxes is None else "predict_bytes_with_boxes")
  request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
  if boxes is not None:
    request.inputs["boxes"].CopyFrom(tf.make_tensor_proto(np.asarray(boxes, np.float32)))
  with grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 1 << 28),
                                              ("grpc.max_receive_message_length", 1 << 28)]
                             ) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(request, timeout=timeout)
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def joint_names(num_joints: int, path: Optional[str] = None) -> List[str]:
  """Names from the export's assets/joint_names.txt, else the package's skeleton with this
  many joints (if deeppose_tf is importable), else joint_0 ... joint_{K-1}."""
  if path:
    with open(path) as f:
      names = [line.strip() for line in f if line.strip()]
    if len(names) != num_joints:
      raise ValueError(f"{path} names {len(names)} joints but the model returned {num_joints}")
    return names
  try:
    from deeppose_tf.skeleton import SKELETONS
    for s in SKELETONS.values():
      if s.num_joints == num_joints:
        return list(s.joints)
  except ImportError:
    pass
  return [f"joint_{i}" for i in range(num_joints)]


def draw(image_bytes: bytes, joints: np.ndarray, names: Sequence[str], path: str) -> None:
  """Saves the image with every joint as a dot and its name. joints: (K, 2) image pixels."""
  import io
  from PIL import Image, ImageDraw
  image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
  canvas = ImageDraw.Draw(image)
  r = max(2, round(max(image.size) / 150))
  for (x, y), name in zip(joints, names):
    colour = (255, 60, 60) if name.startswith("r_") else (
        (60, 120, 255) if name.startswith("l_") else (60, 220, 60))
    canvas.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0))
    canvas.text((x + r + 1, y - r), name, fill=colour)
  image.save(path)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("images", nargs="+", help="JPEG or PNG files")
  p.add_argument("--rest", default="http://localhost:8501", help="REST base URL")
  p.add_argument("--grpc", default=None, help="host:port: use gRPC instead of REST")
  p.add_argument("--model", default="deeppose", help="model name in TF Serving")
  p.add_argument("--box", action="append", default=None,
                 help="cx,cy,w,h initial box in image pixels; once per image (or once for all)")
  p.add_argument("--joint_names", default=None, help="an export's assets/joint_names.txt")
  p.add_argument("--draw", default=None, help="folder for images with the joints drawn")
  a = p.parse_args(argv)
  images = []
  for path in a.images:
    with open(path, "rb") as f:
      images.append(f.read())
  boxes = None
  if a.box:
    boxes = [[float(v) for v in b.split(",")] for b in a.box]
    if len(boxes) == 1:
      boxes = boxes * len(images)
    if any(len(b) != 4 for b in boxes) or len(boxes) != len(images):
      p.error("--box takes cx,cy,w,h, given once or once per image")
  out = (predict_grpc(a.grpc, a.model, images, boxes) if a.grpc
         else predict_rest(a.rest, a.model, images, boxes))
  joints = out["joints"]
  names = joint_names(joints.shape[1], a.joint_names)
  for path, data, pose in zip(a.images, images, joints):
    print(path)
    for name, (x, y) in zip(names, pose):
      print(f"  {name:<12s} x={x:8.1f}  y={y:8.1f}")
    if a.draw:
      os.makedirs(a.draw, exist_ok=True)
      target = os.path.join(a.draw, os.path.splitext(os.path.basename(path))[0] + "_pose.png")
      draw(data, pose, names, target)
      print(f"  drawn to {target}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
