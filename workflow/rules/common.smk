# Shared helpers: config loading and validation, per-stage params, input functions.
import sys
from pathlib import Path

# The workflow finds its own library even when the package is not installed.
sys.path.insert(0, str(Path(workflow.basedir).parent / "src"))

from ptychopipe.config import ConfigError, resolve_scenarios, stage_config, to_json  # noqa: E402

PY = sys.executable
CONFIG_SOURCE = ", ".join(str(p) for p in workflow.configfiles) or "config"

try:
    # One-line errors with the key path; same JSON schema file a user can read.
    SCENARIOS = resolve_scenarios(config, config.get("preset"), source=CONFIG_SOURCE)
except ConfigError as exc:
    sys.exit(f"ptychopipe: config error: {exc}")

PRESET = config.get("preset", "quick")


wildcard_constraints:
    scenario="|".join(sorted(SCENARIOS)),


def stage_json(scenario, stage):
    """The frozen config of `stage` for `scenario`, as canonical JSON (the rule's params)."""
    return to_json(stage_config(SCENARIOS[scenario], stage))


def stage_params(stage):
    """params: entry carrying exactly this stage's config (re-runs the stage when it changes)."""
    return lambda wildcards: stage_json(wildcards.scenario, stage)


def probe_input(wildcards):
    """The custom probe file is an input of simulate (editing it re-runs simulate)."""
    probe = SCENARIOS[wildcards.scenario]["probe"]
    return [probe["file"]] if probe["kind"] == "custom" else []


def per_scenario(pattern):
    return expand(pattern, scenario=sorted(SCENARIOS))


def all_targets():
    return per_scenario("results/{scenario}/normalized.h5") + ["results/telemetry.md", "results/telemetry.csv"]
