"""deeppose_tf.predict.track: identities across video frames and 1 Euro smoothing (numpy only).

Poses are made up in image pixels (x right, y down); frame n of a 30 fps video is at
t = n / 30 seconds.
"""

import numpy as np
import pytest

from deeppose_tf.predict import track

FPS = 30.0
K = 14


def _box(cx, cy, w=80.0, h=160.0):
  return np.array([cx, cy, w, h], np.float64)


def _pose(box, rng=None):
  """(K, 2) joints spread inside a box (cx, cy, w, h)."""
  rng = rng or np.random.default_rng(0)
  return box[:2] + (rng.uniform(-0.4, 0.4, (K, 2)) * box[2:])


# ------------------------------------------------------------------ Tracker: identities


def _crossing(tracker, dy=0.0, size_b=(80.0, 160.0), noise=1.0, seed=0, frames=30):
  """A walks right from x=100, B walks left from x=405, both 10 px/frame: they pass each
  other around frame 15 (closest: 5 px apart). dy: B's vertical offset (farther back or
  nearer); size_b: B's box (w, h). Box noise: `noise` px on the centre, half on the size.
  Rows are shuffled every frame, so row order tells the tracker nothing.
  Returns ids (frames, 2) in the order (A, B)."""
  rng = np.random.default_rng(seed)
  jiggle = np.array([1, 1, 0.5, 0.5])
  out = []
  for n in range(frames):
    a = _box(100 + 10 * n, 200) + rng.normal(0, noise, 4) * jiggle
    b = _box(405 - 10 * n, 200 + dy, *size_b) + rng.normal(0, noise, 4) * jiggle
    order = rng.permutation(2)
    boxes = np.stack([a, b])[order]
    poses = np.stack([_pose(a, rng), _pose(b, rng)])[order]
    ids, smoothed = tracker.update(boxes, poses, t=n / FPS)
    assert ids.shape == (2,) and ids.dtype == np.int64 and smoothed.shape == (2, K, 2)
    out.append(ids[np.argsort(order)])
  return np.array(out)


def _kept(ids):
  return len(set(ids[:, 0])) == 1 and len(set(ids[:, 1])) == 1 and sorted(ids[0]) == [0, 1]


def test_two_people_crossing_keep_their_ids():
  for seed in range(5):
    # the same size on the same line: only their motion tells them apart
    assert _kept(_crossing(track.Tracker(), seed=seed))
    # one farther back (higher in the image, smaller), with noisier boxes
    assert _kept(_crossing(track.Tracker(), dy=-20, size_b=(60, 120), noise=2.0, seed=seed))
  # The check can fail: IoU against the last boxes alone (no constant-velocity prediction)
  # swaps the first pair where they cross, each one's last box fitting the other's new box
  # better.
  for seed in range(5):
    assert not _kept(_crossing(track.Tracker(predict_motion=False), seed=seed))


def test_people_moving_apart_and_a_newcomer():
  tr = track.Tracker(max_age=5)
  seen = []
  for n in range(30):
    boxes = [_box(100 + 3 * n, 150 + 2 * n), _box(400 - 4 * n, 250, 120, 240)]
    if n >= 20:  # a third person walks in
      boxes.append(_box(600, 100 + 5 * n, 60, 120))
    ids, _ = tr.update(np.stack(boxes), None, t=n / FPS)
    seen.append(list(ids))
  assert all(s[:2] == [0, 1] for s in seen)
  assert all(s[2] == 2 for s in seen[20:])


def test_a_person_away_longer_than_max_age_gets_a_new_id():
  max_age = 5
  for away, same in ((max_age, True), (max_age + 1, False)):
    tr = track.Tracker(max_age=max_age)
    stay, goer = _box(100, 200), _box(400, 200)
    n = 0
    for _ in range(10):
      ids, _ = tr.update(np.stack([stay, goer]), None, t=n / FPS)
      n += 1
    assert list(ids) == [0, 1]
    for _ in range(away):  # the goer is out of the picture
      ids, _ = tr.update(stay[None], None, t=n / FPS)
      n += 1
      assert list(ids) == [0]
    ids, _ = tr.update(np.stack([stay, goer]), None, t=n / FPS)
    assert list(ids) == ([0, 1] if same else [0, 2]), (away, ids)
  # frames without anyone: the tracks age out all the same
  tr = track.Tracker(max_age=2)
  tr.update(stay[None], None, t=0.0)
  for n in range(1, 4):
    ids, poses = tr.update(np.zeros((0, 4)), np.zeros((0, 3, K, 2)), t=n / FPS)
    assert ids.shape == (0,) and poses.shape == (0, 3, K, 2)
  assert tr.track_ids == []
  assert list(tr.update(stay[None], None, t=1.0)[0]) == [1]


# ------------------------------------------------------------ OneEuroFilter: jitter, lag


def _filtered(motion_px_per_frame, frames=90, sigma=3.0, seed=0, scale=None, filt=None):
  """(clean, raw, smoothed) joints (T, K, 2): a pose moving at a constant velocity, with
  Gaussian noise of `sigma` px per coordinate, through a OneEuroFilter at 30 fps."""
  rng = np.random.default_rng(seed)
  clean = (rng.uniform(100, 300, (K, 2))[None]
           + np.arange(frames)[:, None, None] * np.asarray(motion_px_per_frame, float))
  raw = clean + rng.normal(0, sigma, clean.shape)
  f = filt or track.OneEuroFilter()
  return clean, raw, np.stack([f(raw[n], n / FPS, scale=scale) for n in range(frames)])


def test_jitter_of_a_still_person_cut_at_least_3x():
  cuts = []
  for seed in range(3):
    _, raw, out = _filtered([0, 0], seed=seed)
    raw_j, out_j = track.jitter(raw), track.jitter(out)
    # 3 px noise per coordinate: frame-to-frame steps of mean 3 * sqrt(pi) = 5.32 px
    assert raw_j == pytest.approx(3 * np.sqrt(np.pi), rel=0.05)
    assert out_j <= raw_j / 3, (raw_j, out_j)
    cuts.append(raw_j / out_j)
  print(f"jitter: raw {raw_j:.2f} px, smoothed {out_j:.2f} px, cut {np.mean(cuts):.1f}x")


@pytest.mark.parametrize("speed", [5.0, 10.0, 20.0])
def test_lag_on_a_moving_person_within_2_frames(speed):
  direction = np.array([0.8, 0.6])  # unit vector: speed px per frame
  clean, raw, out = _filtered(speed * direction)
  # measured as on a real video, against the raw joints; and against the true motion (the
  # raw noise that passes through the filter pulls the first a little towards 0)
  lag, true_lag = track.lag_frames(raw, out), track.lag_frames(clean, out)
  print(f"lag at {speed:g} px/frame: {lag:.2f} frames against the raw joints, "
        f"{true_lag:.2f} against the true motion")
  assert 0 < lag <= 2.0 and 0 < true_lag <= 2.0, (lag, true_lag)
  # the smoothed joints still track the person: within ~lag * speed + noise of the truth
  assert np.nanmax(np.abs(out - raw)[30:]) < 2 * speed + 5 * 3
  # The check can fail: a plain 1 Hz low-pass (beta = 0) lags fps / (2 pi) = 4.8 frames.
  # (Without the spike gate, which restarts a joint left more than JUMP behind.)
  _, raw, slow = _filtered(speed * direction,
                           filt=track.OneEuroFilter(beta=0.0, jump=None))
  assert track.lag_frames(raw, slow) > 4


def test_spike_gate_hides_a_one_frame_spike_and_follows_a_real_jump_a_frame_late():
  rng = np.random.default_rng(3)
  still = rng.uniform(100, 300, (K, 2))
  frames = np.repeat(still[None], 12, 0) + rng.normal(0, 1.0, (12, K, 2))
  spiked = frames.copy()
  spiked[4, 2] += [60.0, 0.0]    # joint 2 jumps 60 px (0.3 x a 200 px person) for 1 frame
  spiked[7:, 5] += [0.0, 80.0]   # joint 5 really moves 80 px at frame 7 and stays there
  spiked[9, 8] += [70.0, 0.0]    # joint 8 wanders: 70 px one way, then 70 px the other,
  spiked[10, 8] += [-70.0, 0.0]  # neither confirming the other
  spiked[11, 8] += [0.0, 70.0]
  gated, plain = track.OneEuroFilter(), track.OneEuroFilter(jump=None)
  out = np.stack([gated(spiked[n], n / FPS, scale=200.0) for n in range(12)])
  off = np.stack([plain(spiked[n], n / FPS, scale=200.0) for n in range(12)])
  # the spike never shows (the joint stays where it was), and the filter alone lets it in
  assert np.abs(out[4, 2] - out[3, 2]).max() < 1.0
  assert np.abs(off[4, 2] - off[3, 2]).max() > 15.0
  # the real move: held at frame 7, there at frame 8 (confirmed: restarted at its value)
  assert np.abs(out[7, 5] - out[6, 5]).max() < 1.0
  np.testing.assert_allclose(out[8, 5], spiked[8, 5])
  # the wandering joint: held at most MAX_HOLD = 2 frames, then restarted where it is
  assert track.MAX_HOLD == 2
  np.testing.assert_allclose(out[9:11, 8], np.repeat(out[8:9, 8], 2, 0))
  np.testing.assert_allclose(out[11, 8], spiked[11, 8])
  # the joints that did not jump are filtered exactly as without the gate
  calm = [k for k in range(K) if k not in (2, 5, 8)]
  np.testing.assert_allclose(out[:, calm], off[:, calm])
  # the gate scales with the person: the same 60 px spike on a 400 px person passes it
  big = track.OneEuroFilter()
  out_big = np.stack([big(spiked[n], n / FPS, scale=400.0) for n in range(6)])
  assert np.abs(out_big[4, 2] - out_big[3, 2]).max() > 15.0


def test_lag_frames_and_jitter_measure_what_they_say():
  t = np.arange(60, dtype=float)
  ramp = 7.0 * t
  assert track.lag_frames(ramp, 7.0 * (t - 3)) == pytest.approx(3.0)
  assert track.lag_frames(ramp, 7.0 * (t - 1.25)) == pytest.approx(1.25)
  noisy = ramp + np.random.default_rng(0).normal(0, 3, t.shape)  # a noisy input: no bias
  assert track.lag_frames(noisy, 7.0 * (t - 1.5)) == pytest.approx(1.5, abs=0.1)
  wave = np.sin(t / 5)
  assert track.lag_frames(wave, np.sin((t + 2) / 5)) == pytest.approx(-2.0, abs=0.05)
  still = np.zeros((10, K, 2))
  still[1::2, :, 0] = 3.0  # 3 px back and forth
  assert track.jitter(still) == pytest.approx(3.0)


def test_nan_joints_pass_through_and_do_not_poison_later_frames():
  _, raw, clean_out = _filtered([5.0, 0.0])
  holed = raw.copy()
  holed[20:26, 3] = np.nan     # joint 3 missing for 6 frames
  holed[0, 5, 1] = np.nan      # joint 5's y missing at the start: the joint is missing
  f = track.OneEuroFilter()
  out = np.stack([f(holed[n], n / FPS) for n in range(len(holed))])
  assert np.isnan(out[20:26, 3]).all() and np.isnan(out[0, 5]).all()
  assert np.isfinite(out[26:]).all() and np.isfinite(out[1:, 5]).all()
  others = np.ones(K, bool)
  others[[3, 5]] = False
  np.testing.assert_array_equal(out[:, others], clean_out[:, others])  # untouched
  # joint 3 picks up where the person is now (not where it was 6 frames ago) ...
  assert np.abs(out[26, 3] - raw[26, 3]).max() < 10
  # ... and soon filters as if it had never been missing
  np.testing.assert_allclose(out[45:, 3], clean_out[45:, 3], atol=0.5)
  # through the Tracker too
  tr = track.Tracker()
  box = _box(200, 200)
  for n in range(40):
    _, sm = tr.update(box[None], holed[n][None, None], t=n / FPS)  # (1, S=1, K, 2)
    missing = np.isnan(holed[n]).any(-1)
    assert (np.isnan(sm[0, 0]).all(-1) == missing).all() and np.isfinite(sm[0, 0][~missing]).all()


def test_scale_invariance_4x_motion_with_a_4x_box_gives_4x_output():
  _, raw, _ = _filtered([6.0, -2.0], frames=60)
  outs = {}
  for s in (1.0, 4.0):
    f = track.OneEuroFilter()
    outs[s] = np.stack([f(s * raw[n], n / FPS, scale=s * 150.0) for n in range(len(raw))])
  np.testing.assert_allclose(outs[4.0], 4 * outs[1.0], rtol=1e-12)
  # The check can fail: without a scale, 4x faster pixels raise the cutoff: not 4x.
  plain = {}
  for s in (1.0, 4.0):
    f = track.OneEuroFilter()
    plain[s] = np.stack([f(s * raw[n], n / FPS) for n in range(len(raw))])
  assert np.abs(plain[4.0] - 4 * plain[1.0]).max() > 1.0
  # The Tracker passes the box's (w + h) / 2 as the scale: the same, per person.
  got = {}
  for s in (1.0, 4.0):
    tr = track.Tracker()
    seq = []
    for n in range(40):
      box = s * _box(100 + 5 * n, 200 + 2 * n)
      pose = s * (np.stack([_pose(_box(100 + 5 * n, 200 + 2 * n), np.random.default_rng(n))
                            for _ in range(2)]))  # S = 2 stages
      ids, sm = tr.update(box[None], pose[None], t=n / FPS)
      seq.append(sm[0])
    got[s] = np.array(seq)
  np.testing.assert_allclose(got[4.0], 4 * got[1.0], rtol=1e-9)


def test_smoothing_every_stage_and_off_switch():
  rng = np.random.default_rng(1)
  box = _box(200, 200)
  poses = [np.stack([_pose(box, rng), _pose(box, rng)])[None] for _ in range(5)]  # (1,2,K,2)
  on, off, last = track.Tracker(), track.Tracker(smooth=False), track.OneEuroFilter()
  for n, p in enumerate(poses):
    ids, sm = on.update(box[None], p.astype(np.float32), t=n / FPS)
    ids_off, raw = off.update(box[None], p, t=n / FPS)
    assert raw is p and list(ids) == list(ids_off) == [0]
    assert sm.dtype == np.float32 and sm.shape == p.shape
    # each stage filtered on its own: the last stage equals filtering it alone
    np.testing.assert_allclose(sm[0, -1], last(p[0, -1].astype(np.float32), n / FPS,
                                                scale=120.0), rtol=1e-6)
    if n == 0:
      np.testing.assert_allclose(sm, p, rtol=1e-6)  # a new track starts at its pose
    else:
      assert not np.allclose(sm, p)


def test_refuses_bad_input():
  f = track.OneEuroFilter()
  f(np.zeros((K, 2)), 0.0)
  with pytest.raises(ValueError, match="not after"):
    f(np.zeros((K, 2)), 0.0)
  with pytest.raises(ValueError, match="shape"):
    f(np.zeros((K, 3)), 1.0)
  with pytest.raises(ValueError, match="scale"):
    f(np.zeros((K, 2)), 1.0, scale=0.0)
  with pytest.raises(ValueError, match="min_cutoff"):
    track.OneEuroFilter(min_cutoff=0)
  with pytest.raises(ValueError, match="jump"):
    track.OneEuroFilter(jump=-0.1)
  with pytest.raises(ValueError, match="max_hold"):
    track.OneEuroFilter(max_hold=0)
  tr = track.Tracker()
  with pytest.raises(ValueError, match="poses"):
    tr.update(np.zeros((2, 4)) + 10, np.zeros((1, K, 2)), t=0.0)
  with pytest.raises(TypeError):
    track.Tracker(one_euro={"bogus": 1})
