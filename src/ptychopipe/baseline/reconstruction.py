"""The iterative reference reconstruction: pty-chi run over the test patterns, with snapshots
scored in data space by the pipeline's own forward model.

What belongs here: the starting object, the snapshot schedule, the data-space scores of a
snapshot (predicted counts, Poisson deviance) and :func:`reconstruct`, which runs a
pty-chi task (:mod:`~ptychopipe.baseline.ptychi`) and returns the content of baseline.h5
(:class:`ptychopipe.artifacts.BaselineResult`): the final object and the snapshots,
resampled onto the stitch stage's canvas grid for these positions
(:func:`ptychopipe.stitch.canvas_geometry`), the cumulative reconstruction time of each
snapshot (pty-chi's epochs only; building the task is ``setup_seconds``), pty-chi's loss,
and per snapshot and pattern the Poisson deviance — so the network and the iterative
result are scored by the same functions. Reading and writing files belongs to the
baseline stage (:mod:`ptychopipe.stages.baseline`).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import numpy as np

from ..artifacts import BaselineResult
from ..config import BaselineConfig
from ..normalize import amplitude_estimate
from ..physics import expected_counts, extract_patches
from ..stitch import canvas_geometry, patch_weight, stitch_patches
from ..telemetry import check_finite
from .ptychi import (RPIE_ALPHA, RPIE_STEP, VERIFIED, BaselineError, Buffer, build_task, import_ptychi, object_buffer,
                     on_canvas, task_loss, task_object)

STAGE = "baseline"
INITIALS = ("flat", "reconstruction")
#: Clamp of λ in the Poisson deviance (= ptychopipe.network.LAMBDA_FLOOR; tests check the two agree).
LAMBDA_FLOOR = 1e-8


def _stdout(line: str) -> None:
    print(line, flush=True)


def poisson_deviance(counts: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Σ over pixels of λ − n + n·(log n − log λ) per pattern, (M,) float64 [counts]; λ clamped
    ≥ :data:`LAMBDA_FLOOR` (the PINN's test loss is its mean / mean training counts)."""
    n = np.asarray(counts, dtype=np.float64)
    lam = np.maximum(np.asarray(lam, dtype=np.float64), LAMBDA_FLOOR)
    dev = lam - n + n * (np.log(np.maximum(n, LAMBDA_FLOOR)) - np.log(lam))
    return dev.sum(axis=(-2, -1))


def predicted_counts(obj: np.ndarray, positions: np.ndarray, probe: np.ndarray, chunk: int = 128) -> np.ndarray:
    """λ_j = |fftshift(fft2(P_abs·O_j))/N|² of the object ``obj`` (H, W) complex at ``positions``
    (M, 2) [x, y] px in obj's own pixel frame — the simulator's forward model. (M, N, N) float64."""
    n = probe.shape[0]
    pr = probe.astype(np.complex128)
    out = np.empty((len(positions), n, n))
    for a in range(0, len(positions), chunk):
        patches = extract_patches(obj, positions[a:a + chunk], n)
        out[a:a + chunk] = expected_counts((pr.real, pr.imag), (patches.real, patches.imag))
    return out


def snapshot_epochs(epochs: int, snapshots: int) -> list[int]:
    """Epoch counts after which a snapshot is taken: ``snapshots`` roughly even steps, the last
    at ``epochs`` (duplicates removed)."""
    k = max(1, min(snapshots, epochs))
    return sorted({int(math.ceil(epochs * (i + 1) / k)) for i in range(k)})


def initial_object(kind: str, counts: np.ndarray, probe: np.ndarray, buf: Buffer,
                   stitched: Any | None = None) -> np.ndarray:
    """pty-chi's starting object on the buffer, (buf.height, buf.width) complex128 [object
    amplitude].

    ``kind`` "flat": the constant ā (:func:`ptychopipe.normalize.amplitude_estimate` of
    ``counts``), zero phase.
    "reconstruction": the network's stitched test object (``stitched``, a
    :class:`ptychopipe.artifacts.StitchedCanvas`-like object with ``object``, ``coverage``,
    ``origin_x``, ``origin_y``) wherever it has coverage, ā elsewhere (pixels no patch
    lit carry no information, and pty-chi does not update them either)."""
    abar = amplitude_estimate(counts, probe)
    out = np.full((buf.height, buf.width), abar, dtype=np.complex128)
    if kind == "flat":
        return out
    if kind != "reconstruction":
        raise BaselineError(f"baseline.initial: expected one of {list(INITIALS)}, got {kind!r}")
    if stitched is None:
        raise BaselineError("baseline.initial: reconstruction needs the stitched reconstruction (stitched.h5)")
    obj = np.asarray(stitched.object, dtype=np.complex128)
    lit = np.asarray(stitched.coverage) > 0
    h, w = obj.shape
    r0, c0 = stitched.origin_y - buf.origin_y, stitched.origin_x - buf.origin_x
    rs = slice(max(0, r0), min(buf.height, r0 + h))
    cs = slice(max(0, c0), min(buf.width, c0 + w))
    src = (slice(rs.start - r0, rs.stop - r0), slice(cs.start - c0, cs.stop - c0))
    region = out[rs, cs]
    out[rs, cs] = np.where(lit[src], obj[src], region)
    return out


def reconstruct(cfg: BaselineConfig, indices: np.ndarray, counts: np.ndarray, positions: np.ndarray,
                probe: np.ndarray, stitched: Any | None = None, scenario: str = "",
                log: Callable[[str], None] = _stdout) -> tuple[BaselineResult, dict[str, float]]:
    """Reconstruct the test patterns with pty-chi (``cfg``: engine, noise model, epochs,
    snapshots, start) and score each snapshot in data space.

    indices (M,) int64 into the simulated arrays; counts (M, N, N) float32 [counts];
    positions (M, 2) float64 [x, y] px; probe P_abs (N, N) complex64 [photons^0.5];
    ``stitched``: the network's stitched canvas when ``cfg.initial`` is "reconstruction"
    (:func:`initial_object`). Returns the content of baseline.h5 and its telemetry ratios.
    One-line :class:`~ptychopipe.baseline.ptychi.BaselineError` when pty-chi diverges."""
    torch, api, versions = import_ptychi()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    n = probe.shape[0]
    buf = object_buffer(positions, n)
    abar = amplitude_estimate(counts, probe)
    initial = initial_object(cfg.initial, counts, probe, buf, stitched)
    geo = canvas_geometry(positions, n)
    local = positions - np.array([buf.origin_x, buf.origin_y], dtype=np.float64)
    t0 = time.perf_counter()
    task = build_task(api, cfg, counts, probe, positions, initial, buf)
    setup = time.perf_counter() - t0
    log(f"[{STAGE}] {scenario}: pty-chi {cfg.engine} ({cfg.noise_model}) on {len(indices)} test patterns of "
        f"{n}x{n}, buffer {buf.height}x{buf.width} px, {cfg.epochs} epochs, batch {cfg.batch_size}; start "
        f"{cfg.initial} (flat amplitude {abar:.6g}); {versions}; setup {setup:.2f} s")
    marks = snapshot_epochs(cfg.epochs, cfg.snapshots)
    snaps, seconds, losses, devs, totals = [], [], [], [], []
    done, elapsed = 0, 0.0
    for mark in marks:
        t1 = time.perf_counter()
        task.run(n_epochs=mark - done)
        elapsed += time.perf_counter() - t1
        done = mark
        obj = task_object(task)
        if not np.all(np.isfinite(obj)):
            raise BaselineError(f"[{STAGE}] {scenario}: object: non-finite after epoch {done} ({cfg.engine} "
                                f"diverged; expected finite values): lower baseline.batch_size (pty-chi's PIE "
                                f"sums a batch's updates: rpie diverged at 8 on the ci data, converged at <= 4) "
                                f"or use engine lsqml")
        lam = predicted_counts(obj, local, probe)
        devs.append(poisson_deviance(counts, lam))
        totals.append(lam.sum(axis=(1, 2)))
        snaps.append(on_canvas(obj, buf, geo).astype(np.complex64))
        seconds.append(elapsed)
        losses.append(task_loss(task))
        log(f"[{STAGE}] epoch {done}/{cfg.epochs}: {elapsed:.2f} s; pty-chi loss {losses[-1]:.6g}; "
            f"predicted/measured counts {totals[-1].mean() / counts.sum(axis=(1, 2)).mean():.5f}")
    final = snaps[-1]
    check_finite(STAGE, "object", final)
    weight = patch_weight("probe_intensity", probe, n)
    cov = stitch_patches(np.ones((len(positions), n, n), dtype=np.complex128), positions, weight)
    if (cov.geometry.origin_x, cov.geometry.origin_y) != (geo.origin_x, geo.origin_y):
        raise BaselineError(f"[{STAGE}] canvas: coverage geometry differs from the canvas; expected equal")
    measured = counts.sum(axis=(1, 2), dtype=np.float64)
    engine = ({"noise_model": cfg.noise_model} if cfg.engine == "lsqml"
              else {"alpha": RPIE_ALPHA, "step_size": RPIE_STEP})
    attrs = {"engine": cfg.engine, "epochs": cfg.epochs, "reconstruction_seconds": elapsed, "setup_seconds": setup,
             "initial_amplitude": abar, "origin_x": geo.origin_x, "origin_y": geo.origin_y,
             "buffer": [buf.origin_x, buf.origin_y, buf.height, buf.width], "versions": versions,
             "verified_versions": VERIFIED,
             "conventions": {"data": "raw counts, fft_shift=True", "probe": "P_abs / N, (1, 1, N, N), fixed",
                             "positions": "[y, x] px - buffer origin - round(S/2) (SUPPORT), fixed",
                             "initial": cfg.initial, "engine": engine}}
    result = BaselineResult(final, cov.coverage.astype(np.float32), cov.count, (geo.origin_x, geo.origin_y),
                            positions, indices, np.stack(snaps), np.array(marks, dtype=np.int64), np.array(seconds),
                            np.array(losses), np.stack(devs), np.stack(totals), measured, attrs)
    return result, {"predicted_over_measured_counts": float(totals[-1].mean() / measured.mean())}
