"""Faults: killed jobs, damaged inputs and failing scenarios lose no work and leave no
file that looks complete but is not.

- A writer killed mid-write leaves no file under the output name (atomic writes).
- A train job killed with SIGKILL — the job alone (Snakemake notices) or the job
  with Snakemake itself (a node dying) — is re-run by the next ``snakemake``; even
  when the killed job left complete-looking garbage under its output names, the
  incomplete markers make Snakemake re-run it instead of trusting it.
- A truncated or corrupted HDF5 input stops its consumer with one clear line.
- With ``--keep-going`` a failing scenario does not stop the others.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline_helpers import PROFILES, ci_params, make_workdir, nonempty_lines, run_snakemake, snakemake_cmd
from ptychopipe.artifacts import Grouped, Inferred, Normalized, Simulated, Split, TrainHistory

pytestmark = pytest.mark.workflow

LOCAL = ("--workflow-profile", str(PROFILES / "local"))
READERS = {cls.FILE: cls.read for cls in (Simulated, Split, Grouped, Normalized, TrainHistory, Inferred)}


def _assert_all_artifacts_valid(results: Path) -> list[str]:
    """Every artifact that exists under its final name passes its reader."""
    seen = []
    for name, reader in READERS.items():
        for path in sorted(results.glob(f"*/{name}")):
            reader(path)
            seen.append(str(path.relative_to(results)))
    return seen


# --------------------------------------------------------------------------- process helpers


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _stage_process(root: int, stage: str) -> int | None:
    """PID of the ``python -m ptychopipe <stage>`` process started under ``root``."""
    for pid in _descendants(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for i in range(len(argv) - 2):
            if argv[i:i + 3] == [b"-m", b"ptychopipe", stage.encode()]:
                return pid
    return None


def _start_snakemake(wd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(snakemake_cmd(wd, *args), cwd=wd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _wait_for_training(proc: subprocess.Popen, wd: Path, scenario: str, timeout: float = 300) -> int:
    """Wait until the train job of ``scenario`` has started its epochs; return its PID."""
    log = wd / "results" / scenario / "logs" / "train.log"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended before training started:\n{proc.stdout.read()[-4000:]}")
        pid = _stage_process(proc.pid, "train")
        if pid and log.exists() and f"[train] {scenario}:" in log.read_text(errors="replace"):
            return pid
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"training did not start within {timeout:.0f} s")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- atomic writes

WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import ptychopipe.artifacts as A
    from ptychopipe.artifacts import store
    from ptychopipe.config import SplitConfig

    def stall(arr):  # called inside the open temp file, after the first dataset is written
        print("writing", flush=True)
        time.sleep(120)

    if sys.argv[2] == "stall":
        store.array_stats = stall
    A.Split(np.arange(10**6), np.arange(10), np.zeros((10**6, 2)), np.zeros((10, 2)), 1.0, 10**6 + 10).write(
        sys.argv[1], scenario="t", config=SplitConfig(0.5), ratios={})
""")


def test_writer_killed_mid_write_leaves_no_output(tmp_path):
    out = tmp_path / "split.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out), "stall"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        temps = list(tmp_path.glob(".split.h5.tmp-*"))
        assert temps and temps[0].stat().st_size > 0, "the data goes to a temporary name first"
        assert not out.exists()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "a killed writer must not leave a file under the output name"
    subprocess.run([sys.executable, "-c", WRITER, str(out), "normal"], check=True, timeout=120)
    assert Split.read(out).train_indices.shape == (10**6,)
    assert not list(tmp_path.glob(".split.h5.tmp-*"))[1:], "a clean write leaves no temp file of its own"


# --------------------------------------------------------------------------- write failures and Ctrl-C

def _simulate_args(out: Path) -> list[str]:
    from ptychopipe.config import stage_config, to_json

    cfg = to_json(stage_config(ci_params("gs1_ideal"), "simulate"))
    return ["simulate", "--scenario", "gs1_ideal", "--config", cfg, "--out", str(out), "--threads", "1"]


def _fail_in_write(monkeypatch, exc: BaseException) -> None:
    """The HDF5 writer fails after the temporary file exists and holds part of the data."""
    real = h5py.Group.create_dataset
    calls = []

    def create_dataset(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise exc
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)


# (id, the exception, as h5py raises it (errno set, no path), expected message after the output path)
WRITE_FAILURES = [
    ("no-space", OSError(28, "Can't write data (file write failed: errno = 28, error message = 'No space left on "
                             "device')"), "could not write: [Errno 28] No space left on device; nothing written"),
    ("permission-denied", PermissionError(13, "Unable to synchronously create file (unable to open file: errno = 13, "
                                              "error message = 'Permission denied')"),
     "could not write: [Errno 13] Permission denied; nothing written"),
    ("read-only-fs", OSError(30, "Unable to synchronously create file (errno = 30)"),
     "could not write: [Errno 30] Read-only file system; nothing written"),
]


@pytest.mark.parametrize("case,exc,expected", WRITE_FAILURES, ids=[c[0] for c in WRITE_FAILURES])
def test_a_failed_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, case, exc, expected):
    """A full disk or a refused write (h5py's OSError: errno, no path) ends with one line naming the
    output, exit 1, and neither the output nor its temporary file is left."""
    from ptychopipe import cli

    monkeypatch.setattr(os, "environ", dict(os.environ))
    out = tmp_path / "results" / "simulated.h5"
    _fail_in_write(monkeypatch, exc)
    rc = cli.main(_simulate_args(out))
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.splitlines() == [f"ptychopipe simulate: error: {out}: {expected}"]
    assert [p.name for p in (tmp_path / "results").iterdir()] == []


def test_a_read_only_results_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """A results folder without write permission (a real one; root ignores permissions, so skipped as root)."""
    from ptychopipe import cli

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the errno cases above cover the message")
    monkeypatch.setattr(os, "environ", dict(os.environ))
    ro = tmp_path / "results"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc = cli.main(_simulate_args(ro / "simulated.h5"))
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err
    assert rc == 1 and len(err.splitlines()) == 1 and "Permission denied" in err, err
    assert list(ro.iterdir()) == []


def test_a_failure_to_create_the_results_folder_is_one_line(tmp_path, capsys, monkeypatch):
    from ptychopipe import cli

    monkeypatch.setattr(os, "environ", dict(os.environ))

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    rc = cli.main(_simulate_args(tmp_path / "new" / "simulated.h5"))
    err = capsys.readouterr().err
    assert rc == 1 and err.splitlines() == [
        f"ptychopipe simulate: error: {tmp_path / 'new' / 'simulated.h5'}: could not write: [Errno 13] Permission "
        f"denied: '{tmp_path / 'new'}'; nothing written"], err


CTRL_C = textwrap.dedent("""
    import sys, time
    from ptychopipe import cli
    from ptychopipe.artifacts import store

    def stall(arr):  # inside the open temporary file: the output is half-written when Ctrl-C comes
        print("writing", flush=True)
        time.sleep(120)

    store.array_stats = stall
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_ctrl_c_is_one_line_and_leaves_nothing(tmp_path):
    """SIGINT (Ctrl-C, or Snakemake stopping its jobs) in the middle of a write: one line, exit 130,
    no output and no temporary file. The child gets the default SIGINT handling even when the test
    runs in the background (where a shell starts its jobs with SIGINT ignored)."""
    out = tmp_path / "simulated.h5"
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C, *_simulate_args(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert list(tmp_path.glob(".simulated.h5.tmp-*"))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.splitlines() == ["ptychopipe simulate: interrupted (Ctrl-C); no output written"]
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- killed train job

SCEN = "gs2_ideal"


@pytest.mark.slow
def test_sigkill_train_job_then_rerun(tmp_path):
    wd = make_workdir(tmp_path / "wd", run=[SCEN])
    target = f"results/{SCEN}/inferred.h5"
    model, history = wd / "results" / SCEN / "model.keras", wd / "results" / SCEN / "train.h5"

    # 1. SIGKILL the train job alone: Snakemake reports the failure, nothing looks complete.
    proc = _start_snakemake(wd, *LOCAL, "--cores", "2", target)
    try:
        _kill(_wait_for_training(proc, wd, SCEN))
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "Error in rule train" in out, out[-3000:]
    assert not model.exists() and not history.exists()
    assert _assert_all_artifacts_valid(wd / "results") == [f"{SCEN}/{n}" for n in
                                                           ("simulated.h5", "split.h5", "grouped.h5", "normalized.h5")]

    # 2. SIGKILL Snakemake and the job together (the node dies). Then pretend the job had
    #    left complete-looking garbage under its output names, as a non-atomic writer
    #    would: Snakemake's incomplete markers must make the next run re-train.
    proc = _start_snakemake(wd, *LOCAL, "--cores", "2", target)
    try:
        job = _wait_for_training(proc, wd, SCEN)
        os.killpg(proc.pid, signal.SIGKILL)
        _kill(job)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not model.exists() and not history.exists(), "atomic writes: nothing under the final names"
    incomplete = list((wd / ".snakemake" / "incomplete").rglob("*"))
    assert [p for p in incomplete if p.is_file()], "Snakemake marked the killed job's outputs incomplete"
    model.write_bytes(b"PK\x03\x04 partial zip")
    history.write_bytes(b"\x89HDF\r\n\x1a\n partial")

    # 3. The killed Snakemake left its lock: the next run refuses to start until
    #    `snakemake --unlock` (the documented recovery); then (profile: rerun-incomplete)
    #    it re-trains and completes, and every artifact is valid.
    res = run_snakemake(wd, *LOCAL, "--cores", "2", target, timeout=600)
    assert res.returncode != 0 and "--unlock" in res.stderr, res.stderr[-3000:]
    run_snakemake(wd, "--unlock", check=True, timeout=120)
    res = run_snakemake(wd, *LOCAL, "--cores", "2", target, "--rerun-triggers", "mtime", timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "rule train:" in res.stdout + res.stderr, "the incomplete train job was re-run"
    assert "rule simulate:" not in res.stdout + res.stderr, "finished upstream work was kept"
    assert _assert_all_artifacts_valid(wd / "results")[-2:] == [f"{SCEN}/train.h5", f"{SCEN}/inferred.h5"]
    assert not [p for p in (wd / ".snakemake" / "incomplete").rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- damaged inputs in the pipeline


@pytest.fixture(scope="module")
def data_run(ci_run):
    """The session's data-stage run of the ci preset (copied by each test before it is damaged)."""
    return ci_run["workdir"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _corrupt(path: Path) -> None:
    with h5py.File(path, "r") as f:
        ds = f["counts"]
        off = ds.id.get_chunk_info(0).byte_offset if ds.chunks else ds.id.get_offset()
    with open(path, "r+b") as fh:
        fh.seek(off + 1000)
        fh.write(bytes(range(200)))


@pytest.mark.parametrize("damage,expected", [(_truncate, "not a readable HDF5 file (truncated or corrupted?)"),
                                             (_corrupt, "counts: unreadable (truncated or corrupted?)")],
                         ids=["truncated", "corrupted"])
def test_damaged_hdf5_input_stops_with_one_line(data_run, tmp_path, damage, expected):
    wd = tmp_path / "wd"
    shutil.copytree(data_run, wd, symlinks=True)
    damage(wd / "results/gs1_ideal/simulated.h5")  # newer than its consumers: they re-run
    # only the damaged file's mtime decides what re-runs (not edits to the code since the fixture ran)
    res = run_snakemake(wd, *LOCAL, "--cores", "1", "results/gs1_ideal/normalized.h5", "--rerun-triggers", "mtime",
                        "--config", "preset=ci", timeout=600)
    assert res.returncode == 1, (res.stdout + res.stderr)[-3000:]
    assert "rule simulate:" not in res.stdout + res.stderr
    log = nonempty_lines((wd / "results/gs1_ideal/logs/split.log").read_text())
    assert len(log) == 1 and log[0].startswith("ptychopipe split: error: results/gs1_ideal/simulated.h5: "), log
    assert expected in log[0]
    assert log[0] in res.stdout + res.stderr, "show-failed-logs puts the line on the console"
    assert not (wd / "results/gs1_ideal/split.h5").exists(), "the stale output was removed, not kept"


# --------------------------------------------------------------------------- --keep-going


def test_keep_going_failing_scenario_does_not_stop_the_others(tmp_path):
    def mutate(cfg):
        cfg["scenarios"]["bad_probe"] = {"gridsize": 1, "probe": {"kind": "custom", "file": "data/probes/real.npz"}}
        cfg["run"] = ["bad_probe", "gs1_ideal", "gs2_custom"]
    wd = make_workdir(tmp_path / "wd", mutate)
    with np.load(wd / "data/probes/custom_probe_64.npz", allow_pickle=False) as z:
        np.savez(wd / "data/probes/real.npz", probeGuess=np.abs(z["probeGuess"]))  # real-valued: rejected
    targets = [f"results/{s}/normalized.h5" for s in ("bad_probe", "gs1_ideal", "gs2_custom")]
    res = run_snakemake(wd, *LOCAL, "--cores", "2", "--keep-going", *targets, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 1
    assert "Error in rule simulate" in out and "bad_probe" in out
    log = nonempty_lines((wd / "results/bad_probe/logs/simulate.log").read_text())
    assert len(log) == 1 and "expected a complex array" in log[0], log
    assert not (wd / "results/bad_probe/simulated.h5").exists()
    for s in ("gs1_ideal", "gs2_custom"):
        Normalized.read(wd / "results" / s / "normalized.h5")
