"""ptychodus: a product HDF5 and its diffraction HDF5. :func:`read_ptychodus` converts such
a pair into the pipeline's conventions (:mod:`ptychopipe.formats.common`),
:func:`write_ptychodus` writes one.

Layout: the product (``probe``, ``probe_position_indexes``, ``probe_position_x_m``,
``probe_position_y_m`` in metres, ``object`` with attributes ``center_x_m``,
``center_y_m``, ``pixel_width_m``, ``pixel_height_m``) and its diffraction file
(``patterns`` (M', N, N) counts, ``indexes`` (M',), ``bad_pixels`` (N, N)), matched by
index; the diffraction file is :data:`PTYCHODUS_DIFFRACTION` beside the product unless
named. Positions: x = (x_m − center_x_m)/pixel_width_m + W/2 (ptychodus' pixel index
+ 0.5). Native probe convention: unnormalised FFT, the one pty-chi (ptychodus'
reconstructor) uses, λ = |fft2(P·O)|²: P_abs = N·P.

What :func:`write_ptychodus` writes: ``product.h5`` (``probe`` (1, 1, N, N) complex64
= P_abs / N, ``object`` (1, H, W) complex64, ``probe_position_indexes``/``_x_m``/``_y_m``,
``object_layer_spacing_m``, ``loss_epochs``/``loss_values`` = the training loss per
epoch, root attributes ``name``, ``comments``, ``detector_object_distance_m``,
``photon_energy_eV``, ``probe_photon_count``) and, beside it, ``diffraction.h5``
(``patterns`` (M, N, N) float32 counts, ``indexes`` (M,), ``bad_pixels`` (N, N) all
False, attributes ``detector_pixel_width_m``/``_height_m``). Positions in metres:
x_m = (x − W/2)·pixel_size + center_x_m (the reader's inverse). ptychopipe data have no
physical units: the pixel size, photon energy and detector distance come from the caller,
else from the imported source when it had them (a ptychodus import), else nominal values
(:data:`NOMINAL_GEOMETRY`) (:func:`geometry`); the ``comments`` attribute says which, and
the detector pixel is then λ·z / (N·pixel_size) so that the geometry is self-consistent.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..artifacts import atomic_path, not_a_file
from .common import (FRAME_MARGIN_PX, ExportError, Imported, IngestError, Reconstruction, check_inside,
                     frame_from_positions, probe_scale, resolve_normalization, square_probe, usable_object)

#: The probe FFT convention of ptychodus files when ``probe_normalization: native``.
NATIVE_PROBE_NORMALIZATION = "unnormalized"
#: Default name of the diffraction file beside a ptychodus product (ptychodus' workflow layout).
PTYCHODUS_DIFFRACTION = "diffraction.h5"
#: Used when neither the caller nor the imported source gives a geometry (recorded as "nominal").
NOMINAL_GEOMETRY = {"pixel_size_m": 1.0e-8, "photon_energy_eV": 10_000.0, "detector_distance_m": 1.0}
#: h·c in eV·m (λ = HC_EV_M / E).
HC_EV_M = 1.239841984e-6


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
    norm = resolve_normalization(probe_normalization, NATIVE_PROBE_NORMALIZATION)
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
    diffraction = product.with_name(PTYCHODUS_DIFFRACTION)
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
