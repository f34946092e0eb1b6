"""Built-in synthetic dataset: procedurally rendered people on the LSP14 skeleton.

Each record is one articulated figure sampled from a kinematic tree with anthropometric
segment lengths and human joint-angle limits, drawn as shaded, textured tapered capsules
(limbs, neck, head, hands, feet) and a quad (torso) over a cluttered background with
limb-like distractors, sometimes with occluders over the person.  Labels are person-centric
(LSP convention): a back view puts the person's left on the image's left.

Frames:
  body frame    units of standing height, x right, y down, pelvis centre at the origin.
  image pixels  x right, y down, (0, 0) the image's top-left corner, pixel i spans [i, i+1),
                so the pixel at (col, row) has its centre at (col + 0.5, row + 0.5).
Joints are returned in image pixels and are exactly the axis endpoints of the drawn limbs;
joints outside the frame keep their true coordinates and stay annotated.

Record i depends only on (seed, i) through np.random.default_rng([seed, i]), so generation
is reproducible, resumable and parallel.
"""

from __future__ import annotations

import io
import multiprocessing
from typing import Iterator

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from deeppose_tf.data.records import PoseRecord
from deeppose_tf.skeleton import LSP14

# Segment lengths as fractions of standing height (Drillis & Contini, tabulated in Winter,
# "Biomechanics and Motor Control of Human Movement": ankle 0.039, hip 0.530, shoulder
# 0.818 of height).  "head" is LSP's neck to head top; "shoulder" and "hip" are half the
# distance between the left and right joint centres.
LENGTHS = {"upper_arm": 0.186, "lower_arm": 0.146, "upper_leg": 0.245, "lower_leg": 0.246,
           "torso": 0.29, "head": 0.18, "shoulder": 0.10, "hip": 0.07}
LENGTH_JITTER = 0.10  # each person's segment lengths stay within +-10% of these means
MIN_SIZE, MAX_SIZE = 160, 400  # image width and height, each drawn independently

# Pose families: probability, torso bend, shoulder abduction (0 = hanging, pi = straight
# up, < 0 = across the body), elbow flexion, hip angle, knee flexion, in radians.  Elbows
# stop at ~150 degrees of flexion, knees at ~140, hips at ~100 from hanging.
_KINDS = {
    "standing":  (.28, (-.10, .10), (.05, .45), (0., .5), (-.05, .25), (0., .2)),
    "walking":   (.14, (-.15, .15), (-.2, .6), (.2, 1.6), (-.2, .6), (0., 1.0)),
    "arms_up":   (.14, (-.15, .15), (1.6, 3.1), (0., 1.4), (-.05, .3), (0., .3)),
    "bending":   (.14, (.35, 1.1), (-.3, 2.5), (0., 2.2), (-.1, .6), (0., .8)),
    "kicking":   (.10, (-.3, .3), (.3, 2.0), (0., 1.5), (-.1, .3), (0., .4)),
    "crouching": (.10, (-.3, .3), (-.3, 1.5), (.3, 2.3), (.4, 1.1), (1.3, 2.4)),
    "random":    (.10, (-1., 1.), (-.5, 3.1), (0., 2.6), (-.4, 1.7), (0., 2.4)),
}
_KIND_P = np.array([v[0] for v in _KINDS.values()])


def _dir(theta):
  """(2,) unit vector at angle theta from straight up, turning clockwise on screen."""
  return np.array([np.sin(theta), -np.cos(theta)])


def _unit(v):
  return np.asarray(v, np.float64) / max(float(np.hypot(*v)), 1e-6)


def _sample_pose(rng):
  """One person's pose in the body frame.

  Returns (joints, info): joints maps LSP joint names to (2,) body-frame points; info has
  the nominal segment `lengths` (before foreshortening), per-segment `foreshortening`
  factors, `front` (view), `side` ({-1, 1} -> "r_"/"l_": which person side lies at -x/+x),
  `near` (the side nearer the camera), `yaw_width` and `kind`.
  """
  jitter = np.log1p(LENGTH_JITTER) * .999
  lengths = {k: v * float(np.exp(rng.uniform(-jitter, jitter))) for k, v in LENGTHS.items()}
  kind = list(_KINDS)[rng.choice(len(_KINDS), p=_KIND_P)]
  _, bend, abd, elb, hip, knee = _KINDS[kind]
  front = bool(rng.random() < .7)
  # A person facing the camera has their right side on the image's left; from the back,
  # on the image's right.  Labels stay the person's own either way.
  side = {-1: "r_" if front else "l_", 1: "l_" if front else "r_"}
  # Body yaw squeezes the shoulder and hip lines by cos(yaw).
  yaw_width = rng.uniform(.35, 1.) if rng.random() < .35 else rng.uniform(.85, 1.)
  fore = {}

  def seg(name, key, p, lo=.35):
    # Segments pointing towards or away from the camera project shorter.
    fore[name] = float(rng.uniform(lo, .95)) if rng.random() < p else 1.0
    return lengths[key] * fore[name]

  pelvis = rng.normal(0, .05)
  b = rng.uniform(*bend)
  torso = pelvis + (b * rng.choice([-1, 1]) if kind == "bending" else b)
  up = _dir(torso)
  j = {"neck": seg("torso", "torso", .1, .6) * up}
  j["head_top"] = j["neck"] + seg("head", "head", .1, .7) * _dir(
      torso + np.clip(rng.normal(0, .15), -.5, .5))
  kick_side = rng.choice([-1, 1])
  for s in (-1, 1):
    n = side[s]
    across = _dir(torso + np.pi / 2 + rng.normal(0, .05))
    j[n + "shoulder"] = j["neck"] + s * lengths["shoulder"] * yaw_width * across - .03 * up
    ua = torso + np.pi - s * rng.uniform(*abd)
    j[n + "elbow"] = j[n + "shoulder"] + seg(n + "upper_arm", "upper_arm", .2) * _dir(ua)
    fa = ua + s * rng.uniform(*elb) * rng.choice([-1, 1])
    j[n + "wrist"] = j[n + "elbow"] + seg(n + "lower_arm", "lower_arm", .2) * _dir(fa)
    j[n + "hip"] = s * lengths["hip"] * yaw_width * _dir(pelvis + np.pi / 2 + rng.normal(0, .04))
    h, k = rng.uniform(*hip), rng.uniform(*knee)
    if kind == "kicking" and s == kick_side:
      h, k = rng.uniform(.8, 1.8), rng.uniform(0, 1.2)
    # Crouching knees point out and the shins come back in; otherwise either way, mostly in.
    kdir = 1 if kind == "crouching" or rng.random() < .6 else -1
    th = pelvis + np.pi - s * h
    thigh = seg(n + "upper_leg", "upper_leg", .7 if kind == "crouching" else .2)
    j[n + "knee"] = j[n + "hip"] + thigh * _dir(th)
    j[n + "ankle"] = j[n + "knee"] + seg(n + "lower_leg", "lower_leg", .2) * _dir(th + s * k * kdir)
  return j, {"lengths": lengths, "foreshortening": fore, "front": front, "side": side,
             "near": int(rng.choice([-1, 1])), "yaw_width": yaw_width, "kind": kind}


# ---------------------------------------------------------------------------- painting


_NOISE = np.random.default_rng(0).standard_normal((512, 512), np.float32)  # fixed tile


def _noise(rng, shape):
  """(h, w) float32 window (h, w <= 512) of the noise tile at a random offset: textures
  look the same as with fresh normals per pixel, at a fraction of the cost."""
  y, x = (int(v) for v in rng.integers(0, 513 - np.array(shape)))
  return _NOISE[y:y + shape[0], x:x + shape[1]]


def _random_color(rng, n=()):
  """n + (3,) float32 RGB.  Photos are mostly muted: a random grey plus a random share of
  a random colour's chroma."""
  c, grey = rng.uniform(10, 245, n + (3,)), rng.uniform(20, 220, n + (1,))
  sat = rng.uniform(0, 1, n + (1,)) ** 1.5
  return np.clip(grey + (c - c.mean(-1, keepdims=True)) * sat, 0, 255).astype(np.float32)


def _skin_color(rng):
  t = rng.uniform()
  return ((np.array([245, 212, 180]) * (1 - t) + np.array([85, 52, 35]) * t)
          * rng.uniform(.92, 1.08, 3)).astype(np.float32)


class _Material:
  """A colour field in a part's own frame: u px along its axis, vn across it in [-1, 1]."""

  def __init__(self, rng, color, scale, light, pattern=None, noise=None):
    self.rng, self.c1, self.light = rng, np.asarray(color, np.float32), float(light)
    self.pattern = pattern or ["plain", "plain", "stripes", "check", "noise"][rng.integers(5)]
    self.c2 = _random_color(rng) if rng.random() < .6 else self.c1 * rng.uniform(.4, .8)
    self.freq = 2 * np.pi / (rng.uniform(.012, .05) * float(scale))
    self.phase = rng.uniform(0, 2 * np.pi)
    self.noise = float(rng.uniform(.02, .07) if noise is None else noise)

  def paint(self, u, vn):
    shape = np.broadcast_shapes(np.shape(u), np.shape(vn))
    vn = np.minimum(np.maximum(vn, -1.), 1.)
    # Cylinder shading: darker towards the silhouette, brighter on the lit side.
    shade = 1 + self.light * vn - .35 * vn * vn
    shade = shade + _noise(self.rng, shape) * self.noise
    if self.pattern == "stripes":
      pat = np.sin(u * self.freq + self.phase) > 0
    elif self.pattern == "check":
      pat = (np.sin(u * self.freq) > 0) ^ (np.sin(vn * 3.3 + self.phase) > 0)
    else:
      if self.pattern == "noise":  # knit/denim-like grain
        shade = shade + _noise(self.rng, shape) * .12
      return self.c1 * shade[..., None]
    return np.where(np.broadcast_to(pat, shape)[..., None], self.c2, self.c1) * shade[..., None]


class _Split:
  """Material a where u < threshold (px), b beyond: sleeves, shorts, the hair line."""

  def __init__(self, a, b, threshold):
    self.a, self.b, self.threshold = a, b, float(threshold)

  def paint(self, u, vn):
    return np.where((u < self.threshold)[..., None], self.a.paint(u, vn), self.b.paint(u, vn))


def _grid(shape, x0, y0, x1, y1):
  """(slices, X (1, w), Y (h, 1)): pixel-centre coordinates of a box clipped to the image."""
  x0, y0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
  x1, y1 = min(int(np.ceil(x1)), shape[1]), min(int(np.ceil(y1)), shape[0])
  if x0 >= x1 or y0 >= y1:
    return None
  return ((slice(y0, y1), slice(x0, x1)), np.arange(x0, x1, dtype=np.float32)[None] + .5,
          np.arange(y0, y1, dtype=np.float32)[:, None] + .5)


def _composite(canvas, cover, sl, alpha, color):
  """Alpha-blends colour (h, w, 3) into canvas[sl]; cover (H, W) keeps the max alpha."""
  canvas[sl] += (color - canvas[sl]) * alpha[..., None]
  if cover is not None:
    np.maximum(cover[sl], alpha, out=cover[sl])


def _capsule(canvas, cover, p0, p1, r0, r1, mat, min_r=1.2):
  """Tapered capsule, axis p0 -> p1 (image px), end radii r0, r1 px, antialiased edges.

  min_r keeps thin limbs at least ~2 px wide, so the pixel holding a joint is covered.
  """
  # Python floats: numpy float64 scalars would promote the float32 grids (2x slower).
  (x0, y0), (x1, y1) = map(float, p0), map(float, p1)
  r0, r1 = max(float(r0), min_r), max(float(r1), min_r)
  m = max(r0, r1) + 1
  g = _grid(canvas.shape, min(x0, x1) - m, min(y0, y1) - m, max(x0, x1) + m, max(y0, y1) + m)
  if g is None:
    return
  sl, X, Y = g
  length = float(np.hypot(x1 - x0, y1 - y0))
  ux, uy = ((x1 - x0) / length, (y1 - y0) / length) if length > 1e-6 else (1., 0.)
  dx, dy = X - x0, Y - y0
  u, v = dx * ux + dy * uy, dy * ux - dx * uy
  uc = np.minimum(np.maximum(u, 0.), length)
  r = r0 + ((r1 - r0) / max(length, 1e-6)) * uc
  alpha = np.minimum(np.maximum(r - np.sqrt((u - uc) ** 2 + v * v) + .5, 0.), 1.)
  _composite(canvas, cover, sl, alpha, mat.paint(u, v / r))


def _quad(canvas, cover, pts, top, bottom, half_width, mat):
  """Convex polygon pts (n, 2) px; its material frame runs top -> bottom, half_width across."""
  pts = np.asarray(pts, np.float64)
  g = _grid(canvas.shape, *(pts.min(0) - 1), *(pts.max(0) + 1))
  if g is None:
    return
  sl, X, Y = g
  nxt = np.roll(pts, -1, 0)
  orient = 1. if np.sum(pts[:, 0] * nxt[:, 1] - nxt[:, 0] * pts[:, 1]) >= 0 else -1.
  sd = None  # distance inside the polygon: the minimum over its edges
  for (px, py), (qx, qy) in zip(pts.tolist(), nxt.tolist()):
    n = orient / max(float(np.hypot(qx - px, qy - py)), 1e-6)
    d = ((qx - px) * n) * (Y - py) - ((qy - py) * n) * (X - px)
    sd = d if sd is None else np.minimum(sd, d)
  (tx, ty), (ax, ay) = map(float, top), map(float, _unit(np.subtract(bottom, top)))
  u, v = (X - tx) * ax + (Y - ty) * ay, (Y - ty) * ax - (X - tx) * ay
  alpha = np.minimum(np.maximum(sd + .5, 0.), 1.)
  _composite(canvas, cover, sl, alpha, mat.paint(u, v * (1 / float(half_width))))


def _box(c, d, sx, sy):
  """Corners of the rectangle centred at c with half sizes sx along unit d, sy across."""
  p = np.array([-d[1], d[0]])
  return [c - d * sx - p * sy, c + d * sx - p * sy, c + d * sx + p * sy, c - d * sx + p * sy]


# ---------------------------------------------------------------------------- scene


def _background(rng, h, w, light):
  """Gradient + low-frequency noise + distractors (some limb-like): (h, w, 3) float32."""
  t = np.linspace(0, 1, h)[:, None, None]
  if rng.random() < .5:  # a floor/wall horizon instead of a smooth gradient
    t = 1 / (1 + np.exp(-(t - rng.uniform(.3, .8)) * rng.uniform(20, 80)))
  top, bottom = _random_color(rng), _random_color(rng)
  column = (top + (bottom - top) * t).astype(np.uint8)  # (h, 1, 3)
  # Mostly luminance blotches with a little chroma, like shadows and uneven lighting.
  cells = (h // int(rng.integers(8, 40)) + 2, w // int(rng.integers(8, 40)) + 2)
  small = rng.normal(0, 40, cells + (1,)) + rng.normal(0, 15, cells + (3,))
  small = np.clip(128 + small * rng.uniform(.2, .6), 0, 255).astype(np.uint8)
  # uint8 image ops in PIL: no full-size float passes for the background.
  img = ImageChops.add(Image.fromarray(column).resize((w, h), Image.NEAREST),
                       Image.fromarray(small).resize((w, h), Image.BILINEAR), offset=-128)
  draw, size, n = ImageDraw.Draw(img), min(h, w), int(rng.integers(15, 45))
  centres = (rng.uniform(-.1, 1.1, (n, 2)) * (w, h)).tolist()
  sizes = (np.exp(rng.uniform(np.log(.02), np.log(.3), (n, 2))) * size).tolist()
  fills = [tuple(c) for c in _random_color(rng, (n,)).astype(int).tolist()]
  for (cx, cy), (sx, sy), fill, k in zip(centres, sizes, fills, rng.integers(5, size=n)):
    if k < 2:
      (draw.rectangle, draw.ellipse)[k]([cx - sx, cy - sy, cx + sx, cy + sy], fill=fill)
    elif k == 2:
      ang = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
      draw.polygon(list(zip(cx + sx * np.cos(ang), cy + sy * np.sin(ang))), fill=fill)
    else:  # poles, cables, edges of furniture
      draw.line([cx - sx, cy - sy, cx + sx, cy + sy], fill=fill, width=int(k) * 2 - 5)
  if rng.random() < .3:  # depth of field: backgrounds are often out of focus
    img = img.filter(ImageFilter.BoxBlur(rng.uniform(.7, 2.)))
  canvas = np.array(img, np.float32)
  for _ in range(int(rng.integers(0, 3))):  # textured surfaces: tiles, fabric, grain
    c, (sx, sy) = rng.uniform(0, 1, 2) * (w, h), rng.uniform(.06, .3, 2) * size
    d = _dir(rng.normal(np.pi / 2, .2))
    mat = _Material(rng, _random_color(rng), 2 * size, light,
                    ["stripes", "check", "noise"][rng.integers(3)])
    _quad(canvas, None, _box(c, d, sx, sy), c - d * sx, c + d * sx, sy, mat)
  # Hard negatives: shaded skin- and cloth-coloured limbs, some bent at a joint.
  for _ in range(int(rng.integers(1, 6))):
    color = _skin_color(rng) if rng.random() < .6 else _random_color(rng)
    mat = _Material(rng, color, size, light, "plain" if rng.random() < .6 else None)
    p, r = rng.uniform(0, 1, 2) * (w, h), rng.uniform(.012, .035) * size
    theta = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(1, 3))):
      q = p + rng.uniform(.08, .22) * size * _dir(theta)
      _capsule(canvas, None, p, q, r, r * rng.uniform(.6, 1.), mat)
      p, theta, r = q, theta + rng.uniform(-2.2, 2.2), r * .8
  return canvas


def _draw_person(rng, canvas, cover, jp, info, s, light):
  """Paints the person whose joints jp (name -> (2,) image px) are `s` px per height."""
  build = rng.uniform(.8, 1.3)  # thin .. heavy
  skin = _Material(rng, _skin_color(rng), s, light, "plain", rng.uniform(.01, .03))
  shirt, pants = (_Material(rng, _random_color(rng), s, light) for _ in range(2))
  shoes = _Material(rng, _random_color(rng) * .5, s, light, "plain")
  hair = _Material(rng, np.array([40, 28, 20]) * rng.uniform(.5, 4.), s, light, "noise")
  sleeve = float(rng.choice([.3, .6, 1.5]))  # short, elbow-length or long, of the arm
  shorts, loose = rng.random() < .25, rng.uniform(1., 1.25)
  side, far, near, cap = info["side"], -info["near"], info["near"], _capsule
  foot_dir = far if info["yaw_width"] < .85 else rng.choice([-1, 1])

  def arm(sd):
    sh, el, wr = (jp[side[sd] + k] for k in ("shoulder", "elbow", "wrist"))
    upper, r_ua, r_la = np.hypot(*(el - sh)), .042 * build * loose * s, .03 * build * s
    cut = sleeve * (upper + np.hypot(*(wr - el)))
    cap(canvas, cover, el, wr, r_la, .75 * r_la, _Split(shirt, skin, cut - upper))
    cap(canvas, cover, sh, el, r_ua, .8 * r_ua, _Split(shirt, skin, cut))
    hand = _unit(wr - el) * s
    cap(canvas, cover, wr + .015 * hand, wr + .06 * hand, .022 * s * build, .02 * s, skin)

  def leg(sd):
    hp, kn, an = (jp[side[sd] + k] for k in ("hip", "knee", "ankle"))
    r_ul, r_ll, shin = .062 * build * loose * s, .042 * build * s, _unit(an - kn)
    # Feet point at the camera in front views (short) and sideways in turned ones.
    foot = (shin * .03 + np.array([-shin[1], shin[0]]) * foot_dir * .1
            * (1.1 - info["yaw_width"])) * s
    cap(canvas, cover, an, an + foot, .03 * s, .028 * s, shoes)
    cap(canvas, cover, kn, an, r_ll, .7 * r_ll, skin if shorts else pants)
    cap(canvas, cover, hp, kn, r_ul, .75 * r_ul,
        _Split(pants, skin, .5 * np.hypot(*(kn - hp))) if shorts else pants)

  def torso():
    sa, sb, ha, hb = (jp[side[i] + k] for k in ("shoulder", "hip") for i in (-1, 1))
    down = _unit((ha + hb - sa - sb) / 2)
    top, bottom = (sa + sb) / 2 - down * .02 * s, (ha + hb) / 2 + down * .05 * s
    # A turned torso keeps its depth: never narrower than about its thickness.
    wt = max(np.hypot(*(sb - sa)) / 2, .07 * s * build) + .035 * build * s
    wb = max(np.hypot(*(hb - ha)) / 2, .07 * s * build) + .045 * build * s
    quad = [top - _unit(sb - sa) * wt, top + _unit(sb - sa) * wt,
            bottom + _unit(hb - ha) * wb, bottom - _unit(hb - ha) * wb]
    waist = np.hypot(*(bottom - top)) * rng.uniform(.6, .85)
    _quad(canvas, cover, quad, top, bottom, (wt + wb) / 2, _Split(shirt, pants, waist))

  def head():
    nk, ht = jp["neck"], jp["head_top"]
    axis, length = _unit(ht - nk), np.hypot(*(ht - nk))
    cap(canvas, cover, nk - axis * .01 * s, nk + axis * .35 * length, .03 * s * build,
        .028 * s * build, skin)
    # Chin at 28% of neck -> head top; the head's far end is exactly the head_top joint.
    a = .36 * length
    b = min(.05 * s * rng.uniform(.9, 1.1), a)
    c = nk + axis * .64 * length
    hair_from = (rng.uniform(.2, .45) if info["front"] else rng.uniform(.8, .95)) * 2 * a
    cap(canvas, cover, c - axis * (a - b), ht - axis * b, b, b,
        _Split(skin, hair, 2 * a - b - hair_from))
    if info["front"]:  # a face makes the facing direction, hence left/right, inferable
      perp = np.array([-axis[1], axis[0]])
      c = c + perp * far * (1 - info["yaw_width"]) * .6 * b  # turned towards the far side
      dark = _Material(rng, [30, 20, 20], s, 0., "plain", .02)
      for e in (-1, 1):
        cap(canvas, cover, c + axis * .1 * a + perp * e * .4 * b, c + axis * .1 * a
            + perp * e * .4 * b, .11 * b, .11 * b, dark, .5)
      cap(canvas, cover, c - axis * .5 * a - perp * .2 * b, c - axis * .5 * a + perp * .2 * b,
          .07 * b, .07 * b, _Material(rng, [140, 55, 55], s, 0., "plain", .02), .4)

  # Far limbs first, so the torso and the near limbs occlude them.
  order = [lambda: leg(far), torso, lambda: leg(near), head, lambda: arm(far), lambda: arm(near)]
  if rng.random() < .4:  # the far arm behind the body rather than across it
    order.insert(0, order.pop(4))
  for part in order:
    part()


def _render(seed: int, index: int, debug: bool = False):
  """Draws record (seed, index): (image, joints, visible, info) as in render_example.

  info: the _sample_pose info plus `scale` (px per standing height), `rotation`,
  `occluded` (14,) bool, `true_joints` (14, 2) px (unannotated ones not zeroed); with
  debug also the float32 layers `background` and `person` (H, W, 3), before and after the
  person is drawn (before occluders and camera effects), and `coverage` (H, W), the
  person's alpha.
  """
  if int(seed) < 0 or int(index) < 0:
    raise ValueError(f"seed and index must be non-negative ints, got {seed}, {index}")
  rng = np.random.default_rng([int(seed), int(index)])
  w, h = (int(x) for x in rng.integers(MIN_SIZE, MAX_SIZE + 1, 2))
  body, info = _sample_pose(rng)
  pts = np.stack([body[name] for name in LSP14.joints])

  # Whole-figure similarity transform: mostly upright, sometimes tilted or upside down.
  r = rng.random()
  phi = rng.normal(0, .12) if r < .8 else (
      rng.uniform(-.9, .9) if r < .97 else np.pi + rng.uniform(-.5, .5))
  pts = pts @ np.array([[np.cos(phi), np.sin(phi)], [-np.sin(phi), np.cos(phi)]])
  scale = rng.uniform(.45, .78) * h  # px per standing height
  lo, hi = pts.min(0) - .08, pts.max(0) + .08  # margin for the head, hands and feet
  fit = np.min(np.array([.95 * w, .95 * h]) / (hi - lo))
  if scale > fit and rng.random() < .85:
    scale = fit
  lo, hi = lo * scale, hi * scale
  room = np.array([w, h]) - (hi - lo)
  shift = -lo + np.where(room > 0, rng.uniform(0, 1, 2) * np.maximum(room, 0), room / 2)
  if rng.random() < .15:  # partly out of frame: the box overhangs one edge
    axis = int(rng.integers(2))
    over = rng.uniform(.1, .4) * (hi - lo)[axis]
    shift[axis] = -lo[axis] - over if rng.random() < .5 else (w, h)[axis] - hi[axis] + over
  joints = (pts * scale + shift).astype(np.float32)  # drawn from these exact values

  light = rng.uniform(-.35, .35)
  canvas = _background(rng, h, w, light)
  background = canvas.copy() if debug else None
  cover = np.zeros((h, w), np.float32) if debug else None
  jp = {name: joints[i].astype(np.float64) for i, name in enumerate(LSP14.joints)}
  _draw_person(rng, canvas, cover, jp, info, scale, light)
  person = canvas.copy() if debug else None

  # Occluders over the person; joints they hide usually go unannotated.
  occ = np.zeros((h, w), np.float32)
  for _ in range(int(rng.integers(1, 3)) if rng.random() < .3 else 0):
    c = joints[rng.integers(len(joints))] + rng.normal(0, .05, 2) * scale
    sx, sy = rng.uniform(.08, .2, 2) * scale
    mat = _Material(rng, _random_color(rng), scale, light)
    d = _dir(rng.uniform(-.3, .3) + np.pi / 2 * rng.integers(2))
    if rng.random() < .5:
      _capsule(canvas, occ, c - d * .5 * sx, c + d * .5 * sx, sy, sy * rng.uniform(.6, 1), mat)
    else:
      _quad(canvas, occ, _box(c, d, sx, sy), c - d * sx, c + d * sx, sy, mat)
  px = np.floor(joints).astype(int)
  inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
  occluded = np.zeros(len(joints), bool)
  occluded[inside] = occ[px[inside, 1], px[inside, 0]] > .5
  drop = (occluded & (rng.random(len(joints)) < .8)) | (rng.random(len(joints)) < .035)
  if drop.all():
    drop[rng.integers(len(joints))] = False
  visible = (~drop).astype(np.float32)

  # Camera: colour cast, exposure, luminance noise, sometimes soft focus.
  canvas *= rng.uniform(.85, 1.15, 3).astype(np.float32)
  canvas += _noise(rng, (h, w))[..., None] * rng.uniform(2, 8)
  image = np.clip(canvas, 0, 255, out=canvas).astype(np.uint8)
  if rng.random() < .2:
    image = np.asarray(Image.fromarray(image).filter(ImageFilter.BoxBlur(rng.uniform(.5, 1.))))
  info.update(scale=scale, rotation=phi, occluded=occluded, true_joints=joints)
  if debug:
    info.update(background=background, person=person, coverage=cover)
  return image, np.where(drop[:, None], 0, joints).astype(np.float32), visible, info


def render_example(seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Renders record `index` of synthetic dataset `seed` (both non-negative ints).

  Returns (image uint8 (H, W, 3) with H, W each in [160, 400]; joints float32 (14, 2) in
  LSP14 order, (x, y) image pixels, pixel i spanning [i, i+1), (0, 0) where unannotated;
  visible float32 (14,), 1 = annotated).
  """
  image, joints, visible, _ = _render(seed, index)
  return image, joints, visible


def _make_record(args) -> PoseRecord:
  seed, index, quality = args
  image, joints, visible = render_example(seed, index)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=quality)
  return PoseRecord(image_id=f"synthetic/{seed}/{index:06d}", image=buf.getvalue(),
                    joints=joints, visible=visible, box=None,
                    height=image.shape[0], width=image.shape[1])


def generate(num: int, seed: int, start: int = 0, quality: int = 90,
             workers: int = 2) -> Iterator[PoseRecord]:
  """Yields the records of indices start .. start + num - 1, in order.

  Each PoseRecord has image_id "synthetic/{seed}/{index:06d}", JPEG bytes, joints (14, 2)
  image pixels and visible (14,) as render_example; workers > 1 renders in processes.
  """
  if num < 0 or start < 0:
    raise ValueError(f"num and start must be non-negative, got num={num}, start={start}")
  if not 1 <= quality <= 95:
    raise ValueError(f"JPEG quality must be in [1, 95], got {quality}")
  tasks = ((seed, i, quality) for i in range(start, start + num))
  if workers <= 1 or num < 2 * workers:
    yield from map(_make_record, tasks)
    return
  # fork, not spawn: spawn re-imports the caller's __main__ (fails under `python -` and
  # notebooks).  Workers touch only numpy and PIL, never TensorFlow state from the parent.
  with multiprocessing.get_context("fork").Pool(workers) as pool:
    yield from pool.imap(_make_record, tasks, chunksize=16)
