"""Shared helpers for the stitch / compare / report tests.

Until (and independently of) the model's infer stage, the evaluation stages are
tested on SYNTHETIC ``inferred.h5`` files built from the truth: the true object
patches at the test groups' positions (:func:`ptychopipe.physics.extract_patches`,
the simulator's own extraction), perturbed as a test needs (scale, constant phase,
shift, noise), written by :class:`ptychopipe.artifacts.Inferred`, with an honest
``predicted_over_measured_counts`` computed through the shared forward model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ptychopipe.artifacts import ComparisonSummary, Inferred, Normalized, Simulated, TrainHistory
from ptychopipe.config import CompareConfig, InferConfig, stage_config
from ptychopipe.physics import expected_counts, extract_patches
from ptychopipe.stages import compare, stitch
from pipeline_helpers import ci_params


def true_patches(obj: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """True object patches (M, n, n) complex128 at ``positions`` (M, 2) [x, y] px, extracted
    exactly as the simulator does (object edge-padded so any in-object position works)."""
    pad = 16
    return extract_patches(np.pad(obj.astype(np.complex128), pad, mode="edge"), positions + pad, n)


def write_synthetic_inferred(path: Path, data: Mapping, scenario: str, *, scale: float = 1.0,
                             phase_offset: float | np.ndarray = 0.0, shift_px: tuple[float, float] = (0.0, 0.0),
                             noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Write a synthetic ``inferred.h5`` for the test groups of ``data`` (a ``ci_data``
    entry of tests/conftest.py: paths "simulated", "normalized", ...; "params").

    Patches: scale · O_j(r + shift) · exp(i·phase_offset) (+ complex Gaussian noise of
    rms ``noise``), where O_j is the true patch and ``phase_offset`` (rad) is one number or
    one per test group, (B,); the recorded positions are the true
    ones, so ``shift_px`` (dx, dy) px is a placement error the evaluation must see.
    ``predicted_over_measured_counts`` = mean Σ λ̂ / mean Σ n over the test patterns,
    λ̂ from the shared forward model with the simulated P_abs. Returns the patches
    (B, C, N, N) complex128.
    """
    sim = Simulated.read(data["simulated"])
    norm = Normalized.read(data["normalized"])
    idx = norm.sets["test"].indices  # (B, C)
    b, c = idx.shape
    n = sim.probe.shape[0]
    pos = sim.positions[idx]  # (B, C, 2)
    src = pos.reshape(-1, 2) + np.asarray(shift_px, dtype=np.float64)
    phase = np.broadcast_to(np.asarray(phase_offset, dtype=np.float64), (b,))
    patches = true_patches(sim.object, src, n) * scale * np.exp(1j * np.repeat(phase, c))[:, None, None]
    if noise:
        rng = np.random.default_rng(seed)
        patches = patches + noise * (rng.standard_normal(patches.shape) + 1j * rng.standard_normal(patches.shape)) \
            / np.sqrt(2)
    probe = sim.probe.astype(np.complex128)
    lam = expected_counts((probe.real, probe.imag), (patches.real, patches.imag))
    measured = sim.counts[idx.ravel()].astype(np.float64)
    ratio = float(lam.sum(axis=(1, 2)).mean() / measured.sum(axis=(1, 2)).mean())
    nll = float(np.mean(lam - measured * np.log(np.maximum(lam, 1e-8))) / measured.mean())
    patches = patches.reshape(b, c, n, n)
    Inferred(np.abs(patches).astype(np.float32), np.angle(patches).astype(np.float32), pos, idx, sim.probe,
             lam.sum(axis=(1, 2)).reshape(b, c), measured.sum(axis=(1, 2)).reshape(b, c),
             {"predicted_over_measured_counts": ratio, "poisson_nll": nll, "mean_counts": norm.mean_counts}).write(
        path, scenario=scenario, config=InferConfig(batch_size=8), ratios={"predicted_over_measured_counts": ratio})
    return patches


def write_synthetic_train(path: Path, data: Mapping, scenario: str, *, epochs: int = 4,
                          nan_status: str = "ok") -> None:
    """Write a synthetic ``train.h5`` (history of ``epochs`` decreasing losses, TrainHistory format)."""
    e = np.arange(1, epochs + 1, dtype=np.float64)
    hist = {"loss": 1.0 / e, "val_loss": 1.2 / e, "learning_rate": 1e-3 * 0.5 ** (e - 1),
            "seconds": np.full(epochs, 0.5), "samples_per_second": np.full(epochs, 48.0)}
    attrs = {"train_seconds": 0.5 * epochs, "samples_per_second": 48.0, "epochs_run": epochs, "nan_status": nan_status}
    TrainHistory(hist, np.arange(8), np.arange(8, 10), attrs).write(
        path, scenario=scenario, config=stage_config(data["params"], "train"), ratios={})


def compare_config(**overrides) -> CompareConfig:
    """The shipped default compare config, with overrides."""
    base = stage_config(ci_params(), "compare")
    return CompareConfig(**{**base.__dict__, **overrides})


FIGURES = ("amplitude", "phase", "frc", "training")


def run_evaluation(directory: Path, data: Mapping, scenario: str, *, compare_overrides: Mapping | None = None,
                   **synthetic) -> tuple[dict, dict[str, Path]]:
    """Synthetic inferred.h5 (``**synthetic`` -> :func:`write_synthetic_inferred`) and train.h5,
    then the stitch and compare stages' own ``run``, all under ``directory``.

    Returns (comparison.json as read back, {name: path} of every file written).
    """
    d = Path(directory)
    paths = {"inferred": d / "inferred.h5", "train": d / "train.h5", "stitched": d / "stitched.h5",
             "comparison": d / "comparison.h5", "json": d / "comparison.json",
             **{f: d / "figures" / f"{f}.png" for f in FIGURES}}
    write_synthetic_inferred(paths["inferred"], data, scenario, **synthetic)
    write_synthetic_train(paths["train"], data, scenario)
    stitch.run(stage_config(data["params"], "stitch"), scenario, inferred=paths["inferred"], out=paths["stitched"])
    cfg = compare_config(**(compare_overrides or {}))
    compare.run(cfg, scenario, simulated=data["simulated"], grouped=data["grouped"], normalized=data["normalized"],
                inferred=paths["inferred"], stitched=paths["stitched"], train=paths["train"],
                out=paths["comparison"], json=paths["json"], amplitude_png=paths["amplitude"],
                phase_png=paths["phase"], frc_png=paths["frc"], training_png=paths["training"])
    return ComparisonSummary.read(paths["json"]), paths
