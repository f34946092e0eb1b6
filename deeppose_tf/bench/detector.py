"""Person boxes as the predict command finds them: each detector's time per image, and
predict's images per second with it (detector + the pose model on every person found), next
to pose-guided framing (`--boxes=auto`, no detector) and the whole image (`full`).

--detectors=hog,blazepose:FILE,movenet:FILE,ssd:FILE (a TFLite detector's file after the
colon; movenet@512:FILE runs MoveNet at a 512 px input, movenet@256+512:FILE at both, as
--detector_input_size=512 and 256,512 do). The image is a synthetic person of 240 x 320 px
pasted at a random place into a
720 x 960 canvas (a person small in the frame, as in a user's photo); the pose model is the
first of --models, or the bundled one. Every rate is compared with `full` (the model alone
on the whole image), measured in the same run (the reference).
"""

from __future__ import annotations

import io
from typing import List, Optional, Sequence, Tuple

import numpy as np

from deeppose_tf.bench.peak import timeit
from deeppose_tf.bench.results import Ratio, Result


def parse_detectors(specs: Sequence[str]) -> List[Tuple[str, Optional[str], Optional[tuple]]]:
  """["hog", "movenet@256+512:/m.tflite"] -> [("hog", None, None), ("movenet", "/m.tflite",
  (256, 512))] (name, file, input sizes); ValueError for an unknown detector name or a size
  that is not a whole number."""
  from deeppose_tf.predict.detectors import DETECTORS
  out = []
  for spec in specs:
    name, _, path = str(spec).partition(":")
    name, _, size = name.partition("@")
    if name not in DETECTORS:
      raise ValueError(f"--detectors: {name!r} is not a known person detector; known: "
                       f"{', '.join(sorted(DETECTORS))}")
    sizes = size.split("+") if size else []
    if not all(v.isdigit() for v in sizes):
      raise ValueError(f"--detectors: {spec!r}: the input size after @ must be a whole number "
                       "of pixels, or several joined by + (movenet@512:FILE, "
                       "movenet@256+512:FILE)")
    out.append((name, path or None, tuple(int(v) for v in sizes) or None))
  return out


def _small_person_image() -> np.ndarray:
  from PIL import Image
  from deeppose_tf.data import synthetic
  rec = next(iter(synthetic.generate(1, seed=11)))
  person = Image.open(io.BytesIO(rec.image)).convert("RGB").resize((240, 320))
  canvas = Image.new("RGB", (720, 960), (128, 128, 128))
  canvas.paste(person, (400, 120))
  return np.asarray(canvas)


def detector_results(detectors: Sequence[Tuple[str, Optional[str], Optional[tuple]]],
                     model_path: Optional[str],
                     min_time: float, num_threads: int = 2) -> List[Result]:
  from deeppose_tf.predict import detect, detectors as registry, framing, models
  image = _small_person_image()
  model = models.load(model_path, num_threads=num_threads)
  full = detect.full_box(*image.shape[:2])

  def poses(boxes):
    return model.predict([image] * len(boxes), boxes) if len(boxes) else None

  results = []
  t_full = timeit(lambda: poses(full), min_time)
  results.append(Result("predict --boxes=full (model only)", 1.0 / t_full, "images/s",
                        "detect.full", "images_per_s"))
  t_auto = timeit(lambda: framing.frame_by_pose(poses, full), min_time)
  results.append(Result("predict --boxes=auto (pose-guided framing)", 1.0 / t_auto,
                        "images/s", "detect.auto", "images_per_s",
                        (Ratio(t_full / t_auto, "--boxes=full images/s", "x_full"),)))
  for name, path, size in detectors:
    det = registry.make_detector(name, path, num_threads=num_threads, input_size=size)
    label = name if size is None else f"{name}@{'+'.join(map(str, size))}"
    found = len(det.detect(image)[0])  # the first call builds MoveNet's interpreter
    t_det = timeit(lambda: det.detect(image), min_time)
    t_all = timeit(lambda: poses(det.detect(image)[0]), min_time)
    entry = f"detect.{label}"
    results += [
        Result(f"detector {label}: time per image", t_det * 1e3, "ms", entry, "detector_ms",
               extra={"path": path, "people_found": int(found),
                      "input_size": list(size) if size else None}),
        Result(f"  predict --detector={name}" + (
            f" --detector_input_size={','.join(map(str, size))}" if size else ""),
               1.0 / t_all, "images/s", entry,
               "images_per_s", (Ratio(t_full / t_all, "--boxes=full images/s", "x_full"),))]
  return results
