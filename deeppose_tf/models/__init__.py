"""The networks, keras-hub style, knowing nothing of data or training:

  layers.py     the blocks they share (Features, conv-BN-ReLU, soft-argmax, peak decoders)
  backbones/    one module per backbone and the registry BACKBONES
  heads/        one module per head and the registry HEADS
  builder.py    ModelConfig and build_regressor, which joins a backbone and a head

This folder also holds the model bundled with the package (deeppose_lspet.tflite, its
sidecar and MODEL_CARD.md), which the predict command uses by default.
"""
