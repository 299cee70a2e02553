"""simulated.h5 has one writer (artifacts.Simulated.write) for the simulate and the ingest
stage: both produce the same datasets, dtypes and units, and the reader accepts both."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ptychopipe.artifacts import Simulated
from ptychopipe.config import IngestConfig, ObjectConfig, ProbeConfig, SimulateConfig
from ptychopipe.stages import ingest, simulate

CFG = SimulateConfig(N=32, n_positions=6, buffer_px=2.0, nphotons=1e6, seed=0,
                     object=ObjectConfig("lines", 96, 1, 20, (4.0, 16.0), 1.0, (0.5, 1.5), (-1.0, 1.0)),
                     probe=ProbeConfig("ideal", 16.0, None, None))


def _layout(path):
    with h5py.File(path, "r") as f:
        return {name: (f[name].dtype.kind, f[name].ndim, f[name].attrs["units"])
                for name in ("object", "probe", "positions", "counts", "amplitude")}


def test_simulate_and_ingest_write_the_same_layout(tmp_path):
    simulate.run(CFG, "s", tmp_path / "sim.h5")
    sim = Simulated.read(tmp_path / "sim.h5")
    npz = tmp_path / "data.npz"
    np.savez(npz, xcoords=sim.positions[:, 0] - 0.5, ycoords=sim.positions[:, 1] - 0.5,
             diff3d=np.sqrt(sim.counts.astype(np.float64)), probeGuess=sim.probe, objectGuess=sim.object)
    ingest.run(IngestConfig(file=str(npz), format="npz", probe_normalization="native", diff3d="amplitude",
                            diffraction=None, N=32), "i", tmp_path / "ing.h5")
    assert _layout(tmp_path / "sim.h5") == _layout(tmp_path / "ing.h5")
    got = Simulated.read(tmp_path / "ing.h5")
    np.testing.assert_array_equal(got.counts, sim.counts)
    np.testing.assert_array_equal(got.amplitude, np.sqrt(sim.counts))
    with h5py.File(tmp_path / "sim.h5", "r") as f:
        assert f.attrs["stage"] == "simulate"
    with h5py.File(tmp_path / "ing.h5", "r") as f:
        assert f.attrs["stage"] == "ingest"


def test_simulated_write_refuses_another_stage_and_writes_nothing(tmp_path):
    sim = Simulated.from_counts(object=None, probe=np.ones((32, 32), np.complex64), positions=np.full((2, 2), 40.0),
                                counts=np.ones((2, 32, 32), np.float32), attrs={})
    with pytest.raises(ValueError, match="stage: expected one of"):
        sim.write(tmp_path / "x.h5", stage="train", scenario="s", config=CFG, ratios={})
    assert not list(tmp_path.iterdir())
