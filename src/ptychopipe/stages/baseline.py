"""baseline stage: the iterative reference reconstruction of the test patterns with pty-chi.

Reads the unique patterns of the test groups (grouped.h5 ``test/indices``) from
simulated.h5, reconstructs them with the known probe and fixed positions
(:func:`ptychopipe.baseline.reconstruction.reconstruct`), and writes ``baseline.h5``
(:class:`ptychopipe.artifacts.BaselineResult`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import Grouped, Simulated, StitchedCanvas, check_indices
from ..baseline.ptychi import BaselineError, import_ptychi
from ..baseline.reconstruction import STAGE, reconstruct
from ..config import BaselineConfig


def read_test_patterns(simulated: str | Path, grouped: str | Path
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The unique test patterns of grouped.h5, from simulated.h5: (indices (M,) int64 ascending,
    counts (M, N, N) float32 [counts], positions (M, 2) float64 [x, y] px, probe P_abs (N, N)
    complex64). One-line errors for an empty test split or indices outside simulated.h5."""
    sim = Simulated.read(simulated)
    idx = np.unique(Grouped.read_indices(grouped, "test").ravel()).astype(np.int64)
    if idx.size == 0:
        raise BaselineError(f"{grouped}: test/indices: empty; expected the test patterns")
    check_indices(idx, len(sim.counts), f"{grouped}: test/indices", simulated)
    return idx, sim.counts[idx], sim.positions[idx], sim.probe


def run(cfg: BaselineConfig, scenario: str, simulated: str | Path, grouped: str | Path, out: str | Path,
        stitched: str | Path | None = None) -> None:
    """Stage entry point: reconstruct the test patterns with pty-chi, write ``baseline.h5``.
    ``stitched``: the network's stitched.h5, the starting object when ``cfg.initial`` is
    "reconstruction" (:func:`ptychopipe.baseline.reconstruction.initial_object`)."""
    if cfg.initial == "reconstruction" and not stitched:
        raise BaselineError("baseline.initial: reconstruction needs --stitched (the network's stitched.h5)")
    import_ptychi()  # one line, before reading anything, when the optional extra is missing
    idx, counts, positions, probe = read_test_patterns(simulated, grouped)
    start = StitchedCanvas.read(stitched) if cfg.initial == "reconstruction" else None
    result, ratios = reconstruct(cfg, idx, counts, positions, probe, start, scenario)
    result.write(out, scenario=scenario, config=cfg, ratios=ratios)
    elapsed = float(result.seconds[-1])
    print(f"[{STAGE}] {scenario}: {elapsed:.2f} s for {cfg.epochs} epochs ({elapsed / cfg.epochs:.3f} s/epoch)",
          flush=True)
