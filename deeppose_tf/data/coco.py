"""Reader for COCO-keypoints files: what CVAT, Label Studio and Roboflow export, and the
format of COCO, CrowdPose, OCHuman and most pose datasets since 2017.

A file holds `images` (id, file_name, optional width/height), `categories` (the one with
`keypoints` names the joints, `skeleton` gives 1-based drawing edges) and `annotations`
(one person each: image_id, category_id, keypoints [x1, y1, v1, ...], bbox [x, y, w, h],
iscrowd, area). Pixels are COCO's: x right, y down, (0, 0) the image's top-left corner, the
package's own frame, so coordinates are read as they are.

Top-down: each annotated person becomes one PoseRecord (the image's bytes, that person's
joints), so an image with three people gives three records. Its stage-1 box is the square
around the annotation's bbox, `geometry.FRAMING_GROW` times its longer side: the framing
stage 1 trains on (LSP's people span about 0.76 of their image). A `deeppose_box`
[cx, cy, w, h] on the annotation (what `to_coco` writes) is taken exactly instead, so a
prepared split survives a round trip unchanged.

Skipped and counted (the split json says how many): `iscrowd` entries, people with no
labelled keypoint, annotations of a category without keypoints. Visibility v = 0 (not
labelled) is masked; v = 1 (labelled, occluded) and v = 2 count as annotated, as in COCO's
own metric. Refused, naming the annotation or image: keypoints of the wrong length or
non-finite labelled ones, a box outside its image, a missing or unreadable image, an unknown
category or image id, duplicate ids.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from deeppose_tf import skeleton as skeleton_lib
from deeppose_tf.data.records import PoseRecord

# geometry.FRAMING_GROW, without importing TF for a reader: checked equal in a test.
FRAMING_GROW = 1.3
# A box may overrun its image by this many pixels (rounding in annotation tools) and no more.
BOX_SLACK = 2.0
# Keys a tool may leave out of a bbox-less annotation: its box then comes from its labelled
# keypoints (counted in the split json as "box_from_keypoints").


def _fail(where: str, problem: str, fix: str = "") -> ValueError:
  return ValueError(f"{where}: {problem}" + (f"; {fix}" if fix else ""))


def load(path: str) -> dict:
  """The parsed file, its top level checked; ValueError naming the file otherwise."""
  if not path:
    raise ValueError("dataset 'coco' needs --annotations=FILE.json, the COCO-keypoints file "
                     "your labelling tool exported")
  if not os.path.isfile(path):
    raise ValueError(f"--annotations={path}: no such file")
  try:
    with open(path, "rb") as f:
      data = json.loads(f.read().decode("utf-8-sig"))  # a byte-order mark is fine
  # ValueError: JSONDecodeError, UnicodeDecodeError, and an integer over Python's
  # 4300-digit limit (a plain ValueError).
  except (ValueError, RecursionError) as e:
    raise ValueError(f"{path}: not a valid JSON file ({str(e)[:200]}); export the "
                     "annotations again as COCO keypoints JSON") from None
  if not isinstance(data, dict):
    raise ValueError(f"{path}: a COCO file is a JSON object with 'images', 'annotations' and "
                     f"'categories', not a {type(data).__name__}")
  for key in ("images", "annotations", "categories"):
    if not isinstance(data.get(key), list):
      raise ValueError(f"{path}: no {key!r} list; is this a COCO keypoints file (COCO "
                       "'Person keypoints' export)?")
  return data


def _id(value, where: str):
  # COCO ids are ints; some tools write strings. Either, but nothing else (no floats, bools).
  if not _is_id(value):
    raise _fail(where, f"id {value!r} is not an integer or a string")
  if isinstance(value, str) and not _is_text(value):
    raise _fail(where, f"id {value!r} is not valid text (a lone UTF-16 surrogate)")
  return value


def _is_id(value) -> bool:
  return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_text(value: str) -> bool:
  # JSON's "\ud800" escape gives a str that no UTF-8 record id or file name can hold.
  try:
    value.encode("utf-8")
  except UnicodeEncodeError:
    return False
  return True


def _is_number(value) -> bool:
  """An int or float that a float holds (not a bool, not a 400-digit integer)."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return False
  try:
    float(value)
  except OverflowError:
    return False
  return True


def keypoint_category(data: dict, path: str, name: str = "") -> dict:
  """The category whose joints the records hold: the one named `name`, or the only one with
  keypoints."""
  cats = []
  seen = set()
  for i, c in enumerate(data["categories"]):
    if not isinstance(c, dict) or "id" not in c:
      raise _fail(f"{path}: categories[{i}]", "not an object with an 'id'")
    cid = _id(c["id"], f"{path}: categories[{i}]")
    if cid in seen:
      raise _fail(f"{path}: category id {cid!r}", "appears twice", "ids must be unique")
    seen.add(cid)
    if c.get("keypoints"):
      cats.append(c)
  if name:
    named = [c for c in cats if c.get("name") == name]
    if not named:
      raise ValueError(f"{path}: no keypoint category named {name!r}; its keypoint categories "
                       f"are {[c.get('name') for c in cats]}")
    return named[0]
  if not cats:
    raise ValueError(f"{path}: no category has 'keypoints' (joint names); this is not a "
                     "keypoints file")
  if len(cats) > 1:
    raise ValueError(f"{path}: {len(cats)} categories have keypoints "
                     f"({[c.get('name') for c in cats]}); choose one with --category=NAME")
  return cats[0]


def _pairs(text: str, flag: str) -> Optional[List[Tuple[str, str]]]:
  """'a:b,c:d' -> [(a, b), (c, d)]; '' -> None (derive); 'none' -> []."""
  if not text:
    return None
  if text.strip().lower() == "none":
    return []
  out = []
  for item in text.split(","):
    parts = [p.strip() for p in item.split(":")]
    if len(parts) != 2 or not all(parts):
      raise ValueError(f"--{flag}={text!r}: expected joint pairs as a:b,c:d")
    out.append((parts[0], parts[1]))
  return out


def category_skeleton(category: dict, where: str, flip_pairs: str = "", torso: str = "",
                      pcp_limbs: str = "", oks_sigmas: str = "") -> skeleton_lib.Skeleton:
  """The Skeleton of a COCO category: joint names from `keypoints`, drawing edges from
  `skeleton` (1-based), the rest from the names unless a flag says (Skeleton.build).

  flip_pairs, pcp_limbs: 'a:b,c:d' joint names ('none': no flip pairs); torso: 'a,b';
  oks_sigmas: K comma-separated floats (default: the category's own `sigmas` if it has them,
  else metrics looks them up by joint type at evaluation).

  A category holding "deeppose_skeleton" (to_coco writes the whole skeleton there: COCO has
  no fields for flip pairs, torso or PCP limbs) gives that skeleton, its joints checked
  against `keypoints`, unless one of the flags is given.
  """
  names = category.get("keypoints")
  if (not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names)):
    raise _fail(where, f"'keypoints' must be a list of joint names, got {names!r}")
  names = [n.strip() for n in names]
  whole = category.get("deeppose_skeleton")
  if isinstance(whole, dict) and not (flip_pairs or torso or pcp_limbs or oks_sigmas):
    fix = "remove 'deeppose_skeleton' to derive the skeleton from 'keypoints'"
    try:
      stored = skeleton_lib.resolve(whole)
    except (ValueError, OverflowError) as e:
      raise _fail(where, f"its deeppose_skeleton is damaged ({e})", fix) from None
    if list(stored.joints) != names:
      raise _fail(where, f"its deeppose_skeleton has joints {list(stored.joints)}, its "
                  f"keypoints are {names}", fix)
    return stored
  edges = []
  if not isinstance(category.get("skeleton") or [], list):
    raise _fail(where, f"'skeleton' must be a list of joint pairs, got "
                f"{category['skeleton']!r}")
  for e in category.get("skeleton") or []:
    if (not isinstance(e, (list, tuple)) or len(e) != 2 or
        not all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= len(names)
                for i in e)):
      raise _fail(where, f"skeleton edge {e!r} is not two 1-based joint numbers in "
                  f"1..{len(names)}")
    if e[0] != e[1]:
      edges.append((names[e[0] - 1], names[e[1] - 1]))
  diameter = None
  if torso:
    parts = [p.strip() for p in torso.split(",")]
    if len(parts) != 2:
      raise ValueError(f"--torso={torso!r}: expected two joint names, a,b")
    diameter = tuple(parts)
  sigmas = None
  if oks_sigmas:
    try:
      sigmas = [float(v) for v in oks_sigmas.split(",")]
    except ValueError:
      raise ValueError(f"--oks_sigmas={oks_sigmas!r}: expected {len(names)} numbers") from None
  elif isinstance(category.get("sigmas"), list):
    sigmas = category["sigmas"]
    if not all(_is_number(v) for v in sigmas):
      raise _fail(where, f"'sigmas' must be {len(names)} numbers, got {sigmas!r}")
  name = str(category.get("name") or "coco")
  try:
    return skeleton_lib.Skeleton.build(
        f"coco:{name}", names, edges, flip_pairs=_pairs(flip_pairs, "flip_pairs"),
        diameter=diameter, limbs=_pairs(pcp_limbs, "pcp_limbs"), sigmas=sigmas)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None


@dataclasses.dataclass
class _Image:
  id: object
  file_name: str
  width: Optional[int]
  height: Optional[int]


def _images(data: dict, path: str) -> Dict[object, _Image]:
  out: Dict[object, _Image] = {}
  for i, im in enumerate(data["images"]):
    where = f"{path}: images[{i}]"
    if not isinstance(im, dict) or "id" not in im:
      raise _fail(where, "not an object with an 'id'")
    iid = _id(im["id"], where)
    if iid in out:
      raise _fail(f"{path}: image id {iid!r}", "appears twice", "ids must be unique")
    name = im.get("file_name")
    if not isinstance(name, str) or not name or "\x00" in name or not _is_text(name):
      raise _fail(f"{path}: image {iid!r}", f"file_name {name!r} is not a file name")
    size = []
    for key in ("width", "height"):
      v = im.get(key)
      if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
        raise _fail(f"{path}: image {iid!r}", f"{key} {v!r} is not a positive integer")
      size.append(v)
    out[iid] = _Image(iid, name, *size)
  return out


def _image_bytes(images_dir: str, image: _Image, path: str) -> bytes:
  full = os.path.normpath(os.path.join(images_dir, image.file_name))
  root = os.path.normpath(images_dir)
  if os.path.isabs(image.file_name) or not (full == root or full.startswith(root + os.sep)):
    raise _fail(f"{path}: image {image.id!r}", f"file_name {image.file_name!r} points "
                "outside the images folder", "file names are relative to --images")
  if not os.path.isfile(full):
    raise _fail(f"{path}: image {image.id!r}", f"{full} is missing",
                "give --images=DIR, the folder the file names are relative to")
  with open(full, "rb") as f:
    return f.read()


def _header_size(data: bytes, where: str) -> Tuple[int, int]:
  import io
  from PIL import Image
  try:
    with Image.open(io.BytesIO(data)) as im:
      w, h = im.size
  except Exception as e:  # PIL raises many kinds for bad bytes
    raise _fail(where, f"not a readable JPEG/PNG image ({e})") from None
  return h, w


def framing_box(bbox: np.ndarray) -> np.ndarray:
  """COCO bbox [x, y, w, h] -> the stage-1 box (cx, cy, s, s): a square of FRAMING_GROW times
  the bbox's longer side about its centre."""
  x, y, w, h = (float(v) for v in bbox)
  side = FRAMING_GROW * max(w, h)
  return np.asarray([x + w / 2.0, y + h / 2.0, side, side], np.float32)


def _number_list(value, n: int) -> Optional[np.ndarray]:
  if (not isinstance(value, list) or len(value) != n or
      not all(_is_number(v) for v in value)):
    return None
  return np.asarray(value, np.float64)


def read_split(images_dir: str, path: str, skeleton: skeleton_lib.Skeleton,
               category: dict, keep_image=None, counts: Optional[dict] = None,
               data: Optional[dict] = None) -> Iterator[PoseRecord]:
  """PoseRecords of `path`'s annotations of `category`, one per labelled person, in file
  order; keep_image(image id) -> bool selects images (a split carved by image).

  counts (a split json's meta) receives the skipped entries: crowd, no_keypoints,
  other_category, and box_from_keypoints. data: the file already loaded (load(path))."""
  data = load(path) if data is None else data
  images = _images(data, path)
  known_cats = {c["id"] for c in data["categories"] if isinstance(c, dict) and "id" in c}
  k = skeleton.num_joints
  counts = counts if counts is not None else {}
  for key in ("crowd", "no_keypoints", "other_category", "box_from_keypoints", "people"):
    counts.setdefault(key, 0)
  seen = set()
  cache: Dict[object, Tuple[bytes, Tuple[int, int]]] = {}
  anns = data["annotations"]
  checked = []
  # Ids and references first, so a bad file fails before any record is yielded.
  for i, ann in enumerate(anns):
    where = f"{path}: annotations[{i}]"
    if not isinstance(ann, dict) or "id" not in ann:
      raise _fail(where, "not an object with an 'id'")
    aid = _id(ann["id"], where)
    where = f"{path}: annotation {aid!r}"
    if aid in seen:
      raise _fail(where, "appears twice", "annotation ids must be unique")
    seen.add(aid)
    if not (_is_id(ann.get("image_id")) and ann["image_id"] in images):
      raise _fail(where, f"image_id {ann.get('image_id')!r} is not in 'images'")
    if not (_is_id(ann.get("category_id")) and ann["category_id"] in known_cats):
      raise _fail(where, f"category_id {ann.get('category_id')!r} is not in 'categories'")
    checked.append((where, aid, ann))
  for where, aid, ann in checked:
    if ann["category_id"] != category["id"]:
      counts["other_category"] += 1
      continue
    image = images[ann["image_id"]]
    if keep_image is not None and not keep_image(image.id):
      continue
    where = f"{where} (image {image.file_name!r})"
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1, True, False):
      raise _fail(where, f"iscrowd {crowd!r} is not 0 or 1")
    if crowd:
      counts["crowd"] += 1
      continue
    kp = _number_list(ann.get("keypoints"), 3 * k)
    if kp is None:
      got = ann.get("keypoints")
      n = len(got) if isinstance(got, list) else type(got).__name__
      if isinstance(got, list) and len(got) == 3 * k:  # the right length: name the bad value
        n = f"{[v for v in got if not _is_number(v)][0]!r:.40} among them"
      raise _fail(where, f"keypoints must be {3 * k} numbers (x, y, v for each of the "
                  f"{k} joints of {skeleton.name!r}), got {n}")
    kp = kp.reshape(k, 3)
    v = kp[:, 2]
    if not np.all(np.isin(v, (0, 1, 2))):
      raise _fail(where, f"visibility flags must be 0, 1 or 2, got {v.tolist()}")
    visible = (v > 0).astype(np.float32)
    if not visible.any():
      counts["no_keypoints"] += 1
      continue
    joints = kp[:, :2].astype(np.float32)
    bad = (visible > 0) & ~np.all(np.isfinite(kp[:, :2]), axis=1)
    if bad.any():
      raise _fail(where, f"labelled joints {[skeleton.joints[j] for j in np.flatnonzero(bad)]}"
                  " have non-finite coordinates")
    if image.id not in cache:
      if len(cache) > 2:
        cache.clear()  # annotations of one image usually sit together
      raw = _image_bytes(images_dir, image, path)
      size = _header_size(raw, f"{path}: image {image.id!r} ({image.file_name!r})")
      if (image.height, image.width) != (None, None) and (
          (image.height or size[0]), (image.width or size[1])) != size:
        raise _fail(f"{path}: image {image.id!r} ({image.file_name!r})",
                    f"the file says {image.width}x{image.height}, the image is "
                    f"{size[1]}x{size[0]}", "fix width/height in 'images'")
      cache[image.id] = (raw, size)
    raw, (height, width) = cache[image.id]
    box = None
    if "deeppose_box" in ann:  # to_coco's exact stage-1 box (None: the whole image)
      if ann["deeppose_box"] is not None:
        box = _number_list(ann["deeppose_box"], 4)
        if box is None or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
          raise _fail(where, f"deeppose_box {ann['deeppose_box']!r} is not (cx, cy, w, h) "
                      "with w, h > 0")
        box = box.astype(np.float32)
    else:
      bbox = ann.get("bbox")
      if bbox is None:
        pts = joints[visible > 0]
        lo, hi = pts.min(0), pts.max(0)
        bbox_arr = np.asarray([lo[0], lo[1], max(hi[0] - lo[0], 1.0),
                               max(hi[1] - lo[1], 1.0)])
        counts["box_from_keypoints"] += 1
      else:
        bbox_arr = _number_list(bbox, 4)
        if bbox_arr is None or not np.all(np.isfinite(bbox_arr)):
          raise _fail(where, f"bbox {bbox!r} is not 4 finite numbers [x, y, w, h]")
        x, y, w, h = bbox_arr
        if w <= 0 or h <= 0:
          raise _fail(where, f"bbox {bbox!r} has no area (w, h must be > 0)")
        if (x < -BOX_SLACK or y < -BOX_SLACK or x + w > width + BOX_SLACK or
            y + h > height + BOX_SLACK):
          raise _fail(where, f"bbox {bbox!r} reaches outside its {width}x{height} image",
                      "boxes are [x, y, w, h] in the image's pixels")
      box = framing_box(bbox_arr)
    area = ann.get("area")
    if area is not None and (not _is_number(area) or area < 0 or
                             not abs(float(area)) <= float(np.finfo(np.float32).max)):
      raise _fail(where, f"area {area!r} is not a finite number >= 0")
    counts["people"] += 1
    yield PoseRecord(image_id=f"{image.file_name}#{aid}", image=raw, joints=joints,
                     visible=visible, box=box,
                     area=None if area is None else float(area))


def split_images(data: dict, split: str, val_fraction: float, seed: int,
                 category_id) -> Optional[set]:
  """The image ids of `split` ('train' or 'val') when val is carved from the one file: a
  seeded `val_fraction` of the images that hold people of the category, by image so that no
  photo is in both."""
  ids = sorted({a.get("image_id") for a in data["annotations"]
                if isinstance(a, dict) and a.get("category_id") == category_id
                and _is_id(a.get("image_id"))},
               key=lambda v: (isinstance(v, str), str(v) if isinstance(v, str) else v))
  rng = np.random.RandomState(seed)
  order = rng.permutation(len(ids))
  n_val = int(round(val_fraction * len(ids)))
  val = {ids[i] for i in order[:n_val]}
  return val if split == "val" else set(ids) - val


def read(images_dir: str, split: str, options: Mapping[str, object], seed: int,
         meta: dict) -> Tuple[skeleton_lib.Skeleton, Iterator[PoseRecord]]:
  """(skeleton, records) of one split of the coco dataset; prepare's reader.

  options: annotations, val_annotations, coco_val, category, flip_pairs, torso, pcp_limbs,
  oks_sigmas (datasets.py documents each as a prepare flag). Train reads --annotations; val
  reads --val_annotations, or the seeded --coco_val fraction of --annotations' images, which
  train then leaves out."""
  path = str(options["annotations"])
  data = load(path)
  category = keypoint_category(data, path, str(options["category"]))
  skeleton = category_skeleton(category, f"{path}: category {category.get('name')!r}",
                               str(options["flip_pairs"]), str(options["torso"]),
                               str(options["pcp_limbs"]), str(options["oks_sigmas"]))
  source, source_data = path, data
  keep = None
  val_path = str(options["val_annotations"])
  if split == "val" and val_path:
    source = val_path
    vdata = source_data = load(val_path)
    vcat = keypoint_category(vdata, val_path, str(category.get("name") or ""))
    if vcat["keypoints"] != category["keypoints"]:
      raise ValueError(f"{val_path}: its category {vcat.get('name')!r} has joints "
                       f"{vcat['keypoints']}, {path}'s {category['keypoints']}; both files "
                       "need one skeleton")
    category = vcat
  elif not val_path:
    fraction = float(options["coco_val"])
    if not 0.0 <= fraction < 1.0:
      raise ValueError(f"--coco_val={fraction}: a fraction of the images in [0, 1)")
    chosen = split_images(data, split, fraction, seed, category["id"])
    keep = chosen.__contains__
    meta["coco_val"] = fraction
  meta["annotations"] = os.path.abspath(source)
  meta["category"] = category.get("name")
  return skeleton, read_split(images_dir, source, skeleton, category, keep, counts=meta,
                              data=source_data)
