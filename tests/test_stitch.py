"""stitch stage: placement convention, canvas geometry, overlap normalisation, speed, stage I/O."""

from __future__ import annotations

import time

import numpy as np
import pytest

from evaluate_helpers import true_patches, write_synthetic_inferred
from pipeline_helpers import REPO, ci_params
from ptychopipe import cli, stitch
from ptychopipe.artifacts import Simulated, StitchedCanvas
from ptychopipe.config import StitchConfig, stage_config
from ptychopipe.simulate import ideal_probe, make_object
from ptychopipe.stages import stitch as stitch_stage
from ptychopipe.telemetry import InvariantError

N = 64


@pytest.fixture(scope="module")
def obj() -> np.ndarray:
    """The ci preset's 128 x 128 "lines" object (complex128)."""
    return make_object(stage_config(ci_params(), "simulate").object)


def _evaluate_on_truth(st: stitch.Stitched, obj: np.ndarray, min_coverage: float) -> np.ndarray:
    """|stitched - truth| over canvas pixels with coverage >= min_coverage·median (all in the object)."""
    g = st.geometry
    truth = obj[g.origin_y:g.origin_y + g.height, g.origin_x:g.origin_x + g.width]
    assert truth.shape == st.object.shape
    covered = st.coverage > 0
    sel = covered & (st.coverage >= min_coverage * np.median(st.coverage[covered]))
    return np.abs(st.object - truth)[sel]


# --------------------------------------------------------------------------- geometry


def test_patch_origins_follow_the_simulator_convention():
    # patch pixel (i, k) samples (y - N/2 + i, x - N/2 + k): origin = centre - N/2
    q, f = stitch.patch_origins(np.array([[40.0, 50.25], [32.7, -3.5]]), N)
    np.testing.assert_array_equal(q, [[8, 18], [0, -36]])
    np.testing.assert_allclose(f, [[0.0, 0.25], [0.7, 0.5]], atol=1e-12)


def test_canvas_is_sized_from_extreme_positions_and_clips_nothing():
    # positions far outside any object, including negative coordinates
    pos = np.array([[-40.3, 500.9], [900.6, -75.2], [31.0, 32.0], [32.0, 31.5]])
    g = stitch.canvas_geometry(pos, N)
    # first stitched pixel: ceil(position - N/2); last: floor(position - N/2) + N - 1
    assert (g.origin_x, g.origin_y) == (-72, -107)
    assert (g.origin_x + g.width - 1, g.origin_y + g.height - 1) == (868 + N - 1, 468 + N - 1)
    # stitch uniform ones: every patch contributes all its interpolated pixels, none lost
    st = stitch.stitch_patches(np.ones((len(pos), N, N), complex), pos, stitch.patch_weight("uniform", None, N))
    _, f = stitch.patch_origins(pos, N)
    per_patch = (N - (f[:, 0] > 0)) * (N - (f[:, 1] > 0))
    assert st.count.sum() == per_patch.sum()
    assert st.coverage.sum() == pytest.approx(per_patch.sum())
    # the extreme patches touch all four canvas borders
    assert st.count[0].any() and st.count[-1].any() and st.count[:, 0].any() and st.count[:, -1].any()
    np.testing.assert_allclose(st.object[st.coverage > 0], 1.0, atol=1e-12)


def test_probe_weight_is_normalised_intensity_and_nothing_is_clipped():
    probe = ideal_probe(N, 32)
    w = stitch.patch_weight("probe_intensity", probe, N)
    np.testing.assert_allclose(w, np.abs(probe) ** 2 / np.max(np.abs(probe) ** 2))
    pos = np.array([[N / 2, N / 2], [1000.25, 7.75]])
    st = stitch.stitch_patches(np.ones((2, N, N), complex), pos, w)
    # patch 0 (integer origin) keeps its whole weight; patch 1 its bilinearly interpolated weight
    _, f = stitch.patch_origins(pos, N)
    w1 = stitch.interpolate_weight(w, f[1:, 0], f[1:, 1])[0]
    w1[0, :] = 0  # j = 0 is dropped when f > 0 (no extrapolation)
    w1[:, 0] = 0
    assert st.coverage.sum() == pytest.approx(w.sum() + w1.sum(), rel=1e-12)


def test_unknown_weight_and_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="stitch.weight: expected one of"):
        stitch.patch_weight("gaussian", None, N)
    with pytest.raises(ValueError, match=r"expected an \(64, 64\) probe"):
        stitch.patch_weight("probe_intensity", np.ones((32, 32), complex), N)
    with pytest.raises(ValueError, match="expected shape"):
        stitch.canvas_geometry(np.zeros((0, 2)), N)


# --------------------------------------------------------------------------- placement


def test_integer_positions_reproduce_the_object_exactly(obj):
    rng = np.random.default_rng(3)
    pos = rng.integers(N // 2 + 4, 128 - N // 2 - 4, size=(20, 2)).astype(float)
    patches = true_patches(obj, pos, N)
    for kind in ("uniform", "probe_intensity"):
        st = stitch.stitch_patches(patches, pos, stitch.patch_weight(kind, ideal_probe(N, 32), N))
        err = _evaluate_on_truth(st, obj, 0.0)
        assert err.size == np.count_nonzero(st.coverage > 0)
        assert err.max() < 1e-6, kind


@pytest.mark.parametrize("kind", ["uniform", "probe_intensity"])
def test_subpixel_positions_land_on_the_truth(obj, kind):
    """True patches at random sub-pixel positions stitch back onto the object (the
    placement inverts extract_patches); the same patches with the fractional shift
    applied the wrong way round are far worse."""
    rng = np.random.default_rng(4)
    pos = rng.uniform(N / 2 + 4, 128 - N / 2 - 4, size=(40, 2))
    patches = true_patches(obj, pos, N)
    w = stitch.patch_weight(kind, ideal_probe(N, 32), N)
    err = _evaluate_on_truth(stitch.stitch_patches(patches, pos, w), obj, 0.5)
    scale = np.sqrt(np.mean(np.abs(obj) ** 2))
    # measured 0.39 % (uniform) / 0.44 % (probe) rms: the periodic shift of a reflect-padded
    # patch rings near its borders (docs/performance.md); a placement error is ~20x larger
    assert np.sqrt(np.mean(err ** 2)) / scale < 1e-2
    # mirror the fractional part: origin q + (1 - f) instead of q + f (a sign error)
    q, f = stitch.patch_origins(pos, N)
    wrong = q + N / 2 + np.where(f > 0, 1 - f, 0)
    err_wrong = _evaluate_on_truth(stitch.stitch_patches(patches, wrong, w), obj, 0.5)
    assert np.sqrt(np.mean(err_wrong ** 2)) > 5 * np.sqrt(np.mean(err ** 2))


def test_overlaps_are_weighted_averages():
    # two constant patches overlapping by N/2 columns
    pos = np.array([[N / 2, N / 2], [N, N / 2]])
    patches = np.stack([np.full((N, N), 1.0 + 0j), np.full((N, N), 3.0 + 0j)])
    st = stitch.stitch_patches(patches, pos, stitch.patch_weight("uniform", None, N))
    assert st.object.shape == (N, N + N // 2)
    np.testing.assert_allclose(st.object[:, : N // 2], 1.0)
    np.testing.assert_allclose(st.object[:, N // 2:N], 2.0)  # (1 + 3) / 2
    np.testing.assert_allclose(st.object[:, N:], 3.0)
    np.testing.assert_array_equal(st.count[:, N // 2:N], 2)
    # probe weighting: (w1·1 + w2·3) / (w1 + w2) pixel by pixel
    w = stitch.patch_weight("probe_intensity", ideal_probe(N, 32), N)
    st = stitch.stitch_patches(patches, pos, w)
    w1 = w[:, N // 2:]
    w2 = w[:, : N // 2]
    expected = (w1 * 1 + w2 * 3) / (w1 + w2)
    np.testing.assert_allclose(st.object[:, N // 2:N].real, expected, rtol=1e-10)
    np.testing.assert_allclose(st.coverage[:, N // 2:N], w1 + w2, rtol=1e-12)


def test_overlap_consistency_is_one_for_agreeing_patches_and_drops_otherwise(obj):
    rng = np.random.default_rng(5)
    pos = rng.uniform(N / 2 + 4, 128 - N / 2 - 4, size=(30, 2))
    patches = true_patches(obj, pos, N)
    w = stitch.patch_weight("probe_intensity", ideal_probe(N, 32), N)
    good = stitch.overlap_consistency(stitch.stitch_patches(patches, pos, w))
    assert good == pytest.approx(1.0, abs=2e-3)
    noisy = patches * np.exp(1j * rng.uniform(-1.5, 1.5, size=(30, 1, 1)))  # each patch its own phase
    assert stitch.overlap_consistency(stitch.stitch_patches(noisy, pos, w)) < good - 0.02


def test_full_preset_test_split_stitches_in_seconds():
    """1000 groups x 4 patches of 64 x 64 onto a ~392 x 200 region (the full preset's test split)."""
    rng = np.random.default_rng(0)
    m = 4000
    pos = np.stack([rng.uniform(42, 350, m), rng.uniform(196, 350, m)], axis=1)
    patches = rng.uniform(0.5, 1.5, (m, N, N)) * np.exp(1j * rng.uniform(-1, 1, (m, N, N)))
    w = stitch.patch_weight("probe_intensity", ideal_probe(N, 32), N)
    t0 = time.perf_counter()
    st = stitch.stitch_patches(patches, pos, w)
    seconds = time.perf_counter() - t0
    g = stitch.canvas_geometry(pos, N)
    assert st.object.shape == (g.height, g.width) and 200 <= g.height <= 230 and 360 <= g.width <= 380
    assert seconds < 30, f"stitching 4000 patches took {seconds:.1f} s; expected seconds, not minutes"


# --------------------------------------------------------------------------- stage


def test_stage_writes_stitched_h5(tmp_path, ci_data):
    data = ci_data["gs2_custom"]
    inferred = tmp_path / "inferred.h5"
    patches = write_synthetic_inferred(inferred, data, "gs2_custom")
    out = tmp_path / "stitched.h5"
    stitch_stage.run(StitchConfig(weight="probe_intensity", resolve_twin=False), "gs2_custom", inferred=inferred,
                     out=out)
    st = StitchedCanvas.read(out)
    assert st.attrs["stage"] == "stitch" and st.attrs["weight"] == "probe_intensity"
    assert st.attrs["n_patches"] == patches.shape[0] * patches.shape[1]
    assert (st.origin_x, st.origin_y) == (int(st.attrs["origin_x"]), int(st.attrs["origin_y"]))
    assert st.object.dtype == np.complex64 and st.coverage.shape == st.object.shape
    obj = make_object(stage_config(data["params"], "simulate").object)
    truth = obj[st.origin_y:st.origin_y + st.object.shape[0], st.origin_x:st.origin_x + st.object.shape[1]]
    sel = st.coverage >= 0.5 * np.median(st.coverage[st.coverage > 0])
    rel = np.sqrt(np.mean(np.abs(st.object - truth)[sel] ** 2) / np.mean(np.abs(truth[sel]) ** 2))
    assert rel < 1e-2


def test_stage_refuses_non_finite_patches(tmp_path, ci_data):
    import h5py

    inferred = tmp_path / "inferred.h5"
    write_synthetic_inferred(inferred, ci_data["gs1_ideal"], "gs1_ideal")
    with h5py.File(inferred, "r+") as f:
        a = f["amplitude"][()]
        a[0, 0, 5, 5] = np.nan
        f["amplitude"][...] = a
    with pytest.raises(InvariantError, match=r"\[stitch\] .*amplitude: 1 non-finite values"):
        stitch_stage.run(StitchConfig(weight="uniform", resolve_twin=False), "gs1_ideal", inferred=inferred,
                         out=tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    code = cli.main(["stitch", "--scenario", "x", "--config", '{"weight": "uniform", "resolve_twin": false}',
                     "--inferred", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "s.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("ptychopipe stitch: error: ") and "missing.h5: file not found" in err[0]


def test_positions_a_rounding_error_off_an_integer_origin_stay_on_the_canvas():
    # x - N/2 = 9.9999999999999 and y - N/2 = 3.0000000000001: taken as the integer origin (10, 3)
    pos = np.array([[N / 2 + 10 - 1e-13, N / 2 + 3 + 1e-13], [N / 2 + 40.0, N / 2 + 3.0]])
    q, f = stitch.patch_origins(pos, N)
    np.testing.assert_array_equal(q[0], [10, 3])
    assert np.all(f == 0)
    st = stitch.stitch_patches(np.ones((2, N, N), complex), pos, stitch.patch_weight("uniform", None, N))
    assert (st.geometry.origin_x, st.geometry.origin_y) == (10, 3)
    assert st.count.sum() == 2 * N * N  # no row or column lost to rounding


def test_sub_pixel_patch_weight_is_the_probe_weight_shifted_by_its_fraction():
    """Element by element, against scipy's linear-interpolation shift (independent of
    stitch.interpolate_weight): a patch whose origin has fraction (fx, fy) covers canvas
    pixel (q_y + j, q_x + k) with the weight at (j − fy, k − fx); row and column 0,
    which would need the weight outside the patch, are dropped."""
    from scipy import ndimage

    w = stitch.patch_weight("probe_intensity", ideal_probe(N, 32), N)
    pos = np.array([[40.25 + N / 2, 17.75 + N / 2]])  # origin (x, y) = (40.25, 17.75)
    q, f = stitch.patch_origins(pos, N)
    np.testing.assert_allclose(f[0], [0.25, 0.75])
    st = stitch.stitch_patches(np.ones((1, N, N), complex), pos, w)
    want = ndimage.shift(w, (f[0, 1], f[0, 0]), order=1, mode="nearest")
    # canvas pixel (r, c) is object pixel (origin_y + r, origin_x + c); patch pixel j sits at q + j
    rows = q[0, 1] + np.arange(1, N) - st.geometry.origin_y
    cols = q[0, 0] + np.arange(1, N) - st.geometry.origin_x
    assert rows.min() >= 0 and cols.min() >= 0
    np.testing.assert_allclose(st.coverage[np.ix_(rows, cols)], want[1:, 1:], rtol=1e-12, atol=1e-15)
    assert st.coverage.sum() == pytest.approx(want[1:, 1:].sum(), rel=1e-12)  # and nothing else
    # the other direction (weight at j + f) is clearly different: the test can tell them apart
    assert np.abs(ndimage.shift(w, (-f[0, 1], -f[0, 0]), order=1)[1:, 1:] - want[1:, 1:]).max() > 1e-3


def test_stage_names_the_file_whose_probe_is_all_zeros(tmp_path, ci_data):
    import h5py

    from ptychopipe.artifacts import ArtifactError

    inferred = tmp_path / "inferred.h5"
    write_synthetic_inferred(inferred, ci_data["gs1_ideal"], "gs1_ideal")
    with h5py.File(inferred, "r+") as f:
        f["probe"][...] = 0
    with pytest.raises(ArtifactError, match=r"inferred\.h5: probe: stitch\.weight=probe_intensity: probe is all "
                                            r"zeros; expected max\|P\|² > 0$"):
        stitch_stage.run(StitchConfig(weight="probe_intensity", resolve_twin=False), "gs1_ideal",
                         inferred=inferred, out=tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()


# --------------------------------------------------------------------------- twin resolution


def _ideal_twin_setup(obj, n_patches=150, seed=11):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(N / 2 + 4, 128 - N / 2 - 4, size=(n_patches, 2))
    truth = true_patches(obj, pos, N)
    return rng, pos, truth, ideal_probe(N, N / 2)


def _amplitude_r(st: stitch.Stitched, obj: np.ndarray) -> float:
    """The compare stage's amplitude Pearson r of a stitch against the true object (defaults)."""
    from ptychopipe import evaluation
    from ptychopipe.config import CompareConfig

    cfg = CompareConfig(coverage_threshold=0.5, frc_threshold="half_bit", ratio_tolerance=0.05, register=False)
    ev = evaluation.evaluate(st.object, st.coverage, obj, st.geometry.origin_x, st.geometry.origin_y, cfg)
    return ev.metrics["amplitude"]["pearson_r"]


def test_uniform_weight_averages_out_the_ideal_probes_twin_better(obj):
    """Why gs1_ideal stitches with uniform weights (docs/design.md, 'Gridsize 1 and the twin'): with the
    ideal probe one pattern cannot tell its patch from the twin conj(O(−r)) about the patch
    centre, and one-pattern estimates settle on a mixture of the two. The true part is the
    same in every overlapping patch; the twin part is the object mirrored through each
    patch's own centre, so it differs from patch to patch and averages out. Uniform weights
    average more patches per pixel than |P|² (peaked at each centre), so they leave less of
    the twin; with no twin both weights reproduce the object."""
    from ptychopipe.config import load_scenarios

    _, pos, truth, probe = _ideal_twin_setup(obj)

    def amplitude_r(patches, kind):
        return _amplitude_r(stitch.stitch_patches(patches, pos, stitch.patch_weight(kind, probe, N)), obj)

    for kind in ("probe_intensity", "uniform"):
        assert amplitude_r(truth, kind) > 0.999
    mixed = 0.6 * truth + 0.4 * stitch.twin(truth)
    assert amplitude_r(mixed, "uniform") > amplitude_r(mixed, "probe_intensity") + 0.02
    shipped = load_scenarios(REPO / "config" / "scenarios.yaml", "quick")
    assert stage_config(shipped["gs1_ideal"], "stitch").weight == "uniform"
    assert stage_config(shipped["gs1_custom"], "stitch").weight == "probe_intensity"


def test_twin_is_an_involution_and_only_the_ideal_probe_is_its_own():
    from ptychopipe.simulate import load_probe

    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, N, N)) + 1j * rng.standard_normal((3, N, N))
    np.testing.assert_array_equal(stitch.twin(stitch.twin(x)), x)
    assert stitch.twin(x)[0, N // 2, N // 2] == np.conj(x[0, N // 2, N // 2])  # the centre stays in place
    assert stitch.twin_asymmetry(ideal_probe(N, N / 2).astype(np.complex64)) < stitch.TWIN_SYMMETRY_TOL
    custom = load_probe(REPO / "data" / "probes" / "custom_probe_64.npz", "probeGuess", N)
    assert stitch.twin_asymmetry(custom) > 0.1


def test_resolve_twins_puts_twinned_patches_back_and_leaves_the_true_ones(obj):
    """A third of the patches replaced by their twins (which give the same counts under the
    ideal probe): the overlap tells them apart, every one is swapped back, the rest are left."""
    rng, pos, truth, probe = _ideal_twin_setup(obj)
    twinned = rng.random(len(pos)) < 1 / 3
    patches = np.where(twinned[:, None, None], stitch.twin(truth), truth)
    w = stitch.patch_weight("uniform", probe, N)
    out, st, swaps = stitch.resolve_twins(patches, pos, w, probe)
    assert swaps[0] == twinned.sum() and swaps[-1] == 0, swaps
    np.testing.assert_allclose(out, truth, atol=1e-12)
    before = stitch.stitch_patches(patches, pos, w)
    assert stitch.overlap_consistency(st) == pytest.approx(1.0, abs=2e-3)
    assert stitch.overlap_consistency(before) < stitch.overlap_consistency(st) - 0.05


def test_resolve_twins_lifts_mixtures_of_patch_and_twin(obj):
    """One-pattern estimates under the ideal probe settle on mixtures of the patch and its twin
    (ptychopipe.diagnostics.per_patch_scores measures both parts); where the twin dominates, the swap makes the truth dominate."""
    rng, pos, truth, probe = _ideal_twin_setup(obj)
    mix = rng.uniform(0.2, 0.8, size=(len(pos), 1, 1))  # weight of the truth in each patch
    patches = mix * truth + (1 - mix) * stitch.twin(truth)
    w = stitch.patch_weight("uniform", probe, N)
    out, st, swaps = stitch.resolve_twins(patches, pos, w, probe)
    swapped = np.any(out != patches, axis=(1, 2))
    assert swaps[-1] == 0 and swapped.any()
    assert np.mean(mix[swapped] < 0.5) > 0.8  # it swaps the patches the twin dominates
    assert _amplitude_r(st, obj) > _amplitude_r(stitch.stitch_patches(patches, pos, w), obj) + 0.1


def test_stage_resolves_twins_and_records_the_swaps(tmp_path, ci_data):
    import h5py

    data = ci_data["gs1_ideal"]
    inferred = tmp_path / "inferred.h5"
    truth = write_synthetic_inferred(inferred, data, "gs1_ideal")  # (B, 1, N, N)
    flip = np.arange(truth.shape[0]) % 3 == 0
    patches = np.where(flip[:, None, None, None], stitch.twin(truth), truth)
    with h5py.File(inferred, "r+") as f:
        f["amplitude"][...] = np.abs(patches)
        f["phase"][...] = np.angle(patches)
    out = tmp_path / "stitched.h5"
    stitch_stage.run(StitchConfig(weight="uniform", resolve_twin=True), "gs1_ideal", inferred=inferred, out=out)
    st = StitchedCanvas.read(out)
    assert bool(st.attrs["resolve_twin"]) and int(st.attrs["twin_swaps_per_pass"][0]) >= flip.sum() * 0.9
    assert int(st.attrs["twin_swaps_per_pass"][-1]) == 0
    plain = tmp_path / "plain.h5"
    stitch_stage.run(StitchConfig(weight="uniform", resolve_twin=False), "gs1_ideal", inferred=inferred, out=plain)
    assert len(StitchedCanvas.read(plain).attrs["twin_swaps_per_pass"]) == 0
    sim_obj = Simulated.read(data["simulated"]).object

    def err(s):
        t = sim_obj[s.origin_y:s.origin_y + s.object.shape[0], s.origin_x:s.origin_x + s.object.shape[1]]
        m = s.coverage > 0.5 * np.median(s.coverage[s.coverage > 0])
        return float(np.abs(np.abs(s.object[m]) - np.abs(t[m])).mean())

    assert err(st) < 0.5 * err(StitchedCanvas.read(plain))


@pytest.mark.parametrize("case", ["groups of 4", "custom probe"])
def test_stage_refuses_twin_resolution_it_cannot_do(tmp_path, ci_data, case):
    import h5py

    from ptychopipe.artifacts import ArtifactError
    from ptychopipe.simulate import load_probe

    inferred = tmp_path / "inferred.h5"
    if case == "groups of 4":
        write_synthetic_inferred(inferred, ci_data["gs2_custom"], "gs2_custom")
        pattern = r"inferred\.h5: stitch\.resolve_twin: expected one pattern per patch \(gridsize 1\), got groups of 4"
    else:
        write_synthetic_inferred(inferred, ci_data["gs1_ideal"], "gs1_ideal")
        with h5py.File(inferred, "r+") as f:
            f["probe"][...] = load_probe(REPO / "data" / "probes" / "custom_probe_64.npz", "probeGuess", N)
        pattern = r"inferred\.h5: probe: stitch\.resolve_twin needs a probe that is its own twin .*, got [0-9.]+: "
    with pytest.raises(ArtifactError, match=pattern) as exc:
        stitch_stage.run(StitchConfig(weight="uniform", resolve_twin=True), "x", inferred=inferred,
                         out=tmp_path / "s.h5")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "s.h5").exists()
