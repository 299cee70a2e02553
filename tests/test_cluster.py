"""A real SLURM run: the ci preset DAG through ``--executor slurm`` on a single-node
cluster on localhost, compared with a local run (``make test-cluster``).

Needs root (it installs Debian's slurm-wlm and munge if missing and starts munged,
slurmctld and slurmd: scripts/slurm_localhost.sh). Skipped unless
PTYCHOPIPE_TEST_CLUSTER=1 (the Makefile's test-cluster target sets it), so that
``make test`` never touches the machine's services.

Choices (docs/cluster.md):
- The cluster run uses profiles/slurm unchanged, plus two options for a cluster
  without accounting: ``--slurm-status-command squeue`` (MinJobAge=600 on the test
  cluster) and a short first status check.
- The train rule asks for ``gpu: 1`` (sbatch --gpus=1). The test cluster's node
  advertises one GRES gpu without a device (gres.conf File=/dev/null), so that
  request is scheduled as written and the job trains on the CPU; the test checks
  that the train job really carried the GPU request.
- Scenarios: gs1_ideal and gs2_custom by default (both gridsizes, both probe kinds;
  every rule of the DAG runs) to keep the test under about 5 minutes on 2 cores;
  PTYCHOPIPE_CLUSTER_SCENARIOS=all runs all four.
- Data stages must be bit-identical to the local run (arrays and attributes,
  created_utc excepted); model outputs within a relative L2 difference of
  MODEL_RTOL (timings are not compared).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pipeline_helpers import (DATA_FILES, PROFILES, REPO, SCENARIOS, assert_h5_close, assert_h5_identical,
                              make_workdir, run_snakemake)

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.environ.get("PTYCHOPIPE_TEST_CLUSTER") != "1",
                       reason="SLURM cluster test: run `make test-cluster` (sets PTYCHOPIPE_TEST_CLUSTER=1; needs root)"),
]

SCRIPT = REPO / "scripts" / "slurm_localhost.sh"
STATE = Path(os.environ.get("SLURM_STATE_DIR", "/tmp/ptychopipe-slurm"))
_scen = os.environ.get("PTYCHOPIPE_CLUSTER_SCENARIOS", "gs1_ideal,gs2_custom")
SCEN = list(SCENARIOS) if _scen == "all" else [s for s in _scen.split(",") if s]
#: Wall-clock limit of the cluster run itself (s): the test fails, it never hangs.
CLUSTER_TIMEOUT = float(os.environ.get("PTYCHOPIPE_CLUSTER_TIMEOUT", "480"))
#: Model outputs (train history, inferred patches, stitched canvas, metrics): relative L2 tolerance.
MODEL_RTOL = 1e-3
TIMINGS = ("seconds", "samples_per_second")
#: --slurm-init-seconds-before-status-checks 12: the plugin polls 12 s after a submission, then
#: +10 s per poll that finds nothing finished; most ci jobs take 6-10 s, so 12 s catches them
#: at the first poll (8 s measured 26 s per DAG level: a miss, then 18 s more).
CLUSTER_ARGS = ("--workflow-profile", str(PROFILES / "slurm"), "--slurm-status-command", "squeue",
                "--slurm-init-seconds-before-status-checks", "12", "--slurm-keep-successful-logs")


def _pids() -> dict[str, int]:
    out = {}
    for name in ("munged", "slurmctld", "slurmd"):
        p = STATE / f"{name}.pid"
        if p.exists() and p.read_text().strip().isdigit():
            out[name] = int(p.read_text().strip())
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie, waiting for its parent to reap it, has ended)."""
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.fail("the SLURM cluster test needs root (it installs and starts munge and slurm)")
    t0 = time.monotonic()
    try:
        res = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True, timeout=120)
        pytest.fail("cluster bring-up timed out after 900 s")
    bringup = time.monotonic() - t0
    if res.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True, timeout=120)
        pytest.fail(f"cluster bring-up failed:\n{res.stderr[-4000:]}")
    pids = _pids()
    assert set(pids) == {"munged", "slurmctld", "slurmd"} and all(map(_alive, pids.values())), pids
    print(f"\n[cluster] bring-up {bringup:.1f} s: {res.stderr.strip().splitlines()[-1]}")
    try:
        yield {"bringup_s": bringup, "pids": pids}
    finally:
        down = subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True, timeout=180)
        still = {n: p for n, p in pids.items() if _alive(p)}
        print(f"[cluster] {down.stderr.strip()}")
        assert down.returncode == 0 and not still, f"daemons still running after 'down': {still}\n{down.stderr}"


def _slurm_jobs(name: str) -> list[dict[str, str]]:
    """Jobs of one Snakemake run (the plugin names them by its run UUID), from squeue -t all."""
    out = subprocess.run(["squeue", "-t", "all", "-h", "-n", name, "-o", "%i|%T|%k|%b"],
                         capture_output=True, text=True, timeout=30).stdout
    jobs = []
    for line in out.splitlines():
        jobid, state, comment, tres = line.split("|", 3)
        jobs.append({"jobid": jobid, "state": state, "comment": comment, "tres": tres})
    return jobs


def test_ci_dag_on_slurm_matches_local(cluster, tmp_path):
    timings = {"bringup_s": round(cluster["bringup_s"], 1)}

    # Reference: the same scenarios, run locally.
    local = make_workdir(tmp_path / "local", run=SCEN)
    t0 = time.monotonic()
    run_snakemake(local, "--workflow-profile", str(PROFILES / "local"), "--cores", "2", check=True, timeout=900)
    timings["local_s"] = round(time.monotonic() - t0, 1)

    # The same DAG through the SLURM executor.
    remote = make_workdir(tmp_path / "slurm", run=SCEN)
    t0 = time.monotonic()
    res = run_snakemake(remote, *CLUSTER_ARGS, timeout=CLUSTER_TIMEOUT)
    timings["slurm_s"] = round(time.monotonic() - t0, 1)
    log = res.stdout + res.stderr
    if res.returncode != 0:
        slurm_logs = sorted((remote / ".snakemake" / "slurm_logs").rglob("*.log"))
        tails = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in slurm_logs[-3:])
        pytest.fail(f"snakemake --executor slurm failed ({res.returncode}):\n{log[-5000:]}\n{tails}")

    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    rules = re.findall(r"^(?:local)?rule (\w+):", log, flags=re.M)
    assert "train" in rules and "simulate" in rules, "the DAG ran its stages"
    assert len(submitted) == len([r for r in rules if r != "all"]), "every job but `all` went through SLURM"

    # Every job ran on the cluster and completed; the train jobs carried the GPU request.
    run_name = re.search(r"SLURM run ID: ([0-9a-f-]+)", log)
    assert run_name, f"no SLURM run ID in the log:\n{log[-2000:]}"
    jobs = _slurm_jobs(run_name.group(1))  # the test cluster keeps finished jobs listed (MinJobAge)
    assert sorted(j["jobid"] for j in jobs) == sorted(submitted.values()), jobs
    assert all(j["state"] == "COMPLETED" for j in jobs), jobs
    train_ids = [submitted[j] for j in re.findall(r"rule train:\n(?:.*\n)*?\s+jobid: (\d+)", log)]
    assert train_ids, "train jobs found in the log"
    for jid in train_ids:
        show = subprocess.run(["scontrol", "show", "job", jid], capture_output=True, text=True, timeout=30).stdout
        assert "gpu:1" in show, f"train job {jid} did not ask for a GPU:\n{show}"

    # Outputs: data stages bit-identical, model stages within tolerance.
    rel_max: dict[str, float] = {}
    for s in SCEN:
        for name in DATA_FILES:
            assert_h5_identical(local / "results" / s / name, remote / "results" / s / name)
        for name in ("train.h5", "inferred.h5", "stitched.h5", "comparison.h5"):
            rel = assert_h5_close(local / "results" / s / name, remote / "results" / s / name,
                                  rtol=MODEL_RTOL, skip=TIMINGS)
            rel_max[name] = max(rel_max.get(name, 0.0), max(rel.values(), default=0.0))
        a = json.loads((local / "results" / s / "comparison.json").read_text())["metrics"]
        b = json.loads((remote / "results" / s / "comparison.json").read_text())["metrics"]
        for part in ("amplitude", "phase"):
            for key, va in a[part].items():
                vb = b[part][key]
                if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                    assert abs(va - vb) <= MODEL_RTOL * max(abs(va), abs(vb), 1e-12), (s, part, key, va, vb)
                else:
                    assert va == vb, (s, part, key, va, vb)
    for name in ("results/report/summary.csv", "results/telemetry.csv"):
        assert (remote / name).is_file(), name
    print(f"[cluster] scenarios {SCEN}; {len(submitted)} SLURM jobs; timings {timings}; "
          f"max relative difference of model outputs {rel_max}")
    assert timings["slurm_s"] < CLUSTER_TIMEOUT
