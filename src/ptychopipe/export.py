"""Exporters: the stitched reconstruction as an NPZ and as a ptychodus product.

Both carry the object (the stitched canvas), the probe, the test split's scan positions
and its measured diffraction data, so that a file written here reads back through
:mod:`ptychopipe.ingest` to the same arrays (tests/test_export.py) and opens in the
other tools:

- NPZ (PtychoPINN's layout): ``objectGuess`` (H, W) complex64 [object amplitude],
  ``probeGuess`` (N, N) complex64 = P_abs (unitary FFT convention, the NPZ importer's
  native one), ``diff3d`` (M, N, N) float64 = sqrt(counts) [photons^0.5], ``xcoords``,
  ``ycoords`` (M,) float64 px in objectGuess pixel indices (pixel k centred at k: our
  position − 0.5), ``xcoords_start``/``ycoords_start`` (the same), ``scan_index``
  (M,) int64 zeros, and ``ptychopipe_provenance`` (a JSON string).
- ptychodus: ``product.h5`` (ptychodus' product layout: ``probe`` (1, 1, N, N) complex64
  = P_abs / N in pty-chi's unnormalised FFT convention, ``object`` (1, H, W) complex64,
  ``probe_position_indexes``/``_x_m``/``_y_m``, ``object_layer_spacing_m``,
  ``loss_epochs``/``loss_values`` = the PINN's training loss per epoch, root attributes
  ``name``, ``comments``, ``detector_object_distance_m``, ``photon_energy_eV``,
  ``probe_photon_count``) and, beside it, ``diffraction.h5`` (``patterns`` (M, N, N)
  float32 counts, ``indexes`` (M,), ``bad_pixels`` (N, N) all False, attributes
  ``detector_pixel_width_m``/``_height_m``). Positions in metres:
  x_m = (x − W/2)·pixel_size + center_x_m (the importer's inverse).

The object frame is the stitched canvas padded by :data:`EXPORT_MARGIN_PX` zero pixels
on each side, so every patch lies inside it. ptychopipe data have no physical units:
the pixel size, photon energy and detector distance come from the imported source when
it had them (a ptychodus import), else from the caller, else nominal values
(:data:`NOMINAL_GEOMETRY`); the ``comments`` attribute says which, and the detector
pixel is then λ·z / (N·pixel_size) so that the geometry is self-consistent.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .artifacts import (atomic_path, check_indices, read_attrs, read_inferred, read_simulated, read_stitched,
                        read_train_history)
from .errors import PtychopipeError

#: Zero pixels added around the stitched canvas (each side) so every patch lies inside the frame.
EXPORT_MARGIN_PX = 16
#: Used when neither the caller nor the imported source gives a geometry (recorded as "nominal").
NOMINAL_GEOMETRY = {"pixel_size_m": 1.0e-8, "photon_energy_eV": 10_000.0, "detector_distance_m": 1.0}
#: h·c in eV·m (λ = HC_EV_M / E).
HC_EV_M = 1.239841984e-6
FORMATS = ("npz", "ptychodus")


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


def collect(stitched: str | Path, inferred: str | Path, simulated: str | Path, train: str | Path | None = None,
            margin: int = EXPORT_MARGIN_PX) -> Reconstruction:
    """Gather the reconstruction of one scenario from its artifacts (see :class:`Reconstruction`).

    The positions and counts are those of the unique test patterns the PINN reconstructed
    (inferred.h5 ``indices``), in ascending index order."""
    st = read_stitched(stitched)
    inf = read_inferred(inferred)
    sim = read_simulated(simulated)
    idx = np.unique(inf.indices.ravel()).astype(np.int64)
    if idx.size == 0:
        raise ExportError(f"{inferred}: indices: empty; expected the test patterns")
    if inf.probe.shape != sim.probe.shape or not np.allclose(
            inf.probe, sim.probe, rtol=1e-6, atol=1e-6 * float(np.abs(sim.probe).max())):
        shapes = f" (shape {inf.probe.shape} vs {sim.probe.shape})" if inf.probe.shape != sim.probe.shape else ""
        raise ExportError(f"{inferred}: probe: differs from {simulated}{shapes}; expected the same P_abs")
    check_indices(idx, len(sim.counts), f"{inferred}: indices", simulated)
    h, w = st.object.shape
    obj = np.zeros((h + 2 * margin, w + 2 * margin), dtype=np.complex64)
    obj[margin:margin + h, margin:margin + w] = st.object
    origin = (st.origin_x - margin, st.origin_y - margin)
    positions = sim.positions[idx] - np.array(origin, dtype=np.float64)
    n = sim.probe.shape[0]
    hh, ww = obj.shape
    if (positions[:, 0].min() < n / 2 or positions[:, 1].min() < n / 2 or positions[:, 0].max() > ww - n / 2
            or positions[:, 1].max() > hh - n / 2):
        raise ExportError(f"{stitched}: origin/shape: the stitched canvas does not hold the test patches; "
                          "expected the stitch stage's canvas for these inferred patches")
    losses = np.zeros(0)
    if train is not None:
        losses = np.asarray(read_train_history(train).history["loss"], dtype=np.float64)
    attrs = read_attrs(simulated)
    meta: dict[str, Any] = {}
    if attrs.get("source_metadata"):
        meta = json.loads(attrs["source_metadata"])
    prov = {"scenario": str(st.attrs.get("scenario", "")), "stitched": str(stitched), "inferred": str(inferred),
            "simulated": str(simulated), "simulated_stage": str(attrs.get("stage", "")),
            "source_file": str(attrs.get("source_file", "")), "origin_px": list(origin),
            "stitched_config_hash": str(st.attrs.get("config_hash", "")), "ptychopipe_version":
            str(st.attrs.get("ptychopipe_version", ""))}
    return Reconstruction(obj, sim.probe.astype(np.complex64), positions, sim.counts[idx].astype(np.float32),
                          idx, origin, losses, meta, prov)


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


def geometry(rec: Reconstruction, pixel_size_m: float | None = None, photon_energy_eV: float | None = None,
             detector_distance_m: float | None = None) -> tuple[dict[str, float], str]:
    """Physical geometry for the ptychodus files: each value from the caller, else the imported
    source's metadata, else :data:`NOMINAL_GEOMETRY`. Returns ({pixel_size_m, photon_energy_eV,
    detector_distance_m, detector_pixel_m}, a sentence saying where each came from)."""
    m = rec.metadata
    picks = {
        "pixel_size_m": (pixel_size_m, m.get("object_pixel_width_m")),
        "photon_energy_eV": (photon_energy_eV, m.get("photon_energy_eV", m.get("probe_energy_eV"))),
        "detector_distance_m": (detector_distance_m, m.get("detector_object_distance_m")),
    }
    out: dict[str, float] = {}
    said = []
    for key, (given, source) in picks.items():
        if given is not None:
            out[key], origin = float(given), "given"
        elif source is not None:
            out[key], origin = float(source), "from the imported source"
        else:
            out[key], origin = NOMINAL_GEOMETRY[key], "nominal (ptychopipe data have no physical units)"
        if not (np.isfinite(out[key]) and out[key] > 0):
            raise ExportError(f"{key}: expected a positive number, got {out[key]}")
        said.append(f"{key} = {out[key]:.6g} ({origin})")
    n = rec.probe.shape[0]
    out["detector_pixel_m"] = HC_EV_M / out["photon_energy_eV"] * out["detector_distance_m"] / (n * out["pixel_size_m"])
    return out, "; ".join(said)


def write_ptychodus(rec: Reconstruction, product: str | Path, pixel_size_m: float | None = None,
                    photon_energy_eV: float | None = None, detector_distance_m: float | None = None
                    ) -> tuple[Path, Path]:
    """Write ``rec`` as ptychodus ``product.h5`` + ``diffraction.h5`` beside it (module
    docstring), atomically as a pair; an existing diffraction.h5 beside ``product`` is
    replaced (it belongs to the product of that name). Returns (product path, diffraction path)."""
    product = Path(product)
    diffraction = product.with_name("diffraction.h5")
    if product.resolve() == diffraction.resolve():
        raise ExportError(f"{product}: the product cannot be named diffraction.h5 (that is its diffraction file)")
    product.parent.mkdir(parents=True, exist_ok=True)
    geo, said = geometry(rec, pixel_size_m, photon_energy_eV, detector_distance_m)
    n = rec.probe.shape[0]
    h, w = rec.object.shape
    dx = geo["pixel_size_m"]
    m = len(rec.positions)
    indexes = np.arange(m, dtype=np.int64)
    comments = (f"ptychopipe PINN reconstruction (stitched test region) of scenario {rec.provenance['scenario']}; "
                f"probe in pty-chi's unnormalised FFT convention (= P_abs / N); geometry: {said}; provenance "
                f"{json.dumps(rec.provenance, sort_keys=True)}")
    # Both files are written under temporary names and renamed only once both are complete,
    # diffraction.h5 first and the product last (the stack unwinds last-in first): a failed
    # write leaves the previous pair, and a new product.h5 always has its own diffraction.h5
    # beside it (only a kill between the two renames can leave a new diffraction.h5 beside
    # the old product).
    with ExitStack() as stack:
        tmp_prod = stack.enter_context(atomic_path(product))
        tmp_diff = stack.enter_context(atomic_path(diffraction))
        with h5py.File(tmp_diff, "w") as f:
            pat = f.create_dataset("patterns", data=rec.counts.astype(np.float32), compression="gzip")
            pat.attrs["detector_pixel_width_m"] = geo["detector_pixel_m"]
            pat.attrs["detector_pixel_height_m"] = geo["detector_pixel_m"]
            f.create_dataset("indexes", data=indexes)
            f.create_dataset("bad_pixels", data=np.zeros((n, n), dtype=bool))
        with h5py.File(tmp_prod, "w") as f:
            f.attrs["name"] = str(rec.provenance["scenario"] or "ptychopipe")
            f.attrs["comments"] = comments
            f.attrs["detector_object_distance_m"] = geo["detector_distance_m"]
            f.attrs["photon_energy_eV"] = geo["photon_energy_eV"]
            f.attrs["probe_photon_count"] = float(rec.counts.sum(axis=(1, 2), dtype=np.float64).mean())
            f.attrs["far_field"] = True
            f.create_dataset("probe_position_indexes", data=indexes)
            f.create_dataset("probe_position_x_m", data=(rec.positions[:, 0] - w / 2) * dx)
            f.create_dataset("probe_position_y_m", data=(rec.positions[:, 1] - h / 2) * dx)
            p = f.create_dataset("probe", data=(rec.probe / np.float32(n)).astype(np.complex64)[None, None])
            p.attrs["pixel_width_m"] = dx
            p.attrs["pixel_height_m"] = dx
            o = f.create_dataset("object", data=rec.object.astype(np.complex64)[None])
            o.attrs["center_x_m"] = 0.0
            o.attrs["center_y_m"] = 0.0
            o.attrs["pixel_width_m"] = dx
            o.attrs["pixel_height_m"] = dx
            f.create_dataset("object_layer_spacing_m", data=np.zeros(0, dtype=np.float64))
            f.create_dataset("loss_epochs", data=np.arange(len(rec.losses), dtype=np.int64))
            f.create_dataset("loss_values", data=rec.losses.astype(np.float64))
    return product, diffraction


def run(fmt: str, out: str | Path, *, stitched: str | Path, inferred: str | Path, simulated: str | Path,
        train: str | Path | None = None, pixel_size_m: float | None = None, photon_energy_eV: float | None = None,
        detector_distance_m: float | None = None) -> list[Path]:
    """``ptychopipe export``: write the scenario's reconstruction in ``fmt`` (npz | ptychodus)
    to ``out`` (ptychodus: the product path; diffraction.h5 goes beside it). Returns the paths."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: expected one of {list(FORMATS)}, got {fmt!r}")
    if fmt == "npz" and any(v is not None for v in (pixel_size_m, photon_energy_eV, detector_distance_m)):
        raise ExportError("--pixel-size-m/--photon-energy-ev/--detector-distance-m: only for --format ptychodus "
                          "(an NPZ has no physical geometry)")
    rec = collect(stitched, inferred, simulated, train)
    if fmt == "npz":
        return [write_npz(rec, out)]
    return list(write_ptychodus(rec, out, pixel_size_m, photon_energy_eV, detector_distance_m))
