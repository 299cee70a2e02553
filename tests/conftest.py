"""Shared pytest fixtures and the test tiers (add fixtures below; keep this file small).

Tiers (markers, registered in pyproject.toml): ``unit`` (no TensorFlow training, no Snakemake
run, no stage process: ``make test-fast``), ``stage`` (trains a model, or runs a stage as a
process, ``python -m ptychopipe <stage>``), ``workflow`` (runs Snakemake), ``cluster`` (a real
SLURM cluster) and ``slow`` (the longest runs, ``make test-slow``). A test without a tier
marker is a ``unit`` test.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline_helpers import CONFIG_FILE, DATA_TARGETS, PROFILES, build_data, make_workdir, run_snakemake
from ptychopipe.stages import STAGES

TIERS = ("unit", "stage", "workflow", "cluster")


def pytest_collection_modifyitems(items):
    """Every test has exactly one tier: ``unit`` where none is marked."""
    for item in items:
        tiers = [t for t in TIERS if item.get_closest_marker(t)]
        if len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid}: more than one tier marker {tiers}; expected one of {TIERS}")
        if not tiers:
            item.add_marker(pytest.mark.unit)


def _heavy(argv) -> str | None:
    """What a command would do that no unit test may: run Snakemake, or run a stage as a process."""
    words = [str(a) for a in argv] if isinstance(argv, (list, tuple)) else str(argv).split()
    names = [Path(w).name for w in words]
    if "snakemake" in names:
        return "runs Snakemake"
    command = names[names.index("ptychopipe") + 1:][:1] if "ptychopipe" in names else []
    if command and command[0] in STAGES:
        return f"runs a stage as a process (python -m ptychopipe {command[0]})"
    return None


@contextlib.contextmanager
def _unit_tier_guard(item):
    """While a ``unit`` test is set up and run (its fixtures included), training a model, running
    Snakemake or a stage process fails it with a line that names the tier to mark it with
    (``stage`` or ``workflow``)."""
    if item.get_closest_marker("unit") is None:
        yield
        return
    popen = subprocess.Popen

    class UnitPopen(popen):
        def __init__(self, args, *a, **kw):
            what = _heavy(args)
            if what:
                pytest.fail(f"{item.nodeid}: a unit test {what}; mark it stage or workflow", pytrace=False)
            super().__init__(args, *a, **kw)

    def no_fit(*_a, **_kw):
        pytest.fail(f"{item.nodeid}: a unit test trains a model (keras fit); mark it stage", pytrace=False)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess, "Popen", UnitPopen)
        if "keras" in sys.modules:  # imported at collection whenever a model test is collected
            mp.setattr(sys.modules["keras"].Model, "fit", no_fit)
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _unit_tier_guard(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _unit_tier_guard(item):
        yield


@pytest.fixture(scope="session")
def _raw_config_master() -> dict:
    return yaml.safe_load(CONFIG_FILE.read_text())


@pytest.fixture
def raw_config(_raw_config_master) -> dict:
    """A fresh, mutable copy of config/scenarios.yaml as loaded (before validation)."""
    return copy.deepcopy(_raw_config_master)


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A Snakemake working directory: copies of config/ and data/ in a temp dir
    (never run Snakemake in the repository: parallel runs would share results/)."""
    return make_workdir(tmp_path, preset=None)


@pytest.fixture(scope="session")
def ci_data(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """The data stages (simulate -> split -> group -> normalize, each stage's own ``run``)
    on the ``ci`` preset for gs1_ideal and gs2_custom, written once per session.

    Returns {scenario: {"params": merged params, "simulated"|"split"|"grouped"|"normalized": Path}}.
    Treat the files as read-only (copy before modifying).
    """
    root = tmp_path_factory.mktemp("ci_data")
    return {scen: build_data(root, scen) for scen in ("gs1_ideal", "gs2_custom")}


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory) -> dict:
    """The ci DAG's data stages (simulate -> split -> group -> normalize) of the four scenarios,
    run once per session by Snakemake (``--config preset=ci``, 2 cores, profiles/local) in a
    working directory of its own; ``ci_dag`` completes the same DAG there.

    Returns {"workdir": Path, "seconds": wall time}. Shared: tests read it; a test that changes
    results copies the folder first (``shutil.copytree(wd, copy, symlinks=True)``), and one that
    edits the config restores it before it returns.
    """
    wd = make_workdir(tmp_path_factory.mktemp("ci_dag") / "wd", preset=None)
    t0 = time.perf_counter()
    run_snakemake(wd, "--workflow-profile", str(PROFILES / "local"), "--cores", "2", *DATA_TARGETS,
                  "--config", "preset=ci", check=True, timeout=600)
    return {"workdir": wd, "seconds": time.perf_counter() - t0}


@pytest.fixture(scope="session")
def ci_dag(ci_run) -> dict:
    """The whole ci DAG (rule all: every stage of the four scenarios, the summary and the telemetry
    table), built once per session in ``ci_run``'s working directory (its data stages are not run
    again). Returns {"workdir": Path, "seconds": wall time of both runs}; shared as ``ci_run`` is."""
    wd = ci_run["workdir"]
    t0 = time.perf_counter()
    run_snakemake(wd, "--cores", "2", "--config", "preset=ci", check=True, timeout=900)
    return {"workdir": wd, "seconds": ci_run["seconds"] + time.perf_counter() - t0}
