"""One reconstruction scored against the truth: alignment, then every metric
(:func:`evaluate`, what the compare stage, the baseline and the benchmarks call)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import shift as ndimage_shift

from ..config import CompareConfig
from .alignment import (
    evaluation_mask,
    global_phase_offset,
    register_shift,
    relative_phase,
    shift_image,
    truth_on_canvas,
)
from .metrics import FRC, SSIM_WIN, image_metrics


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate` on the canvas grid (h, w).

    amplitude_truth/recon (h, w) float64 [object amplitude]; phase_truth/recon (h, w)
    float64 [rad] (recon: offset removed, unwrapped relative to the truth); mask (h, w)
    bool; phase_offset_rad; shift_px (dx, dy) applied by registration ((0, 0) when
    off); amplitude_bias = mean|Ô| / mean|O| over the mask; metrics {"amplitude",
    "phase"}; frc {"amplitude", "phase"}; coverage_median.
    """

    amplitude_truth: np.ndarray
    amplitude_recon: np.ndarray
    phase_truth: np.ndarray
    phase_recon: np.ndarray
    mask: np.ndarray
    phase_offset_rad: float
    shift_px: tuple[float, float]
    amplitude_bias: float
    metrics: dict[str, dict[str, Any]]
    frc: dict[str, FRC]
    coverage_median: float

def evaluate(recon: np.ndarray, coverage: np.ndarray, truth: np.ndarray, origin_x: int, origin_y: int,
             cfg: CompareConfig) -> Evaluation:
    """Score a stitched reconstruction against the truth (module docstring).

    recon: (h, w) complex [object amplitude], the stitched canvas; coverage: (h, w)
    float Σ w; truth: (H, W) complex object; (origin_x, origin_y): object
    coordinates of canvas pixel (0, 0).
    """
    recon = np.asarray(recon, dtype=np.complex128)
    coverage = np.asarray(coverage, dtype=np.float64)
    t, inside = truth_on_canvas(np.asarray(truth), origin_x, origin_y, recon.shape)
    mask, med = evaluation_mask(coverage, inside, cfg.coverage_threshold, SSIM_WIN)
    shift = (0.0, 0.0)
    if cfg.register:
        shift = register_shift(recon, t, mask)
        recon = shift_image(recon, *shift)
        # the coverage moves with the reconstruction, by linear interpolation: a Fourier shift
        # would ring over the whole canvas and count every pixel as a little covered
        coverage = ndimage_shift(coverage, (shift[1], shift[0]), order=1, mode="constant", cval=0.0)
        mask, med = evaluation_mask(coverage, inside, cfg.coverage_threshold, SSIM_WIN)
    phi0 = global_phase_offset(recon, t, mask)
    recon = recon * np.exp(-1j * phi0)
    amp_t, amp_r = np.abs(t), np.abs(recon)
    ph_t, ph_r = np.angle(t), relative_phase(recon, t)
    m_amp, f_amp = image_metrics(amp_r, amp_t, mask, cfg.frc_threshold)
    m_ph, f_ph = image_metrics(ph_r, ph_t, mask, cfg.frc_threshold)
    bias = float(amp_r[mask].mean() / amp_t[mask].mean())
    return Evaluation(amp_t, amp_r, ph_t, ph_r, mask, phi0, shift, bias,
                      {"amplitude": m_amp, "phase": m_ph}, {"amplitude": f_amp, "phase": f_ph}, med)
