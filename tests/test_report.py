"""report: summary.md / summary.csv / overview.png from comparison.json files, the telemetry
table over every stage's artifact, and `snakemake --lint`."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from evaluate_helpers import run_evaluation
from ptychopipe import cli, reporting
from ptychopipe.artifacts import ArtifactError, Simulated
from ptychopipe.reporting import telemetry_table
from pipeline_helpers import REPO, run_snakemake


@pytest.fixture(scope="module")
def two_scenarios(tmp_path_factory, ci_data):
    """comparison.json of two scenarios: gs1_ideal with a prediction mis-scaled by 1.3, and
    gs2_custom with exact patches."""
    root = tmp_path_factory.mktemp("report")
    bad, _ = run_evaluation(root / "gs1_ideal", ci_data["gs1_ideal"], "gs1_ideal", scale=1.3)
    good, _ = run_evaluation(root / "gs2_custom", ci_data["gs2_custom"], "gs2_custom")
    return {"root": root, "json": [root / "gs1_ideal" / "comparison.json", root / "gs2_custom" / "comparison.json"],
            "gs1_ideal": bad, "gs2_custom": good}


def test_summary_csv_has_one_row_per_scenario_with_the_metrics(two_scenarios, tmp_path):
    md, csv_path, png = reporting.write_summary(two_scenarios["json"], tmp_path / "r" / "summary.md",
                                             tmp_path / "r" / "summary.csv", tmp_path / "r" / "overview.png")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["scenario"] for r in rows] == ["gs1_ideal", "gs2_custom"]
    assert list(rows[0]) == [name for name, _, _ in reporting.SUMMARY_COLUMNS] + list(reporting.PROVENANCE_COLUMNS)
    for r in rows:
        js = two_scenarios[r["scenario"]]
        assert float(r["amp_pearson_r"]) == pytest.approx(js["metrics"]["amplitude"]["pearson_r"])
        assert float(r["phase_ssim"]) == pytest.approx(js["metrics"]["phase"]["ssim"])
        assert float(r["amplitude_bias"]) == pytest.approx(js["amplitude_bias"])
        assert float(r["train_seconds"]) == 2.0 and float(r["samples_per_second"]) == 48.0
        assert r["nan_status"] == "ok"
    assert float(rows[0]["amplitude_bias"]) == pytest.approx(1.3, abs=5e-3)
    assert rows[0]["first_broken"] == "prediction" and rows[1]["first_broken"] == "none"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_summary_records_preset_version_date_and_config_hash(two_scenarios, tmp_path, capsys):
    """Provenance: the preset, the config hash, the ptychopipe version and the date (UTC), in
    summary.md and in every summary.csv row; through the CLI the rule calls."""
    import datetime as dt

    import ptychopipe

    out = tmp_path / "r"
    rc = cli.main(["report", "--comparisons", *map(str, two_scenarios["json"]), "--md", str(out / "s.md"),
                   "--csv", str(out / "s.csv"), "--overview", str(out / "o.png"), "--preset", "ci",
                   "--config-hash", "0123456789abcdef"])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "s.csv").open()))
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    for r in rows:
        assert (r["preset"], r["config_hash"], r["ptychopipe_version"]) == ("ci", "0123456789abcdef",
                                                                            ptychopipe.__version__)
        assert re.fullmatch(rf"{today}T\d\d:\d\d:\d\dZ", r["created_utc"]), r["created_utc"]
    text = (out / "s.md").read_text()
    assert (f"Preset ci, config hash 0123456789abcdef, ptychopipe {ptychopipe.__version__}, written "
            f"{rows[0]['created_utc']} (UTC).") in text.splitlines()
    # the phase's least-squares scale stands beside the amplitude bias in the table
    header = next(ln for ln in text.splitlines() if ln.startswith("| scenario"))
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", header)]
    assert cells[cells.index("amplitude_bias (mean\\|Ô\\|/mean\\|O\\|)") + 1] == "phase_ls_scale"


def test_bias_panel_is_an_axis_around_one_with_a_visible_band():
    """The overview's bias panel spans about 0.9-1.1 (was 0-1, where a ±0.05 band is a hair),
    widening only to show every value."""
    assert reporting.ratio_axis_limits([1.01, 0.98, None, float("nan")], 0.05) == pytest.approx((0.85, 1.15))
    assert reporting.ratio_axis_limits([1.0], 0.02) == pytest.approx((0.9, 1.1))
    lo, hi = reporting.ratio_axis_limits([1.69, 0.97], 0.05)
    assert lo == pytest.approx(1 - 0.759) and hi == pytest.approx(1.759)


def test_frc_without_a_crossing_is_shown_as_such(two_scenarios, tmp_path):
    """An FRC curve that never fell below its threshold: summary.md says "no crossing" instead of
    presenting the band limit as a resolution; summary.csv has the crossed flags."""
    data = json.loads(two_scenarios["json"][1].read_text())
    data["metrics"]["amplitude"]["frc_crossed"] = False
    data["metrics"]["amplitude"]["frc_resolution_px"] = 74.5
    data["metrics"]["phase"]["frc_crossed"] = True
    one = tmp_path / "gs2_custom" / "comparison.json"
    one.parent.mkdir()
    one.write_text(json.dumps(data))
    md, csv_path, _ = reporting.write_summary([two_scenarios["json"][0], one], tmp_path / "s.md", tmp_path / "s.csv",
                                           tmp_path / "o.png")
    row = next(ln for ln in md.read_text().splitlines() if ln.startswith("| gs2_custom |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[reporting.SUMMARY_MD_COLUMNS.index("amp_frc_resolution_px")] == "no crossing (≤ 74.5)"
    assert "no crossing" not in cells[reporting.SUMMARY_MD_COLUMNS.index("phase_frc_resolution_px")]
    rows = {r["scenario"]: r for r in csv.DictReader(csv_path.open())}
    assert rows["gs2_custom"]["amp_frc_crossed"] == "False" and rows["gs2_custom"]["amp_frc_resolution_px"] == "74.5"


def _png_size(path: Path) -> tuple[int, int]:
    import struct

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_data_figure_per_scenario_through_the_cli(ci_data, tmp_path, capsys):
    """`ptychopipe data-figure`: probe amplitude and phase, scan positions and a log-scale pattern."""
    from ptychopipe.artifacts import Simulated

    d = ci_data["gs2_custom"]
    out = tmp_path / "report" / "gs2_custom" / "data.png"
    rc = cli.main(["data-figure", "--scenario", "gs2_custom", "--simulated", str(d["simulated"]), "--split",
                   str(d["split"]), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    w, h = _png_size(out)
    assert w > 1200 and h > 300 and out.stat().st_size > 30_000
    sim = Simulated.read(d["simulated"])
    j = reporting.brightest_pattern(sim.counts)
    assert sim.counts[j].sum() == sim.counts.reshape(len(sim.counts), -1).sum(axis=1).max()


def test_summary_links_the_grid_and_the_input_figures(two_scenarios, ci_data, tmp_path):
    """report --grid: one row per scenario (truth and reconstruction, amplitude and phase), linked
    from summary.md with each scenario's inputs figure."""
    root = two_scenarios["root"]
    out = tmp_path / "report"
    (out / "gs1_ideal").mkdir(parents=True)
    shutil.copy(REPO / "workflow" / "report" / "data.rst", out / "gs1_ideal" / "data.png")  # any file will do
    stitched = [root / "gs1_ideal" / "stitched.h5", root / "gs2_custom" / "stitched.h5"]
    simulated = [ci_data["gs1_ideal"]["simulated"], ci_data["gs2_custom"]["simulated"]]
    paths = reporting.write_summary(two_scenarios["json"], out / "summary.md", out / "summary.csv", out / "overview.png",
                                 grid=(out / "reconstructions.png", stitched, simulated))
    assert paths[-1] == out / "reconstructions.png"
    w, h = _png_size(out / "reconstructions.png")
    assert h > 500 and w > 1000
    text = (out / "summary.md").read_text()
    assert "![all scenarios: truth and reconstruction](reconstructions.png)" in text
    assert "[inputs](gs1_ideal/data.png)" in text and "gs2_custom/data.png" not in text
    with pytest.raises(ValueError, match=r"expected as many stitched\.h5 and simulated\.h5"):
        reporting.write_summary(two_scenarios["json"], out / "s.md", out / "s.csv", out / "o.png",
                             grid=(out / "g.png", stitched[:1], simulated))


def test_a_compressed_phase_is_flagged_in_the_summary(two_scenarios, tmp_path):
    """phase ls_scale 0.74 with phase r 0.97: the scenario's section says the phase contrast is
    compressed (the amplitude chain cannot see it); a scale within the tolerance says nothing."""
    data = json.loads(two_scenarios["json"][1].read_text())
    data["metrics"]["phase"]["ls_scale"] = 0.74
    data["metrics"]["phase"]["pearson_r"] = 0.97
    one = tmp_path / "gs2_custom" / "comparison.json"
    one.parent.mkdir()
    one.write_text(json.dumps(data))
    md, _, _ = reporting.write_summary([two_scenarios["json"][0], one], tmp_path / "s.md", tmp_path / "s.csv",
                                    tmp_path / "o.png")
    text = md.read_text()
    section = text[text.index("## gs2_custom"):]
    assert ("**Phase contrast compressed**: the phase's least-squares scale onto the truth is 0.740 "
            "(target 1 ± 0.05; phase r 0.97 does not show it).") in section
    assert "Phase contrast" not in text[text.index("## gs1_ideal"):text.index("## gs2_custom")]


def test_run_config_hash_follows_the_parameters(raw_config):
    from ptychopipe.config import resolve_scenarios, scenarios_hash

    a = resolve_scenarios(raw_config, "ci")
    assert scenarios_hash(a) == scenarios_hash(resolve_scenarios(raw_config, "ci"))
    assert re.fullmatch(r"[0-9a-f]{16}", scenarios_hash(a))
    assert scenarios_hash(resolve_scenarios(raw_config, "quick")) != scenarios_hash(a)


def test_summary_md_tables_chain_and_links(two_scenarios, tmp_path):
    md, _, _ = reporting.write_summary(two_scenarios["json"], tmp_path / "summary.md", tmp_path / "summary.csv",
                                    tmp_path / "overview.png")
    text = md.read_text()
    lines = text.splitlines()
    header = next(ln for ln in lines if ln.startswith("| scenario"))
    ncol = len(reporting.SUMMARY_MD_COLUMNS)
    # "mean|Ô|/mean|O|" in a header must not split cells: escaped pipes
    assert len(re.split(r"(?<!\\)\|", header)) == ncol + 2
    table = [ln for ln in lines if ln.startswith("| gs")]
    assert [ln.split("|")[1].strip() for ln in table] == ["gs1_ideal", "gs2_custom"]
    assert "## gs1_ideal" in text and "## gs2_custom" in text
    # the chain table of gs1_ideal marks prediction and truth as broken
    chain = text[text.index("## gs1_ideal"):text.index("## gs2_custom")]
    assert re.search(r"\| prediction \| 1\.69\d* \| 1 \| 1\.69\d* \| .* \| \*\*yes\*\* \|", chain)
    assert "| grouped | 1 | 1 | 1 | 1 | no |" in chain
    assert "![overview](overview.png)" in text
    for link in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (md.parent / link).is_file(), link


def test_duplicate_or_malformed_comparisons_are_one_line_errors(two_scenarios, tmp_path):
    js = two_scenarios["json"]
    with pytest.raises(ValueError, match="gs1_ideal.*appears twice"):
        reporting.write_summary([js[0], js[0]], tmp_path / "a.md", tmp_path / "a.csv", tmp_path / "a.png")
    assert not (tmp_path / "a.md").exists()
    broken = tmp_path / "broken.json"
    data = json.loads(js[1].read_text())
    del data["chain"]
    broken.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"broken.json: keys \['chain'\] missing"):
        reporting.summary_rows([broken])
    data = json.loads(js[1].read_text())
    del data["metrics"]["phase"]["ssim"]
    broken.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="metrics.phase: expected keys"):
        reporting.summary_rows([broken])
    broken.write_text("{not json")
    with pytest.raises(ArtifactError, match="broken.json: not valid JSON"):
        reporting.summary_rows([broken])


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["config"].pop("ratio_tolerance"), "config.ratio_tolerance: expected a number, got None"),
    (lambda d: d["config"].update(ratio_tolerance="wide"), "config.ratio_tolerance: expected a number, got 'wide'"),
    (lambda d: d["registration"].pop("enabled"), "registration: expected an object with keys enabled"),
    (lambda d: d.update(chain={"stage": "raw"}), r"chain\[0\]: expected an object with keys"),
    (lambda d: d["chain"][1].pop("cumulative"), r"chain\[1\]: expected an object with keys"),
])
def test_comparison_json_nested_keys_the_report_reads_are_checked(two_scenarios, tmp_path, mutate, message):
    """Everything write_summary reads is checked before anything is written: one line, no outputs."""
    broken = tmp_path / "broken.json"
    data = json.loads(two_scenarios["json"][1].read_text())
    mutate(data)
    broken.write_text(json.dumps(data))
    out = tmp_path / "r"
    with pytest.raises(ArtifactError, match=rf"broken.json: {message}") as err:
        reporting.write_summary([two_scenarios["json"][0], broken], out / "s.md", out / "s.csv", out / "o.png")
    assert "\n" not in str(err.value)
    assert not out.exists() or not list(out.iterdir())


def test_summary_of_a_non_finite_phase_offset_says_n_a(two_scenarios, tmp_path):
    """json_safe stores a non-finite phase offset as null: the summary prints n/a, it does not crash."""
    path = tmp_path / "gs2_custom.json"
    data = json.loads(two_scenarios["json"][1].read_text())
    data["phase_offset_rad"] = None
    path.write_text(json.dumps(data))
    md, _, _ = reporting.write_summary([path], tmp_path / "s.md", tmp_path / "s.csv", tmp_path / "o.png")
    assert "global phase offset removed n/a rad" in md.read_text()


def test_figures_are_written_atomically(tmp_path, monkeypatch):
    """A figure whose rendering fails leaves neither the file nor a temporary behind."""
    import matplotlib.pyplot as plt

    from ptychopipe.artifacts import save_figure

    plt.close("all")  # figures other tests may have left open
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, tmp_path / "sub" / "ok.png")
    assert (tmp_path / "sub" / "ok.png").read_bytes()[:4] == b"\x89PNG" and not plt.get_fignums()

    fig, _ = plt.subplots()

    def fail(path, **kwargs):  # a render that dies half-way through its file
        Path(path).write_bytes(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == [tmp_path / "sub"] and not plt.get_fignums()


def test_comparison_json_is_strict_json(two_scenarios):
    for path in two_scenarios["json"]:
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path}: non-standard JSON {c}"))


def test_cli_report(two_scenarios, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["report", "--comparisons", *map(str, two_scenarios["json"]), "--md", str(out / "s.md"),
            "--csv", str(out / "s.csv"), "--overview", str(out / "o.png")]
    assert cli.main(args) == 0
    assert (out / "s.md").is_file() and (out / "s.csv").is_file() and (out / "o.png").is_file()
    capsys.readouterr()
    assert cli.main(["report", "--comparisons", str(tmp_path / "nope.json"), "--md", str(out / "x.md")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ptychopipe report: error: ") and "nope.json: file not found" in err[0]


def test_telemetry_table_includes_the_evaluation_stages(tmp_path, ci_data):
    """The `ptychopipe telemetry` table still works and now covers infer, train, stitch, compare."""
    data = ci_data["gs1_ideal"]
    sdir = tmp_path / "results" / "gs1_ideal"
    sdir.mkdir(parents=True)
    for name in ("simulated", "split", "grouped", "normalized"):
        shutil.copy(data[name], sdir / f"{name}.h5")
    _, paths = run_evaluation(tmp_path / "eval", data, "gs1_ideal")
    for name, fname in (("inferred", "inferred.h5"), ("train", "train.h5"), ("stitched", "stitched.h5"),
                        ("comparison", "comparison.h5")):
        shutil.copy(paths[name], sdir / fname)
    md, csv_path = reporting.write_telemetry_table(tmp_path / "results", tmp_path / "t.md", tmp_path / "t.csv")
    rows = list(csv.DictReader(csv_path.open()))
    stages = {r["stage"] for r in rows}
    assert stages == {"simulate", "split", "group", "normalize", "train", "infer", "stitch", "compare"}
    stitched = {r["array"]: r for r in rows if r["stage"] == "stitch"}
    assert set(stitched) == {"object", "coverage", "count", "origin"}
    assert "stitched_over_inferred=" in stitched["object"]["stage_ratios"]
    compared = [r for r in rows if r["stage"] == "compare"]
    assert any("amplitude_bias=" in r["stage_ratios"] for r in compared)
    # every telemetry statistic of the artifact contract is a column; sumsq is the artifact's own Σ|x|²
    assert list(rows[0]) == list(telemetry_table.COLUMNS) and "sumsq" in telemetry_table.COLUMNS
    counts = next(r for r in rows if r["stage"] == "simulate" and r["array"] == "counts")
    sim = Simulated.read(data["simulated"])
    assert float(counts["sumsq"]) == pytest.approx(float(np.sum(sim.counts.astype(np.float64) ** 2)), rel=1e-5)


@pytest.mark.workflow
def test_snakemake_lint_reports_nothing(workdir):
    proc = run_snakemake(workdir, "--lint", timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "Lints for" not in text
    assert "Congratulations, your workflow is in a good condition!" in text
