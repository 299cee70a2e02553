"""Safety: no pickles, scenario names cannot escape results/, readers check what they read."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

from pipeline_helpers import CONFIG_FILE, REPO, make_workdir, nonempty_lines, rewrite_dataset, run_snakemake
from ptychopipe.artifacts import Array, ArtifactError, SCHEMA_VERSION, Simulated, write_artifact
from ptychopipe.config import ConfigError, load_yaml, resolve_scenarios

CODE_DIRS = ("src", "workflow", "scripts")
CODE_SUFFIXES = {".py", ".smk", ".sh", ""}


def _code_files():
    for d in CODE_DIRS:
        for p in sorted((REPO / d).rglob("*")):
            if p.is_file() and (p.suffix in CODE_SUFFIXES or p.name == "Snakefile") \
                    and "egg-info" not in str(p) and "__pycache__" not in str(p):
                yield p


# --------------------------------------------------------------------------- no pickles


def test_no_pickle_anywhere_in_the_code():
    """Nothing deserialises pickles: no pickle/dill/joblib/cloudpickle/shelve, no
    allow_pickle=True, no torch.load, no unsafe yaml.load."""
    forbidden = [
        (re.compile(r"\b(import|from)\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b"), "pickle-like import"),
        (re.compile(r"\bpickle\.|\bdill\.|\bcloudpickle\."), "pickle call"),
        (re.compile(r"allow_pickle\s*=\s*True"), "allow_pickle=True"),
        (re.compile(r"\btorch\.load\("), "torch.load"),
        (re.compile(r"\byaml\.(load|unsafe_load|full_load)\("), "unsafe yaml load (use yaml.safe_load)"),
        (re.compile(r"safe_mode\s*=\s*False"), "keras safe_mode=False (allows arbitrary code in .keras files)"),
    ]
    hits = []
    files = list(_code_files())
    assert any(p.name == "store.py" for p in files), "the scan found the source files"
    for p in files:
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            for rx, what in forbidden:
                if rx.search(line):
                    hits.append(f"{p.relative_to(REPO)}:{i}: {what}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_every_np_load_refuses_pickles():
    """Every np.load(...) call in src/ passes allow_pickle=False explicitly."""
    bad = []
    for p in (REPO / "src").rglob("*.py"):
        text = p.read_text()
        for m in re.finditer(r"np\.load\(", text):
            call = text[m.start(): text.find(")", m.start()) + 1]
            if "allow_pickle=False" not in call:
                bad.append(f"{p.relative_to(REPO)}: {call}")
    assert not bad, "\n".join(bad)


def test_pickled_npz_probe_is_refused(tmp_path):
    from ptychopipe.simulate import ProbeFileError, load_probe

    path = tmp_path / "evil.npz"
    np.savez(path, probeGuess=np.array([{"payload": 1}], dtype=object))
    with pytest.raises(ProbeFileError, match="allow_pickle=False"):
        load_probe(path, "probeGuess", 64)


# --------------------------------------------------------------------------- paths stay inside results/

BAD_NAMES = ["..", ".", "../escape", "a/b", "/abs", "x/../../y", "", "name with space", "a\\b", "ü", "~root",
             "$HOME", "a.b"]


@pytest.fixture(scope="module")
def raw():
    return load_yaml(CONFIG_FILE)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_scenario_names_are_validated(raw, name):
    cfg = {**raw, "scenarios": {**raw["scenarios"], name: {"gridsize": 1}}}
    with pytest.raises(ConfigError, match=re.escape(f"{name!r} does not match")):
        resolve_scenarios(cfg, "ci", source="test")


@pytest.mark.parametrize("label", ["../up", "a/b", "..", "x y"])
def test_sweep_labels_are_validated(raw, label):
    cfg = {**raw, "sweeps": {"dose": {"base": "gs1_ideal", "param": "nphotons", "values": [1e4], "labels": [label]}}}
    with pytest.raises(ConfigError, match=re.escape(f"sweeps.dose.labels.0: {label!r} does not match")):
        resolve_scenarios(cfg, "ci", source="test")


def test_generated_scenario_paths_stay_in_results(raw, tmp_path):
    """Every scenario name the config can produce (sweeps included, values that look like
    paths too) makes a path inside results/."""
    cfg = {**raw, "sweeps": {"odd": {"base": "gs1_ideal", "param": "probe.key",
                                     "values": ["../../etc", "a/b", "..", "x"]},
                             "dose": {"base": "gs1_ideal", "param": "nphotons", "values": [1e4, 1.5e9]}}}
    scen = resolve_scenarios(cfg, "ci", source="test")
    assert len(scen) == len(raw["scenarios"]) + 6
    results = (tmp_path / "results").resolve()
    for name in scen:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name), name
        assert (results / name / "simulated.h5").resolve().is_relative_to(results)


@pytest.mark.workflow
def test_snakemake_refuses_targets_outside_the_scenarios(tmp_path):
    """The scenario wildcard is constrained to the configured names: a target that
    climbs out of results/ matches no rule, and nothing is written."""
    wd = make_workdir(tmp_path / "wd")
    for target in ("results/../../escape/simulated.h5", "results/gs1_ideal/../../x/simulated.h5",
                   "results/not_a_scenario/simulated.h5"):
        res = run_snakemake(wd, "--cores", "1", "-n", target, timeout=120)
        assert res.returncode != 0, target
        out = res.stdout + res.stderr
        assert "MissingRuleException" in out and "No rule to produce" in out, out[-2000:]
    res = run_snakemake(wd, "--cores", "1", "results/../../escape/simulated.h5", timeout=120)  # not a dry run
    assert res.returncode != 0 and "No rule to produce" in res.stdout + res.stderr
    assert not (wd / "results").exists()
    assert not (tmp_path / "escape").exists() and not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- readers check before use


@pytest.fixture()
def simulated(tmp_path):
    """A small valid simulated.h5 written by the real writer."""
    from ptychopipe.config import SimulateConfig, ObjectConfig, ProbeConfig

    cfg = SimulateConfig(N=32, n_positions=4, buffer_px=1.0, nphotons=1e6, seed=0,
                         object=ObjectConfig("lines", 64, 1, 10, (4.0, 8.0), 1.0, (0.5, 1.5), (-1.0, 1.0)),
                         probe=ProbeConfig("ideal", 16.0, None, "probeGuess"))
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, (4, 32, 32)).astype(np.float32)
    path = tmp_path / "simulated.h5"
    write_artifact(path, stage="simulate", scenario="t", config=cfg, arrays={
        "object": Array(np.ones((64, 64), np.complex64), "object amplitude"),
        "probe": Array(np.ones((32, 32), np.complex64), "photons^0.5"),
        "positions": Array(rng.uniform(20, 44, (4, 2)), "px"),
        "counts": Array(counts, "counts"),
        "amplitude": Array(np.sqrt(counts), "photons^0.5"),
    })
    Simulated.read(path)  # valid as written
    return path


def test_reader_rejects_wrong_schema_version(simulated):
    with h5py.File(simulated, "r+") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ArtifactError, match=f"schema_version: expected {SCHEMA_VERSION}, got {SCHEMA_VERSION + 1}"):
        Simulated.read(simulated)


@pytest.mark.parametrize("bad,shown", [("v1", "'v1'"), (np.array([1, 1]), r"\[1, 1\]")])
def test_reader_rejects_a_schema_version_that_is_not_a_number(simulated, bad, shown):
    with h5py.File(simulated, "r+") as f:
        f.attrs["schema_version"] = bad
    with pytest.raises(ArtifactError, match=rf"simulated\.h5: schema_version: expected {SCHEMA_VERSION}, got {shown}$"):
        Simulated.read(simulated)


def test_reader_rejects_missing_schema_version(simulated):
    with h5py.File(simulated, "r+") as f:
        del f.attrs["schema_version"]
    with pytest.raises(ArtifactError, match="schema_version missing"):
        Simulated.read(simulated)


@pytest.mark.parametrize("name,dtype", [("counts", np.int64), ("counts", np.complex64), ("positions", np.int32),
                                        ("object", np.float32), ("probe", np.float64)])
def test_reader_rejects_wrong_dtype(simulated, name, dtype):
    with h5py.File(simulated, "r") as f:
        data = f[name][()]
    rewrite_dataset(simulated, name, (data.real if np.iscomplexobj(data) and dtype().dtype.kind != "c"
                                      else data).astype(dtype))
    with pytest.raises(ArtifactError, match=f"{name}: expected dtype kind"):
        Simulated.read(simulated)


def test_reader_rejects_wrong_shape(simulated):
    with h5py.File(simulated, "r") as f:
        pos = f["positions"][()]
    rewrite_dataset(simulated, "positions", pos[:, :1])
    with pytest.raises(ArtifactError, match="positions: expected shape"):
        Simulated.read(simulated)


@pytest.mark.workflow
def test_wrong_schema_version_through_the_pipeline(tmp_path):
    """A stale artifact (another schema_version) found by Snakemake stops its consumer
    with one line in the log instead of being used."""
    wd = make_workdir(tmp_path / "wd", run=["gs1_ideal"])
    run_snakemake(wd, "--cores", "1", "results/gs1_ideal/simulated.h5", check=True, timeout=300)
    sim = wd / "results/gs1_ideal/simulated.h5"
    with h5py.File(sim, "r+") as f:
        f.attrs["schema_version"] = 0
    res = run_snakemake(wd, "--cores", "1", "results/gs1_ideal/split.h5", timeout=300)
    assert res.returncode == 1
    log = nonempty_lines((wd / "results/gs1_ideal/logs/split.log").read_text())
    assert log == [f"ptychopipe split: error: results/gs1_ideal/simulated.h5: schema_version: expected "
                   f"{SCHEMA_VERSION}, got 0"]
    assert not (wd / "results/gs1_ideal/split.h5").exists()


def test_atomic_write_syncs_the_data_before_the_rename_publishes_it(tmp_path, monkeypatch):
    """Without an fsync a crash after the rename can leave an empty file under the final
    name on filesystems that delay allocation."""
    import os

    from ptychopipe.artifacts import store as artifacts

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1])
        real_fsync(fd)

    def replace(a, b):
        events.append("replace")
        real_replace(a, b)

    monkeypatch.setattr(artifacts.os, "fsync", fsync)
    monkeypatch.setattr(artifacts.os, "replace", replace)
    out = tmp_path / "x.txt"
    with artifacts.atomic_path(out) as tmp:
        tmp.write_text("data")
    assert out.read_text() == "data"
    assert events == [f"fsync .x.txt.tmp-{os.getpid()}", "replace", f"fsync {tmp_path.name}"]
