"""deeppose_tf: DeepPose (Toshev & Szegedy, CVPR 2014) in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
