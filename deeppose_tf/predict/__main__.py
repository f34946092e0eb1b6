"""Poses for your own photos and videos.

  python -m deeppose_tf.predict photo.jpg                      # the bundled model
  python -m deeppose_tf.predict DIR "shots/*.png" clip.mp4 --boxes=detect --output=out
  python -m deeppose_tf.predict photo.jpg --model=runs/lspet   # a workdir, SavedModel or .tflite

INPUT: image files, folders (their images and videos, not recursive), glob patterns, video
files (.mp4 .avi .mov .mkv .webm; needs OpenCV: pip install "deeppose_tf[face]").

--output (default: predictions/) receives:
  predictions.jsonl   one JSON record per person, in input order:
                      {"image": path, "frame": n (videos only), "person": i, "box": [cx, cy,
                       w, h], "joints": {name: [x, y]}, "joints_per_stage": [[[x, y], ...]
                       per stage], "model": {"name", "version", "skeleton"}}
                      An image where no person was found gets one record with "person": null,
                      "box": null and "joints": null. Coordinates are image pixels, x right,
                      y down, the top-left pixel's corner at (0, 0).
  keypoints_coco.json with --coco: the same poses as a COCO keypoint results file
                      (image_id, category_id 1, keypoints [x, y, 2, ...], score 1) plus the
                      skeleton's keypoint names.
  NAME.pose.jpg       each image with its stick figures (the report's limb colours).
  NAME.pose.mp4       each video, annotated frame by frame.
The JSON lines are written to predictions.jsonl.partial and renamed when the run ends, so an
interrupted run never leaves a file that looks complete. A file that cannot be read is
reported and skipped; the run goes on, counts the failures at the end and exits non-zero.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from typing import Iterator, List, Tuple

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def define_flags() -> None:
  flags.DEFINE_string("model", None, "A training workdir, a SavedModel (a version folder or "
                      "TF Serving's base folder) or a .tflite file. Default: the model bundled "
                      "with the package (deeppose_tf/models/, see its MODEL_CARD.md).")
  flags.DEFINE_string("output", "predictions", "Folder for predictions.jsonl, the overlays "
                      "and annotated videos (created; files of the same names are replaced).")
  flags.DEFINE_string("boxes", "full", "Person boxes: 'full' = the whole image (how LSP is "
                      "evaluated; one person); 'detect' = OpenCV's HOG people detector, a "
                      "pose per person found; or FILE.json = your boxes, {\"image name\": "
                      "[[x, y, w, h], ...]} with (x, y) the top-left corner (COCO's layout).")
  flags.DEFINE_integer("batch_size", 8, "People per model call (Keras and SavedModel models; "
                       "a .tflite model runs one at a time).", lower_bound=1)
  flags.DEFINE_boolean("overlay", True, "Write NAME.pose.jpg / NAME.pose.mp4 with the poses.")
  flags.DEFINE_boolean("coco", False, "Also write keypoints_coco.json (COCO results layout).")
  flags.DEFINE_integer("num_threads", 2, "Threads of the TFLite interpreter.", lower_bound=1)


def expand_inputs(args: List[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
  """(files in order, [(arg, problem)]) for image/video files, folders and globs."""
  files, problems = [], []
  media = IMAGE_EXTS + VIDEO_EXTS
  for arg in args:
    if os.path.isdir(arg):
      found = sorted(os.path.join(arg, n) for n in os.listdir(arg)
                     if n.lower().endswith(media) and os.path.isfile(os.path.join(arg, n)))
      if not found:
        problems.append((arg, "a folder with no images or videos"))
      files += found
    elif os.path.isfile(arg):
      files.append(arg)
    elif glob.has_magic(arg):
      found = sorted(p for p in glob.glob(arg) if os.path.isfile(p))
      if not found:
        problems.append((arg, "the pattern matches no file"))
      files += found
    else:
      problems.append((arg, "no such file or folder"))
  return files, problems


def read_image(path: str) -> np.ndarray:
  """RGB uint8 (h, w, 3); ValueError naming the file when it is not a readable image."""
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(path) as im:
      im.load()
      return np.asarray(im.convert("RGB"))
  except (UnidentifiedImageError, OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable image ({type(e).__name__}: "
                     f"{str(e)[:120]})") from None


def video_frames(path: str) -> Iterator[np.ndarray]:
  """RGB frames of a video; ValueError when it has none, a warning when it ends early."""
  from deeppose_tf.data.face_box import import_cv2
  cv2 = import_cv2()
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    raise ValueError(f"{path}: OpenCV cannot open this video")
  declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
  n = 0
  try:
    while True:
      ok, frame = cap.read()
      if not ok:
        break
      n += 1
      yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
  finally:
    cap.release()
  if n == 0:
    raise ValueError(f"{path}: no frame could be decoded (not a video, or truncated)")
  if declared and n < declared:
    logging.warning("%s: the video ended after %d of its %d declared frames (truncated?)",
                    path, n, declared)


class Writer:
  """predictions.jsonl (via .partial), overlays, videos and the optional COCO file."""

  def __init__(self, output: str, model, overlay: bool, coco: bool):
    try:
      os.makedirs(output, exist_ok=True)
      probe = os.path.join(output, f".write-test-{os.getpid()}")
      with open(probe, "w") as f:
        f.write("x")
      os.remove(probe)
    except OSError as e:
      raise ValueError(f"--output={output}: cannot write there ({e.strerror})") from None
    self.output, self.model, self.overlay, self.coco = output, model, overlay, coco
    self.final = os.path.join(output, "predictions.jsonl")
    self.partial = self.final + ".partial"
    self._jsonl = open(self.partial, "w")
    self._coco = []
    self.people = 0
    self._names = {}

  def _name(self, path: str) -> str:
    """A unique output stem per input (same names from different folders get a suffix)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    n = self._names.setdefault(stem, [])
    if path not in n:
      n.append(path)
    return stem if n.index(path) == 0 else f"{stem}-{n.index(path)}"

  def records(self, path: str, boxes, poses, frame=None) -> None:
    meta = {"name": self.model.name, "version": self.model.version,
            "skeleton": self.model.skeleton.name}
    names = self.model.skeleton.joints
    where = {"image": path} if frame is None else {"image": path, "frame": frame}
    if len(boxes) == 0:
      rec = {**where, "person": None, "box": None, "joints": None,
             "joints_per_stage": None, "model": meta, "note": "no person found"}
      self._jsonl.write(json.dumps(rec) + "\n")
    for i, (box, pose) in enumerate(zip(boxes, poses)):
      rec = dict(where)
      rec.update({"person": i, "box": [round(float(v), 2) for v in box],
                  "joints": {n: [round(float(x), 2), round(float(y), 2)]
                             for n, (x, y) in zip(names, pose[-1])},
                  "joints_per_stage": np.round(np.asarray(pose, np.float64), 2).tolist(),
                  "model": meta})
      self._jsonl.write(json.dumps(rec) + "\n")
      self.people += 1
      if self.coco:
        # COCO keypoints: x, y, visibility (2 = labelled and visible) per joint.
        kp = np.concatenate([np.asarray(pose[-1], np.float64),
                             np.full((len(names), 1), 2.0)], 1).reshape(-1)
        self._coco.append({"image_id": path if frame is None else f"{path}#{frame}",
                           "category_id": 1, "keypoints": np.round(kp, 2).tolist(),
                           "score": 1.0, "bbox": [float(box[0] - box[2] / 2),
                                                  float(box[1] - box[3] / 2),
                                                  float(box[2]), float(box[3])]})
    self._jsonl.flush()

  def image_overlay(self, path: str, image, boxes, poses) -> None:
    if not self.overlay:
      return
    from PIL import Image
    from deeppose_tf import atomic, report
    import io
    drawn = report.draw_poses(image, poses[:, -1] if len(poses) else poses, self.model.skeleton,
                              boxes if len(boxes) else None)
    buf = io.BytesIO()
    Image.fromarray(drawn).save(buf, "JPEG", quality=92)
    atomic.write_bytes(os.path.join(self.output, self._name(path) + ".pose.jpg"),
                       buf.getvalue())

  def video_writer(self, path: str, fps: float, size):
    if not self.overlay:
      return None
    from deeppose_tf.data.face_box import import_cv2
    cv2 = import_cv2()
    final = os.path.join(self.output, self._name(path) + ".pose.mp4")
    tmp = os.path.join(self.output, f".tmp-{os.getpid()}-" + os.path.basename(final))
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0, size)
    return writer, tmp, final

  def close(self, ok: bool) -> None:
    self._jsonl.close()
    if self.coco:
      from deeppose_tf import atomic
      atomic.write_text(os.path.join(self.output, "keypoints_coco.json"), json.dumps({
          "keypoints": list(self.model.skeleton.joints),
          "annotations": self._coco}))
    if ok:
      os.replace(self.partial, self.final)


def main(argv):
  inputs = argv[1:]
  if not inputs:
    raise app.UsageError("give at least one INPUT: an image, a folder, a glob or a video")
  from deeppose_tf.predict import detect, models
  from deeppose_tf.progress import Progress

  files, problems = expand_inputs(inputs)
  for arg, problem in problems:
    logging.error("%s: %s", arg, problem)
  if not files:
    raise app.UsageError("no input to predict: " + "; ".join(f"{a}: {p}" for a, p in problems))
  user_boxes = None
  if FLAGS.boxes not in ("full", "detect"):
    user_boxes = detect.read_user_boxes(FLAGS.boxes)
  t0 = time.time()
  model = models.load(FLAGS.model, num_threads=FLAGS.num_threads)
  detector = detect.HogPeopleDetector() if FLAGS.boxes == "detect" else None
  load_s = time.time() - t0
  print(f"model: {', '.join(models.describe(model))} (loaded in {load_s:.2f} s)")
  writer = Writer(FLAGS.output, model, FLAGS.overlay, FLAGS.coco)

  def boxes_for(path, image):
    if detector is not None:
      return detector.detect(image)
    if user_boxes is not None:
      found = detect.lookup_boxes(user_boxes, path)
      if found is None:
        logging.warning("%s: no boxes in --boxes=%s; using the whole image", path,
                        FLAGS.boxes)
        return detect.full_box(*image.shape[:2])
      return found
    return detect.full_box(*image.shape[:2])

  def poses_for(image, boxes):
    if len(boxes) == 0:
      return np.zeros((0, model.num_stages, model.skeleton.num_joints, 2), np.float32)
    out = []
    for s in range(0, len(boxes), FLAGS.batch_size):
      chunk = boxes[s:s + FLAGS.batch_size]
      out.append(model.predict([image] * len(chunk), chunk))
    return np.concatenate(out)

  failed, images_done, frames_done = [], 0, 0
  first_latency = None
  bar = Progress("predict", len(files), unit="files")
  t_run = time.time()
  for path in files:
    try:
      if path.lower().endswith(VIDEO_EXTS):
        frames_done += _video(path, writer, boxes_for, poses_for, model)
      else:
        image = read_image(path)
        boxes = boxes_for(path, image)
        poses = poses_for(image, boxes)
        if first_latency is None:
          first_latency = time.time() - t0
        writer.records(path, boxes, poses)
        writer.image_overlay(path, image, boxes, poses)
        images_done += 1
    except ValueError as e:
      logging.error("%s", e)
      failed.append(path)
    bar.update(1)
  bar.close()
  run_s = time.time() - t_run
  writer.close(ok=True)
  people = writer.people
  print(f"predicted {people} people in {images_done} images and {frames_done} video frames "
        f"in {run_s:.1f} s ({(images_done + frames_done) / max(run_s, 1e-9):.1f} images/s, "
        f"{people / max(run_s, 1e-9):.1f} people/s; --batch_size={FLAGS.batch_size}); "
        f"model load {load_s:.2f} s" + (f", first image done {first_latency:.2f} s after "
                                        "start" if first_latency is not None else ""))
  print(f"wrote {writer.final}" + (" and the overlays" if FLAGS.overlay else "") +
        f" to {FLAGS.output}/")
  bad = len(failed) + len(problems)
  if bad:
    print(f"{bad} input(s) failed: " + ", ".join(failed + [a for a, _ in problems]),
          file=sys.stderr)
    sys.exit(1)


def _video(path, writer, boxes_for, poses_for, model) -> int:
  from deeppose_tf import report
  from deeppose_tf.data.face_box import import_cv2
  cv2 = import_cv2()
  cap = cv2.VideoCapture(path)
  fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 25.0
  cap.release()
  out = None
  n = 0
  try:
    for n, frame in enumerate(video_frames(path), start=1):
      boxes = boxes_for(path, frame)
      poses = poses_for(frame, boxes)
      writer.records(path, boxes, poses, frame=n - 1)
      if writer.overlay:
        if out is None:
          out = writer.video_writer(path, fps, (frame.shape[1], frame.shape[0]))
        drawn = report.draw_poses(frame, poses[:, -1] if len(poses) else poses,
                                  model.skeleton, boxes if len(boxes) else None)
        out[0].write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
  except BaseException:
    if out is not None:
      out[0].release()
      if os.path.exists(out[1]):
        os.remove(out[1])
    raise
  if out is not None:
    out[0].release()
    os.replace(out[1], out[2])
  return n


if __name__ == "__main__":
  define_flags()
  app.run(main)
