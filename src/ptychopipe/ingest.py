"""ingest stage: measured data (NPZ or ptychodus) -> ``results/{scenario}/simulated.h5``.

A scenario with ``source.file`` set skips the simulator: this stage converts the user's
file into the simulate stage's layout (:class:`ptychopipe.artifacts.Simulated`), and
split / group / normalize / train / infer / stitch run unchanged on it. Every unit and
convention conversion is explicit and recorded in the output (attribute
``conversions``, JSON), together with the source file's path, SHA-256 and format.
docs/real_data.md states the conventions assumed for each format; in short:

Pipeline conventions (docs/design.md, 'Forward model', 'Dose and normalisation'), the target of every conversion:
- counts n (M, N, N) float32 [counts], zero frequency at pixel (N/2, N/2) (fftshifted);
- positions (M, 2) float64 [x, y] px: patch centres in object pixel coordinates, patch
  pixel (i, k) samples the object at (y − N/2 + i, x − N/2 + k), i.e. pixel k's centre
  sits at coordinate k + 0.5;
- probe P_abs (N, N) complex64 [photons^0.5] in the unitary FFT convention:
  λ = |fftshift(fft2(P_abs·O))/N|², so Σλ = Σ|P_abs·O|².

NPZ (``format: npz``; PtychoPINN's dataset layout, also written by ptychodus'
``save_ptychopinn_training_data``): ``xcoords``, ``ycoords`` (M,) px, ``diff3d``
(M, N, N) — amplitudes sqrt(n) (``diff3d: amplitude``, PtychoPINN) or counts
(``diff3d: counts``, what ptychodus writes) —, ``probeGuess`` (N, N) complex,
optional ``objectGuess`` (H, W) complex. Positions are patch centres in objectGuess
pixel indices with pixel k's centre at k (ptychodus' ``(x_m − center_x_m)/pixel_width_m
+ (W − 1)/2``): converted by +0.5 px. Native probe convention: unitary (PtychoPINN's
simulator divides |fft2|² by N², "L2 norm is conserved").

ptychodus (``format: ptychodus``): the product HDF5 (``probe``, ``probe_position_indexes``,
``probe_position_x_m``, ``probe_position_y_m`` in metres, ``object`` with attributes
``center_x_m``, ``center_y_m``, ``pixel_width_m``, ``pixel_height_m``) and its
diffraction HDF5 (``patterns`` (M', N, N) counts, ``indexes`` (M',), ``bad_pixels``
(N, N)), matched by index. Positions: x = (x_m − center_x_m)/pixel_width_m + W/2
(ptychodus' pixel index + 0.5). Native probe convention: unnormalised FFT, the one
pty-chi (ptychodus' reconstructor) uses, λ = |fft2(P·O)|²: P_abs = N·P.

The probe's absolute scale is what the file says (under the stated convention): the
measured counts define the dose and are never rescaled, and neither is the probe.
Their consistency is measured and recorded instead (telemetry ratios):
``measured_over_expected`` = mean Σn / mean Σλ with λ from the file's object through
the pipeline's forward model, ``measured_over_parseval`` = mean Σn / (Σ|P_abs|²·mean|O|²)
(both only with an object), and always the implied rms object amplitude
ā = sqrt(mean Σn / Σ|P_abs|²). A wrong ``probe_normalization`` shows up as
``measured_over_expected`` ≈ N^±2.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .artifacts import not_a_file, write_simulated
from .config import IngestConfig
from .errors import PtychopipeError
from .physics import expected_counts, extract_patches
from .telemetry import check_finite

STAGE = "ingest"
FORMATS = ("npz", "ptychodus")
#: The probe FFT convention each format's files use when ``probe_normalization: native``.
NATIVE_PROBE_NORMALIZATION = {"npz": "unitary", "ptychodus": "unnormalized"}
#: Extra object frame (px) around the scan when the file has no object: the patches plus
#: this margin (≥ the 12 px the sub-pixel extractor reads beyond a patch).
FRAME_MARGIN_PX = 16
#: Counts read as amplitude² are rounded to integers when every value lies within this
#: relative distance of one (photon counts stored as sqrt, float error only).
INTEGER_RTOL = 1e-5
#: Default name of the diffraction file beside a ptychodus product (ptychodus' workflow layout).
PTYCHODUS_DIFFRACTION = "diffraction.h5"


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


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- conversions


def probe_scale(normalization: str, n: int) -> float:
    """Factor s with P_abs = s·P_file: 1 for ``unitary`` (λ = |fftshift(fft2(P·O))/N|²),
    N for ``unnormalized`` (λ = |fft2(P·O)|², pty-chi / ptychodus)."""
    if normalization == "unitary":
        return 1.0
    if normalization == "unnormalized":
        return float(n)
    raise IngestError(f"source.probe_normalization: expected 'unitary' or 'unnormalized', got {normalization!r}")


def resolve_normalization(fmt: str, normalization: str) -> str:
    """The probe convention in force: the format's native one for ``native``."""
    if fmt not in FORMATS:
        raise IngestError(f"source.format: expected one of {list(FORMATS)}, got {fmt!r}")
    return NATIVE_PROBE_NORMALIZATION[fmt] if normalization == "native" else normalization


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


# --------------------------------------------------------------------------- NPZ


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
    norm = resolve_normalization("npz", probe_normalization)
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


# --------------------------------------------------------------------------- ptychodus


def _h5_dataset(f: h5py.File, path: Path, key: str, required: bool = True) -> np.ndarray | None:
    if key not in f:
        if required:
            raise IngestError(f"{path}: {key}: dataset missing; expected a ptychodus "
                              f"{'diffraction' if key in ('patterns', 'indexes') else 'product'} file")
        return None
    obj = f[key]
    if not isinstance(obj, h5py.Dataset):
        raise IngestError(f"{path}: {key}: expected a dataset, got a group")
    try:
        return obj[()]
    except (OSError, RuntimeError) as exc:
        raise IngestError(f"{path}: {key}: unreadable (truncated or corrupted?): {exc}") from None


def _attr_float(node: Any, path: Path, where: str, key: str, default: float | None = None,
                positive: bool = False) -> float:
    if key not in node.attrs:
        if default is not None:
            return default
        raise IngestError(f"{path}: {where}.attrs[{key}]: attribute missing; expected a number")
    try:
        v = float(np.asarray(node.attrs[key]).item())
    except (TypeError, ValueError):
        raise IngestError(f"{path}: {where}.attrs[{key}]: expected a number, got {node.attrs[key]!r}") from None
    if not np.isfinite(v) or (positive and not v > 0):
        raise IngestError(f"{path}: {where}.attrs[{key}]: expected a finite {'positive ' if positive else ''}"
                          f"number, got {v}")
    return v


def _open_h5(path: Path, what: str) -> h5py.File:
    if not path.is_file():
        raise IngestError(not_a_file(path, what))
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise IngestError(f"{path}: not a readable HDF5 file ({what}): {exc}") from None


def read_ptychodus(product: str | Path, diffraction: str | Path | None = None,
                   probe_normalization: str = "native") -> Imported:
    """Read a ptychodus product + diffraction file pair (module docstring).

    product: the product HDF5; diffraction: its diffraction HDF5 (None: ``diffraction.h5``
    beside the product); probe_normalization: ``native`` (= unnormalized) | ``unitary`` |
    ``unnormalized``.
    """
    product = Path(product)
    diffraction = Path(diffraction) if diffraction else product.with_name(PTYCHODUS_DIFFRACTION)
    meta: dict[str, Any] = {}
    with _open_h5(product, "source.file, ptychodus product") as f:
        probe = _h5_dataset(f, product, "probe")
        obj = _h5_dataset(f, product, "object", required=False)
        idx = _h5_dataset(f, product, "probe_position_indexes")
        xm = _h5_dataset(f, product, "probe_position_x_m")
        ym = _h5_dataset(f, product, "probe_position_y_m")
        if obj is not None:
            o = f["object"]
            dx = _attr_float(o, product, "object", "pixel_width_m", positive=True)
            dy = _attr_float(o, product, "object", "pixel_height_m", positive=True)
            cx = _attr_float(o, product, "object", "center_x_m")
            cy = _attr_float(o, product, "object", "center_y_m")
            pw = _attr_float(f["probe"], product, "probe", "pixel_width_m", default=dx, positive=True)
            ph = _attr_float(f["probe"], product, "probe", "pixel_height_m", default=dy, positive=True)
        else:  # no object: the probe's pixel is the object's (the frame is built around the scan)
            dx = pw = _attr_float(f["probe"], product, "probe", "pixel_width_m", positive=True)
            dy = ph = _attr_float(f["probe"], product, "probe", "pixel_height_m", positive=True)
            cx = cy = 0.0
        for key in ("detector_object_distance_m", "photon_energy_eV", "probe_energy_eV", "probe_photon_count",
                    "exposure_time_s"):
            if key in f.attrs:
                meta[key] = _attr_float(f, product, "/", key)
        for key in ("name", "comments"):
            if key in f.attrs:
                v = f.attrs[key]
                meta[key] = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    meta.update(object_pixel_width_m=dx, object_pixel_height_m=dy)
    if obj is not None:
        meta.update(object_center_x_m=cx, object_center_y_m=cy)
    if not np.isclose(dx, dy, rtol=1e-6, atol=0.0):
        raise IngestError(f"{product}: object.attrs[pixel_height_m]: expected square pixels (= pixel_width_m "
                          f"{dx:.6g} m), got {dy:.6g} m")
    if not (np.isclose(pw, dx, rtol=1e-6, atol=0.0) and np.isclose(ph, dy, rtol=1e-6, atol=0.0)):
        raise IngestError(f"{product}: probe.attrs[pixel_width_m]: expected the object's pixel size {dx:.6g} m "
                          f"(no resampling here), got {pw:.6g} x {ph:.6g} m")
    p = square_probe(probe, f"{product}: probe")
    n = p.shape[0]
    if obj is not None:
        if obj.dtype.kind != "c" or obj.ndim not in (2, 3) or (obj.ndim == 3 and obj.shape[0] != 1):
            raise IngestError(f"{product}: object: expected a complex single-layer array (H, W) or (1, H, W), "
                              f"got {obj.dtype} {obj.shape}")
        obj = obj.reshape(obj.shape[-2:])
        if not np.all(np.isfinite(obj)):
            raise IngestError(f"{product}: object: {int(np.count_nonzero(~np.isfinite(obj)))} non-finite values")
    if idx.ndim != 1 or len(idx) == 0:
        raise IngestError(f"{product}: probe_position_indexes: expected a 1-D array of at least one index, "
                          f"got shape {idx.shape}")
    for key, arr in (("probe_position_x_m", xm), ("probe_position_y_m", ym)):
        if arr.ndim != 1 or len(arr) != len(idx):
            raise IngestError(f"{product}: {key}: expected shape ({len(idx)},) like probe_position_indexes, "
                              f"got {arr.shape}")
    if idx.dtype.kind not in "iu":
        raise IngestError(f"{product}: probe_position_indexes: expected integers, got {idx.dtype}")
    for key, arr in (("probe_position_x_m", xm), ("probe_position_y_m", ym)):
        if arr.dtype.kind not in "fiu" or not np.all(np.isfinite(arr)):
            raise IngestError(f"{product}: {key}: expected finite real values [m]")
    uniq, counts_per = np.unique(idx, return_counts=True)
    if np.any(counts_per > 1):
        raise IngestError(f"{product}: probe_position_indexes: {int(np.count_nonzero(counts_per > 1))} indexes "
                          "appear more than once; expected one position per pattern (ptychodus would average them)")

    with _open_h5(diffraction, "ptychodus diffraction file (source.diffraction)") as f:
        patterns = _h5_dataset(f, diffraction, "patterns")
        pidx = _h5_dataset(f, diffraction, "indexes")
        bad_px = _h5_dataset(f, diffraction, "bad_pixels", required=False)
        pat = f["patterns"]
        for key in ("detector_pixel_width_m", "detector_pixel_height_m"):
            if key in pat.attrs:
                meta[key] = _attr_float(pat, diffraction, "patterns", key)
    if patterns.ndim != 3 or patterns.shape[1:] != (n, n):
        raise IngestError(f"{diffraction}: patterns: expected (M, N, N) with N = {n} (the probe's size), "
                          f"got {patterns.shape}")
    if pidx.ndim != 1 or len(pidx) != len(patterns) or pidx.dtype.kind not in "iu":
        raise IngestError(f"{diffraction}: indexes: expected {len(patterns)} integers (one per pattern), "
                          f"got {pidx.dtype} {pidx.shape}")
    if patterns.dtype.kind not in "fiu":
        raise IngestError(f"{diffraction}: patterns: expected real counts, got dtype {patterns.dtype}")
    if bad_px is not None and np.any(bad_px):
        raise IngestError(f"{diffraction}: bad_pixels: {int(np.count_nonzero(bad_px))} pixels flagged; ptychopipe "
                          "has no detector mask, expected none (inpaint them first)")
    order = {int(v): i for i, v in enumerate(pidx)}
    if len(order) != len(pidx):
        raise IngestError(f"{diffraction}: indexes: duplicates; expected each pattern index once")
    missing = [int(v) for v in idx if int(v) not in order]
    if missing:
        raise IngestError(f"{diffraction}: indexes: {len(missing)} of the product's {len(idx)} probe positions "
                          f"have no pattern (first: {missing[0]}); expected every position's index")
    rows = np.array([order[int(v)] for v in idx], dtype=np.int64)
    counts = patterns[rows].astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(counts)))
    if bad or np.any(counts < 0):
        raise IngestError(f"{diffraction}: patterns: expected finite counts >= 0, got {bad} non-finite and "
                          f"{int(np.count_nonzero(counts < 0))} negative")
    norm = resolve_normalization("ptychodus", probe_normalization)
    scale = probe_scale(norm, n)
    ref, why = usable_object(obj)
    frame: dict[str, Any] = {"frame": "product object pixels"}
    if obj is not None:
        h, w = obj.shape
        positions = np.stack([(xm - cx) / dx + w / 2, (ym - cy) / dy + h / 2], axis=1).astype(np.float64)
        check_inside(positions, n, (h, w), f"{product}: probe_position_x_m/probe_position_y_m")
    else:
        positions, shift, (h, w) = frame_from_positions(np.stack([xm / dx, ym / dy], axis=1).astype(np.float64), n)
        frame = {"frame": f"no object: frame of {h}x{w} px around the scan ({FRAME_MARGIN_PX} px margin), "
                          f"positions x_m/pixel_width_m shifted by {list(shift)} px",
                 "frame_shift_px": list(shift)}
    conv: dict[str, Any] = {
        "counts_from": "diffraction patterns (counts, as stored; zero frequency at the centre)",
        "pattern_matching": f"product probe_position_indexes -> diffraction indexes ({len(rows)} of "
                            f"{len(pidx)} patterns used)",
        "positions": "x = (probe_position_x_m - center_x_m) / pixel_width_m + W/2, y likewise with H "
                     "(ptychodus pixel index + 0.5)",
        "probe_normalization": norm, "probe_scale": scale,
        "probe": f"P_abs = {scale:g} * probe ({norm} FFT convention in the file)",
        "object": f"object {why}", **frame,
    }
    return Imported(counts, (p.astype(np.complex128) * scale).astype(np.complex64), positions,
                    None if ref is None else ref.astype(np.complex64), (h, w), conv, meta)


# --------------------------------------------------------------------------- consistency


def consistency(imp: Imported, margin: int = 12) -> tuple[dict[str, float], dict[str, Any]]:
    """Dose consistency of the imported data (module docstring). Returns (telemetry ratios,
    extra attrs). With an object: λ_j through :func:`~ptychopipe.physics.expected_counts`
    for the patterns whose patch (plus the extractor's ``margin``) lies inside it."""
    n = imp.probe.shape[0]
    totals = imp.counts.sum(axis=(1, 2), dtype=np.float64)
    p2 = float(np.sum(np.abs(imp.probe.astype(np.complex128)) ** 2))
    ratios: dict[str, float] = {"implied_rms_object_amplitude": float(np.sqrt(totals.mean() / p2))}
    attrs: dict[str, Any] = {}
    if imp.object is None:
        return ratios, attrs
    h, w = imp.object_shape
    x, y = imp.positions[:, 0], imp.positions[:, 1]
    ok = ((x - n / 2 - margin >= 0) & (x + n / 2 + margin <= w - 1)
          & (y - n / 2 - margin >= 0) & (y + n / 2 + margin <= h - 1))
    if np.any(ok):
        sel = np.flatnonzero(ok)
        patches = extract_patches(imp.object.astype(np.complex128), imp.positions[sel], n, margin=margin)
        pr = imp.probe.astype(np.complex128)
        lam = np.empty((len(sel), n, n))
        for a in range(0, len(sel), 256):
            b = slice(a, a + 256)
            lam[b] = expected_counts((pr.real, pr.imag), (patches[b].real, patches[b].imag))
        meas = imp.counts[sel].astype(np.float64)
        ratios["measured_over_expected"] = float(meas.sum() / lam.sum())
        r = np.corrcoef(meas.ravel(), lam.ravel())[0, 1] if meas.size > 1 else float("nan")
        attrs["pattern_correlation"] = float(r)
        attrs["consistency_patterns"] = int(len(sel))
        ratios["measured_over_parseval"] = float(
            totals[sel].mean() / float(np.mean(np.sum(np.abs(pr[None] * patches) ** 2, axis=(1, 2)))))
    else:
        ratios["measured_over_parseval"] = float(totals.mean() / (p2 * float(np.mean(np.abs(imp.object) ** 2))))
    return ratios, attrs


# --------------------------------------------------------------------------- convention checks

#: An alternative reading of the data (patterns fftshifted, transposed, x and y swapped, counts
#: vs amplitudes) whose pattern correlation with the patterns predicted from the file's object
#: and probe beats the declared reading by more than this stops the import.
CONVENTION_MARGIN = 0.02
#: Without an object: a mean pattern this many times brighter around the corners than around
#: the centre has its zero frequency in the corner (patterns not fftshifted).
CORNER_OVER_CENTRE_LIMIT = 3.0
#: Whole-number square roots of this many counts >= 4 (all of them) mean counts were stored
#: where amplitudes were declared (sqrt of Poisson counts is rarely a whole number).
PERFECT_SQUARES_MIN = 100
OVERRIDE = "or set source.check_conventions: false to override"


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _predicted(imp: Imported, positions: np.ndarray, margin: int = 12) -> tuple[np.ndarray, np.ndarray] | None:
    """(indices, λ) of the patterns whose patch at ``positions`` lies inside the file's object
    (plus the extractor's margin), λ through the pipeline's forward model; None if none does."""
    n = imp.probe.shape[0]
    h, w = imp.object_shape
    x, y = positions[:, 0], positions[:, 1]
    ok = ((x - n / 2 - margin >= 0) & (x + n / 2 + margin <= w - 1)
          & (y - n / 2 - margin >= 0) & (y + n / 2 + margin <= h - 1))
    sel = np.flatnonzero(ok)
    if sel.size == 0 or imp.object is None:
        return None
    patches = extract_patches(imp.object.astype(np.complex128), positions[sel], n, margin=margin)
    pr = imp.probe.astype(np.complex128)
    lam = np.empty((len(sel), n, n))
    for a in range(0, len(sel), 256):
        b = slice(a, a + 256)
        lam[b] = expected_counts((pr.real, pr.imag), (patches[b].real, patches[b].imag))
    return sel, lam


def _positions_keys(fmt: str) -> str:
    return "xcoords and ycoords" if fmt == "npz" else "probe_position_x_m and probe_position_y_m"


def convention_evidence(imp: Imported, fmt: str, diff3d: str | None,
                        max_patterns: int = 512) -> tuple[dict[str, float], str | None]:
    """Check the data against the declared conventions (:data:`CONVENTION_MARGIN`).

    Returns (evidence recorded in the artifact, the problem as "evidence: advice" or None).
    With an object: the pattern correlation of the declared reading and of each alternative
    (fftshifted, transposed, x/y swapped, counts vs amplitude for NPZ). Without one: where the
    mean pattern is brightest (zero frequency in the centre expected) and, for NPZ, whether
    the numbers are whole where they should not be."""
    n = imp.probe.shape[0]
    evidence: dict[str, float] = {}
    counts = imp.counts
    sub = np.linspace(0, len(counts) - 1, min(len(counts), max_patterns)).astype(np.int64)
    if imp.object is not None:
        pred = _predicted(imp, imp.positions[sub])
        if pred is not None:
            sel, lam = pred
            meas = counts[sub[sel]].astype(np.float64)
            r0 = _pearson(meas, lam)
            evidence["pattern_correlation"] = r0
            alts: list[tuple[str, float, str]] = [
                ("if fftshifted", _pearson(np.fft.fftshift(meas, axes=(1, 2)), lam),
                 "patterns look not fftshifted (zero frequency in the corner): fftshift them before import"),
                ("if transposed", _pearson(meas.transpose(0, 2, 1), lam),
                 "patterns look transposed (rows and columns swapped): transpose each pattern before import"),
            ]
            swapped = _predicted(imp, imp.positions[sub][:, ::-1])
            if swapped is not None:
                s_sel, s_lam = swapped
                alts.append(("with x and y swapped", _pearson(counts[sub[s_sel]], s_lam),
                             f"{_positions_keys(fmt)} look swapped: swap them before import"))
            if fmt == "npz" and diff3d == "amplitude":
                alts.append(("with diff3d read as counts", _pearson(np.sqrt(meas), lam),
                             "diff3d looks like counts, not amplitudes: set source.diff3d: counts"))
            elif fmt == "npz" and diff3d == "counts":
                alts.append(("with diff3d read as amplitudes", _pearson(np.square(meas), lam),
                             "diff3d looks like amplitudes (sqrt of counts), not counts: set source.diff3d: amplitude"))
            for label, r, _ in alts:  # e.g. pattern_correlation_if_fftshifted
                evidence["pattern_correlation_" + label.replace(" ", "_")] = r
            finite = [a for a in alts if np.isfinite(a[1])]
            if finite and np.isfinite(r0):
                label, r, advice = max(finite, key=lambda a: a[1])
                if r > r0 + CONVENTION_MARGIN:
                    return evidence, (f"pattern_correlation {r0:.4f} with the file's object and probe, {r:.4f} "
                                      f"{label}: {advice}")
                return evidence, None
    mean = counts[sub].astype(np.float64).mean(axis=0)
    c, q = n // 2, max(1, n // 8)
    centre = float(mean[c - q:c + q, c - q:c + q].mean())
    corners = float(np.fft.fftshift(mean)[c - q:c + q, c - q:c + q].mean())
    evidence["mean_pattern_corners_over_centre"] = corners / centre if centre > 0 else float("inf")
    if corners > CORNER_OVER_CENTRE_LIMIT * centre:
        return evidence, (f"the mean pattern is {corners / max(centre, 1e-300):.3g}x brighter around the corners "
                          "than around the centre: patterns look not fftshifted (zero frequency in the corner): "
                          "fftshift them before import")
    conv = imp.conversions
    if (fmt == "npz" and diff3d == "amplitude" and conv.get("diff3d_whole_numbers")
            and conv.get("diff3d_values_at_least_4", 0) >= PERFECT_SQUARES_MIN):
        return evidence, (f"every diff3d value is a whole number ({conv['diff3d_values_at_least_4']} of them >= 4), "
                          "as counts are and amplitudes (sqrt of counts) rarely are: diff3d looks like counts, not "
                          "amplitudes: set source.diff3d: counts")
    if (fmt == "npz" and diff3d == "counts" and not conv.get("diff3d_whole_numbers")
            and conv.get("diff3d_squares_are_whole_numbers")):
        return evidence, ("the diff3d values are not whole numbers but their squares are: diff3d looks like "
                          "amplitudes (sqrt of counts), not counts: set source.diff3d: amplitude")
    return evidence, None


def check_shape(imp: Imported, cfg: IngestConfig) -> None:
    """The patterns must be N x N for the scenario's N (caught here, not three stages later)."""
    n = imp.counts.shape[-1]
    if cfg.N is not None and n != cfg.N:
        key = "diff3d" if cfg.format == "npz" else "patterns"
        raise IngestError(f"{cfg.file}: {key}: expected {cfg.N}x{cfg.N} patterns (the scenario's N = {cfg.N}), "
                          f"got {n}x{n}: set N: {n} for this scenario, or crop the patterns to {cfg.N}x{cfg.N}")


# --------------------------------------------------------------------------- stage


def load(cfg: IngestConfig) -> Imported:
    """Read the configured source file with the configured conventions."""
    if cfg.file is None:
        raise IngestError("source.file: expected a file path for an imported scenario, got null")
    if cfg.format == "npz":
        return read_npz(cfg.file, cfg.probe_normalization, cfg.diff3d or "amplitude")
    if cfg.format == "ptychodus":
        return read_ptychodus(cfg.file, cfg.diffraction, cfg.probe_normalization)
    raise IngestError(f"source.format: expected one of {list(FORMATS)}, got {cfg.format!r}")


def run(cfg: IngestConfig, scenario: str, out: str | Path) -> None:
    """Stage entry point: import ``cfg.file`` and write ``simulated.h5`` (docs/artifacts.md)."""
    t0 = time.perf_counter()
    imp = load(cfg)
    for name, arr in (("counts", imp.counts), ("probe", imp.probe), ("positions", imp.positions)):
        check_finite(STAGE, name, arr)
    check_shape(imp, cfg)
    evidence, problem = convention_evidence(imp, cfg.format, cfg.diff3d)
    if problem and cfg.check_conventions:
        raise IngestError(f"{cfg.file}: {problem}, {OVERRIDE}")
    if problem:
        print(f"[{STAGE}] warning: {cfg.file}: {problem} (imported anyway: source.check_conventions is false)",
              flush=True)
    ratios, extra = consistency(imp)
    extra.update({f"convention_{k}": v for k, v in evidence.items() if k != "pattern_correlation"})
    n = imp.probe.shape[0]
    measured = float(imp.counts.sum(axis=(1, 2), dtype=np.float64).mean())
    sources = {"file": cfg.file, "sha256": file_sha256(cfg.file)}
    if cfg.format == "ptychodus":
        diff = cfg.diffraction or str(Path(cfg.file).with_name(PTYCHODUS_DIFFRACTION))
        sources.update(diffraction_file=diff, diffraction_sha256=file_sha256(diff))
    attrs = {
        "has_truth": int(imp.object is not None), "object_shape": np.array(imp.object_shape, dtype=np.int64),
        "source_file": cfg.file, "source_sha256": sources["sha256"], "source_format": cfg.format,
        "source_diffraction_file": sources.get("diffraction_file", ""),
        "source_diffraction_sha256": sources.get("diffraction_sha256", ""),
        "conversions": imp.conversions, "source_metadata": imp.metadata,
        "N": n, "mean_measured_counts": measured, **extra,
    }
    write_simulated(out, stage=STAGE, scenario=scenario, config=cfg, probe=imp.probe, positions=imp.positions,
                    counts=imp.counts, object=imp.object, attrs=attrs, ratios=ratios)
    said = ", ".join(f"{k} {v:.6g}" for k, v in ratios.items())
    if "pattern_correlation" in extra:
        said += f", pattern_correlation {extra['pattern_correlation']:.6g}"
    print(f"[{STAGE}] {scenario}: {cfg.format} {cfg.file}: {len(imp.counts)} patterns of {n}x{n}, frame "
          f"{imp.object_shape[0]}x{imp.object_shape[1]} px, object {'yes' if imp.object is not None else 'no'}; "
          f"mean counts/pattern {measured:.6g}; {said}; {time.perf_counter() - t0:.2f} s", flush=True)
    mo = ratios.get("measured_over_expected")
    if mo is not None and not 0.5 < mo < 2.0:
        # a wrong probe FFT convention is off by N^2 (either way); anything else points at the counts
        by_n2 = abs(abs(np.log(mo)) / np.log(float(n) ** 2) - 1) < 0.25
        key = ("source.probe_normalization" if by_n2 else
               "source.diff3d (amplitude or counts)" if cfg.format == "npz" else "the diffraction file's counts")
        print(f"[{STAGE}] warning: measured/expected counts = {mo:.4g} with the file's object and probe "
              f"({imp.conversions['probe_normalization']} probe): is {key} right? (nothing was rescaled)",
              flush=True)
