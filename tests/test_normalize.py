"""normalize stage (docs/design.md, 'Dose and normalisation'): a and ā from the training split only, reused for
the test split; invariant checks name stage, array and numbers."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from ptychopipe.stages import normalize
from ptychopipe.artifacts import Grouped, Normalized, Simulated, Split, read_telemetry
from ptychopipe.config import NormalizeConfig
from ptychopipe.normalize import amplitude_estimate, input_scale
from ptychopipe.telemetry import InvariantError


def test_input_scale_targets_n_over_2_squared_power():
    counts = np.full((10, 64, 64), 3.0, dtype=np.float32)  # Σ n_j = 3·4096 per pattern
    a = input_scale(counts, 64)
    assert a == pytest.approx(np.sqrt(32 ** 2 / (3 * 4096)))
    assert np.sum((a * np.sqrt(counts[0])) ** 2) == pytest.approx(32 ** 2)
    with pytest.raises(ValueError, match=r"^\[normalize\] counts: mean counts per pattern is 0\.0; expected > 0$"):
        input_scale(np.zeros((2, 8, 8)), 8)


def test_amplitude_estimate_recovers_a_uniform_object_amplitude():
    """By Parseval, for |O| = c everywhere: Σλ = c²·Σ|P|², so ā = c exactly on λ."""
    rng = np.random.default_rng(0)
    probe = rng.normal(size=(32, 32)) + 1j * rng.normal(size=(32, 32))
    c = 0.7
    lam = np.broadcast_to(np.abs(np.fft.fft2(c * probe) / 32) ** 2, (5, 32, 32))
    assert amplitude_estimate(lam, probe) == pytest.approx(c, rel=1e-12)


def test_normalized_artifact(ci_data):
    for scen, d in ci_data.items():
        sim = Simulated.read(d["simulated"])
        sp = Split.read(d["split"])
        raw = Grouped.read(d["grouped"]).sets
        nz = Normalized.read(d["normalized"])
        n = d["params"]["N"]
        train_counts = sim.counts[sp.train_indices].astype(np.float64)
        mean_total = train_counts.sum(axis=(1, 2)).mean()
        assert nz.input_scale == pytest.approx(np.sqrt((n / 2) ** 2 / mean_total), rel=1e-12)
        assert nz.mean_counts == pytest.approx(mean_total, rel=1e-12)
        p2 = np.sum(np.abs(sim.probe.astype(np.complex128)) ** 2)
        assert nz.amplitude_estimate == pytest.approx(np.sqrt(mean_total / p2), rel=1e-12)
        # ā estimates the object's rms amplitude from data alone (diagnostic ratio recorded)
        true_rms = np.sqrt(np.mean(np.abs(sim.object) ** 2))
        assert nz.amplitude_estimate / true_rms == pytest.approx(1, abs=0.15), scen
        _, ratios = read_telemetry(d["normalized"])
        assert ratios["amplitude_estimate_over_true_rms"] == pytest.approx(nz.amplitude_estimate / true_rms)
        for split in ("train", "test"):
            g, r = nz.sets[split], raw[split]
            np.testing.assert_allclose(g.amplitude, nz.input_scale * r.amplitude, rtol=1e-6)
            # the measured counts themselves, exactly (not sqrt(n) squared back)
            np.testing.assert_array_equal(g.counts, np.moveaxis(sim.counts[r.indices], 1, -1))
            np.testing.assert_array_equal(g.indices, r.indices)
            assert ratios[f"{split}_normalized_over_raw"] == pytest.approx(nz.input_scale, rel=1e-5)
        assert nz.gridsize == d["params"]["gridsize"]
        np.testing.assert_array_equal(nz.probe, sim.probe)


def _copy_inputs(d, tmp_path):
    out = {}
    for k in ("simulated", "split", "grouped"):
        out[k] = tmp_path / f"{k}.h5"
        shutil.copy(d[k], out[k])
    return out


def test_scales_come_from_the_training_split_only(ci_data, tmp_path):
    """Quadrupling every test-split count leaves a and ā unchanged; the test inputs are
    the new test amplitudes times the same a."""
    d = ci_data["gs2_custom"]
    cfg = NormalizeConfig(N=d["params"]["N"])
    ref = Normalized.read(d["normalized"])
    f = _copy_inputs(d, tmp_path)
    test_idx = Split.read(f["split"]).test_indices
    with h5py.File(f["simulated"], "r+") as h:
        counts = h["counts"][()]
        counts[test_idx] *= 4
        h["counts"][...] = counts
        h["amplitude"][...] = np.sqrt(counts)
    with h5py.File(f["grouped"], "r+") as h:
        h["test/amplitude"][...] = 2 * h["test/amplitude"][()]
    out = tmp_path / "normalized.h5"
    normalize.run(cfg, "gs2_custom", f["simulated"], f["split"], f["grouped"], out)
    got = Normalized.read(out)
    assert got.input_scale == ref.input_scale
    assert got.amplitude_estimate == ref.amplitude_estimate
    np.testing.assert_allclose(got.sets["test"].amplitude, 2 * ref.sets["test"].amplitude, rtol=1e-6)
    np.testing.assert_array_equal(got.sets["train"].amplitude, ref.sets["train"].amplitude)


def test_nan_in_grouped_amplitude_fails_the_stage_naming_the_array(ci_data, tmp_path):
    d = ci_data["gs1_ideal"]
    f = _copy_inputs(d, tmp_path)
    with h5py.File(f["grouped"], "r+") as h:
        amp = h["train/amplitude"][()]
        amp[0, 5, 5, 0] = np.nan
        amp[1, 5, 5, 0] = np.inf
        h["train/amplitude"][...] = amp
    out = tmp_path / "normalized.h5"
    with pytest.raises(InvariantError, match=r"^\[normalize\] train/inputs: 2 non-finite values of \d+ "
                                             r"\(1 NaN, 1 Inf\); expected 0$"):
        normalize.run(NormalizeConfig(N=64), "gs1_ideal", f["simulated"], f["split"], f["grouped"], out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if "normalized" in p.name]


def test_grouped_amplitudes_that_are_not_the_simulated_patterns_are_refused(ci_data, tmp_path):
    """grouped.h5 from another dataset (here: its test amplitudes scaled by 1.01) fails the
    stage naming both files, and nothing is written."""
    d = ci_data["gs1_ideal"]
    f = _copy_inputs(d, tmp_path)
    with h5py.File(f["grouped"], "r+") as h:
        h["test/amplitude"][...] = 1.01 * h["test/amplitude"][()]
    out = tmp_path / "normalized.h5"
    with pytest.raises(InvariantError, match=r"^\[normalize\] .*grouped\.h5: test/amplitude: mean amplitude, "
                                             r"against sqrt of .*simulated\.h5's counts of the same patterns = "):
        normalize.run(NormalizeConfig(N=64), "gs1_ideal", f["simulated"], f["split"], f["grouped"], out)
    assert not out.exists()


def test_probe_size_mismatch_is_refused(ci_data, tmp_path):
    d = ci_data["gs1_ideal"]
    with pytest.raises(ValueError, match=r"simulated\.h5: probe: expected 128x128 \(config N\), got \(64, 64\)"):
        normalize.run(NormalizeConfig(N=128), "gs1_ideal", d["simulated"], d["split"], d["grouped"],
                      tmp_path / "normalized.h5")
