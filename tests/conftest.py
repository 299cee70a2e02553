"""Shared pytest fixtures (add yours below; keep this file small)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILE = REPO / "config" / "scenarios.yaml"


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
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "data", tmp_path / "data")
    return tmp_path


def _ci_params(scenario: str) -> dict:
    from ptychopipe.config import load_scenarios

    p = load_scenarios(CONFIG_FILE, "ci")[scenario]
    if p["probe"]["file"]:
        p["probe"]["file"] = str(REPO / p["probe"]["file"])
    return p


@pytest.fixture(scope="session")
def ci_data(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """The data stages (simulate -> split -> group -> normalize, each stage's own ``run``)
    on the ``ci`` preset for gs1_ideal and gs2_custom, written once per session.

    Returns {scenario: {"params": merged params, "simulated"|"split"|"grouped"|"normalized": Path}}.
    Treat the files as read-only (copy before modifying).
    """
    from ptychopipe import grouping, normalize, simulate
    from ptychopipe.config import stage_config

    root = tmp_path_factory.mktemp("ci_data")
    out: dict[str, dict] = {}
    for scen in ("gs1_ideal", "gs2_custom"):
        p = _ci_params(scen)
        d = root / scen
        paths = {k: d / f"{k}.h5" for k in ("simulated", "split", "grouped", "normalized")}
        simulate.run(stage_config(p, "simulate"), scen, paths["simulated"])
        grouping.run_split(stage_config(p, "split"), scen, paths["simulated"], paths["split"])
        grouping.run_group(stage_config(p, "group"), scen, paths["simulated"], paths["split"], paths["grouped"])
        normalize.run(stage_config(p, "normalize"), scen, paths["simulated"], paths["split"], paths["grouped"],
                      paths["normalized"])
        out[scen] = {"params": p, **paths}
    return out
