"""Aligning a reconstruction with the truth before scoring.

The stitched canvas carries its origin in object coordinates, so the truth is cropped onto
the canvas grid directly (:func:`truth_on_canvas`): no registration unless asked for
(:func:`register_shift`, ``compare.register``). The only ambiguity removed is the global
phase offset φ₀ = arg Σ Ô·conj(O) over the evaluation mask (:func:`global_phase_offset`,
the least-squares optimal constant phase); a global amplitude factor is never removed, it
is reported as the amplitude bias. The evaluation mask (:func:`evaluation_mask`) keeps the
canvas pixels inside the truth whose coverage is at least a threshold × the median
coverage: the well-covered part of the test region.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt

from ..physics import fourier_shift


def truth_on_canvas(truth: np.ndarray, origin_x: int, origin_y: int,
                    shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Crop the truth object onto the canvas grid.

    truth: (H, W) complex [object amplitude]; canvas pixel (r, c) is object pixel
    (origin_y + r, origin_x + c); shape: (h, w) of the canvas.
    Returns (truth on canvas (h, w) complex128, 0 outside the object; inside (h, w)
    bool, True where the canvas pixel lies in the object).
    """
    h, w = shape
    H, W = truth.shape
    out = np.zeros((h, w), dtype=np.complex128)
    inside = np.zeros((h, w), dtype=bool)
    r0, r1 = max(0, -origin_y), min(h, H - origin_y)
    c0, c1 = max(0, -origin_x), min(w, W - origin_x)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = truth[origin_y + r0:origin_y + r1, origin_x + c0:origin_x + c1]
        inside[r0:r1, c0:c1] = True
    return out, inside

def evaluation_mask(coverage: np.ndarray, inside: np.ndarray, threshold: float,
                    window: int = 1) -> tuple[np.ndarray, float]:
    """Well-covered pixels: inside & coverage > 0 & coverage ≥ threshold × median(coverage > 0).

    coverage: (h, w) float, Σ w per pixel; inside: (h, w) bool. Returns (mask (h, w)
    bool, the median coverage). Raises ValueError when no pixel qualifies, or when no
    ``window`` × ``window`` block of them does (the SSIM window, for a mask that is scored
    by :func:`masked_ssim`).
    """
    covered = coverage > 0
    if not np.any(covered & inside):
        raise ValueError("coverage: no covered canvas pixel lies inside the truth object; "
                         "expected the stitched canvas to overlap the object")
    med = float(np.median(coverage[covered]))
    mask = inside & covered & (coverage >= threshold * med)
    if not np.any(mask):
        raise ValueError(f"compare.coverage_threshold: {threshold} x median coverage {med:.4g} leaves "
                         "no pixel to evaluate; expected a lower threshold")
    if window > 1 and not np.any(windows_inside(mask, window)):
        raise ValueError(f"compare.coverage_threshold: {threshold} x median coverage {med:.4g} leaves "
                         f"{int(mask.sum())} pixels but no {window}x{window} block of them (the SSIM window); "
                         "expected a lower threshold or a larger test region")
    return mask, med

def windows_inside(mask: np.ndarray, window: int) -> np.ndarray:
    """Pixels whose whole window × window neighbourhood lies in ``mask``, (h, w) bool."""
    return binary_erosion(mask, structure=np.ones((window, window), bool), border_value=0)

def global_phase_offset(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """φ₀ = arg Σ_mask Ô·conj(O) (rad): the constant phase minimising Σ|Ô e^{-iφ₀} − O|²."""
    return float(np.angle(np.sum(recon[mask] * np.conj(truth[mask]))))

def relative_phase(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """arg O + wrap(arg Ô − arg O) (rad): the reconstruction's phase, unwrapped relative to
    the truth so that phase differences are wrapped to (−π, π]. Shapes equal; float64."""
    return np.angle(truth) + np.angle(recon * np.conj(truth))

def register_shift(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray,
                   upsample_factor: int = 20) -> tuple[float, float]:
    """Sub-pixel translation (dx, dy) px that moves ``recon`` onto ``truth`` (only used when
    ``compare.register`` is set): skimage.registration.phase_cross_correlation of the
    mean-subtracted, boundary-tapered complex images over the mask's bounding box
    (plain cross-correlation, ``normalization=None``). Apply with
    :func:`~ptychopipe.physics.fourier_shift` (out(r) = in(r − d))."""
    from skimage.registration import phase_cross_correlation

    win = taper(mask)
    box = bounding_box(mask)
    a = (truth - np.sum(win * truth) / np.sum(win)) * win
    b = (recon - np.sum(win * recon) / np.sum(win)) * win
    shift, _, _ = phase_cross_correlation(a[box], b[box], upsample_factor=upsample_factor, normalization=None)
    return float(shift[1]), float(shift[0])

def shift_image(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Fourier shift of a (h, w) real or complex image by (dx, dy) px (periodic);
    complex128 (real input: take ``.real``)."""
    sr, si = fourier_shift(np.real(img).astype(np.float64), np.imag(img).astype(np.float64),
                           np.asarray(dx, dtype=np.float64), np.asarray(dy, dtype=np.float64))
    return sr + 1j * si

def bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


FRC_TAPER_PX = 8.0  # width of the cosine taper of the FRC window at the mask boundary (px)


def taper(mask: np.ndarray, width: float = FRC_TAPER_PX) -> np.ndarray:
    """Soft window: 0 outside the mask, rising as a half cosine to 1 over ``width`` px
    (Euclidean distance from the mask boundary). (h, w) float64."""
    d = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(d / width, 0.0, 1.0))
