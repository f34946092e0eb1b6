"""The tests' COCO-keypoints fixture: the package's demo dataset (deeppose_tf/data/coco_demo.py),
a custom 5-joint skeleton with two people per image, a crowd entry and an unlabelled person."""

from deeppose_tf.data.coco_demo import EDGES, JOINTS, SIGMAS, TORSO, make  # noqa: F401
