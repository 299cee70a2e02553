"""compare stage: score the stitched reconstruction against the true object (or, without
one, the predicted against the measured diffraction) and write comparison.h5,
comparison.json and four figures.

What belongs here: :func:`run` (and :func:`run_data_only`, its course without a true
object), which read the stage's input artifacts, have them scored, plot the figures and
write the :class:`~ptychopipe.artifacts.Comparison` and
:class:`~ptychopipe.artifacts.ComparisonSummary` artifacts. What does not: the scoring,
the ratio chain, the NaN status and the figures themselves (:mod:`ptychopipe.evaluation`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import (ArtifactError, Comparison, ComparisonSummary, Simulated, StitchedCanvas, TrainHistory,
                         json_safe, read_attrs)
from ..config import CompareConfig, config_hash, to_dict
from ..evaluation.alignment import evaluation_mask
from ..evaluation.chain import chain_entries, nan_status, ratio_chain, training_summary
from ..evaluation.dataspace import data_space_metrics
from ..evaluation.figures import (
    plot_frc,
    plot_reconstruction,
    plot_rings,
    plot_training,
    plot_truth_recon_error,
)
from ..evaluation.score import evaluate

STAGE = "compare"


def model_scenario(inferred: str | Path, scenario: str) -> str:
    """The scenario whose trained model reconstructed ``inferred`` (infer.model_from), as
    inferred.h5 records it (``scenario`` itself for files that predate the record)."""
    return str(read_attrs(inferred).get("model_scenario", scenario))


def _training_status_figures(hist: Any, inferred: str | Path, stitched: str | Path, amplitude_png: str | Path,
                             phase_png: str | Path, frc_png: str | Path, training_png: str | Path
                             ) -> tuple[dict[str, Any], str, dict[str, str | Path]]:
    """(training summary, NaN status, {figure: path}) with the figures' folders made."""
    training = training_summary(hist)
    status = nan_status(training["nan_status"], {"inferred": inferred, "stitched": stitched})
    figures = {"amplitude": amplitude_png, "phase": phase_png, "frc": frc_png, "training": training_png}
    for path in figures.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return training, status, figures


def run(cfg: CompareConfig, scenario: str, *, simulated: str | Path, grouped: str | Path,
        normalized: str | Path, inferred: str | Path, stitched: str | Path, train: str | Path,
        out: str | Path, json: str | Path, amplitude_png: str | Path, phase_png: str | Path,
        frc_png: str | Path, training_png: str | Path) -> None:
    """Stage entry point: write comparison.h5, comparison.json and four PNG figures."""
    st = StitchedCanvas.read(stitched)
    truth = Simulated.read_truth(simulated)
    if truth is None:  # imported data without a true object: data-space metrics only
        return run_data_only(cfg, scenario, st=st, simulated=simulated, grouped=grouped, normalized=normalized,
                             inferred=inferred, stitched=stitched, train=train, out=out, json=json,
                             amplitude_png=amplitude_png, phase_png=phase_png, frc_png=frc_png,
                             training_png=training_png)
    hist = TrainHistory.read(train)
    try:
        ev = evaluate(st.object, st.coverage, truth, st.origin_x, st.origin_y, cfg)
    except ValueError as exc:  # the canvas does not meet the object, or leaves nothing to score
        raise ArtifactError(f"{stitched} (canvas {st.object.shape[0]}x{st.object.shape[1]} at object pixel "
                            f"x={st.origin_x}, y={st.origin_y}) against {simulated} (object "
                            f"{truth.shape[0]}x{truth.shape[1]}): {exc}") from None
    links, first = ratio_chain(chain_entries(simulated, grouped, normalized, inferred, stitched,
                                             ev.amplitude_bias, ev.metrics["phase"]["ls_scale"]),
                               cfg.ratio_tolerance)
    training, status, figures = _training_status_figures(hist, inferred, stitched, amplitude_png, phase_png, frc_png,
                                                         training_png)
    phase_err = np.angle(np.exp(1j * (ev.phase_recon - ev.phase_truth)))
    plot_truth_recon_error(ev.amplitude_truth, ev.amplitude_recon, ev.mask, amplitude_png,
                           f"{scenario}: amplitude (bias {ev.amplitude_bias:.3f}, "
                           f"r {ev.metrics['amplitude']['pearson_r']:.3f})", "object amplitude")
    plot_truth_recon_error(ev.phase_truth, ev.phase_recon, ev.mask, phase_png,
                           f"{scenario}: phase (global offset {ev.phase_offset_rad:+.3f} rad removed, "
                           f"r {ev.metrics['phase']['pearson_r']:.3f})", "rad", error=phase_err)
    plot_frc(ev.frc, frc_png, f"{scenario}: Fourier ring correlation", cfg.frc_threshold)
    plot_training(hist.history, training_png, f"{scenario}: training ({training['epochs_run']} epochs, "
                                              f"{training['train_seconds']:.1f} s)")
    summary = {
        "scenario": scenario,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "n_pixels": int(ev.mask.sum()),
        "coverage_median": ev.coverage_median,
        "origin": [st.origin_x, st.origin_y],
        "phase_offset_rad": ev.phase_offset_rad,
        "registration": {"enabled": cfg.register, "shift_px": list(ev.shift_px)},
        "amplitude_bias": ev.amplitude_bias,
        "metrics": ev.metrics,
        "frc_threshold": cfg.frc_threshold,
        "chain": [asdict(link) for link in links],
        "first_broken": first,
        "training": training,
        "model_scenario": model_scenario(inferred, scenario),
        "nan_status": status,
        "figures": {k: str(v) for k, v in figures.items()},
    }
    mask = ev.mask
    images = {
        "mask": mask.astype(np.uint8),
        "amplitude/truth": ev.amplitude_truth.astype(np.float32),
        "amplitude/reconstruction": ev.amplitude_recon.astype(np.float32),
        "amplitude/error": np.where(mask, ev.amplitude_recon - ev.amplitude_truth, 0).astype(np.float32),
        "phase/truth": ev.phase_truth.astype(np.float32),
        "phase/reconstruction": ev.phase_recon.astype(np.float32),
        "phase/error": np.where(mask, phase_err, 0).astype(np.float32),
        "frc/frequency": ev.frc["amplitude"].frequency,
        "frc/amplitude": ev.frc["amplitude"].frc,
        "frc/phase": ev.frc["phase"].frc,
        "frc/threshold": ev.frc["amplitude"].threshold,
        "frc/n_pixels": ev.frc["amplitude"].n_pixels,
    }
    attrs = {"origin_x": st.origin_x, "origin_y": st.origin_y, "phase_offset_rad": ev.phase_offset_rad,
             "amplitude_bias": ev.amplitude_bias, "first_broken": first or "",
             "nan_status": status, "summary_json": json_safe(summary)}
    Comparison(images, attrs).write(
        out, scenario=scenario, config=cfg,
        ratios={"amplitude_bias": ev.amplitude_bias, **{f"chain_{l.stage}": l.relative for l in links}})
    ComparisonSummary.write(json, summary)
    m = ev.metrics
    print(f"[{STAGE}] {scenario}: {summary['n_pixels']} px evaluated; amplitude r {m['amplitude']['pearson_r']:.4f} "
          f"SSIM {m['amplitude']['ssim']:.4f} bias {ev.amplitude_bias:.4f}; phase r {m['phase']['pearson_r']:.4f} "
          f"SSIM {m['phase']['ssim']:.4f}; first broken: {first or 'none'}; NaN status: {status}; model of "
          f"{summary['model_scenario']}", flush=True)


def run_data_only(cfg: CompareConfig, scenario: str, *, st: Any, simulated: str | Path, grouped: str | Path,
                  normalized: str | Path, inferred: str | Path, stitched: str | Path, train: str | Path,
                  out: str | Path, json: str | Path, amplitude_png: str | Path, phase_png: str | Path,
                  frc_png: str | Path, training_png: str | Path) -> None:
    """compare for imported data without a true object (simulated.h5 ``has_truth`` = 0).

    Writes the same files as :func:`run`; comparison.json has every object-space metric null
    (metrics.*, amplitude_bias, phase_offset_rad), ``has_truth`` false and
    ``data_metrics`` (:func:`data_space_metrics`). The ratio chain keeps the links that need
    no truth (grouped, normalized, prediction, stitched). Figures: the reconstruction and the coverage
    (amplitude, phase), measured vs predicted counts per detector ring (in the FRC's place),
    training curves."""
    hist = TrainHistory.read(train)
    covered = st.coverage > 0
    try:
        mask, med = evaluation_mask(st.coverage, covered, cfg.coverage_threshold)
    except ValueError as exc:
        raise ArtifactError(f"{stitched}: {exc}") from None
    metrics, arrays = data_space_metrics(inferred, simulated)
    links, first = ratio_chain(chain_entries(simulated, grouped, normalized, inferred, stitched, None),
                               cfg.ratio_tolerance)
    training, status, figures = _training_status_figures(hist, inferred, stitched, amplitude_png, phase_png, frc_png,
                                                         training_png)
    amp, ph = np.abs(st.object).astype(np.float64), np.angle(st.object).astype(np.float64)
    plot_reconstruction(amp, st.coverage, mask, amplitude_png, f"{scenario}: amplitude (no true object; "
                        f"Poisson NLL {metrics['poisson_nll']:.4g})", "object amplitude")
    plot_reconstruction(ph, st.coverage, mask, phase_png, f"{scenario}: phase (no true object)", "rad")
    plot_rings(arrays, frc_png, f"{scenario}: data space (no true object, so no FRC): measured vs predicted counts")
    plot_training(hist.history, training_png, f"{scenario}: training ({training['epochs_run']} epochs, "
                                              f"{training['train_seconds']:.1f} s)")
    from ..evaluation.metrics import METRIC_KEYS

    summary = {
        "scenario": scenario, "config": to_dict(cfg), "config_hash": config_hash(cfg),
        "has_truth": False, "n_pixels": int(mask.sum()), "coverage_median": med,
        "origin": [st.origin_x, st.origin_y], "phase_offset_rad": None,
        "registration": {"enabled": cfg.register, "shift_px": None, "note": "no true object to register to"},
        "amplitude_bias": None, "metrics": {k: {m: None for m in METRIC_KEYS} for k in ("amplitude", "phase")},
        "data_metrics": metrics, "frc_threshold": cfg.frc_threshold,
        "chain": [asdict(link) for link in links], "first_broken": first, "training": training,
        "model_scenario": model_scenario(inferred, scenario),
        "nan_status": status, "figures": {k: str(v) for k, v in figures.items()},
    }
    images = {
        "mask": mask.astype(np.uint8),
        "amplitude/reconstruction": amp.astype(np.float32),
        "phase/reconstruction": ph.astype(np.float32),
        **{f"data/{k}": arrays[k] for k in ("ring_frequency", "measured_ring_mean", "predicted_ring_mean")},
    }
    attrs = {"origin_x": st.origin_x, "origin_y": st.origin_y, "has_truth": 0, "first_broken": first or "",
             "nan_status": status, "summary_json": json_safe(summary)}
    Comparison(images, attrs).write(
        out, scenario=scenario, config=cfg,
        ratios={"poisson_nll": metrics["poisson_nll"], **{f"chain_{link.stage}": link.relative for link in links}})
    ComparisonSummary.write(json, summary)
    print(f"[{STAGE}] {scenario}: no true object: data-space metrics only; Poisson NLL "
          f"{metrics['poisson_nll']:.6g}, predicted/measured counts {metrics['predicted_over_measured_counts']:.5f}; "
          f"first broken: {first or 'none'}; NaN status: {status}", flush=True)
