"""The tests' shared code, one place for each: the repository's paths (REPO, CONFIG_FILE,
SNAKEFILE), the ci parameters of a scenario, the data stages run through their own ``run``,
a Snakemake working directory, the Snakemake and stage command runners, and the HDF5
comparisons and artifact-contract checks of the end-to-end tests.

Every Snakemake run happens in a temporary working directory holding copies of
config/ and data/, never in the repository itself: results/ and .snakemake/ of
parallel runs must not collide.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import h5py
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILE = REPO / "config" / "scenarios.yaml"
SNAKEFILE = REPO / "workflow" / "Snakefile"
PROFILES = REPO / "profiles"
PY = sys.executable
SCENARIOS = ("gs1_custom", "gs1_ideal", "gs2_custom", "gs2_ideal")
#: The data stages' last artifact of every scenario (the targets of a data-stage run).
DATA_TARGETS = tuple(f"results/{s}/normalized.h5" for s in SCENARIOS)
#: Data stages: outputs must be bit-identical between runs (docs/design.md, 'Artifact contract').
DATA_FILES = ("simulated.h5", "split.h5", "grouped.h5", "normalized.h5")
#: Attributes that legitimately differ between runs.
VOLATILE_ATTRS = {"created_utc", "train_seconds", "samples_per_second", "seconds", "wall_seconds",
                  "elapsed_s", "elapsed_seconds"}


def ci_params(scenario: str = "gs2_ideal", preset: str = "ci") -> dict:
    """Merged parameters of one scenario of the shipped config (probe file made absolute)."""
    from ptychopipe.config import load_scenarios

    p = load_scenarios(CONFIG_FILE, preset)[scenario]
    if p["probe"].get("file"):
        p["probe"]["file"] = str(REPO / p["probe"]["file"])
    return p


def build_data(root: Path, scenario: str, preset: str = "ci") -> dict[str, Any]:
    """simulate -> split -> group -> normalize for one scenario of the shipped config, each
    stage's own ``run`` (no Snakemake), under ``root/scenario``.

    Returns {"params": merged params, "simulated"|"split"|"grouped"|"normalized": Path}.
    """
    from ptychopipe.stages import group, normalize, simulate, split
    from ptychopipe.config import stage_config

    p = ci_params(scenario, preset)
    d = Path(root) / scenario
    paths = {k: d / f"{k}.h5" for k in ("simulated", "split", "grouped", "normalized")}
    simulate.run(stage_config(p, "simulate"), scenario, paths["simulated"])
    split.run(stage_config(p, "split"), scenario, paths["simulated"], paths["split"])
    group.run(stage_config(p, "group"), scenario, paths["simulated"], paths["split"], paths["grouped"])
    normalize.run(stage_config(p, "normalize"), scenario, paths["simulated"], paths["split"], paths["grouped"],
                  paths["normalized"])
    return {"params": p, **paths}


def make_workdir(root: Path, mutate: Callable[[dict], Any] | None = None, *,
                 preset: str | None = "ci", run: Iterable[str] | None = None) -> Path:
    """A Snakemake working directory with copies of config/ and data/.

    ``mutate(cfg)`` edits the parsed config/scenarios.yaml in place (it is written
    back); ``preset`` is written as the file's preset; ``run`` restricts scenarios.
    With ``preset=None`` and neither ``mutate`` nor ``run``, the copy is the shipped file as is.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "config", root / "config", dirs_exist_ok=True)
    shutil.copytree(REPO / "data", root / "data", dirs_exist_ok=True)
    if preset is None and mutate is None and run is None:
        return root

    def edit(cfg: dict) -> None:
        if preset is not None:
            cfg["preset"] = preset
        if run is not None:
            cfg["run"] = list(run)
        if mutate is not None:
            mutate(cfg)

    edit_config(root, edit)
    return root


def edit_config(workdir: Path, edit: Callable[[dict], Any]) -> str:
    """``edit(cfg)`` on the parsed config/scenarios.yaml of ``workdir``, written back.
    Returns the file's former text (for a test that restores it)."""
    path = Path(workdir) / "config" / "scenarios.yaml"
    original = path.read_text()
    cfg = yaml.safe_load(original)
    edit(cfg)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return original


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return [PY, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), *args]


def run_snakemake(workdir: Path, *args: str, timeout: float = 600, env: dict | None = None,
                  check: bool = False) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir`` (own process group; killed whole on timeout)."""
    cmd = snakemake_cmd(workdir, *args)
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"snakemake timed out after {timeout:.0f} s: {' '.join(cmd)}\n"
                             f"--- stderr tail ---\n{err[-4000:]}") from None
    res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake failed ({res.returncode}): {' '.join(cmd)}\n"
                             f"--- stderr tail ---\n{res.stderr[-6000:]}")
    return res


def outcome(proc: subprocess.CompletedProcess) -> str:
    """A finished command's return code and the tails of its stdout and stderr (assertion messages)."""
    return f"rc={proc.returncode}\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"


def run_stage(stage: str, *args: str, threads: int = 1, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m ptychopipe <stage> ...`` (what the rules call)."""
    return subprocess.run([PY, "-m", "ptychopipe", stage, *args, "--threads", str(threads)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def nonempty_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


# --------------------------------------------------------------------------- HDF5 comparison


def h5_contents(path: Path) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """({dataset path: array}, {object path: attrs}) of a whole HDF5 file."""
    arrays: dict[str, np.ndarray] = {}
    attrs: dict[str, dict[str, Any]] = {}
    with h5py.File(path, "r") as f:
        attrs["/"] = {k: v for k, v in f.attrs.items()}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                arrays[name] = obj[()]
            attrs[name] = {k: v for k, v in obj.attrs.items()}

        f.visititems(visit)
    return arrays, attrs


def _same_value(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def assert_h5_identical(a: Path, b: Path, volatile: set[str] = VOLATILE_ATTRS) -> None:
    """Same datasets, bit for bit (dtype, shape, values), and the same attributes
    except run-dependent ones (``created_utc``, timings)."""
    arr_a, att_a = h5_contents(a)
    arr_b, att_b = h5_contents(b)
    assert sorted(arr_a) == sorted(arr_b), f"{a} vs {b}: datasets differ"
    for name in arr_a:
        x, y = arr_a[name], arr_b[name]
        assert x.dtype == y.dtype and x.shape == y.shape, f"{a}:{name}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        if not _same_value(x, y):
            diff = np.count_nonzero(x != y) if x.shape else 1
            raise AssertionError(f"{a}:{name}: not bit-identical to {b} ({diff} of {x.size} elements differ)")
    assert sorted(att_a) == sorted(att_b), f"{a} vs {b}: HDF5 objects differ"
    for obj in att_a:
        ka = set(att_a[obj]) - volatile
        kb = set(att_b[obj]) - volatile
        assert ka == kb, f"{a}:{obj}: attribute names differ: {sorted(ka ^ kb)}"
        for k in ka:
            assert _same_value(att_a[obj][k], att_b[obj][k]), \
                f"{a}:{obj}.attrs[{k}]: {att_a[obj][k]!r} vs {att_b[obj][k]!r}"


def assert_h5_close(a: Path, b: Path, rtol: float, volatile: set[str] = VOLATILE_ATTRS,
                    skip: Iterable[str] = ()) -> dict[str, float]:
    """Same datasets (names, shapes, dtypes); numeric values equal within a relative
    L2 tolerance ``rtol`` (‖x - y‖ ≤ rtol·max(‖x‖, ‖y‖, tiny)); non-numeric exactly.
    Datasets whose path contains an entry of ``skip`` (timings) are not compared by value.
    Returns {dataset: relative difference}."""
    arr_a, _ = h5_contents(a)
    arr_b, _ = h5_contents(b)
    assert sorted(arr_a) == sorted(arr_b), f"{a} vs {b}: datasets differ"
    rel: dict[str, float] = {}
    for name in arr_a:
        x, y = arr_a[name], arr_b[name]
        assert x.dtype == y.dtype and x.shape == y.shape, f"{a}:{name}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        if any(s in name for s in skip) or name.startswith("telemetry"):
            continue
        if x.dtype.kind in "fc":
            xf = np.nan_to_num(x.astype(np.complex128 if x.dtype.kind == "c" else np.float64))
            yf = np.nan_to_num(y.astype(xf.dtype))
            den = max(float(np.linalg.norm(xf)), float(np.linalg.norm(yf)), 1e-30)
            rel[name] = float(np.linalg.norm(xf - yf)) / den
            assert rel[name] <= rtol, f"{a}:{name}: relative difference {rel[name]:.3g} > {rtol:g} vs {b}"
        else:
            assert _same_value(x, y), f"{a}:{name}: differs from {b}"
    return rel


def rewrite_dataset(path: Path, name: str, data: np.ndarray) -> None:
    """Replace dataset ``name`` of an HDF5 file (keeping its attributes)."""
    with h5py.File(path, "r+") as f:
        attrs = dict(f[name].attrs)
        del f[name]
        ds = f.create_dataset(name, data=data)
        for k, v in attrs.items():
            ds.attrs[k] = v


def dry_run_jobs(proc) -> list[dict[str, Any]]:
    """The jobs a ``snakemake -n`` run lists, in its order: {"rule", "scenario" (None for rules
    without the wildcard), "input", "output", "log", "benchmark" (lists of paths), "shell" (the
    command, with ``-p``; else "")}."""
    jobs: list[dict[str, Any]] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            jobs.append({"rule": m.group(1), "scenario": None, "input": [], "output": [], "log": [],
                         "benchmark": [], "shell": ""})
            continue
        if not jobs:
            continue
        m = re.match(r"^\s+wildcards: .*\bscenario=([A-Za-z0-9_-]+)", line)
        if m:
            jobs[-1]["scenario"] = m.group(1)
        m = re.match(r"^\s+(input|output|log|benchmark): (.*)$", line)
        if m:
            jobs[-1][m.group(1)] = m.group(2).split(", ")
        if line.startswith("Shell command: "):
            jobs[-1]["shell"] = line[len("Shell command: "):]
    return jobs


def planned(proc) -> set[tuple[str, str | None]]:
    """(rule, scenario) of every job a ``snakemake -n`` run lists, except the ``all`` target
    (scenario None for rules without the wildcard)."""
    return {(j["rule"], j["scenario"]) for j in dry_run_jobs(proc) if j["rule"] != "all"}


def planned_after_edit(workdir: Path, edit: Callable[[dict], Any], *targets: str) -> set[tuple[str, str | None]]:
    """:func:`planned` of ``snakemake -n [targets] --config preset=ci`` in ``workdir`` after
    ``edit`` of its config; the config file is restored (the working directory may be shared)."""
    original = edit_config(workdir, edit)
    try:
        proc = run_snakemake(workdir, "-n", *targets, "--config", "preset=ci")
        assert proc.returncode == 0, outcome(proc)
        return planned(proc)
    finally:
        (Path(workdir) / "config" / "scenarios.yaml").write_text(original)


#: docs/design.md, 'Artifact contract': the root attributes of every HDF5 artifact, and each array's telemetry.
REQUIRED_ATTRS = ("schema_version", "stage", "scenario", "config_json", "config_hash", "ptychopipe_version",
                  "created_utc")
STAT_KEYS = ("shape", "dtype", "mean", "std", "min", "max", "sumsq", "nan", "inf")


def check_artifact_contract(f: h5py.File, stage: str, scenario: str, cfg: Any, where: str,
                            units: Callable[[str], bool] = bool) -> dict[str, h5py.Dataset]:
    """Assert the artifact contract (docs/design.md) on an open artifact: the root attributes (config_json/config_hash are
    ``cfg``'s), a ``units`` attribute on every array that ``units`` accepts, and telemetry
    with every statistic and no NaN/Inf. Returns the datasets (telemetry excluded)."""
    import json

    from ptychopipe.config import config_hash, to_json

    for k in REQUIRED_ATTRS:
        assert k in f.attrs, f"{where}: attribute {k} missing"
    assert f.attrs["stage"] == stage and f.attrs["scenario"] == scenario, where
    assert f.attrs["config_json"] == to_json(cfg), f"{where}: config_json is not the stage's config"
    assert f.attrs["config_hash"] == config_hash(cfg)
    json.loads(f.attrs["config_json"])
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$", f.attrs["created_utc"])
    datasets: dict[str, h5py.Dataset] = {}

    def visit(name, obj):  # returns None: visititems stops at the first non-None return
        if isinstance(obj, h5py.Dataset) and not name.startswith("telemetry/"):
            datasets[name] = obj
    f.visititems(visit)
    assert datasets, where
    tel = f["telemetry"]
    for name, ds in datasets.items():
        u = ds.attrs.get("units")
        assert isinstance(u, str) and units(u), f"{where}: {name}: units {u!r}"
        st = tel[name].attrs
        for k in STAT_KEYS:
            assert k in st, f"{where}: telemetry/{name}: {k} missing"
        assert tuple(st["shape"]) == ds.shape and st["dtype"] == str(ds.dtype)
        assert st["nan"] == 0 and st["inf"] == 0, f"{where}: {name} has NaN/Inf"
    return datasets
