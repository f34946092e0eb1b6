"""Exports a whole cascade: a TF Serving SavedModel and a builtin-ops TFLite model.

  python -m deeppose_tf.export --workdir=runs/lsp --export_dir=serving/deeppose [--version=N]
      [--precision=float32|bfloat16]
  python -m deeppose_tf.export --workdir=runs/lsp --export_dir=deeppose.tflite --format=tflite \
      [--quantize=none|float16|int8] [--tflite_size=440,440]

(--output is the former name of --export_dir and still works.)
--precision=bfloat16 exports networks that compute in bfloat16 (model.with_precision: about
2x faster on CPUs with AVX512-BF16 or AMX; measure its accuracy with
`evaluate --precision=bfloat16` first).

Both formats wrap `Cascade.predict`, the package's only inference path: no crop or stage logic
is repeated here. Poses are (x, y) in the pixels of the image as given.

SavedModel signatures (OUT/<version>/, the layout TF Serving polls):
  serving_default(image_bytes: string [B])                       full-image initial boxes
  predict_bytes_with_boxes(image_bytes: string [B], boxes: float32 [B, 4])
  predict_images(images: uint8 [B, H, W, 3], boxes: float32 [B, 4])
  -> joints float32 [B, K, 2] (last stage), joints_per_stage float32 [B, S, K, 2].
A signature cannot have optional inputs, hence one signature per input set; a box whose width
or height is <= 0 also means "the full image", so one batch can mix boxed and unboxed images.
Boxes are (cx, cy, w, h) in each image's own pixels. Encoded images must be JPEG or PNG of at
most records.MAX_IMAGE_PIXELS; the size is read from the header before any pixel is decoded,
and each image is cropped at its own size (memory follows the request's pixels).
The module also carries joint_names() -> string [K], skeleton_name() -> string,
left_right() -> string (the labels' convention, labels.py: "person" or "observer") and the
asset assets/joint_names.txt (one name per line, in output order).

TFLite (one signature, fixed size): image float32 [1, H, W, 3] in [0, 255], box float32 [1, 4]
-> joints [1, K, 2], joints_per_stage [1, S, K, 2]. Put smaller images in the top-left corner
of a zero canvas (coordinates unchanged); tflite_cascade.fit_to_canvas also shrinks larger
ones.

Modules: inputs (request decoding, limits, boxes), saved_model (the TF Serving SavedModel),
tflite (conversion and quantization), __main__ (the command line).
"""

from deeppose_tf.export.inputs import (JPEG_MAGIC, MAX_BOX_COORD, PNG_MAGIC, crop_each,
                                       decode_batch, declared_size, resolve_boxes)
from deeppose_tf.export.saved_model import (CascadeModule, export_saved_model,
                                            save_saved_model, serving_outputs)
from deeppose_tf.export.tflite import (QUANTIZE, convert_tflite, export_tflite,
                                       representative_images)

__all__ = ["CascadeModule", "JPEG_MAGIC", "MAX_BOX_COORD", "PNG_MAGIC", "QUANTIZE",
           "convert_tflite", "crop_each", "decode_batch", "declared_size", "export_saved_model",
           "export_tflite", "representative_images", "resolve_boxes", "save_saved_model",
           "serving_outputs"]
