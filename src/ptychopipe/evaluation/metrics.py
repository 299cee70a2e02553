"""Image metrics over a mask: MAE, RMSE, Pearson r, SSIM, PSNR, the least-squares scale
and the Fourier ring correlation.

For amplitude |Ô| vs |O| (object amplitude units) and for phase (rad; the reconstruction's
phase unwrapped relative to the truth), all over the evaluation mask: SSIM uses
scikit-image with 7×7 windows lying wholly inside the mask, PSNR's peak is the truth's range
over the mask, the least-squares scalar β = Σ x̂x / Σ x² (x̂ ≈ β·x; 1 = no scale error) shows
a compressed or stretched contrast, and the FRC (:func:`frc_curve`) gives the resolution.
Adding a metric: a function here and its entry in :func:`image_metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import numpy as np

from .alignment import bounding_box, taper, windows_inside

SSIM_WIN = 7  # SSIM window side (px), scikit-image's default

def mae(est: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error over the mask (units of the images)."""
    return float(np.mean(np.abs(est[mask] - ref[mask])))

def rmse(est: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Root-mean-square error over the mask (units of the images)."""
    return float(np.sqrt(np.mean((est[mask] - ref[mask]) ** 2)))

def pearson_r(est: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation over the mask; NaN when either image is constant there."""
    a = est[mask] - est[mask].mean()
    b = ref[mask] - ref[mask].mean()
    den = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    return float(np.sum(a * b)) / den if den > 0 else float("nan")

def psnr(est: np.ndarray, ref: np.ndarray, mask: np.ndarray, data_range: float) -> float:
    """10·log10(data_range² / MSE) dB over the mask; +inf when the images agree exactly."""
    mse = float(np.mean((est[mask] - ref[mask]) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))

def ls_scale(est: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """β = Σ x̂·x / Σ x² over the mask: the scalar minimising Σ(x̂ − β·x)², i.e. est ≈ β·ref."""
    den = float(np.sum(ref[mask] ** 2))
    return float(np.sum(est[mask] * ref[mask])) / den if den > 0 else float("nan")

def masked_ssim(est: np.ndarray, ref: np.ndarray, mask: np.ndarray, data_range: float,
                win_size: int = SSIM_WIN) -> float:
    """Mean SSIM (skimage.metrics.structural_similarity, ``win_size`` windows, given
    ``data_range``) over the pixels whose whole window lies inside the mask. Raises
    ValueError when no window fits in the mask (:func:`evaluation_mask` with
    ``window=SSIM_WIN`` refuses such masks first)."""
    from skimage.metrics import structural_similarity

    inner = windows_inside(mask, win_size)
    if not np.any(inner):
        raise ValueError(f"SSIM: the mask ({int(mask.sum())} pixels) holds no whole {win_size}x{win_size} window")
    box = bounding_box(mask)
    e, r = est[box].astype(np.float64), ref[box].astype(np.float64)
    e = np.where(mask[box], e, r)  # values outside the mask never enter a counted window
    _, smap = structural_similarity(r, e, win_size=win_size, data_range=data_range, full=True)
    return float(np.mean(smap[inner[box]]))

@dataclass(frozen=True)
class FRC:
    """A Fourier ring correlation curve and its cutoff.

    frequency (R,) cycles/px (ring centres, k / min(h, w), up to 0.5); frc (R,);
    threshold (R,); n_pixels (R,) Fourier pixels per ring; cutoff: first crossing of
    the threshold below it (cycles/px, linear interpolation; the last ring's
    frequency, 0.5 for an even box, when it never crosses); resolution_px = 1 / cutoff; crossed: whether it crossed.
    """

    frequency: np.ndarray
    frc: np.ndarray
    threshold: np.ndarray
    n_pixels: np.ndarray
    cutoff: float
    resolution_px: float
    crossed: bool

def frc_threshold_curve(n_pixels: np.ndarray, kind: str) -> np.ndarray:
    """FRC threshold per ring: ``"half_bit"`` (van Heel & Schatz 2005:
    (0.2071 + 1.9102/√n) / (1.2071 + 0.9102/√n), n = pixels in the ring) or ``"0.5"``."""
    n = np.maximum(np.asarray(n_pixels, dtype=np.float64), 1.0)
    if kind == "half_bit":
        s = np.sqrt(n)
        return (0.2071 + 1.9102 / s) / (1.2071 + 0.9102 / s)
    if kind == "0.5":
        return np.full(n.shape, 0.5)
    raise ValueError(f"compare.frc_threshold: expected 'half_bit' or '0.5', got {kind!r}")

def frc_cutoff(frequency: np.ndarray, curve: np.ndarray, threshold: np.ndarray) -> tuple[float, bool]:
    """Where the FRC first drops below the threshold (cycles/px).

    Ring 0 (the mean, removed before the FFT) carries no information and is skipped.
    First ring k ≥ 1 with curve < threshold: for k ≥ 2 the crossing is interpolated
    linearly between rings k−1 and k; for k = 1 it is frequency[1] (no correlation
    even at the lowest measurable frequency: resolution = the box size). A NaN ring
    (no power) counts as below the threshold. Returns (cutoff, crossed);
    (frequency[-1], False) when the curve never crosses.
    """
    diff = curve - threshold
    for k in range(1, len(curve)):
        if not np.isfinite(diff[k]) or diff[k] < 0:
            if k == 1 or not np.isfinite(diff[k]):
                return float(frequency[k]), True
            t = diff[k - 1] / (diff[k - 1] - diff[k])
            return float(frequency[k - 1] + t * (frequency[k] - frequency[k - 1])), True
    return float(frequency[-1]), False

def frc_curve(est: np.ndarray, ref: np.ndarray, mask: np.ndarray, kind: str = "half_bit") -> FRC:
    """FRC between two real (h, w) images over the mask.

    Both images are reduced to the mask's bounding box, their window-weighted means
    removed, and multiplied by the boundary taper (:func:`taper`, 8 px). Rings
    are 1/L wide (L = min side of the box), centred at k/L cycles/px, k = 0..L/2.
    FRC_k = Re Σ F̂F* / √(Σ|F̂|² Σ|F|²) over ring k (NaN for an empty-power ring).
    """
    box = bounding_box(mask)
    win = taper(mask)[box]
    a, b = est[box].astype(np.float64), ref[box].astype(np.float64)
    sw = float(win.sum())
    a = (a - float(np.sum(win * a)) / sw) * win
    b = (b - float(np.sum(win * b)) / sw) * win
    h, w = a.shape
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    length = min(h, w)
    r = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    ring = np.rint(r * length).astype(np.int64)
    n_rings = length // 2 + 1
    keep = ring < n_rings
    idx = ring[keep]
    num = np.bincount(idx, weights=np.real(fa * np.conj(fb))[keep], minlength=n_rings)
    pa = np.bincount(idx, weights=(np.abs(fa) ** 2)[keep], minlength=n_rings)
    pb = np.bincount(idx, weights=(np.abs(fb) ** 2)[keep], minlength=n_rings)
    npx = np.bincount(idx, minlength=n_rings).astype(np.int64)
    den = np.sqrt(pa * pb)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    freq = np.arange(n_rings) / length
    thr = frc_threshold_curve(npx, kind)
    cutoff, crossed = frc_cutoff(freq, curve, thr)
    res = 1.0 / cutoff if cutoff > 0 else float("inf")
    return FRC(freq, curve, thr, npx, cutoff, res, crossed)

@dataclass(frozen=True)
class Metric:
    """One image metric of :func:`image_metrics`: ``key`` in comparison.json's
    ``metrics.amplitude`` and ``metrics.phase``; ``unit``: "image" for the image's own unit
    (object amplitude, or rad for the phase), else the metric's ("" dimensionless, "dB",
    "px", "cycles/px"); ``compute(est, ref, mask, data_range, frc)``; ``summary``: a column
    of summary.csv (``amp_<key>``, ``phase_<key>``, with ``_rad`` for the phase's image unit)."""

    key: str
    unit: str
    compute: Callable[[np.ndarray, np.ndarray, np.ndarray, float, FRC], Any]
    summary: bool = True


#: Every image metric, in the order comparison.json and summary.csv list them. Adding a
#: metric: its function above and one entry here.
METRICS: tuple[Metric, ...] = (
    Metric("mae", "image", lambda est, ref, mask, rng, frc: mae(est, ref, mask)),
    Metric("rmse", "image", lambda est, ref, mask, rng, frc: rmse(est, ref, mask)),
    Metric("pearson_r", "", lambda est, ref, mask, rng, frc: pearson_r(est, ref, mask)),
    Metric("ssim", "", lambda est, ref, mask, rng, frc: masked_ssim(est, ref, mask, rng)),
    Metric("psnr_db", "dB", lambda est, ref, mask, rng, frc: psnr(est, ref, mask, rng)),
    Metric("ls_scale", "", lambda est, ref, mask, rng, frc: ls_scale(est, ref, mask)),
    Metric("frc_cutoff_cycles_per_px", "cycles/px", lambda est, ref, mask, rng, frc: frc.cutoff, summary=False),
    Metric("frc_resolution_px", "px", lambda est, ref, mask, rng, frc: frc.resolution_px),
    Metric("frc_crossed", "", lambda est, ref, mask, rng, frc: frc.crossed),
)
#: The keys of :data:`METRICS` (comparison.json's per-image metrics).
METRIC_KEYS: tuple[str, ...] = tuple(m.key for m in METRICS)


def image_metrics(est: np.ndarray, ref: np.ndarray, mask: np.ndarray, frc_kind: str) -> tuple[dict[str, Any], FRC]:
    """Every metric of :data:`METRICS` for one real image pair over the mask, and its FRC.

    data_range (SSIM, PSNR) = max − min of ``ref`` over the mask (the truth's range,
    so the reconstruction cannot move its own yardstick; 1.0 where the truth is constant
    over the mask).
    """
    vals = ref[mask]
    data_range = float(vals.max() - vals.min()) or 1.0
    f = frc_curve(est, ref, mask, frc_kind)
    return {m.key: m.compute(est, ref, mask, data_range, f) for m in METRICS}, f
