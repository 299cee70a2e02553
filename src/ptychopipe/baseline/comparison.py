"""The network against the iterative reference, for one scenario (``ptychopipe baseline-compare``).

What belongs here: :func:`compare_run`, which scores the baseline's snapshots as the
compare stage scores the network (same mask: the network's stitched coverage; same
metrics: :func:`ptychopipe.evaluation.evaluate`) and writes ``baseline_comparison.json``
(network vs iterative amplitude/phase Pearson r, SSIM, amplitude bias, and wall times:
network inference; iterative time to its final quality and to the network's quality), its
figure, and its reader. The report's section that tabulates these files belongs to
:mod:`ptychopipe.reporting.baseline`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..artifacts import (BaselineResult, ComparisonSummary, Inferred, Simulated, StitchedCanvas, json_safe,
                         read_json_object, save_figure, write_json_atomic)
from ..config import CompareConfig
from .ptychi import BaselineError

#: Iterative "reached its final quality": combined quality within this of the final value.
FINAL_QUALITY_TOLERANCE = 0.01


def time_to_reach(seconds: np.ndarray, quality: np.ndarray, target: float) -> float | None:
    """First snapshot time (s) at which ``quality`` ≥ ``target`` (higher = better); None if never."""
    hit = np.flatnonzero(np.asarray(quality) >= target)
    return float(seconds[hit[0]]) if hit.size else None


def benchmark_seconds(path: str | Path | None) -> float | None:
    """Wall seconds (column ``s``) of a Snakemake benchmark TSV, or None when absent."""
    if not path or not Path(path).is_file():
        return None
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2:
        return None
    head, row = lines[0].split("\t"), lines[1].split("\t")
    return float(row[head.index("s")]) if "s" in head else None


def _quality(m: Mapping[str, Any]) -> float:
    """Combined object-space quality: mean of amplitude and phase Pearson r."""
    return 0.5 * (float(m["amplitude"]["pearson_r"]) + float(m["phase"]["pearson_r"]))


def compare_run(cfg: CompareConfig, scenario: str, *, baseline: str | Path, simulated: str | Path,
                stitched: str | Path, inferred: str | Path, comparison: str | Path, out: str | Path,
                infer_benchmark: str | Path | None = None, figure: str | Path | None = None) -> dict[str, Any]:
    """``ptychopipe baseline-compare``: PINN vs iterative for one scenario -> ``baseline_comparison.json``.

    Object space (when simulated.h5 has a true object): each snapshot is scored with
    :func:`ptychopipe.evaluation.evaluate` on the stitched canvas, with the PINN's coverage (the
    same mask as the PINN's scores). Quality q = mean of amplitude and phase Pearson r.
    Data space (always): Poisson deviance per pattern / the normalisation's mean training
    counts, averaged over the test group members (the PINN's ``poisson_nll`` definition),
    and predicted / measured counts. Times: PINN inference = the infer job's wall time
    (Snakemake benchmark) when given; iterative: total reconstruction time, the time to its
    final quality (first snapshot with q within :data:`FINAL_QUALITY_TOLERANCE` of the final
    q; data space: NLL within 1 %), and to the PINN's quality (first snapshot with q ≥ the
    PINN's q; data space: NLL ≤ the PINN's), None if never reached.
    """
    from ..evaluation import evaluate

    base = BaselineResult.read(baseline)
    st = StitchedCanvas.read(stitched)
    inf = Inferred.read(inferred)
    pinn = ComparisonSummary.read(comparison)
    if base.object.shape != st.object.shape or base.origin != (st.origin_x, st.origin_y):
        raise BaselineError(f"{baseline}: object/origin: canvas {base.object.shape} at {base.origin} differs from "
                            f"{stitched} ({st.object.shape} at {(st.origin_x, st.origin_y)}); expected the same "
                            "test patterns (re-run the baseline)")
    truth = Simulated.read_truth(simulated)
    mean_counts = float(inf.attrs["mean_counts"])
    pos = {int(v): i for i, v in enumerate(base.indices)}
    missing = [int(v) for v in np.unique(inf.indices) if int(v) not in pos]
    if missing:
        raise BaselineError(f"{baseline}: indices: {len(missing)} test patterns of {inferred} missing; expected the "
                            "same test patterns (re-run the baseline)")
    members = np.array([pos[int(v)] for v in inf.indices.ravel()], dtype=np.int64)
    nll = base.deviance[:, members].mean(axis=1) / mean_counts
    ratio = base.predicted[:, members].mean(axis=1) / base.measured[members].mean()
    pinn_nll = float(inf.attrs["poisson_nll"])
    seconds = base.seconds
    snaps: list[dict[str, Any]] = []
    q = None
    if truth is not None:
        evals = [evaluate(o, st.coverage, truth, st.origin_x, st.origin_y, cfg) for o in base.snapshot_objects]
        q = np.array([_quality(e.metrics) for e in evals])
        pinn_q = _quality(pinn["metrics"]) if pinn["metrics"]["amplitude"]["pearson_r"] is not None else None
        final = evals[-1]
        iterative = {"amplitude": {k: final.metrics["amplitude"][k] for k in ("pearson_r", "ssim", "rmse")},
                     "phase": {k: final.metrics["phase"][k] for k in ("pearson_r", "ssim", "rmse")},
                     "amplitude_bias": final.amplitude_bias, "phase_offset_rad": final.phase_offset_rad,
                     "n_pixels": int(final.mask.sum())}
        t_final = time_to_reach(seconds, q, float(q[-1]) - FINAL_QUALITY_TOLERANCE)
        t_pinn = time_to_reach(seconds, q, pinn_q) if pinn_q is not None else None
        quality = {"measure": "mean of amplitude and phase Pearson r vs truth", "pinn": pinn_q,
                   "iterative_final": float(q[-1])}
    else:
        iterative = {"amplitude": None, "phase": None, "amplitude_bias": None}
        t_final = time_to_reach(seconds, -nll, -float(nll[-1]) * 1.01)
        t_pinn = time_to_reach(seconds, -nll, -pinn_nll)
        quality = {"measure": "Poisson NLL of the test data (lower = better)", "pinn": pinn_nll,
                   "iterative_final": float(nll[-1])}
    for i in range(len(seconds)):
        snaps.append({"epoch": int(base.epochs[i]), "seconds": float(seconds[i]), "pty_chi_loss": float(base.loss[i]),
                      "poisson_nll": float(nll[i]), "predicted_over_measured_counts": float(ratio[i]),
                      "quality": None if q is None else float(q[i])})
    m = pinn["metrics"]
    result = {
        "scenario": scenario, "has_truth": truth is not None, "engine": str(base.attrs.get("engine", "")),
        "epochs": int(base.attrs.get("epochs", len(seconds))),
        "pinn": {"amplitude": {k: m["amplitude"][k] for k in ("pearson_r", "ssim", "rmse")},
                 "phase": {k: m["phase"][k] for k in ("pearson_r", "ssim", "rmse")},
                 "amplitude_bias": pinn["amplitude_bias"], "poisson_nll": pinn_nll,
                 "predicted_over_measured_counts": float(inf.attrs.get("predicted_over_measured_counts", float("nan"))),
                 "inference_seconds": benchmark_seconds(infer_benchmark),
                 "train_seconds": pinn["training"].get("train_seconds")},
        "iterative": {**iterative, "poisson_nll": float(nll[-1]), "predicted_over_measured_counts": float(ratio[-1]),
                      "seconds_total": float(seconds[-1]), "seconds_to_final_quality": t_final,
                      "seconds_to_pinn_quality": t_pinn, "setup_seconds": float(base.attrs.get("setup_seconds", 0.0)),
                      "versions": json.loads(base.attrs["versions"]) if "versions" in base.attrs else {}},
        "quality": quality, "snapshots": snaps,
    }
    if figure is not None:
        plot_comparison(result, figure)
        result["figure"] = str(figure)
    write_json_atomic(out, json_safe(result))
    return result


def plot_comparison(result: Mapping[str, Any], path: str | Path) -> None:
    """Quality (or NLL) of the iterative snapshots against reconstruction time, with the PINN's
    level and its inference time marked (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snaps = result["snapshots"]
    t = [s["seconds"] for s in snaps]
    truth = result["has_truth"]
    y = [s["quality"] if truth else s["poisson_nll"] for s in snaps]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    ax.plot(t, y, "-o", ms=3, label=f"pty-chi {result['engine']} (snapshots)")
    pinn_level = result["quality"]["pinn"]
    if pinn_level is not None:
        ax.axhline(pinn_level, color="C1", ls="--", label="PINN")
    inf_s = result["pinn"]["inference_seconds"]
    if inf_s is not None:
        ax.axvline(inf_s, color="C1", ls=":", label=f"PINN inference job {inf_s:.1f} s")
    ax.set_xlabel("iterative reconstruction time (s)")
    ax.set_ylabel(result["quality"]["measure"])
    if not truth and all(v is not None and v > 0 for v in y):
        ax.set_yscale("log")
    ax.set_title(f"{result['scenario']}: PINN vs iterative")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def read_baseline_comparison(path: str | Path) -> dict[str, Any]:
    """Load a ``baseline_comparison.json`` (checks the top-level keys)."""
    return read_json_object(path, "the baseline-compare JSON",
                            ("scenario", "has_truth", "engine", "pinn", "iterative", "quality", "snapshots"))
