"""The normalize stage's computation: the input scale a and the amplitude estimate ā
(docs/design.md, 'Dose and normalisation'); the stage itself is
:mod:`ptychopipe.stages.normalize`.

Both are computed on the training split only and reused unchanged for the test
split and at inference:

- a = sqrt((N/2)² / mean_j Σ n_j): network input X = a·sqrt(n), so a pattern's
  input power is about (N/2)² whatever the dose;
- ā = sqrt(mean_j Σ n_j / Σ|P_abs|²): by Parseval, the mean object amplitude
  (rms) estimated from the data alone; the model's amplitude output starts there.
"""

from __future__ import annotations

import numpy as np

from .artifacts import ArtifactError, Grouped, GroupSet, Normalized, Simulated, Split, check_indices
from .config import NormalizeConfig
from .telemetry import check_close, check_finite

STAGE = "normalize"


def input_scale(counts: np.ndarray, n: int) -> float:
    """a = sqrt((N/2)² / mean_j Σ n_j); counts (M, N, N) of the training split's patterns."""
    mean_total = float(counts.sum(axis=(-2, -1), dtype=np.float64).mean())
    if not mean_total > 0:
        raise ValueError(f"[{STAGE}] counts: mean counts per pattern is {mean_total}; expected > 0")
    return float(np.sqrt((n / 2) ** 2 / mean_total))


def amplitude_estimate(counts: np.ndarray, probe: np.ndarray) -> float:
    """ā = sqrt(mean_j Σ n_j / Σ|P_abs|²) [object amplitude]; counts (M, N, N), probe (N, N)."""
    mean_total = counts.sum(axis=(-2, -1), dtype=np.float64).mean()
    return float(np.sqrt(mean_total / np.sum(np.abs(probe.astype(np.complex128)) ** 2)))


def normalize(cfg: NormalizeConfig, sim: Simulated, sp: Split, groups: Grouped, *, simulated: str = "simulated.h5",
              split: str = "split.h5", grouped: str = "grouped.h5") -> tuple[Normalized, dict[str, float]]:
    """The training-ready dataset: a and ā from the training split's counts, network inputs
    a·sqrt(n) (B, N, N, C) float32 and the measured counts (B, N, N, C) float32 of every
    group. Returns (the content of ``normalized.h5``, its telemetry ratios). ``simulated``,
    ``split``, ``grouped``: the three inputs' file names for the one-line errors (probe not
    N x N, no training counts, indices of another scenario, amplitudes that are not sqrt of
    the counts)."""
    if sim.probe.shape[0] != cfg.N:
        raise ArtifactError(f"{simulated}: probe: expected {cfg.N}x{cfg.N} (config N), got {sim.probe.shape}")
    check_indices(sp.train_indices, len(sim.counts), f"{split}: train/indices", simulated)
    train_counts = sim.counts[sp.train_indices]
    if not float(train_counts.sum(dtype=np.float64)) > 0:
        raise ArtifactError(f"{simulated}: counts: the {len(train_counts)} training patterns hold no counts; "
                            "expected a mean count per pattern > 0")
    a = input_scale(train_counts, cfg.N)
    abar = amplitude_estimate(train_counts, sim.probe)
    mean_counts = float(train_counts.sum(axis=(1, 2), dtype=np.float64).mean())
    sets: dict[str, GroupSet] = {}
    ratios: dict[str, float] = {}
    for name, g in groups.sets.items():
        x = (a * g.amplitude).astype(np.float32)
        check_finite(STAGE, f"{name}/inputs", x)
        # the measured counts themselves (squaring sqrt(n) back in float32 is off by up to
        # a few counts at 1e7), members on the last axis like the inputs
        check_indices(g.indices, len(sim.counts), f"{grouped}: {name}/indices", simulated)
        counts = np.moveaxis(sim.counts[g.indices], 1, -1).astype(np.float32)
        check_close(STAGE, f"{grouped}: {name}/amplitude", float(g.amplitude.mean(dtype=np.float64)),
                    float(np.sqrt(counts, dtype=np.float64).mean()), 1e-5,
                    f"mean amplitude, against sqrt of {simulated}'s counts of the same patterns")
        ratios[f"{name}_normalized_over_raw"] = float(x.mean() / g.amplitude.mean())
        sets[name] = GroupSet(g.indices, g.centres, g.offsets, x, counts)
    if sim.object is not None:  # diagnostic only (uses the truth): ā against the object's rms amplitude
        ratios["amplitude_estimate_over_true_rms"] = abar / float(np.sqrt(np.mean(np.abs(sim.object) ** 2)))
    return (Normalized(sets, sim.probe, a, abar, mean_counts, groups.gridsize, {"N": cfg.N}),
            {**ratios, "input_scale": a})
