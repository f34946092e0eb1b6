"""Poses for your own photos and videos.

  python -m deeppose_tf.predict photo.jpg                      # the bundled model
  python -m deeppose_tf.predict DIR "shots/*.png" clip.mp4 --boxes=detect --output=out
  python -m deeppose_tf.predict small_person.jpg --boxes=auto  # the model finds the person
  python -m deeppose_tf.predict crowd.jpg --boxes=detect_auto --detector=movenet \
      --detector_model=movenet_multipose_lightning.tflite  # each detected person, framed
  python -m deeppose_tf.predict photo.jpg --model=runs/lspet   # a workdir, SavedModel or .tflite

INPUT: image files, folders (their images and videos, not recursive), glob patterns, video
files (.mp4 .avi .mov .mkv .webm; needs OpenCV: pip install "deeppose_tf[face]").

--output (default: predictions/) receives:
  predictions.jsonl   one JSON record per person, in input order:
                      {"image": path, "frame": n and "track": the person's id across
                       frames (videos only), "overlay": its
                       NAME.pose.jpg / .mp4 (with --overlay), "person": i, "box": [cx, cy,
                       w, h], "joints": {name: [x, y]}, "joints_per_stage": [[[x, y], ...]
                       per stage], "model": {"name", "version", "skeleton",
                       "left_right": "person" (l_* is the person's own left) or
                       "observer" (l_* is the arm or leg further right in the image)}}
                      An image where no person was found gets one record with "person": null,
                      "box": null and "joints": null. Coordinates are image pixels, x right,
                      y down, the top-left pixel's corner at (0, 0).
  keypoints_coco.json with --coco: the same poses as a COCO keypoint results file
                      (image_id, category_id 1, keypoints [x, y, 2, ...], score 1) plus the
                      skeleton's keypoint names.
  NAME.pose.jpg       each image with its stick figures (the report's limb colours).
  NAME.pose.mp4       each video, annotated frame by frame.
The JSON lines are written to predictions.jsonl.partial and renamed when the run ends, and a
run first removes the previous run's predictions.jsonl, so an interrupted run never leaves a
file that looks complete. Each record names its overlay ("overlay"); every input gets its own
overlay name ("a", "a-2" ... when names repeat). One run at a time writes a folder: a second
run on the same --output is refused. Files inside --output are never read as inputs, and a
file given twice is predicted once.

Errors: a file that cannot be read, or a box that does not fit its image (box_problems: not
finite, empty, outside the image, or far larger than it; checked before any model sees it),
is reported with the file and the box's index and skipped; the run goes on, counts the
failures at the end and exits 1. A setup error (a bad flag, --boxes file, --model or
--output) is one line and exit 2. A failed write (a full disk) stops the run, exit 1,
naming the file and the inputs not attempted.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterator

import numpy as np
from absl import app, flags, logging

from deeppose_tf.predict.images import (IMAGE_EXTS, VIDEO_EXTS, display_path,  # noqa: F401
                                        expand_inputs, read_image)

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("model", None, "A training workdir, a SavedModel (a version folder or "
                      "TF Serving's base folder) or a .tflite file. Default: the model bundled "
                      "with the package (deeppose_tf/models/, see its MODEL_CARD.md).")
  flags.DEFINE_string("output", "predictions", "Folder for predictions.jsonl, the overlays "
                      "and annotated videos (created; locked while a run writes it; a run replaces the "
                      "previous run's predictions.jsonl and files of the same names).")
  flags.DEFINE_string("boxes", "auto", "Person boxes: 'auto' (default) = pose-guided framing, "
                      "no detector: the whole image, then the square around the predicted pose "
                      "while it moves (one person; finds a person small in the frame; "
                      "--auto_passes); 'full' = the whole image (how LSP is evaluated; one "
                      "person); 'detect' = a person detector (--detector, default OpenCV's "
                      "HOG people detector), a pose per person found; 'detect_auto' = the "
                      "detector's boxes, each then framed by its pose as 'auto' does (the best "
                      "on people small in cluttered photos, BUILD.md; up to 1 + --auto_passes "
                      "runs per person); or FILE.json = your "
                      "boxes, {\"image name\": [[x, y, w, h], ...]} with (x, y) the top-left "
                      "corner (COCO's layout).")
  flags.DEFINE_integer("refresh_every", 30, "Videos with --boxes=auto, detect or detect_auto: "
                       "a frame starts from the previous frame's boxes, framed on its poses, and "
                       "from the whole frame or the detector every this many frames.",
                       lower_bound=1)
  flags.DEFINE_integer("auto_passes", 2, "--boxes=auto and detect_auto: runs of the model "
                       "after the first, each on the framing of the previous pose; fewer when "
                       "the box settles (IoU >= 0.9 with the previous one).", lower_bound=0)
  flags.DEFINE_boolean("smooth", True, "Videos: smooth each tracked person's joints over "
                       "time (the 1 Euro filter, as MediaPipe does: still joints stop "
                       "jittering, moving ones lag about a frame), after a spike gate that "
                       "holds a joint jumping over 0.2x the person's size for a frame or two "
                       "until the next frame confirms the move; --nosmooth writes the raw "
                       "poses. Each video record has a \"track\" id either way.")
  flags.DEFINE_integer("batch_size", 8, "People per model call (Keras and SavedModel models; "
                       "a .tflite model runs one at a time).", lower_bound=1)
  from deeppose_tf.predict import detectors
  detectors.define_flags()
  flags.DEFINE_boolean("overlay", True, "Write NAME.pose.jpg / NAME.pose.mp4 with the poses.")
  flags.DEFINE_boolean("coco", False, "Also write keypoints_coco.json (COCO results layout).")
  flags.DEFINE_integer("num_threads", 2, "Threads of the TFLite interpreter.", lower_bound=1)


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


class _Setup(ValueError):
  """A setup error: one line on stderr, exit 2."""


def main(argv):
  try:
    return _run(argv[1:])
  except _Setup as e:
    print(f"predict: error: {e}", file=sys.stderr)
    sys.exit(2)


def _run(inputs):
  if not inputs:
    raise app.UsageError("give at least one INPUT: an image, a folder, a glob or a video")
  from deeppose_tf.predict import detect
  from deeppose_tf.predict.output import OutputFolder

  files, problems, notes = expand_inputs(inputs, output=FLAGS.output)
  for note in notes:
    logging.warning("%s", display_path(note))
  for arg, problem in problems:
    logging.error("%s: %s", display_path(arg), problem)
  if not files:
    raise _Setup("no input to predict: " + "; ".join(
        f"{display_path(a)}: {p}" for a, p in problems) if problems else
        "no input to predict: every input is inside --output")
  if FLAGS.detector_model and not FLAGS["boxes"].present:
    FLAGS.boxes = "detect"  # a detector given: its boxes, not pose-guided framing
  try:
    user_boxes = None
    if FLAGS.boxes not in ("full", "detect", "auto", "detect_auto"):
      user_boxes = detect.read_user_boxes(FLAGS.boxes)
    folder = OutputFolder(FLAGS.output)  # before the model: a bad --output fails at once
  except ValueError as e:
    raise _Setup(str(e)) from None
  try:
    _predict_files(files, problems, folder, user_boxes)
  finally:
    folder.release()


def _predict_files(files, problems, folder, user_boxes):
  from deeppose_tf.predict import detect, detectors, framing, models
  from deeppose_tf.predict.output import OutputError, Writer
  from deeppose_tf.progress import Progress
  t0 = time.time()
  try:
    model = models.load(FLAGS.model, num_threads=FLAGS.num_threads)
    detector = (detectors.from_flags(num_threads=FLAGS.num_threads)
                if FLAGS.boxes in ("detect", "detect_auto") else None)
  except ValueError as e:
    raise _Setup(str(e)) from None
  load_s = time.time() - t0
  print(f"model: {', '.join(models.describe(model))} (loaded in {load_s:.2f} s)")
  try:
    writer = Writer(folder, model, FLAGS.overlay, FLAGS.coco)
  except OutputError as e:
    raise _Setup(str(e)) from None
  writer.plan(files)
  bad_boxes = []

  def boxes_for(path, image):
    """The usable boxes (P, 4) of an image, and a note when none is left."""
    if detector is not None:
      boxes, source = detector.detect(image)[0], f"--detector={FLAGS.detector} box"
    elif user_boxes is not None:
      boxes, source = detect.lookup_boxes(user_boxes, path), f"--boxes={FLAGS.boxes} box"
      if boxes is None:
        logging.warning("%s: no boxes in --boxes=%s; using the whole image",
                        display_path(path), FLAGS.boxes)
        boxes, source = detect.full_box(*image.shape[:2]), "whole-image box"
    else:
      boxes, source = detect.full_box(*image.shape[:2]), "whole-image box"
    verdicts = detect.box_problems(boxes, *image.shape[:2])
    for i, problem in enumerate(verdicts):
      if problem:
        logging.error("%s: %s %d %s; skipped", display_path(path), source, i, problem)
        bad_boxes.append(f"{display_path(path)} box {i}")
    good = np.asarray([p is None for p in verdicts], bool)
    kept = np.asarray(boxes, np.float32).reshape(-1, 4)[good]
    note = None
    if len(kept) == 0 and len(verdicts):
      note = "every box was refused (see the log)"
    return kept, note

  def poses_for(image, boxes):
    if len(boxes) == 0:
      return np.zeros((0, model.num_stages, model.skeleton.num_joints, 2), np.float32)
    out = []
    for s in range(0, len(boxes), FLAGS.batch_size):
      chunk = boxes[s:s + FLAGS.batch_size]
      out.append(model.predict([image] * len(chunk), chunk))
    return np.concatenate(out)

  def people_for(path, image, start=None):
    """(boxes (P, 4), poses (P, S, K, 2), note): the boxes, refined by pose-guided framing
    with --boxes=auto or detect_auto (predict/framing.py), and the cascade's poses in them.
    start: with --boxes=auto, detect or detect_auto, boxes to start from instead of the
    whole image or the detector's (a video's previous frame)."""
    tracking = (start is not None and len(start)
                and FLAGS.boxes in ("auto", "detect", "detect_auto"))
    if tracking:
      boxes, note = np.asarray(start, np.float32).reshape(-1, 4), None
    else:
      boxes, note = boxes_for(path, image)
    if (FLAGS.boxes in ("auto", "detect_auto") or tracking) and len(boxes):
      boxes, poses = framing.frame_by_pose(lambda b: poses_for(image, b), boxes,
                                           outer=detect.full_box(*image.shape[:2])[0],
                                           passes=FLAGS.auto_passes)
      return boxes, poses, note
    return boxes, poses_for(image, boxes), note

  failed, images_done, frames_done = [], 0, 0
  first_latency = None
  bar = Progress("predict", len(files), unit="files")
  t_run = time.time()
  for n, path in enumerate(files):
    try:
      if path.lower().endswith(VIDEO_EXTS):
        frames_done += _video(path, writer, people_for, model)
      else:
        image = read_image(path)
        boxes, poses, note = people_for(path, image)
        if first_latency is None:
          first_latency = time.time() - t0
        writer.records(path, boxes, poses, note=note)
        writer.image_overlay(path, image, boxes, poses)
        images_done += 1
    except OutputError as e:
      bar.close()
      writer.close(ok=False)
      left = len(files) - n
      print(f"predict: error: {e}; stopped with {left} input(s) not done ({display_path(path)} "
            f"and the {left - 1} after it); {writer.partial} holds the records written so "
            "far", file=sys.stderr)
      sys.exit(1)
    except Exception as e:  # noqa: BLE001 - one input's error never stops the run
      message = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
      if not message.startswith(path) and not message.startswith(display_path(path)):
        message = f"{path}: {message}"
      logging.error("%s", display_path(message[:500]))
      failed.append(display_path(path))
    bar.update(1)
  bar.close()
  run_s = time.time() - t_run
  try:
    writer.close(ok=True)
  except OutputError as e:
    print(f"predict: error: {e}", file=sys.stderr)
    sys.exit(1)
  people = writer.people
  print(f"predicted {people} people in {images_done} images and {frames_done} video frames "
        f"in {run_s:.1f} s ({(images_done + frames_done) / max(run_s, 1e-9):.1f} images/s, "
        f"{people / max(run_s, 1e-9):.1f} people/s; --batch_size={FLAGS.batch_size}); "
        f"model load {load_s:.2f} s" + (f", first image done {first_latency:.2f} s after "
                                        "start" if first_latency is not None else ""))
  print(f"wrote {writer.final}" + (" and the overlays" if FLAGS.overlay else "") +
        f" to {FLAGS.output}/")
  bad = len(failed) + len(problems)
  if bad or bad_boxes:
    if bad:
      print(f"{bad} input(s) failed: " + ", ".join(
          failed + [display_path(a) for a, _ in problems]), file=sys.stderr)
    if bad_boxes:
      print(f"{len(bad_boxes)} box(es) refused: " + ", ".join(bad_boxes), file=sys.stderr)
    sys.exit(1)


def _video(path, writer, people_for, model) -> int:
  from deeppose_tf import report
  from deeppose_tf.data.face_box import import_cv2
  cv2 = import_cv2()
  cap = cv2.VideoCapture(path)
  fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 25.0
  cap.release()
  from deeppose_tf.predict.track import Tracker
  fps = fps if fps and fps > 0 else 25.0  # OpenCV reports 0 for some streams
  tracker = Tracker(smooth=FLAGS.smooth)  # one per video: ids and filters start afresh
  out = None
  n = 0
  boxes = None
  try:
    for n, frame in enumerate(video_frames(path), start=1):
      # --boxes=auto or detect: each frame starts from the previous frame's boxes, framed
      # on the poses found there, as MediaPipe's tracking does; every --refresh_every frames
      # it starts afresh from the whole frame or the detector (a person who left the box,
      # or who came in, is found).
      fresh = boxes is None or (n - 1) % FLAGS.refresh_every == 0
      boxes, poses, note = people_for(path, frame, start=None if fresh else boxes)
      ids, poses = tracker.update(boxes, poses, t=(n - 1) / fps)
      writer.records(path, boxes, poses, frame=n - 1, note=note, tracks=ids)
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
  from deeppose_tf import cli
  cli.run(main, "predict")
