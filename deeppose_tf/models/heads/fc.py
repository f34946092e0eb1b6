"""The paper's head: flatten the backbone's top map, fully connected layers (fc6, and fc7 on
AlexNet as the paper), a linear 2K output fc8 -> "joints" (B, K, 2) box-normalized."""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from deeppose_tf.models.backbones import BACKBONES
from deeppose_tf.models.heads.base import Head


def fc(x, num_joints: int, fc_units: int, dropout: float, mean_pose: Optional[np.ndarray],
       hidden: int = 1, output_init: str = "mean_pose") -> keras.KerasTensor:
  """Flatten -> `hidden` (1 or 2) Dense(fc_units) ReLU layers fc6[, fc7] with dropout ->
  linear 2K fc8. output_init 'mean_pose': zero kernel, bias the mean pose (B, K, 2) (zeros
  when None); 'default': Keras' glorot init (the paper)."""
  if hidden not in (1, 2):
    raise ValueError(f"the fc head has 1 or 2 hidden layers (fc6, fc7), got {hidden}")
  x = keras.layers.Flatten(name="flatten")(x)
  for i in range(6, 6 + hidden):
    x = keras.layers.Dense(fc_units, activation="relu", name=f"fc{i}")(x)
    if dropout > 0:
      x = keras.layers.Dropout(dropout, name=f"drop{i}")(x)
  if output_init == "mean_pose":
    bias = np.zeros(2 * num_joints, np.float32) if mean_pose is None else np.asarray(
        mean_pose, np.float32).reshape(2 * num_joints)
    out = keras.layers.Dense(2 * num_joints, kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant(bias), name="fc8",
                             dtype="float32")(x)
  else:
    out = keras.layers.Dense(2 * num_joints, name="fc8", dtype="float32")(x)
  return keras.layers.Reshape((num_joints, 2), name="joints", dtype="float32")(out)


HEAD = Head(lambda f, c, mean_pose, edges: fc(
    f.top, c.num_joints, c.fc_units, c.dropout, mean_pose,
    hidden=BACKBONES[c.backbone].fc_layers, output_init=c.output_init))
