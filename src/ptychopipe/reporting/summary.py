"""Reports across scenarios: the telemetry table (``ptychopipe telemetry``), the
summary of the evaluation (``ptychopipe report``: summary.md, summary.csv and an
overview figure, one row per scenario, from each scenario's comparison.json), the dose
response of the dose sweep (``ptychopipe dose-response``) and the results table of
results/report/quality_table.md (``ptychopipe quality-table``, run by ``make quality``), which
``ptychopipe quality-table --from-table`` copies into docs/results.md (``make results-doc``)."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

from ..artifacts import (ArtifactError, ComparisonSummary, not_a_file, read_attrs, read_telemetry, save_figure,
                        write_text_atomic)
from ..stages import telemetry_files
from ..telemetry import cpu_description

#: Stage artifacts in pipeline order (file name under results/{scenario}/, stage name).
STAGE_FILES: tuple[tuple[str, str], ...] = telemetry_files()

#: The main array of each stage in the amplitude chain; a row's ratio_to_previous is
#: its mean over the mean of the previous chain entry present for the scenario.
CHAIN: dict[str, str] = {
    "simulate": "amplitude",
    "ingest": "amplitude",
    "group": "train/amplitude",
    "normalize": "train/inputs",
}

COLUMNS = ("scenario", "stage", "array", "shape", "dtype", "mean", "std", "min", "max", "sumsq", "nan", "inf",
           "ratio_to_previous", "stage_ratios")


def write_csv(path: str | Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts keyed by ``columns``; None becomes an empty cell) as CSV, atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r[k] is None else r[k] for k in columns})
    write_text_atomic(path, buf.getvalue())


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "x".join(str(int(s)) for s in v)
    return "" if v is None else str(v)


def _scenario_dirs(results: Path, scenarios: Sequence[str] | None) -> list[Path]:
    """The scenario folders (with a simulated.h5) under ``results``, only ``scenarios`` when given.

    Refused with one line (so that a typo never replaces the pipeline's table with an empty
    one): ``results`` not a folder, a named scenario without results, no scenario at all."""
    if not results.exists():
        raise ArtifactError(f"{results}: results folder not found (--results); expected the pipeline's "
                            "results/ folder; nothing written")
    if not results.is_dir():
        raise ArtifactError(f"{results}: not a folder (--results); expected the pipeline's results/ folder; "
                            "nothing written")
    found = sorted(p.name for p in results.iterdir() if p.is_dir() and (p / "simulated.h5").is_file())
    if scenarios is not None:
        missing = [s for s in scenarios if s not in found]
        if missing:
            raise ArtifactError(f"{results}: --scenarios: no results for {missing} (no {results / missing[0]}/"
                                f"simulated.h5); expected scenarios from {found}; nothing written")
        if not scenarios:
            raise ArtifactError(f"{results}: --scenarios: expected at least one scenario name, got none; "
                                "nothing written")
    if not found:
        raise ArtifactError(f"{results}: no scenario results (no */simulated.h5); expected the folder the "
                            "pipeline wrote; nothing written")
    return [results / name for name in found if scenarios is None or name in scenarios]


def stage_artifacts(results: str | Path, scenarios: Sequence[str] | None = None) -> list[Path]:
    """Every stage artifact (:data:`STAGE_FILES`) under ``results/<scenario>/``, only ``scenarios``
    when given: what ``ptychopipe telemetry --results`` tabulates when no files are named."""
    return [sdir / fname for sdir in _scenario_dirs(Path(results), scenarios) for fname, _ in STAGE_FILES
            if (sdir / fname).is_file()]


def _by_scenario(files: Sequence[str | Path]) -> dict[str, list[Path]]:
    """{scenario: its artifacts in pipeline order}, scenarios in name order; the scenario of
    ``results/<scenario>/<file>`` is its folder. A file that is no stage artifact, or missing,
    is refused with one line."""
    order = [fname for fname, _ in STAGE_FILES]
    groups: dict[str, list[Path]] = {}
    for f in map(Path, files):
        if f.name not in order:
            raise ArtifactError(f"{f}: not a stage artifact; expected one of {order} under results/<scenario>/; "
                                "nothing written")
        if not f.is_file():
            raise ArtifactError(f"{not_a_file(f, 'a stage artifact')}; nothing written")
        groups.setdefault(f.parent.name, []).append(f)
    return {s: sorted(groups[s], key=lambda p: order.index(p.name)) for s in sorted(groups)}


def telemetry_rows(files: Sequence[str | Path]) -> list[dict[str, object]]:
    """One row per (scenario, stage, array) of these stage artifacts (``results/<scenario>/<file>``),
    in pipeline order: exactly these files are read (:func:`stage_artifacts` lists a folder's)."""
    stages = dict(STAGE_FILES)
    rows: list[dict[str, object]] = []
    for scenario, paths in _by_scenario(files).items():
        prev_mean: float | None = None
        for path in paths:
            stage = stages[path.name]
            got = read_attrs(path).get("stage")
            if got != stage and not (path.name == "simulated.h5" and got == "ingest"):
                continue
            stage = got  # simulated.h5 of an imported scenario is the ingest stage's
            stats, ratios = read_telemetry(path)
            stage_ratios = "; ".join(f"{k}={v:.6g}" for k, v in sorted(ratios.items()))
            for name, st in stats.items():
                ratio = None
                if CHAIN.get(stage) == name:
                    mean = float(st.get("mean", float("nan")))
                    ratio = mean / prev_mean if prev_mean else None
                    prev_mean = mean
                rows.append({
                    "scenario": scenario, "stage": stage, "array": name, "shape": st.get("shape"),
                    "dtype": st.get("dtype"), "mean": st.get("mean"), "std": st.get("std"),
                    "min": st.get("min"), "max": st.get("max"), "sumsq": st.get("sumsq"), "nan": st.get("nan"),
                    "inf": st.get("inf"),
                    "ratio_to_previous": ratio, "stage_ratios": stage_ratios,
                })
    return rows


def write_telemetry_table(results: str | Path, md_path: str | Path, csv_path: str | Path,
                          scenarios: Sequence[str] | None = None,
                          files: Sequence[str | Path] | None = None) -> tuple[Path, Path]:
    """Write the telemetry table as Markdown and CSV (atomically). Returns the two paths.

    ``files``: exactly these stage artifacts (what the workflow's rule declares); else every
    stage artifact under ``results`` (of ``scenarios`` when given)."""
    rows = telemetry_rows(files if files else stage_artifacts(results, scenarios))
    write_csv(csv_path, COLUMNS, [{k: _fmt(r[k]) for k in COLUMNS} for r in rows])
    lines = ["# Telemetry", "",
             f"Per scenario, stage and array: statistics from each artifact's `telemetry/` group "
             f"(complex arrays: of the modulus). `ratio_to_previous` follows the amplitude chain "
             f"({' -> '.join(f'{s}:{a}' for s, a in CHAIN.items())}). {len(rows)} rows.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[k]) for k in COLUMNS) + " |")
    write_text_atomic(md_path, "\n".join(lines) + "\n")
    return Path(md_path), Path(csv_path)


# --------------------------------------------------------------------------- summary report

def _metric_columns() -> tuple[tuple[str, tuple[str, ...], str], ...]:
    """summary.csv's image-metric columns, from :data:`ptychopipe.evaluation.metrics.METRICS`:
    amp_<key> then phase_<key> (phase_<key>_rad for a metric in the image's own unit)."""
    from ..evaluation.metrics import METRICS

    out = []
    for part, prefix, image_unit in (("amplitude", "amp", "object amplitude"), ("phase", "phase", "rad")):
        for m in METRICS:
            if m.summary:
                name = f"{prefix}_{m.key}" + ("_rad" if m.unit == "image" and part == "phase" else "")
                out.append((name, ("metrics", part, m.key), image_unit if m.unit == "image" else m.unit))
    return tuple(out)


#: summary.csv columns: (column, where in comparison.json, units).
SUMMARY_COLUMNS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("scenario", ("scenario",), ""),
    *_metric_columns(),
    ("amplitude_bias", ("amplitude_bias",), "mean|Ô|/mean|O|"),
    ("phase_offset_rad", ("phase_offset_rad",), "rad"),
    ("n_pixels", ("n_pixels",), "px"),
    ("train_seconds", ("training", "train_seconds"), "s"),
    ("samples_per_second", ("training", "samples_per_second"), "groups/s"),
    ("epochs_run", ("training", "epochs_run"), ""),
    ("nan_status", ("nan_status",), ""),
    ("first_broken", ("first_broken",), ""),
)

#: Provenance of the run, the last columns of every summary.csv row and a line of summary.md.
PROVENANCE_COLUMNS = ("preset", "config_hash", "ptychopipe_version", "created_utc")

#: Columns of the Markdown table (a readable subset; the CSV has them all). The phase's
#: least-squares scale stands beside the amplitude bias: a compressed phase (ls_scale well
#: below 1) can keep a high Pearson r.
SUMMARY_MD_COLUMNS = ("scenario", "amp_pearson_r", "amp_ssim", "amp_psnr_db", "amp_frc_resolution_px",
                      "amplitude_bias", "phase_ls_scale", "phase_pearson_r", "phase_ssim", "phase_mae_rad",
                      "phase_frc_resolution_px", "train_seconds", "samples_per_second", "nan_status",
                      "first_broken")


def _get(d: Any, keys: Sequence[str]) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def summary_row(path: str | Path) -> dict[str, Any]:
    """The row of one comparison.json, keys = :data:`SUMMARY_COLUMNS` names. Numbers stay
    numbers; non-finite values (null in the JSON) are None."""
    data = ComparisonSummary.read(path)
    row = {name: _get(data, keys) for name, keys, _ in SUMMARY_COLUMNS}
    row["first_broken"] = row["first_broken"] or "none"
    return row


def summary_rows(comparisons: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One row per comparison.json (:func:`summary_row`), sorted by scenario."""
    return sorted((summary_row(p) for p in comparisons), key=lambda r: str(r["scenario"]))


def _cell(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def _summary_cell(row: dict[str, Any], column: str) -> str:
    """A summary.md cell; an FRC resolution whose curve never crossed the threshold says so
    (the number is then the band limit of the evaluation, not a measured resolution)."""
    text = _cell(row[column])
    crossed = {"amp_frc_resolution_px": "amp_frc_crossed", "phase_frc_resolution_px": "phase_frc_crossed"}
    if column in crossed and row.get(crossed[column]) is False:
        text = f"no crossing (≤ {text})"
    return text


def phase_scale_note(row: dict[str, Any], tolerance: float) -> list[str]:
    """Lines flagging a compressed (or stretched) phase: the amplitude chain does not see the
    phase, and a phase shrunk to 0.74 of the truth can keep a Pearson r of 0.97."""
    ls = row.get("phase_ls_scale")
    if ls is None or not math.isfinite(float(ls)) or abs(float(ls) - 1.0) <= tolerance:
        return []
    what = "compressed" if float(ls) < 1.0 else "stretched"
    return [f"**Phase contrast {what}**: the phase's least-squares scale onto the truth is {float(ls):.3f} "
            f"(target 1 ± {tolerance:g}; phase r {_cell(row.get('phase_pearson_r'))} does not show it).", ""]


def _signed(v: Any) -> str:
    """``v`` as ``+0.1234``; ``n/a`` for None (a non-finite number in the JSON)."""
    return "n/a" if v is None else f"{float(v):+.4f}"


def ratio_axis_limits(values: Sequence[float], tolerance: float | None) -> tuple[float, float]:
    """y limits of the bias panel: symmetric about the target 1, at least 0.9-1.1 (and 3x the
    tolerance band), widened to show every finite value with a 10 % margin."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    half = max([0.1, 3.0 * (tolerance or 0.0)] + [abs(v - 1.0) * 1.1 for v in finite])
    return 1.0 - half, 1.0 + half


def overview_figure(rows: Sequence[dict[str, Any]], path: str | Path, tolerance: float | None = None) -> None:
    """Overview of all scenarios (PNG): Pearson r and SSIM (amplitude, phase), amplitude bias
    (target 1, ± tolerance band when given) and FRC resolution (px)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [str(r["scenario"]) for r in rows]
    x = np.arange(len(names))

    def col(key: str) -> np.ndarray:
        return np.array([np.nan if r[key] is None else float(r[key]) for r in rows])

    fig, axes = plt.subplots(2, 2, figsize=(max(8.0, 1.6 * len(names) + 4), 7), constrained_layout=True)
    panels = (
        (axes[0, 0], ("amp_pearson_r", "phase_pearson_r"), "Pearson r (vs truth)", (0, 1.02)),
        (axes[0, 1], ("amp_ssim", "phase_ssim"), "SSIM (vs truth)", (0, 1.02)),
        (axes[1, 1], ("amp_frc_resolution_px", "phase_frc_resolution_px"), "FRC resolution (px, lower = finer)",
         None),
    )
    for ax, keys, label, ylim in panels:
        for i, (key, name) in enumerate(zip(keys, ("amplitude", "phase"))):
            bars = ax.bar(x + (i - 0.5) * 0.38, col(key), width=0.38, label=name)
            crossed_key = key.replace("_resolution_px", "_crossed")
            if crossed_key != key:  # FRC: a curve that never crossed the threshold is marked, not a resolution
                for bar, r in zip(bars, rows):
                    if r.get(crossed_key) is False:
                        bar.set_hatch("//")
                        bar.set_alpha(0.5)
                        ax.annotate("no\ncrossing", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                    ha="center", va="bottom", fontsize=7)
        ax.set_ylabel(label)
        if ylim:  # correlations can be negative: extend the axis below 0 when they are
            low = min([ylim[0]] + [float(np.nanmin(col(k))) - 0.05 for k in keys if np.any(np.isfinite(col(k)))])
            ax.set_ylim(low, ylim[1])
            ax.axhline(0.0, color="k", lw=0.8)
        ax.legend(fontsize=8)
    ax = axes[1, 0]
    bias = col("amplitude_bias")
    ls = col("phase_ls_scale")
    colours = ["C3" if r["first_broken"] != "none" else "C2" for r in rows]
    # bars from the target 1 (not from 0), on an axis around 1: a ±5 % band is then visible
    ax.bar(x - 0.19, bias - 1.0, bottom=1.0, width=0.38, color=colours, label="amplitude bias")
    ax.bar(x + 0.19, ls - 1.0, bottom=1.0, width=0.38, color="C0", alpha=0.6, label="phase ls_scale")
    ax.axhline(1.0, color="k", lw=1)
    if tolerance is not None:
        ax.axhspan(1 - tolerance, 1 + tolerance, color="0.85", zorder=0, label=f"1 ± {tolerance:g}")
    ax.set_ylim(*ratio_axis_limits(np.concatenate([bias, ls]), tolerance))
    ax.legend(fontsize=8)
    ax.set_ylabel("ratio to truth (target 1)")
    ax.set_title("amplitude bias mean|Ô|/mean|O|, phase least-squares scale", fontsize=9)
    for a in axes.ravel():
        a.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        a.grid(axis="y", alpha=0.3)
    fig.suptitle("ptychopipe: reconstruction vs truth, all scenarios (red bias bar: a broken stage invariant)")
    save_figure(fig, path)


def provenance(preset: str | None = None, config_hash: str | None = None) -> dict[str, str]:
    """The run's provenance: preset, config hash (None: "not recorded"), ptychopipe version and
    the date (UTC) of the report."""
    import datetime as dt

    from .. import __version__

    return {"preset": preset or "not recorded", "config_hash": config_hash or "not recorded",
            "ptychopipe_version": __version__,
            "created_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def write_summary(comparisons: Sequence[str | Path], md_path: str | Path, csv_path: str | Path,
                  overview_path: str | Path, baselines: Sequence[str | Path] = (),
                  preset: str | None = None, config_hash: str | None = None,
                  grid: tuple[str | Path, Sequence[str | Path], Sequence[str | Path]] | None = None
                  ) -> tuple[Path, ...]:
    """Write summary.csv (all columns), summary.md (table, per-scenario chain and figure
    links) and the overview figure, from each scenario's comparison.json. Returns the paths.
    ``baselines``: baseline_comparison.json files (scenarios with the iterative reference),
    tabulated in a "PINN vs iterative" section of summary.md. ``preset`` and ``config_hash``
    (of the run's scenarios, :func:`ptychopipe.config.scenarios_hash`) are recorded with the
    ptychopipe version and the date (:data:`PROVENANCE_COLUMNS`). ``grid``: (PNG path, each
    scenario's stitched.h5, simulated.h5, in the order of ``comparisons``): the all-scenarios
    reconstruction grid (:func:`.figures.reconstruction_grid`), linked from summary.md."""
    if not comparisons:
        raise ValueError("report: expected at least one comparison.json, got none")
    prov = provenance(preset, config_hash)
    rows = [{**r, **prov} for r in summary_rows(comparisons)]
    data: dict[str, dict[str, Any]] = {}
    for p in comparisons:
        d = ComparisonSummary.read(p)
        if str(d["scenario"]) in data:
            raise ValueError(f"{p}: scenario {d['scenario']!r} appears twice in the comparisons; "
                             "expected one comparison.json per scenario")
        data[str(d["scenario"])] = d
    write_csv(csv_path, [n for n, _, _ in SUMMARY_COLUMNS] + list(PROVENANCE_COLUMNS), rows)
    tolerances = {float(d["config"]["ratio_tolerance"]) for d in data.values()}
    overview_figure(rows, overview_path, tolerances.pop() if len(tolerances) == 1 else None)

    md_dir = Path(md_path).parent
    units = {n: u for n, _, u in SUMMARY_COLUMNS}
    lines = [
        "# ptychopipe summary", "",
        f"Preset {prov['preset']}, config hash {prov['config_hash']}, ptychopipe {prov['ptychopipe_version']}, "
        f"written {prov['created_utc']} (UTC).", "",
        f"{len(rows)} scenario(s). Metrics compare the stitched test-region reconstruction with the true "
        "object over its well-covered pixels, after removing the global phase offset only (no amplitude "
        "rescaling, no registration unless configured). `amplitude_bias` = mean|Ô| / mean|O| (target 1); "
        "`phase_ls_scale` = least-squares scale of the phase onto the truth (target 1; below 1: compressed "
        "phase contrast, which a high phase Pearson r does not show). "
        "`first_broken` names the first stage of the ratio chain raw → grouped → normalized → prediction → "
        "stitched → truth → phase (the phase contrast kept) that departs from its contract by more than "
        "`compare.ratio_tolerance`. "
        "All columns (with MAE, RMSE, PSNR, least-squares scalars) are in summary.csv.", "",
        f"![overview]({os.path.relpath(overview_path, md_dir)})", "",
        *([f"![all scenarios: truth and reconstruction]({os.path.relpath(grid[0], md_dir)})", ""] if grid else []),
        "| " + " | ".join(_cell(f"{c} ({units[c]})" if units[c] else c) for c in SUMMARY_MD_COLUMNS) + " |",
        "|" + "---|" * len(SUMMARY_MD_COLUMNS),
    ]
    for r in rows:
        lines.append("| " + " | ".join(_summary_cell(r, c) for c in SUMMARY_MD_COLUMNS) + " |")
    for r in rows:
        d = data[str(r["scenario"])]
        if d.get("has_truth", True) is False:
            dm = d.get("data_metrics") or {}
            lines += ["", f"## {r['scenario']}", "",
                      "**No true object** (imported data): object-space metrics are not available (n/a above); "
                      f"data-space metrics only: Poisson NLL of the test data {_cell(dm.get('poisson_nll'))}, "
                      f"predicted / measured counts {_cell(dm.get('predicted_over_measured_counts'))} "
                      f"(over {dm.get('n_patterns', 'n/a')} test patterns); the FRC figure is replaced by "
                      f"measured vs predicted counts per detector ring. Evaluated region {d['n_pixels']} px; "
                      f"NaN status: {d['nan_status']}.", "",
                      "| stage | ratio | contract | ratio / contract | cumulative ratio | broken |",
                      "|---|---|---|---|---|---|"]
        else:
            lines += ["", f"## {r['scenario']}", "",
                      f"Evaluated {d['n_pixels']} px; global phase offset removed {_signed(d['phase_offset_rad'])} rad; "
                      f"registration {'shift ' + str(d['registration']['shift_px']) + ' px' if d['registration']['enabled'] else 'off'}; "
                      f"NaN status: {d['nan_status']}.", "",
                      *phase_scale_note(r, float(d["config"]["ratio_tolerance"])),
                      "| stage | ratio | contract | ratio / contract | cumulative ratio | broken |",
                      "|---|---|---|---|---|---|"]
        for link in d["chain"]:
            lines.append(f"| {link['stage']} | {_cell(link['ratio'])} | {_cell(link['contract'])} | "
                         f"{_cell(link['relative'])} | {_cell(link['cumulative'])} | "
                         f"{'**yes**' if link['broken'] else 'no'} |")
        figs = dict(d.get("figures") or {})
        data_png = md_dir / str(r["scenario"]) / "data.png"  # rule data_figure: probe, scan, a pattern
        if data_png.is_file():
            figs["inputs"] = str(data_png)
        if figs:
            lines += ["", " ".join(f"[{k}]({os.path.relpath(v, md_dir)})" for k, v in sorted(figs.items()))]
    if baselines:
        from ..baseline import baseline_section

        lines += baseline_section(baselines, md_dir)
    if grid:
        from .figures import reconstruction_grid

        reconstruction_grid(comparisons, grid[1], grid[2], grid[0])
    write_text_atomic(md_path, "\n".join(lines) + "\n")
    return (Path(md_path), Path(csv_path), Path(overview_path)) + ((Path(grid[0]),) if grid else ())


# --------------------------------------------------------------------------- dose response

#: Target band of the amplitude bias mean|Ô|/mean|O|: within 3 % of 1.
BIAS_TARGET: tuple[float, float] = (0.97, 1.03)

#: dose_response.csv columns (names as in :data:`SUMMARY_COLUMNS`, plus nphotons and the band check).
DOSE_COLUMNS = ("scenario", "nphotons", "amp_pearson_r", "phase_pearson_r", "amplitude_bias", "bias_in_target",
                "amp_ssim", "phase_ssim", "amp_frc_resolution_px", "phase_frc_resolution_px", "nan_status",
                "first_broken")


def dose_rows(comparisons: Sequence[str | Path], nphotons: Sequence[float],
              band: tuple[float, float] = BIAS_TARGET) -> list[dict[str, Any]]:
    """One row per dose-sweep scenario (keys :data:`DOSE_COLUMNS`), sorted by ``nphotons``:
    ``comparisons[i]`` is the comparison.json of the scenario simulated with ``nphotons[i]``
    photons per pattern. A missing or malformed file is a one-line ArtifactError."""
    if not comparisons:
        raise ValueError("dose-response: expected the comparison.json of at least one dose-sweep scenario, got none "
                         "(configure a sweep over nphotons under sweeps: in config/scenarios.yaml)")
    if len(nphotons) != len(comparisons):
        raise ValueError(f"dose-response: expected one nphotons value per comparison.json ({len(comparisons)}), "
                         f"got {len(nphotons)}")
    rows: dict[str, dict[str, Any]] = {}
    for path, n in zip(comparisons, nphotons):
        if not (float(n) > 0 and math.isfinite(float(n))):
            raise ValueError(f"dose-response: {path}: nphotons must be a finite number > 0, got {n}")
        row = summary_row(path)
        name = str(row["scenario"])
        if name in rows:
            raise ValueError(f"{path}: scenario {name!r} appears twice in the comparisons; "
                             "expected one comparison.json per scenario")
        bias = row["amplitude_bias"]
        rows[name] = {**{k: row.get(k) for k in DOSE_COLUMNS}, "nphotons": float(n),
                      "bias_in_target": None if bias is None else bool(band[0] <= bias <= band[1])}
    return sorted(rows.values(), key=lambda r: (r["nphotons"], r["scenario"]))


def dose_figure(rows: Sequence[dict[str, Any]], path: str | Path, band: tuple[float, float] = BIAS_TARGET) -> None:
    """Dose-response figure (PNG): amplitude and phase Pearson r (top) and amplitude bias with
    its target band (bottom) against photons per pattern, log x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.array([r["nphotons"] for r in rows], dtype=float)

    def col(key: str) -> np.ndarray:
        return np.array([np.nan if r[key] is None else float(r[key]) for r in rows])

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True, constrained_layout=True)
    for key, name, marker in (("amp_pearson_r", "amplitude", "o"), ("phase_pearson_r", "phase", "s")):
        top.plot(x, col(key), marker=marker, label=name)
    top.axhline(0.0, color="k", lw=0.8)
    top.set_ylim(min(-0.05, float(np.nanmin(np.r_[col("amp_pearson_r"), col("phase_pearson_r"), 0.0])) - 0.05), 1.02)
    top.set_ylabel("Pearson r vs truth")
    top.legend(fontsize=8)
    bias = col("amplitude_bias")
    bottom.axhspan(band[0], band[1], color="0.85", zorder=0, label=f"target [{band[0]:g}, {band[1]:g}]")
    bottom.axhline(1.0, color="k", lw=1)
    inside = (bias >= band[0]) & (bias <= band[1])
    bottom.plot(x, bias, color="C0", lw=1)
    bottom.scatter(x, bias, c=np.where(inside, "C2", "C3"), zorder=3, label="bias (red: outside the band)")
    finite = bias[np.isfinite(bias)]
    lo, hi = min([band[0], *finite]), max([band[1], *finite])
    bottom.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    bottom.set_ylabel("amplitude bias mean|Ô|/mean|O|")
    bottom.set_xlabel("photons per pattern (nphotons)")
    bottom.set_xscale("log")
    bottom.legend(fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("ptychopipe: dose response (" + ", ".join(str(r["scenario"]) for r in rows) + ")", fontsize=9)
    save_figure(fig, path)


def write_dose_response(comparisons: Sequence[str | Path], nphotons: Sequence[float], png_path: str | Path,
                        csv_path: str | Path, band: tuple[float, float] = BIAS_TARGET) -> tuple[Path, Path]:
    """Write dose_response.png and dose_response.csv (one row per dose, by nphotons)
    from the sweep scenarios' comparison.json files. Returns the two paths."""
    rows = dose_rows(comparisons, nphotons, band)
    write_csv(csv_path, DOSE_COLUMNS, rows)
    dose_figure(rows, png_path, band)
    return Path(png_path), Path(csv_path)


# --------------------------------------------------------------------------- quality table (make quality)

QUALITY_START = "<!-- quality-table:start -->"
QUALITY_END = "<!-- quality-table:end -->"
#: First line of a quality-table file that :func:`write_quality_table` creates.
QUALITY_TITLE = "# Results table (make quality)"
#: train.h5 attributes that would name the device (the train stage records backend and versions;
#: any of these, when a later version records one, is shown in place of the table host's CPU).
DEVICE_ATTRS = ("device", "device_name", "devices", "gpu", "gpu_name", "accelerator", "platform", "processor",
                "cpu", "cpu_count", "hostname")
QUALITY_HEADER = ("scenario", "preset", "nphotons", "amplitude bias", "amplitude r", "amplitude SSIM", "phase r",
                  "FRC px (amplitude)", "train s", "epochs run", "hardware / backend", "date (UTC)")


def quality_rows(results: str | Path, configfile: str | Path, preset: str,
                 scenarios: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per scenario for the results table of ``make quality``: the compare-stage metrics
    (comparison.json), nphotons (simulated.h5), training time, epochs and backend (train.h5).
    ``scenarios``: default the scenarios ``make quality`` builds: the default ones, then the
    dose sweep's points (the sweeps over nphotons; the reconstruction-mode and model-reuse
    sweeps are benchmark scenarios, built on request).
    Each scenario's simulate/ingest and train artifacts must carry the config hash of that
    scenario under ``preset`` (else the table would mislabel them): one-line ValueError if not."""
    from ..config import config_hash, default_scenarios, load_scenarios, load_yaml, stage_config, sweep_points

    raw = load_yaml(configfile)
    params = load_scenarios(configfile, preset)
    if scenarios is None:
        first = default_scenarios(raw, params)
        # then the sweeps' points; dose_1e09 is gs2_custom, listed once
        scenarios = first + [s for s, _ in sweep_points(raw, params, "nphotons") if s not in first]
    unknown = [s for s in scenarios if s not in params]
    if unknown:
        raise ValueError(f"quality-table: scenario(s) {unknown} not in {configfile}; expected names from {sorted(params)}")
    results = Path(results)
    rows = []
    for scen in scenarios:
        row = summary_row(results / scen / "comparison.json")
        attrs = {}
        for fname in ("simulated.h5", "train.h5"):
            path = results / scen / fname
            if not path.is_file():
                raise ArtifactError(not_a_file(path, f"expected the {fname[:-3]} artifact of {scen}"))
            attrs[fname] = read_attrs(path)
            stage = str(attrs[fname].get("stage"))
            want = config_hash(stage_config(params[scen], stage))
            if attrs[fname].get("config_hash") != want:
                raise ValueError(f"{path}: config_hash {attrs[fname].get('config_hash')} is not that of scenario "
                                 f"{scen} with preset {preset!r} in {configfile} ({want}): these results were made "
                                 f"with other parameters; re-run them (make quality PRESET={preset}) or pass the "
                                 "preset they were made with")
        sim, train = attrs["simulated.h5"], attrs["train.h5"]
        device = "; ".join(f"{k} {train[k]}" for k in DEVICE_ATTRS if k in train)
        backend = f"{train.get('backend', '?')} {train.get('backend_version', '')}".strip()
        # the rule's CPU threads say how a CPU run was limited; a GPU run does not use them
        dev = str(train.get("device") or "")
        accelerated = bool(train.get("gpu_name")) or (bool(dev) and not dev.startswith("cpu"))
        threads = 0 if accelerated else int(train.get("intra_op_threads") or 0)
        rows.append({**row, "preset": preset, "nphotons": sim.get("nphotons"),
                     "backend": f"{backend}, Keras {train.get('keras_version', '?')}"
                                + (f", {threads} thread{'s' if threads > 1 else ''}" if threads else ""),
                     "device": device or None, "date": str(train.get("created_utc", ""))[:10] or None})
    return rows


def _num(v: Any, fmt: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def quality_block(rows: Sequence[dict[str, Any]], results: str | Path, date: str) -> list[str]:
    """The Markdown lines written between the quality-table markers."""
    host = None if all(r["device"] for r in rows) else cpu_description()
    lines = [f"Written by `ptychopipe quality-table` on {date} from `{results}/` ({len(rows)} scenarios). "
             "Compare-stage numbers over the stitched test region, no rescaling; amplitude bias = "
             f"mean\\|Ô\\|/mean\\|O\\| (target {BIAS_TARGET[0]:g}–{BIAS_TARGET[1]:g}); FRC px = amplitude "
             "FRC resolution; date = when training finished.", "",
             "| " + " | ".join(QUALITY_HEADER) + " |", "|" + "---|" * len(QUALITY_HEADER)]
    for r in rows:
        hw = f"{r['device']}; {r['backend']}" if r["device"] else f"{host}\\*; {r['backend']}"
        cells = (r["scenario"], r["preset"], _num(r["nphotons"], ".0e"), _num(r["amplitude_bias"], ".3f"),
                 _num(r["amp_pearson_r"], ".3f"), _num(r["amp_ssim"], ".3f"), _num(r["phase_pearson_r"], ".3f"),
                 _num(r["amp_frc_resolution_px"], ".3g"), _num(r["train_seconds"], ".0f"),
                 _num(r["epochs_run"], "d"), hw, r["date"] or "n/a")
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    if host:
        lines += ["", "\\* train.h5 names no device (it records the backend and versions only): this is the "
                      "machine that ran `ptychopipe quality-table` (platform.processor(), os.cpu_count()), "
                      "assumed to be the one that trained."]
    return lines


def replace_between_markers(text: str, block: Sequence[str], source: str) -> str:
    """``text`` with everything between the quality-table marker lines replaced by ``block``.
    Exactly one start and one end marker, start first, each on its own line; else ValueError."""
    lines = text.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.strip() == QUALITY_START]
    ends = [i for i, ln in enumerate(lines) if ln.strip() == QUALITY_END]
    stray = [ln for ln in lines if (QUALITY_START in ln or QUALITY_END in ln)
             and ln.strip() not in (QUALITY_START, QUALITY_END)]
    if len(starts) != 1 or len(ends) != 1 or starts[0] > ends[0] or stray:
        raise ValueError(f"{source}: expected one line {QUALITY_START} followed by one line {QUALITY_END}; found "
                         f"{len(starts)} start and {len(ends)} end marker line(s)"
                         + (", end before start" if len(starts) == len(ends) == 1 and starts[0] > ends[0] else "")
                         + (f", {len(stray)} marker(s) inside other text" if stray else ""))
    out = lines[:starts[0] + 1] + list(block) + lines[ends[0]:]
    return "\n".join(out) + "\n"


def write_quality_table(results: str | Path, out: str | Path, configfile: str | Path, preset: str,
                        scenarios: Sequence[str] | None = None, date: str | None = None) -> Path:
    """Replace the results table between the markers of ``out`` with one row per scenario
    (:func:`quality_rows`); idempotent. ``date``: default today (UTC). A missing ``out`` (for
    example results/report/quality_table.md after ``make clean``) is created with a title and
    the two markers; an existing one must hold them."""
    import datetime as dt

    out = Path(out)
    text = out.read_text() if out.is_file() else f"{QUALITY_TITLE}\n\n{QUALITY_START}\n{QUALITY_END}\n"
    replace_between_markers(text, [], str(out))  # marker problems before reading any result
    rows = quality_rows(results, configfile, preset, scenarios)
    date = date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    write_text_atomic(out, replace_between_markers(text, quality_block(rows, results, date), str(out)))
    return out


def copy_quality_table(table: str | Path, out: str | Path) -> Path:
    """Copy the block between the quality-table markers of ``table`` (the file ``make quality``
    writes, results/report/quality_table.md) between the markers of ``out`` (docs/results.md);
    the rest of ``out`` is untouched. Both files must hold one well-formed marker pair."""
    table, out = Path(table), Path(out)
    for path in (table, out):
        if not path.is_file():
            raise ArtifactError(f"{path}: file not found (expected a Markdown file with the quality-table markers)")
    src = table.read_text()
    replace_between_markers(src, [], str(table))
    lines = src.splitlines()
    block = lines[lines.index(next(ln for ln in lines if ln.strip() == QUALITY_START)) + 1:
                  lines.index(next(ln for ln in lines if ln.strip() == QUALITY_END))]
    text = out.read_text()
    replace_between_markers(text, [], str(out))
    write_text_atomic(out, replace_between_markers(text, block, str(out)))
    return out
