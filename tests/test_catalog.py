"""Workflow catalog conventions: config/README.md, .snakemake-workflow-catalog.yml and the
test configuration under .test/, which runs through Snakemake."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ptychopipe.config import deep_merge, load_schema, load_yaml, resolve_scenarios
from pipeline_helpers import CONFIG_FILE, REPO, run_snakemake

TEST_DIR = REPO / ".test"


def _test_config() -> dict:
    return deep_merge(load_yaml(TEST_DIR / "config" / "scenarios.yaml"), load_yaml(TEST_DIR / "config" / "test.yaml"))


def test_the_test_configuration_is_the_shipped_one_on_the_ci_preset():
    """.test/config/scenarios.yaml is the shipped file (a link: it cannot drift); test.yaml selects
    the ci preset and scenarios that need no data files."""
    assert (TEST_DIR / "config" / "scenarios.yaml").resolve() == (CONFIG_FILE).resolve()
    raw = _test_config()
    scen = resolve_scenarios(raw, source=".test/config")
    assert raw["preset"] == "ci" and sorted(scen) == ["gs1_ideal", "gs2_ideal"]
    assert all(p["probe"]["kind"] == "ideal" and not p["source"]["file"] for p in scen.values())


def test_config_readme_names_every_top_level_key():
    text = (REPO / "config" / "README.md").read_text()
    for key in load_schema()["properties"]:
        assert f"`{key}`" in text, key


def test_catalog_file_describes_usage():
    cat = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert set(cat["usage"]) >= {"mandatory-flags", "software-stack-deployment", "report"}
    assert "--config preset=" in cat["usage"]["mandatory-flags"]["flags"]
    assert cat["usage"]["software-stack-deployment"]["conda"] is True


@pytest.mark.workflow
def test_the_test_configuration_runs(tmp_path):
    """`snakemake --directory .test --configfile .test/config/test.yaml` (in a copy): the whole DAG
    plans, and the data stages and the inputs figure of a scenario run."""
    wd = tmp_path / "test"
    shutil.copytree(TEST_DIR, wd)  # follows the link: a plain copy of the shipped config
    args = ("--configfile", str(wd / "config" / "test.yaml"), "--cores", "2")
    dry = run_snakemake(wd, *args, "-n", timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "summary" in dry.stdout and "gs2_ideal" in dry.stdout
    run = run_snakemake(wd, *args, "results/report/gs1_ideal/data.png", "results/gs1_ideal/normalized.h5",
                        timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (wd / "results" / "report" / "gs1_ideal" / "data.png").read_bytes()[:4] == b"\x89PNG"


DEPLOYED_SNAKEFILE = """\
from snakemake.utils import min_version

min_version("6.10.0")


configfile: "config/config.yaml"


module ptychopipe:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from ptychopipe
"""


@pytest.mark.workflow
@pytest.mark.slow
def test_deployed_as_a_module_runs_to_the_report(tmp_path):
    """What `snakedeploy deploy-workflow <local clone> DEST` writes -- DEST/config (a copy of the
    repository's config/, read as config/config.yaml) and a Snakefile using this workflow as a
    module -- runs to the report from DEST, which has no data/ folder: the custom probe resolves
    to the workflow's shipped file, the library comes from the clone."""
    dest = tmp_path / "deployed"
    shutil.copytree(REPO / "config", dest / "config")  # snakedeploy copies config/ (links as files)
    assert (dest / "config" / "config.yaml").read_text() == (CONFIG_FILE).read_text()
    (dest / "workflow").mkdir()
    (dest / "workflow" / "Snakefile").write_text(
        DEPLOYED_SNAKEFILE.format(snakefile=REPO / "workflow" / "Snakefile"))
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--config", "preset=ci",
                           'run=["gs1_custom"]'], cwd=dest, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert not (dest / "data").exists()
    summary = (dest / "results" / "report" / "summary.md").read_text()
    assert "Preset ci" in summary and "gs1_custom" in summary
    assert "ptychopipe: workflow finished (preset ci" in proc.stdout + proc.stderr
    # the stage config names the probe the workflow ships (resolved from its repository)
    from ptychopipe.artifacts import read_attrs

    cfg = read_attrs(dest / "results" / "gs1_custom" / "simulated.h5")["config_json"]
    assert str(REPO / "data" / "probes" / "custom_probe_64.npz") in cfg
