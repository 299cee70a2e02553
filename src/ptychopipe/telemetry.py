"""Telemetry: per-array statistics and invariant checks shared by every stage.

Every stage writes, for each main array, the statistics of :func:`array_stats`
into its HDF5 output (``telemetry/<array>`` attributes), and checks the physics
contract with :func:`check_finite` / :func:`check_close`. A broken invariant
raises :class:`InvariantError` whose message names the stage, the array and the
numbers, so a failure says where it happened instead of surfacing as NaN later.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

from .errors import PtychopipeError


class InvariantError(PtychopipeError, RuntimeError):
    """A physics or data invariant failed; the message names stage, array and numbers."""


def array_stats(arr: np.ndarray) -> dict[str, Any]:
    """Summary statistics of an array.

    For complex arrays the statistics are of the modulus |x| (``sumsq`` is Σ|x|²),
    plus ``phase_mean``/``phase_std`` (rad). NaN/Inf are counted, and the other
    statistics are computed over the finite entries only.

    Returns a dict with keys shape, dtype, mean, std, min, max, sumsq, nan, inf (plus
    phase_mean, phase_std for complex arrays; only shape and dtype for non-numeric ones),
    all JSON/HDF5-attribute friendly: tuples, str, float, int.
    """
    a = np.asarray(arr)
    out: dict[str, Any] = {"shape": tuple(int(s) for s in a.shape), "dtype": str(a.dtype)}
    # Reductions accumulate in float64 (dtype=) without copying the whole array to float64;
    # the finite-only copy is made only when there is a NaN/Inf to leave out.
    if np.iscomplexobj(a):
        nan = int(np.count_nonzero(np.isnan(a.real) | np.isnan(a.imag)))
        inf = int(np.count_nonzero(np.isinf(a.real) | np.isinf(a.imag)))
        fin = a if nan + inf == 0 else a[np.isfinite(a.real) & np.isfinite(a.imag)]
        vals = np.abs(fin)
        phase = np.angle(fin)
        out["phase_mean"] = float(phase.mean(dtype=np.float64)) if phase.size else float("nan")
        out["phase_std"] = float(phase.std(dtype=np.float64)) if phase.size else float("nan")
    elif a.dtype.kind in "fiub":
        if a.dtype.kind == "b":
            a = a.astype(np.uint8)
        nan = int(np.count_nonzero(np.isnan(a))) if a.dtype.kind == "f" else 0
        inf = int(np.count_nonzero(np.isinf(a))) if a.dtype.kind == "f" else 0
        vals = a if nan + inf == 0 else a[np.isfinite(a)]
    else:  # strings etc.
        return out
    out.update(nan=nan, inf=inf)
    if vals.size:
        mean = float(vals.mean(dtype=np.float64))
        std = float(vals.std(dtype=np.float64))
        out.update(mean=mean, std=std, min=float(vals.min()), max=float(vals.max()),
                   sumsq=float(vals.size * (std * std + mean * mean)))  # Σx² = n·(var + mean²)
    else:
        out.update(mean=float("nan"), std=float("nan"), min=float("nan"), max=float("nan"), sumsq=0.0)
    return out


def check_finite(stage: str, name: str, arr: np.ndarray) -> None:
    """Raise InvariantError if ``arr`` holds any NaN or Inf."""
    a = np.asarray(arr)
    if a.dtype.kind not in "fc":
        return
    bad = int(np.count_nonzero(~np.isfinite(a)))
    if bad:
        nan = int(np.count_nonzero(np.isnan(a)))
        raise InvariantError(f"[{stage}] {name}: {bad} non-finite values of {a.size} "
                             f"({nan} NaN, {bad - nan} Inf); expected 0")


def check_close(stage: str, name: str, got: float, expected: float, rtol: float, what: str) -> None:
    """Raise InvariantError if ``got`` differs from ``expected`` by more than ``rtol`` (relative)."""
    rel = abs(got - expected) / max(abs(expected), 1e-300)
    if not np.isfinite(got) or rel > rtol:
        raise InvariantError(f"[{stage}] {name}: {what} = {got:.9g}, expected {expected:.9g} "
                             f"(relative error {rel:.3g} > tolerance {rtol:g})")


def check_nonnegative(stage: str, name: str, arr: np.ndarray) -> None:
    """Raise InvariantError if ``arr`` holds negative values (e.g. counts)."""
    a = np.asarray(arr)
    n = int(np.count_nonzero(a < 0))
    if n:
        raise InvariantError(f"[{stage}] {name}: {n} negative values (min {float(a.min()):.6g}); expected >= 0")


def cpu_model() -> str:
    """The CPU's model name ("model name" of /proc/cpuinfo where there is one, else
    platform.processor() or platform.machine())."""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        model = ""
    return model or platform.processor() or platform.machine() or "unknown CPU"


def cpu_description() -> str:
    """What this machine computes on without an accelerator: CPU model and os.cpu_count(),
    e.g. "Intel(R) Xeon(R) Processor, 2 CPUs"."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs"
