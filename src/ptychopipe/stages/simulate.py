"""simulate stage: simulate the configured scenario and write ``simulated.h5``.

What belongs here: :func:`run`, which calls :func:`ptychopipe.simulate.simulate`, checks
its invariants and writes the :class:`~ptychopipe.artifacts.Simulated` artifact with its
provenance and telemetry. What does not: the object, probe, scan and counts themselves
(:mod:`ptychopipe.simulate`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import Simulated, file_sha256
from ..config import SimulateConfig
from ..simulate import STAGE, check_invariants, simulate


def run(cfg: SimulateConfig, scenario: str, out: str | Path) -> None:
    """Stage entry point: simulate and write ``simulated.h5`` (see docs/artifacts.md)."""
    sim = simulate(cfg)
    inv = check_invariants(cfg, sim)
    measured = float(sim["counts"].sum(axis=(1, 2), dtype=np.float64).mean())
    attrs = {
        "probe_scale": sim["probe_scale"],
        "probe_source": cfg.probe.file or "ideal",
        "probe_sha256": file_sha256(cfg.probe.file) if cfg.probe.file else "",
        "nphotons": cfg.nphotons,
        "mean_measured_counts": float(measured),
        "N": cfg.N,
    }
    ratios = {"parseval": inv["parseval"], "dose": inv["dose"],
              "measured_over_expected": float(measured / cfg.nphotons)}
    Simulated.from_counts(object=sim["object"], probe=sim["probe"], positions=sim["positions"], counts=sim["counts"],
                          attrs=attrs).write(out, stage=STAGE, scenario=scenario, config=cfg, ratios=ratios)
