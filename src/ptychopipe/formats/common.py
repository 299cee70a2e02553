"""What the formats share: the pipeline conventions, the records, the errors, the helpers.

Pipeline conventions (docs/design.md, 'Forward model', 'Dose and normalisation'), the
target of every conversion a reader makes and the source of every one a writer makes:
- counts n (M, N, N) float32 [counts], zero frequency at pixel (N/2, N/2) (fftshifted);
- positions (M, 2) float64 [x, y] px: patch centres in object pixel coordinates, patch
  pixel (i, k) samples the object at (y − N/2 + i, x − N/2 + k), i.e. pixel k's centre
  sits at coordinate k + 0.5;
- probe P_abs (N, N) complex64 [photons^0.5] in the unitary FFT convention:
  λ = |fftshift(fft2(P_abs·O))/N|², so Σλ = Σ|P_abs·O|².

A reader returns :class:`Imported` (raising :class:`IngestError`), a writer takes
:class:`Reconstruction` (raising :class:`ExportError`); a file's probe is P_abs up to the
factor of its FFT convention (:func:`probe_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import PtychopipeError

#: Extra object frame (px) around the scan when the file has no object: the patches plus
#: this margin (≥ the 12 px the sub-pixel extractor reads beyond a patch).
FRAME_MARGIN_PX = 16


class IngestError(PtychopipeError, ValueError):
    """A source file is missing or malformed; one line naming the file, the key, what was
    expected and what was found."""


@dataclass(frozen=True)
class Imported:
    """Measured data in the pipeline's conventions (module docstring).

    counts (M, N, N) float32 [counts]; probe (N, N) complex64 P_abs [photons^0.5];
    positions (M, 2) float64 [x, y] px in the object frame; object (H, W) complex64
    [object amplitude] or None; object_shape (H, W) of the frame; conversions: every
    conversion applied (JSON-able); metadata: the source's physical metadata, SI units
    (pixel sizes in m, photon energy in eV, distances in m), when the format has them.
    """

    counts: np.ndarray
    probe: np.ndarray
    positions: np.ndarray
    object: np.ndarray | None
    object_shape: tuple[int, int]
    conversions: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


class ExportError(PtychopipeError, ValueError):
    """The artifacts cannot be exported (one line naming the file and what is wrong)."""


@dataclass(frozen=True)
class Reconstruction:
    """What is exported, in the pipeline's conventions.

    object (H, W) complex64 [object amplitude] (the padded stitched canvas); probe (N, N)
    complex64 P_abs [photons^0.5]; positions (M, 2) float64 [x, y] px in the object frame
    (patch centres, pixel k centred at k + 0.5); counts (M, N, N) float32 [counts];
    indices (M,) int64 into simulated.h5; origin (x, y) int: object coordinates (of
    simulated.h5's frame) of frame pixel (0, 0); losses (E,) float64 training loss per
    epoch; metadata: the imported source's physical metadata (SI) if any; provenance."""

    object: np.ndarray
    probe: np.ndarray
    positions: np.ndarray
    counts: np.ndarray
    indices: np.ndarray
    origin: tuple[int, int]
    losses: np.ndarray
    metadata: dict[str, Any]
    provenance: dict[str, Any]


# --------------------------------------------------------------------------- conversions


def probe_scale(normalization: str, n: int) -> float:
    """Factor s with P_abs = s·P_file: 1 for ``unitary`` (λ = |fftshift(fft2(P·O))/N|²),
    N for ``unnormalized`` (λ = |fft2(P·O)|², pty-chi / ptychodus)."""
    if normalization == "unitary":
        return 1.0
    if normalization == "unnormalized":
        return float(n)
    raise IngestError(f"source.probe_normalization: expected 'unitary' or 'unnormalized', got {normalization!r}")


def resolve_normalization(normalization: str, native: str) -> str:
    """The probe convention in force: the format's ``native`` one for ``native``."""
    return native if normalization == "native" else normalization


def square_probe(probe: np.ndarray, where: str) -> np.ndarray:
    """A single-mode N×N probe from a (N, N), (1, N, N) or (1, 1, N, N) array (ptychodus'
    mode axes). Raises IngestError for several modes or a non-square probe."""
    p = np.asarray(probe)
    while p.ndim > 2 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise IngestError(f"{where}: expected a single-mode square probe (N, N) (or mode axes of length 1), "
                          f"got shape {np.shape(probe)}")
    if p.shape[0] % 2:
        raise IngestError(f"{where}: expected an even patch size N, got {p.shape[0]}")
    if p.dtype.kind not in "fc":
        raise IngestError(f"{where}: expected a complex (or real float) array, got dtype {p.dtype}")
    if not np.all(np.isfinite(p)):
        raise IngestError(f"{where}: {int(np.count_nonzero(~np.isfinite(p)))} non-finite values; expected none")
    if not np.any(p):
        raise IngestError(f"{where}: all zeros; expected a probe with power")
    return p


def frame_from_positions(positions: np.ndarray, n: int, margin: int = FRAME_MARGIN_PX
                         ) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Object frame for data without an object: shift the positions by whole pixels so
    that the leftmost/topmost patch starts ``margin`` px inside the frame.

    positions (M, 2) float64 [x, y] px (patch centres, pipeline convention). Returns
    (shifted positions, shift (dx, dy) px added, frame shape (H, W)); the frame holds
    every patch plus ``margin`` px on each side.
    """
    lo = np.floor(positions.min(axis=0) - n / 2).astype(np.int64) - margin
    shifted = positions - lo
    hi = np.ceil(shifted.max(axis=0) + n / 2).astype(np.int64) + margin
    return shifted, (int(-lo[0]), int(-lo[1])), (int(hi[1]), int(hi[0]))


def check_inside(positions: np.ndarray, n: int, shape: tuple[int, int], where: str) -> None:
    """Raise IngestError unless every N×N patch lies inside the (H, W) object frame."""
    h, w = shape
    inside = ((positions[:, 0] >= n / 2) & (positions[:, 0] <= w - n / 2)
              & (positions[:, 1] >= n / 2) & (positions[:, 1] <= h - n / 2))
    if not inside.all():
        bad = int(np.count_nonzero(~inside))
        raise IngestError(f"{where}: {bad} of {len(positions)} patch centres put the {n}x{n} patch outside the "
                          f"{h}x{w} object; expected {n / 2:g} <= x <= {w - n / 2:g} and {n / 2:g} <= y <= "
                          f"{h - n / 2:g}, got x in [{positions[:, 0].min():.4g}, {positions[:, 0].max():.4g}], "
                          f"y in [{positions[:, 1].min():.4g}, {positions[:, 1].max():.4g}]")


def usable_object(obj: np.ndarray | None) -> tuple[np.ndarray | None, str]:
    """The file's object as the reference, or None with the reason: an object whose
    amplitude and phase are both constant is an initial guess, not a reference."""
    if obj is None:
        return None, "absent"
    amp, ph = np.abs(obj), np.angle(obj)
    if float(np.ptp(amp)) <= 1e-6 * max(float(amp.max()), 1e-30) and float(np.ptp(ph)) <= 1e-6:
        return None, "constant amplitude and phase (an initial guess, not a reference): ignored"
    return obj, "used as the reference (true) object"
