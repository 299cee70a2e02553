"""normalize stage: scale the grouped amplitudes to network inputs and write ``normalized.h5``.

What belongs here: :func:`run`, which reads ``simulated.h5``, ``split.h5`` and
``grouped.h5`` and writes the :class:`~ptychopipe.artifacts.Normalized` artifact. What
does not: the input scale, the amplitude estimate and the checks of the inputs
(:func:`ptychopipe.normalize.normalize`).
"""

from __future__ import annotations

from pathlib import Path

from ..artifacts import Grouped, Simulated, Split
from ..config import NormalizeConfig
from ..normalize import normalize


def run(cfg: NormalizeConfig, scenario: str, simulated: str | Path, split: str | Path,
        grouped: str | Path, out: str | Path) -> None:
    """Stage entry point: write ``normalized.h5`` (the training-ready dataset)."""
    norm, ratios = normalize(cfg, Simulated.read(simulated), Split.read(split), Grouped.read(grouped),
                             simulated=str(simulated), split=str(split), grouped=str(grouped))
    norm.write(out, scenario=scenario, config=cfg, ratios=ratios)
