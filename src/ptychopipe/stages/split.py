"""split stage: split ``simulated.h5``'s scan positions into a training and a test region
and write ``split.h5``.

What belongs here: :func:`run`, which reads the positions, refuses an empty split and
writes the :class:`~ptychopipe.artifacts.Split` artifact. What does not: the split itself
(:func:`ptychopipe.grouping.split_by_y`).
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import Simulated, Split
from ..config import SplitConfig
from ..grouping import GroupingError, split_by_y


def run(cfg: SplitConfig, scenario: str, simulated: str | Path, out: str | Path) -> None:
    """Stage entry point: write ``split.h5``."""
    sim = Simulated.read(simulated)
    train, test, y_split = split_by_y(sim.positions, cfg.fraction)
    for name, idx in (("train", train), ("test", test)):
        if idx.size == 0:
            raise GroupingError(f"{simulated}: positions: [split] {name}: empty split (fraction {cfg.fraction}, "
                                f"{len(sim.positions)} positions); expected at least one pattern")
    m = len(sim.positions)
    Split(train, test, sim.positions[train], sim.positions[test], y_split, m).write(
        out, scenario=scenario, config=cfg, ratios={"train_fraction": len(train) / m, "test_fraction": len(test) / m})
