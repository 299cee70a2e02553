"""Reports across scenarios: the telemetry table (``ptychopipe telemetry``)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from .artifacts import read_attrs, read_telemetry, write_text_atomic

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


def telemetry_rows(results: str | Path) -> list[dict[str, object]]:
    """One row per (scenario, stage, array) found under ``results``, in pipeline order."""
    results = Path(results)
    rows: list[dict[str, object]] = []
    scen_dirs = sorted(p for p in results.iterdir() if p.is_dir() and (p / "simulated.h5").is_file()) \
        if results.is_dir() else []
    for sdir in scen_dirs:
        prev_mean: float | None = None
        for fname, stage in STAGE_FILES:
            path = sdir / fname
            if not path.is_file():
                continue
            if read_attrs(path).get("stage") != stage:
                continue
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


def write_telemetry_table(results: str | Path, md_path: str | Path, csv_path: str | Path) -> tuple[Path, Path]:
    """Write the telemetry table as Markdown and CSV (atomically). Returns the two paths."""
    rows = telemetry_rows(results)
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
