"""Importers (ptychopipe.ingest and the readers in ptychopipe.formats): NPZ and ptychodus
files -> simulated.h5 in the simulate stage's layout, conventions converted explicitly, bad
input refused with one line."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pytest

from ptychopipe import artifacts
from ptychopipe.artifacts import ArtifactError, Normalized, Simulated, read_attrs, read_telemetry
from ptychopipe.config import IngestConfig, load_scenarios, stage_config
from ptychopipe.formats import common, npz, ptychodus
from ptychopipe.formats.common import IngestError
from ptychopipe.normalize import amplitude_estimate
from ptychopipe.stages import group, ingest, normalize, split
from pipeline_helpers import CONFIG_FILE, REPO, edit_config, run_snakemake


def npz_cfg(path, **kw) -> IngestConfig:
    base = dict(file=str(path), format="npz", probe_normalization="native", diff3d="amplitude", diffraction=None)
    return IngestConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def sim(ci_data):
    """The ci gs1_ideal simulation (truth, P_abs, positions, counts)."""
    return Simulated.read(ci_data["gs1_ideal"]["simulated"])


def write_npz(path, sim, *, obj=True, probe=None, diff3d=None, **extra):
    """An NPZ in PtychoPINN's layout from a simulation: positions in pixel-index convention
    (ours − 0.5), diff3d = sqrt(counts) in float64."""
    arrays = dict(xcoords=sim.positions[:, 0] - 0.5, ycoords=sim.positions[:, 1] - 0.5,
                  diff3d=np.sqrt(sim.counts.astype(np.float64)) if diff3d is None else diff3d,
                  probeGuess=sim.probe if probe is None else probe)
    if obj:
        arrays["objectGuess"] = sim.object
    arrays.update(extra)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


# --------------------------------------------------------------------------- NPZ


def test_npz_with_object_reproduces_the_simulation(tmp_path, sim):
    src = write_npz(tmp_path / "data.npz", sim)
    out = tmp_path / "simulated.h5"
    ingest.run(npz_cfg(src), "imp", out)
    got = Simulated.read(out)
    assert got.has_truth and got.object_shape == sim.object.shape
    assert np.array_equal(got.counts, sim.counts)  # sqrt in float64, squared and rounded back: exact
    assert np.array_equal(got.amplitude, np.sqrt(sim.counts))
    assert np.array_equal(got.probe, sim.probe) and np.array_equal(got.object, sim.object)
    np.testing.assert_allclose(got.positions, sim.positions, rtol=0, atol=1e-12)
    attrs = read_attrs(out)
    assert attrs["stage"] == "ingest" and attrs["has_truth"] == 1 and attrs["source_format"] == "npz"
    assert attrs["source_sha256"] == artifacts.file_sha256(src)
    conv = json.loads(attrs["conversions"])
    assert conv["probe_normalization"] == "unitary" and conv["probe_scale"] == 1.0
    assert conv["counts_rounded_to_integers"] is True and "+ 0.5 px" in conv["positions"]
    _, ratios = read_telemetry(out)
    # the file's object through the pipeline's forward model explains the counts (Poisson at 1e9)
    assert ratios["measured_over_expected"] == pytest.approx(1.0, abs=1e-3)
    assert ratios["measured_over_parseval"] == pytest.approx(1.0, abs=1e-3)
    assert attrs["pattern_correlation"] > 0.9999


def test_position_convention_is_what_makes_the_data_consistent(tmp_path, sim):
    """Without the +0.5 px conversion (positions taken as ours) the object no longer explains
    the counts as well: the pattern correlation drops, so the check can see a wrong convention."""
    src = write_npz(tmp_path / "shifted.npz", sim, xcoords=sim.positions[:, 0] + 0.5,
                    ycoords=sim.positions[:, 1] + 0.5)
    ingest.run(npz_cfg(src), "imp", tmp_path / "s.h5")
    good = write_npz(tmp_path / "good.npz", sim)
    ingest.run(npz_cfg(good), "imp", tmp_path / "g.h5")
    bad_r, good_r = read_attrs(tmp_path / "s.h5")["pattern_correlation"], read_attrs(tmp_path / "g.h5")["pattern_correlation"]
    assert 1 - bad_r > 10 * (1 - good_r)


def _fftshift(sim):
    return np.fft.fftshift(np.sqrt(sim.counts.astype(np.float64)), axes=(1, 2))  # zero frequency to the corner


def _transposed(sim):
    return np.sqrt(sim.counts.astype(np.float64)).transpose(0, 2, 1)


# (id, NPZ arrays besides the good ones, config changes, expected message after the file name)
CONVENTION_CASES = [
    ("not-fftshifted", lambda s: {"diff3d": _fftshift(s)}, {},
     r"pattern_correlation -?0\.\d+ with the file's object and probe, (0\.9\d+|1\.0+) if fftshifted: patterns look not "
     r"fftshifted \(zero frequency in the corner\): fftshift them before import"),
    ("transposed", lambda s: {"diff3d": _transposed(s)}, {},
     r"pattern_correlation 0\.\d+ with the file's object and probe, (0\.9\d+|1\.0+) if transposed: patterns look transposed "
     r"\(rows and columns swapped\): transpose each pattern before import"),
    ("xy-swapped", lambda s: {"xcoords": s.positions[:, 1] - 0.5, "ycoords": s.positions[:, 0] - 0.5}, {},
     r"pattern_correlation 0\.\d+ with the file's object and probe, (0\.9\d+|1\.0+) with x and y swapped: xcoords and ycoords "
     r"look swapped: swap them before import"),
    ("counts-declared-amplitude", lambda s: {"diff3d": s.counts.astype(np.float64)}, {},
     r"pattern_correlation 0\.\d+ with the file's object and probe, (0\.9\d+|1\.0+) with diff3d read as counts: diff3d looks like "
     r"counts, not amplitudes: set source\.diff3d: counts"),
    ("amplitude-declared-counts", lambda s: {}, {"diff3d": "counts"},
     r"pattern_correlation 0\.\d+ with the file's object and probe, (0\.9\d+|1\.0+) with diff3d read as amplitudes: diff3d looks "
     r"like amplitudes \(sqrt of counts\), not counts: set source\.diff3d: amplitude"),
    # without an object: the mean pattern and the numbers themselves are the evidence
    ("not-fftshifted-no-object", lambda s: {"diff3d": _fftshift(s), "objectGuess": None}, {},
     r"the mean pattern is [\d.e+]+x brighter around the corners than around the centre: patterns look not "
     r"fftshifted \(zero frequency in the corner\): fftshift them before import"),
    ("counts-declared-amplitude-no-object", lambda s: {"diff3d": s.counts.astype(np.float64), "objectGuess": None},
     {}, r"every diff3d value is a whole number \(\d+ of them >= 4\), as counts are and amplitudes \(sqrt of counts\) "
         r"rarely are: diff3d looks like counts, not amplitudes: set source\.diff3d: counts"),
    ("amplitude-declared-counts-no-object", lambda s: {"objectGuess": None}, {"diff3d": "counts"},
     r"the diff3d values are not whole numbers but their squares are: diff3d looks like amplitudes \(sqrt of "
     r"counts\), not counts: set source\.diff3d: amplitude"),
]


@pytest.mark.parametrize("case,arrays,cfg,pattern", CONVENTION_CASES, ids=[c[0] for c in CONVENTION_CASES])
def test_data_contradicting_the_declared_conventions_stop_the_import(tmp_path, sim, case, arrays, cfg, pattern):
    """The data are checked, not trusted: one line naming the evidence and what to set; nothing
    written. source.check_conventions: false imports anyway (with the warning in the log)."""
    import re

    extra = arrays(sim)
    obj = extra.pop("objectGuess", sim.object) is not None
    src = write_npz(tmp_path / f"{case}.npz", sim, obj=obj, **extra)
    out = tmp_path / "simulated.h5"
    with pytest.raises(IngestError) as info:
        ingest.run(npz_cfg(src, **cfg), "imp", out)
    msg = str(info.value)
    assert msg.startswith(f"{src}: ") and msg.endswith(", or set source.check_conventions: false to override"), msg
    assert re.fullmatch(pattern, msg[len(f"{src}: "):-len(", or set source.check_conventions: false to override")]), msg
    assert not out.exists() and list(tmp_path.iterdir()) == [src]
    ingest.run(npz_cfg(src, check_conventions=False, **cfg), "imp", out)  # the explicit override
    assert Simulated.read(out).counts.shape == sim.counts.shape


def test_good_files_pass_the_convention_checks(tmp_path, sim):
    """A correct file, with and without object, in both diff3d conventions, passes; the evidence is recorded."""
    for name, kw, cfg in (("amp", {}, {}), ("counts", {"diff3d": sim.counts}, {"diff3d": "counts"}),
                          ("noobj", {"obj": False}, {})):
        src = write_npz(tmp_path / f"{name}.npz", sim, **kw)
        ingest.run(npz_cfg(src, **cfg), "imp", tmp_path / f"{name}.h5")
    attrs = read_attrs(tmp_path / "amp.h5")
    assert attrs["pattern_correlation"] > 0.9999
    assert attrs["convention_pattern_correlation_if_fftshifted"] < 0.5
    assert attrs["convention_pattern_correlation_with_x_and_y_swapped"] < attrs["pattern_correlation"]
    assert read_attrs(tmp_path / "noobj.h5")["convention_mean_pattern_corners_over_centre"] < 0.1


def test_patterns_of_another_size_than_n_stop_at_ingest(tmp_path, sim):
    """N = 32 data against a scenario's N = 64: refused at ingest (was caught three stages later)."""
    src = write_npz(tmp_path / "data.npz", sim)
    with pytest.raises(IngestError, match=r"data\.npz: diff3d: expected 32x32 patterns \(the scenario's N = 32\), "
                                          r"got 64x64: set N: 64 for this scenario, or crop the patterns to 32x32$"):
        ingest.run(npz_cfg(src, N=32), "imp", tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()
    ingest.run(npz_cfg(src, N=64), "imp", tmp_path / "s.h5")


def test_npz_without_object_gets_a_frame_and_runs_downstream(tmp_path, sim, ci_data):
    src = write_npz(tmp_path / "noobj.npz", sim, obj=False)
    out = tmp_path / "simulated.h5"
    ingest.run(npz_cfg(src), "imp", out)
    got = Simulated.read(out)
    assert not got.has_truth and got.object is None
    attrs = read_attrs(out)
    assert attrs["has_truth"] == 0
    with h5py.File(out) as f:
        assert "object" not in f
    shift = np.array(json.loads(attrs["conversions"])["frame_shift_px"], dtype=np.float64)
    assert np.all(shift == np.round(shift))  # whole pixels: sub-pixel parts untouched
    np.testing.assert_allclose(got.positions, sim.positions + shift, atol=1e-12)
    n = 64
    h, w = got.object_shape
    m = common.FRAME_MARGIN_PX
    assert got.positions[:, 0].min() - n / 2 >= m - 1 and got.positions[:, 1].min() - n / 2 >= m - 1
    assert got.positions[:, 0].max() + n / 2 <= w - m + 1 and got.positions[:, 1].max() + n / 2 <= h - m + 1
    _, ratios = read_telemetry(out)
    assert "measured_over_expected" not in ratios
    # the implied rms object amplitude is the normalize stage's ā formula over all patterns
    assert ratios["implied_rms_object_amplitude"] == pytest.approx(
        amplitude_estimate(sim.counts, sim.probe), rel=1e-6)
    # split -> group -> normalize run unchanged on it
    p = ci_data["gs1_ideal"]["params"]
    split.run(stage_config(p, "split"), "imp", out, tmp_path / "split.h5")
    group.run(stage_config(p, "group"), "imp", out, tmp_path / "split.h5", tmp_path / "grouped.h5")
    normalize.run(stage_config(p, "normalize"), "imp", out, tmp_path / "split.h5", tmp_path / "grouped.h5",
                  tmp_path / "normalized.h5")
    norm = Normalized.read(tmp_path / "normalized.h5")
    ref = Normalized.read(ci_data["gs1_ideal"]["normalized"])
    assert norm.input_scale == pytest.approx(ref.input_scale, rel=1e-12)
    _, nratios = read_telemetry(tmp_path / "normalized.h5")
    assert "amplitude_estimate_over_true_rms" not in nratios


def test_probe_normalisation_is_converted_and_a_wrong_one_is_measured_not_fixed(tmp_path, sim):
    n = sim.probe.shape[0]
    src = write_npz(tmp_path / "unnorm.npz", sim, probe=(sim.probe / np.float32(n)).astype(np.complex64))
    ingest.run(npz_cfg(src, probe_normalization="unnormalized"), "imp", tmp_path / "ok.h5")
    ok = Simulated.read(tmp_path / "ok.h5")
    np.testing.assert_allclose(ok.probe, sim.probe, rtol=1e-6, atol=0)
    assert read_telemetry(tmp_path / "ok.h5")[1]["measured_over_expected"] == pytest.approx(1.0, abs=1e-3)
    # the same file read with the wrong convention: nothing is rescaled, the ratio shows N²
    ingest.run(npz_cfg(src, probe_normalization="unitary"), "imp", tmp_path / "wrong.h5")
    wrong = Simulated.read(tmp_path / "wrong.h5")
    assert np.array_equal(wrong.counts, ok.counts)
    assert read_telemetry(tmp_path / "wrong.h5")[1]["measured_over_expected"] == pytest.approx(n ** 2, rel=1e-3)


def test_npz_diff3d_as_counts_and_non_integer_amplitudes(tmp_path, sim):
    src = write_npz(tmp_path / "counts.npz", sim, diff3d=sim.counts)
    ingest.run(npz_cfg(src, diff3d="counts"), "imp", tmp_path / "c.h5")
    assert np.array_equal(Simulated.read(tmp_path / "c.h5").counts, sim.counts)
    # preprocessed (non-integer) intensities are kept as they are, not rounded
    amp = np.sqrt(sim.counts.astype(np.float64) + 0.37)
    counts, info = npz.counts_from_amplitude(amp)
    assert not info["counts_rounded_to_integers"]
    np.testing.assert_allclose(counts, sim.counts + np.float32(0.37), rtol=1e-6)


def test_constant_object_is_an_initial_guess_not_a_truth(tmp_path, sim):
    src = write_npz(tmp_path / "flat.npz", sim, obj=False, objectGuess=np.full(sim.object.shape, 1 + 0j))
    ingest.run(npz_cfg(src), "imp", tmp_path / "flat.h5")
    got = Simulated.read(tmp_path / "flat.h5")
    assert got.object is None and got.object_shape == sim.object.shape
    np.testing.assert_allclose(got.positions, sim.positions, atol=1e-12)  # the object's frame is kept
    assert "initial guess" in json.loads(read_attrs(tmp_path / "flat.h5")["conversions"])["object"]


def _bad_npz(tmp_path, sim, case):
    m = len(sim.positions)
    cases = {
        "missing key": (dict(probe=None), {"probeGuess": None}, "probeGuess: key missing"),
        "patterns last": ({}, {"diff3d": np.moveaxis(np.sqrt(sim.counts), 0, -1)}, "diff3d: expected shape (M, N, N)"),
        "negative": ({}, {"diff3d": -np.ones_like(sim.counts)}, "diff3d: expected finite values >= 0"),
        "nan coords": ({}, {"xcoords": np.full(m, np.nan)}, "xcoords: "),
        "short ycoords": ({}, {"ycoords": np.zeros(m - 1)}, f"ycoords: expected {m} values"),
        "two probe modes": ({}, {"probeGuess": np.stack([sim.probe, sim.probe])}, "probeGuess: expected a single-mode"),
        "outside object": ({}, {"xcoords": sim.positions[:, 0] + 200}, "patch centres put the 64x64 patch outside"),
        "object array": ({}, {"objectGuess": np.array([{"a": 1}], dtype=object)}, "objectGuess: not a plain numeric"),
        "no patterns": ({}, {"xcoords": np.zeros(0), "ycoords": np.zeros(0),
                             "diff3d": np.zeros((0,) + sim.counts.shape[1:], np.float32)},
                        "xcoords: expected at least one scan position, got 0"),
        "no patterns, no object": ({}, {"xcoords": np.zeros(0), "ycoords": np.zeros(0), "objectGuess": None,
                                        "diff3d": np.zeros((0,) + sim.counts.shape[1:], np.float32)},
                                   "xcoords: expected at least one scan position, got 0"),
    }
    kw, extra, message = cases[case]
    arrays = dict(xcoords=sim.positions[:, 0] - 0.5, ycoords=sim.positions[:, 1] - 0.5,
                  diff3d=np.sqrt(sim.counts), probeGuess=sim.probe, objectGuess=sim.object)
    arrays.update(extra)
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path, message


@pytest.mark.parametrize("case", ["missing key", "patterns last", "negative", "nan coords", "short ycoords",
                                  "two probe modes", "outside object", "object array", "no patterns",
                                  "no patterns, no object"])
def test_malformed_npz_is_one_line_naming_file_and_key(tmp_path, sim, case):
    path, message = _bad_npz(tmp_path, sim, case)
    out = tmp_path / "simulated.h5"
    with pytest.raises(IngestError) as err:
        ingest.run(npz_cfg(path), "imp", out)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and message in text
    assert not out.exists() and not list(tmp_path.glob(".simulated.h5.tmp*"))


def test_corrupted_compressed_npz_member_is_one_line(tmp_path, sim):
    """A damaged deflate stream inside the archive (zlib.error) is named, not a traceback."""
    path = tmp_path / "damaged.npz"
    np.savez_compressed(path, xcoords=sim.positions[:, 0] - 0.5, ycoords=sim.positions[:, 1] - 0.5,
                        diff3d=np.sqrt(sim.counts), probeGuess=sim.probe)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("diff3d.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200  # inside its deflate data
    raw[start:start + 40] = bytes(40)
    path.write_bytes(bytes(raw))
    out = tmp_path / "simulated.h5"
    with pytest.raises(IngestError) as err:
        ingest.run(npz_cfg(path), "imp", out)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and "diff3d: unreadable" in text
    assert not out.exists()


@pytest.mark.stage
def test_cli_reports_a_bad_file_in_one_line(tmp_path, sim):
    from ptychopipe.config import to_json

    path, _ = _bad_npz(tmp_path, sim, "missing key")
    res = subprocess.run([sys.executable, "-m", "ptychopipe", "ingest", "--scenario", "imp", "--config",
                          to_json(npz_cfg(path)), "--out", str(tmp_path / "o.h5")],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ptychopipe ingest: error: ") and "probeGuess" in lines[0]
    assert str(path) in lines[0], "the error names the file"
    assert not (tmp_path / "o.h5").exists() and not list(tmp_path.glob(".o.h5.tmp*"))


def test_reader_refuses_a_file_claiming_no_object_without_its_frame(tmp_path, sim):
    src = write_npz(tmp_path / "noobj.npz", sim, obj=False)
    out = tmp_path / "simulated.h5"
    ingest.run(npz_cfg(src), "imp", out)
    with h5py.File(out, "r+") as f:
        del f.attrs["object_shape"]
    with pytest.raises(ArtifactError, match="object_shape: expected the attribute"):
        Simulated.read(out)


# --------------------------------------------------------------------------- ptychodus


def write_ptychodus(tmp_path, sim, *, pixel=5e-8, centre=(1e-6, -2e-6), probe_ndim=4, shuffle=True,
                    extra_patterns=2, mutate=None):
    """A ptychodus product + diffraction pair in ptychodus' layout (ptychodus.api.io) from a
    simulation: probe in the unnormalised convention (P_abs / N), positions in metres, patterns
    indexed in a shuffled order with unmatched extras."""
    n = sim.probe.shape[0]
    h, w = sim.object.shape
    m = len(sim.positions)
    idx = np.arange(100, 100 + m)
    probe = (sim.probe / np.float32(n)).astype(np.complex64)
    probe = probe.reshape((1,) * (probe_ndim - 2) + probe.shape)
    prod, diff = tmp_path / "product.h5", tmp_path / "diffraction.h5"
    with h5py.File(prod, "w") as f:
        f.attrs.update(name="test", comments="", detector_object_distance_m=2.0, probe_energy_eV=8000.0,
                       exposure_time_s=0.1)
        f.create_dataset("probe_position_indexes", data=idx)
        f.create_dataset("probe_position_x_m", data=(sim.positions[:, 0] - w / 2) * pixel + centre[0])
        f.create_dataset("probe_position_y_m", data=(sim.positions[:, 1] - h / 2) * pixel + centre[1])
        p = f.create_dataset("probe", data=probe)
        p.attrs.update(pixel_width_m=pixel, pixel_height_m=pixel)
        o = f.create_dataset("object", data=sim.object[None])
        o.attrs.update(center_x_m=centre[0], center_y_m=centre[1], pixel_width_m=pixel, pixel_height_m=pixel)
        f.create_dataset("object_layer_spacing_m", data=np.zeros(0))
    order = np.random.default_rng(0).permutation(m) if shuffle else np.arange(m)
    patterns = np.concatenate([sim.counts[order], np.zeros((extra_patterns, n, n), np.float32)]).astype(np.uint32)
    pidx = np.concatenate([idx[order], np.arange(5000, 5000 + extra_patterns)])
    with h5py.File(diff, "w") as f:
        pat = f.create_dataset("patterns", data=patterns)
        pat.attrs.update(detector_pixel_width_m=75e-6, detector_pixel_height_m=75e-6)
        f.create_dataset("indexes", data=pidx)
        f.create_dataset("bad_pixels", data=np.zeros((n, n), bool))
    if mutate:
        mutate(prod, diff)
    return prod, diff


@pytest.mark.parametrize("probe_ndim", [2, 4])
def test_ptychodus_pair_converts_units_and_conventions(tmp_path, sim, probe_ndim):
    prod, diff = write_ptychodus(tmp_path, sim, probe_ndim=probe_ndim)
    imp = ptychodus.read_ptychodus(prod)  # diffraction.h5 beside the product by default
    assert np.array_equal(imp.counts, sim.counts)  # matched by index, not by file order
    np.testing.assert_allclose(imp.positions, sim.positions, rtol=0, atol=1e-9)
    assert np.array_equal(imp.probe, sim.probe)  # P_abs = N * P (exact: N is a power of two)
    assert np.array_equal(imp.object, sim.object)
    assert imp.conversions["probe_normalization"] == "unnormalized" and imp.conversions["probe_scale"] == 64.0
    assert imp.metadata["probe_energy_eV"] == 8000.0 and imp.metadata["object_pixel_width_m"] == 5e-8
    out = tmp_path / "simulated.h5"
    cfg = IngestConfig(file=str(prod), format="ptychodus", probe_normalization="native", diff3d=None, diffraction=None)
    ingest.run(cfg, "pty", out)
    attrs = read_attrs(out)
    assert attrs["source_diffraction_sha256"] == artifacts.file_sha256(diff)
    assert read_telemetry(out)[1]["measured_over_expected"] == pytest.approx(1.0, abs=1e-3)


def _set_attr(key, value, node="object"):
    def mutate(prod, diff):
        with h5py.File(prod, "r+") as f:
            f[node].attrs[key] = value
    return mutate


def _del(path_kind, key):
    def mutate(prod, diff):
        with h5py.File(prod if path_kind == "product" else diff, "r+") as f:
            del f[key]
    return mutate


def _bad_pixel(prod, diff):
    with h5py.File(diff, "r+") as f:
        bp = f["bad_pixels"][()]
        bp[3, 4] = True
        f["bad_pixels"][...] = bp


def _dup_index(prod, diff):
    with h5py.File(prod, "r+") as f:
        idx = f["probe_position_indexes"][()]
        idx[1] = idx[0]
        f["probe_position_indexes"][...] = idx


def _index_array(value):
    def mutate(prod, diff):
        with h5py.File(prod, "r+") as f:
            del f["probe_position_indexes"]
            f.create_dataset("probe_position_indexes", data=value)
    return mutate


def _drop_pattern(prod, diff):
    with h5py.File(diff, "r+") as f:
        idx = f["indexes"][()]
        idx[idx == 100] = 9999
        f["indexes"][...] = idx


@pytest.mark.parametrize("mutate,where,message", [
    (_set_attr("pixel_height_m", 6e-8), "product", "object.attrs[pixel_height_m]: expected square pixels"),
    (_del("product", "probe_position_y_m"), "product", "probe_position_y_m: dataset missing"),
    (_del("diffraction", "patterns"), "diffraction", "patterns: dataset missing"),
    (_bad_pixel, "diffraction", "bad_pixels: 1 pixels flagged"),
    (_dup_index, "product", "probe_position_indexes: 1 indexes appear more than once"),
    (_drop_pattern, "diffraction", "indexes: 1 of the product's"),
    (_index_array(np.int64(3)), "product", "probe_position_indexes: expected a 1-D array of at least one index, got shape ()"),
    (_index_array(np.zeros(0, np.int64)), "product", "probe_position_indexes: expected a 1-D array of at least one"),
    (_set_attr("pixel_width_m", 1e-7, node="probe"), "product", "probe.attrs[pixel_width_m]: expected the object's"),
])
def test_malformed_ptychodus_is_one_line_naming_file_and_key(tmp_path, sim, mutate, where, message):
    prod, diff = write_ptychodus(tmp_path, sim, mutate=mutate)
    with pytest.raises(IngestError) as err:
        ptychodus.read_ptychodus(prod)
    text = str(err.value)
    assert "\n" not in text and message in text and str(prod if where == "product" else diff) in text


def test_missing_diffraction_file_names_it(tmp_path, sim):
    prod, diff = write_ptychodus(tmp_path, sim)
    diff.unlink()
    with pytest.raises(IngestError, match=r"diffraction.h5: file not found"):
        ptychodus.read_ptychodus(prod)


# --------------------------------------------------------------------------- config and workflow


def test_source_config_validates_and_only_its_format_fields_count(raw_config):
    from ptychopipe.config import ConfigError, resolve_scenarios, to_json

    raw_config["scenarios"]["real"] = {"source": {"file": "x.npz", "format": "npz"}}
    scen = resolve_scenarios(raw_config, "ci")
    a = stage_config(scen["real"], "ingest")
    assert a == IngestConfig(file="x.npz", format="npz", probe_normalization="native", diff3d="amplitude",
                             diffraction=None, N=64, check_conventions=True)
    raw_config["scenarios"]["real"]["source"]["diffraction"] = "d.h5"  # a ptychodus-only field: no re-run
    assert to_json(stage_config(resolve_scenarios(raw_config, "ci")["real"], "ingest")) == to_json(a)
    raw_config["scenarios"]["real"]["source"]["format"] = "cxi"
    with pytest.raises(ConfigError, match=r"scenarios.real.source.format: 'cxi' is not one of"):
        resolve_scenarios(raw_config, "ci")


@pytest.mark.workflow
def test_workflow_picks_ingest_for_imported_and_simulate_for_the_others(workdir, ci_data):
    src = workdir / "data" / "measured.npz"
    write_npz(src, Simulated.read(ci_data["gs1_ideal"]["simulated"]), obj=False)
    edit_config(workdir, lambda cfg: cfg.update(
        scenarios={**cfg["scenarios"], "real": {"source": {"file": "data/measured.npz", "format": "npz"}}},
        run=["real", "gs1_ideal"]))
    res = run_snakemake(workdir, "-n", "results/real/normalized.h5", "results/gs1_ideal/simulated.h5",
                        "--config", "preset=ci", check=True, timeout=300)
    jobs = {}  # output -> rule, from the dry run's job blocks
    rule = None
    for line in res.stdout.splitlines():
        line = line.strip()
        if line.startswith("rule ") and line.endswith(":"):
            rule = line[5:-1]
        elif line.startswith("output:") and rule:
            for out in line[len("output:"):].split(","):
                jobs[out.strip()] = rule
    assert jobs["results/real/simulated.h5"] == "ingest"
    assert jobs["results/gs1_ideal/simulated.h5"] == "simulate"
    assert jobs["results/real/normalized.h5"] == "normalize"
    # a missing source file is one config error line before any job runs
    src.unlink()
    res = run_snakemake(workdir, "--cores", "1", "--config", "preset=ci", timeout=300)  # not a dry run
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert [ln for ln in lines if "config error" in ln] == [
        "ptychopipe: config error: config/scenarios.yaml: scenario real: source.file: data/measured.npz not "
        "found; expected an existing npz file (docs/real_data.md)"], res.stderr[-2000:]
    assert not (workdir / "results").exists()


def test_shipped_config_resolves_with_source_and_baseline_defaults():
    scen = load_scenarios(CONFIG_FILE, "ci")
    for p in scen.values():
        assert p["source"]["file"] is None and p["baseline"]["enabled"] is False


def test_compare_without_truth_reports_data_space_only(tmp_path, sim, ci_data):
    """Imported data without an object: compare writes data-space metrics only (object-space
    ones null), and the report says so."""
    from evaluate_helpers import FIGURES, compare_config, true_patches, write_synthetic_train
    from ptychopipe.artifacts import ComparisonSummary, Inferred
    from ptychopipe.config import InferConfig
    from ptychopipe.physics import expected_counts
    from ptychopipe.reporting import write_summary
    from ptychopipe.stages import compare, stitch

    src = write_npz(tmp_path / "noobj.npz", sim, obj=False)
    p = ci_data["gs1_ideal"]["params"]
    f = {k: tmp_path / f"{k}.h5" for k in ("simulated", "split", "grouped", "normalized", "inferred", "train",
                                           "stitched", "comparison")}
    ingest.run(npz_cfg(src), "real", f["simulated"])
    split.run(stage_config(p, "split"), "real", f["simulated"], f["split"])
    group.run(stage_config(p, "group"), "real", f["simulated"], f["split"], f["grouped"])
    normalize.run(stage_config(p, "normalize"), "real", f["simulated"], f["split"], f["grouped"], f["normalized"])
    imp = Simulated.read(f["simulated"])
    norm = Normalized.read(f["normalized"])
    idx = norm.sets["test"].indices
    b, c = idx.shape
    n = sim.probe.shape[0]
    patches = true_patches(sim.object, sim.positions[idx].reshape(-1, 2), n)  # the truth, the file lacks
    pr = sim.probe.astype(np.complex128)
    lam = expected_counts((pr.real, pr.imag), (patches.real, patches.imag))
    meas = imp.counts[idx.ravel()].astype(np.float64)
    ratio = float(lam.sum() / meas.sum())
    patches = patches.reshape(b, c, n, n)
    Inferred(np.abs(patches).astype(np.float32), np.angle(patches).astype(np.float32), imp.positions[idx], idx,
             imp.probe, lam.sum(axis=(1, 2)).reshape(b, c), meas.sum(axis=(1, 2)).reshape(b, c),
             {"predicted_over_measured_counts": ratio, "poisson_nll": 0.0123, "mean_counts": norm.mean_counts}).write(
        f["inferred"], scenario="real", config=InferConfig(batch_size=8),
        ratios={"predicted_over_measured_counts": ratio})
    write_synthetic_train(f["train"], ci_data["gs1_ideal"], "real")
    stitch.run(stage_config(p, "stitch"), "real", inferred=f["inferred"], out=f["stitched"])
    figs = {k: tmp_path / "fig" / f"{k}.png" for k in FIGURES}
    compare.run(compare_config(), "real", simulated=f["simulated"], grouped=f["grouped"], normalized=f["normalized"],
                inferred=f["inferred"], stitched=f["stitched"], train=f["train"], out=f["comparison"],
                json=tmp_path / "comparison.json", amplitude_png=figs["amplitude"], phase_png=figs["phase"],
                frc_png=figs["frc"], training_png=figs["training"])
    res = ComparisonSummary.read(tmp_path / "comparison.json")
    assert res["has_truth"] is False and res["amplitude_bias"] is None
    assert all(v is None for part in ("amplitude", "phase") for v in res["metrics"][part].values())
    dm = res["data_metrics"]
    assert dm["poisson_nll"] == 0.0123 and dm["predicted_over_measured_counts_recomputed"] == pytest.approx(ratio)
    rings = [v for v in dm["ring_predicted_over_measured"].values() if v is not None]
    assert len(rings) == n // 2 + 1 and all(abs(v - 1) < 0.05 for v in rings[:8])  # truth patches explain the data
    assert [link["stage"] for link in res["chain"]] == ["grouped", "normalized", "prediction", "stitched"]
    assert res["first_broken"] is None and all(figs[k].stat().st_size > 1000 for k in FIGURES)
    md = tmp_path / "report" / "summary.md"
    write_summary([tmp_path / "comparison.json"], md, tmp_path / "report" / "s.csv", tmp_path / "report" / "o.png")
    text = md.read_text()
    assert "**No true object** (imported data)" in text and "Poisson NLL of the test data 0.0123" in text
    assert next(ln for ln in text.splitlines() if ln.startswith("| real |")).count("n/a") >= 9


def test_ptychodus_product_without_object_builds_a_frame(tmp_path, sim):
    def drop_object(prod, diff):
        with h5py.File(prod, "r+") as f:
            del f["object"]
    prod, _ = write_ptychodus(tmp_path, sim, mutate=drop_object)
    imp = ptychodus.read_ptychodus(prod)
    assert imp.object is None and "frame_shift_px" in imp.conversions
    d = imp.positions - sim.positions
    np.testing.assert_allclose(d, np.broadcast_to(d[0], d.shape), atol=1e-6)  # a rigid shift of the scan
    assert np.array_equal(imp.counts, sim.counts) and np.array_equal(imp.probe, sim.probe)


@pytest.mark.workflow
@pytest.mark.slow
def test_imported_scenario_end_to_end_with_report(workdir, ci_data):
    """A user points a scenario at an NPZ without an object: the whole DAG runs (ingest instead
    of simulate), and the report says the metrics are data-space only; with the baselines
    extra installed, the PINN-vs-iterative section is there too."""
    from ptychopipe import baseline

    write_npz(workdir / "data" / "measured.npz", Simulated.read(ci_data["gs1_ideal"]["simulated"]), obj=False)
    with_baseline = baseline.available()[0]

    def edit(cfg):
        cfg["scenarios"]["real"] = {"source": {"file": "data/measured.npz", "format": "npz"},
                                    "baseline": {"enabled": with_baseline, "engine": "rpie", "epochs": 4}}
        cfg["run"] = ["real"]

    edit_config(workdir, edit)
    run_snakemake(workdir, "--cores", "2", "--config", "preset=ci", check=True, timeout=1200)
    res = workdir / "results"
    assert read_attrs(res / "real" / "simulated.h5")["stage"] == "ingest"
    assert not (res / "real" / "logs" / "simulate.log").exists()
    text = (res / "report" / "summary.md").read_text()
    assert "**No true object** (imported data)" in text
    telemetry = (res / "telemetry.csv").read_text()
    assert "real,ingest,counts" in telemetry
    if with_baseline:
        assert "## PINN vs iterative reference (pty-chi)" in text
        row = next(ln for ln in text.splitlines() if ln.startswith("| real | rpie (4)"))
        assert "n/a / n/a" in row  # no truth: object-space cells empty, the NLL pair is filled
        assert json.loads((res / "real" / "baseline_comparison.json").read_text())["has_truth"] is False
