"""The report's "network vs iterative reference" section: one table row per
``baseline_comparison.json`` (written by ``ptychopipe baseline-compare``,
:func:`ptychopipe.baseline.compare_run`) and a link to each figure."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..baseline.comparison import FINAL_QUALITY_TOLERANCE, read_baseline_comparison


def _one(v: Any, fmt: str = "{:.4g}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def _pair(a: Any, b: Any, fmt: str = "{:.4g}") -> str:
    return f"{_one(a, fmt)} / {_one(b, fmt)}"


def baseline_section(paths: Any, md_dir: str | Path) -> list[str]:
    """Markdown lines of the report's "PINN vs iterative" section, one table row per
    baseline_comparison.json (sorted by scenario) and a link to each figure."""
    rows = sorted((read_baseline_comparison(p) for p in paths), key=lambda d: str(d["scenario"]))
    lines = ["", "## PINN vs iterative reference (pty-chi)", "",
             "Same test patterns, same probe, fixed positions; both scored on the same pixels by the same "
             "functions (object space against the true object; data space by the Poisson NLL of the test data "
             "under the pipeline's forward model). Cells are PINN / iterative. Times: PINN training and the "
             "infer job's wall time (Snakemake benchmark: process start, model load and prediction); iterative: "
             "pty-chi's epochs only (task setup excluded), in total, until its quality first came within "
             f"{FINAL_QUALITY_TOLERANCE} of its final value, and until it first matched the PINN's quality "
             "(quality = mean of amplitude and phase Pearson r; without a true object, the Poisson NLL; "
             "n/a = never, at the snapshot resolution).", "",
             "| scenario | engine (epochs) | amp r | amp SSIM | phase r | phase SSIM | amp bias | Poisson NLL | "
             "PINN train s | PINN infer s | iterative s | iter. s to final | iter. s to PINN's |",
             "|" + "---|" * 13]
    for d in rows:
        p, it = d["pinn"], d["iterative"]

        def met(part: str, key: str) -> str:
            a = (p.get(part) or {}).get(key) if d["has_truth"] else None
            b = (it.get(part) or {}).get(key) if d["has_truth"] else None
            return _pair(a, b)

        lines.append(
            f"| {d['scenario']} | {d['engine']} ({d['epochs']}) | {met('amplitude', 'pearson_r')} | "
            f"{met('amplitude', 'ssim')} | {met('phase', 'pearson_r')} | {met('phase', 'ssim')} | "
            f"{_pair(p.get('amplitude_bias'), it.get('amplitude_bias'))} | "
            f"{_pair(p.get('poisson_nll'), it.get('poisson_nll'))} | "
            f"{_one(p.get('train_seconds'), '{:.1f}')} | "
            f"{_one(p.get('inference_seconds'), '{:.1f}')} | "
            f"{_one(it.get('seconds_total'), '{:.2f}')} | "
            f"{_one(it.get('seconds_to_final_quality'), '{:.2f}')} | "
            f"{_one(it.get('seconds_to_pinn_quality'), '{:.2f}')} |")
    for d in rows:
        if not d["has_truth"]:
            lines += ["", f"{d['scenario']}: no true object, so the comparison is in data space only "
                          "(Poisson NLL, predicted/measured counts)."]
    figs = [(d["scenario"], d.get("figure")) for d in rows if d.get("figure")]
    if figs:
        lines += ["", " ".join(f"[{s} PINN vs iterative]({os.path.relpath(f, md_dir)})" for s, f in figs)]
    return lines
