"""The predict command's output folder: predictions.jsonl, overlays, videos, the COCO file.

  out = OutputFolder("predictions")          # before the model loads: writable, locked
  writer = Writer(out, model, overlay=True, coco=False)
  writer.records(path, boxes, poses); writer.image_overlay(path, image, boxes, poses)
  writer.close(ok=True)                      # predictions.jsonl.partial -> predictions.jsonl
  out.release()

One run at a time: the folder is locked (workdir.RunLock, an flock the kernel drops however
the holder dies), so two runs with the same --output cannot mix their files; the second is
refused with the first one's PID. A run starts by removing the previous run's
predictions.jsonl and keypoints_coco.json, so after an interrupted run no complete-looking
file describes other overlays. Every overlay has a name no other input of the run has, and
each record names its overlay ("overlay"). A failed write raises OutputError: the disk,
not the input, and the run stops.
"""

from __future__ import annotations

import io
import json
import os
from typing import Optional

import numpy as np
from absl import logging

from deeppose_tf.predict.images import display_path

JSONL = "predictions.jsonl"
COCO = "keypoints_coco.json"


class OutputError(RuntimeError):
  """A write into --output failed (a full disk, a removed folder): the run cannot go on."""


class OutputFolder:
  """--output, created, checked writable and locked for this process."""

  def __init__(self, output: str):
    from deeppose_tf.workdir import RunLock
    self.path = output
    try:
      os.makedirs(output, exist_ok=True)
      probe = os.path.join(output, f".write-test-{os.getpid()}")
      with open(probe, "w") as f:
        f.write("x")
      os.remove(probe)
    except OSError as e:
      raise ValueError(f"--output={output}: cannot write there ({e.strerror})") from None
    self._lock = RunLock(output, busy=(
        "--output=" + output + ": another predict run ({holder}) writes there; two runs in "
        "one folder would replace each other's files. Wait for it, or give another --output."))
    self._lock.acquire()

  def release(self) -> None:
    self._lock.release()


def _write_failed(path: str, e: OSError) -> OutputError:
  return OutputError(f"cannot write {path}: {e.strerror or e}")


class Writer:
  """predictions.jsonl (via .partial), overlays, videos and the optional COCO file in a
  locked OutputFolder."""

  def __init__(self, folder: OutputFolder, model, overlay: bool, coco: bool):
    self.output, self.model, self.overlay, self.coco = folder.path, model, overlay, coco
    self.final = os.path.join(self.output, JSONL)
    self.partial = self.final + ".partial"
    for old in (self.final, os.path.join(self.output, COCO)):
      if os.path.exists(old):
        logging.warning("%s: the previous run's results, removed: this run replaces them", old)
        os.remove(old)
    try:
      self._jsonl = open(self.partial, "w", encoding="utf-8")
    except OSError as e:
      raise _write_failed(self.partial, e) from None
    self._coco = []
    self.people = 0
    self._stems = {}    # input path -> its output stem
    self._taken = set()  # stems in use this run

  def stem(self, path: str) -> str:
    """The output name stem of an input: its file name without extension, made unique in
    this run ("a", "a-2", "a-3" ...; a.jpg and a.png, or two folders' a.jpg, never share
    an overlay, and neither does a later "a-2.jpg")."""
    if path in self._stems:
      return self._stems[path]
    base = display_path(os.path.splitext(os.path.basename(path))[0]) or "image"
    stem, n = base, 1
    while stem in self._taken:
      n += 1
      stem = f"{base}-{n}"
    self._taken.add(stem)
    self._stems[path] = stem
    return stem

  def plan(self, paths) -> None:
    """Fixes every input's output stem before the run (input order decides who gets the
    plain name)."""
    plain = {}
    for p in paths:
      plain.setdefault(display_path(os.path.splitext(os.path.basename(p))[0]) or "image",
                       p)
    self._taken = set(plain)
    for stem, p in plain.items():
      self._stems[p] = stem
    for p in paths:
      self.stem(p)

  def _write_line(self, rec: dict) -> None:
    try:
      self._jsonl.write(json.dumps(rec, ensure_ascii=False) + "\n")
    except OSError as e:
      raise _write_failed(self.partial, e) from None

  def records(self, path: str, boxes, poses, frame=None, note: Optional[str] = None,
              tracks=None) -> None:
    """One JSON line per person (boxes (P, 4), poses (P, S, K, 2) image pixels), or one
    "no person found" line; tracks (P,) the people's track ids in a video."""
    meta = {"name": self.model.name, "version": self.model.version,
            "skeleton": self.model.skeleton.name,
            "left_right": self.model.left_right}
    names = self.model.skeleton.joints
    shown = display_path(path)
    where = {"image": shown} if frame is None else {"image": shown, "frame": frame}
    if self.overlay:
      ext = ".pose.mp4" if frame is not None else ".pose.jpg"
      where["overlay"] = self.stem(path) + ext
    if len(boxes) == 0:
      rec = {**where, "person": None, "box": None, "joints": None,
             "joints_per_stage": None, "model": meta, "note": note or "no person found"}
      self._write_line(rec)
    for i, (box, pose) in enumerate(zip(boxes, poses)):
      rec = dict(where)
      if tracks is not None:
        rec["track"] = int(tracks[i])
      rec.update({"person": i, "box": [round(float(v), 2) for v in box],
                  "joints": {n: [round(float(x), 2), round(float(y), 2)]
                             for n, (x, y) in zip(names, pose[-1])},
                  "joints_per_stage": np.round(np.asarray(pose, np.float64), 2).tolist(),
                  "model": meta})
      self._write_line(rec)
      self.people += 1
      if self.coco:
        # COCO keypoints: x, y, visibility (2 = labelled and visible) per joint.
        kp = np.concatenate([np.asarray(pose[-1], np.float64),
                             np.full((len(names), 1), 2.0)], 1).reshape(-1)
        self._coco.append({"image_id": shown if frame is None else f"{shown}#{frame}",
                           "category_id": 1, "keypoints": np.round(kp, 2).tolist(),
                           "score": 1.0, "bbox": [float(box[0] - box[2] / 2),
                                                  float(box[1] - box[3] / 2),
                                                  float(box[2]), float(box[3])]})
    try:
      self._jsonl.flush()
    except OSError as e:
      raise _write_failed(self.partial, e) from None

  def image_overlay(self, path: str, image, boxes, poses) -> None:
    if not self.overlay:
      return
    from PIL import Image
    from deeppose_tf import atomic, report
    drawn = report.draw_poses(image, poses[:, -1] if len(poses) else poses, self.model.skeleton,
                              boxes if len(boxes) else None)
    buf = io.BytesIO()
    Image.fromarray(drawn).save(buf, "JPEG", quality=92)
    target = os.path.join(self.output, self.stem(path) + ".pose.jpg")
    try:
      atomic.write_bytes(target, buf.getvalue())
    except OSError as e:
      raise _write_failed(target, e) from None

  def video_writer(self, path: str, fps: float, size):
    """(cv2.VideoWriter on a temporary name, that name, the final name) or None."""
    if not self.overlay:
      return None
    from deeppose_tf.data.face_box import import_cv2
    cv2 = import_cv2()
    final = os.path.join(self.output, self.stem(path) + ".pose.mp4")
    tmp = os.path.join(self.output, f".tmp-{os.getpid()}-" + os.path.basename(final))
    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0, size)
    if not writer.isOpened():
      raise OutputError(f"cannot write {final}: OpenCV cannot open a video writer there")
    return writer, tmp, final

  def close(self, ok: bool) -> None:
    """Closes the JSON lines; ok: renames them to predictions.jsonl and writes the COCO file
    (an interrupted or failed run leaves only predictions.jsonl.partial)."""
    try:
      self._jsonl.close()
    except OSError as e:
      if ok:
        raise _write_failed(self.partial, e) from None
    if not ok:
      return
    from deeppose_tf import atomic
    try:
      if self.coco:
        atomic.write_text(os.path.join(self.output, COCO), json.dumps({
            "keypoints": list(self.model.skeleton.joints), "annotations": self._coco}))
      os.replace(self.partial, self.final)
    except OSError as e:
      raise _write_failed(self.final, e) from None
