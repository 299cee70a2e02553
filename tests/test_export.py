"""Exporters (ptychopipe.export and the writers in ptychopipe.formats): the stitched
reconstruction as NPZ and as a ptychodus product + diffraction file, round-tripped through
the readers to the same arrays."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from evaluate_helpers import run_evaluation
from ptychopipe import export
from ptychopipe.formats import npz, ptychodus
from ptychopipe.artifacts import ArtifactError, Inferred, Simulated, StitchedCanvas, read_attrs, read_telemetry
from ptychopipe.config import IngestConfig
from ptychopipe.formats.common import ExportError, Reconstruction
from ptychopipe.stages import ingest

from pipeline_helpers import REPO


@pytest.fixture(scope="module")
def evaluated(ci_data, tmp_path_factory):
    """gs2_custom (gridsize 2: repeated test patterns) through synthetic infer + stitch + compare."""
    d = tmp_path_factory.mktemp("export_eval")
    data = ci_data["gs2_custom"]
    _, paths = run_evaluation(d, data, "gs2_custom", noise=0.01)
    return {"simulated": data["simulated"], **paths}


def expected(evaluated):
    """What an export must contain: unique test patterns in index order, positions in the
    padded canvas frame, the padded canvas."""
    st = StitchedCanvas.read(evaluated["stitched"])
    sim = Simulated.read(evaluated["simulated"])
    idx = np.unique(Inferred.read(evaluated["inferred"]).indices)
    m = export.EXPORT_MARGIN_PX
    origin = np.array([st.origin_x - m, st.origin_y - m], dtype=np.float64)
    obj = np.pad(st.object, m)
    return sim, idx, sim.positions[idx] - origin, obj


def test_npz_round_trip(tmp_path, evaluated):
    out = tmp_path / "rec.npz"
    paths = export.run("npz", out, stitched=evaluated["stitched"], inferred=evaluated["inferred"],
                       simulated=evaluated["simulated"], train=evaluated["train"])
    assert paths == [out] and not list(tmp_path.glob(".rec.npz.tmp*"))
    sim, idx, pos, obj = expected(evaluated)
    with np.load(out, allow_pickle=False) as f:
        assert f["diff3d"].dtype == np.float64 and f["probeGuess"].dtype == np.complex64
        prov = json.loads(str(f["ptychopipe_provenance"]))
        np.testing.assert_array_equal(f["xcoords_start"], f["xcoords"])
    assert prov["scenario"] == "gs2_custom" and prov["conventions"]["diff3d"].startswith("amplitude")
    imp = npz.read_npz(out)
    assert np.array_equal(imp.counts, sim.counts[idx])  # exact: float64 sqrt, squared, rounded
    assert np.array_equal(imp.probe, sim.probe)
    assert np.array_equal(imp.object, obj)
    np.testing.assert_allclose(imp.positions, pos, rtol=0, atol=1e-12)
    assert imp.object_shape == obj.shape


def test_ptychodus_round_trip_and_layout(tmp_path, evaluated):
    prod = tmp_path / "product.h5"
    paths = export.run("ptychodus", prod, stitched=evaluated["stitched"], inferred=evaluated["inferred"],
                       simulated=evaluated["simulated"], train=evaluated["train"], photon_energy_eV=8000.0)
    assert paths == [prod, tmp_path / "diffraction.h5"]
    sim, idx, pos, obj = expected(evaluated)
    n = sim.probe.shape[0]
    with h5py.File(prod) as f:
        assert f["probe"].shape == (1, 1, n, n) and f["object"].shape == (1, *obj.shape)
        assert np.array_equal(f["probe"][0, 0] * np.float32(n), sim.probe)  # pty-chi convention: P_abs / N
        assert f["loss_values"].shape == f["loss_epochs"].shape == (4,)  # the training loss history
        assert f.attrs["photon_energy_eV"] == 8000.0
        comments = f.attrs["comments"]
        dx = f["object"].attrs["pixel_width_m"]
        dist = f.attrs["detector_object_distance_m"]
    assert "photon_energy_eV = 8000 (given)" in comments and "pixel_size_m = 1e-08 (nominal" in comments
    with h5py.File(tmp_path / "diffraction.h5") as f:
        det = f["patterns"].attrs["detector_pixel_width_m"]
        assert not f["bad_pixels"][()].any()
    # self-consistent far-field geometry: detector pixel = λ z / (N dx)
    assert det == pytest.approx(ptychodus.HC_EV_M / 8000.0 * dist / (n * dx), rel=1e-12)
    imp = ptychodus.read_ptychodus(prod)
    assert np.array_equal(imp.counts, sim.counts[idx])
    assert np.array_equal(imp.probe, sim.probe)
    assert np.array_equal(imp.object, obj)
    np.testing.assert_allclose(imp.positions, pos, rtol=0, atol=1e-9)


def test_exported_files_run_through_the_ingest_stage(tmp_path, evaluated):
    """Export -> ingest (the workflow's rule): a readable simulated.h5 whose object is the
    reconstruction, and whose data the reconstruction explains (the measured/expected check)."""
    export.run("npz", tmp_path / "rec.npz", stitched=evaluated["stitched"], inferred=evaluated["inferred"],
               simulated=evaluated["simulated"])
    out = tmp_path / "simulated.h5"
    ingest.run(IngestConfig(file=str(tmp_path / "rec.npz"), format="npz", probe_normalization="native",
                            diff3d="amplitude", diffraction=None), "back", out)
    back = Simulated.read(out)
    assert back.has_truth and read_attrs(out)["stage"] == "ingest"
    # the synthetic reconstruction is the truth plus 1 % noise: it explains the counts to ~1 %
    _, ratios = read_telemetry(out)
    assert ratios["measured_over_expected"] == pytest.approx(1.0, abs=0.03)


def test_geometry_comes_from_an_imported_ptychodus_source(tmp_path, evaluated):
    rec = export.collect(evaluated["stitched"], evaluated["inferred"], evaluated["simulated"])
    rec = Reconstruction(**{**rec.__dict__, "metadata": {"object_pixel_width_m": 2e-8,
                                                                 "probe_energy_eV": 9000.0}})
    geo, said = ptychodus.geometry(rec, detector_distance_m=3.0)
    assert geo["pixel_size_m"] == 2e-8 and geo["photon_energy_eV"] == 9000.0 and geo["detector_distance_m"] == 3.0
    assert "from the imported source" in said and "(given)" in said


def test_export_refuses_mismatched_artifacts_and_bad_options(tmp_path, evaluated, ci_data):
    with pytest.raises(ExportError, match="probe: differs from"):
        export.run("npz", tmp_path / "x.npz", stitched=evaluated["stitched"], inferred=evaluated["inferred"],
                   simulated=ci_data["gs1_ideal"]["simulated"])
    with pytest.raises(ExportError, match="only for --format ptychodus"):
        export.run("npz", tmp_path / "x.npz", stitched=evaluated["stitched"], inferred=evaluated["inferred"],
                   simulated=evaluated["simulated"], pixel_size_m=1e-8)
    with pytest.raises(ExportError, match="pixel_size_m: expected a positive number"):
        export.run("ptychodus", tmp_path / "p.h5", stitched=evaluated["stitched"], inferred=evaluated["inferred"],
                   simulated=evaluated["simulated"], pixel_size_m=-1.0)
    assert not list(tmp_path.iterdir())


def test_ptychodus_pair_is_replaced_together_or_not_at_all(tmp_path, evaluated):
    """A product write that fails after diffraction.h5 is complete leaves the previous pair
    untouched (no new diffraction.h5 beside an old product) and no temporary files."""
    import dataclasses

    rec = export.collect(evaluated["stitched"], evaluated["inferred"], evaluated["simulated"])
    product, diffraction = ptychodus.write_ptychodus(rec, tmp_path / "product.h5")
    before = {p.name: p.read_bytes() for p in (product, diffraction)}
    broken = dataclasses.replace(rec, counts=rec.counts[:, ::2, ::2].copy(), losses=None)  # fails in the product
    with pytest.raises(TypeError):
        ptychodus.write_ptychodus(broken, tmp_path / "product.h5")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_ptychodus_product_is_renamed_after_its_diffraction_file(tmp_path, evaluated, monkeypatch):
    """A new product.h5 always has its own diffraction.h5: the product is renamed last."""
    import os

    rec = export.collect(evaluated["stitched"], evaluated["inferred"], evaluated["simulated"])
    replace, order = os.replace, []

    def recording(src, dst):
        order.append(os.path.basename(dst))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", recording)
    ptychodus.write_ptychodus(rec, tmp_path / "product.h5")
    assert order == ["diffraction.h5", "product.h5"]


def test_export_refuses_indices_outside_the_simulated_patterns(tmp_path, evaluated):
    """An inferred.h5 whose pattern indices do not exist in simulated.h5 (another scenario's
    run): one line naming both files, no output."""
    import shutil

    inferred = tmp_path / "inferred.h5"
    shutil.copy(evaluated["inferred"], inferred)
    with h5py.File(inferred, "r+") as f:
        f["indices"][...] = f["indices"][()] + 100_000
    with pytest.raises(ArtifactError) as err:
        export.run("npz", tmp_path / "x.npz", stitched=evaluated["stitched"], inferred=inferred,
                   simulated=evaluated["simulated"])
    msg = str(err.value)
    assert f"{inferred}: indices: index " in msg and f"patterns of {evaluated['simulated']}" in msg
    assert "\n" not in msg and not (tmp_path / "x.npz").exists()


def test_cli_export_from_a_results_folder(tmp_path, evaluated):
    scen = tmp_path / "results" / "gs2_custom"
    scen.mkdir(parents=True)
    for name in ("simulated", "stitched", "inferred", "train"):
        (scen / f"{name}.h5").write_bytes(open(evaluated[name], "rb").read())
    res = subprocess.run([sys.executable, "-m", "ptychopipe", "export", "--format", "npz", "--scenario", "gs2_custom",
                          "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out.npz")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out.npz").is_file()
    res = subprocess.run([sys.executable, "-m", "ptychopipe", "export", "--format", "npz", "--scenario", "nope",
                          "--results", str(tmp_path / "results"), "--out", str(tmp_path / "o2.npz")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1 and len(lines) == 1 and "stitched.h5: file not found" in lines[0]
