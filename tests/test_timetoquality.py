"""ptychopipe bench time-to-quality: speedup arithmetic, input checks, the one-line refusal
without pty-chi, and the whole benchmark on the ci data (skipped without pty-chi)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from ptychopipe.benchmarks import timetoquality as T
from ptychopipe.baseline import available
from pipeline_helpers import CONFIG_FILE, edit_config, make_workdir, run_snakemake

needs_ptychi = pytest.mark.skipif(not available()[0], reason="pty-chi extra not installed (pip install -e .[baselines])")


def _row(method, r, cpu, mode="m", start="flat", scenario="s"):
    return {"scenario": scenario, "method": method, "mode": mode, "start": start, "amp_r": r, "cpu_seconds": cpu}


def test_speedup_is_ptychis_time_to_the_rows_r_over_the_rows_time():
    rows = [_row("pipeline", 0.95, 2.0), _row("pipeline", 0.999, 4.0, mode="long"),
            _row("pty-chi", 0.90, 1.0, mode="lsqml gaussian"), _row("pty-chi", 0.97, 3.0, mode="lsqml gaussian"),
            _row("pty-chi", 0.96, 1.5, mode="lsqml poisson"), _row("pty-chi", 0.99, 8.0, mode="lsqml poisson"),
            _row("pty-chi", 0.9999, 0.5, mode="lsqml gaussian", start="reconstruction")]
    T.add_speedups(rows)
    # 0.95: gaussian reaches it at 3.0 s, poisson at 1.5 s -> the faster, 1.5 / 2.0
    assert rows[0]["speedup"] == pytest.approx(0.75)
    # 0.999: never reached from the flat start (the reconstruction start does not count) -> inf
    assert math.isinf(rows[1]["speedup"])
    assert all(r["speedup"] == "" for r in rows[2:])
    assert T.first_time(rows[2:4], 0.95) == 3.0 and math.isinf(T.first_time(rows[2:4], 0.98))


def test_missing_or_stale_artifacts_are_one_line_errors(tmp_path, ci_data):
    with pytest.raises(T.BenchError, match=r"scenario 'nope': not defined"):
        T.scenario_inputs(tmp_path, CONFIG_FILE, "ci", ["nope"])
    with pytest.raises(T.BenchError, match=r"gs2_custom/simulated\.h5: not found; expected the ci pipeline's"):
        T.scenario_inputs(tmp_path, CONFIG_FILE, "ci", ["gs2_custom"])
    d = tmp_path / "gs2_custom"
    d.mkdir()
    for name in ("simulated", "grouped", "normalized"):
        shutil.copy(ci_data["gs2_custom"][name], d / f"{name}.h5")
    shutil.copy(ci_data["gs2_custom"]["grouped"], d / "train.h5")  # an artifact of another stage
    (d / "model.keras").write_bytes(b"")
    with pytest.raises(T.BenchError, match=r"grouped\.h5: config_hash: expected .* \(preset quick\)"):
        T.scenario_inputs(tmp_path, CONFIG_FILE, "quick", ["gs2_custom"])  # made with ci, asked for quick
    with pytest.raises(T.BenchError, match=r"train\.h5: config_hash: expected"):
        T.scenario_inputs(tmp_path, CONFIG_FILE, "ci", ["gs2_custom"])


def test_without_ptychi_the_command_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    from ptychopipe import baseline, cli

    monkeypatch.setattr(baseline, "available", lambda: (False, "torch and ptychi not installed: pip install ..."))
    rc = cli.main(["bench", "time-to-quality", "--preset", "ci", "--scenarios", "gs2_custom",
                   "--out", str(tmp_path / "ttq"), "--no-build"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert err[0].startswith("ptychopipe bench: error: time to quality needs the optional pty-chi extra")
    assert not (tmp_path / "ttq").exists()


@pytest.fixture(scope="module")
def ci_results(ci_data, tmp_path_factory):
    """results/<scenario>/ of gs2_custom and gs1_ideal on the ci preset with trained models."""
    from ptychopipe.config import stage_config
    from ptychopipe.stages import train

    root = tmp_path_factory.mktemp("ttq_results")
    for s in ("gs2_custom", "gs1_ideal"):
        d = root / s
        d.mkdir()
        for name in ("simulated", "grouped", "normalized"):
            shutil.copy(ci_data[s][name], d / f"{name}.h5")
        train.run(stage_config(ci_data[s]["params"], "train"), s, d / "normalized.h5", d / "model.keras",
                  history=d / "train.h5", diagnostics=d / "diag.json")
    return root


@needs_ptychi
@pytest.mark.stage
def test_benchmark_on_the_ci_data(ci_results, tmp_path):
    out = tmp_path / "ttq"
    rows = T.run("ci", ["gs2_custom", "gs1_ideal"], out, threads=1, epochs=3, results=ci_results,
                 configfile=CONFIG_FILE, build=False, starts=("flat", "reconstruction"),
                 noise_models=("gaussian", "poisson"), log=lambda s: None)
    csv_rows = T.read_csv(out / "time_to_quality.csv")
    assert len(csv_rows) == len(rows)
    assert list(csv_rows[0]) == list(T.COLUMNS)
    for s in ("gs2_custom", "gs1_ideal"):
        mine = [r for r in rows if r["scenario"] == s]
        pipe = [r for r in mine if r["method"] == "pipeline"]
        # a U-Net model has two modes: the network, and its estimate alone (an unrolled model has one:
        # tests/test_unrolled.py)
        k = 5 if s == "gs2_custom" else 200  # the ci preset's iterations; gs1_ideal's own
        want = {f"difference_map x{k} + U-Net + network", f"difference_map x{k}, no network"}
        assert {r["mode"] for r in pipe} == want
        for start in ("flat", "reconstruction"):
            for nm in ("gaussian", "poisson"):
                run = [r for r in mine if r["method"] == "pty-chi" and r["start"] == start and r["mode"] == f"lsqml {nm}"]
                assert [r["epoch"] for r in run] == [1, 2, 3]
                assert np.all(np.diff([r["cpu_seconds"] for r in run]) > 0)
        net = next(r for r in pipe if r["mode"].endswith(" network") and "no network" not in r["mode"])
        recon = [r for r in mine if r["method"] == "pty-chi" and r["start"] == "reconstruction"]
        assert min(r["cpu_seconds"] for r in recon) > net["cpu_seconds"]  # the network's time is included
        for r in pipe:  # speedup as defined, from this run's own pty-chi rows
            flat = [q for q in mine if q["method"] == "pty-chi" and q["start"] == "flat"]
            t = min(T.first_time([q for q in flat if q["mode"] == m], r["amp_r"]) for m in ("lsqml gaussian",
                                                                                            "lsqml poisson"))
            assert r["speedup"] == pytest.approx(t / r["cpu_seconds"]) if math.isfinite(t) else math.isinf(r["speedup"])
        for r in mine:
            assert -1 <= r["amp_r"] <= 1 and r["bias"] > 0 and r["threads"] == 1 and r["device"]
    md = (out / "time_to_quality.md").read_text()
    assert "| gs2_custom |" in md and "CPU s to r 0.99" in md
    assert (out / "time_to_quality.png").stat().st_size > 10_000


@pytest.mark.workflow
def test_the_rule_reads_every_file_it_needs_and_runs_without_building(tmp_path):
    """rule time_to_quality: the bench scenarios' data and models are declared inputs (a
    scenario reconstructed with another's model reads that model), and the command it runs
    builds nothing itself."""

    def bench(cfg):
        cfg["bench"] = {"scenarios": ["gs2_ideal", "unseen_lines"], "epochs": 3, "starts": ["flat"]}

    wd = make_workdir(tmp_path / "wd", bench)
    out = run_snakemake(wd, "-n", "-p", "time_to_quality", "--config", "preset=ci", check=True, timeout=300).stdout
    (cmd,) = [ln for ln in out.splitlines() if "ptychopipe bench time-to-quality" in ln]
    assert "--preset ci --scenarios gs2_ideal unseen_lines --epochs 3 --starts flat --out results/bench --no-build" in cmd
    for f in ("results/gs2_ideal/model.keras", "results/gs2_custom/model.keras", "results/unseen_lines/normalized.h5"):
        assert f in out
    assert "results/unseen_lines/model.keras" not in out
    edit_config(wd, lambda cfg: cfg["bench"].update(scenarios=["gs9"]))
    res = run_snakemake(wd, "-n", "time_to_quality", "--config", "preset=ci", timeout=300)
    assert res.returncode != 0 and "bench.scenarios: 'gs9' is not a scenario of this run" in res.stderr + res.stdout
