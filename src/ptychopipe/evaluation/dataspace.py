"""Scoring without a true object (imported data): the predicted against the measured
diffraction, in data space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def ring_profile(patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over patterns and over detector rings of (K, N, N) zero-frequency-centred patterns.

    Ring k holds the pixels at radius round(|q|) = k px from the centre (N/2, N/2),
    k = 0..N/2. Returns (frequency (R,) cycles/px of the object = k/N, mean (R,) per pixel)."""
    n = patterns.shape[-1]
    yy, xx = np.indices((n, n)) - n // 2
    ring = np.rint(np.hypot(yy, xx)).astype(np.int64)
    keep = ring <= n // 2
    total = np.asarray(patterns, dtype=np.float64).sum(axis=0)
    sums = np.bincount(ring[keep], weights=total[keep], minlength=n // 2 + 1)
    npx = np.bincount(ring[keep], minlength=n // 2 + 1)
    return np.arange(n // 2 + 1) / n, sums / (npx * len(patterns))

def data_space_metrics(inferred: str | Path, simulated: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """What can be measured without a true object, over the test group members.

    From inferred.h5: the Poisson NLL (``poisson_nll``: deviance / mean training counts, the
    training loss on the test split) and mean predicted / mean measured counts per pattern.
    Recomputed here from the predicted patches Ô (the model's forward model,
    λ̂ = |fftshift(fft2(P_abs·Ô))/N|²) and the measured counts n of the same patterns:
    the mean per detector ring of n and λ̂ (:func:`ring_profile`) and their ratio, i.e. how
    much of the measured signal the reconstruction explains at each spatial frequency.
    Returns (metrics, arrays: ring_frequency, measured_ring_mean, predicted_ring_mean)."""
    from ..artifacts import Inferred, Simulated, check_indices
    from ..physics import expected_counts

    inf = Inferred.read(inferred)
    sim = Simulated.read(simulated)
    check_indices(inf.indices, len(sim.counts), f"{inferred}: indices", simulated)
    b, c, n, _ = inf.amplitude.shape
    patches = (inf.amplitude.astype(np.float64) * np.exp(1j * inf.phase.astype(np.float64))).reshape(b * c, n, n)
    pr = inf.probe.astype(np.complex128)
    lam = np.empty((b * c, n, n))
    for a in range(0, b * c, 256):
        q = patches[a:a + 256]
        lam[a:a + 256] = expected_counts((pr.real, pr.imag), (q.real, q.imag))
    meas = sim.counts[inf.indices.ravel()].astype(np.float64)
    freq, m_ring = ring_profile(meas)
    _, p_ring = ring_profile(lam)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(m_ring > 0, p_ring / m_ring, np.nan)
    metrics = {
        "poisson_nll": float(inf.attrs["poisson_nll"]),
        "predicted_over_measured_counts": float(inf.attrs["predicted_over_measured_counts"]),
        "predicted_over_measured_counts_recomputed": float(lam.sum() / meas.sum()),
        "ring_predicted_over_measured": {f"{f:.4f}": r for f, r in zip(freq, ratio)},
        "n_patterns": int(b * c),
    }
    return metrics, {"ring_frequency": freq, "measured_ring_mean": m_ring, "predicted_ring_mean": p_ring}
