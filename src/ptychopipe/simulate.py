"""The simulate stage's computation: object, probe, scan positions and Poisson counts
(docs/design.md, 'Forward model', 'Dose and normalisation').

All functions are pure and seeded; the stage (:mod:`ptychopipe.stages.simulate`) writes
what :func:`simulate` returns to ``simulated.h5``.

The "lines" object (:func:`make_object`): amplitude = lo + (hi - lo)·L₁ and
phase = φlo + (φhi - φlo)·L₂, where L₁, L₂ ∈ [0, 1] are two independent blurred
maps of random anti-aliased line segments, each scaled by its own maximum.
So the amplitude spans exactly ``object.amplitude_range`` (default [0.5, 1.5],
object amplitude units) and the phase exactly ``object.phase_range`` (default
[-1, 1] rad); the background (no line) sits at the lower ends, 0.5 and -1 rad,
and the maxima are reached only where several lines cross. With the reference
parameters (392 px, 400 lines of 8–64 px, blur 1 px) ~72 % of the pixels
carry some line, the mean amplitude is 0.56 and the median 0.50.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.draw import line_aa

from .config import ObjectConfig, ProbeConfig, SimulateConfig
from .errors import PtychopipeError
from .physics import expected_counts, extract_patches
from .telemetry import check_close, check_finite, check_nonnegative

STAGE = "simulate"


class ProbeFileError(PtychopipeError, ValueError):
    """The custom probe file is missing, malformed, or does not match N."""


def _line_map(size: int, n_lines: int, length: tuple[float, float], sigma: float,
              rng: np.random.Generator) -> np.ndarray:
    """Sum of anti-aliased random line segments, blurred, scaled to [0, 1]. (size, size) float64."""
    img = np.zeros((size, size), dtype=np.float64)
    r0 = rng.uniform(0, size - 1, n_lines)
    c0 = rng.uniform(0, size - 1, n_lines)
    ang = rng.uniform(0, np.pi, n_lines)
    ln = rng.uniform(length[0], length[1], n_lines)
    r1 = np.clip(r0 + ln * np.sin(ang), 0, size - 1)
    c1 = np.clip(c0 + ln * np.cos(ang), 0, size - 1)
    for a, b, c, d in zip(r0.round().astype(int), c0.round().astype(int),
                          r1.round().astype(int), c1.round().astype(int)):
        rr, cc, val = line_aa(a, b, c, d)
        img[rr, cc] += val
    if sigma > 0:
        img = gaussian_filter(img, sigma)
    top = img.max()
    return img / top if top > 0 else img


def _blob_map(size: int, n_blobs: int, sigma: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Sum of ``n_blobs`` isotropic Gaussian blobs at uniform random centres, each of a
    standard deviation uniform in ``sigma`` (px) and a weight uniform in [0.2, 1], scaled
    to [0, 1]. (size, size) float64."""
    img = np.zeros((size, size), dtype=np.float64)
    rows, cols = np.ogrid[:size, :size]
    centres = rng.uniform(0, size - 1, (n_blobs, 2))
    sigmas = rng.uniform(sigma[0], sigma[1], n_blobs)
    weights = rng.uniform(0.2, 1.0, n_blobs)
    for (r, c), s, w in zip(centres, sigmas, weights):
        lo_r, hi_r = max(0, int(r - 4 * s)), min(size, int(r + 4 * s) + 1)
        lo_c, hi_c = max(0, int(c - 4 * s)), min(size, int(c + 4 * s) + 1)
        img[lo_r:hi_r, lo_c:hi_c] += w * np.exp(-((rows[lo_r:hi_r] - r) ** 2 + (cols[:, lo_c:hi_c] - c) ** 2)
                                                 / (2 * s * s))
    top = img.max()
    return img / top if top > 0 else img


def make_object(cfg: ObjectConfig) -> np.ndarray:
    """The seeded object of ``cfg.kind``. Returns (size, size) complex128.

    Amplitude = lo + (hi - lo)·L₁ with L₁ ∈ [0, 1] a map (``amplitude_range`` = [lo, hi],
    object amplitude units); phase from an independent map L₂ scaled to ``phase_range``
    (rad). "lines": blurred maps of ``cfg.n_lines`` random line segments of length in
    ``line_length_px``, blurred by ``blur_sigma_px``; "blobs": smooth maps of ``n_blobs``
    Gaussian blobs of standard deviation in ``blob_sigma_px`` (an object of another kind,
    for models applied to what they were not trained on). Seed: ``cfg.seed``.
    """
    rng = np.random.default_rng(cfg.seed)
    if cfg.kind == "lines":
        l1 = _line_map(cfg.size, cfg.n_lines, cfg.line_length_px, cfg.blur_sigma_px, rng)
        l2 = _line_map(cfg.size, cfg.n_lines, cfg.line_length_px, cfg.blur_sigma_px, rng)
    else:  # "blobs" (ObjectConfig admits no other kind)
        l1 = _blob_map(cfg.size, cfg.n_blobs, cfg.blob_sigma_px, rng)
        l2 = _blob_map(cfg.size, cfg.n_blobs, cfg.blob_sigma_px, rng)
    amp = cfg.amplitude_range[0] + (cfg.amplitude_range[1] - cfg.amplitude_range[0]) * l1
    phase = cfg.phase_range[0] + (cfg.phase_range[1] - cfg.phase_range[0]) * l2
    return amp * np.exp(1j * phase)


def ideal_probe(n: int, footprint_px: float) -> np.ndarray:
    """A focused probe: the far field of a soft-edged circular pupil. (n, n) complex128.

    The pupil radius ρ (frequency px) is chosen so that the Airy central lobe has
    diameter ``footprint_px``: 2·0.61·n/ρ = footprint → ρ = 1.22·n/footprint. The
    pupil edge is a one-pixel cosine taper to damp the side lobes. Unit peak amplitude
    (absolute scale is set later by the dose, docs/design.md, 'Dose and normalisation').
    """
    rho = 1.22 * n / footprint_px
    f = np.fft.fftshift(np.fft.fftfreq(n)) * n
    r = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    pupil = np.clip(0.5 + (rho - r), 0.0, 1.0)
    pupil = 0.5 - 0.5 * np.cos(np.pi * pupil)
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil)))
    return probe / np.abs(probe).max()


def load_probe(path: str | Path, key: str, n: int) -> np.ndarray:
    """Read an N×N complex probe from an NPZ (array ``key``) or HDF5 (dataset ``key``).

    Suffixes: .npz, or .h5, .hdf5, .hdf, .nxs. Returns (n, n) complex128.
    Raises ProbeFileError (one line: file, key, expected vs got) when the file is
    missing or unreadable, the suffix is none of those, the key is absent, or the array
    is not (n, n) complex, finite and non-zero. Pickled NPZ content is refused
    (allow_pickle=False).
    """
    path = Path(path)
    if not path.is_file():
        raise ProbeFileError(f"{path}: is a directory; expected the probe file (probe.file)" if path.is_dir()
                             else f"{path}: probe file not found")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if key not in z.files:
                    raise ProbeFileError(f"{path}: key {key!r} missing; found {sorted(z.files)}")
                arr = z[key]
        elif path.suffix in (".h5", ".hdf5", ".hdf", ".nxs"):
            with h5py.File(path, "r") as f:
                if key not in f:
                    raise ProbeFileError(f"{path}: dataset {key!r} missing; found {sorted(f.keys())}")
                arr = f[key][()]
        else:
            raise ProbeFileError(f"{path}: expected a .npz or .h5/.hdf5/.hdf/.nxs probe file, got suffix {path.suffix!r}")
    except ProbeFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear line
        raise ProbeFileError(f"{path}: unreadable probe file: {exc}") from None
    arr = np.asarray(arr)
    if arr.shape != (n, n):
        raise ProbeFileError(f"{path}: {key}: expected shape ({n}, {n}), got {arr.shape}")
    if not np.iscomplexobj(arr):
        raise ProbeFileError(f"{path}: {key}: expected a complex array, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise ProbeFileError(f"{path}: {key}: {int(np.count_nonzero(~np.isfinite(arr)))} non-finite values; "
                             "expected all finite")
    if not np.any(arr):
        raise ProbeFileError(f"{path}: {key}: all zeros; expected a non-zero probe")
    return arr.astype(np.complex128)


def make_probe(cfg: ProbeConfig, n: int) -> np.ndarray:
    """Probe shape (unit peak or file scale; absolute scale comes from the dose). (n, n) complex128."""
    if cfg.kind == "ideal":
        return ideal_probe(n, cfg.footprint_px)
    if cfg.file is None:
        raise ProbeFileError("probe.file: expected a path for probe.kind=custom, got null")
    return load_probe(cfg.file, cfg.key, n)


def random_positions(n_positions: int, size: int, n: int, buffer_px: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Uniform random patch centres [x, y] px (float64, (M, 2)) in [n/2 + buffer, size - n/2 - buffer]."""
    lo = n / 2 + buffer_px
    hi = size - n / 2 - buffer_px
    if hi <= lo:
        raise ValueError(f"object.size: {size} px leaves no room for {n} px patches with a "
                         f"{buffer_px} px buffer; expected > {n + 2 * buffer_px}")
    return rng.uniform(lo, hi, size=(n_positions, 2))


#: px of object the sub-pixel interpolation reads beyond each side of a patch (the
#: windowed-sinc taps of :func:`ptychopipe.physics.extract_patches`)
PATCH_MARGIN = 12


def object_patches(obj: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """The N×N object patches O_j that the simulator lights, exactly as it cuts them.

    obj: (H, W) complex [object units]; positions: (M, 2) float [x, y] px, patch centres.
    Returns (M, N, N) complex128. Positions keep N/2 + buffer from the edge, so the object
    is padded with its edge values where the buffer is narrower than
    :data:`PATCH_MARGIN`; the padding enters only through the outer interpolation taps.
    Anything that compares a patch with the simulated patterns (a misfit, for example)
    should cut it here: with margin 4 instead, a patch differs by 0.4 % rms (gs1_custom,
    `quick`), a relative misfit of ≈ 1.5e-5, 15× what Poisson noise gives at 1e9 photons.
    """
    pad = PATCH_MARGIN + 1
    padded = np.pad(np.asarray(obj), pad, mode="edge")
    return extract_patches(padded, np.asarray(positions, dtype=np.float64) + pad, n, margin=PATCH_MARGIN)


def simulate(cfg: SimulateConfig) -> dict[str, np.ndarray | float]:
    """Run the simulation (docs/design.md, 'Forward model', 'Dose and normalisation'). Pure: same config, same arrays.

    Returns object (H, W) complex64, probe (N, N) complex64 (P_abs), positions (M, 2)
    float64 [x, y] px, expected (M, N, N) float64 λ, counts (M, N, N) float32,
    amplitude (M, N, N) float32, probe_scale (float: P_abs = probe_scale·P),
    exit_power (float: Σ_j Σ|P_abs·O_j|², computed without FFT, for the Parseval check).
    Patches are extracted and propagated ``chunk`` patterns at a time, so the peak
    memory is the stored arrays plus O(chunk·N²).
    """
    n = cfg.N
    obj = make_object(cfg.object)
    probe = make_probe(cfg.probe, n)
    rng = np.random.default_rng(cfg.seed)
    positions = random_positions(cfg.n_positions, cfg.object.size, n, cfg.buffer_px, rng)
    chunk = 1024
    lam = np.empty((len(positions), n, n), dtype=np.float64)
    exit_power = 0.0  # Σ|P·O_j|² over all patterns (unit-scale probe)
    for a in range(0, len(positions), chunk):
        patches = object_patches(obj, positions[a:a + chunk], n)
        lam[a:a + chunk] = expected_counts((probe.real, probe.imag), (patches.real, patches.imag))
        exit_power += float(np.sum(np.abs(probe * patches) ** 2))
    scale = np.sqrt(cfg.nphotons / lam.sum(axis=(1, 2)).mean())
    probe_abs = probe * scale
    lam *= scale ** 2
    counts = rng.poisson(lam).astype(np.float32)
    return {
        "object": obj.astype(np.complex64),
        "probe": probe_abs.astype(np.complex64),
        "positions": positions,
        "exit_power": exit_power * scale ** 2,
        "expected": lam,
        "counts": counts,
        "amplitude": np.sqrt(counts),
        "probe_scale": float(scale),
    }


def check_invariants(cfg: SimulateConfig, sim: dict) -> dict[str, float]:
    """Parseval (1e-5 rel), dose (1e-3 rel), finiteness, non-negative counts. Returns the
    measured invariants (for telemetry)."""
    parseval = float(sim["expected"].sum() / sim["exit_power"])
    check_close(STAGE, "expected", parseval, 1.0, 1e-5, "Σλ / Σ|P·O|² (Parseval)")
    dose = float(sim["expected"].sum(axis=(1, 2)).mean())
    check_close(STAGE, "expected", dose, cfg.nphotons, 1e-3, "mean expected photons per pattern")
    for name in ("object", "probe", "expected", "counts", "amplitude"):
        check_finite(STAGE, name, sim[name])
    check_nonnegative(STAGE, "counts", sim["counts"])
    return {"parseval": parseval, "dose": dose / cfg.nphotons}
