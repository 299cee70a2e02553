"""ingest stage: import ``source.file`` and write ``simulated.h5`` in place of simulate.

What belongs here: :func:`run`, which reads the source file, has it checked, writes the
:class:`~ptychopipe.artifacts.Simulated` artifact and prints the import's one-line log and
its warnings. What does not: the format readers (:mod:`ptychopipe.formats`) and the
convention and dose checks (:mod:`ptychopipe.ingest`).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..artifacts import Simulated
from ..config import IngestConfig
from ..ingest import STAGE, check, dose_warning, import_attrs, load


def run(cfg: IngestConfig, scenario: str, out: str | Path) -> None:
    """Stage entry point: import ``cfg.file`` and write ``simulated.h5`` (docs/artifacts.md)."""
    t0 = time.perf_counter()
    imp = load(cfg)
    evidence, problem = check(imp, cfg)
    if problem:
        print(f"[{STAGE}] warning: {cfg.file}: {problem} (imported anyway: source.check_conventions is false)",
              flush=True)
    ratios, attrs = import_attrs(imp, cfg, evidence)
    Simulated.from_counts(object=imp.object, probe=imp.probe, positions=imp.positions, counts=imp.counts,
                          attrs=attrs).write(out, stage=STAGE, scenario=scenario, config=cfg, ratios=ratios)
    said = ", ".join(f"{k} {v:.6g}" for k, v in ratios.items())
    if "pattern_correlation" in attrs:
        said += f", pattern_correlation {attrs['pattern_correlation']:.6g}"
    n = attrs["N"]
    print(f"[{STAGE}] {scenario}: {cfg.format} {cfg.file}: {len(imp.counts)} patterns of {n}x{n}, frame "
          f"{imp.object_shape[0]}x{imp.object_shape[1]} px, object {'yes' if imp.object is not None else 'no'}; "
          f"mean counts/pattern {attrs['mean_measured_counts']:.6g}; {said}; {time.perf_counter() - t0:.2f} s",
          flush=True)
    warning = dose_warning(imp, cfg, ratios)
    if warning:
        print(f"[{STAGE}] warning: {warning}", flush=True)
