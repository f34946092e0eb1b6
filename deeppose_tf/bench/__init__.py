"""Performance benchmarks: a readable table on stdout and JSON (`python -m deeppose_tf.bench`).

Every figure is measured in the same run as the machine's fp32 matmul rate, so it is also
reported against that peak (absolute times on shared machines drift), or against another
figure of the same run. Each benchmark returns `Result` records (value, unit, and its ratios
against their references); `Report` renders them as the table and as the JSON.

Every section uses the network of --backbone/--head/--heatmap_stride/--head_channels (and
--input_size/--width/--fc_units); the training sections (train, e2e) train it as the trainer
does (model.training_model when --heatmap_loss_weight > 0, trainer.FitConfig's compile args).
  peak      (always) the fp32 matmul rate, at the start and again at the end
  train     train_step.py: the stage-1 train step on in-memory tensors, fp32 and bfloat16
            alternating on the same batch and weights, each against its own matmul peak
            (forward + backward = 3 x forward FLOPs), and bf16 / fp32
  pipeline  input_pipeline.py: tf.data throughput of the stage-1 and refinement pipelines
            alone, steady state (cache full), against the fp32 train step
  e2e       end_to_end.py: training through the real pipeline against training on in-memory
            tensors, alternating, for stage 1 and a refinement stage
  infer     inference.py: cascade latency and throughput against the FLOPs bound (Keras,
            SavedModel, bfloat16, TFLite fp32/float16/int8), a batch-1 profile and the cost
            against stages and joints; random weights and images, no data needed
  quant     accuracy.py: a trained cascade's (--workdir) accuracy as Keras fp32 / bfloat16
            and TFLite fp32 / int8
  model     model_file.py: load time and batch-1 latency of --models as predict runs them
  detect    detector.py: each --detectors' time per image and predict's images/s with it
            (a small person in a large canvas), against --boxes=full and --boxes=auto
Data of pipeline and e2e (inputs.py): --data_dir (prepared TFRecords), else the first
--num_train training images of --dataset read from --source_dir, else --num_train synthetic
images.
"""

from deeppose_tf.bench.accuracy import accuracy_results, quantized_accuracy
from deeppose_tf.bench.options import AUGMENTS, BENCHMARKS, BenchConfig
from deeppose_tf.bench.results import Ratio, Report, Result, table, to_json
from deeppose_tf.bench.runner import run, run_config
from deeppose_tf.bench.train_step import precision_setups

__all__ = ["AUGMENTS", "BENCHMARKS", "BenchConfig", "Ratio", "Report", "Result",
           "accuracy_results", "precision_setups", "quantized_accuracy", "run", "run_config",
           "table", "to_json"]
