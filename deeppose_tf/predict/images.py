"""The predict command's inputs: which files a run reads, and each image as a viewer sees it.

  files, problems = expand_inputs(["DIR", "shots/*.png", "a.jpg"], output="predictions")
  image = read_image("photo.jpg")   # (h, w, 3) uint8 RGB, EXIF orientation applied

Every problem is an (input, what is wrong) pair for the run to report and count; nothing is
skipped without a word.
"""

from __future__ import annotations

import glob
import os
from typing import List, Optional, Tuple

import numpy as np

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
MEDIA_EXTS = IMAGE_EXTS + VIDEO_EXTS


def _link_problem(path: str) -> Optional[str]:
  """What is wrong with a symbolic link that does not lead to a file, or None."""
  if not os.path.islink(path) or os.path.exists(path):
    return None
  try:
    os.stat(path)
  except OSError as e:
    if e.errno == 40:  # ELOOP
      return "a symbolic-link loop"
  return f"a dangling symbolic link (to {os.readlink(path)!r})"


OUTPUT_SUFFIXES = (".pose.jpg", ".pose.mp4")  # what predict writes beside predictions.jsonl


def _own_output(path: str, folder: Optional[str]) -> bool:
  """Whether `path` is one of this command's overlays in --output `folder` (the user's own
  photos in that folder are inputs like any other)."""
  if not folder or not os.path.basename(path).lower().endswith(OUTPUT_SUFFIXES):
    return False
  return os.path.realpath(os.path.dirname(path)) == os.path.realpath(folder)


def expand_inputs(args: List[str], output: Optional[str] = None
                  ) -> Tuple[List[str], List[Tuple[str, str]], List[str]]:
  """(files, problems, notes) for image/video files, folders (not recursive) and globs.

  files: in argument order, each file once (the same file by another path, `a.jpg` and
  `./a.jpg` or a link to it, is predicted once and noted). The overlays in `output`
  (NAME.pose.jpg / .mp4 of an earlier run) are left out and noted. problems: [(input, what is
  wrong)] for missing inputs, empty folders, patterns that match nothing and broken links.
  notes: one line per input left out on purpose."""
  files, problems, notes = [], [], []
  seen = {}

  def add(path: str) -> None:
    real = os.path.realpath(path)
    if _own_output(path, output):
      notes.append(f"{path}: an overlay in --output={output} (this command's own output), "
                   "not read")
    elif real in seen:
      notes.append(f"{path}: the same file as {seen[real]}, predicted once")
    else:
      seen[real] = path
      files.append(path)

  def take(paths) -> int:
    """Adds the files among `paths`, reports their broken links; returns how many of
    `paths` were files or broken links (anything but a subfolder)."""
    n = 0
    for p in paths:
      link = _link_problem(p)
      if link:
        problems.append((p, link))
        n += 1
      elif os.path.isfile(p):
        add(p)
        n += 1
    return n

  for arg in args:
    link = None if os.path.exists(arg) else _link_problem(arg)
    if os.path.isdir(arg):
      media = [os.path.join(arg, n) for n in sorted(os.listdir(arg))
               if n.lower().endswith(MEDIA_EXTS)]
      if not take(media):
        problems.append((arg, "a folder with no images or videos"))
    elif os.path.isfile(arg):
      add(arg)
    elif link:
      problems.append((arg, link))
    elif glob.has_magic(arg):
      matched = sorted(glob.glob(arg))
      take(matched)
      if not matched:
        problems.append((arg, "the pattern matches no file"))
    else:
      problems.append((arg, "no such file or folder"))
  unique = list(dict.fromkeys(problems))  # a link found by its folder and by a glob: once
  return files, unique, notes


def _to_rgb(im) -> np.ndarray:
  """A loaded PIL image in any mode -> (h, w, 3) uint8 RGB as a viewer shows it.

  16-bit and 32-bit integer greys scale to 8 bits by their type's range (Pillow's own
  convert clips them at 255: a white 16-bit scan became a flat white image); float greys by
  [0, 1] when they fit it, else [0, 255]; transparency composites over white, the page a
  viewer shows through it (convert("RGB") keeps whatever colour the transparent pixels
  happen to hold, often black); LAB through Pillow's colour management."""
  from PIL import Image
  mode = im.mode
  if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
    a = np.asarray(im, np.float64)
    if mode.startswith("I;16"):
      a = a / 257.0
    elif mode == "I":
      a = a / 257.0 if a.max(initial=0) > 255 else a
    elif a.size and a.min() >= 0 and a.max() <= 1:
      a = a * 255.0
    g = np.clip(np.round(a), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)
  if mode == "LAB":
    from PIL import ImageCms
    im = ImageCms.applyTransform(im, ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"))
    return np.asarray(im)
  if mode == "P" and "transparency" in im.info:
    im = im.convert("RGBA")
  if mode in ("PA", "LA", "La", "RGBa"):
    im = im.convert("RGBA")
  if im.mode == "RGBA":
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, im).convert("RGB"))
  return np.asarray(im.convert("RGB"))


def read_image(path: str) -> np.ndarray:
  """RGB uint8 (h, w, 3) as an image viewer shows the file: EXIF orientation applied (a phone
  photo stored sideways comes upright), every Pillow mode brought to 8-bit RGB (`_to_rgb`).
  ValueError naming the file for anything that is not a readable image, decompression bombs
  included (Pillow refuses more than 2 x Image.MAX_IMAGE_PIXELS, 179 Mpx by default: a
  169-byte PNG can declare 20000 x 20000)."""
  from PIL import Image, ImageOps
  try:
    with Image.open(path) as im:
      im.load()
      rgb = _to_rgb(ImageOps.exif_transpose(im))
  except Image.DecompressionBombError as e:
    raise ValueError(f"{path}: refused, too many pixels to decode safely ({str(e)[:160]})"
                     ) from None
  except Exception as e:  # noqa: BLE001 - any decoder failure is this file's error
    raise ValueError(f"{path}: not a readable image ({type(e).__name__}: "
                     f"{str(e)[:120]})") from None
  if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
    raise ValueError(f"{path}: decoded to shape {rgb.shape}, not an image")
  return np.ascontiguousarray(rgb)


def display_path(path: str) -> str:
  """`path` as valid Unicode for JSON and logs: bytes of a file name that are not UTF-8 (a
  Latin-1 name, say) come as \\xNN escapes instead of lone surrogates."""
  try:
    path.encode("utf-8")
    return path
  except UnicodeEncodeError:
    return os.fsencode(path).decode("utf-8", "backslashreplace")
