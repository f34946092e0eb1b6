"""Heads: backbone `Features` -> "joints" (B, K, 2), box-normalized (x, y) in [-0.5, 0.5]^2,
one module each, joined in the registry `HEADS` {name: base.Head}:

  fc        the paper's: fully connected layers on the backbone's top map, a linear 2K fc8.
  integral  heatmap logits fused from the pyramid, decoded by soft-argmax (expected position).
  heatmap   the integral head's layers and training, decoded at each heatmap's peak.
  tompson   Tompson et al. 2014: detector heatmaps at stride 4, the spatial model over them
            and the peak decoding. Needs the skeleton's edges.

A new head is one module with its build function and a `HEAD` entry, plus one line here.
"""

from typing import Dict

from deeppose_tf.models.heads import fc, heatmap, integral, tompson
from deeppose_tf.models.heads.base import Head

HEADS: Dict[str, Head] = {
    "fc": fc.HEAD,
    "integral": integral.HEAD,
    "heatmap": heatmap.HEAD,
    "tompson": tompson.HEAD,
}
