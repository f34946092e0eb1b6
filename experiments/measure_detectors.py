"""Measures the person detectors of deeppose_tf.predict.detectors on annotated photos, to choose
each one's default score threshold and box growth (the constants at the top of that module).

For each detector and N photos of a split (default: the first 300 records of the prepared
LSPET `val` split, the split one may tune on; never `test`):
  found           % of photos with at least one box
  best_holds_all  % where the best box holds every annotated joint
  some_holds_all  % where some box does
  boxes           boxes per photo (LSPET annotates one person; others may stand nearby)
  framing         median of (best box's longer side / the annotated joints' longer extent),
                  photos where one was found: LSP frames its people at about 1.3
                  (geometry.FRAMING_GROW), which is what the cascade was trained on
  blank, noise    boxes on a blank grey and on a uniform-noise 320 x 240 image
  ms              milliseconds per photo (decode excluded), one interpreter thread
for every threshold of a grid and every growth in 1.1..1.6. The model runs once per photo:
`candidates` decodes its output before any threshold, `select` applies each threshold.
(Person-free parts of LSPET photos do not make negatives: looked at, most hold spectators.)

--pose_images=M (> 0) also runs a pose model (--pose_model, default the bundled one) on the
first M photos in each detector's best box at its default threshold (the whole image where
it finds nobody, as the predict command does) for each of --pose_growths, and in the whole
image (the box LSP is evaluated with): strict PCP@0.5 and PDJ@0.2 of its last stage.

  taskset -c 1 python experiments/measure_detectors.py --num_images=300 --pose_images=100 \
      --pose_growths= --output=experiments/measure_detectors.json          # 3.5 min
  taskset -c 1 python experiments/measure_detectors.py --num_images=300 --canvas=3 \
      --detectors=blazepose,movenet --pose_images=100 --pose_growths= \
      --output=experiments/measure_detectors_canvas3.json                  # 3.5 min

Measured on one core of a 2-core CPU (the other one training), the first 300 records of the
prepared LSPET val split, each detector at its default (full grids in the JSON files):

  framed LSPET photos        thresh growth found best%  some%  boxes framing  ms
    hog                       0.3    1.4   51.0  14.0   18.7   0.74   2.05   168
    blazepose                 0.3    1.4   97.3  89.0   92.3   1.10   2.01    22
    movenet                   0.1    1.2   99.3  83.0   93.0   1.70   1.43    38
  on a 3x grey canvas (the person a third of the frame)
    hog (earlier run, same defaults)     31.3  11.7   13.3   0.39   2.22  1199
    blazepose                 0.3    1.4   55.0  50.3   50.3   0.58   2.77    26
    movenet                   0.1    1.2   84.7  64.7   66.7   0.97   1.47    43
    movenet --movenet_input_size=384     93.0  73.7   79.0   1.24   1.43   109

  The bundled cascade (strict PCP@0.5 / PDJ@0.2 of its last stage, first 100 photos):
                     whole image   hog           blazepose     movenet
    framed           0.391/0.485   0.292/0.377   0.378/0.480   0.368/0.468
    3x canvas        0.283/0.380   0.272/0.360   0.327/0.395   0.341/0.423
  (LSPET photos are framed around their person, so the whole image is the right box there;
  on the canvas a detector's box wins. Between growths 1.1 and 1.6 the framed PCP moved by
  no more than +-0.02, its noise: the cascade reframes the person itself.)
  No detector gave a box on the blank or the noise image.
"""

import json
import os
import time

import numpy as np
from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("DEEPPOSE_SHARED", os.path.join(REPO, "..", "shared"))

flags.DEFINE_string("data_dir", "/work/runs/lsp_imagenet/lspet",
                    "Prepared TFRecords (python -m deeppose_tf.data.prepare) of LSP-type photos.")
flags.DEFINE_string("split", "val", "Split of --data_dir to measure on (tune on val only).")
flags.DEFINE_string("lspet_dir", None,
                    "Instead of --data_dir: an LSPET folder (images/, joints.mat); its `val` "
                    "split is read as deeppose_tf.data.lsp.read_lspet makes it.")
flags.DEFINE_integer("num_images", 300, "Photos to measure on (the split's first N records).")
flags.DEFINE_list("detectors", ["hog", "blazepose", "movenet"],
                  "Detectors to measure (ssd needs --ssd_model).")
flags.DEFINE_string("blazepose_model",
                    os.path.join(SHARED, "detectors", "blazepose_pose_detection.tflite"),
                    "BlazePose person detector .tflite.")
flags.DEFINE_string("movenet_model",
                    os.path.join(SHARED, "detectors", "movenet_multipose_lightning_fp16.tflite"),
                    "MoveNet MultiPose Lightning .tflite.")
flags.DEFINE_string("ssd_model", None, "An SSD .tflite with TFLite_Detection_PostProcess.")
flags.DEFINE_integer("movenet_input_size", None, "MoveNet's longer input side (default 256).")
flags.DEFINE_list("growths", ["1.1", "1.2", "1.25", "1.3", "1.4", "1.5", "1.6"],
                  "Box growths to try.")
flags.DEFINE_float("canvas", 1.0, "> 1: each photo is pasted at a seeded random place on a grey "
                   "canvas this many times its size (the person a third of the frame at 3): "
                   "photos not framed around their person, as a user's may be.")
flags.DEFINE_integer("pose_images", 0, "Also score a pose model on the first M photos "
                     "in each detector's boxes (0: no).")
flags.DEFINE_string("pose_model", None, "Pose model for --pose_images (default: bundled).")
flags.DEFINE_list("pose_growths", ["1.2", "1.4", "1.6"], "Growths for --pose_images.")
flags.DEFINE_string("output", None, "JSON file for every number measured.")
FLAGS = flags.FLAGS

THRESHOLDS = {
    "hog": [0.0, 0.3, 0.5, 0.8, 1.0],
    "blazepose": [0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7],
    "movenet": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4],
    "ssd": [0.3, 0.4, 0.5, 0.6],
}


def photos():
  """(image uint8 (h, w, 3), joints (K, 2) image px, visible (K,) bool) of the first N,
  each pasted on a larger canvas when --canvas > 1."""
  rng = np.random.default_rng(0)
  for image, joints, visible in framed_photos():
    if FLAGS.canvas <= 1:
      yield image, joints, visible
      continue
    h, w = image.shape[:2]
    big = np.full((int(round(h * FLAGS.canvas)), int(round(w * FLAGS.canvas)), 3), 128,
                  np.uint8)
    y, x = rng.integers(0, big.shape[0] - h + 1), rng.integers(0, big.shape[1] - w + 1)
    big[y:y + h, x:x + w] = image
    yield big, joints + np.float32([x, y]), visible


def framed_photos():
  import io
  from PIL import Image
  n = FLAGS.num_images
  if FLAGS.lspet_dir:
    from deeppose_tf.data import lsp
    recs = lsp.read_lspet(FLAGS.lspet_dir, "val")
    for i, rec in enumerate(recs):
      if i >= n:
        return
      yield (np.asarray(Image.open(io.BytesIO(rec.image)).convert("RGB")), rec.joints,
             rec.visible > 0)
    return
  import tensorflow as tf
  from deeppose_tf.data import records
  k = records.read_meta(FLAGS.data_dir, FLAGS.split)["num_joints"]
  ds = tf.data.TFRecordDataset(records.list_shards(FLAGS.data_dir, FLAGS.split)).take(n)
  for ex in ds.map(lambda s: records.parse(s, k)).as_numpy_iterator():
    yield (np.asarray(Image.open(io.BytesIO(ex["image"])).convert("RGB")), ex["joints"],
           ex["visible"] > 0)


def holds(boxes, joints, visible):
  """(P,) bool: box p holds every annotated joint."""
  if not len(boxes):
    return np.zeros((0,), bool)
  pts = joints[visible]
  lo = boxes[:, None, :2] - boxes[:, None, 2:] / 2
  hi = boxes[:, None, :2] + boxes[:, None, 2:] / 2
  return np.all((pts[None] >= lo) & (pts[None] <= hi), axis=(1, 2))


def measure(name, data):
  from deeppose_tf.predict import detectors as D
  model = {"blazepose": FLAGS.blazepose_model, "movenet": FLAGS.movenet_model,
           "ssd": FLAGS.ssd_model}.get(name)
  det = D.make_detector(name, model, num_threads=1, input_size=(
      FLAGS.movenet_input_size if name == "movenet" else None))
  thresholds = sorted(set(THRESHOLDS[name]) | {det.default_threshold})
  growths = sorted({float(g) for g in FLAGS.growths} | {det.default_growth})
  det.detect(data[0][0])  # warm up (first allocation)
  selected, seconds = [], 0.0
  for image, joints, visible in data:
    start = time.perf_counter()
    cands = det.candidates(image)
    det.select(cands, det.default_threshold)  # the time detect() takes
    seconds += time.perf_counter() - start
    selected.append({t: det.select(cands, t) for t in thresholds})
  blank = det.detect(np.full((240, 320, 3), 128, np.uint8))[0]
  noise = det.detect(np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8))[0]
  n = len(data)
  grid = []
  for t in thresholds:
    for g in growths:
      found = best = some = boxes = 0
      framing = []
      for (image, joints, visible), sel in zip(data, selected):
        b = D.grow_boxes(sel[t][0], g)
        boxes += len(b)
        if not len(b):
          continue
        found += 1
        held = holds(b, joints, visible)
        best += bool(held[0])
        some += bool(held.any())
        framing.append(max(b[0, 2:]) / max(1.0, max(np.ptp(joints[visible], axis=0))))
      grid.append({"threshold": t, "growth": g, "found": 100.0 * found / n,
                   "best_holds_all": 100.0 * best / n, "some_holds_all": 100.0 * some / n,
                   "boxes": boxes / n,
                   "framing": float(np.median(framing)) if framing else None})
  return {"default_threshold": det.default_threshold, "default_growth": det.default_growth,
          "ms_per_image": 1000.0 * seconds / n, "num_images": n,
          "blank_image_boxes": int(len(blank)), "noise_image_boxes": int(len(noise)),
          "grid": grid, "best_boxes": [sel[det.default_threshold][0][:1] for sel in selected]}


def pose_scores(data, results):
  """Strict PCP@0.5 and PDJ@0.2 of the pose model's last stage on the first --pose_images
  photos, in the whole image and in each detector's grown best box."""
  from deeppose_tf import metrics
  from deeppose_tf.predict import detect, detectors as D, models
  model = models.load(FLAGS.pose_model, num_threads=1)
  sub = data[:FLAGS.pose_images]
  true = np.stack([d[1] for d in sub])
  visible = np.stack([d[2] for d in sub]).astype(np.float32)
  full = [detect.full_box(*image.shape[:2])[0] for image, _, _ in sub]

  def score(boxes):
    pred = np.stack([model.predict([image], box[None])[0, -1]
                     for (image, _, _), box in zip(sub, boxes)])
    return {"pcp": metrics.pcp(pred, true, visible, model.skeleton)["mean"],
            "pdj_0.2": metrics.pdj_at(metrics.pdj(pred, true, visible, model.skeleton), 0.2)}

  out = {"model": FLAGS.pose_model or "bundled", "num_images": len(sub),
         "full_image": score(full)}
  print(f"\npose model {out['model']} on {len(sub)} photos: whole image PCP "
        f"{out['full_image']['pcp']:.3f} PDJ@0.2 {out['full_image']['pdj_0.2']:.3f}")
  for name, res in results["detectors"].items():
    for g in sorted({float(v) for v in FLAGS.pose_growths} | {res["default_growth"]}):
      boxes = [D.grow_boxes(b, g)[0] if len(b) else f
               for b, f in zip(res["best_boxes"], full)]
      out[f"{name}@{g:g}"] = r = score(boxes)
      print(f"  {name:>9} growth {g:4.2f}: PCP {r['pcp']:.3f} PDJ@0.2 {r['pdj_0.2']:.3f}")
  return out


def row(r, mark=""):
  framing = "-" if r["framing"] is None else f"{r['framing']:.2f}"
  return (f"{r['threshold']:>6g} {r['growth']:>5.2f} {r['found']:6.1f} "
          f"{r['best_holds_all']:6.1f} {r['some_holds_all']:6.1f} {r['boxes']:5.2f} "
          f"{framing:>7} {mark}")


def main(_):
  data = list(photos())
  print(f"{len(data)} photos from "
        f"{FLAGS.lspet_dir or FLAGS.data_dir + ' (' + FLAGS.split + ')'}"
        + (f" on a {FLAGS.canvas:g}x canvas" if FLAGS.canvas > 1 else ""))
  results = {"num_images": len(data), "source": FLAGS.lspet_dir or FLAGS.data_dir,
             "canvas": FLAGS.canvas,
             "split": "val" if FLAGS.lspet_dir else FLAGS.split, "detectors": {}}
  header = "thresh growth  found  best%  some%  boxes framing"
  for name in FLAGS.detectors:
    res = measure(name, data)
    results["detectors"][name] = res
    t0, g0 = res["default_threshold"], res["default_growth"]
    print(f"\n{name}: {res['ms_per_image']:.1f} ms per photo; boxes on a blank image: "
          f"{res['blank_image_boxes']}, on noise: {res['noise_image_boxes']}")
    print(header)
    for r in res["grid"]:
      if r["growth"] == g0 or r["threshold"] == t0:
        print(row(r, "*" if (r["growth"], r["threshold"]) == (g0, t0) else ""))
  print("\ndefaults: detector  thresh growth  found  best%  some%  framing  ms")
  for name, res in results["detectors"].items():
    r = next(r for r in res["grid"] if r["threshold"] == res["default_threshold"]
             and r["growth"] == res["default_growth"])
    print(f"  {name:>9} {r['threshold']:6g} {r['growth']:5.2f} {r['found']:6.1f} "
          f"{r['best_holds_all']:6.1f} {r['some_holds_all']:6.1f} {r['framing'] or 0:7.2f} "
          f"{res['ms_per_image']:5.1f}")
  if FLAGS.pose_images > 0:
    results["pose"] = pose_scores(data, results)
  for res in results["detectors"].values():
    res.pop("best_boxes")
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(results, f, indent=1)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
