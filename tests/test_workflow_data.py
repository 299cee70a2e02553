"""Snakemake end to end for the data stages (simulate -> split -> group -> normalize ->
telemetry) on the ``ci`` preset, in a temporary working directory.

Covers: the dry-run DAG (ci and full presets), the artifact contract (docs/design.md) on real
outputs, the telemetry table, a no-op re-run, exact re-run scoping after a config edit,
and the one-line config error a user sees from the snakemake command line.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from pipeline_helpers import DATA_TARGETS as TARGETS
from pipeline_helpers import (REPO, SCENARIOS, check_artifact_contract, dry_run_jobs, edit_config, outcome,
                              planned, planned_after_edit, run_snakemake)
import yaml

from ptychopipe.config import load_scenarios, stage_config

pytestmark = pytest.mark.workflow

DATA_RULES = ("simulate", "split", "group", "normalize")
FILES = {"simulate": "simulated.h5", "split": "split.h5", "group": "grouped.h5", "normalize": "normalized.h5"}
UNITS = {"counts", "photons^0.5", "object amplitude", "rad", "px", "index", "a*photons^0.5"}
RATIOS = {
    "simulate": {"parseval", "dose", "measured_over_expected"},
    "split": {"train_fraction", "test_fraction"},
    "group": {"train_grouped_over_raw", "test_grouped_over_raw"},
    "normalize": {"train_normalized_over_raw", "test_normalized_over_raw", "input_scale",
                  "amplitude_estimate_over_true_rms"},
}
# TARGETS: the data stages' outputs. (rule telemetry follows the whole pipeline; these tests run
# the `ptychopipe telemetry` command on the data-stage artifacts themselves.)


# --------------------------------------------------------------------------- dry runs


@pytest.mark.parametrize("preset", ["ci", "full"])
def test_dry_run_lists_the_data_stages_of_every_scenario(workdir, preset):
    proc = run_snakemake(workdir, "-n", "--config", f"preset={preset}")
    assert proc.returncode == 0, outcome(proc)
    jobs = planned(proc)
    data = {(r, s) for r, s in jobs if r in DATA_RULES}
    assert data == {(r, s) for r in DATA_RULES for s in SCENARIOS}
    assert ("telemetry", None) in jobs
    assert not (workdir / "results").exists()  # a dry run writes nothing


def test_every_job_reads_only_files_it_declares(workdir):
    """Each job's command names no results/ file (and no results folder to scan) that is not one
    of its declared inputs, outputs, log or benchmark (a diagnostic it writes beside its log
    excepted): Snakemake orders and re-runs a job on what it declares. The telemetry table
    declares every stage artifact of every scenario (it reads exactly those), and the
    PINN-vs-iterative comparison infer's benchmark TSV."""
    from ptychopipe.reporting import STAGE_FILES

    edit_config(workdir, lambda c: c["scenarios"]["gs1_ideal"].update(baseline={"enabled": True}))
    proc = run_snakemake(workdir, "-n", "-p", "--config", "preset=ci")
    assert proc.returncode == 0, outcome(proc)
    jobs = [j for j in dry_run_jobs(proc) if j["rule"] != "all"]
    assert {j["rule"] for j in jobs} >= {"simulate", "train", "compare", "baseline_compare", "summary", "telemetry"}
    for j in jobs:
        assert j["shell"], f"rule {j['rule']}: no command in the dry run"
        declared = set(j["input"] + j["output"] + j["log"] + j["benchmark"])
        log_dirs = {str(Path(f).parent) for f in j["log"]}  # a diagnostic written beside the log (train's)
        named = {f for f in re.findall(r"(?<![\w/.-])results/[\w./-]*\w", j["shell"])
                 if str(Path(f).parent) not in log_dirs}
        assert named <= declared, f"rule {j['rule']} ({j['scenario']}): undeclared {sorted(named - declared)}"
        assert not re.search(r"(?<![\w/.-])results/?(?=[\s'\"]|$)", j["shell"]), \
            f"rule {j['rule']}: names the results folder: {j['shell'][:300]}"
    (tel,) = [j for j in jobs if j["rule"] == "telemetry"]
    assert tel["input"] == [f"results/{s}/{f}" for s in SCENARIOS for f, _ in STAGE_FILES]
    (bc,) = [j for j in jobs if j["rule"] == "baseline_compare"]
    assert "--infer-benchmark results/gs1_ideal/benchmarks/infer.tsv" in bc["shell"]
    assert "results/gs1_ideal/benchmarks/infer.tsv" in bc["input"]


def test_plain_snakemake_in_a_checkout_uses_the_local_profile(workdir):
    """`snakemake TARGET` with neither -s nor --cores, in a directory laid out like the
    repository, finds workflow/Snakefile and profiles/default (a link to profiles/local):
    the commands in the README and docs run as written."""
    assert (REPO / "profiles" / "default").resolve() == (REPO / "profiles" / "local").resolve()
    (workdir / "workflow").symlink_to(REPO / "workflow")
    (workdir / "profiles").symlink_to(REPO / "profiles")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "results/gs1_ideal/simulated.h5",
                           "--config", "preset=ci"], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, outcome(proc)
    log = proc.stdout + proc.stderr
    assert "Using workflow specific profile profiles/default" in log, outcome(proc)
    assert "Provided cores: 2" in log, outcome(proc)  # profiles/local's cores
    assert (workdir / "results" / "gs1_ideal" / "simulated.h5").is_file()


def test_the_terminal_shows_one_line_per_stage_and_where_the_results_are(workdir):
    """With the shipped profile: each finished stage prints one line with its key figure on the
    terminal (its log keeps the details), no command with its JSON config is printed, the logs
    hold no TensorFlow start-up notices, and the run ends by saying where things are."""
    proc = run_snakemake(workdir, "results/gs1_ideal/normalized.h5", "--workflow-profile",
                         str(REPO / "profiles" / "local"), "--config", "preset=ci")
    assert proc.returncode == 0, outcome(proc)
    text = proc.stdout + proc.stderr
    for stage in DATA_RULES:
        assert re.search(rf"^\[{stage}\] gs1_ideal: done in [\d.]+s", text, re.M), outcome(proc)
    assert re.search(r"^\[simulate\] gs1_ideal: done in [\d.]+s; dose 1, parseval 1$", text, re.M), outcome(proc)
    assert "--config '{" not in text and '"nphotons"' not in text, "no command with its JSON config by default"
    assert "ptychopipe: workflow finished (preset ci" in text
    assert "logs:      results/<scenario>/logs/<stage>.log (e.g. tail -f results/*/logs/train.log)" in text
    log = (workdir / "results" / "gs1_ideal" / "logs" / "simulate.log").read_text()
    assert log.startswith("[simulate] gs1_ideal: done in"), log  # the details stay in the log too


# --------------------------------------------------------------------------- config errors on the command line


@pytest.mark.parametrize("edit,args,line", [
    (lambda c: c["scenarios"]["gs1_ideal"].update(nphotons=-5), (),
     "ptychopipe: config error: config/scenarios.yaml: scenarios.gs1_ideal.nphotons: -5 is less than or equal "
     "to the minimum of 0"),
    (lambda c: c["scenarios"].update({"a/b": {"gridsize": 1}}), (),
     "ptychopipe: config error: config/scenarios.yaml: scenarios: 'a/b' does not match '^[A-Za-z0-9][A-Za-z0-9_-]*$'"),
    (lambda c: c["defaults"]["group"].update(neighbours=4), (),
     "ptychopipe: config error: config/scenarios.yaml: defaults.group: Additional properties are not allowed "
     "('neighbours' was unexpected)"),
    (lambda c: c["scenarios"].update({"-x": {"gridsize": 1}}), (),
     "ptychopipe: config error: config/scenarios.yaml: scenarios: '-x' does not match '^[A-Za-z0-9][A-Za-z0-9_-]*$'"),
    (lambda c: None, ("--config", "preset=huge"),  # a command-line value: the command line is named
     "ptychopipe: config error: command line --config preset=huge: preset: 'huge' is not defined; expected one of "
     "['ci', 'full', 'quick']"),
])
def test_bad_config_stops_snakemake_with_one_line(workdir, edit, args, line):
    edit_config(workdir, edit)
    proc = run_snakemake(workdir, "-n", *args)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # Snakemake itself adds one notice when --config is given; nothing else is printed
    lines = [ln for ln in lines if not ln.startswith("Config file config/scenarios.yaml is extended")]
    assert lines == [line], outcome(proc)
    assert not (workdir / "results").exists()


# --------------------------------------------------------------------------- one real run, then dry runs


@pytest.fixture(scope="module")
def ran(ci_run, tmp_path_factory):
    """The data stages of all four scenarios, run once per session (ci preset, 2 cores: the
    ``ci_run`` fixture of tests/conftest.py), and the telemetry table of their artifacts, written
    beside this module's other files (the shared working directory is only read)."""
    wd = ci_run["workdir"]
    out = tmp_path_factory.mktemp("wf_data_telemetry")
    files = [f"results/{s}/{f}" for s in SCENARIOS for f in FILES.values()]
    tel = subprocess.run([sys.executable, "-m", "ptychopipe", "telemetry", "--md", str(out / "telemetry.md"),
                          "--csv", str(out / "telemetry.csv"), *files], cwd=wd, capture_output=True, text=True,
                         timeout=120)
    assert tel.returncode == 0, tel.stderr
    return {"workdir": wd, "seconds": ci_run["seconds"], "telemetry": out,
            "params": load_scenarios(wd / "config" / "scenarios.yaml", "ci")}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_artifacts_meet_the_contract(ran, scenario):
    wd, params = ran["workdir"], ran["params"][scenario]
    for stage, fname in FILES.items():
        path = wd / "results" / scenario / fname
        with h5py.File(path, "r") as f:
            where = f"{scenario}/{fname}"
            datasets = check_artifact_contract(f, stage, scenario, stage_config(params, stage), where,
                                               units=UNITS.__contains__)
            tel = f["telemetry"]
            ratios = {k[len("ratio_"):]: float(v) for k, v in tel.attrs.items() if k.startswith("ratio_")}
            assert RATIOS[stage] <= set(ratios), f"{where}: ratios {sorted(ratios)}"
            if stage == "simulate":
                assert ratios["parseval"] == pytest.approx(1, abs=1e-5)
                assert ratios["dose"] == pytest.approx(1, abs=1e-3)
                assert set(datasets) == {"object", "probe", "positions", "counts", "amplitude"}
                m = params["scan"]["n_images"] * params["gridsize"] ** 2
                assert f["counts"].shape == (m, 64, 64) and f["counts"].dtype == np.float32
                assert f["positions"].shape == (m, 2) and f["probe"].dtype == np.complex64
            if stage == "split":
                assert ratios["train_fraction"] + ratios["test_fraction"] == pytest.approx(1)
            if stage == "group":
                c = params["gridsize"] ** 2
                b = params["group"]["n_groups"]
                assert f["train/indices"].shape == (b, c) and f["test/offsets"].shape == (b, c, 2)
                assert f["train/amplitude"].shape == (b, 64, 64, c)
            if stage == "normalize":
                a = float(f.attrs["input_scale"])
                assert ratios["input_scale"] == a
                for s in ("train", "test"):
                    assert ratios[f"{s}_normalized_over_raw"] == pytest.approx(a, rel=1e-5)


def test_logs_and_benchmarks_exist(ran):
    res = ran["workdir"] / "results"
    for s in SCENARIOS:
        for stage in DATA_RULES:
            assert (res / s / "logs" / f"{stage}.log").is_file()
            assert (res / s / "benchmarks" / f"{stage}.tsv").is_file()
    assert not list(res.rglob(".*.tmp-*")), "temporary files left behind"


def test_telemetry_table_covers_every_scenario_and_stage(ran):
    res = ran["telemetry"]
    md = (res / "telemetry.md").read_text()
    rows = [ln.split("|")[1:-1] for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| scenario")]
    seen = {(r[0].strip(), r[1].strip()) for r in rows}
    assert seen == {(s, st) for s in SCENARIOS for st in DATA_RULES}
    header = [h.strip() for h in md.splitlines()[4].split("|")[1:-1]]
    assert header[:3] == ["scenario", "stage", "array"] and "ratio_to_previous" in header
    csv_lines = (res / "telemetry.csv").read_text().splitlines()
    assert len(csv_lines) == len(rows) + 1


def test_rerun_with_nothing_changed_schedules_nothing(ran):
    proc = run_snakemake(ran["workdir"], "-n", *TARGETS, "--config", "preset=ci")
    assert proc.returncode == 0, outcome(proc)
    assert planned(proc) == set(), outcome(proc)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_editing_one_scenarios_nphotons_reruns_only_that_scenario(ran):
    jobs = planned_after_edit(ran["workdir"], lambda c: c["scenarios"]["gs1_ideal"].update(nphotons=1.0e+6), *TARGETS)
    assert jobs == {(r, "gs1_ideal") for r in DATA_RULES}


def test_editing_grouping_reruns_group_and_normalize_only(ran):
    jobs = planned_after_edit(ran["workdir"], lambda c: c["scenarios"]["gs2_ideal"].update(group={"n_groups": 20}),
                              *TARGETS)
    assert jobs == {("group", "gs2_ideal"), ("normalize", "gs2_ideal")}


def test_editing_the_custom_probe_file_reruns_the_custom_scenarios(ran):
    """The probe file is an input of simulate: new content re-runs both custom scenarios.
    (A bare `touch` does not: Snakemake 9 compares the checksum of small inputs.)"""
    probe = ran["workdir"] / "data" / "probes" / "custom_probe_64.npz"
    original = probe.read_bytes()
    try:
        p = np.load(probe)["probeGuess"]
        np.savez(probe, probeGuess=p * np.complex64(1.01))
        proc = run_snakemake(ran["workdir"], "-n", *TARGETS, "--config", "preset=ci")
        assert proc.returncode == 0, outcome(proc)
        assert planned(proc) == {(r, s) for r in DATA_RULES for s in ("gs1_custom", "gs2_custom")}
    finally:
        probe.write_bytes(original)


# --------------------------------------------------------------------------- environment.yml


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
    """pyproject.toml's [project] table."""
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _conda_env(path: Path) -> tuple[dict, set[str], list[str]]:
    """(the parsed conda environment file, its package names less python and pip, its pip lines)."""
    env = yaml.safe_load(path.read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return env, {_name(r) for r in conda + pip if not r.startswith("-")} - {"python", "pip"}, pip


def _floor(spec: str) -> tuple[int, int]:
    """The (major, minor) of a ">=X.Y" clause in a Requires-Python specifier."""
    m = re.search(r">=\s*(\d+)\.(\d+)", spec)
    assert m, spec
    return int(m[1]), int(m[2])


def test_supported_python_range_is_what_the_dependencies_allow_and_stated_once():
    """The lowest Python we advertise installs every dependency: a 3.10 floor let `make demo`
    build a venv that pip then could not fill (Snakemake 9 and the SLURM plugin need 3.11)."""
    from importlib.metadata import metadata

    ours = _floor(_pyproject()["requires-python"])
    for dist in ("snakemake", "snakemake-executor-plugin-slurm", "tensorflow", "keras"):
        theirs = metadata(dist).get("Requires-Python")
        if theirs:
            assert ours >= _floor(theirs), f"{dist} needs Python {theirs}; pyproject allows {ours}"
    lo = f"{ours[0]}.{ours[1]}"
    assert f"({ours[0]}, {ours[1]}) <= v" in (REPO / "Makefile").read_text()
    assert f"python>={lo}," in (REPO / "environment.yml").read_text()
    assert f"Python {lo}–" in (REPO / "README.md").read_text()


def test_environment_yml_matches_pyproject():
    project = _pyproject()
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env, have, pip = _conda_env(REPO / "environment.yml")
    assert "conda-forge" in env["channels"]
    assert have == wanted, f"environment.yml only: {sorted(have - wanted)}; pyproject only: {sorted(wanted - have)}"
    assert "-e .[test]" in pip  # the package itself, with pyproject's own dependency list


def _rule_conda_envs() -> dict[str, Path]:
    """{rule: the environment file of its `conda:`} for every rule in workflow/rules/*.smk;
    the directive names a constant of common.smk (a path relative to workflow/rules/)."""
    rules_dir = REPO / "workflow" / "rules"
    consts = dict(re.findall(r'^(\w+) = "([^"]+\.yaml)"', (rules_dir / "common.smk").read_text(), re.M))
    envs = {}
    for smk in sorted(rules_dir.glob("*.smk")):
        for block in re.split(r"^(?=rule )", smk.read_text(), flags=re.M)[1:]:
            name = re.match(r"rule (\w+):", block).group(1)
            ref = re.search(r"^\s+conda:\s*(?:\n\s*)?(\S+)", block, re.M)  # on its line or the next
            assert ref, f"{smk.name}: rule {name} has no conda: directive"
            value = ref.group(1)
            path = value.strip("'\"") if value[0] in "'\"" else consts.get(value)
            assert path, f"{smk.name}: rule {name}: conda: {value} is neither a path nor a constant of common.smk"
            envs[name] = (rules_dir / path).resolve()
    return envs


def test_rule_conda_env_matches_pyproject():
    """Each rule's `conda:` environment (under --sdm conda) carries the runtime dependencies
    of pyproject.toml, less Snakemake and its executor plugin, which run the workflow and
    are not needed inside a job; rules baseline's and time_to_quality's also carry the
    `baselines` extra (torch, pty-chi) with pyproject's exact pins, and no other rule's does."""
    project = _pyproject()
    runtime = {_name(r) for r in project["dependencies"]} - {"snakemake", "snakemake-executor-plugin-slurm"}
    extra = project["optional-dependencies"]["baselines"]
    envs = _rule_conda_envs()
    assert {"train", "infer", "baseline", "baseline_compare"} <= set(envs)
    for rule, path in envs.items():
        with_ptychi = rule in ("baseline", "time_to_quality")  # the rules that run pty-chi
        wanted = runtime | ({_name(r) for r in extra} if with_ptychi else set())
        _, have, pip = _conda_env(path)
        assert have == wanted, (f"rule {rule} ({path.name}) only: {sorted(have - wanted)}; "
                                f"pyproject only: {sorted(wanted - have)}")
        if with_ptychi:
            assert set(extra) <= set(pip), f"{path.name}: expected pyproject's pins {extra}"
            # PyPI's default Linux torch wheel is the multi-GB CUDA build
            assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pip, path.name
