"""stitch stage: place the patches of ``inferred.h5`` on one canvas and write ``stitched.h5``.

What belongs here: :func:`run`, which reads the inferred patches, stitches them (resolving
twins when ``stitch.resolve_twin`` is set), writes the
:class:`~ptychopipe.artifacts.StitchedCanvas` artifact and prints the stage's one-line
log. What does not: the canvas geometry, the resampling, the weights, the twin resolution
and the checks of the patches (:mod:`ptychopipe.stitch`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..artifacts import Inferred, StitchedCanvas
from ..config import StitchConfig
from ..stitch import STAGE, inferred_patches, overlap_consistency, resolve_twins, stitch_patches
from ..telemetry import check_finite


def run(cfg: StitchConfig, scenario: str, inferred: str | Path, out: str | Path) -> None:
    """Stage entry point: read ``inferred.h5``, write ``stitched.h5`` (docs/artifacts.md)."""
    inf = Inferred.read(inferred)
    patches, positions, weight = inferred_patches(inf, cfg, str(inferred))
    b, c, n, _ = inf.amplitude.shape
    swaps: list[int] = []
    t0 = time.perf_counter()
    if cfg.resolve_twin:
        _, st, swaps = resolve_twins(patches, positions, weight, inf.probe)
    else:
        st = stitch_patches(patches, positions, weight)
    seconds = time.perf_counter() - t0
    check_finite(STAGE, "object", st.object)
    consistency = overlap_consistency(st)
    geo = st.geometry
    print(f"[{STAGE}] {scenario}: {b * c} patches of {n}x{n} ({b} groups x {c}) -> canvas "
          f"{geo.height}x{geo.width} at origin (x={geo.origin_x}, y={geo.origin_y}), weight {cfg.weight}, "
          f"{seconds:.3f} s; overlap consistency {consistency:.6f}"
          + (f"; twins resolved: {sum(swaps)} swaps over {len(swaps)} passes {swaps}" if cfg.resolve_twin else ""),
          flush=True)
    attrs = {"weight": cfg.weight, "N": n, "n_patches": b * c, "stitch_seconds": seconds,
             "resolve_twin": cfg.resolve_twin, "twin_swaps_per_pass": np.array(swaps, dtype=np.int64)}
    StitchedCanvas(st.object, st.coverage, st.count, geo.origin_x, geo.origin_y, attrs).write(
        out, scenario=scenario, config=cfg, ratios={"stitched_over_inferred": consistency})
