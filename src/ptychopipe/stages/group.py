"""group stage: group overlapping neighbouring patterns of each split and write ``grouped.h5``.

What belongs here: :func:`run`, which reads ``simulated.h5`` and ``split.h5`` and writes
the :class:`~ptychopipe.artifacts.Grouped` artifact. What does not: how groups are drawn
and laid out (:func:`ptychopipe.grouping.group_splits`).
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import Grouped, Simulated, Split
from ..config import GroupConfig
from ..grouping import group_splits


def run(cfg: GroupConfig, scenario: str, simulated: str | Path, split: str | Path, out: str | Path) -> None:
    """Stage entry point: write ``grouped.h5`` with train/ and test/ groups."""
    sets, ratios = group_splits(Simulated.read(simulated), Split.read(split), cfg, source=str(split))
    Grouped(sets, cfg.gridsize).write(out, scenario=scenario, config=cfg, ratios=ratios)
