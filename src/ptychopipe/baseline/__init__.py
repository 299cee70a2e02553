"""The iterative reference: pty-chi reconstructs the same test patterns as the network, and
both are scored by the same functions. The ``baseline`` stage that reads and writes the
files is :mod:`ptychopipe.stages.baseline`.

- :mod:`~ptychopipe.baseline.ptychi`: the adapter — importing pty-chi (an optional extra),
  its conventions (data, FFT, probe, positions, object buffer) and its task.
- :mod:`~ptychopipe.baseline.reconstruction`: the reconstruction with snapshots, scored in
  data space by the pipeline's forward model (the content of baseline.h5).
- :mod:`~ptychopipe.baseline.comparison`: the network against the iterative reference
  (``ptychopipe baseline-compare``, baseline_comparison.json and its figure).
"""

from .comparison import (FINAL_QUALITY_TOLERANCE, benchmark_seconds, compare_run, plot_comparison,
                         read_baseline_comparison, time_to_reach)
from .ptychi import (BUFFER_MARGIN_PX, ENGINES, NOISE_MODELS, RPIE_ALPHA, RPIE_STEP, VERIFIED, BaselineError,
                     BaselineUnavailable, Buffer, GaussianBlur, available, build_task, ensure_torchvision,
                     import_ptychi, object_buffer, on_canvas, task_loss, task_object, to_ptychi_positions,
                     to_ptychi_probe)
from .reconstruction import (INITIALS, LAMBDA_FLOOR, initial_object, poisson_deviance, predicted_counts, reconstruct,
                             snapshot_epochs)

__all__ = [
    "BUFFER_MARGIN_PX", "ENGINES", "FINAL_QUALITY_TOLERANCE", "INITIALS", "LAMBDA_FLOOR", "NOISE_MODELS", "RPIE_ALPHA",
    "RPIE_STEP", "VERIFIED", "BaselineError", "BaselineUnavailable", "Buffer", "GaussianBlur", "available",
    "benchmark_seconds", "build_task", "compare_run", "ensure_torchvision", "import_ptychi",
    "initial_object", "object_buffer", "on_canvas", "plot_comparison", "poisson_deviance", "predicted_counts",
    "read_baseline_comparison", "reconstruct", "snapshot_epochs", "task_loss",
    "task_object", "time_to_reach", "to_ptychi_positions", "to_ptychi_probe",
]
