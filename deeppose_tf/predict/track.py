"""Tracking and temporal smoothing of poses in a video (pure numpy; scipy for the matching).

  tracker = Tracker()                                 # one per video
  for n, frame in enumerate(frames):
    boxes, poses = ...                                # (P, 4) (cx, cy, w, h), (P, S, K, 2)
    ids, smoothed = tracker.update(boxes, poses, t=n / fps)

Coordinates everywhere are image pixels, x right, y down (predict's records); times are in
seconds (frame n of a video at `fps` frames per second: t = n / fps).

- `OneEuroFilter`: the 1 Euro filter (Casiez, Roussel & Vogel, CHI 2012), the landmark
  smoother MediaPipe uses: a low-pass filter whose cutoff rises with the speed, so a still
  joint is smoothed hard (little jitter) and a moving one lightly (little lag).
- `Tracker`: keeps a person's identity ("track" id) from frame to frame by matching boxes
  (Hungarian matching on IoU, each track's box moved by its velocity first), and smooths
  each track's joints with its own OneEuroFilter.
- `jitter` and `lag_frames`: the two numbers that judge a smoother: frame-to-frame motion
  of a still person, and the delay of the smoothed joints on a moving one.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from deeppose_tf.predict.detect import iou  # noqa: F401 - also track.iou

# The defaults, for joints in pixels of a person whose box measures REF_SCALE pixels
# ((w + h) / 2, MediaPipe's object scale). The targets (tests/test_track.py, 30 fps): on a
# still person with 3 px Gaussian noise the jitter cut at least 3x (measured 5.4x); on one
# moving 5-20 px per frame a lag of at most 2 frames (measured against the true motion:
# 1.2 frames at 5 px/frame, 0.7 at 10, 0.4 at 20; against the raw joints 1.1, 0.6, 0.35).
# A steady first-order low-pass keeps alpha = 1 / (1 + fps / (2 pi fc)) of each new frame,
# cuts the frame-to-frame motion of white noise by alpha / sqrt(2 - alpha), and lags a ramp
# by (1 - alpha) / alpha = fps / (2 pi fc) frames:
#   MIN_CUTOFF 1 Hz: the cutoff of a still joint: alpha 0.17 at 30 fps, an ~8x cut of the
#     jitter; ~5.4x once the noise's own apparent speed raises the cutoff (BETA).
#   BETA 0.02 per (pixel / s): the cutoff rises by 1 Hz per 50 px/s of (smoothed) speed:
#     4 Hz at 5 px/frame at 30 fps, a lag of 30 / (2 pi 4) = 1.2 frames. Once BETA
#     dominates, the lag in frames, ~1 / (2 pi BETA v) for v px/frame, hardly depends on
#     the frame rate. Measured (raw joints) at 5 px/frame, 3 px noise: 15 fps lag 0.7, jitter
#     cut 3.3x; 25 fps 1.0, 4.8x; 60 fps 1.4, 9.5x. Slower motion lags more (1.7 frames at
#     2 px/frame, 30 fps). BETA 0.01 would smooth a little more (6.4x) but lag 1.9 frames
#     at 5 px/frame; 0.03 lags less but lets more noise through.
#   D_CUTOFF 1 Hz: the low-pass on the velocity that sets the cutoff (the paper's and
#     MediaPipe's value): slow enough that noise does not read as motion.
#   REF_SCALE 200 px: what "a pixel" means for BETA when a `scale` is given: speeds are
#     measured in pixels of a REF_SCALE-pixel person (v * REF_SCALE / scale), so a person 4x
#     bigger, whose joints (and noise) move 4x more pixels, is filtered exactly alike.
MIN_CUTOFF = 1.0
BETA = 0.02
D_CUTOFF = 1.0
REF_SCALE = 200.0
# The spike gate, before the filter. A heatmap model's joint that it cannot see (a hidden
# leg, a wrist behind the body) does not wobble: its peak switches to another hypothesis
# tens of pixels away for a frame or two and comes back. The 1 Euro filter reads such a jump
# as fast motion, raises its cutoff and lets most of it through. So a joint that lands
# farther than JUMP x the person's size (scale, or REF_SCALE without one) from its filtered
# value is held (its previous filtered value is output, its state left alone) until a next
# frame confirms the move (lands within JUMP of the held value: the joint restarts there) or
# for at most MAX_HOLD frames (then it restarts where it is), so a real jump is followed 1-2
# frames late and a spike never shows. JUMP 0.2 is 40 px a frame for a 200 px person, twice
# the fastest motion whose lag is tested (20 px/frame), which the gate never touches.
# Measured on the bundled model's still-person video (tests/test_bundled_model.py, 30 frames,
# --boxes=auto): the filter alone cut the jitter 2.2x; with the gate 3.4x (JUMP 0.15: 3.4x,
# 0.25: 3.1x; MAX_HOLD 1: 3.0x, 3: 3.3x).
JUMP = 0.2
MAX_HOLD = 2


def _alpha(cutoff, dt):
  """The smoothing factor of a first-order low-pass with `cutoff` Hz over `dt` seconds."""
  tau = 1.0 / (2.0 * np.pi * cutoff)
  return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
  """The 1 Euro filter over an array of values, e.g. joints (K, 2) or (S, K, 2) in pixels.

    v    = (x - x_prev_raw) / dt * ref_scale / scale        velocity (ref-pixels / s)
    v^   = lowpass(v, d_cutoff)
    fc   = min_cutoff + beta * |v^|                         Hz
    x^   = lowpass(x, fc),   lowpass(u, fc): y += alpha * (u - y),
                             alpha = 1 / (1 + 1 / (2 pi fc dt))
  with dt each value's own time since its last finite value (timestamps, so dropped or
  uneven frames are handled). The previous *raw* value gives the velocity, as in the
  paper's reference code and MediaPipe (not the previous filtered one, which would lag).

  per_point=True (the default): |v^| is a point's speed, the norm over the last axis (a
    joint's (x, y)), and its coordinates share one cutoff, so a joint is smoothed alike
    whichever way it moves (per coordinate, a diagonal move at 5 px/frame reads as 3.5
    px/frame on each axis and lags more); a point is missing when any coordinate is NaN.
  per_point=False: every element on its own (the paper's scalar filter; MediaPipe runs one
    per coordinate).
  min_cutoff: Hz, the cutoff of a still value: lower = less jitter, more lag when slow.
  beta: per (ref-pixel / s): how fast the cutoff rises with speed: higher = less lag.
  d_cutoff: Hz, the low-pass of the velocity.
  ref_scale: pixels; the person size the defaults are tuned for. A call's `scale` (the
    person's size in pixels, e.g. its box's (w + h) / 2, as MediaPipe scales by the
    landmarks' size) measures speeds relative to it, making the filter scale-invariant:
    the same motion scaled by s, with scale scaled by s, gives exactly s times the output.
    Without `scale` speeds are plain pixels / s (the defaults then suit a person of
    ~ref_scale pixels).

  jump, max_hold: the spike gate (JUMP above): a point farther than `jump` x scale (or x
    ref_scale without a scale) from its filtered value, when it was seen at the previous
    call, is held: the call outputs its previous filtered value and leaves its state alone,
    for up to `max_hold` calls in a row. When a next value lands within `jump` of the held
    one (the move is confirmed), or after `max_hold` held calls, the point restarts at the
    new value (filtered value = raw value, velocity 0). jump=None turns the gate off.
    With per_point=False the gate works element by element.

  NaN (missing) values pass through as NaN and leave their state alone: a joint resumes
  from its own last finite value when it comes back (after a long gap alpha ~ 1, so it
  jumps to the new value instead of sliding from the old one, and the gate lets it), and
  the others never see it.
  """

  def __init__(self, min_cutoff: float = MIN_CUTOFF, beta: float = BETA,
               d_cutoff: float = D_CUTOFF, ref_scale: float = REF_SCALE,
               per_point: bool = True, jump: Optional[float] = JUMP,
               max_hold: int = MAX_HOLD):
    for name, v in (("min_cutoff", min_cutoff), ("d_cutoff", d_cutoff),
                    ("ref_scale", ref_scale)):
      if not (np.isfinite(v) and v > 0):
        raise ValueError(f"OneEuroFilter: {name} must be a finite number > 0, not {v!r}")
    if not (np.isfinite(beta) and beta >= 0):
      raise ValueError(f"OneEuroFilter: beta must be a finite number >= 0, not {beta!r}")
    self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
    self.ref_scale, self.per_point = float(ref_scale), bool(per_point)
    if jump is not None and not (np.isfinite(jump) and jump > 0):
      raise ValueError(f"OneEuroFilter: jump must be None or a finite number > 0, not {jump!r}")
    if int(max_hold) != max_hold or max_hold < 1:
      raise ValueError(f"OneEuroFilter: max_hold must be an integer >= 1, not {max_hold!r}")
    self.jump = None if jump is None else float(jump)
    self.max_hold = int(max_hold)
    self.reset()

  def reset(self) -> None:
    """Forgets the past: the next call starts afresh (any shape)."""
    self.shape = None    # the values' shape, fixed by the first call
    self._x = None       # filtered value, per element (NaN: never seen)
    self._raw = None     # last finite raw value, per element
    self._v = None       # filtered velocity, ref-pixels / s, per element
    self._t = None       # time of the last finite value, per element (NaN: never seen)
    self._t_call = None  # time of the last call
    self._live = None    # per element: seen (or held) at the last call
    self._held = None    # per element: calls held in a row by the spike gate
    self._pending = None # per element: the last held raw value (NaN: none)

  def __call__(self, x, t: float, scale=None) -> np.ndarray:
    """Filters one frame's values.

    x: array (any shape, fixed from the first call; at least 1-D with per_point), pixels;
      NaN = missing.
    t: this frame's timestamp, seconds, increasing from call to call.
    scale: None, or the object's size in pixels (> 0; a scalar, or an array broadcastable
      to x), see the class doc.
    Returns the filtered values, float64, x's shape, NaN where x is missing.
    """
    x = np.asarray(x, np.float64)
    t = float(t)
    if not np.isfinite(t):
      raise ValueError(f"OneEuroFilter: timestamp {t!r} is not finite")
    if self.per_point and x.ndim == 0:
      raise ValueError("OneEuroFilter: per_point needs points along the last axis; "
                       "use per_point=False for a scalar")
    factor = 1.0
    if scale is not None:
      scale = np.asarray(scale, np.float64)
      if not np.all(np.isfinite(scale) & (scale > 0)):
        raise ValueError(f"OneEuroFilter: scale must be finite and > 0, not {scale!r}")
      factor = np.broadcast_to(self.ref_scale / scale, x.shape)
    if self.shape is None:
      self.shape = x.shape
      self._x = np.full(x.shape, np.nan)
      self._raw = np.full(x.shape, np.nan)
      self._v = np.zeros(x.shape)
      self._t = np.full(x.shape, np.nan)
      self._live = np.zeros(x.shape, bool)
      self._held = np.zeros(x.shape, np.int64)
      self._pending = np.full(x.shape, np.nan)
    elif x.shape != self.shape:
      raise ValueError(f"OneEuroFilter: values of shape {x.shape} after {self.shape}; "
                       "reset() first to filter another shape")
    elif not t > self._t_call:
      raise ValueError(f"OneEuroFilter: timestamp {t} is not after the previous one "
                       f"({self._t_call})")
    self._t_call = t
    seen = np.isfinite(x)
    if self.per_point:
      seen = np.broadcast_to(seen.all(-1, keepdims=True), x.shape)
    hold = restart = np.zeros(x.shape, bool)
    if self.jump is not None:
      hold, restart = self._gate(x, seen, factor)
    live = seen
    seen = seen & ~hold             # a held value is not filtered
    new = seen & np.isnan(self._t)  # a first finite value: taken as it is
    go = seen & ~new & ~restart     # filtered
    with np.errstate(invalid="ignore", divide="ignore"):
      dt = np.where(go, t - self._t, 1.0)
      v = np.where(go, (x - self._raw) / dt * factor, 0.0)
      v_hat = self._v + _alpha(self.d_cutoff, dt) * (v - self._v)
      speed = (np.linalg.norm(v_hat, axis=-1, keepdims=True) if self.per_point else
               np.abs(v_hat))
      cutoff = self.min_cutoff + self.beta * speed
      x_hat = self._x + _alpha(cutoff, dt) * (x - self._x)
    restarted = new | restart
    self._v = np.where(go, v_hat, np.where(restarted, 0.0, self._v))
    self._x = np.where(go, x_hat, np.where(restarted, x, self._x))
    self._raw = np.where(seen, x, self._raw)
    self._t = np.where(seen, t, self._t)
    self._live = live
    return np.where(live, self._x, np.nan)

  def _gate(self, x, seen, factor):
    """The spike gate (class doc): (hold, restart) bool masks of x's shape, and the gate's
    state updated. factor: ref_scale / scale (array or 1.0), so `jump` x scale in pixels is
    jump x ref_scale / factor."""
    limit = self.jump * self.ref_scale / np.broadcast_to(np.asarray(factor, np.float64),
                                                         x.shape)

    def beyond(a, b):  # distance from a to b (per point or per element) > limit
      with np.errstate(invalid="ignore"):
        far = np.abs(a - b) > limit if not self.per_point else (
            np.linalg.norm(a - b, axis=-1, keepdims=True) > limit)
      return np.broadcast_to(far, x.shape)

    checked = seen & self._live  # seen (or held) last call: its filtered value is finite
    far = checked & beyond(x, self._x)
    confirmed = far & np.isfinite(self._pending) & ~beyond(x, self._pending)
    hold = far & ~confirmed & (self._held < self.max_hold)
    restart = far & ~hold
    self._held = np.where(hold, self._held + 1, 0)
    self._pending = np.where(hold, x, np.nan)
    return hold, restart


class _Track:
  __slots__ = ("id", "box", "velocity", "t", "missed", "hits", "filter")

  def __init__(self, track_id, box, t, one_euro):
    self.id, self.box, self.t, self.missed, self.hits = track_id, box, t, 0, 1
    self.velocity = np.zeros(4)  # d(cx, cy, w, h) / dt, pixels / s
    self.filter = OneEuroFilter(**one_euro)

  def predicted_box(self, t):
    box = self.box + self.velocity * (t - self.t)
    box[2:] = np.maximum(box[2:], 1e-6)
    return box


class Tracker:
  """Keeps people's identities across a video's frames and smooths their joints.

  update(boxes, poses, t) matches this frame's boxes to the live tracks by IoU (Hungarian
  matching, scipy.optimize.linear_sum_assignment, pairs below `iou_threshold` refused)
  against each track's box moved by its velocity to time t (a constant-velocity
  prediction, as SORT does with its Kalman filter: without it two people of the same size
  crossing each other swap ids, each one's last box fitting the other's new one better).
  Two people of the same size at the same place in the same frame have one box (so one
  crop and one pose): nothing box-based tells them apart there, and the tracker then relies
  on their motion before it.
  Unmatched boxes start new tracks, ids 0, 1, 2 ... in order of appearance, never reused;
  a track unmatched for more than `max_age` consecutive frames (update calls) is dropped,
  so a person who comes back later gets a new id.

  Why boxes, not the joints' bounding boxes: the boxes are what the pose model was run on
  (a detector's, the user's, or the whole image), so they exist for every person, even
  when the joints are NaN or wrong, they do not change shape when an arm is raised, and the
  joints are already tied to them. (With --boxes=full there is one whole-image box per
  frame and the one person keeps id 0.)

  Smoothing (smooth=True): each track owns a OneEuroFilter over all its stages' joints
  (S, K, 2) with scale = its box's (w + h) / 2 (scale-invariant: same behaviour for big and
  small people). Every stage is smoothed, not only the last: the filter works joint by
  joint, so the last stage comes out the same either way, and a record's "joints" stays
  equal to its "joints_per_stage"[-1]. A new track's first pose passes through unchanged;
  a missing (NaN) joint stays NaN and resumes on its own.
  smooth=False returns the poses as given.

  iou_threshold: the least IoU of a match (0.3, SORT's). max_age: frames a track may go
  unmatched and still be matched again (10: a third of a second at 30 fps; longer lets a
  stale track grab a newcomer). velocity_smoothing: weight of the previous box velocity
  when a new one is measured (0.5). one_euro: OneEuroFilter's keyword arguments.
  """

  def __init__(self, iou_threshold: float = 0.3, max_age: int = 10, smooth: bool = True,
               velocity_smoothing: float = 0.5, predict_motion: bool = True,
               one_euro: Optional[dict] = None):
    if not 0 <= iou_threshold <= 1:
      raise ValueError(f"Tracker: iou_threshold must be in [0, 1], not {iou_threshold!r}")
    if max_age < 0:
      raise ValueError(f"Tracker: max_age must be >= 0, not {max_age!r}")
    if not 0 <= velocity_smoothing < 1:
      raise ValueError("Tracker: velocity_smoothing must be in [0, 1), not "
                       f"{velocity_smoothing!r}")
    self.iou_threshold, self.max_age, self.smooth = iou_threshold, int(max_age), smooth
    self.velocity_smoothing, self.predict_motion = velocity_smoothing, predict_motion
    self.one_euro = dict(one_euro or {})
    OneEuroFilter(**self.one_euro)  # bad keywords fail here, not at the first person
    self._tracks: list = []
    self._next_id = 0
    self._t = None

  @property
  def track_ids(self) -> list:
    """Ids of the live tracks (matched within the last max_age frames)."""
    return [tr.id for tr in self._tracks]

  def update(self, boxes, poses, t: float):
    """One frame.

    boxes: (P, 4) (cx, cy, w, h), pixels; P >= 0.
    poses: None, or (P, S, K, 2) or (P, K, 2) joints, pixels (NaN = missing joint).
    t: the frame's timestamp, seconds (frame n: n / fps), increasing.
    Returns (ids (P,) int64, poses): poses smoothed per track when smooth=True (same shape
    and dtype as given; float64 for non-float input), else as given; None when poses is None.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    t = float(t)
    if self._t is not None and not t > self._t:
      raise ValueError(f"Tracker: timestamp {t} is not after the previous one ({self._t})")
    self._t = t
    if poses is not None:
      given = poses
      poses = np.asarray(poses)
      if len(poses) != len(boxes):
        raise ValueError(f"Tracker: {len(boxes)} boxes but {len(poses)} poses")
      if poses.ndim not in (3, 4) or poses.shape[-1] != 2:
        raise ValueError(f"Tracker: poses must be (P, S, K, 2) or (P, K, 2), not {poses.shape}")

    p = len(boxes)
    ids = np.full(p, -1, np.int64)
    matched_tracks = set()
    if p and self._tracks:
      predicted = np.stack([tr.predicted_box(t) if self.predict_motion else tr.box.copy()
                            for tr in self._tracks])
      overlap = iou(boxes, predicted)
      ok = overlap >= self.iou_threshold
      if ok.any():
        from scipy.optimize import linear_sum_assignment
        # A refused pair costs more than all accepted ones together: the most matches
        # first, then the highest total IoU among them.
        cost = np.where(ok, 1.0 - overlap, 2.0 * (p + len(self._tracks)))
        for r, c in zip(*linear_sum_assignment(cost)):
          if ok[r, c]:
            tr = self._tracks[c]
            ids[r] = tr.id
            matched_tracks.add(c)
            dt = t - tr.t
            measured = (boxes[r] - tr.box) / dt
            tr.velocity = (measured if tr.hits == 1 else  # the first measured velocity
                           self.velocity_smoothing * tr.velocity
                           + (1 - self.velocity_smoothing) * measured)
            tr.box, tr.t, tr.missed, tr.hits = boxes[r].copy(), t, 0, tr.hits + 1
    kept = []
    for c, tr in enumerate(self._tracks):
      if c not in matched_tracks:
        tr.missed += 1
        if tr.missed > self.max_age:
          continue
      kept.append(tr)
    self._tracks = kept
    by_id = {tr.id: tr for tr in self._tracks}
    for r in range(p):
      if ids[r] < 0:
        tr = _Track(self._next_id, boxes[r].copy(), t, self.one_euro)
        self._next_id += 1
        self._tracks.append(tr)
        by_id[tr.id] = tr
        ids[r] = tr.id

    if poses is None:
      return ids, None
    if not self.smooth:
      return ids, given
    dtype = poses.dtype if np.issubdtype(poses.dtype, np.floating) else np.float64
    out = np.empty(poses.shape, dtype)
    for r in range(p):
      tr = by_id[ids[r]]
      scale = (abs(boxes[r, 2]) + abs(boxes[r, 3])) / 2
      scale = scale if np.isfinite(scale) and scale > 0 else None
      if tr.filter.shape is not None and tr.filter.shape != poses[r].shape:
        tr.filter.reset()
      out[r] = tr.filter(poses[r], t, scale=scale)
    return ids, out


def jitter(joints) -> float:
  """Mean frame-to-frame motion of the joints, pixels: mean over frames t >= 1 and joints of
  |p[t] - p[t-1]| (Euclidean over the last axis).

  joints: (T, ..., D), e.g. one person's track (T, K, 2), pixels; NaN joints are left out.
  For a still person this is the jitter; for white noise of sigma px per coordinate in 2-D
  it is sigma * sqrt(pi) (~1.77 sigma: the norm of a 2-D Gaussian of sigma * sqrt(2)).
  """
  joints = np.asarray(joints, np.float64)
  if joints.ndim < 2 or len(joints) < 2:
    raise ValueError(f"jitter: need (T >= 2, ..., D) joints, not {joints.shape}")
  step = np.linalg.norm(np.diff(joints, axis=0), axis=-1)
  step = step[np.isfinite(step)]
  return float(step.mean()) if step.size else float("nan")


def lag_frames(signal_in, signal_out, max_lag: int = 10) -> float:
  """The delay d (frames, fractional) that best aligns signal_out with signal_in: the d
  minimising E(d) = mean over t of (signal_out[t] - signal_in[t - d])^2; positive = the
  output lags.

  signal_in, signal_out: (T,) or (T, ...) of the same shape (e.g. raw and smoothed joints
  (T, K, 2), pixels); NaN samples are left out. E is computed at the whole delays -max_lag
  .. max_lag over the same frames t in [max_lag, T - max_lag) (no interpolation: reading a
  noisy input between frames would average its noise away and bias d to half frames), and
  the minimum is refined by the parabola through its neighbours. Least squares rather than
  cross-correlation: for a person moving at constant speed (a ramp) the correlation is 1 at
  every delay, while E(d) = v^2 (d - lag)^2 + noise is a parabola whose minimum is exactly
  the filter's lag (a first-order low-pass lags a ramp by (1 - alpha) / alpha frames).
  A minimum at +-max_lag is returned as it is (the true lag may be larger).
  """
  a = np.asarray(signal_in, np.float64)
  b = np.asarray(signal_out, np.float64)
  if a.shape != b.shape or a.ndim < 1:
    raise ValueError(f"lag_frames: signals of shapes {a.shape} and {b.shape}")
  n, m = len(a), int(max_lag)
  if m < 1 or n - 2 * m < 2:
    raise ValueError(f"lag_frames: {n} frames and max_lag={max_lag}: need max_lag >= 1 and "
                     "T >= 2 max_lag + 2")
  a = a.reshape(n, -1)
  b = b.reshape(n, -1)[m:n - m]
  delays = np.arange(-m, m + 1)
  err = np.array([np.nanmean((b - a[m - d:n - m - d]) ** 2) for d in delays])
  if not np.isfinite(err).any():
    return float("nan")
  i = int(np.nanargmin(err))
  if 0 < i < len(err) - 1 and np.isfinite(err[i - 1:i + 2]).all():
    curve = err[i - 1] - 2 * err[i] + err[i + 1]
    if curve > 0:
      return float(delays[i] + 0.5 * (err[i - 1] - err[i + 1]) / curve)
  return float(delays[i])
