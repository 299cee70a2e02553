"""The whole ci DAG, simulate -> split -> group -> normalize -> train -> infer -> stitch ->
compare -> report (+ telemetry), for all four scenarios, run once per session by Snakemake in a
temporary working directory (the ``ci_dag`` fixture of tests/conftest.py); then the HTML report,
a no-op re-run, and re-run scoping of the evaluation stages' parameters.
(tests/test_workflow_data.py covers the data stages.)"""

from __future__ import annotations

import csv
import json
import math

import h5py
import pytest
from pipeline_helpers import SCENARIOS, check_artifact_contract, outcome, planned, planned_after_edit, run_snakemake

from ptychopipe.artifacts import ComparisonSummary, StitchedCanvas

pytestmark = [pytest.mark.workflow, pytest.mark.slow]  # make test-slow

STAGES = ("simulate", "split", "group", "normalize", "train", "infer", "stitch", "compare")
FIGURES = ("amplitude", "phase", "frc", "training")


@pytest.fixture(scope="module")
def dag(ci_dag):
    """`snakemake --cores 2 --config preset=ci` (rule all) in a working directory of its own."""
    return ci_dag


def test_every_stage_of_every_scenario_ran(dag):
    res = dag["workdir"] / "results"
    for s in SCENARIOS:
        for f in ("simulated.h5", "split.h5", "grouped.h5", "normalized.h5", "model.keras", "train.h5",
                  "inferred.h5", "stitched.h5", "comparison.h5", "comparison.json"):
            assert (res / s / f).is_file(), f"{s}/{f}"
        for stage in ("stitch", "compare"):
            assert (res / s / "logs" / f"{stage}.log").is_file() and (res / s / "benchmarks" / f"{stage}.tsv").is_file()
        for fig in FIGURES + ("data",):  # data.png: probe, scan positions, a log-scale pattern
            assert (res / "report" / s / f"{fig}.png").read_bytes()[:4] == b"\x89PNG", f"{s}/{fig}.png"
    for f in ("report/summary.md", "report/summary.csv", "report/overview.png", "report/reconstructions.png",
              "telemetry.md", "telemetry.csv", "logs/summary.log", "benchmarks/summary.tsv"):
        assert (res / f).is_file(), f
    assert not list(res.rglob(".*.tmp-*")), "temporary files left behind"
    # the logs hold the stages' own lines, no TensorFlow notices (absl's I0000/W0000/E0000 lines)
    for log in res.rglob("logs/*.log"):
        noise = [ln for ln in log.read_text().splitlines() if ln[:5] in ("I0000", "W0000", "E0000")
                 or "absl::InitializeLog" in ln]
        assert not noise, f"{log}: {noise[:3]}"
    assert (res / "gs1_ideal" / "logs" / "train.log").read_text().count(" epoch ") >= 1
    print(f"ci DAG: {dag['seconds']:.0f} s")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_evaluation_artifacts_meet_the_contract(dag, scenario):
    """The artifact contract (docs/design.md) on the outputs of train, infer, stitch and compare (test_workflow_data
    covers the data stages): attributes, the stage's own config, units and telemetry."""
    from ptychopipe.config import load_scenarios, stage_config

    wd = dag["workdir"]
    params = load_scenarios(wd / "config" / "scenarios.yaml", "ci")[scenario]
    for stage, fname in (("train", "train.h5"), ("infer", "inferred.h5"), ("stitch", "stitched.h5"),
                         ("compare", "comparison.h5")):
        with h5py.File(wd / "results" / scenario / fname, "r") as f:
            check_artifact_contract(f, stage, scenario, stage_config(params, stage), f"{scenario}/{fname}")


def test_summary_has_one_finite_row_per_scenario(dag):
    res = dag["workdir"] / "results"
    rows = list(csv.DictReader((res / "report" / "summary.csv").open()))
    assert [r["scenario"] for r in rows] == list(SCENARIOS)
    for r in rows:
        js = ComparisonSummary.read(res / r["scenario"] / "comparison.json")
        for key in ("amp_pearson_r", "amp_ssim", "phase_pearson_r", "phase_ssim", "amplitude_bias",
                    "amp_frc_resolution_px", "train_seconds", "samples_per_second"):
            assert math.isfinite(float(r[key])), (r["scenario"], key, r[key])
        assert float(r["amplitude_bias"]) == pytest.approx(js["amplitude_bias"])
        assert r["nan_status"] == "ok"
        broken = [link["stage"] for link in js["chain"] if link["broken"]]
        assert r["first_broken"] == (broken[0] if broken else "none")
        assert [link["stage"] for link in js["chain"]] == ["raw", "grouped", "normalized", "prediction", "stitched",
                                                           "truth", "phase"]
        # the data stages keep their contracts whatever the (2-epoch) model does
        assert not set(broken) & {"raw", "grouped", "normalized"}
    md = (res / "report" / "summary.md").read_text()
    assert all(f"## {s}" in md for s in SCENARIOS)


def test_stitched_canvas_origin_is_the_scan_extent_and_compare_scores_it_unregistered(dag):
    """The stitched canvas starts at the first patch's corner in object pixels, and compare
    crops the truth at that origin with no registration. (That this crop is the right one, a
    misplaced patch scoring clearly worse, is test_compare's
    test_misplaced_patches_score_clearly_worse.)"""
    res = dag["workdir"] / "results"
    for s in SCENARIOS:
        st = StitchedCanvas.read(res / s / "stitched.h5")
        with h5py.File(res / s / "inferred.h5", "r") as f:
            pos = f["positions"][()].reshape(-1, 2)
            n = f["amplitude"].shape[-1]
        assert st.origin_x == math.ceil(pos[:, 0].min() - n / 2)
        assert st.origin_y == math.ceil(pos[:, 1].min() - n / 2)
        js = json.loads((res / s / "comparison.json").read_text())
        assert js["origin"] == [st.origin_x, st.origin_y]
        assert js["registration"] == {"enabled": False, "shift_px": [0.0, 0.0]}


def test_telemetry_covers_every_stage_of_every_scenario(dag):
    rows = list(csv.DictReader((dag["workdir"] / "results" / "telemetry.csv").open()))
    assert {(r["scenario"], r["stage"]) for r in rows} == {(s, st) for s in SCENARIOS for st in STAGES}


def test_html_report_embeds_every_figure(dag):
    wd = dag["workdir"]
    proc = run_snakemake(wd, "--cores", "1", "--config", "preset=ci", "--report", "results/report.html", timeout=300)
    assert proc.returncode == 0, outcome(proc)
    assert "Undefined substitution" not in proc.stderr and "ERROR/" not in proc.stderr, proc.stderr[-3000:]
    html = (wd / "results" / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    for name in ["overview.png", "summary.csv", "summary.md", "telemetry.csv"] + [f"{f}.png" for f in FIGURES]:
        assert name in html, name
    assert html.count("base64") >= len(SCENARIOS) * len(FIGURES) + 1  # every PNG embedded
    assert len(html) > 1_000_000


def test_rerun_with_nothing_changed_schedules_nothing(dag):
    proc = run_snakemake(dag["workdir"], "-n", "--config", "preset=ci")
    assert proc.returncode == 0, outcome(proc)
    assert planned(proc) == set() and "Nothing to be done" in proc.stdout + proc.stderr, outcome(proc)


def test_editing_compare_parameters_reruns_compare_and_the_report_only(dag):
    jobs = planned_after_edit(dag["workdir"],
                              lambda c: c["scenarios"]["gs1_ideal"].update(compare={"coverage_threshold": 0.3}))
    assert jobs == {("compare", "gs1_ideal"), ("summary", None), ("telemetry", None)}


def test_editing_the_stitch_weight_reruns_stitch_onwards_for_that_scenario(dag):
    jobs = planned_after_edit(dag["workdir"],
                              lambda c: c["scenarios"]["gs2_ideal"].update(stitch={"weight": "uniform"}))
    assert jobs == {("stitch", "gs2_ideal"), ("compare", "gs2_ideal"), ("summary", None), ("telemetry", None)}
