"""Keep TensorFlow's start-up notices out of the stage logs.

TensorFlow 2.17+ prints its start-up notices through absl before logging is initialised, so
``TF_CPP_MIN_LOG_LEVEL`` does not silence them: "All log messages before absl::InitializeLog()",
"oneDNN custom operations are on", "Could not find cuda drivers", "failed call to cuInit" on
every machine without a GPU, "This TensorFlow binary is optimized to use ...". They made up
most lines of a train log. :func:`filtered_stderr` captures the process's stderr (file
descriptor 2, where the C++ code writes) while TensorFlow is imported and its devices are
found, and passes on every line that is not one of these notices.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator

#: Substrings of the start-up notices dropped (every other line is passed on unchanged).
NOISE: tuple[str, ...] = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
    "Attempting to register factory for plugin",
    "cuda_diagnostics",
    "retrieving CUDA diagnostic information",
    "kernel driver does not appear to be running on this host",
    "/proc/driver/nvidia/version does not exist",
)


def is_noise(line: str) -> bool:
    """True for a TensorFlow start-up notice (see :data:`NOISE`)."""
    return any(n in line for n in NOISE)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Capture file descriptor 2 for the block; afterwards write its lines, less the start-up
    notices, to the real stderr. An exception in the block is re-raised after the replay."""
    fd = 2  # where TensorFlow's C++ code writes, whatever sys.stderr is
    try:
        saved = os.dup(fd)
    except OSError:  # no file descriptor 2
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines(keepends=True) if not is_noise(ln)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_quietly(module: str):
    """Import ``module`` (e.g. a stage module that imports Keras) with TensorFlow's start-up
    notices filtered out; when TensorFlow got imported, its devices are found here too (the
    cuInit notice on a machine without a GPU comes then, not at the import)."""
    import importlib

    with filtered_stderr():
        mod = importlib.import_module(module)
        if "tensorflow" in sys.modules:
            import tensorflow as tf

            tf.config.list_physical_devices()
    return mod
