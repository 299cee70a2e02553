"""Bad input ends with one clear line, a non-zero exit and no half-written output.

Two tables:

- CONFIG_CASES are config-level: config/scenarios.yaml (in a temporary working
  directory) is edited and ``snakemake`` is run on it. Expected: exit status 1,
  the last line of stderr is the one line ``ptychopipe: config error: ...`` naming
  the key, and nothing is written (no results/).
- ARTIFACT_CASES are artifact-level: a bad input file (simulated.h5, split.h5,
  probe file, ...) is crafted and the stage command the rules call,
  ``python -m ptychopipe <stage> ...``, is run on it. Expected: exit status 1,
  stderr is exactly one line ``ptychopipe <stage>: error: ...`` naming the file and
  what was expected, and the output path does not exist (nor any temp file).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from pipeline_helpers import (CONFIG_FILE, REPO, make_workdir, nonempty_lines, rewrite_dataset, run_snakemake,
                              run_stage)
from ptychopipe.artifacts import ArtifactError, Normalized
from ptychopipe.config import load_scenarios, stage_config, to_json

# --------------------------------------------------------------------------- config-level cases


def _set(path: str, value):
    """Mutation: set dotted key ``path`` of the config to ``value``."""
    def mutate(cfg: dict) -> None:
        node = cfg
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return mutate


def _delete(path: str):
    def mutate(cfg: dict) -> None:
        node = cfg
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
    return mutate


def _add_scenario(name: str, params: dict | None = None):
    def mutate(cfg: dict) -> None:
        cfg["scenarios"][name] = params or {"gridsize": 1}
    return mutate


def _both(*mutations):
    def mutate(cfg: dict) -> None:
        for m in mutations:
            m(cfg)
    return mutate


# (case id, mutation of scenarios.yaml, extra snakemake args, expected substring of the error line)
CONFIG_CASES: list[tuple[str, Callable | None, tuple[str, ...], str]] = [
    ("missing-key", _delete("defaults.nphotons"), (), "'nphotons' is a required property"),
    ("missing-section", _delete("defaults.scan"), (), "scan: 'buffer_px' is a required property"),
    ("unknown-key", _set("defaults.colour", "blue"), (), "'colour' was unexpected"),
    ("unknown-nested-key", _set("defaults.scan.n_imags", 10), (),
     "defaults.scan: Additional properties are not allowed ('n_imags' was unexpected)"),
    ("unknown-top-level-key", _set("scenarioz", {}), (), "'scenarioz' was unexpected"),
    ("wrong-type-string-for-int", _set("defaults.N", "64"), (), "defaults.N: '64' is not of type 'integer'"),
    ("wrong-type-float-for-int", _set("defaults.scan.n_images", 4.5), (), "defaults.scan.n_images"),
    ("wrong-type-section", _set("defaults.scan", 5), (), "defaults.scan: 5 is not of type 'object'"),
    ("zero-nphotons", _set("defaults.nphotons", 0), (), "defaults.nphotons: 0 is less than or equal to the minimum"),
    ("negative-nphotons", _set("scenarios.gs1_ideal.nphotons", -1.0e6), (),
     "scenarios.gs1_ideal.nphotons: -1000000.0 is less than or equal to the minimum"),
    ("N-not-power-of-two", _set("defaults.N", 48), (), "defaults.N: 48 is not one of [32, 64, 128, 256]"),
    ("gridsize-3-neighbours-too-few", _set("scenarios.gs1_ideal.gridsize", 3), (),
     "group.neighbour_count: expected >= gridsize^2 = 9"),
    ("object-smaller-than-N", _set("presets.ci.object.size", 48), (), "object.size: expected >= N"),
    ("negative-count-of-images", _set("defaults.scan.n_images", -5), (), "defaults.scan.n_images: -5 is less than"),
    ("zero-groups", _set("presets.ci.group.n_groups", 0), (), "presets.ci.group.n_groups: 0 is less than"),
    ("split-fraction-one", _set("defaults.split.fraction", 1.0), (), "defaults.split.fraction: 1.0 is greater than or equal to the maximum of 1"),
    ("range-min-above-max", _set("defaults.object.amplitude_range", [1.5, 0.5]), (),
     "object.amplitude_range: expected min < max"),
    ("scenario-name-with-slash", _add_scenario("evil/../../x"), (), "does not match '^[A-Za-z0-9][A-Za-z0-9_-]*$'"),
    ("scenario-name-dotdot", _add_scenario(".."), (), "'..' does not match"),
    # a leading "-" would read as an option on every stage's command line (--scenario -x)
    ("scenario-name-leading-dash", _add_scenario("-x"), (), "scenarios: '-x' does not match"),
    ("sweep-label-with-slash", _set("sweeps", {"dose": {"base": "gs1_ideal", "param": "nphotons",
                                                        "values": [1e4], "labels": ["../up"]}}), (),
     "sweeps.dose.labels.0"),
    ("custom-probe-without-file", _set("scenarios.gs1_custom.probe.file", None), (),
     "probe.file: expected a file path for probe.kind=custom"),
    ("custom-probe-file-missing", _set("scenarios.gs1_custom.probe.file", "data/probes/nope.npz"), (),
     "probe.file: data/probes/nope.npz not found"),
    ("unknown-preset", None, ("--config", "preset=huge"), "preset: 'huge' is not defined"),
    ("unknown-scenario-in-run", _set("run", ["gs9_nothing"]), (), "run: unknown scenario(s) ['gs9_nothing']"),
    ("empty-scenarios", _set("scenarios", {}), (), "scenarios: {} should be non-empty"),
]


@pytest.mark.workflow
@pytest.mark.parametrize("case,mutate,extra,expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_error_is_one_line(tmp_path, case, mutate, extra, expected):
    wd = make_workdir(tmp_path / "wd", mutate)
    res = run_snakemake(wd, "--cores", "1", *extra, timeout=120)
    lines = nonempty_lines(res.stderr)
    errors = [ln for ln in lines if ln.startswith("ptychopipe: config error:")]
    assert res.returncode == 1, res.stderr[-3000:]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one final config-error line, got:\n{res.stderr}"
    assert expected in errors[0], f"{expected!r} not in {errors[0]!r}"
    if "--config" in extra:  # a value given on the command line is attributed to it, not to the file
        assert "command line --config" in errors[0] and "config/scenarios.yaml" not in errors[0], errors[0]
    else:
        assert "config/scenarios.yaml" in errors[0], "the error line names the file"
    assert "Traceback" not in res.stderr
    assert not (wd / "results").exists(), "nothing may be written on a config error"


# (case id, edit of the config file's text, expected error line after "ptychopipe: config error: ")
YAML_TEXT_CASES = [
    # PyYAML keeps the last of two equal keys: the first gs1_ideal would silently vanish
    ("duplicate-scenario", lambda t: t.replace("\nscenarios:\n", "\nscenarios:\n  gs1_ideal: {gridsize: 2}\n", 1),
     r"config/scenarios\.yaml: not valid YAML \(line (\d+), column 3\): duplicate key 'gs1_ideal' "
     r"\(first defined on line (\d+)\)"),
    ("duplicate-nested-key", lambda t: t + "\npresets:\n  ci: {}\n",
     r"config/scenarios\.yaml: not valid YAML \(line \d+, column 1\): duplicate key 'presets' "
     r"\(first defined on line \d+\)"),
    ("malformed", lambda t: t.replace("\nscenarios:\n", "\nscenarios:\n  broken: [1\n", 1),
     r"config/scenarios\.yaml: not valid YAML \(line \d+, column \d+\): .+"),
]


@pytest.mark.workflow
@pytest.mark.parametrize("case,edit,pattern", YAML_TEXT_CASES, ids=[c[0] for c in YAML_TEXT_CASES])
def test_bad_yaml_text_is_one_line_with_its_line(tmp_path, case, edit, pattern):
    """A syntax error or a repeated key in config/scenarios.yaml: one line naming the file and the
    line (Snakemake alone says "not valid JSON or YAML", or keeps the second key silently)."""
    import re

    wd = make_workdir(tmp_path / "wd")
    path = wd / "config" / "scenarios.yaml"
    path.write_text(edit(path.read_text()))
    res = run_snakemake(wd, "--cores", "1", "-n", timeout=120)
    lines = nonempty_lines(res.stderr + res.stdout)
    assert res.returncode == 1, res.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("ptychopipe: config error: "), res.stderr + res.stdout
    m = re.fullmatch(pattern, lines[0][len("ptychopipe: config error: "):])
    assert m, lines[0]
    if case == "duplicate-scenario":
        text = path.read_text().splitlines()
        second, first = int(m.group(1)), int(m.group(2))
        assert text[second - 1].strip().startswith("gs1_ideal:") and text[first - 1].strip().startswith("gs1_ideal")
    assert not (wd / "results").exists()


@pytest.mark.workflow
def test_missing_configfile_snakemake(tmp_path):
    """--configfile that does not exist: Snakemake itself fails (before our code), non-zero,
    the last line names the file; nothing is written."""
    wd = make_workdir(tmp_path / "wd")
    res = run_snakemake(wd, "--cores", "1", "--configfile", "config/nope.yaml", timeout=120)
    assert res.returncode != 0
    assert "nope.yaml" in nonempty_lines(res.stderr)[-1]
    assert not (wd / "results").exists()


def test_missing_configfile_cli(tmp_path):
    """A config path that does not exist, through our own CLI: exactly one line."""
    res = run_stage("params-diff", "gs1_ideal", "gs2_ideal", "--configfile", str(tmp_path / "nope.yaml"))
    assert res.returncode == 1
    assert nonempty_lines(res.stderr) == [f"ptychopipe params-diff: error: {tmp_path / 'nope.yaml'}: "
                                          "config file not found"]


# --------------------------------------------------------------------------- artifact-level cases

SCEN = "gs1_ideal"
N = 64


@pytest.fixture(scope="module")
def params():
    return load_scenarios(CONFIG_FILE, "ci")


@pytest.fixture(scope="module")
def good(tmp_path_factory, params):
    """Valid simulated/split/grouped artifacts of the ci preset (gs1_ideal), made by the stage CLIs."""
    d = tmp_path_factory.mktemp("good")
    p = params[SCEN]
    steps = [
        ("simulate", ()),
        ("split", ("--simulated", d / "simulated.h5")),
        ("group", ("--simulated", d / "simulated.h5", "--split", d / "split.h5")),
        ("normalize", ("--simulated", d / "simulated.h5", "--split", d / "split.h5", "--grouped", d / "grouped.h5")),
    ]
    outs = {"simulate": "simulated.h5", "split": "split.h5", "group": "grouped.h5", "normalize": "normalized.h5"}
    for stage, inputs in steps:
        res = run_stage(stage, "--scenario", SCEN, "--config", to_json(stage_config(p, stage)),
                        *map(str, inputs), "--out", str(d / outs[stage]))
        assert res.returncode == 0, res.stderr
    return d


def _copy(good: Path, dst: Path, name: str) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(good / name, dst / name)
    return dst / name


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_counts(path: Path) -> None:
    """Overwrite bytes inside the counts data (not the metadata): only a checksum can tell."""
    with h5py.File(path, "r") as f:
        ds = f["counts"]
        off = ds.id.get_offset() if ds.chunks is None else ds.id.get_chunk_info(0).byte_offset
        size = ds.id.get_storage_size()
    with open(path, "r+b") as fh:
        fh.seek(off + size // 3)
        fh.write(np.random.default_rng(0).integers(0, 255, 64, dtype=np.uint8).tobytes())


def _with(name: str, fn: Callable[[np.ndarray], np.ndarray]):
    def craft(path: Path) -> None:
        with h5py.File(path, "r") as f:
            data = f[name][()]
        rewrite_dataset(path, name, fn(data))
    return craft


def _set_attr(key: str, value):
    def craft(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            f.attrs[key] = value
    return craft


def _delete_attr(key: str):
    def craft(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            del f.attrs[key]
    return craft


def _delete_dataset(name: str):
    def craft(path: Path) -> None:
        with h5py.File(path, "r+") as f:
            del f[name]
    return craft


def _neg(a):
    a = a.copy()
    a[0, 0, 0] = -3.0
    return a


def _nan(a):
    a = a.copy()
    a[1, 2, 3] = np.nan
    return a


def _outside(a):
    a = a.copy()
    a[5] = [3.0, 60.0]  # x = 3 px: the 64 px patch would start at x = -29
    return a


def _one_position(path: Path) -> None:
    """simulated.h5 with a single scan position: the split leaves one half empty."""
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in ("positions", "counts", "amplitude")}
    for k, v in arrays.items():
        rewrite_dataset(path, k, v[:1])


def _empty_test_split(path: Path) -> None:
    with h5py.File(path, "r") as f:
        pos = f["test/positions"][()]
    rewrite_dataset(path, "test/indices", np.zeros(0, dtype=np.int64))
    rewrite_dataset(path, "test/positions", pos[:0])


# stage inputs per stage: (flag, file name in the case dir)
_SPLIT_IN = (("--simulated", "simulated.h5"),)
_GROUP_IN = (("--simulated", "simulated.h5"), ("--split", "split.h5"))
_NORM_IN = _GROUP_IN + (("--grouped", "grouped.h5"),)


def _no_counts(path: Path) -> None:
    """simulated.h5 whose patterns are all dark."""
    with h5py.File(path, "r") as f:
        shape = f["counts"].shape
    rewrite_dataset(path, "counts", np.zeros(shape, np.float32))
    rewrite_dataset(path, "amplitude", np.zeros(shape, np.float32))

# (case id, stage, inputs, file to craft, crafting function, expected substring of the error)
ARTIFACT_CASES = [
    ("truncated-hdf5", "split", _SPLIT_IN, "simulated.h5", _truncate, "not a readable HDF5 file (truncated or corrupted?)"),
    ("corrupted-hdf5-data", "split", _SPLIT_IN, "simulated.h5", _corrupt_counts, "counts: unreadable (truncated or corrupted?)"),
    ("not-hdf5", "split", _SPLIT_IN, "simulated.h5", lambda p: p.write_text("hello\n"), "not a readable HDF5 file"),
    ("input-missing", "split", _SPLIT_IN, "simulated.h5", lambda p: p.unlink(), "file not found"),
    ("wrong-schema-version", "split", _SPLIT_IN, "simulated.h5", _set_attr("schema_version", 99),
     "schema_version: expected 1, got 99"),
    ("wrong-stage", "group", _GROUP_IN, "split.h5", _set_attr("stage", "simulate"), "stage: expected 'split', got 'simulate'"),
    ("wrong-dtype-counts", "split", _SPLIT_IN, "simulated.h5", _with("counts", lambda a: a.astype(np.int32)),
     "counts: expected dtype kind 'f', got int32"),
    ("wrong-dtype-real-probe", "split", _SPLIT_IN, "simulated.h5", _with("probe", lambda a: a.real.copy()),
     "probe: expected dtype kind 'c', got float32"),
    ("wrong-shape-amplitude", "split", _SPLIT_IN, "simulated.h5", _with("amplitude", lambda a: a[:, :32, :32]),
     "amplitude: expected shape"),
    ("dataset-missing", "split", _SPLIT_IN, "simulated.h5", _delete_dataset("positions"), "positions: dataset missing"),
    ("negative-counts", "split", _SPLIT_IN, "simulated.h5", _with("counts", _neg), "counts: 1 negative or NaN values"),
    ("nan-counts", "split", _SPLIT_IN, "simulated.h5", _with("counts", _nan), "counts: 1 negative or NaN values"),
    ("positions-outside-object", "split", _SPLIT_IN, "simulated.h5", _with("positions", _outside),
     "positions: 1 of 48 patch centres put the 64x64 patch outside the 128x128 object"),
    ("empty-split", "split", _SPLIT_IN, "simulated.h5", _one_position, "empty split"),
    ("empty-split-file", "group", _GROUP_IN, "split.h5", _empty_test_split, "[group] test: 0 patterns available"),
    ("attribute-missing", "group", _GROUP_IN, "split.h5", _delete_attr("y_split"), "attribute y_split missing"),
    ("attribute-not-a-number", "group", _GROUP_IN, "split.h5", _set_attr("y_split", "north"),
     "attribute y_split: expected float, got 'north'"),
    ("split-of-another-scenario", "normalize", _NORM_IN, "split.h5", _with("train/indices", lambda a: a + 1000),
     "outside the 48 patterns of"),
    ("no-counts", "normalize", _NORM_IN, "simulated.h5", _no_counts, "training patterns hold no counts"),
]


@pytest.mark.parametrize("key", ["input_scale", "amplitude_estimate", "mean_counts", "gridsize"])
@pytest.mark.stage
def test_normalized_attribute_missing_names_file_and_key(tmp_path, good, key):
    """Normalized.read (the train and infer stages' reader): a missing root attribute is one
    ArtifactError line naming the file and the attribute, not a bare KeyError."""
    path = _copy(good, tmp_path, "normalized.h5")
    _delete_attr(key)(path)
    with pytest.raises(ArtifactError) as err:
        Normalized.read(path)
    msg = str(err.value)
    assert msg == f"{path}: attribute {key} missing", msg


@pytest.mark.parametrize("case,stage,inputs,target,craft,expected", ARTIFACT_CASES,
                         ids=[c[0] for c in ARTIFACT_CASES])
@pytest.mark.stage
def test_bad_artifact_is_one_line(tmp_path, good, params, case, stage, inputs, target, craft, expected):
    d = tmp_path / "case"
    for _, name in inputs:
        _copy(good, d, name)
    craft(d / target)
    out = d / "out" / "result.h5"
    args = [a for flag, name in inputs for a in (flag, str(d / name))]
    res = run_stage(stage, "--scenario", SCEN, "--config", to_json(stage_config(params[SCEN], stage)),
                    *args, "--out", str(out))
    _assert_one_line_failure(res, stage, expected, out, names=d / target)


def _assert_one_line_failure(res, stage: str, expected: str, out: Path, names: Path | None = None) -> None:
    """Exit 1, exactly one stderr line `ptychopipe <stage>: error: ...` holding ``expected``
    (and the path ``names``, when given), no output and no temp file."""
    lines = nonempty_lines(res.stderr)
    assert res.returncode == 1, f"exit {res.returncode}\n{res.stderr[-3000:]}"
    assert len(lines) == 1, f"expected exactly one stderr line, got:\n{res.stderr[-3000:]}"
    assert lines[0].startswith(f"ptychopipe {stage}: error: "), lines[0]
    assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"
    assert names is None or str(names) in lines[0], f"the error names the file {names}: {lines[0]!r}"
    assert not out.exists(), "no output may be written"
    leftovers = list(out.parent.glob(".*tmp*")) if out.parent.exists() else []
    assert not leftovers, f"temp files left behind: {leftovers}"


# --------------------------------------------------------------------------- probe files (simulate)


def _probe_npz(path: Path, arr, key: str = "probeGuess") -> Path:
    np.savez(path, **{key: arr})
    return path


def _good_probe() -> np.ndarray:
    with np.load(REPO / "data" / "probes" / "custom_probe_64.npz", allow_pickle=False) as z:
        return z["probeGuess"]


PROBE_CASES = [
    ("probe-wrong-shape", lambda d: Path(shutil.copy(REPO / "data/probes/custom_probe_128.npz", d / "p.npz")),
     "probeGuess: expected shape (64, 64), got (128, 128)"),
    ("probe-real-valued", lambda d: _probe_npz(d / "p.npz", np.abs(_good_probe())), "expected a complex array"),
    ("probe-with-nan", lambda d: _probe_npz(d / "p.npz", np.where(np.eye(64) > 0, np.nan, _good_probe())),
     "64 non-finite values"),
    ("probe-all-zero", lambda d: _probe_npz(d / "p.npz", np.zeros((64, 64), np.complex64)), "all zeros"),
    ("probe-key-missing", lambda d: _probe_npz(d / "p.npz", _good_probe(), key="other"),
     "key 'probeGuess' missing; found ['other']"),
    ("probe-pickled-object", lambda d: _probe_npz(d / "p.npz", np.array([{"a": 1}], dtype=object)),
     "allow_pickle=False"),
    ("probe-file-missing", lambda d: d / "absent.npz", "probe file not found"),
    ("probe-wrong-suffix", lambda d: Path(shutil.copy(REPO / "data/probes/custom_probe_64.npz", d / "p.txt")),
     "expected a .npz or .h5/.hdf5/.hdf/.nxs probe file"),
]


@pytest.mark.parametrize("case,make,expected", PROBE_CASES, ids=[c[0] for c in PROBE_CASES])
@pytest.mark.stage
def test_bad_probe_file_is_one_line(tmp_path, params, case, make, expected):
    probe_file = make(tmp_path)
    cfg = stage_config(params["gs1_custom"], "simulate")
    cfg = dataclasses.replace(cfg, probe=dataclasses.replace(cfg.probe, file=str(probe_file)))
    out = tmp_path / "out" / "simulated.h5"
    res = run_stage("simulate", "--scenario", "gs1_custom", "--config", to_json(cfg), "--out", str(out))
    _assert_one_line_failure(res, "simulate", expected, out, names=probe_file)


@pytest.mark.parametrize("stage,flag,what", [
    ("split", "--simulated", "expected the simulate stage's output"),
    ("infer", "--model", "expected the train stage's model.keras"),
])
@pytest.mark.stage
def test_an_input_path_that_is_a_directory_says_so(tmp_path, params, good, stage, flag, what):
    """A folder where an input file is expected: "is a directory", not "file not found"."""
    folder = tmp_path / "in.h5"
    folder.mkdir()
    inputs = {"split": ("--simulated", str(folder)),
              "infer": ("--normalized", str(good / "normalized.h5"), "--model", str(folder))}[stage]
    out = tmp_path / "out.h5"
    res = run_stage(stage, "--scenario", SCEN, "--config", to_json(stage_config(params[SCEN], stage)), *inputs,
                    "--out", str(out))
    assert res.returncode == 1
    assert nonempty_lines(res.stderr) == [f"ptychopipe {stage}: error: {folder}: is a directory; expected a file "
                                          f"({what})"]
    assert not out.exists()


@pytest.mark.stage
def test_bad_stage_config_json(tmp_path):
    out = tmp_path / "simulated.h5"
    res = run_stage("simulate", "--scenario", SCEN, "--config", "{not json", "--out", str(out))
    _assert_one_line_failure(res, "simulate", "not valid JSON", out)


@pytest.mark.workflow
def test_gridsize3_too_few_positions(tmp_path, params):
    """gridsize 3 (C = 9) with neighbour_count 9 but only 9 positions: the train half has
    fewer than 9 patterns; the group stage says so in one line (also through Snakemake)."""
    def mutate(cfg):
        cfg["scenarios"] = {"gs3_tiny": {"gridsize": 3, "scan": {"n_images": 1},
                                         "group": {"neighbour_count": 9}, "probe": {"kind": "ideal"}}}
        cfg.pop("sweeps", None)  # the shipped dose sweep's base scenario is gone
    wd = make_workdir(tmp_path / "wd", mutate)
    res = run_snakemake(wd, "--cores", "1", "results/gs3_tiny/grouped.h5", timeout=300)
    assert res.returncode == 1
    log = (wd / "results/gs3_tiny/logs/group.log").read_text()
    lines = nonempty_lines(log)
    assert len(lines) == 1 and lines[0].startswith(
        "ptychopipe group: error: results/gs3_tiny/split.h5: train/indices: [group] train:"), log
    assert "need at least 9" in lines[0]
    assert not (wd / "results/gs3_tiny/grouped.h5").exists()
    assert (wd / "results/gs3_tiny/split.h5").exists(), "upstream outputs stay"
