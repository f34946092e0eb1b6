"""Property-based hostile COCO-keypoints files (hypothesis), through the real prepare path.

Every generated input starts from the valid fixture file (tests/coco_fixture.py: 3 images of
two people each, a crowd entry, a person with no labelled keypoint) and damages it: keypoints
of the wrong length or type, NaN / inf / bool / string / huge values, visibility flags outside
{0, 1, 2}, boxes outside the image, of no area or the wrong length, missing, escaping (../x,
absolute) or corrupt image files, width/height that disagree with the image, unknown,
duplicate, string or float ids, several keypoint categories, damaged skeletons and sigmas,
non-object entries, missing top-level lists, truncated / bit-flipped / non-UTF-8 JSON bytes,
crowd entries and zero-keypoint people.

The property, for each input run through `prepare.prepare("coco", ...)`:
  * either it raises ValueError whose message names the damaged record (the annotation id,
    the image id or file name, or the file's path for damage to the file as a whole), no
    split that was not completely written reads as valid (`records.read_meta` raises, or
    the old split from an earlier run is there byte for byte), and no temporary file or
    stray shard is left;
  * or it succeeds, and the TFRecords read back (tf.data + records.parse) hold exactly the
    labelled people of the file (joints, visible, box, area, the image's bytes), with the
    crowd / no_keypoints / other_category counts in each split json.  An independent
    oracle (`_Oracle`) raises `Bad` when a file that should have been refused was accepted.
Nothing but ValueError may escape prepare.

Generated inputs: 270 from hypothesis (max_examples: annotations 80, images 45, categories
45, file bytes 40, val file 20, mixed damages 40), plus a deterministic sweep that runs every
entry of every hostile-value table once (332 inputs), so no table entry is left to chance:
about 600 files in all.  Each test counts the inputs it ran and the last test asserts the
counts, and that both outcomes (refused, accepted) occurred, so a silently skipped property
cannot pass.  About 20-30 s on a loaded 2-core machine.
"""

import copy
import gzip
import io
import json
import os
import random
import shutil
import struct
import tempfile
import zlib

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

import coco_fixture
from deeppose_tf import skeleton as skeleton_lib
from deeppose_tf.data import coco, prepare, records

EXAMPLES = {"annotations": 80, "images": 45, "categories": 45, "bytes": 40, "val_file": 20,
            "mixed": 40}
assert sum(EXAMPLES.values()) >= 200


def _settings(name):
  return settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow])


tried = {name: 0 for name in list(EXAMPLES) + ["sweep"]}
outcomes = {name: {"refused": 0, "accepted": 0} for name in tried}

NUM_IMAGES = 3
COCO_VAL = 0.34  # one of the three images is val
SEED = 0
SPLITS = ("train", "val")
TORSO = coco_fixture.TORSO
NAN, INF = float("nan"), float("inf")
HUGE = 10 ** 400  # a JSON integer no float holds


class _Delete:
  def __repr__(self):
    return "<delete the key>"

  def __deepcopy__(self, memo):
    return self


DELETE = _Delete()


def _set(d, key, value):
  if value is DELETE:
    d.pop(key, None)
  else:
    d[key] = value


class Bad(AssertionError):
  """The oracle's verdict: prepare accepted a file it should have refused."""


def _need(ok, why):
  if not ok:
    raise Bad(f"a bad file was accepted: {why}")


def _is_id(v):
  return isinstance(v, (int, str)) and not isinstance(v, bool)


def _num(v):
  if isinstance(v, bool) or not isinstance(v, (int, float)):
    return False
  try:
    float(v)
  except OverflowError:
    return False
  return True


def _f32(values):
  with np.errstate(over="ignore"):
    return np.asarray([float(v) for v in values], np.float64).astype(np.float32)


# ---------------------------------------------------------------------------- the files


def _png_header(w, h):
  """A PNG that declares w x h pixels and holds none."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
          + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _png(image):
  buf = io.BytesIO()
  image.save(buf, "PNG")
  return buf.getvalue()


class Env:
  pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """The fixture dataset, hostile image files beside its images, and an old prepared split
  (2 shards) that a refused run must leave as it was."""
  e = Env()
  e.root = str(tmp_path_factory.mktemp("hostile_coco"))
  e.base_path = coco_fixture.make(e.root, num_images=NUM_IMAGES)
  e.images = os.path.join(e.root, "images")
  with open(e.base_path, "rb") as f:
    e.base_bytes = f.read()
  e.base = json.loads(e.base_bytes)
  good_path = os.path.join(e.images, "img_000.jpg")
  with open(good_path, "rb") as f:
    good = f.read()
  flipped = bytearray(good)
  for k in range(6):
    flipped[len(good) // 2 + 41 * k] ^= 0x5A
  with Image.open(good_path) as im:
    same_png = _png(im.convert("RGB"))
  hostile = {"trunc.jpg": good[:len(good) * 6 // 10], "flipped.jpg": bytes(flipped),
             "junk.jpg": np.random.RandomState(1).bytes(700), "empty.jpg": b"",
             "text.jpg": b"not an image\n", "huge.png": _png_header(30000, 30000),
             "small.png": _png(Image.new("RGB", (40, 30))), "same.png": same_png}
  for name, data in hostile.items():
    with open(os.path.join(e.images, name), "wb") as f:
      f.write(data)
  os.mkdir(os.path.join(e.images, "dir.jpg"))
  # A real image whose name is not UTF-8: JSON's "\udcff.jpg" reaches it (surrogateescape).
  with open(os.path.join(os.fsencode(e.images), b"\xff.jpg"), "wb") as f:
    f.write(good)
  with open(os.path.join(e.root, "outside.jpg"), "wb") as f:
    f.write(good)  # a real image that '../outside.jpg' would reach
  e.old_dir = os.path.join(e.root, "old")
  prepare.prepare("coco", e.old_dir, e.images, seed=SEED, num_shards=2,
                  annotations=e.base_path, coco_val=COCO_VAL, torso=TORSO)
  e.old_files = {}
  for name in os.listdir(e.old_dir):
    with open(os.path.join(e.old_dir, name), "rb") as f:
      e.old_files[name] = f.read()
  e.work = os.path.join(e.root, "work")
  os.mkdir(e.work)
  e.image_cache = {}
  # The base must be what the oracle expects (a valid file, both outcomes reachable).
  oracle = _Oracle(e, e.base_bytes, None, {"category": "", "torso": TORSO},
                   os.path.abspath(e.base_path), None)
  assert sum(len(oracle.expected(s)[0]) for s in SPLITS) == 2 * NUM_IMAGES
  return e


# ------------------------------------------------------------------------------ oracle


class _Oracle:
  """What prepare must write for a file it accepts; `Bad` where it should have refused.

  It restates the reader's contract from its docstring and the brief (ids int or string,
  unique, references resolved; one keypoint category; every kept person's keypoints 3K
  numbers with v in {0, 1, 2} and finite labelled joints; a box inside its image; a readable
  image inside the images folder of the size the file says; area a finite number >= 0), not
  its code."""

  def __init__(self, env, train_bytes, val_bytes, ctx, train_path, val_path):
    self.env, self.ctx = env, ctx
    self.train_bytes, self.val_bytes = train_bytes, val_bytes
    self.paths = {train_path: "train", val_path: "val"} if val_path else {train_path: None}

  @staticmethod
  def _parse(raw):
    try:
      # utf-8-sig: a reader may accept a byte-order mark, or refuse it.
      return json.loads(raw.decode("utf-8-sig"))
    except (ValueError, RecursionError) as e:
      raise Bad(f"not JSON ({str(e)[:80]})") from None

  def _file(self, raw, category_name):
    """(data, category, joint names, images by id) after the checks made before any record."""
    data = self._parse(raw)
    _need(isinstance(data, dict), "top level is not an object")
    for key in ("images", "annotations", "categories"):
      _need(isinstance(data.get(key), list), f"no {key} list")
    cats = data["categories"]
    for c in cats:
      _need(isinstance(c, dict) and _is_id(c.get("id")), f"category {c!r}")
    ids = [c["id"] for c in cats]
    _need(len(set(ids)) == len(ids), "duplicate category ids")
    with_kp = [c for c in cats if c.get("keypoints")]
    if category_name:
      with_kp = [c for c in with_kp if c.get("name") == category_name]
      _need(with_kp, f"no category {category_name!r}")
    else:
      _need(len(with_kp) == 1, f"{len(with_kp)} keypoint categories")
    cat = with_kp[0]
    names = cat["keypoints"]
    _need(isinstance(names, list) and all(isinstance(n, str) and n.strip() for n in names),
          f"joint names {names!r}")
    names = [n.strip() for n in names]
    _need(len(set(names)) == len(names) >= 2, f"joint names {names}")
    return data, cat, names, self._images(data)

  def _skeleton_check(self, cat, names):
    stored = cat.get("deeppose_skeleton")
    if isinstance(stored, dict) and not self.ctx["torso"]:
      try:
        skel = skeleton_lib.Skeleton.from_dict(stored)
      except Exception as e:  # noqa: BLE001: any complaint means refuse
        raise Bad(f"damaged deeppose_skeleton accepted ({e})") from None
      _need(list(skel.joints) == names, "deeppose_skeleton joints differ")
      return
    _need(self.ctx["torso"], "no torso pair for joints without shoulders and hips")
    edges = cat.get("skeleton")
    _need(isinstance(edges, list) and edges, f"skeleton {edges!r}")
    for e in edges:
      _need(isinstance(e, list) and len(e) == 2 and
            all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= len(names)
                for i in e), f"skeleton edge {e!r}")
    _need(any(a != b for a, b in edges), "no edge between two joints")
    sigmas = cat.get("sigmas")
    if isinstance(sigmas, list):
      _need(len(sigmas) == len(names) and all(_num(s) and np.isfinite(s) and s > 0
                                              for s in sigmas), f"sigmas {sigmas!r}")
    _need(all(j in names for j in self.ctx["torso"].split(",")), "torso joints")

  @staticmethod
  def _images(data):
    out = {}
    for im in data["images"]:
      _need(isinstance(im, dict) and _is_id(im.get("id")), f"image entry {im!r}")
      _need(im["id"] not in out, f"image id {im['id']!r} twice")
      fn = im.get("file_name")
      _need(isinstance(fn, str) and fn and "\x00" not in fn, f"file_name {fn!r}")
      for key in ("width", "height"):
        v = im.get(key)
        _need(v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
              f"{key} {v!r}")
      out[im["id"]] = im
    return out

  @staticmethod
  def _annotations(data, images, cat_ids):
    seen = set()
    for a in data["annotations"]:
      _need(isinstance(a, dict) and _is_id(a.get("id")), f"annotation entry {a!r}")
      _need(a["id"] not in seen, f"annotation id {a['id']!r} twice")
      seen.add(a["id"])
      _need(_is_id(a.get("image_id")) and a["image_id"] in images,
            f"image_id {a.get('image_id')!r}")
      _need(_is_id(a.get("category_id")) and a["category_id"] in cat_ids,
            f"category_id {a.get('category_id')!r}")

  def _image(self, im):
    """(bytes, (height, width)) of an image entry whose file must be a good image."""
    fn = im["file_name"]
    root = os.path.normpath(self.env.images)
    full = os.path.normpath(os.path.join(root, fn))
    _need(not os.path.isabs(fn) and full.startswith(root + os.sep), f"{fn!r} escapes")
    if fn not in self.env.image_cache:
      verdict = None
      try:
        with open(full, "rb") as f:
          raw = f.read()
        with Image.open(io.BytesIO(raw)) as pil:
          w, h = pil.size
        if w * h > records.MAX_IMAGE_PIXELS:
          raise ValueError("too many pixels")
        shape = tf.io.decode_image(raw, channels=3, expand_animations=False).shape
        if tuple(shape[:2]) != (h, w):
          raise ValueError("decodes to another size")
        verdict = (raw, (h, w))
      except Exception as e:  # noqa: BLE001: the oracle's own probe of the file
        verdict = f"image {fn!r}: {e}"
      self.env.image_cache[fn] = verdict
    verdict = self.env.image_cache[fn]
    _need(not isinstance(verdict, str), verdict)
    raw, (h, w) = verdict
    _need(im.get("width") in (None, w) and im.get("height") in (None, h),
          f"{fn!r} is {w}x{h}, the file says {im.get('width')}x{im.get('height')}")
    return raw, (h, w)

  def expected(self, split):
    """(expected records, counts) of `split`."""
    data, cat, names, images = self._file(self.train_bytes, self.ctx["category"])
    self._skeleton_check(cat, names)
    self._annotations(data, images, {c["id"] for c in data["categories"]})
    keep = None
    if self.val_bytes is not None:
      if split == "val":
        vdata, vcat, vnames, vimages = self._file(self.val_bytes, str(cat.get("name") or ""))
        _need(vcat["keypoints"] == cat["keypoints"], "val joints differ")
        self._annotations(vdata, vimages, {c["id"] for c in vdata["categories"]})
        data, cat, images = vdata, vcat, vimages
    else:
      keep = coco.split_images(data, split, COCO_VAL, SEED, cat["id"])
    return self._people(data, cat, len(names), images, keep)

  def _people(self, data, cat, k, images, keep):
    counts = dict.fromkeys(("crowd", "no_keypoints", "other_category", "box_from_keypoints",
                            "people"), 0)
    out = []
    for a in data["annotations"]:
      if a["category_id"] != cat["id"]:
        counts["other_category"] += 1
        continue
      im = images[a["image_id"]]
      if keep is not None and im["id"] not in keep:
        continue
      crowd = a.get("iscrowd", 0)
      _need(not isinstance(crowd, (list, dict)) and crowd in (0, 1), f"iscrowd {crowd!r}")
      if crowd:
        counts["crowd"] += 1
        continue
      kp = a.get("keypoints")
      _need(isinstance(kp, list) and len(kp) == 3 * k and all(_num(v) for v in kp),
            f"keypoints {kp!r}")
      kp = np.asarray([float(v) for v in kp]).reshape(k, 3)
      _need(all(v in (0, 1, 2) for v in kp[:, 2]), f"visibility {kp[:, 2]}")
      vis = kp[:, 2] > 0
      if not vis.any():
        counts["no_keypoints"] += 1
        continue
      joints = _f32(kp[:, :2].ravel()).reshape(k, 2)
      _need(np.all(np.isfinite(joints[vis])), f"labelled joints {joints[vis]}")
      raw, (h, w) = self._image(im)
      box = None
      if "deeppose_box" in a:
        if a["deeppose_box"] is not None:
          b = a["deeppose_box"]
          _need(isinstance(b, list) and len(b) == 4 and all(_num(v) for v in b),
                f"deeppose_box {b!r}")
          box = _f32(b)
          _need(np.all(np.isfinite(box)) and box[2] > 0 and box[3] > 0, f"deeppose_box {b}")
      else:
        b = a.get("bbox")
        if b is None:
          pts = joints[vis]
          lo, hi = pts.min(0), pts.max(0)
          b = [lo[0], lo[1], max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)]
          counts["box_from_keypoints"] += 1
        else:
          _need(isinstance(b, list) and len(b) == 4 and
                all(_num(v) and np.isfinite(v) for v in b), f"bbox {b!r}")
          x, y, bw, bh = b
          _need(bw > 0 and bh > 0, f"bbox {b} has no area")
          _need(x >= -coco.BOX_SLACK and y >= -coco.BOX_SLACK and
                x + bw <= w + coco.BOX_SLACK and y + bh <= h + coco.BOX_SLACK,
                f"bbox {b} outside {w}x{h}")
        x, y, bw, bh = (float(v) for v in b)
        side = coco.FRAMING_GROW * max(bw, bh)
        box = _f32([x + bw / 2, y + bh / 2, side, side])
        _need(np.all(np.isfinite(box)) and box[2] > 0, f"framing box {box}")
      area = a.get("area")
      if area is not None:
        _need(_num(area) and np.isfinite(_f32([area])[0]) and area >= 0, f"area {area!r}")
      counts["people"] += 1
      out.append({"id": f"{im['file_name']}#{a['id']}", "image": raw,
                  "joints": np.where(vis[:, None], joints, 0).astype(np.float32),
                  "visible": vis.astype(np.float32), "box": box,
                  "area": -1.0 if area is None else _f32([area])[0]})
    return out, counts

  def check_split(self, split, meta, got):
    """The split prepare wrote (its records `got`, read back) holds what the file says."""
    expected, counts = self.expected(split)
    if isinstance(meta.get("skeleton"), dict):
      assert len(meta["skeleton"]["joints"]) == meta["num_joints"]
    assert meta["num_records"] == len(got) == len(expected), (meta, len(got), len(expected))
    for key, n in counts.items():
      assert meta.get(key) == n, (split, key, meta.get(key), n)
    for e in expected:
      for g in got:
        if g["id"] == e["id"] and _same(e, g):
          got.remove(g)
          break
      else:
        raise AssertionError(f"{split}: record {e['id']!r} missing or different")
    assert not got


def _same(e, g):
  if e["image"] != g["image"] or not np.array_equal(e["joints"], g["joints"]):
    return False
  if not np.array_equal(e["visible"], g["visible"]) or e["area"] != g["area"]:
    return False
  if e["box"] is None:
    return not g["has_box"]
  return bool(g["has_box"]) and np.allclose(e["box"], g["box"], rtol=1e-5, atol=1e-4)


def _read_back(paths, k):
  # One dataset for every shard, parsed record by record: a .map traces a graph each time
  # (80 ms a split on a loaded machine, the bulk of this module's time).
  out = []
  for serialized in tf.data.TFRecordDataset(paths):
    r = records.parse(serialized, k)
    out.append({"id": r["image_id"].numpy().decode("utf-8"), "image": r["image"].numpy(),
                "joints": r["joints"].numpy(), "visible": r["visible"].numpy(),
                "box": r["box"].numpy(), "has_box": bool(r["has_box"].numpy()),
                "area": r["area"].numpy()})
  return out


# ------------------------------------------------------------------------------- runner


def _run(env, name, train_bytes, idents, expect, ctx, old, val_bytes=None):
  """Prepares the file; checks the property; returns 'refused' or 'accepted'."""
  tried[name] += 1
  work = tempfile.mkdtemp(dir=env.work)
  try:
    ann = os.path.join(work, "annotations.json")
    with open(ann, "wb") as f:
      f.write(train_bytes)
    options = {"annotations": ann, "coco_val": COCO_VAL, "torso": ctx["torso"],
               "category": ctx["category"]}
    val = None
    if val_bytes is not None:
      val = os.path.join(work, "val.json")
      with open(val, "wb") as f:
        f.write(val_bytes)
      options["val_annotations"] = val
    data_dir = os.path.join(work, "data")
    if old:
      shutil.copytree(env.old_dir, data_dir)
    oracle = _Oracle(env, train_bytes, val_bytes, ctx, os.path.abspath(ann),
                     val and os.path.abspath(val))
    try:
      counts = prepare.prepare("coco", data_dir, env.images, seed=SEED, num_shards=1,
                               **options)
    except ValueError as e:
      message = str(e)
      assert any(i in message for i in idents), (
          f"the refusal names none of {idents}: {message}")
      assert expect != "ok", f"a valid file was refused: {message}"
      _check_dir(env, data_dir, oracle, old, complete=False)
      result = "refused"
    else:
      assert expect != "fail", f"accepted, but should have been refused ({idents})"
      written = _check_dir(env, data_dir, oracle, old, complete=True)
      assert counts == {s: written[s]["num_records"] for s in SPLITS}
      if val_bytes is None:  # val carved from the file by image: no photo in both
        data = json.loads(train_bytes.decode("utf-8-sig"))
        cat_id = oracle._file(train_bytes, ctx["category"])[1]["id"]
        train, val_ids = (coco.split_images(data, s, COCO_VAL, SEED, cat_id) for s in SPLITS)
        assert not train & val_ids
      result = "accepted"
    outcomes[name][result] += 1
    return result
  finally:
    shutil.rmtree(work, ignore_errors=True)


def _check_dir(env, data_dir, oracle, old, complete):
  """Every split that reads as valid is complete: written by this run and right, or the old
  one untouched; no temporary file or stray shard."""
  names = os.listdir(data_dir) if os.path.isdir(data_dir) else []
  assert not [n for n in names if ".tmp-" in n], names
  shards, written, paths_of = set(), {}, {}
  for split in SPLITS:
    try:
      meta = records.read_meta(data_dir, split)
    except ValueError:
      assert not complete, f"{split} missing after a successful prepare"
      continue
    paths = records.list_shards(data_dir, split)
    shards.update(os.path.basename(p) for p in paths)
    if meta.get("annotations") in oracle.paths:
      written[split], paths_of[split] = meta, paths
    else:
      assert old and not complete, (split, meta.get("annotations"))
      assert meta.get("annotations") == os.path.abspath(env.base_path)
      for p in paths + [os.path.join(data_dir, f"{split}.json")]:
        with open(p, "rb") as f:
          assert f.read() == env.old_files[os.path.basename(p)], p
  assert {n for n in names if "tfrecord" in n} == shards, (names, shards)
  if written:
    assert len({m["num_joints"] for m in written.values()}) == 1, written
    got = _read_back([p for s in written for p in paths_of[s]],
                     next(iter(written.values()))["num_joints"])
    for split, meta in written.items():  # shards are read in order: this split's first
      n = meta["num_records"]
      oracle.check_split(split, meta, got[:n])
      got = got[n:]
    assert not got
  return written


# ------------------------------------------------------------------------------ choices


class HypothesisChoices:
  """The mutations' choices, drawn by hypothesis (so it can search and shrink them)."""

  def __init__(self, draw):
    self.draw = draw

  def index(self, n):
    return self.draw(st.integers(0, n - 1))

  def integer(self, lo, hi):
    return self.draw(st.integers(lo, hi))

  def choice(self, seq):
    return self.draw(st.sampled_from(list(seq)))

  case = choice  # the mutation's hostile value, from its table

  def coin(self):
    return self.draw(st.booleans())

  def subset(self, n, k):
    return sorted(self.draw(st.sets(st.integers(0, n - 1), max_size=k)))


class SweepChoices:
  """The sweep's choices: entry `forced` of the mutation's table, the rest seeded."""

  def __init__(self, forced, seed):
    self.forced, self.size = forced, None
    self.rng = random.Random(seed)

  def index(self, n):
    return self.rng.randrange(n)

  def integer(self, lo, hi):
    return self.rng.randint(lo, hi)

  def choice(self, seq):
    return self.rng.choice(list(seq))

  def case(self, seq):
    seq = list(seq)
    self.size = len(seq)
    return seq[self.forced]

  def coin(self):
    return self.rng.random() < 0.5

  def subset(self, n, k):
    return sorted(self.rng.sample(range(n), self.rng.randint(0, k)))


# ---------------------------------------------------------------------------- mutations
# Each takes (data, r, ctx): r the choices, r.case(table) the hostile value. It damages
# `data` in place and returns (idents, expect): the strings one of which a refusal must
# contain, and "fail", "ok" or "either" for this one damage of the valid base file; None
# when it does not apply (an earlier damage replaced its target).


def _ann(d, r):
  anns = d["annotations"]
  i = r.index(len(anns))
  a = anns[i]
  if not isinstance(a, dict):
    return None, None, None, None
  idents = [f"annotations[{i}]"]
  if "id" in a:
    idents += [f"annotation {a['id']!r}", f"#{a['id']}'"]  # the record id 'file#id'
  crowd = a.get("iscrowd") in (1, True)
  kp = a.get("keypoints")
  labelled = isinstance(kp, list) and any(v in (1, 2) for v in kp[2::3])
  role = "crowd" if crowd else "person" if labelled else "nokp"
  return i, a, idents, role


def m_keypoints_length(d, r, ctx):
  i, a, idents, role = _ann(d, r)
  if a is None:
    return None
  n = r.case([0, 1, 3, 14, 16, 18, 21, 45])
  kp = a.get("keypoints") if isinstance(a.get("keypoints"), list) else []
  a["keypoints"] = (list(kp) + [1] * 45)[:n]
  return idents, "ok" if role == "crowd" else "fail"


def m_keypoints_type(d, r, ctx):
  i, a, idents, role = _ann(d, r)
  if a is None:
    return None
  _set(a, "keypoints", r.case([None, "1,2,2", {}, 5, True, 1.5, DELETE]))
  return idents, "ok" if role == "crowd" else "fail"


VALUES = ["x", None, True, False, [1], {}, HUGE, NAN, INF, -INF, 1e300, -1e300, 1.5, 3, -1,
          0, 1, 2, 2.0, "2", 7.25, -3.5, 500.0]


def m_keypoint_value(d, r, ctx):
  i, a, idents, role = _ann(d, r)
  if a is None or not isinstance(a.get("keypoints"), list) or len(a["keypoints"]) != 15:
    return None
  p = r.index(15)
  value = r.case(VALUES)
  kp = a["keypoints"]
  labelled = kp[3 * (p // 3) + 2] in (1, 2)
  kp[p] = value
  if role == "crowd":
    expect = "ok"
  elif not _num(value):
    expect = "fail"
  elif p % 3 == 2:
    expect = "ok" if value in (0, 1, 2) else "fail"
  else:
    expect = "fail" if labelled and not np.isfinite(_f32([value])[0]) else "ok"
  return idents, expect


def m_visibility_all(d, r, ctx):
  """Every joint unlabelled (a zero-keypoint person), or all labelled (one comes back)."""
  i, a, idents, role = _ann(d, r)
  if a is None or not isinstance(a.get("keypoints"), list) or len(a["keypoints"]) != 15:
    return None
  a["keypoints"][2::3] = [r.case([0, 1, 2])] * 5
  return idents, "ok"


BBOXES = [([-50, 10, 40, 40], "fail"), ([150, 10, 40, 40], "fail"), ([10, 10, 0, 40], "fail"),
          ([10, 10, 40, -5], "fail"), ([10, 10, 40], "fail"), ([10, 10, 40, 40, 1], "fail"),
          ("10,10,40,40", "fail"), ([NAN, 10, 40, 40], "fail"), ([10, 10, INF, 40], "fail"),
          ([True, 10, 40, 40], "fail"), ([HUGE, 0, 1, 1], "fail"), ({}, "fail"),
          ([-3, 0, 10, 10], "fail"), ([0, 0, 160, 123], "fail"), ([-2, -2, 164, 124], "ok"),
          ([0, 0, 160, 120], "ok"), ([10.5, 20.25, 30, 40], "ok"), (None, "ok"),
          (DELETE, "ok"), ([5, 5, 1e-50, 1e-50], "either")]


def m_bbox(d, r, ctx):
  i, a, idents, role = _ann(d, r)
  if a is None:
    return None
  value, expect = r.case(BBOXES)
  _set(a, "bbox", copy.deepcopy(value))
  return idents, expect if role == "person" else "ok"


DEEPPOSE_BOXES = [(None, "ok"), ([80, 60, 50, 50], "ok"), ([80, 60, 0, 50], "fail"),
                  ([NAN, 60, 50, 50], "fail"), ("x", "fail"), ([1, 2, 3], "fail"),
                  ([1e300, 60, 50, 50], "fail"), ([80, 60, 50, -1], "fail"),
                  ([True, 1, 1, 1], "fail"), ([HUGE, 1, 1, 1], "fail"),
                  ([80, 60, 1e-50, 1e-50], "fail")]


def m_deeppose_box(d, r, ctx):
  i, a, idents, role = _ann(d, r)
  if a is None:
    return None
  value, expect = r.case(DEEPPOSE_BOXES)
  a["deeppose_box"] = copy.deepcopy(value)
  return idents, expect if role == "person" else "ok"


AREAS = [(None, "ok"), (DELETE, "ok"), (0, "ok"), (12.5, "ok"), (NAN, "fail"), (-1, "fail"),
         ("x", "fail"), (True, "fail"), (HUGE, "fail"), (1e300, "fail"), (INF, "fail"),
         ([1], "fail")]


def m_area(d, r, ctx):
  i, a, idents, role = _ann(d, r)
  if a is None:
    return None
  value, expect = r.case(AREAS)
  _set(a, "area", value)
  return idents, expect if role == "person" else "ok"


CROWDS = [(1, "ok"), (True, "ok"), (1.0, "ok"), (0, "ok"), (False, "ok"), (DELETE, "ok"),
          (2, "fail"), ("1", "fail"), (None, "fail"), (-1, "fail"), (0.5, "fail"),
          (NAN, "fail"), ([], "fail")]


def m_iscrowd(d, r, ctx):
  i, a, idents, role = _ann(d, r)
  if a is None:
    return None
  value, expect = r.case(CROWDS)
  _set(a, "iscrowd", value)
  return idents, expect


def m_crowd_with_garbage(d, r, ctx):
  """A crowd entry's keypoints and box are not read: anything goes."""
  i, a, idents, role = _ann(d, r)
  if a is None:
    return None
  a["iscrowd"] = 1
  a["keypoints"], a["bbox"] = r.case([([NAN] * 3, [-5, -5, 0, 0]), ("x", "x"), (None, None),
                                      ([0] * 15, [HUGE])])
  return idents, "ok"


def m_annotation_id(d, r, ctx):
  i, a, idents, role = _ann(d, r)
  if a is None:
    return None
  others = [b["id"] for b in d["annotations"] if isinstance(b, dict) and "id" in b
            and b is not a and _is_id(b["id"])]
  value, expect = r.case(
      [(1.5, "fail"), (True, "fail"), (None, "fail"), ([1], "fail"), ({}, "fail"),
       (NAN, "fail"), (DELETE, "fail"), ("abc", "ok"), ("", "ok"), (10 ** 30, "ok"),
       (HUGE, "ok"), ("\ud800", "fail")] + [(o, "fail") for o in others[:1]])
  _set(a, "id", value)
  if value is not DELETE and _is_id(value):
    idents = idents + [f"annotation {value!r}"]
  return idents, expect


def m_image_ref(d, r, ctx):
  i, a, idents, role = _ann(d, r)
  if a is None:
    return None
  others = [im["id"] for im in d["images"] if isinstance(im, dict) and _is_id(im.get("id"))
            and im["id"] != a.get("image_id")]
  value, expect = r.case(
      [(999, "fail"), ("1", "fail"), (None, "fail"), ([1], "fail"), ({}, "fail"),
       (1.5, "fail"), (True, "fail"), (1.0, "fail"), (DELETE, "fail")] +
      [(o, "ok") for o in others[:1]])
  _set(a, "image_id", value)
  return idents, expect


def m_category_ref(d, r, ctx):
  i, a, idents, role = _ann(d, r)
  if a is None:
    return None
  _set(a, "category_id", r.case([7, "1", None, [1], {}, True, 1.0, DELETE]))
  return idents, "fail"


def m_annotation_not_object(d, r, ctx):
  i = r.index(len(d["annotations"]))
  d["annotations"][i] = r.case([None, [], 5, "x", [{"id": 1}]])
  return [f"annotations[{i}]"], "fail"


def m_annotation_twice(d, r, ctx):
  i, a, idents, role = _ann(d, r)
  if a is None or "id" not in a:
    return None
  d["annotations"].append(copy.deepcopy(a))
  return [f"annotation {a['id']!r}"], "fail"


def m_annotation_extra_keys(d, r, ctx):
  """What tools add (segmentation, attributes, a wrong num_keypoints) is ignored."""
  i, a, idents, role = _ann(d, r)
  if a is None:
    return None
  a.update({"segmentation": [[0, 0, 1, 1]], "attributes": {"occluded": False},
            "num_keypoints": r.case(["x", -4, None, 99])})
  return idents, "ok"


ANNOTATION_MUTATIONS = [m_keypoints_length, m_keypoints_type, m_keypoint_value,
                        m_visibility_all, m_bbox, m_deeppose_box, m_area, m_iscrowd,
                        m_crowd_with_garbage, m_annotation_id, m_image_ref, m_category_ref,
                        m_annotation_not_object, m_annotation_twice, m_annotation_extra_keys]


def _img(d, r):
  j = r.index(len(d["images"]))
  im = d["images"][j]
  if not isinstance(im, dict):
    return None, None, None
  idents = [f"images[{j}]"]
  if "id" in im:
    idents += [f"image {im['id']!r}", f"image id {im['id']!r}"]
  fn = im.get("file_name")
  if isinstance(fn, str) and len(fn) >= 5:
    idents.append(fn)
  return j, im, idents


def m_file_name(d, r, ctx):
  j, im, idents = _img(d, r)
  if im is None or not isinstance(im.get("file_name"), str):
    return None
  fn = im["file_name"]
  others = [x.get("file_name") for x in d["images"] if isinstance(x, dict) and x is not im]
  value, expect = r.case(
      [("../outside.jpg", "fail"), ("../images/" + fn, "ok"),
       (os.path.join(ctx["env"].images, fn), "fail"), ("missing.jpg", "fail"), ("", "fail"),
       (None, "fail"), (5, "fail"), ([], "fail"), ("a\x00b.jpg", "fail"), (".", "fail"),
       ("dir.jpg", "fail"), ("sub/../" + fn, "ok"), ("\ud800.jpg", "fail"),
       ("\udcff.jpg", "fail"), ("trunc.jpg", "either"), ("junk.jpg", "fail"),
       ("empty.jpg", "fail"), ("text.jpg", "fail"), ("flipped.jpg", "either"),
       ("huge.png", "fail"), ("small.png", "fail"), ("same.png", "ok"), (fn.upper(), "fail"),
       ("../" * 12 + "etc/passwd", "fail"), ("/etc/passwd", "fail"),
       ("images/../../outside.jpg", "fail")] +
      [(o, "ok") for o in others[:1] if isinstance(o, str)])
  _set(im, "file_name", value)
  if isinstance(value, str) and len(value) >= 5:
    idents = idents + [value]
  return idents, expect


def m_image_size(d, r, ctx):
  j, im, idents = _img(d, r)
  if im is None:
    return None
  key = r.choice(["width", "height"])
  exact = {"width": 160, "height": 120}[key]
  value, expect = r.case(
      [(0, "fail"), (-1, "fail"), (1.5, "fail"), (str(exact), "fail"), (True, "fail"),
       (10 ** 30, "fail"), (HUGE, "fail"), (float(exact), "fail"), (exact + 1, "fail"),
       (exact - 1, "fail"), (None, "ok"), (DELETE, "ok"), (exact, "ok")])
  _set(im, key, value)
  return idents, expect


IMAGE_ID_KINDS = ("string ids", "big ids", "orphans", "twice")


def m_image_id(d, r, ctx):
  j, im, idents = _img(d, r)
  if im is None or not _is_id(im.get("id")):
    return None
  old = im["id"]
  others = [x["id"] for x in d["images"] if isinstance(x, dict) and x is not im
            and _is_id(x.get("id"))]
  kind = r.case(list(IMAGE_ID_KINDS) + [1.5, True, None, [], {}, NAN, DELETE])
  if kind in ("string ids", "big ids"):  # every reference follows: a valid file
    new = f"photo-{old}" if kind == "string ids" else 10 ** 30 + j
    for a in d["annotations"]:
      if isinstance(a, dict) and _is_id(a.get("image_id")) and a["image_id"] == old:
        a["image_id"] = new
    im["id"] = new
    return idents, "ok"
  if kind == "orphans":
    im["id"] = f"x{old}"
    return idents + [f"image_id {old!r}"], "fail"
  if kind == "twice":
    if not others:
      return None
    im["id"] = others[0]
    return idents + [f"image id {others[0]!r}"], "fail"
  _set(im, "id", kind)
  return idents, "fail"


def m_image_not_object(d, r, ctx):
  j = r.index(len(d["images"]))
  d["images"][j] = r.case([None, [], 5, "img_000.jpg"])
  return [f"images[{j}]"], "fail"


def m_image_twice(d, r, ctx):
  j, im, idents = _img(d, r)
  if im is None or "id" not in im:
    return None
  d["images"].append(copy.deepcopy(im))
  return [f"image id {im['id']!r}"], "fail"


def m_image_without_people(d, r, ctx):
  """An image no annotation refers to: its file is never read, its entry still checked."""
  n = len(d["images"])
  fn, width, expect = r.case(
      [("missing.jpg", 160, "ok"), ("../outside.jpg", None, "ok"), (None, 160, "fail"),
       ("junk.jpg", "x", "fail"), ("junk.jpg", 0, "fail")])
  d["images"].append({"id": 77, "file_name": fn, "width": width, "height": 120})
  return [f"images[{n}]", "image 77", "image id 77"], expect


IMAGE_MUTATIONS = [m_file_name, m_image_size, m_image_id, m_image_not_object, m_image_twice,
                   m_image_without_people]


def _cat(d):
  cats = [c for c in d["categories"] if isinstance(c, dict) and c.get("name") == "figure"]
  return cats[0] if cats else None


def m_second_keypoint_category(d, r, ctx):
  """Two keypoint categories: refused unless --category names one (or a third)."""
  if _cat(d) is None:
    return None
  d["categories"].append({"id": 2, "name": "other", "keypoints": list(coco_fixture.JOINTS),
                          "skeleton": coco_fixture.EDGES})
  for i in r.subset(len(d["annotations"]), 3):
    if isinstance(d["annotations"][i], dict):
      d["annotations"][i]["category_id"] = 2
  ctx["category"] = r.case(["", "figure", "other", "nope"])
  return [ctx["path"]], "ok" if ctx["category"] in ("figure", "other") else "fail"


def m_other_category(d, r, ctx):
  d["categories"].append({"id": 2, "name": r.case(["thing", "figure"])})
  for i in r.subset(len(d["annotations"]), 4):
    if isinstance(d["annotations"][i], dict):
      d["annotations"][i]["category_id"] = 2
  return [ctx["path"]], "ok"


def m_category_twice(d, r, ctx):
  cat = _cat(d)
  if cat is None:
    return None
  d["categories"].append(copy.deepcopy(cat))
  return [ctx["path"]], "fail"


def m_category_not_object(d, r, ctx):
  replace, value = r.case([(replace, v) for replace in (True, False)
                           for v in (None, 5, "x", [])])
  if replace:
    d["categories"][0] = value
    return ["categories[0]"], "fail"
  d["categories"].append(value)
  return [f"categories[{len(d['categories']) - 1}]"], "fail"


def m_category_id(d, r, ctx):
  cat = _cat(d)
  if cat is None:
    return None
  value, expect = r.case(
      [(1.5, "fail"), (True, "fail"), (None, "fail"), ([], "fail"), (NAN, "fail"),
       ("1", "fail"), (DELETE, "fail"), ("cat", "ok")])
  if value == "cat":
    for a in d["annotations"]:
      if isinstance(a, dict) and a.get("category_id") == cat.get("id"):
        a["category_id"] = "cat"
  _set(cat, "id", value)
  return [ctx["path"]], expect


J = list(coco_fixture.JOINTS)
NAMES = [(DELETE, "fail"), ([], "fail"), (None, "fail"), (["head", 5] + J[2:], "fail"),
         (J[:4], "fail"), (J + ["tail"], "fail"), (["head", "head"] + J[2:], "fail"),
         ([""] + J[1:], "fail"), (["  "] + J[1:], "fail"), ([" head "] + J[1:], "ok"),
         (["Head"] + J[1:], "ok"), (["head", "lefty"] + J[2:], "fail"), ("abc", "fail"),
         (5, "fail"), ({}, "fail"), ({"a": 1}, "fail")]


def m_category_keypoints(d, r, ctx):
  cat = _cat(d)
  if cat is None:
    return None
  value, expect = r.case(NAMES)
  _set(cat, "keypoints", copy.deepcopy(value))
  return [ctx["path"]], expect


EDGE_LISTS = [(5, "fail"), (True, "fail"), (1.5, "fail"), ([[0, 1]], "fail"),
              ([[1, 6]], "fail"), ([[1]], "fail"), ("ab", "fail"), ([[True, 2]], "fail"),
              ([[1, 2, 3]], "fail"), (None, "fail"), ([], "fail"), ([[1, 1]], "fail"),
              ([[2, 1]], "ok"), ([[1, 2], [1, 2]], "either"), ([[1.0, 2]], "fail"),
              (DELETE, "fail"), ({"a": 1}, "fail"), ([[HUGE, 1]], "fail"),
              ([[1, 2], None], "fail")]


def m_category_skeleton(d, r, ctx):
  cat = _cat(d)
  if cat is None:
    return None
  value, expect = r.case(EDGE_LISTS)
  _set(cat, "skeleton", copy.deepcopy(value))
  return [ctx["path"]], expect


SIGMA_LISTS = [([None] * 5, "fail"), (["a"] * 5, "fail"), (["0.1"] * 5, "fail"),
               ([0.1] * 5, "ok"), ([0.1] * 4, "fail"), ([NAN] * 5, "fail"), ([0] * 5, "fail"),
               ([HUGE] * 5, "fail"), ("abc", "ok"), ([True] * 5, "fail"),
               ([[0.1]] * 5, "fail"), ({}, "ok"), ([INF] * 5, "fail"), ([-0.1] * 5, "fail"),
               (list(coco_fixture.SIGMAS), "ok")]


def m_category_sigmas(d, r, ctx):
  cat = _cat(d)
  if cat is None:
    return None
  value, expect = r.case(SIGMA_LISTS)
  cat["sigmas"] = copy.deepcopy(value)
  return [ctx["path"]], expect


def _stored_skeletons():
  """to_coco's 'deeppose_skeleton': a good one and damaged ones."""
  edges = [(J[a - 1], J[b - 1]) for a, b in coco_fixture.EDGES]
  good = skeleton_lib.Skeleton.build("coco:figure", J, edges,
                                     diameter=tuple(TORSO.split(","))).to_dict()
  return [(good, "ok"), (dict(good, sigmas=[0.1] * 5), "ok"),
          (dict(good, sigmas=[HUGE] * 5), "fail"), (dict(good, sigmas=[None] * 5), "fail"),
          (dict(good, joints=J[::-1]), "fail"),
          ({k: v for k, v in good.items() if k != "limbs"}, "fail"),
          (dict(good, limbs=5), "fail"), (dict(good, diameter=["head", "nowhere"]), "fail"),
          ("lsp14", "fail"), (None, "fail"), (skeleton_lib.LSP14.to_dict(), "fail"),
          (dict(good, flip_pairs=[["head"]]), "fail"),
          (dict(good, edges=[["head", "nowhere"]]), "fail"), (dict(good, joints=5), "fail"),
          (dict(good, pcp_average=[["t", 5]]), "fail"), (dict(good, name=[1, 2]), "ok"),
          (dict(good, sigmas=[True] * 5), "either"), ({}, "fail")]


def m_deeppose_skeleton(d, r, ctx):
  """The whole skeleton on the category, used when no skeleton flag is given."""
  cat = _cat(d)
  if cat is None:
    return None
  value, expect = r.case(_stored_skeletons())
  cat["deeppose_skeleton"] = copy.deepcopy(value)
  ctx["torso"] = ""
  return [ctx["path"]], expect


def m_category_name(d, r, ctx):
  cat = _cat(d)
  if cat is None:
    return None
  _set(cat, "name", r.case([None, 5, "", "x" * 300, DELETE]))
  return [ctx["path"]], "ok"


CATEGORY_MUTATIONS = [m_second_keypoint_category, m_other_category, m_category_twice,
                      m_category_not_object, m_category_id, m_category_keypoints,
                      m_category_skeleton, m_category_sigmas, m_deeppose_skeleton,
                      m_category_name]


def v_category(d, r, ctx):
  """(val file) A category that disagrees with the train file's."""
  cat = _cat(d)
  key, value = r.case([("keypoints", 5), ("keypoints", J[::-1]), ("keypoints", None),
                       ("name", "thing"), ("keypoints", J + ["tail"])])
  cat[key] = value
  return ["val.json"], "fail"


# Whole-file damage: (base bytes, r, base data) -> (bytes, expect); a refusal names the path.

def b_truncate(raw, r, base):
  return raw[:r.integer(0, len(raw) - 1)], "fail"


def b_flip(raw, r, base):
  out = bytearray(raw)
  for _ in range(r.integer(1, 4)):
    out[r.index(len(out))] = r.integer(0, 255)
  return bytes(out), "either"


def b_top_level(raw, r, base):
  return json.dumps(r.case([[], 5, "x", None, {}, [base]])).encode("utf-8"), "fail"


def b_top_key(raw, r, base):
  d = copy.deepcopy(base)
  value, expect = r.case([(DELETE, "fail"), (None, "fail"), ({}, "fail"), ("x", "fail"),
                          (5, "fail"), ([], "either")])
  _set(d, r.choice(["images", "annotations", "categories"]), value)
  return json.dumps(d).encode("utf-8"), expect


def b_encoding(raw, r, base):
  kind = r.case(["bom", "bad utf-8", "utf-16", "gzip", "empty", "blank", "trailing",
                 "newline", "duplicate key", "pretty", "deep", "deep inside", "huge integer",
                 "nan literal"])
  if kind == "bom":
    return b"\xef\xbb\xbf" + raw, "either"
  if kind == "bad utf-8":
    at = raw.index(b"img_000")
    return raw[:at] + b"\xff\xfe" + raw[at:], "fail"
  if kind == "utf-16":
    return raw.decode("utf-8").encode("utf-16"), "fail"
  if kind == "gzip":
    return gzip.compress(raw, mtime=0), "fail"
  if kind == "empty":
    return b"", "fail"
  if kind == "blank":
    return b"  \n\t", "fail"
  if kind == "trailing":
    return raw + b" x", "fail"
  if kind == "newline":
    return raw + b"\n", "ok"
  if kind == "duplicate key":  # JSON keeps the last: no annotations
    return raw.rstrip()[:-1] + b', "annotations": []}', "ok"
  if kind == "pretty":
    return json.dumps(base, indent=2).encode("utf-8"), "ok"
  if kind == "deep":
    return b"[" * 100000 + b"]" * 100000, "fail"
  if kind == "deep inside":
    return raw.replace(b'"skeleton": ', b'"skeleton": ' + b"[" * 50000, 1), "fail"
  if kind == "huge integer":  # Python's json refuses over 4300 digits with a ValueError
    return raw.replace(b'"area": ', b'"area": ' + b"1" * 5000 + b', "x": ', 1), "fail"
  # NaN as a JSON literal (Python's json reads it) in a labelled keypoint
  d = copy.deepcopy(base)
  d["annotations"][0]["keypoints"][0] = NAN
  return json.dumps(d).encode("utf-8"), "fail"


BYTE_MUTATIONS = [b_truncate, b_flip, b_top_level, b_top_key, b_encoding]


# -------------------------------------------------------------------------------- tests


def _context(env):
  return {"category": "", "torso": TORSO, "env": env, "path": "annotations.json"}


def _damage(env, r, mutations):
  """The base file with each of `mutations` applied (one that does not apply is skipped):
  (bytes, idents, expects, ctx)."""
  d = copy.deepcopy(env.base)
  ctx = _context(env)
  idents, expects = [], []
  for m in mutations:
    result = m(d, r, ctx)
    if result is not None:
      idents += result[0]
      expects.append(result[1])
  return json.dumps(d).encode("utf-8"), idents, expects, ctx


def _one(env, name, r, mutation, val_file=False):
  """One damage; the property, with the damage's expected outcome."""
  if mutation in BYTE_MUTATIONS:
    raw, expect = mutation(env.base_bytes, r, env.base)
    return _run(env, name, raw, ["annotations.json"], expect, _context(env), r.coin())
  raw, idents, expects, ctx = _damage(env, r, [mutation])
  if not expects:  # applies to the base file: only 'twice' of a lone image could not
    return "n/a"
  old = r.coin()
  if val_file:
    return _run(env, name, env.base_bytes, idents, expects[0], ctx, old, val_bytes=raw)
  return _run(env, name, raw, idents, expects[0], ctx, old)


def _given(name, pool, val_file=False):
  @_settings(name)
  @given(data=st.data())
  def test(env, data):
    r = HypothesisChoices(data.draw)
    assume(_one(env, name, r, r.choice(pool), val_file) != "n/a")
  test.__name__ = f"test_hostile_{name}"
  return test


test_hostile_annotations = _given("annotations", ANNOTATION_MUTATIONS)
test_hostile_images = _given("images", IMAGE_MUTATIONS)
test_hostile_categories = _given("categories", CATEGORY_MUTATIONS)
test_hostile_file_bytes = _given("bytes", BYTE_MUTATIONS)
# --val_annotations: the train file is good, the val file damaged; train stays written.
test_hostile_val_file = _given("val_file", ANNOTATION_MUTATIONS + IMAGE_MUTATIONS +
                               [v_category], val_file=True)


@_settings("mixed")
@given(data=st.data())
def test_several_damages_at_once(env, data):
  r = HypothesisChoices(data.draw)
  pool = ANNOTATION_MUTATIONS + IMAGE_MUTATIONS + CATEGORY_MUTATIONS
  mutations = [r.choice(pool) for _ in range(r.integer(2, 3))]
  raw, idents, _, ctx = _damage(env, r, mutations)
  _run(env, "mixed", raw, idents, "either", ctx, r.coin())


SWEEP = [(m, False) for m in ANNOTATION_MUTATIONS + IMAGE_MUTATIONS + CATEGORY_MUTATIONS +
         BYTE_MUTATIONS] + [(v_category, True)]


@pytest.mark.slow  # 332 files: 10-30 s; the 270 hypothesis inputs stay in the default run
def test_every_hostile_value_once(env):
  """Hypothesis samples the tables above; this runs each entry of each table once (its
  target and the other choices seeded), so none is left to chance. Failures are collected
  and reported together."""
  failures = []
  for mutation, val_file in SWEEP:
    k, size = 0, 1
    while k < size:
      r = SweepChoices(k, seed=zlib.crc32(f"{mutation.__name__}/{k}".encode()))
      try:
        _one(env, "sweep", r, mutation, val_file)
      except Exception as e:  # noqa: BLE001: collected, reported below
        failures.append(f"{mutation.__name__} entry {k}: {type(e).__name__}: {str(e)[:400]}")
      size = r.size or 1
      k += 1
  assert not failures, "\n".join(failures)


def test_every_property_ran_its_examples():
  """Run last in this module (pytest keeps file order)."""
  assert all(tried[name] >= n for name, n in EXAMPLES.items()), tried
  assert sum(tried[name] for name in EXAMPLES) >= 200, tried
  # The sweep runs in the slow suite; when it ran, it covered every table entry.
  assert tried["sweep"] == 0 or tried["sweep"] >= 250, tried
  for name, seen in outcomes.items():
    if name == "sweep" and not tried["sweep"]:
      continue  # the sweep is in the slow suite
    assert seen["refused"] > 0 and (name == "bytes" or seen["accepted"] > 0), outcomes
