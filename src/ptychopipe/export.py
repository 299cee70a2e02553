"""``ptychopipe export`` (a command, not a pipeline stage): the stitched reconstruction as an
NPZ or as a ptychodus product.

Both carry the object (the stitched canvas), the probe, the test split's scan positions
and its measured diffraction data, so that a file written here reads back through the
readers of :mod:`ptychopipe.formats` to the same arrays (tests/test_export.py) and opens
in the other tools. :func:`collect` gathers them from the scenario's artifacts into a
:class:`~ptychopipe.formats.common.Reconstruction`; the writers, with each file's layout,
are :func:`ptychopipe.formats.npz.write_npz` and
:func:`ptychopipe.formats.ptychodus.write_ptychodus` (which also takes the physical
geometry a ptychodus product needs).

The object frame is the stitched canvas padded by :data:`EXPORT_MARGIN_PX` zero pixels
on each side, so every patch lies inside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import Inferred, Simulated, StitchedCanvas, TrainHistory, check_indices, read_attrs
from .formats import FORMATS
from .formats.common import ExportError, Reconstruction
from .formats.npz import write_npz
from .formats.ptychodus import write_ptychodus

#: Zero pixels added around the stitched canvas (each side) so every patch lies inside the frame.
EXPORT_MARGIN_PX = 16


def collect(stitched: str | Path, inferred: str | Path, simulated: str | Path, train: str | Path | None = None,
            margin: int = EXPORT_MARGIN_PX) -> Reconstruction:
    """Gather the reconstruction of one scenario from its artifacts (see :class:`Reconstruction`).

    The positions and counts are those of the unique test patterns the PINN reconstructed
    (inferred.h5 ``indices``), in ascending index order."""
    st = StitchedCanvas.read(stitched)
    inf = Inferred.read(inferred)
    sim = Simulated.read(simulated)
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
        losses = np.asarray(TrainHistory.read(train).history["loss"], dtype=np.float64)
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
