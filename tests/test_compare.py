"""compare stage: metrics against hand-computed values, alignment (phase offset only),
the stage-ratio chain, and the stage on synthetic inferred.h5 files built from the truth."""

from __future__ import annotations

import csv
import math

import h5py
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from evaluate_helpers import FIGURES, compare_config, run_evaluation
from pipeline_helpers import ci_params
from ptychopipe import cli, evaluation
from ptychopipe.artifacts import Normalized, read_telemetry
from ptychopipe.config import stage_config
from ptychopipe.simulate import make_object
from ptychopipe.stages import compare


# --------------------------------------------------------------------------- metrics by hand

EST = np.array([[1.0, 2.0, 3.0, 4.0, 100.0]])
REF = np.array([[1.0, 2.0, 2.0, 5.0, -50.0]])
MASK = np.array([[True, True, True, True, False]])  # the last pixel must never count


def test_metrics_match_hand_computed_values():
    assert evaluation.mae(EST, REF, MASK) == pytest.approx(0.5)  # |0|+|0|+|1|+|-1| / 4
    assert evaluation.rmse(EST, REF, MASK) == pytest.approx(math.sqrt(0.5))
    # deviations (-1.5, -.5, .5, 1.5) and (-1.5, -.5, -.5, 2.5): 6 / sqrt(5 * 9)
    assert evaluation.pearson_r(EST, REF, MASK) == pytest.approx(6 / math.sqrt(45))
    # peak = range of the truth over the mask = 4; MSE = 0.5
    assert evaluation.psnr(EST, REF, MASK, 4.0) == pytest.approx(10 * math.log10(16 / 0.5))
    # beta = sum(est*ref) / sum(ref^2) = 31 / 34
    assert evaluation.ls_scale(EST, REF, MASK) == pytest.approx(31 / 34)
    assert evaluation.psnr(REF, REF, MASK, 4.0) == math.inf
    assert math.isnan(evaluation.pearson_r(np.ones((1, 5)), REF, MASK))


def test_half_bit_threshold_formula():
    t = evaluation.frc_threshold_curve(np.array([1, 4, 10**12]), "half_bit")
    assert t[0] == pytest.approx(1.0)  # (0.2071 + 1.9102) / (1.2071 + 0.9102)
    assert t[1] == pytest.approx((0.2071 + 1.9102 / 2) / (1.2071 + 0.9102 / 2))
    assert t[2] == pytest.approx(0.2071 / 1.2071, abs=1e-5)  # n -> infinity
    np.testing.assert_array_equal(evaluation.frc_threshold_curve(np.array([3, 9]), "0.5"), [0.5, 0.5])
    with pytest.raises(ValueError, match="frc_threshold"):
        evaluation.frc_threshold_curve(np.array([3]), "1/7")


def test_frc_cutoff_interpolates_the_first_crossing():
    freq = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    curve = np.array([1.0, 0.8, 0.4, 0.9, 0.1])  # crosses 0.5 between 0.1 and 0.2, first
    cutoff, crossed = evaluation.frc_cutoff(freq, curve, np.full(5, 0.5))
    assert crossed and cutoff == pytest.approx(0.1 + 0.1 * 0.3 / 0.4)
    cutoff, crossed = evaluation.frc_cutoff(freq, np.ones(5), np.full(5, 0.5))
    assert not crossed and cutoff == 0.4
    # below the threshold from ring 1 on (ring 0, the removed mean, is ignored): the box size
    cutoff, crossed = evaluation.frc_cutoff(freq, np.array([-0.3, 0.1, 0.0, 0.2, 0.1]), np.full(5, 0.5))
    assert crossed and cutoff == 0.1


def test_frc_is_one_for_identical_images_and_drops_with_noise():
    rng = np.random.default_rng(0)
    img = gaussian_filter(rng.standard_normal((96, 96)), 1.5)  # power falls with frequency
    mask = np.ones_like(img, bool)
    same = evaluation.frc_curve(img, img, mask)
    np.testing.assert_allclose(same.frc, 1.0, atol=1e-12)
    assert not same.crossed and same.resolution_px == pytest.approx(1 / same.frequency[-1])
    # a per-ring gain (here 2x) leaves the FRC at 1: it is a correlation, not an error
    np.testing.assert_allclose(evaluation.frc_curve(2 * img, img, mask).frc, 1.0, atol=1e-12)
    # white noise buries the weak high frequencies first: more noise, lower cutoff
    low = evaluation.frc_curve(img + 0.02 * rng.standard_normal(img.shape), img, mask)
    high = evaluation.frc_curve(img + 0.2 * rng.standard_normal(img.shape), img, mask)
    assert low.crossed and high.crossed
    assert high.cutoff < low.cutoff < 0.5
    assert high.resolution_px > low.resolution_px
    unrelated = evaluation.frc_curve(rng.standard_normal((96, 96)), img, mask)
    assert unrelated.cutoff < 0.05


def test_masked_ssim_is_skimage_over_windows_inside_the_mask():
    rng = np.random.default_rng(1)
    ref = gaussian_filter(rng.standard_normal((40, 50)), 2)
    est = ref + 0.05 * rng.standard_normal(ref.shape)
    full = np.ones_like(ref, bool)
    _, smap = structural_similarity(ref, est, win_size=7, data_range=1.0, full=True)
    assert evaluation.masked_ssim(est, ref, full, 1.0) == pytest.approx(smap[3:-3, 3:-3].mean())
    assert evaluation.masked_ssim(ref, ref, full, 1.0) == pytest.approx(1.0)
    mask = np.zeros_like(full)
    mask[5:30, 8:40] = True
    garbage = est.copy()
    garbage[~mask] = 1e6  # values outside the mask never enter a counted window
    assert evaluation.masked_ssim(garbage, ref, mask, 1.0) == pytest.approx(evaluation.masked_ssim(est, ref, mask, 1.0))


# --------------------------------------------------------------------------- alignment


def test_truth_on_canvas_handles_origins_outside_the_object():
    truth = np.arange(400, dtype=complex).reshape(20, 20)
    t, inside = evaluation.truth_on_canvas(truth, -5, -3, (10, 10))
    assert inside.sum() == 7 * 5 and not inside[:3].any() and not inside[:, :5].any()
    assert t[3, 5] == truth[0, 0] and t[9, 9] == truth[6, 4] and t[0, 0] == 0
    t, inside = evaluation.truth_on_canvas(truth, 15, 18, (10, 10))
    assert inside.sum() == 2 * 5 and t[0, 0] == truth[18, 15]


def test_evaluation_mask_threshold_is_relative_to_the_median_coverage():
    coverage = np.array([[0.0, 1.0, 2.0, 3.0, 4.0]])
    mask, med = evaluation.evaluation_mask(coverage, np.ones_like(coverage, bool), 0.5)
    assert med == 2.5
    np.testing.assert_array_equal(mask, [[False, False, True, True, True]])
    with pytest.raises(ValueError, match="no covered canvas pixel lies inside"):
        evaluation.evaluation_mask(coverage, np.zeros_like(coverage, bool), 0.5)
    with pytest.raises(ValueError, match="coverage_threshold"):
        evaluation.evaluation_mask(coverage, np.ones_like(coverage, bool), 10.0)


def test_evaluation_mask_needs_one_whole_ssim_window():
    """A mask thinner than the SSIM window stops with the coverage_threshold key, not a
    scikit-image error; masked_ssim itself refuses such a mask instead of scoring it."""
    coverage = np.zeros((40, 40))
    coverage[10:15, 5:35] = 1.0  # a 5-row band
    inside = np.ones_like(coverage, bool)
    mask, _ = evaluation.evaluation_mask(coverage, inside, 0.5)  # no window asked for: fine
    with pytest.raises(ValueError, match=r"compare.coverage_threshold: 0.5 x median coverage 1 leaves 150 "
                                         r"pixels but no 7x7 block of them \(the SSIM window\)"):
        evaluation.evaluation_mask(coverage, inside, 0.5, evaluation.SSIM_WIN)
    with pytest.raises(ValueError, match=r"SSIM: the mask \(150 pixels\) holds no whole 7x7 window"):
        evaluation.masked_ssim(coverage, coverage, mask, 1.0)


def test_registration_does_not_turn_round_off_into_coverage():
    """Shifting the coverage map by a Fourier shift leaves ~1e-17 where nothing was covered;
    counted as covered, those pixels would drag the median (and the threshold) to ~0."""
    rng = np.random.default_rng(0)
    truth = np.exp(1j * gaussian_filter(rng.standard_normal((80, 80)), 3)) * (1 + gaussian_filter(
        rng.standard_normal((80, 80)), 3))
    coverage = np.zeros((80, 80))
    coverage[20:50, 20:50] = 1.0
    recon = evaluation.shift_image(truth, 3.0, 0.0)
    ev = evaluation.evaluate(recon, coverage, truth, 0, 0, compare_config(register=True))
    assert ev.shift_px[0] == pytest.approx(-3.0, abs=0.6)  # registered (the canvas wraps, so not exactly)
    assert ev.coverage_median == pytest.approx(1.0, abs=0.02)
    assert 0.9 * 900 < ev.mask.sum() <= 900


@pytest.fixture(scope="module")
def obj() -> np.ndarray:
    return make_object(stage_config(ci_params(), "simulate").object)


def _canvas(obj: np.ndarray, dx: int = 0):
    """A 100 x 100 canvas at origin (20, 10) holding obj shifted by dx px (recon(c) = O(c + dx)),
    coverage 1 except a 6 px empty border."""
    recon = obj[10:110, 20 + dx:120 + dx].copy()
    coverage = np.zeros((100, 100))
    coverage[6:-6, 6:-6] = 1.0
    return recon, coverage


def test_truth_against_itself_is_perfect(obj):
    recon, cov = _canvas(obj)
    ev = evaluation.evaluate(recon, cov, obj, 20, 10, compare_config())
    for part in ("amplitude", "phase"):
        m = ev.metrics[part]
        assert m["pearson_r"] == pytest.approx(1.0, abs=1e-12)
        assert m["ssim"] == pytest.approx(1.0, abs=1e-12)
        assert m["mae"] == pytest.approx(0.0, abs=1e-12) and m["psnr_db"] > 200
        assert m["ls_scale"] == pytest.approx(1.0) and not m["frc_crossed"]
    assert ev.amplitude_bias == pytest.approx(1.0, abs=1e-12)
    assert ev.phase_offset_rad == pytest.approx(0.0, abs=1e-12)
    assert ev.mask.sum() == 88 * 88


def test_global_phase_offset_is_removed_and_nothing_else(obj):
    recon, cov = _canvas(obj)
    ev = evaluation.evaluate(recon * np.exp(0.7j), cov, obj, 20, 10, compare_config())
    assert ev.phase_offset_rad == pytest.approx(0.7, abs=1e-12)
    assert ev.metrics["phase"]["pearson_r"] == pytest.approx(1.0, abs=1e-12)
    assert ev.metrics["phase"]["mae"] == pytest.approx(0.0, abs=1e-12)
    assert ev.amplitude_bias == pytest.approx(1.0, abs=1e-12)


def test_amplitude_is_never_rescaled(obj):
    recon, cov = _canvas(obj)
    ev = evaluation.evaluate(0.8 * recon, cov, obj, 20, 10, compare_config())
    m = ev.metrics["amplitude"]
    assert ev.amplitude_bias == pytest.approx(0.8)
    assert m["ls_scale"] == pytest.approx(0.8)
    assert m["pearson_r"] == pytest.approx(1.0, abs=1e-12)  # correlation is scale-blind ...
    assert m["mae"] == pytest.approx(0.2 * np.abs(recon[ev.mask]).mean())  # ... the errors are not
    assert m["ssim"] < 0.99


def test_a_3px_shift_scores_clearly_worse_and_is_not_re_registered(obj):
    good = evaluation.evaluate(*_canvas(obj), obj, 20, 10, compare_config())
    shifted = evaluation.evaluate(*_canvas(obj, dx=3), obj, 20, 10, compare_config())
    assert shifted.shift_px == (0.0, 0.0)
    for part in ("amplitude", "phase"):
        assert shifted.metrics[part]["pearson_r"] < 0.8 < good.metrics[part]["pearson_r"]
        assert shifted.metrics[part]["ssim"] < 0.7
        assert shifted.metrics[part]["rmse"] > 10 * good.metrics[part]["rmse"] + 1e-3
    # ... unless registration is configured: then the 3 px are found and undone
    reg = evaluation.evaluate(*_canvas(obj, dx=3), obj, 20, 10, compare_config(register=True))
    assert reg.shift_px[0] == pytest.approx(3.0, abs=0.1) and reg.shift_px[1] == pytest.approx(0.0, abs=0.1)
    assert reg.metrics["amplitude"]["pearson_r"] > 0.99


# --------------------------------------------------------------------------- ratio chain


def test_ratio_chain_flags_the_first_stage_off_its_contract():
    links, first = evaluation.ratio_chain(
        [("raw", "", 1.0, 1.0), ("normalized", "", 2.0, 2.04), ("prediction", "", 1.3, 1.0),
         ("truth", "", float("nan"), 1.0)], tolerance=0.05)
    assert first == "prediction"
    assert [link.broken for link in links] == [False, False, True, True]
    assert [link.relative for link in links[:3]] == pytest.approx([1.0, 2.0 / 2.04, 1.3])
    assert [link.cumulative for link in links[:3]] == pytest.approx([1.0, 2.0, 2.6])
    assert links[2].cumulative_relative == pytest.approx(1.3 * 2.0 / 2.04)
    assert evaluation.ratio_chain([("raw", "", 1.049, 1.0)], 0.05)[1] is None
    assert evaluation.ratio_chain([("raw", "", 0.949, 1.0)], 0.05)[1] == "raw"


def test_the_phase_link_flags_a_compressed_phase_and_keeps_its_own_product():
    """A phase shrunk by a quarter (least-squares scale 0.74): the amplitude links hold, the
    phase link is the first broken; its cumulative values do not mix with the amplitude's."""
    links, first = evaluation.ratio_chain([("raw", "", 1.0, 1.0), ("truth", "", 0.9, 1.0), ("phase", "", 0.74, 1.0)],
                                       tolerance=0.15)
    assert first == "phase" and [link.broken for link in links] == [False, False, True]
    assert links[1].cumulative == pytest.approx(0.9) and links[2].cumulative == pytest.approx(0.74)
    assert [s for s, *_ in evaluation.CHAIN_CONTRACTS][-2:] == ["truth", "phase"]


# --------------------------------------------------------------------------- the stage


def _chain(js: dict) -> dict[str, dict]:
    return {link["stage"]: link for link in js["chain"]}


def test_stage_on_exact_patches(tmp_path, ci_data):
    js, paths = run_evaluation(tmp_path, ci_data["gs2_custom"], "gs2_custom")
    amp, ph = js["metrics"]["amplitude"], js["metrics"]["phase"]
    assert amp["pearson_r"] > 0.999 and ph["pearson_r"] > 0.999
    assert amp["ssim"] > 0.99 and ph["ssim"] > 0.99
    assert js["amplitude_bias"] == pytest.approx(1.0, abs=2e-3)
    assert js["first_broken"] is None and js["nan_status"] == "ok"
    chain = _chain(js)
    assert list(chain) == ["raw", "grouped", "normalized", "prediction", "stitched", "truth", "phase"]
    assert chain["phase"]["ratio"] == js["metrics"]["phase"]["ls_scale"] and not chain["phase"]["broken"]
    assert chain["grouped"]["ratio"] == pytest.approx(1.0, abs=1e-6)  # same patterns, exactly
    assert chain["normalized"]["relative"] == pytest.approx(1.0, abs=1e-5)  # = input scale a
    assert chain["prediction"]["ratio"] == pytest.approx(1.0, abs=1e-3)  # Poisson noise at 1e9 photons
    assert chain["truth"]["ratio"] == js["amplitude_bias"]
    assert js["training"]["epochs_run"] == 4 and js["training"]["train_seconds"] == 2.0
    # artifacts: comparison.h5 with telemetry, four PNG figures
    with h5py.File(paths["comparison"], "r") as f:
        assert f.attrs["stage"] == "compare" and int(f["mask"][()].sum()) == js["n_pixels"]
        assert f["amplitude/reconstruction"].attrs["units"] == "object amplitude"
        assert f["phase/error"].attrs["units"] == "rad"
    _, ratios = read_telemetry(paths["comparison"])
    assert ratios["amplitude_bias"] == pytest.approx(js["amplitude_bias"])
    for name in FIGURES:
        png = paths[name].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name


def test_mis_scaled_prediction_is_reported_and_flags_the_prediction_stage(tmp_path, ci_data):
    js, _ = run_evaluation(tmp_path, ci_data["gs1_ideal"], "gs1_ideal", scale=1.3)
    assert js["amplitude_bias"] == pytest.approx(1.3, abs=5e-3)
    assert js["metrics"]["amplitude"]["ls_scale"] == pytest.approx(1.3, abs=5e-3)
    assert js["metrics"]["amplitude"]["pearson_r"] > 0.999  # the shape is right, the scale is not
    chain = _chain(js)
    assert chain["prediction"]["ratio"] == pytest.approx(1.69, abs=0.01)  # counts scale as amplitude²
    assert chain["prediction"]["broken"] and chain["truth"]["broken"]
    assert not any(chain[s]["broken"] for s in ("raw", "grouped", "normalized"))
    assert js["first_broken"] == "prediction"


def test_phase_offset_of_the_prediction_is_removed(tmp_path, ci_data):
    js, _ = run_evaluation(tmp_path, ci_data["gs2_custom"], "gs2_custom", phase_offset=0.7)
    assert js["phase_offset_rad"] == pytest.approx(0.7, abs=2e-3)
    assert js["metrics"]["phase"]["pearson_r"] > 0.999
    assert js["first_broken"] is None


def test_patches_that_disagree_in_phase_flag_the_stitch_not_the_model(tmp_path, ci_data):
    """Each test group gets its own phase offset: every group still fits its patterns
    (prediction link intact), but overlapping groups cancel in the stitch's average, and
    the chain blames the stitch, not the truth."""
    data = ci_data["gs2_custom"]
    n_groups = Normalized.read(data["normalized"]).sets["test"].indices.shape[0]
    offsets = np.random.default_rng(3).uniform(-np.pi, np.pi, n_groups)
    js, _ = run_evaluation(tmp_path, data, "gs2_custom", phase_offset=offsets)
    chain = _chain(js)
    assert chain["prediction"]["ratio"] == pytest.approx(1.0, abs=1e-3)
    assert chain["stitched"]["broken"] and chain["stitched"]["ratio"] < 0.9
    assert js["amplitude_bias"] < 0.9 and js["first_broken"] == "stitched"


def test_misplaced_patches_score_clearly_worse(tmp_path, ci_data):
    data = ci_data["gs2_custom"]
    good, _ = run_evaluation(tmp_path / "good", data, "gs2_custom")
    bad, _ = run_evaluation(tmp_path / "bad", data, "gs2_custom", shift_px=(3.0, 0.0))
    for part in ("amplitude", "phase"):
        assert bad["metrics"][part]["pearson_r"] < 0.8
        assert bad["metrics"][part]["ssim"] < 0.7 * good["metrics"][part]["ssim"]
        assert bad["metrics"][part]["frc_resolution_px"] > 2 * good["metrics"][part]["frc_resolution_px"]
    assert bad["registration"] == {"enabled": False, "shift_px": [0.0, 0.0]}
    reg, _ = run_evaluation(tmp_path / "reg", data, "gs2_custom", shift_px=(3.0, 0.0),
                            compare_overrides={"register": True})
    assert reg["registration"]["shift_px"][0] == pytest.approx(3.0, abs=0.2)
    assert reg["metrics"]["amplitude"]["pearson_r"] > 0.98


def test_nan_guard_message_reaches_the_summary(tmp_path, ci_data):
    from evaluate_helpers import write_synthetic_train

    data = ci_data["gs1_ideal"]
    js, paths = run_evaluation(tmp_path, data, "gs1_ideal")
    write_synthetic_train(paths["train"], data, "gs1_ideal", nan_status="loss became NaN at epoch 2")
    compare.run(compare_config(), "gs1_ideal", simulated=data["simulated"], grouped=data["grouped"],
                normalized=data["normalized"], inferred=paths["inferred"], stitched=paths["stitched"],
                train=paths["train"], out=paths["comparison"], json=paths["json"],
                amplitude_png=paths["amplitude"], phase_png=paths["phase"], frc_png=paths["frc"],
                training_png=paths["training"])
    from ptychopipe.artifacts import ComparisonSummary
    from ptychopipe.reporting import write_summary

    assert ComparisonSummary.read(paths["json"])["nan_status"] == "train: loss became NaN at epoch 2"
    md, csv_path = tmp_path / "summary.md", tmp_path / "summary.csv"
    write_summary([paths["json"]], md, csv_path, tmp_path / "overview.png")
    assert "train: loss became NaN at epoch 2" in md.read_text()
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["nan_status"] for r in rows] == ["train: loss became NaN at epoch 2"]


def test_cli_compare_missing_input_is_one_line(tmp_path, ci_data, capsys):
    data = ci_data["gs1_ideal"]
    cfg = '{"coverage_threshold": 0.5, "frc_threshold": "half_bit", "ratio_tolerance": 0.05, "register": false}'
    args = ["compare", "--scenario", "gs1_ideal", "--config", cfg]
    for name in ("simulated", "grouped", "normalized"):
        args += [f"--{name}", str(data[name])]
    args += ["--inferred", str(tmp_path / "i.h5"), "--stitched", str(tmp_path / "nope.h5"),
             "--train", str(tmp_path / "t.h5"), "--out", str(tmp_path / "c.h5"), "--json", str(tmp_path / "c.json")]
    args += [x for f in FIGURES for x in (f"--{f}-png", str(tmp_path / f"{f}.png"))]
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ptychopipe compare: error: ") and "nope.h5: file not found" in err[0]
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("bad", [-1, 10**6])
def test_data_space_metrics_refuse_pattern_indices_outside_the_data(tmp_path, ci_data, bad):
    """A -1 would silently score the last pattern; a too-large index would be a bare IndexError."""
    from evaluate_helpers import write_synthetic_inferred
    from ptychopipe.artifacts import ArtifactError

    data = ci_data["gs1_ideal"]
    inferred = tmp_path / "inferred.h5"
    write_synthetic_inferred(inferred, data, "gs1_ideal")
    with h5py.File(inferred, "r+") as f:
        f["indices"][0, 0] = bad
    with pytest.raises(ArtifactError, match=rf"inferred.h5: indices: index {bad} outside the \d+ patterns of "
                                            r".*simulated.h5; expected artifacts of one scenario"):
        evaluation.data_space_metrics(inferred, data["simulated"])


def test_a_canvas_outside_the_object_names_both_files_and_the_geometry(tmp_path, ci_data):
    from evaluate_helpers import write_synthetic_inferred
    from ptychopipe.artifacts import ArtifactError
    from ptychopipe.stages import stitch

    data = ci_data["gs1_ideal"]
    paths = {k: tmp_path / f"{k}.h5" for k in ("inferred", "stitched", "train", "comparison")}
    write_synthetic_inferred(paths["inferred"], data, "gs1_ideal")
    stitch.run(stage_config(data["params"], "stitch"), "gs1_ideal", inferred=paths["inferred"],
               out=paths["stitched"])
    with h5py.File(paths["stitched"], "r+") as f:  # move the canvas far off the object
        f.attrs["origin_x"] = 10_000
        f["origin"][...] = [10_000, f.attrs["origin_y"]]
    from evaluate_helpers import write_synthetic_train

    write_synthetic_train(paths["train"], data, "gs1_ideal")
    with pytest.raises(ArtifactError, match=r"stitched\.h5 \(canvas \d+x\d+ at object pixel x=10000, y=-?\d+\) "
                                            r"against .*simulated\.h5 \(object \d+x\d+\): coverage: no covered "
                                            r"canvas pixel lies inside the truth object"):
        compare.run(compare_config(), "gs1_ideal", simulated=data["simulated"], grouped=data["grouped"],
                    normalized=data["normalized"], inferred=paths["inferred"], stitched=paths["stitched"],
                    train=paths["train"], out=paths["comparison"], json=tmp_path / "c.json",
                    **{f"{k}_png": tmp_path / f"{k}.png" for k in FIGURES})
    assert not paths["comparison"].exists()


def test_chain_names_the_file_and_key_it_cannot_find(tmp_path, ci_data):
    from evaluate_helpers import write_synthetic_inferred
    from ptychopipe.artifacts import ArtifactError

    data = ci_data["gs1_ideal"]
    inferred = tmp_path / "inferred.h5"
    write_synthetic_inferred(inferred, data, "gs1_ideal")
    with h5py.File(inferred, "r+") as f:
        del f.attrs["predicted_over_measured_counts"]
        del f["telemetry"].attrs["ratio_predicted_over_measured_counts"]
    with pytest.raises(ArtifactError, match=r"inferred.h5: predicted_over_measured_counts: expected a telemetry "
                                            r"ratio_predicted_over_measured_counts or a root attribute"):
        evaluation.chain_entries(data["simulated"], data["grouped"], data["normalized"], inferred, inferred, 1.0)
    with pytest.raises(ArtifactError, match=r"nope.h5: file not found \(expected the group stage's output\)"):
        evaluation.raw_mean_amplitude(data["simulated"], tmp_path / "nope.h5")
