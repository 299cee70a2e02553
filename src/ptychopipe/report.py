"""Reports across scenarios: the telemetry table (``ptychopipe telemetry``) and the
summary of the evaluation (``ptychopipe report``: summary.md, summary.csv and an
overview figure, one row per scenario, from each scenario's comparison.json)."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

from .artifacts import read_attrs, read_comparison_json, read_telemetry, write_text_atomic

#: Stage artifacts in pipeline order (file name under results/{scenario}/, stage name).
STAGE_FILES: tuple[tuple[str, str], ...] = (
    ("simulated.h5", "simulate"),
    ("split.h5", "split"),
    ("grouped.h5", "group"),
    ("normalized.h5", "normalize"),
    ("train.h5", "train"),
    ("inferred.h5", "infer"),
    ("stitched.h5", "stitch"),
    ("comparison.h5", "compare"),
)

#: The main array of each stage in the amplitude chain; a row's ratio_to_previous is
#: its mean over the mean of the previous chain entry present for the scenario.
CHAIN: dict[str, str] = {
    "simulate": "amplitude",
    "ingest": "amplitude",
    "group": "train/amplitude",
    "normalize": "train/inputs",
}

COLUMNS = ("scenario", "stage", "array", "shape", "dtype", "mean", "std", "min", "max", "nan", "inf",
           "ratio_to_previous", "stage_ratios")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "x".join(str(int(s)) for s in v)
    return "" if v is None else str(v)


def telemetry_rows(results: str | Path, scenarios: Sequence[str] | None = None) -> list[dict[str, object]]:
    """One row per (scenario, stage, array) found under ``results``, in pipeline order.

    ``scenarios``: only these scenario folders (the workflow passes the configured ones, so
    folders left over from scenarios since removed or renamed are not reported); None = all.
    """
    results = Path(results)
    rows: list[dict[str, object]] = []
    scen_dirs = sorted(p for p in results.iterdir() if p.is_dir() and (p / "simulated.h5").is_file()
                       and (scenarios is None or p.name in scenarios)) if results.is_dir() else []
    for sdir in scen_dirs:
        prev_mean: float | None = None
        for fname, stage in STAGE_FILES:
            path = sdir / fname
            if not path.is_file():
                continue
            got = read_attrs(path).get("stage")
            if got != stage and not (fname == "simulated.h5" and got == "ingest"):
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
                    "scenario": sdir.name, "stage": stage, "array": name, "shape": st.get("shape"),
                    "dtype": st.get("dtype"), "mean": st.get("mean"), "std": st.get("std"),
                    "min": st.get("min"), "max": st.get("max"), "nan": st.get("nan"), "inf": st.get("inf"),
                    "ratio_to_previous": ratio, "stage_ratios": stage_ratios,
                })
    return rows


def write_telemetry_table(results: str | Path, md_path: str | Path, csv_path: str | Path,
                          scenarios: Sequence[str] | None = None) -> tuple[Path, Path]:
    """Write the telemetry table as Markdown and CSV (atomically). Returns the two paths."""
    rows = telemetry_rows(results, scenarios)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r[k]) for k in COLUMNS})
    write_text_atomic(csv_path, buf.getvalue())
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

#: summary.csv columns: (column, where in comparison.json, units).
SUMMARY_COLUMNS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("scenario", ("scenario",), ""),
    ("amp_mae", ("metrics", "amplitude", "mae"), "object amplitude"),
    ("amp_rmse", ("metrics", "amplitude", "rmse"), "object amplitude"),
    ("amp_pearson_r", ("metrics", "amplitude", "pearson_r"), ""),
    ("amp_ssim", ("metrics", "amplitude", "ssim"), ""),
    ("amp_psnr_db", ("metrics", "amplitude", "psnr_db"), "dB"),
    ("amp_ls_scale", ("metrics", "amplitude", "ls_scale"), ""),
    ("amp_frc_resolution_px", ("metrics", "amplitude", "frc_resolution_px"), "px"),
    ("phase_mae_rad", ("metrics", "phase", "mae"), "rad"),
    ("phase_rmse_rad", ("metrics", "phase", "rmse"), "rad"),
    ("phase_pearson_r", ("metrics", "phase", "pearson_r"), ""),
    ("phase_ssim", ("metrics", "phase", "ssim"), ""),
    ("phase_psnr_db", ("metrics", "phase", "psnr_db"), "dB"),
    ("phase_ls_scale", ("metrics", "phase", "ls_scale"), ""),
    ("phase_frc_resolution_px", ("metrics", "phase", "frc_resolution_px"), "px"),
    ("amplitude_bias", ("amplitude_bias",), "mean|Ô|/mean|O|"),
    ("phase_offset_rad", ("phase_offset_rad",), "rad"),
    ("n_pixels", ("n_pixels",), "px"),
    ("train_seconds", ("training", "train_seconds"), "s"),
    ("samples_per_second", ("training", "samples_per_second"), "groups/s"),
    ("epochs_run", ("training", "epochs_run"), ""),
    ("nan_status", ("nan_status",), ""),
    ("first_broken", ("first_broken",), ""),
)

#: Columns of the Markdown table (a readable subset; the CSV has them all).
SUMMARY_MD_COLUMNS = ("scenario", "amp_pearson_r", "amp_ssim", "amp_psnr_db", "amp_frc_resolution_px",
                      "amplitude_bias", "phase_pearson_r", "phase_ssim", "phase_mae_rad",
                      "phase_frc_resolution_px", "train_seconds", "samples_per_second", "nan_status",
                      "first_broken")


def _get(d: Any, keys: Sequence[str]) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def summary_rows(comparisons: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One row per comparison.json (sorted by scenario), keys = :data:`SUMMARY_COLUMNS` names.
    Numbers stay numbers; non-finite values (null in the JSON) are None."""
    rows = []
    for path in comparisons:
        data = read_comparison_json(path)
        row = {name: _get(data, keys) for name, keys, _ in SUMMARY_COLUMNS}
        row["first_broken"] = row["first_broken"] or "none"
        rows.append(row)
    return sorted(rows, key=lambda r: str(r["scenario"]))


def _cell(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v).replace("|", "\\|")


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
            ax.bar(x + (i - 0.5) * 0.38, col(key), width=0.38, label=name)
        ax.set_ylabel(label)
        if ylim:  # correlations can be negative: extend the axis below 0 when they are
            low = min([ylim[0]] + [float(np.nanmin(col(k))) - 0.05 for k in keys if np.any(np.isfinite(col(k)))])
            ax.set_ylim(low, ylim[1])
            ax.axhline(0.0, color="k", lw=0.8)
        ax.legend(fontsize=8)
    ax = axes[1, 0]
    bias = col("amplitude_bias")
    ax.bar(x, bias, width=0.5, color=["C3" if r["first_broken"] != "none" else "C2" for r in rows])
    ax.axhline(1.0, color="k", lw=1)
    if tolerance is not None:
        ax.axhspan(1 - tolerance, 1 + tolerance, color="0.85", zorder=0, label=f"±{tolerance:g}")
        ax.legend(fontsize=8)
    ax.set_ylabel("amplitude bias mean|Ô|/mean|O| (target 1)")
    for a in axes.ravel():
        a.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        a.grid(axis="y", alpha=0.3)
    fig.suptitle("ptychopipe: reconstruction vs truth, all scenarios (red bias bar: a broken stage invariant)")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_summary(comparisons: Sequence[str | Path], md_path: str | Path, csv_path: str | Path,
                  overview_path: str | Path, baselines: Sequence[str | Path] = ()) -> tuple[Path, Path, Path]:
    """Write summary.csv (all columns), summary.md (table, per-scenario chain and figure
    links) and the overview figure, from each scenario's comparison.json. Returns the paths.
    ``baselines``: baseline_comparison.json files (scenarios with the iterative reference),
    tabulated in a "PINN vs iterative" section of summary.md."""
    if not comparisons:
        raise ValueError("report: expected at least one comparison.json, got none")
    rows = summary_rows(comparisons)
    data: dict[str, dict[str, Any]] = {}
    for p in comparisons:
        d = read_comparison_json(p)
        if str(d["scenario"]) in data:
            raise ValueError(f"{p}: scenario {d['scenario']!r} appears twice in the comparisons; "
                             "expected one comparison.json per scenario")
        data[str(d["scenario"])] = d
    names = [n for n, _, _ in SUMMARY_COLUMNS]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r[k] is None else r[k] for k in names})
    write_text_atomic(csv_path, buf.getvalue())
    tolerances = {float(d["config"]["ratio_tolerance"]) for d in data.values()}
    overview_figure(rows, overview_path, tolerances.pop() if len(tolerances) == 1 else None)

    md_dir = Path(md_path).parent
    units = {n: u for n, _, u in SUMMARY_COLUMNS}
    lines = [
        "# ptychopipe summary", "",
        f"{len(rows)} scenario(s). Metrics compare the stitched test-region reconstruction with the true "
        "object over its well-covered pixels, after removing the global phase offset only (no amplitude "
        "rescaling, no registration unless configured). `amplitude_bias` = mean|Ô| / mean|O| (target 1). "
        "`first_broken` names the first stage of the ratio chain raw → grouped → normalized → prediction → "
        "truth that departs from its contract by more than `compare.ratio_tolerance`. "
        "All columns (with MAE, RMSE, PSNR, least-squares scalars) are in summary.csv.", "",
        f"![overview]({os.path.relpath(overview_path, md_dir)})", "",
        "| " + " | ".join(_cell(f"{c} ({units[c]})" if units[c] else c) for c in SUMMARY_MD_COLUMNS) + " |",
        "|" + "---|" * len(SUMMARY_MD_COLUMNS),
    ]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[c]) for c in SUMMARY_MD_COLUMNS) + " |")
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
                      f"Evaluated {d['n_pixels']} px; global phase offset removed {d['phase_offset_rad']:+.4f} rad; "
                      f"registration {'shift ' + str(d['registration']['shift_px']) + ' px' if d['registration']['enabled'] else 'off'}; "
                      f"NaN status: {d['nan_status']}.", "",
                      "| stage | ratio | contract | ratio / contract | cumulative ratio | broken |",
                      "|---|---|---|---|---|---|"]
        for link in d["chain"]:
            lines.append(f"| {link['stage']} | {_cell(link['ratio'])} | {_cell(link['contract'])} | "
                         f"{_cell(link['relative'])} | {_cell(link['cumulative'])} | "
                         f"{'**yes**' if link['broken'] else 'no'} |")
        figs = d.get("figures") or {}
        if figs:
            lines += ["", " ".join(f"[{k}]({os.path.relpath(v, md_dir)})" for k, v in sorted(figs.items()))]
    if baselines:
        from .baseline import baseline_section

        lines += baseline_section(baselines, md_dir)
    write_text_atomic(md_path, "\n".join(lines) + "\n")
    return Path(md_path), Path(csv_path), Path(overview_path)
