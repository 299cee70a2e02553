"""The dose response of the dose sweep (``ptychopipe dose-response``, rule ``dose_response``):
dose_response.csv and dose_response.png, the sweep scenarios' correlations and amplitude bias
against the photons per pattern, with the bias's target band (:data:`BIAS_TARGET`, which the
results table quotes too). Which scenarios form the sweep is the workflow's (``sweeps:`` in
config/scenarios.yaml); their numbers are the summary's rows."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..artifacts import save_figure
from .common import write_csv
from .summary import summary_row

#: Target band of the amplitude bias mean|Ô|/mean|O|: within 3 % of 1.
BIAS_TARGET: tuple[float, float] = (0.97, 1.03)

#: dose_response.csv columns (names as in :data:`.summary.SUMMARY_COLUMNS`, plus nphotons and the band check).
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
