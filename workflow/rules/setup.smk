# Included first, before the Snakefile's `configfile:` directive: puts the ptychopipe library on the
# path and reads the config file(s) with ptychopipe's strict YAML reader, so that a syntax error
# names its file and line and a repeated key (a second scenario of the same name) is refused,
# instead of Snakemake's generic "not valid JSON or YAML" or a silent replacement.
import os
import sys
from pathlib import Path

# The workflow finds its own library even when the package is not installed.
sys.path.insert(0, str(Path(workflow.basedir).parent / "src"))

from ptychopipe.config import ConfigError, deep_merge, load_yaml  # noqa: E402

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
# TensorFlow's start-up notices (oneDNN, cuInit on a machine without a GPU) stay out of the logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Progress lines (one per training epoch, one per finished stage) reach the terminal: every rule
# runs its command with `3>&2 > {log} 2>&1`, and ptychopipe.progress copies them to descriptor 3.
os.environ.update(PTYCHOPIPE_PROGRESS_FD="3")
DEFAULT_CONFIGFILE = "config/scenarios.yaml"  # the Snakefile's `configfile:`, relative to the working directory


def strict_file_config():
    """The config file(s) Snakemake reads (config/scenarios.yaml where present, then each
    --configfile), each read strictly and merged as Snakemake merges them; {} when none."""
    files = [DEFAULT_CONFIGFILE] if Path(DEFAULT_CONFIGFILE).exists() else []
    files += [str(p) for p in workflow.config_settings.configfiles]
    merged = {}
    for path in files:
        merged = deep_merge(merged, load_yaml(path))
    return merged


try:
    FILE_CONFIG = strict_file_config()
except ConfigError as exc:
    sys.exit(f"ptychopipe: config error: {exc}")
