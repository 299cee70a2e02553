"""Keep TensorFlow's start-up notices out of the stage logs.

TensorFlow 2.17+ prints its start-up notices through absl before logging is initialised, so
``TF_CPP_MIN_LOG_LEVEL`` does not silence them: "All log messages before absl::InitializeLog()",
"oneDNN custom operations are on", "Could not find cuda drivers", "failed call to cuInit" on
every machine without a GPU, "This TensorFlow binary is optimized to use ...". They made up
most lines of a train log. :func:`filtered_stderr` passes the process's stderr (file
descriptor 2, where the C++ code writes) through a filter while a stage runs, forwarding at
once every line that is not one of these notices.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
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
    # at the first training step (absl, ignores TF_CPP_MIN_LOG_LEVEL too)
    "NodeDef mentions attribute use_unbounded_threadpool",
    "oneDNN supports DT_INT32 only on platforms with AVX-512",
)


def is_noise(line: str) -> bool:
    """True for a TensorFlow start-up notice (see :data:`NOISE`)."""
    return any(n in line for n in NOISE)


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """For the block, pass what is written to file descriptor 2 (by Python or by C++ code)
    through a pipe that drops the start-up notices and forwards every other line at once."""
    fd = 2  # where TensorFlow's C++ code writes, whatever sys.stderr is
    try:
        saved = os.dup(fd)
    except OSError:  # no file descriptor 2
        yield
        return
    sys.stderr.flush()
    r, w = os.pipe()
    os.dup2(w, fd)
    os.close(w)

    def forward() -> None:
        with os.fdopen(r, "rb", buffering=0) as pipe:
            pending = b""
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = [ln + b"\n" for ln in lines if not is_noise(ln.decode(errors="replace"))]
                if kept:
                    os.write(saved, b"".join(kept))
            if pending and not is_noise(pending.decode(errors="replace")):
                os.write(saved, pending)

    reader = threading.Thread(target=forward, name="ptychopipe-stderr-filter", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)  # closes the pipe's last write end: the reader sees its end
        reader.join(timeout=10)
        os.close(saved)


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
