"""simulate stage: the lines object, scan positions, invariant checks, the artifact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ptychopipe import simulate as sim_mod
from ptychopipe.stages import simulate as simulate_stage
from ptychopipe.artifacts import Simulated, read_telemetry
from ptychopipe.config import ConfigError, ObjectConfig, stage_config
from ptychopipe.simulate import check_invariants, make_object, random_positions, simulate
from ptychopipe.telemetry import InvariantError
from pipeline_helpers import ci_params


@pytest.fixture(scope="module")
def cfg():
    return stage_config(ci_params("gs2_custom"), "simulate")


@pytest.fixture(scope="module")
def sim(cfg):
    return simulate(cfg)


OBJ = ObjectConfig("lines", 128, 42, 60, (8.0, 64.0), 1.0, (0.5, 1.5), (-1.0, 1.0))


@pytest.mark.parametrize("amp,phase", [((0.5, 1.5), (-1.0, 1.0)), ((0.0, 2.0), (-3.0, 0.5))])
def test_lines_object_spans_exactly_the_configured_ranges(amp, phase):
    o = make_object(dataclasses.replace(OBJ, amplitude_range=amp, phase_range=phase))
    a, ph = np.abs(o), np.angle(o)
    assert o.shape == (128, 128) and o.dtype == np.complex128
    assert a.min() == pytest.approx(amp[0], abs=1e-12) and a.max() == pytest.approx(amp[1], abs=1e-12)
    assert ph.min() == pytest.approx(phase[0], abs=1e-12) and ph.max() == pytest.approx(phase[1], abs=1e-12)
    # background (no line) at the lower ends, most common value
    assert np.median(a) < amp[0] + 0.1 * (amp[1] - amp[0])


def test_lines_object_is_seeded_and_has_independent_amplitude_and_phase():
    a, b = make_object(OBJ), make_object(OBJ)
    np.testing.assert_array_equal(a, b)
    c = make_object(dataclasses.replace(OBJ, seed=43))
    assert not np.array_equal(a, c)
    la = (np.abs(a) - 0.5).ravel()
    lp = (np.angle(a) + 1.0).ravel()
    assert abs(np.corrcoef(la, lp)[0, 1]) < 0.3  # two different line maps


def test_object_rejects_unknown_kind():
    with pytest.raises(ConfigError, match=r"^object\.kind: expected one of \['lines', 'blobs'\], got 'dots'$"):
        dataclasses.replace(OBJ, kind="dots")


def test_blobs_object_is_smooth_seeded_and_spans_the_ranges():
    """The other kind of object: smooth (no line edges), seeded, amplitude and phase in range."""
    cfg = dataclasses.replace(OBJ, kind="blobs", n_lines=None, line_length_px=None, blur_sigma_px=None,
                              n_blobs=40, blob_sigma_px=(3.0, 8.0))
    o = make_object(cfg)
    assert o.shape == (128, 128) and o.dtype == np.complex128
    np.testing.assert_array_equal(o, make_object(cfg))
    assert not np.array_equal(o, make_object(dataclasses.replace(cfg, seed=43)))
    amp, phase = np.abs(o), np.angle(o)
    assert amp.min() >= 0.5 - 1e-12 and amp.max() == pytest.approx(1.5)
    assert phase.min() >= -1.0 - 1e-12 and phase.max() == pytest.approx(1.0)
    lines = np.abs(make_object(OBJ))
    # smoother than the lines object: smaller mean gradient per unit of contrast
    grad = lambda a: np.mean(np.abs(np.diff(a, axis=0))) / np.ptp(a)  # noqa: E731
    assert grad(amp) < 0.5 * grad(lines)


def test_positions_keep_the_buffer_from_the_edge():
    rng = np.random.default_rng(0)
    pos = random_positions(5000, 128, 64, 10.0, rng)
    assert pos.shape == (5000, 2) and pos.dtype == np.float64
    assert pos.min() >= 42.0 and pos.max() <= 128 - 42.0
    assert np.ptp(pos[:, 0]) > 40 and np.ptp(pos[:, 1]) > 40  # fills the allowed square
    assert len(np.unique(np.round(pos % 1, 3))) > 100  # sub-pixel, not a grid
    with pytest.raises(ValueError, match=r"object.size: 80 px leaves no room for 64 px patches with a 10.0 px"):
        random_positions(10, 80, 64, 10.0, rng)


def test_simulate_shapes_dtypes_and_counts(cfg, sim):
    m, n = cfg.n_positions, cfg.N
    assert sim["counts"].shape == (m, n, n) and sim["counts"].dtype == np.float32
    assert sim["amplitude"].shape == (m, n, n) and sim["amplitude"].dtype == np.float32
    assert sim["positions"].shape == (m, 2)
    assert sim["probe"].shape == (n, n) and sim["probe"].dtype == np.complex64
    assert sim["object"].shape == (cfg.object.size,) * 2 and sim["object"].dtype == np.complex64
    inv = check_invariants(cfg, sim)
    assert inv["parseval"] == pytest.approx(1.0, abs=1e-6)
    assert inv["dose"] == pytest.approx(1.0, abs=1e-9)


def test_object_patches_are_the_patches_the_simulator_lit(cfg, sim):
    """λ recomputed from object_patches of the stored object and probe is the simulator's own
    λ (to the complex64 rounding of the stored arrays); cutting the patch with another
    interpolation margin is measurably not."""
    from ptychopipe.physics import expected_counts, extract_patches

    obj, probe, pos = sim["object"], sim["probe"].astype(np.complex128), sim["positions"]
    lam = sim["expected"]

    def rel(patches):
        got = expected_counts((probe.real, probe.imag), (patches.real, patches.imag))
        return float(np.max(np.abs(got - lam)) / lam.max())

    patches = sim_mod.object_patches(obj, pos, cfg.N)
    assert patches.shape == (len(pos), cfg.N, cfg.N) and patches.dtype == np.complex128
    assert rel(patches) < 1e-5
    assert rel(extract_patches(obj.astype(np.complex128), pos, cfg.N, margin=4)) > 1e-4


@pytest.mark.parametrize("corrupt,pattern", [
    (lambda s: s.update(exit_power=s["exit_power"] * 1.001),
     r"^\[simulate\] expected: Σλ / Σ\|P·O\|² \(Parseval\) = 0\.999\d+, expected 1 "
     r"\(relative error 0\.000999\d* > tolerance 1e-05\)$"),
    (lambda s: s.update(expected=s["expected"] * 1.01),
     r"^\[simulate\] expected: .*Parseval"),
    (lambda s: s["counts"].__setitem__((0, 1, 2), np.nan),
     r"^\[simulate\] counts: 1 non-finite values of \d+ \(1 NaN, 0 Inf\); expected 0$"),
    (lambda s: s["amplitude"].__setitem__((3, 0, 0), np.inf),
     r"^\[simulate\] amplitude: 1 non-finite values of \d+ \(0 NaN, 1 Inf\); expected 0$"),
    (lambda s: s["counts"].__setitem__((0, 0, 0), -2.0),
     r"^\[simulate\] counts: 1 negative values \(min -2\); expected >= 0$"),
])
def test_broken_invariants_name_stage_array_and_numbers(cfg, sim, corrupt, pattern):
    s = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in sim.items()}
    corrupt(s)
    with pytest.raises(InvariantError, match=pattern):
        check_invariants(cfg, s)


def test_dose_invariant_names_the_numbers(cfg, sim):
    other = dataclasses.replace(cfg, nphotons=cfg.nphotons * 2)
    with pytest.raises(InvariantError, match=r"^\[simulate\] expected: mean expected photons per pattern = "
                                             r"1e\+09, expected 2e\+09 \(relative error 0\.5 > tolerance 0\.001\)$"):
        check_invariants(other, sim)


def test_failed_invariant_writes_nothing(cfg, sim, tmp_path, monkeypatch):
    bad = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in sim.items()}
    bad["counts"][0, 0, 0] = np.nan
    monkeypatch.setattr(simulate_stage, "simulate", lambda c: bad)
    out = tmp_path / "simulated.h5"
    with pytest.raises(InvariantError):
        simulate_stage.run(cfg, "x", out)
    assert list(tmp_path.iterdir()) == []


def test_run_writes_the_simulated_artifact(cfg, tmp_path):
    out = tmp_path / "r" / "simulated.h5"
    simulate_stage.run(cfg, "gs2_custom", out)
    s = Simulated.read(out)
    assert s.attrs["stage"] == "simulate" and s.attrs["scenario"] == "gs2_custom"
    assert s.attrs["probe_source"].endswith("custom_probe_64.npz")
    assert len(s.attrs["probe_sha256"]) == 64
    assert s.attrs["nphotons"] == cfg.nphotons and s.attrs["N"] == cfg.N
    assert s.attrs["mean_measured_counts"] == pytest.approx(cfg.nphotons, rel=1e-3)
    assert s.attrs["probe_scale"] > 0
    np.testing.assert_array_equal(s.amplitude, np.sqrt(s.counts))
    stats, ratios = read_telemetry(out)
    assert set(stats) == {"object", "probe", "positions", "counts", "amplitude"}
    assert ratios["parseval"] == pytest.approx(1, abs=1e-6)
    assert ratios["dose"] == pytest.approx(1, abs=1e-9)
    assert ratios["measured_over_expected"] == pytest.approx(1, abs=1e-3)
