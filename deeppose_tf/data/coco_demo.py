"""A small COCO-keypoints dataset to try the `coco` path without labelling anything: stick
figures on a custom 5-joint skeleton ("head", "left_hand", "right_hand", "left_foot",
"right_foot"), two people in every photo, one crowd entry and one person with no labelled
keypoint, written as CVAT or Label Studio would export them.

  python -m deeppose_tf.data.coco_demo --output=runs/coco_demo [--num_images=200 --seed=0]

writes OUTPUT/images/img_000.jpg ... and OUTPUT/annotations.json. BUILD.md ("Your own data")
takes it through prepare, train, evaluate and predict; the tests use it as their fixture.
"""

from __future__ import annotations

import json
import os

import numpy as np

JOINTS = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]
# 1-based, as COCO writes them.
EDGES = [[1, 2], [1, 3], [1, 4], [1, 5]]
# OKS sigmas for its joints (COCO has no hands or feet: its wrist and ankle values).
SIGMAS = [0.079, 0.062, 0.062, 0.089, 0.089]
# The torso diameter's pair (there is no shoulder or hip): prepare's --torso.
TORSO = "left_hand,right_foot"
COLOURS = [(255, 60, 60), (60, 255, 60), (60, 60, 255), (255, 255, 60), (60, 255, 255)]


def person(rng: np.random.RandomState, cx: float, cy: float, size: float) -> np.ndarray:
  """(5, 2) joints of a figure centred near (cx, cy), `size` pixels tall: hands and feet at
  random spreads, the whole figure turned by up to 25 degrees. The person's own left is on
  the image's right (they face the camera)."""
  hand = [rng.uniform(0.15, 0.45), rng.uniform(-0.35, 0.2)]
  other = [rng.uniform(0.15, 0.45), rng.uniform(-0.35, 0.2)]
  shape = np.array([[0.0, -0.45], [hand[0], hand[1]], [-other[0], other[1]],
                    [rng.uniform(0.05, 0.3), 0.45], [-rng.uniform(0.05, 0.3), 0.45]])
  a = np.deg2rad(rng.uniform(-25, 25))
  rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
  return (shape @ rot.T * size + [cx, cy]).astype(np.float32)


def draw(image, joints: np.ndarray) -> None:
  from PIL import ImageDraw
  d = ImageDraw.Draw(image)
  for a, b in EDGES:
    d.line([tuple(joints[a - 1]), tuple(joints[b - 1])], fill=(230, 230, 230), width=3)
  for (x, y), c in zip(joints, COLOURS):
    d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=c)


def make(root: str, num_images: int = 12, seed: int = 0, size=(160, 120)) -> str:
  """Writes root/images/img_*.jpg and root/annotations.json; returns the json's path.

  Each image holds two labelled people side by side (the second with its right foot not
  labelled, v = 0). Image 1 also has a crowd entry, image 2 a person with no labelled
  keypoint (both skipped, and counted, when prepared)."""
  from PIL import Image
  rng = np.random.RandomState(seed)
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  w, h = size
  images, anns = [], []
  for i in range(num_images):
    im = Image.new("RGB", size, tuple(int(v) for v in rng.randint(0, 60, 3)))
    name = f"img_{i:03d}.jpg"
    for p, cx in enumerate((0.3 * w, 0.7 * w)):
      joints = person(rng, cx + rng.uniform(-5, 5), h / 2 + rng.uniform(-5, 5),
                      rng.uniform(0.55, 0.75) * h)
      draw(im, joints)
      v = np.full(5, 2)
      if p == 1:
        v[4] = 0
      kp = np.concatenate([joints, v[:, None]], 1)
      kp[v == 0, :2] = 0
      lo, hi = joints.min(0), joints.max(0)
      x0, y0 = max(float(lo[0]) - 4, 0.0), max(float(lo[1]) - 4, 0.0)
      bbox = [x0, y0, min(float(hi[0]) + 4, w) - x0, min(float(hi[1]) + 4, h) - y0]
      anns.append({"id": 100 * i + p + 1, "image_id": i + 1, "category_id": 1,
                   "keypoints": [round(float(v), 2) for v in kp.ravel()],
                   "num_keypoints": int((v > 0).sum()), "bbox": bbox,
                   "area": bbox[2] * bbox[3], "iscrowd": 0})
    if i == 0:
      anns.append({"id": 1_000_001, "image_id": 1, "category_id": 1, "keypoints": [0] * 15,
                   "num_keypoints": 0, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 1})
    if i == 1:
      anns.append({"id": 1_000_002, "image_id": 2, "category_id": 1, "keypoints": [0] * 15,
                   "num_keypoints": 0, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0})
    im.save(os.path.join(root, "images", name), quality=92)
    images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
  data = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "figure", "supercategory": "figure",
                          "keypoints": JOINTS, "skeleton": EDGES}]}
  path = os.path.join(root, "annotations.json")
  from deeppose_tf import atomic
  atomic.write_text(path, json.dumps(data))
  return path


def main(argv):
  from absl import app, flags
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  if f.num_images < 1:
    raise app.UsageError(f"--num_images={f.num_images}: at least 1")
  path = make(f.output, f.num_images, f.seed)
  print(f"wrote {f.num_images} images with {2 * f.num_images} people to "
        f"{os.path.join(f.output, 'images')} and their annotations to {path}\nprepare them:\n"
        f"  python -m deeppose_tf.data.prepare --dataset=coco --annotations={path} "
        f"--images={os.path.join(f.output, 'images')} --data_dir=DIR --torso={TORSO} "
        f"--oks_sigmas={','.join(str(s) for s in SIGMAS)}")


if __name__ == "__main__":
  from absl import flags
  flags.DEFINE_string("output", None, "Folder for images/ and annotations.json.")
  flags.DEFINE_integer("num_images", 200, "Photos to draw (two people each).")
  flags.DEFINE_integer("seed", 0, "Random seed of the figures.")
  flags.mark_flag_as_required("output")
  from deeppose_tf import cli
  cli.run(main, "coco_demo")
