"""The summary of the evaluation (``ptychopipe report``, rule ``summary``): summary.csv (every
column), summary.md (a readable table, each scenario's ratio chain and links to its figures)
and the overview figure, one row per scenario, from each scenario's comparison.json, with the
run's provenance. The rows it reads (:func:`summary_row`) are what the dose response and the
results table start from. The PINN-vs-iterative section comes from
:func:`ptychopipe.reporting.baseline.baseline_section` and the reconstruction grid from
:mod:`.figures`; no metric is computed here, the compare stage's are tabulated."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from ..artifacts import ComparisonSummary, save_figure, write_text_atomic
from .common import write_csv


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
        from .baseline import baseline_section

        lines += baseline_section(baselines, md_dir)
    if grid:
        from .figures import reconstruction_grid

        reconstruction_grid(comparisons, grid[1], grid[2], grid[0])
    write_text_atomic(md_path, "\n".join(lines) + "\n")
    return (Path(md_path), Path(csv_path), Path(overview_path)) + ((Path(grid[0]),) if grid else ())
