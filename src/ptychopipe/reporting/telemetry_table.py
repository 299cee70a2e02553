"""The telemetry table (``ptychopipe telemetry``, rule ``telemetry``): one row per scenario,
stage and array, from the statistics each stage artifact carries in its ``telemetry/`` group,
with the ratio of each amplitude-chain entry to the previous one. It reads the artifacts'
telemetry only, never their arrays; the ratio chain the compare stage checks against its
contracts is :mod:`ptychopipe.evaluation.chain`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from ..artifacts import ArtifactError, not_a_file, read_attrs, read_telemetry, write_text_atomic
from ..stages import telemetry_files
from .common import write_csv

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
