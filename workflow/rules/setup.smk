# Included first, before the Snakefile's `configfile:` directive: puts the ptychopipe library on the
# path and reads the config file(s) with ptychopipe's strict YAML reader, so that a syntax error
# names its file and line and a repeated key (a second scenario of the same name) is refused,
# instead of Snakemake's generic "not valid JSON or YAML" or a silent replacement.
import os
import sys
from pathlib import Path

# The repository the workflow comes from: a checkout, or a local clone used as a Snakemake module
# (snakedeploy). Its src/ holds the library; a workflow used from elsewhere (a module from a
# remote repository) needs the package installed (pip install ptychopipe's repository).
# (workflow.basedir is the *deploying* workflow's folder when this one is a module: this file's own
# folder, workflow/rules/, is the reliable anchor.)
REPO_ROOT = Path(
    str(workflow.current_basedir.get_path_or_uri(secret_free=True))
).parents[1]
LOCAL_SRC = REPO_ROOT / "src"
if (LOCAL_SRC / "ptychopipe").is_dir():
    sys.path.insert(0, str(LOCAL_SRC))  # exactly this checkout's code, installed or not
else:
    LOCAL_SRC = None
try:
    from ptychopipe.config import ConfigError, deep_merge, load_yaml  # noqa: E402
except ImportError as exc:
    sys.exit(
        f"ptychopipe: the ptychopipe package is not importable ({exc}) and {REPO_ROOT}/src is not a "
        "checkout: install it (pip install the workflow's repository) into the environment running snakemake"
    )

PY = sys.executable
# Rules run `python3 -m ptychopipe ...`, with no interpreter path in the shell command (so
# `snakemake --lint` is clean and, under `--sdm conda`, the rule's environment supplies
# python3). Otherwise the interpreter running Snakemake comes first on PATH and, from a
# checkout, its src/ on PYTHONPATH, so jobs run exactly this environment and this code.
os.environ.update(
    PATH=os.pathsep.join([str(Path(PY).parent), os.environ.get("PATH", "")]),
    PYTHONPATH=os.pathsep.join(
        p
        for p in [str(LOCAL_SRC) if LOCAL_SRC else "", os.environ.get("PYTHONPATH", "")]
        if p
    ),
)
# TensorFlow's start-up notices (oneDNN, cuInit on a machine without a GPU) stay out of the logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Progress lines (one per training epoch, one per finished stage) reach the terminal: every rule
# runs its command with `3>&2 > {log} 2>&1`, and ptychopipe.progress copies them to descriptor 3.
os.environ.update(PTYCHOPIPE_PROGRESS_FD="3")
DEFAULT_CONFIGFILE = "config/scenarios.yaml"  # the Snakefile's `configfile:`, relative to the working directory


def strict_file_config():
    """The config file(s) Snakemake reads (config/scenarios.yaml where present, then each
    --configfile), each read strictly and merged as Snakemake merges them; {} when none. Used as
    a module (`config: config`), the files the deploying workflow has read (e.g. snakedeploy's
    config/config.yaml)."""
    if workflow.modifier.skip_configfile:
        files = [str(p) for p in workflow.configfiles]
    else:
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
