"""Diagnostics of a reconstruction's patches: what the measured data pin down.

These functions score object patches (from the model, from its physics layer alone, or
from any other solver) without training anything; they are used to tell an estimate that
the data do not determine (it fits the patterns as well as the truth does and still is not
the object) from one where the solver stopped short (it fits the patterns worse than the
truth does).

- :func:`per_patch_scores`: mean per-patch amplitude Pearson r against the truth patch and
  against the truth's twin conj(O(−r)) (the patch turned by 180°), over the pixels the probe
  lights. Under a probe that is its own twin a pattern cannot tell the two apart
  (docs/design.md, 'Gridsize 1 and the twin').
- :func:`amplitude_misfit`: the relative misfit of object patches to their measured
  patterns, through the simulator's forward model (docs/design.md, 'Forward model').
- :func:`stitched_scores`: patches stitched as the stitch stage does and scored with the
  compare stage's code and defaults (no rescaling, no registration).
- :func:`evenly_spaced`: a cheap, reproducible subset of a split's groups.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import evaluation, physics, stitch
from .config import CompareConfig


def per_patch_scores(estimate: np.ndarray, truth: np.ndarray, lit: np.ndarray) -> tuple[float, float]:
    """(r with the truth, r with its twin): the mean over patches of the Pearson r of
    |estimate| with |truth| and with |twin(truth)| over the ``lit`` pixels of each patch.

    estimate, truth: (M, N, N) complex [object amplitude]; lit: (N, N) bool (for example
    |P|² > 0.1·max|P|²). The twin is :func:`ptychopipe.stitch.twin` (about the centre pixel N/2).
    """
    tw = np.abs(stitch.twin(np.asarray(truth)))
    a, t, w = np.abs(estimate)[:, lit], np.abs(truth)[:, lit], tw[:, lit]
    return (float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, t)])),
            float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, w)])))


def lit_pixels(probe: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """(N, N) bool: the pixels where |P|² > ``fraction``·max|P|²."""
    w = np.abs(np.asarray(probe)) ** 2
    return w > fraction * w.max()


def amplitude_misfit(patches: np.ndarray, amplitude: np.ndarray, probe: np.ndarray, input_scale: float) -> float:
    """Relative misfit Σ(a·sqrt(λ̂) − X)² / ΣX² (dimensionless) of object patches to their patterns.

    patches: (M, N, N) complex [object amplitude]; amplitude: the measured network input
    X = a·sqrt(n), (M, N, N) [input units]; probe: P_abs (N, N) complex; input_scale: a.
    λ̂ = |F(P_abs·Ô)|² [counts] is :func:`ptychopipe.physics.expected_counts`. Zero for the
    object that produced noise-free patterns; invariant to a global phase.
    """
    lam = physics.expected_counts((probe.real, probe.imag), (patches.real, patches.imag))
    x = np.asarray(amplitude, dtype=np.float64)
    return float(np.sum((input_scale * np.sqrt(lam) - x) ** 2) / np.sum(x ** 2))


def stitched_scores(patches: np.ndarray, positions: np.ndarray, probe: np.ndarray, truth: np.ndarray,
                    weight: str = "probe_intensity", resolve_twin: bool = False) -> dict[str, Any]:
    """Stitch patches and score them against the truth object as the pipeline would.

    patches: (M, N, N) complex [object amplitude]; positions: (M, 2) [x, y] px; probe: (N, N)
    complex; truth: (H, W) complex. ``weight`` is a ``stitch.weight`` value and
    ``resolve_twin`` runs :func:`ptychopipe.stitch.resolve_twins` (one pattern per patch, a
    probe that is its own twin). Scored by :func:`ptychopipe.evaluation.evaluate` with coverage
    threshold 0.5, half-bit FRC and no registration. Returns a dict: ``amplitude_r``,
    ``amplitude_ssim``, ``amplitude_bias``, ``phase_r`` and ``twin_swaps`` (swaps per pass,
    empty without twin resolution).
    """
    n = patches.shape[-1]
    w = stitch.patch_weight(weight, probe, n)
    swaps: list[int] = []
    if resolve_twin:
        _, st, swaps = stitch.resolve_twins(patches, positions, w, probe)
    else:
        st = stitch.stitch_patches(patches, positions, w)
    ev = evaluation.evaluate(st.object, st.coverage, truth, st.geometry.origin_x, st.geometry.origin_y,
                          CompareConfig(coverage_threshold=0.5, frc_threshold="half_bit", ratio_tolerance=0.05,
                                        register=False))
    m = ev.metrics
    return {"amplitude_r": float(m["amplitude"]["pearson_r"]), "amplitude_ssim": float(m["amplitude"]["ssim"]),
            "amplitude_bias": float(ev.amplitude_bias), "phase_r": float(m["phase"]["pearson_r"]),
            "twin_swaps": swaps}


def evenly_spaced(groups: Any, m: int) -> Any:
    """The ``m`` evenly spaced groups (first and last included) of a split's group set (a
    dataclass of arrays, such as a normalized split): every array field cut along axis 0."""
    pick = np.linspace(0, len(groups.indices) - 1, m).round().astype(int)
    return dataclasses.replace(groups, **{f.name: getattr(groups, f.name)[pick]
                                          for f in dataclasses.fields(groups)
                                          if getattr(groups, f.name) is not None})
