"""The workflow's conventions, read from its source: every rule that runs a job has `log:`,
`benchmark:`, `threads:` and `resources:`, and the SLURM profile sizes every such rule
(a rule it does not name would run with the 10-minute default)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import REPO


WORKFLOW = REPO / "workflow"
#: Target-only rules: no job, so no log, benchmark or resources.
TARGET_RULES = {"all"}


def rule_blocks() -> dict[str, str]:
    """{rule name: its source text} for every rule of the Snakefile and workflow/rules/*.smk."""
    blocks: dict[str, str] = {}
    for path in [WORKFLOW / "Snakefile", *sorted((WORKFLOW / "rules").glob("*.smk"))]:
        text = path.read_text()
        declared = re.findall(r"^(?:rule|checkpoint|localrule)\b", text, flags=re.MULTILINE)
        parts = re.split(r"^rule (\w+):[ \t]*(?:#.*)?\n", text, flags=re.MULTILINE)
        assert len(parts[1::2]) == len(declared), f"{path}: a rule this scanner does not parse"
        for name, body in zip(parts[1::2], parts[2::2]):
            blocks[name] = re.split(r"^\S", body, maxsplit=1, flags=re.MULTILINE)[0]  # up to the next top-level line
    return blocks


def test_every_job_rule_has_log_benchmark_threads_and_resources():
    blocks = rule_blocks()
    assert {"simulate", "train", "infer", "compare", "summary", "export_ptychodus"} <= set(blocks)
    missing = {name: [d for d in ("log", "benchmark", "threads", "resources") if f"\n    {d}:" not in "\n" + body]
               for name, body in blocks.items() if name not in TARGET_RULES}
    assert not {k: v for k, v in missing.items() if v}, missing


def test_the_slurm_profile_sizes_every_job_rule():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    sized = set(profile["set-resources"])
    rules = set(rule_blocks()) - TARGET_RULES
    assert rules - sized == set(), f"rules without SLURM resources: {sorted(rules - sized)}"
    assert sized - rules == set(), f"profile entries for no rule: {sorted(sized - rules)}"
    for name, res in profile["set-resources"].items():
        assert res["mem_mb"] >= 1000 and res["runtime"] >= 5, name


def test_make_demo_takes_the_preset_from_scenarios_yaml_unless_given():
    """`make demo` runs the preset that config/scenarios.yaml names (`preset:`), so editing that
    file is enough; `make demo PRESET=P` overrides it for one run (the report step too)."""
    import subprocess

    def dry(*args: str) -> list[str]:
        proc = subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [ln for ln in proc.stdout.replace("\\\n", " ").splitlines() if "/snakemake " in ln]

    runs = dry("demo")
    assert len(runs) == 2 and not any("preset=" in ln for ln in runs), runs
    runs = dry("demo", "PRESET=full")
    assert len(runs) == 2 and all("--config preset=full" in ln for ln in runs), runs
    assert not any("preset=" in ln for ln in dry("dry-run"))


def test_rules_are_snakefmt_clean():
    """The workflow's Snakefile and rules are formatted as snakefmt writes them (the catalog's
    convention); `snakefmt workflow` fixes a failure."""
    import shutil
    import subprocess
    import sys

    if shutil.which("snakefmt", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("snakefmt not installed (pip install -e .[test])")
    exe = str(Path(sys.executable).parent / "snakefmt")
    res = subprocess.run([exe, "--check", str(REPO / "workflow")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, (res.stdout + res.stderr)[-2000:]
