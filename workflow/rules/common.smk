# Shared helpers: config loading and validation, per-stage params, input functions.
import os
import re
import sys
from pathlib import Path

# The workflow finds its own library even when the package is not installed.
sys.path.insert(0, str(Path(workflow.basedir).parent / "src"))

from ptychopipe.config import ConfigError, is_imported, resolve_scenarios, stage_config, to_json  # noqa: E402

PY = sys.executable
# Rules run `python3 -m ptychopipe ...`, with no interpreter path in the shell command (so
# `snakemake --lint` is clean and, under `--sdm conda`, the rule's environment supplies
# python3). Otherwise the interpreter running Snakemake comes first on PATH and this
# checkout's src/ on PYTHONPATH, so jobs run exactly this environment and this code.
os.environ.update(
    PATH=os.pathsep.join([str(Path(PY).parent), os.environ.get("PATH", "")]),
    PYTHONPATH=os.pathsep.join(p for p in [str(Path(workflow.basedir).parent / "src"),
                                           os.environ.get("PYTHONPATH", "")] if p),
)
CONDA_ENV = "../envs/ptychopipe.yaml"  # every rule's `conda:` (relative to workflow/rules/)
CONFIG_SOURCE = ", ".join(str(p) for p in workflow.configfiles) or "config"


def source_files(params):
    """{config key: path} of the files an imported scenario reads (empty when simulated): the
    source file and, for ptychodus, its diffraction file (default: diffraction.h5 beside it)."""
    src = params["source"]
    if not src["file"]:
        return {}
    files = {"source.file": src["file"]}
    if src["format"] == "ptychodus":
        files["source.diffraction"] = src["diffraction"] or str(Path(src["file"]).with_name("diffraction.h5"))
    return files


try:
    # One-line errors with the key path; same JSON schema file a user can read.
    SCENARIOS = resolve_scenarios(config, config.get("preset"), source=CONFIG_SOURCE)
    for _name, _params in SCENARIOS.items():  # a missing probe file: one line now, not a MissingInputException
        for _key, _path in source_files(_params).items():  # imported data: the same for its files
            if not Path(_path).is_file():
                raise ConfigError(f"{CONFIG_SOURCE}: scenario {_name}: {_key}: {_path} not found; expected an "
                                  f"existing {_params['source']['format']} file (docs/real_data.md)")
        if is_imported(_params):
            continue  # imported data: probe.* play no part
        if _params["probe"]["kind"] == "custom" and not Path(_params["probe"]["file"]).is_file():
            raise ConfigError(f"{CONFIG_SOURCE}: scenario {_name}: probe.file: {_params['probe']['file']} "
                              "not found; expected an existing .npz or .h5 file")
except ConfigError as exc:
    sys.exit(f"ptychopipe: config error: {exc}")

PRESET = config.get("preset", "quick")
# Imported scenarios (source.file set) get simulated.h5 from rule ingest, the others from rule
# simulate: each rule carries its own wildcard_constraints with one of these disjoint name lists
# (a regex that matches nothing when a list is empty), so exactly one rule can make each file.
IMPORTED = sorted(n for n, p in SCENARIOS.items() if is_imported(p))
SIMULATED = sorted(n for n in SCENARIOS if n not in IMPORTED)
# Scenarios with the iterative reference (baseline.enabled): rules/baseline.smk.
BASELINE = sorted(n for n, p in SCENARIOS.items() if p["baseline"]["enabled"])


def scenario_regex(names):
    """Regex matching exactly these scenario names (none: a regex that never matches)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"



wildcard_constraints:
    scenario="|".join(sorted(SCENARIOS)),


def stage_json(scenario, stage):
    """The frozen config of `stage` for `scenario`, as canonical JSON (the rule's params)."""
    return to_json(stage_config(SCENARIOS[scenario], stage))


def stage_params(stage):
    """params: entry carrying exactly this stage's config (re-runs the stage when it changes)."""
    return lambda wildcards: stage_json(wildcards.scenario, stage)


def source_input(wildcards):
    """An imported scenario's files are inputs of ingest (editing one re-runs the scenario)."""
    return list(source_files(SCENARIOS[wildcards.scenario]).values())


def baseline_comparisons():
    """baseline_comparison.json of every scenario with baseline.enabled (inputs of the report)."""
    return expand("results/{scenario}/baseline_comparison.json", scenario=BASELINE)


def probe_input(wildcards):
    """The custom probe file is an input of simulate (editing it re-runs simulate)."""
    probe = SCENARIOS[wildcards.scenario]["probe"]
    return [probe["file"]] if probe["kind"] == "custom" else []


def per_scenario(pattern):
    return expand(pattern, scenario=sorted(SCENARIOS))


def all_targets():
    """rule all ends at the report (which needs every stage of every scenario) and the telemetry table."""
    report_files = ["results/report/summary.md", "results/report/summary.csv", "results/report/overview.png"]
    return report_files + ["results/telemetry.md", "results/telemetry.csv"]


def train_diagnostics(wildcards):
    """Where the train stage's NaN guard keeps its diagnostic JSON: the train log directory.
    (Used by rules/model.smk; functions live here, not next to the rules, for `snakemake --lint`.)"""
    return f"results/{wildcards.scenario}/logs/train_nonfinite.json"
