"""The ingest stage's computation: measured data (NPZ or ptychodus) in the layout of
``results/{scenario}/simulated.h5``.

A scenario with ``source.file`` set skips the simulator: this stage converts the user's
file into the simulate stage's layout (:class:`ptychopipe.artifacts.Simulated`), and
split / group / normalize / train / infer / stitch run unchanged on it. Every unit and
convention conversion is explicit and recorded in the output (attribute
``conversions``, JSON), together with the source file's path, SHA-256 and format.
The readers, with each format's layout and conventions, are in :mod:`ptychopipe.formats`
(:mod:`~ptychopipe.formats.npz`, :mod:`~ptychopipe.formats.ptychodus`; the pipeline
conventions every conversion targets in :mod:`~ptychopipe.formats.common`);
docs/real_data.md states the conventions assumed for each format. This module checks the
data against the declared conventions and their dose consistency and records their
provenance; the stage (:mod:`ptychopipe.stages.ingest`) writes the artifact.

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

from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import file_sha256
from .config import IngestConfig
from .formats.common import Imported, IngestError
from .formats.npz import read_npz
from .formats.ptychodus import PTYCHODUS_DIFFRACTION, read_ptychodus
from .physics import expected_counts, extract_patches
from .telemetry import check_finite

STAGE = "ingest"


# --------------------------------------------------------------------------- consistency


def consistency(imp: Imported, margin: int = 12) -> tuple[dict[str, float], dict[str, Any]]:
    """Dose consistency of the imported data (module docstring). Returns (telemetry ratios,
    extra attrs). With an object: λ_j through :func:`~ptychopipe.physics.expected_counts`
    for the patterns whose patch (plus the extractor's ``margin``) lies inside it."""
    totals = imp.counts.sum(axis=(1, 2), dtype=np.float64)
    p2 = float(np.sum(np.abs(imp.probe.astype(np.complex128)) ** 2))
    ratios: dict[str, float] = {"implied_rms_object_amplitude": float(np.sqrt(totals.mean() / p2))}
    attrs: dict[str, Any] = {}
    if imp.object is None:
        return ratios, attrs
    pred = _predicted(imp, imp.positions, margin)
    if pred is not None:
        sel, patches, lam = pred
        pr = imp.probe.astype(np.complex128)
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


def _predicted(imp: Imported, positions: np.ndarray,
               margin: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(indices (K,), object patches (K, N, N) complex128, λ (K, N, N) float64 [counts]) of the
    patterns whose patch at ``positions`` (M, 2) [x, y] px lies inside the file's object (plus
    the extractor's ``margin``), λ through the pipeline's forward model; None if none does."""
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
    return sel, patches, lam


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
            sel, _, lam = pred
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
                s_sel, _, s_lam = swapped
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


# --------------------------------------------------------------------------- import


def load(cfg: IngestConfig) -> Imported:
    """Read the configured source file with the configured conventions."""
    if cfg.file is None:
        raise IngestError("source.file: expected a file path for an imported scenario, got null")
    if cfg.format == "npz":
        return read_npz(cfg.file, cfg.probe_normalization, cfg.diff3d or "amplitude")
    return read_ptychodus(cfg.file, cfg.diffraction, cfg.probe_normalization)  # IngestConfig admits no other format


def check(imp: Imported, cfg: IngestConfig) -> tuple[dict[str, float], str | None]:
    """Check the imported data before anything is written: finite counts, probe and positions,
    N x N patterns (:func:`check_shape`) and the declared conventions
    (:func:`convention_evidence`). Returns (evidence, the problem or None); raises IngestError
    on a problem unless ``cfg.check_conventions`` is false."""
    for name, arr in (("counts", imp.counts), ("probe", imp.probe), ("positions", imp.positions)):
        check_finite(STAGE, name, arr)
    check_shape(imp, cfg)
    evidence, problem = convention_evidence(imp, cfg.format, cfg.diff3d)
    if problem and cfg.check_conventions:
        raise IngestError(f"{cfg.file}: {problem}, {OVERRIDE}")
    return evidence, problem


def import_attrs(imp: Imported, cfg: IngestConfig,
                 evidence: dict[str, float]) -> tuple[dict[str, float], dict[str, Any]]:
    """(telemetry ratios, attributes) of ``simulated.h5`` for imported data: the dose
    consistency (:func:`consistency`), the convention evidence, the source files' paths,
    SHA-256 and format, the conversions, the file's metadata, N and the mean counts per
    pattern (``mean_measured_counts``)."""
    ratios, extra = consistency(imp)
    extra.update({f"convention_{k}": v for k, v in evidence.items() if k != "pattern_correlation"})
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
        "N": imp.probe.shape[0], "mean_measured_counts": measured, **extra,
    }
    return ratios, attrs


def dose_warning(imp: Imported, cfg: IngestConfig, ratios: dict[str, float]) -> str | None:
    """What to check when ``measured_over_expected`` is outside (0.5, 2), else None."""
    mo = ratios.get("measured_over_expected")
    if mo is None or 0.5 < mo < 2.0:
        return None
    # a wrong probe FFT convention is off by N^2 (either way); anything else points at the counts
    by_n2 = abs(abs(np.log(mo)) / np.log(float(imp.probe.shape[0]) ** 2) - 1) < 0.25
    key = ("source.probe_normalization" if by_n2 else
           "source.diff3d (amplitude or counts)" if cfg.format == "npz" else "the diffraction file's counts")
    return (f"measured/expected counts = {mo:.4g} with the file's object and probe "
            f"({imp.conversions['probe_normalization']} probe): is {key} right? (nothing was rescaled)")
