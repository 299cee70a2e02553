"""NPZ: PtychoPINN's dataset layout, also written by ptychodus'
``save_ptychopinn_training_data``. :func:`read_npz` converts such a file into the pipeline's
conventions (:mod:`ptychopipe.formats.common`), :func:`write_npz` writes one.

Layout: ``xcoords``, ``ycoords`` (M,) px, ``diff3d`` (M, N, N) — amplitudes sqrt(n)
(``diff3d: amplitude``, PtychoPINN) or counts (``diff3d: counts``, what ptychodus writes) —,
``probeGuess`` (N, N) complex, optional ``objectGuess`` (H, W) complex. Positions are patch
centres in objectGuess pixel indices with pixel k's centre at k (ptychodus'
``(x_m − center_x_m)/pixel_width_m + (W − 1)/2``): the pipeline's positions are these
+ 0.5 px. Native probe convention: unitary (PtychoPINN's simulator divides |fft2|² by N²,
"L2 norm is conserved"), the pipeline's own: P_abs = probeGuess.

What :func:`write_npz` writes: ``objectGuess`` (H, W) complex64 [object amplitude],
``probeGuess`` (N, N) complex64 = P_abs (unitary FFT convention, the native one),
``diff3d`` (M, N, N) float64 = sqrt(counts) [photons^0.5], ``xcoords``, ``ycoords`` (M,)
float64 px in objectGuess pixel indices (pixel k centred at k: the pipeline's position
− 0.5), ``xcoords_start``/``ycoords_start`` (the same), ``scan_index`` (M,) int64 zeros,
and ``ptychopipe_provenance`` (a JSON string).
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import atomic_path, not_a_file
from .common import (FRAME_MARGIN_PX, Imported, IngestError, Reconstruction, check_inside, frame_from_positions,
                     probe_scale, resolve_normalization, square_probe, usable_object)

#: The probe FFT convention of NPZ files when ``probe_normalization: native``.
NATIVE_PROBE_NORMALIZATION = "unitary"
#: Counts read as amplitude² are rounded to integers when every value lies within this
#: relative distance of one (photon counts stored as sqrt, float error only).
INTEGER_RTOL = 1e-5


def counts_from_amplitude(amplitude: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """n = a² in float64, (M, N, N) -> float32 counts, and what was done.

    When every n lies within :data:`INTEGER_RTOL` (relative, floor 1) of an integer the
    data are photon counts stored as square roots, and n is rounded to those integers
    (undoing the float error of sqrt then square); otherwise n is kept as is.
    """
    n = np.square(np.asarray(amplitude, dtype=np.float64))
    nearest = np.rint(n)
    dev = float(np.max(np.abs(n - nearest) / np.maximum(1.0, nearest))) if n.size else 0.0
    rounded = dev <= INTEGER_RTOL
    info = {"counts_from": "diff3d**2 (diff3d = amplitude, sqrt of counts)",
            "counts_rounded_to_integers": bool(rounded), "max_relative_distance_to_integer": dev}
    return (nearest if rounded else n).astype(np.float32), info


def _npz_array(data: Any, path: Path, key: str, required: bool = True) -> np.ndarray | None:
    if key not in data.files:
        if required:
            raise IngestError(f"{path}: {key}: key missing; expected keys xcoords, ycoords, diff3d, probeGuess "
                              f"(objectGuess optional), got {sorted(data.files)}")
        return None
    try:
        return data[key]
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise IngestError(f"{path}: {key}: not a plain numeric array ({exc}); expected a numeric array") from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:  # truncated or corrupted member
        raise IngestError(f"{path}: {key}: unreadable ({exc})") from None


def read_npz(path: str | Path, probe_normalization: str = "native", diff3d: str = "amplitude") -> Imported:
    """Read a PtychoPINN-layout NPZ (module docstring) into the pipeline's conventions.

    path: the .npz; probe_normalization: ``native`` (= unitary) | ``unitary`` |
    ``unnormalized``; diff3d: ``amplitude`` (sqrt counts) | ``counts``.
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(not_a_file(path, "source.file"))
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise IngestError(f"{path}: not a readable .npz file ({exc})") from None
    if not hasattr(data, "files"):
        raise IngestError(f"{path}: expected an .npz archive of named arrays, got a single array")
    with data:
        x = _npz_array(data, path, "xcoords")
        y = _npz_array(data, path, "ycoords")
        d = _npz_array(data, path, "diff3d")
        probe = _npz_array(data, path, "probeGuess")
        obj = _npz_array(data, path, "objectGuess", required=False)
    for key, arr in (("xcoords", x), ("ycoords", y)):
        if arr.ndim != 1 or arr.dtype.kind not in "fiu":
            raise IngestError(f"{path}: {key}: expected a 1-D real array (M,) [px], got {arr.dtype} {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise IngestError(f"{path}: {key}: {int(np.count_nonzero(~np.isfinite(arr)))} non-finite values")
    m = len(x)
    if len(y) != m:
        raise IngestError(f"{path}: ycoords: expected {m} values (as xcoords), got {len(y)}")
    if m == 0:
        raise IngestError(f"{path}: xcoords: expected at least one scan position, got 0")
    p = square_probe(probe, f"{path}: probeGuess")
    n = p.shape[0]
    if d.ndim != 3 or d.shape != (m, n, n):
        hint = " (patterns last? expected (M, N, N))" if d.ndim == 3 and d.shape[2] == m else ""
        raise IngestError(f"{path}: diff3d: expected shape (M, N, N) = ({m}, {n}, {n}) from xcoords and "
                          f"probeGuess, got {d.shape}{hint}")
    if d.dtype.kind not in "fiu":
        raise IngestError(f"{path}: diff3d: expected real values, got dtype {d.dtype}")
    bad = int(np.count_nonzero(~np.isfinite(d))) if d.dtype.kind == "f" else 0
    if bad or np.any(d < 0):
        raise IngestError(f"{path}: diff3d: expected finite values >= 0, got {bad} non-finite and "
                          f"{int(np.count_nonzero(d < 0))} negative")
    if diff3d == "amplitude":
        counts, conv = counts_from_amplitude(d)
    elif diff3d == "counts":
        counts, conv = d.astype(np.float32), {"counts_from": "diff3d (counts, as stored)"}
        conv["diff3d_squares_are_whole_numbers"] = bool(counts_from_amplitude(d)[1]["counts_rounded_to_integers"])
    else:
        raise IngestError(f"source.diff3d: expected 'amplitude' or 'counts', got {diff3d!r}")
    # what the numbers are, as stored (evidence for the convention checks: counts are whole numbers)
    conv["diff3d_whole_numbers"] = bool(np.all(d == np.rint(d)))
    conv["diff3d_values_at_least_4"] = int(np.count_nonzero(d >= 4))
    norm = resolve_normalization(probe_normalization, NATIVE_PROBE_NORMALIZATION)
    scale = probe_scale(norm, n)
    positions = np.stack([x, y], axis=1).astype(np.float64) + 0.5
    conv.update({
        "positions": "xcoords, ycoords (pixel-index convention, pixel k centred at k) + 0.5 px -> patch centres "
                     "in the pipeline convention (pixel k centred at k + 0.5)",
        "probe_normalization": norm, "probe_scale": scale,
        "probe": f"P_abs = {scale:g} * probeGuess ({norm} FFT convention in the file)",
    })
    if obj is not None:
        if obj.ndim != 2 or obj.dtype.kind not in "fc":
            raise IngestError(f"{path}: objectGuess: expected a complex (H, W) array, got {obj.dtype} {obj.shape}")
        if not np.all(np.isfinite(obj)):
            raise IngestError(f"{path}: objectGuess: {int(np.count_nonzero(~np.isfinite(obj)))} non-finite values")
    ref, why = usable_object(obj)
    conv["object"] = f"objectGuess {why}"
    if obj is not None:
        shape = (int(obj.shape[0]), int(obj.shape[1]))
        check_inside(positions, n, shape, f"{path}: xcoords/ycoords")
        conv["frame"] = "objectGuess pixels"
    else:
        positions, shift, shape = frame_from_positions(positions, n)
        conv["frame"] = (f"no objectGuess: frame of {shape[0]}x{shape[1]} px around the scan "
                         f"({FRAME_MARGIN_PX} px margin), positions shifted by {list(shift)} px")
        conv["frame_shift_px"] = list(shift)
    return Imported(counts, (p.astype(np.complex128) * scale).astype(np.complex64), positions,
                    None if ref is None else ref.astype(np.complex64), shape, conv)


def write_npz(rec: Reconstruction, path: str | Path) -> Path:
    """Write ``rec`` as a PtychoPINN-layout NPZ (module docstring), atomically. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = rec.positions[:, 0] - 0.5
    y = rec.positions[:, 1] - 0.5
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, xcoords=x, ycoords=y, xcoords_start=x, ycoords_start=y,
                 diff3d=np.sqrt(rec.counts.astype(np.float64)), probeGuess=rec.probe,
                 objectGuess=rec.object, scan_index=np.zeros(len(x), dtype=np.int64),
                 ptychopipe_provenance=np.array(json.dumps({**rec.provenance, "conventions": {
                     "xcoords": "objectGuess pixel index (pixel k centred at k)",
                     "diff3d": "amplitude sqrt(counts)", "probeGuess": "unitary FFT convention (P_abs)"}})))
    return path
