"""The dose sweep (config/scenarios.yaml `sweeps.dose`), its `dose_response` target and figure,
and the results table `make quality` writes into results/report/quality_table.md and
`make results-doc` copies into docs/results.md (`ptychopipe quality-table`).

Fast: Snakemake only as dry runs (plus the dose_response rule alone on synthetic
comparison.json files), never the 5 sweep scenarios' DAG."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import h5py
import pytest
from pipeline_helpers import CONFIG_FILE, REPO, SCENARIOS, make_workdir, planned, run_snakemake
import yaml

from ptychopipe import cli, reporting
from ptychopipe.artifacts import ArtifactError
from ptychopipe.evaluation.metrics import METRIC_KEYS
from ptychopipe.config import (config_hash, default_scenarios, load_scenarios, load_yaml, params_diff,
                               resolve_scenarios, stage_config, sweep_duplicates, sweep_points, swept_scenarios)

#: The shipped dose sweep: scenario name -> nphotons.
DOSE = {"dose_10000": 1e4, "dose_100000": 1e5, "dose_1e06": 1e6, "dose_1e07": 1e7, "dose_1e09": 1e9}
STAGE_RULES = ("simulate", "split", "group", "normalize", "train", "infer", "stitch", "compare")
S, E = reporting.QUALITY_START, reporting.QUALITY_END


def comparison(scenario: str, amp_r: float, phase_r: float, bias: float | None) -> dict:
    """A synthetic comparison.json (the keys the compare stage writes)."""
    def metrics(r: float) -> dict:
        return {**{k: 0.1 for k in METRIC_KEYS}, "pearson_r": r, "ssim": r / 2, "frc_resolution_px": 8.5,
                "frc_crossed": True}
    return {"scenario": scenario, "config": {"coverage_threshold": 0.5, "frc_threshold": "half_bit",
                                             "ratio_tolerance": 0.05, "register": False},
            "config_hash": "0" * 16, "n_pixels": 1000, "phase_offset_rad": 0.0,
            "registration": {"enabled": False, "shift_px": [0.0, 0.0]}, "amplitude_bias": bias,
            "metrics": {"amplitude": metrics(amp_r), "phase": metrics(phase_r)}, "frc_threshold": "half_bit",
            "chain": [], "first_broken": None,
            "training": {"train_seconds": 1055.4, "samples_per_second": 45.0, "epochs_run": 54, "nan_status": "ok"},
            "nan_status": "ok", "figures": {}}


def write_comparisons(results: Path, points: dict[str, tuple[float, float, float | None]]) -> list[Path]:
    paths = []
    for scen, (amp_r, phase_r, bias) in points.items():
        path = results / scen / "comparison.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(comparison(scen, amp_r, phase_r, bias)))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- the sweep in the config


def test_shipped_dose_sweep_expands_to_five_gs2_custom_scenarios():
    raw = load_yaml(CONFIG_FILE)
    assert raw["sweeps"]["dose"]["base"] == "gs2_custom" and raw["sweeps"]["dose"]["param"] == "nphotons"
    assert dict(swept_scenarios(raw, "nphotons")) == DOSE
    for preset in ("ci", "full"):
        scen = load_scenarios(CONFIG_FILE, preset)
        # (+ the reconstruction-mode and model-reuse sweeps of gs2_custom: tests/test_config.py)
        assert sorted(s for s in scen if not s.startswith(("mode_", "unseen_"))) == sorted([*SCENARIOS, *DOSE])
        for name, n in DOSE.items():
            assert stage_config(scen[name], "simulate").nphotons == n
            # the base scenario with nphotons set: nothing else differs, stage by stage
            diff = params_diff(scen["gs2_custom"], scen[name])
            assert diff == ([] if n == 1e9 else [("simulate", "nphotons", 1e9, n)])


@pytest.mark.parametrize("preset", ["ci", "quick", "full"])
def test_the_sweep_point_at_the_base_dose_is_the_base_scenario(preset):
    """dose_1e09 has gs2_custom's parameters: built once, as gs2_custom."""
    raw = load_yaml(CONFIG_FILE)
    assert sweep_duplicates(raw, load_scenarios(CONFIG_FILE, preset)) == {"dose_1e09": "gs2_custom"}


def test_a_sweep_point_is_its_own_scenario_unless_every_parameter_matches():
    raw = load_yaml(CONFIG_FILE)
    # the base not selected by run: dose_1e09 is built as itself
    alone = {**raw, "run": ["dose_1e09", "dose_1e06"]}
    assert sweep_duplicates(alone, resolve_scenarios(alone, "ci")) == {}
    # the base's dose changed: now dose_1e09 differs from it (and no other point matches)
    moved = {**raw, "scenarios": {**raw["scenarios"],
                                  "gs2_custom": {**raw["scenarios"]["gs2_custom"], "nphotons": 1.0e+8}}}
    assert sweep_duplicates(moved, resolve_scenarios(moved, "ci")) == {}
    # ... and set to another point's dose, that point is the duplicate
    moved["scenarios"]["gs2_custom"]["nphotons"] = 1.0e+6
    assert sweep_duplicates(moved, resolve_scenarios(moved, "ci")) == {"dose_1e06": "gs2_custom"}


def test_sweep_points_build_each_scenario_once():
    raw = load_yaml(CONFIG_FILE)
    params = load_scenarios(CONFIG_FILE, "ci")
    assert sweep_points(raw, params, "nphotons") == [(s, n) for s, n in DOSE.items() if s != "dose_1e09"] + [
        ("gs2_custom", 1e9)]
    # a second sweep over the same base with the base's dose again: still one gs2_custom point
    two = {**raw, "sweeps": {**raw["sweeps"], "low": {"base": "gs2_custom", "param": "nphotons",
                                                       "values": [1.0e+9, 1.0e+3]}}}
    points = sweep_points(two, resolve_scenarios(two, "ci"), "nphotons")
    assert [s for s, _ in points] == [*(s for s in DOSE if s != "dose_1e09"), "gs2_custom", "low_1000"]
    # run: names the base and its duplicate: the default target builds the base only
    both = {**raw, "run": ["gs2_custom", "dose_1e09", "dose_1e06"]}
    selected = resolve_scenarios(both, "ci")
    assert default_scenarios(both, selected) == ["dose_1e06", "gs2_custom"]
    assert sweep_points(both, selected) == [("dose_1e06", 1e6), ("gs2_custom", 1e9)]


# --------------------------------------------------------------------------- targets (dry runs)


@pytest.mark.workflow
def test_default_target_builds_the_four_scenarios_only(tmp_path):
    proc = run_snakemake(make_workdir(tmp_path / "wd"), "-n", "--config", "preset=ci", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned(proc)
    assert {s for _, s in jobs if s} == set(SCENARIOS)
    assert jobs == {(r, s) for r in (*STAGE_RULES, "data_figure") for s in SCENARIOS} | {("summary", None),
                                                                                          ("telemetry", None)}


@pytest.mark.workflow
def test_a_sweep_scenario_named_in_run_is_built_by_the_default_target(tmp_path):
    wd = make_workdir(tmp_path / "wd", run=["gs1_ideal", "dose_1e06"])
    proc = run_snakemake(wd, "-n", "--config", "preset=ci", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {s for _, s in planned(proc) if s} == {"gs1_ideal", "dose_1e06"}


@pytest.mark.workflow
def test_dose_response_target_plans_exactly_the_sweep_scenarios(tmp_path):
    proc = run_snakemake(make_workdir(tmp_path / "wd"), "-n", "dose_response", "--config", "preset=ci", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # dose_1e09 repeats gs2_custom's parameters: gs2_custom is built for that point, once
    points = [s for s in DOSE if s != "dose_1e09"] + ["gs2_custom"]
    assert planned(proc) == {(r, s) for r in STAGE_RULES for s in points} | {("dose_response", None)}


@pytest.mark.workflow
def test_dose_response_rule_and_html_report_on_synthetic_comparisons(tmp_path):
    """The rule itself (its shell command) on existing comparison.json files, then the HTML
    report with the dose_response target: it embeds the figure and the table."""
    wd = make_workdir(tmp_path / "wd")
    points = {**{s: n for s, n in DOSE.items() if s != "dose_1e09"}, "gs2_custom": 1e9}  # dose_1e09 = gs2_custom
    write_comparisons(wd / "results", {s: (0.1 * i, 0.05 * i, 1.0) for i, s in enumerate(points)})
    args = ("dose_response", "--allowed-rules", "dose_response", "--config", "preset=ci")
    proc = run_snakemake(wd, *args, "--cores", "1", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((wd / "results" / "report" / "dose_response.csv").open()))
    assert [(r["scenario"], float(r["nphotons"])) for r in rows] == list(points.items())
    assert (wd / "results" / "logs" / "dose_response.log").is_file()
    assert (wd / "results" / "benchmarks" / "dose_response.tsv").is_file()
    proc = run_snakemake(wd, *args, "--report", "report.html", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (wd / "report.html").read_text()
    assert "dose_response.png" in html and "dose_response.csv" in html and "Dose response" in html


# --------------------------------------------------------------------------- dose-response figure and table


def test_dose_response_writes_png_and_csv_sorted_by_nphotons(tmp_path):
    points = {"dose_1e06": (0.5, 0.4, 1.01), "dose_10000": (0.1, 0.05, 0.90), "dose_1e09": (0.8, 0.7, None)}
    paths = write_comparisons(tmp_path / "results", points)
    png, csv_path = reporting.write_dose_response(paths, [1e6, 1e4, 1e9], tmp_path / "r" / "dose_response.png",
                                               tmp_path / "r" / "dose_response.csv")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == list(reporting.DOSE_COLUMNS)
    assert [(r["scenario"], float(r["nphotons"])) for r in rows] == [("dose_10000", 1e4), ("dose_1e06", 1e6),
                                                                     ("dose_1e09", 1e9)]
    assert [float(r["amp_pearson_r"]) for r in rows] == [0.1, 0.5, 0.8]
    assert [float(r["phase_pearson_r"]) for r in rows] == [0.05, 0.4, 0.7]
    assert [r["amplitude_bias"] for r in rows] == ["0.9", "1.01", ""]  # null (non-finite) bias: empty cell
    assert [r["bias_in_target"] for r in rows] == ["False", "True", ""]
    assert not list(tmp_path.rglob(".*.tmp-*"))


def test_dose_response_stops_with_one_line_on_a_missing_or_bad_file(tmp_path, capsys):
    good = write_comparisons(tmp_path, {"dose_10000": (0.1, 0.1, 1.0)})[0]
    out = ["--png", str(tmp_path / "d.png"), "--csv", str(tmp_path / "d.csv")]
    missing = tmp_path / "dose_1e06" / "comparison.json"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scenario": "dose_1e07"}))
    cases = [([str(good), str(missing)], ["1e4", "1e6"], f"{missing}: file not found"),
             ([str(good), str(bad)], ["1e4", "1e7"], f"{bad}: keys "),
             ([str(good)], ["1e4", "1e6"], "expected one nphotons value per comparison.json (1), got 2"),
             ([], [], "expected the comparison.json of at least one dose-sweep scenario, got none")]
    for comparisons, nphotons, message in cases:
        assert cli.main(["dose-response", "--comparisons", *comparisons, "--nphotons", *nphotons, *out]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ptychopipe dose-response: error: ") and message in err[0], err
    assert not (tmp_path / "d.png").exists() and not (tmp_path / "d.csv").exists()


# --------------------------------------------------------------------------- quality-table


def fake_results(results: Path, preset: str = "ci", scenarios=("gs1_ideal", "dose_1e06"), **train_attrs) -> None:
    """comparison.json, simulated.h5 and train.h5 (root attributes only) of ``scenarios``, with
    the config hashes of ``preset`` in the shipped config."""
    params = load_scenarios(CONFIG_FILE, preset)
    write_comparisons(results, {s: (0.612, 0.631, 0.994) for s in scenarios})
    for s in scenarios:
        with h5py.File(results / s / "simulated.h5", "w") as f:
            f.attrs.update(stage="simulate", config_hash=config_hash(stage_config(params[s], "simulate")),
                           nphotons=params[s]["nphotons"])
        with h5py.File(results / s / "train.h5", "w") as f:
            f.attrs.update(stage="train", config_hash=config_hash(stage_config(params[s], "train")),
                           backend="tensorflow", backend_version="2.21.0", keras_version="3.15.1",
                           intra_op_threads=2, created_utc="2026-11-22T08:18:19+00:00", **train_attrs)


def quality_doc(path: Path, between: str = "old table\n") -> str:
    text = ("# Quality\n\nProse that stays.\n\n## Results table (make quality)\n\n"
            f"{S}\n{between}{E}\n\nAfter the table.\n")
    path.write_text(text)
    return text


def test_quality_table_replaces_the_block_between_the_markers_idempotently(tmp_path, capsys):
    fake_results(tmp_path / "results")
    doc = tmp_path / "quality.md"
    before = quality_doc(doc)
    args = ["quality-table", "--results", str(tmp_path / "results"), "--out", str(doc),
            "--configfile", str(CONFIG_FILE), "--preset", "ci", "--scenarios", "gs1_ideal,dose_1e06"]
    assert cli.main(args) == 0, capsys.readouterr().err
    once = doc.read_text()
    assert cli.main(args) == 0
    assert doc.read_text() == once  # same results, same day: the same file
    markers = rf"^(?:{re.escape(S)}|{re.escape(E)})$"
    head, block, tail = re.split(markers, once, flags=re.M)
    assert [head, tail] == re.split(markers, before, flags=re.M)[::2]  # the rest of the file is untouched
    assert "old table" not in once and once.count(S) == 1
    table = [ln for ln in block.splitlines() if ln.startswith("| ")]
    assert table[0] == "| " + " | ".join(reporting.QUALITY_HEADER) + " |"
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in table[1:]]
    assert [c[:10] for c in cells] == [
        ["gs1_ideal", "ci", "1e+09", "0.994", "0.612", "0.306", "0.631", "8.5", "1055", "54"],
        ["dose_1e06", "ci", "1e+06", "0.994", "0.612", "0.306", "0.631", "8.5", "1055", "54"]]
    assert all(c[11] == "2026-11-22" for c in cells)
    # train.h5 names no device: the table host's CPU count, marked and explained
    assert all(re.search(r"\d+ CPUs\\\*; tensorflow 2\.21\.0, Keras 3\.15\.1, 2 threads$", c[10]) for c in cells)
    assert "train.h5 names no device" in block


def test_quality_table_lists_every_scenario_once_by_default(tmp_path):
    """Default list: the four scenarios, then the sweep; dose_1e09 is gs2_custom's row (no
    results/dose_1e09/ needed, none built by the workflow)."""
    points = [*SCENARIOS, *(s for s in DOSE if s != "dose_1e09")]
    fake_results(tmp_path / "results", scenarios=points)
    rows = reporting.quality_rows(tmp_path / "results", CONFIG_FILE, "ci")
    assert [r["scenario"] for r in rows] == sorted(SCENARIOS) + [s for s in DOSE if s != "dose_1e09"]


@pytest.mark.parametrize("attrs,cell", [
    ({"gpu_name": "NVIDIA H100"}, "gpu_name NVIDIA H100; tensorflow 2.21.0, Keras 3.15.1"),
    ({"device": "gpu: NVIDIA H100 80GB HBM3"}, "device gpu: NVIDIA H100 80GB HBM3; tensorflow 2.21.0, Keras 3.15.1"),
    ({"device": "cpu: AMD EPYC, 2 CPUs"}, "device cpu: AMD EPYC, 2 CPUs; tensorflow 2.21.0, Keras 3.15.1, 2 threads"),
])
def test_quality_table_names_the_device_when_train_h5_records_one(tmp_path, attrs, cell):
    """The device train.h5 records; the rule's CPU thread count only for a CPU run."""
    fake_results(tmp_path / "results", scenarios=("gs1_ideal",), **attrs)
    doc = tmp_path / "quality.md"
    quality_doc(doc)
    reporting.write_quality_table(tmp_path / "results", doc, CONFIG_FILE, "ci", ["gs1_ideal"], date="2026-01-01")
    text = doc.read_text()
    assert f"| {cell} |" in text
    assert "names no device" not in text and "on 2026-01-01" in text


@pytest.mark.parametrize("text,message", [
    ("# Quality\n", "found 0 start and 0 end marker line(s)"),
    (f"# Quality\n{S}\nold table\n", "found 1 start and 0 end marker line(s)"),
    (f"{S}\n{S}\n{E}\n", "found 2 start and 1 end marker line(s)"),
    (f"{S}\nold\n{E}\n{E}\n", "found 1 start and 2 end marker line(s)"),
])
def test_quality_table_refuses_malformed_markers(tmp_path, capsys, text, message):
    doc = tmp_path / "quality.md"
    doc.write_text(text)
    assert cli.main(["quality-table", "--results", str(tmp_path / "nothing"), "--out", str(doc),
                     "--configfile", str(CONFIG_FILE), "--preset", "ci"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ptychopipe quality-table: error: {doc}: expected one line "
                                               f"{S} followed by one line {E}; ") and message in err[0], err
    assert doc.read_text() == text


def test_quality_table_refuses_swapped_or_inline_markers(tmp_path):
    swapped = f"a\n{E}\nb\n{S}\n"
    with pytest.raises(ValueError, match="end before start"):
        reporting.replace_between_markers(swapped, ["x"], "q.md")
    inline = f"{S}\nsee {E} here\n{E}\n"
    with pytest.raises(ValueError, match="1 marker.* inside other text"):
        reporting.replace_between_markers(inline, ["x"], "q.md")
    assert reporting.replace_between_markers(f"{S}\n{E}", ["x"], "q.md") == f"{S}\nx\n{E}\n"


def test_quality_table_refuses_results_of_another_preset_or_missing_files(tmp_path):
    fake_results(tmp_path / "results", preset="quick", scenarios=("gs1_ideal",))
    doc = tmp_path / "quality.md"
    text = quality_doc(doc)
    with pytest.raises(ValueError, match=r"simulated\.h5: config_hash \w+ is not that of scenario gs1_ideal with "
                                         r"preset 'ci'"):
        reporting.write_quality_table(tmp_path / "results", doc, CONFIG_FILE, "ci", ["gs1_ideal"])
    with pytest.raises(ArtifactError, match=r"dose_1e06/comparison\.json: file not found"):
        reporting.write_quality_table(tmp_path / "results", doc, CONFIG_FILE, "quick", ["gs1_ideal", "dose_1e06"])
    assert doc.read_text() == text


def test_make_quality_runs_full_preset_then_writes_the_table():
    def dry(*args: str) -> str:
        proc = subprocess.run(["make", "-n", "-C", str(REPO), "quality", *args], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.replace("\\\n", " ")

    out = dry()
    assert re.search(r"snakemake all dose_response .*--cores 2 --config preset=full\n", out)
    assert re.search(r"snakemake all dose_response .*--config preset=full .*--report results/report\.html", out)
    assert re.search(r"-m ptychopipe quality-table --results results .*--preset full "
                     r"--out results/report/quality_table\.md", out)
    out = dry("PRESET=ci", "CORES=1")
    assert "--cores 1 --config preset=ci\n" in out and "--preset ci --out results/report/quality_table.md" in out


def test_make_results_doc_copies_the_table_into_docs_results_md():
    proc = subprocess.run(["make", "-n", "-C", str(REPO), "results-doc"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"-m ptychopipe quality-table --from-table results/report/quality_table\.md "
                     r"--out docs/results\.md", proc.stdout)


def test_quality_table_creates_its_file_and_copies_it_into_a_document(tmp_path, capsys):
    """make quality writes a table file of its own under results/ (created when missing);
    --from-table copies its block between the markers of another document, leaving the rest."""
    fake_results(tmp_path / "results")
    table = tmp_path / "results" / "report" / "quality_table.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    args = ["quality-table", "--results", str(tmp_path / "results"), "--out", str(table), "--configfile",
            str(CONFIG_FILE), "--preset", "ci", "--scenarios", "gs1_ideal"]
    assert cli.main(args) == 0, capsys.readouterr().err
    written = table.read_text()
    assert written.startswith(reporting.QUALITY_TITLE + "\n") and "| gs1_ideal | ci |" in written
    doc = tmp_path / "results.md"
    before = quality_doc(doc)
    assert cli.main(["quality-table", "--from-table", str(table), "--out", str(doc)]) == 0
    text = doc.read_text()
    assert "old table" not in text and "| gs1_ideal | ci |" in text
    assert text.split(S)[0] == before.split(S)[0] and text.split(E)[1] == before.split(E)[1]
    missing = tmp_path / "nothing.md"
    assert cli.main(["quality-table", "--from-table", str(missing), "--out", str(doc)]) == 1
    assert "nothing.md: file not found" in capsys.readouterr().err


def test_docs_results_md_has_the_markers():
    text = (REPO / "docs" / "results.md").read_text()
    reporting.replace_between_markers(text, [], "docs/results.md")  # exactly one well-formed pair
    assert yaml.safe_load(CONFIG_FILE.read_text())["run"] == []  # shipped: the default target leaves sweeps out
