#!/usr/bin/env python3
"""Experiment 28 (docs/quality.md): is the one-pattern estimate's truth/twin mixture a trap of
its symmetric start?

Under a probe that is its own twin (the ideal probe), the difference map of one pattern maps
a start that is its own twin to iterates that are their own twin: the modulus projection and
the least-squares object both commute with the twin conj(O(−r)). The shipped start, the flat
object 1, is its own twin. This script runs the same one-pattern difference map
(:func:`difference_map_1`, the C = 1 case of :func:`ptychopipe.physics.difference_map_estimate`,
tested equal to it) from starts that are not, and optionally with Fienup's remedy for twin
stagnation: a support that is not centrosymmetric (the probe times a mask) for the first
iterations, then the probe itself.

Starts (``--start``): flat (shipped), ramp (amplitude 1 + 0.3x + 0.2y, x, y in [−1, 1)),
noise (1 + 0.3·complex Gaussian, seeded), phase (unit amplitude, uniform random phase,
seeded). Masks (``--mask``, for ``--mask-iterations``): none, half (the half-plane
x + y/2 < 0.15), triangle (x > −0.6, y > −0.6, x + y < 0.3).

Scored as scripts/group_estimate_quality.py scores the shipped estimate: with ``--groups M``,
M evenly spaced groups patch by patch (per-patch r against the truth and its twin, misfit to
the patterns); otherwise all groups of the split, stitched with ``--weight`` and
``--resolve-twin`` and scored with the compare stage's code.

Usage (results/<scenario>/{simulated,normalized}.h5 of a gridsize-1 run):
    python scripts/twin_start_experiment.py RESULTS_DIR SCENARIO [--start flat|ramp|noise|phase]
        [--mask none|half|triangle] [--mask-iterations 20] [--iterations 200] [--groups M]
        [--split train|test] [--weight uniform|probe_intensity] [--resolve-twin]
"""

import argparse
import time
from pathlib import Path

import numpy as np
from group_estimate_quality import amplitude_misfit, evenly_spaced, per_patch_r, stitched_scores  # scripts/ on sys.path

from ptychopipe import physics, stitch
from ptychopipe.artifacts import read_normalized, read_simulated
from ptychopipe.model import estimate_probe
from ptychopipe.simulate import object_patches

STARTS = ("flat", "ramp", "noise", "phase")
MASKS = ("none", "half", "triangle")


def start_object(kind: str, batch: int, n: int, seed: int = 0) -> np.ndarray:
    """The difference map's start object, (batch, n, n) complex128 [units of ā] (``kind``: :data:`STARTS`)."""
    y, x = (np.mgrid[0:n, 0:n] - n / 2) / (n / 2)
    rng = np.random.default_rng(seed)
    if kind == "flat":
        o = np.ones((n, n), complex)
    elif kind == "ramp":
        o = (1 + 0.3 * x + 0.2 * y).astype(complex)
    elif kind == "noise":
        return 1 + 0.3 * (rng.standard_normal((batch, n, n)) + 1j * rng.standard_normal((batch, n, n)))
    elif kind == "phase":
        return np.exp(1j * rng.uniform(-np.pi, np.pi, (batch, n, n)))
    else:
        raise ValueError(f"start: expected one of {STARTS}, got {kind!r}")
    return np.broadcast_to(o, (batch, n, n)).copy()


def support_mask(kind: str, n: int) -> np.ndarray:
    """(n, n) float64 in {0, 1}: a support that is not centrosymmetric (``kind``: :data:`MASKS`)."""
    y, x = (np.mgrid[0:n, 0:n] - n / 2) / (n / 2)
    if kind == "none":
        return np.ones((n, n))
    if kind == "half":
        return (x + 0.5 * y < 0.15).astype(float)
    if kind == "triangle":
        return ((x > -0.6) & (y > -0.6) & (x + y < 0.3)).astype(float)
    raise ValueError(f"mask: expected one of {MASKS}, got {kind!r}")


def difference_map_1(amplitude: np.ndarray, probe: np.ndarray, iterations: int, tolerance: float,
                     start: np.ndarray, mask: np.ndarray | None = None, mask_iterations: int = 0) -> np.ndarray:
    """One-pattern difference map: amplitude X (B, N, N) [input units], probe (N, N) complex
    (:func:`ptychopipe.model.estimate_probe`), start (B, N, N) complex [units of ā] → the
    object estimate (B, N, N) complex128 [units of ā]. The probe times ``mask`` serves for the
    first ``mask_iterations`` iterations. With the flat start and no mask it is
    :func:`ptychopipe.physics.difference_map_estimate` at C = 1."""
    damping = physics.DM_DAMPING * float(np.max(np.abs(probe) ** 2))

    def overlap(psi: np.ndarray, p: np.ndarray) -> np.ndarray:
        return (np.conj(p) * psi + damping) / (np.abs(p) ** 2 + damping)

    psi = probe * start
    for k in range(iterations):
        p = probe * mask if k < mask_iterations and mask is not None else probe
        f = p * overlap(psi, p)
        q_r, q_i = physics.modulus_projection((2 * f - psi).real, (2 * f - psi).imag, amplitude, tolerance=tolerance)
        psi = psi + (q_r + 1j * q_i) - f
    return overlap(psi, probe)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("scenario")
    ap.add_argument("--start", default="flat", choices=STARTS)
    ap.add_argument("--mask", default="none", choices=MASKS)
    ap.add_argument("--mask-iterations", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--noise-tolerance", type=float, default=1.0)
    ap.add_argument("--groups", type=int, default=0, help="score M evenly spaced groups patch by patch")
    ap.add_argument("--split", default="train", choices=["test", "train"])
    ap.add_argument("--weight", default="uniform", choices=list(stitch.WEIGHTS))
    ap.add_argument("--resolve-twin", action="store_true")
    ap.add_argument("--chunk", type=int, default=64)
    a = ap.parse_args()
    d = a.results / a.scenario
    sim, norm = read_simulated(d / "simulated.h5"), read_normalized(d / "normalized.h5")
    groups = norm.sets[a.split]
    if groups.indices.shape[1] != 1:
        raise SystemExit(f"{d / 'normalized.h5'}: expected a gridsize-1 scenario, got groups of {groups.indices.shape[1]}")
    if a.groups:
        groups = evenly_spaced(groups, a.groups)
    amp = groups.amplitude[..., 0].astype(np.float64)  # (B, N, N)
    b, n = amp.shape[0], amp.shape[-1]
    pe = estimate_probe(norm.probe)
    tolerance = physics.noise_tolerance(a.noise_tolerance, norm.input_scale)
    start, mask = start_object(a.start, b, n), support_mask(a.mask, n)
    t0 = time.perf_counter()
    est = np.concatenate([difference_map_1(amp[s:s + a.chunk], pe, a.iterations, tolerance, start[s:s + a.chunk],
                                           mask, a.mask_iterations if a.mask != "none" else 0)
                          for s in range(0, b, a.chunk)]) * norm.amplitude_estimate  # object units
    seconds = time.perf_counter() - t0
    setting = f"start {a.start}, mask {a.mask}" + (f" for {a.mask_iterations}" if a.mask != "none" else "")
    positions = sim.positions[groups.indices[:, 0]]
    head = f"{a.scenario}: one-pattern difference map ({setting}), {a.iterations} iterations: {b} {a.split} groups in {seconds:.0f} s; "
    if a.groups:
        truth = object_patches(sim.object, positions, n)
        w = np.abs(norm.probe) ** 2
        r_truth, r_twin = per_patch_r(est, truth, w > 0.1 * w.max())
        misfit = {k: amplitude_misfit(v, amp, norm.probe, norm.input_scale) for k, v in (("est", est), ("truth", truth))}
        print(head + f"per-patch amplitude r over lit pixels: {r_truth:.3f} with the truth, {r_twin:.3f} with its twin; "
              f"relative amplitude misfit: estimate {misfit['est']:.2e}, truth {misfit['truth']:.2e}")
        return
    print(head + "stitched " + stitched_scores(est, positions, norm.probe, sim.object, a.weight, a.resolve_twin))


if __name__ == "__main__":
    main()
