#!/usr/bin/env python3
"""Score the PINN's physics input alone: the group estimate, stitched, against the truth.

The PINN's first layer (model.GroupEstimate → physics.group_estimate) solves each test
group's small ptychography problem with fixed physics; the U-Net then learns a correction.
This script stitches the estimate of every test group as the stitch stage would and scores
it with the compare stage's own code, so a reconstruction can be compared with its
network-free starting point (docs/quality.md). NumPy, float64; with --keras, the model's
own layer (model.GroupEstimate, float32) on the Keras backend (KERAS_BACKEND=jax on a GPU).

With --groups M it estimates only M evenly spaced test groups and scores each member's
patch alone, over the pixels its probe lights (|P|² > 0.1·max): the mean per-patch
amplitude r against the truth patch and against the truth's twin conj(O(−r)) (the patch
turned by 180°, which the ideal probe cannot tell from the truth: docs/quality.md). This
is cheaper than stitching every group, and it shows *what* a group's data pin down. It
also prints how well the estimate and the truth each fit the measured patterns (the
relative amplitude misfit, :func:`amplitude_misfit`): an estimate that fits as well as the
truth and still is not the object means the data do not determine the patch; one that fits
far worse than the truth means the solver stopped short (docs/quality.md, experiment 25).

With --split train it scores the groups of the training region instead of the test
split. The estimate has no trained parameters, so the training region is a validation set
for its own settings (algorithm, tolerance, iterations): choose them there, not on the
test split.

Usage (results/<scenario>/{simulated,normalized}.h5 of a run, e.g. a scratch DAG):
    python scripts/group_estimate_quality.py RESULTS_DIR SCENARIO [--iterations 50] [--momentum 0.9] [--keras]
        [--groups M] [--algorithm difference_map|gradient] [--noise-tolerance 1.0] [--split test|train]
        [--weight probe_intensity|uniform] [--resolve-twin]
Prints one line: iterations, seconds, stitched amplitude r / SSIM / bias, phase r (or, with
--groups, the per-patch r against the truth and against its twin, and the misfit of each).
"""

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from ptychopipe import compare, physics, stitch
from ptychopipe.artifacts import read_normalized, read_simulated
from ptychopipe.config import CompareConfig
from ptychopipe.model import estimate_probe, merge_canvas
from ptychopipe.simulate import object_patches


def per_patch_r(estimate: np.ndarray, truth: np.ndarray, lit: np.ndarray) -> tuple[float, float]:
    """Mean Pearson r of |estimate| with |truth| and with |twin of truth| over the ``lit``
    pixels of each patch. estimate, truth: (M, N, N) complex; lit: (N, N) bool."""
    n = truth.shape[-1]
    flip = (-np.arange(n)) % n  # r -> -r about the patch centre (the FFT grid's origin)
    twin = np.abs(truth)[:, flip][:, :, flip]
    a, t, w = np.abs(estimate)[:, lit], np.abs(truth)[:, lit], twin[:, lit]
    return (float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, t)])),
            float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, w)])))


def evenly_spaced(groups: Any, m: int) -> Any:
    """The ``m`` evenly spaced groups (first and last included) of a normalized split's group
    set (every array field cut along axis 0)."""
    pick = np.linspace(0, len(groups.indices) - 1, m).round().astype(int)
    return dataclasses.replace(groups, **{f.name: getattr(groups, f.name)[pick]
                                          for f in dataclasses.fields(groups)
                                          if getattr(groups, f.name) is not None})


def amplitude_misfit(patches: np.ndarray, amplitude: np.ndarray, probe: np.ndarray, input_scale: float) -> float:
    """Relative misfit Σ(a·sqrt(λ̂) − X)² / ΣX² of object patches to their measured patterns.

    patches: (M, N, N) complex [object units]; amplitude: the measured X = a·sqrt(n), (M, N,
    N) [input units]; probe: P_abs (N, N) complex; input_scale: a. λ̂ = |F(P_abs·Ô)|²
    [counts] (physics.expected_counts, the simulator's forward model)."""
    lam = physics.expected_counts((probe.real, probe.imag), (patches.real, patches.imag))
    x = np.asarray(amplitude, dtype=np.float64)
    return float(np.sum((input_scale * np.sqrt(lam) - x) ** 2) / np.sum(x ** 2))


def stitched_scores(patches: np.ndarray, positions: np.ndarray, probe: np.ndarray, truth: np.ndarray,
                    weight: str = "probe_intensity", resolve_twin: bool = False) -> str:
    """Stitch patches (M, N, N) complex [object units] at positions (M, 2) [x, y] px as the
    stitch stage does (``weight``: stitch.weight; ``resolve_twin``: stitch.resolve_twin, one
    pattern per patch and a probe that is its own twin), score them against the truth object
    with the compare stage's code and defaults; returns "amplitude r … SSIM … bias …; phase r …"
    (and the twin swaps per pass)."""
    n = patches.shape[-1]
    w = stitch.patch_weight(weight, probe, n)
    swaps = ""
    if resolve_twin:
        _, st, per_pass = stitch.resolve_twins(patches, positions, w, probe)
        swaps = f"; twin swaps per pass {per_pass}"
    else:
        st = stitch.stitch_patches(patches, positions, w)
    ev = compare.evaluate(st.object, st.coverage, truth, st.geometry.origin_x, st.geometry.origin_y,
                          CompareConfig(coverage_threshold=0.5, frc_threshold="half_bit", ratio_tolerance=0.05,
                                        register=False))
    m = ev.metrics
    return (f"amplitude r {m['amplitude']['pearson_r']:.3f} SSIM {m['amplitude']['ssim']:.3f} "
            f"bias {ev.amplitude_bias:.3f}; phase r {m['phase']['pearson_r']:.3f}{swaps}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("scenario")
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--chunk", type=int, default=64, help="groups per batch")
    ap.add_argument("--keras", action="store_true", help="run model.GroupEstimate on the Keras backend")
    ap.add_argument("--groups", type=int, default=0, help="score M evenly spaced groups patch by patch")
    ap.add_argument("--algorithm", default="difference_map", choices=["gradient", "difference_map"])
    ap.add_argument("--noise-tolerance", type=float, default=1.0,
                    help="modulus constraint half-width in standard deviations of the measured amplitude (0: exact)")
    ap.add_argument("--split", default="test", choices=["test", "train"],
                    help="score the test split (default) or the training region's groups")
    ap.add_argument("--weight", default="probe_intensity", choices=list(stitch.WEIGHTS), help="stitch.weight")
    ap.add_argument("--resolve-twin", action="store_true",
                    help="stitch.resolve_twin (gridsize 1, a probe that is its own twin: docs/quality.md, exp. 27)")
    a = ap.parse_args()
    d = a.results / a.scenario
    sim, norm = read_simulated(d / "simulated.h5"), read_normalized(d / "normalized.h5")
    groups = norm.sets[a.split]
    if a.groups:
        groups = evenly_spaced(groups, a.groups)
    n, c = norm.probe.shape[0], groups.indices.shape[1]
    canvas = merge_canvas(n, max(float(np.abs(s.offsets).max()) for s in norm.sets.values())) if c > 1 else n
    pe = estimate_probe(norm.probe)
    dm = a.algorithm == "difference_map"
    tolerance = physics.noise_tolerance(a.noise_tolerance if dm else 0.0, norm.input_scale)
    setting = f"{a.algorithm}, " + (f"tolerance {a.noise_tolerance} sigma" if dm else f"momentum {a.momentum}")
    t0 = time.perf_counter()
    patches = []
    if a.keras:
        import keras

        from ptychopipe.model import GroupEstimate

        x_in, off_in = keras.Input((n, n, c)), keras.Input((c, 2))
        layer = GroupEstimate(norm.probe, canvas, a.iterations, a.momentum, a.algorithm, tolerance)
        est = keras.Model([x_in, off_in], layer(x_in, off_in)).predict(
            [groups.amplitude.astype(np.float32), groups.offsets.astype(np.float32)], batch_size=a.chunk, verbose=0)
        patches.append(np.moveaxis(est[..., 0] + 1j * est[..., 1], -1, 1) * norm.amplitude_estimate)
    for s in range(0, len(groups.indices) if not a.keras else 0, a.chunk):
        sl = slice(s, s + a.chunk)
        re, im = physics.group_estimate(np.moveaxis(groups.amplitude[sl], -1, 1).astype(np.float64),
                                        groups.offsets[sl, :, 0], groups.offsets[sl, :, 1], (pe.real, pe.imag),
                                        canvas, a.iterations, a.momentum, algorithm=a.algorithm, tolerance=tolerance)
        patches.append((re + 1j * im) * norm.amplitude_estimate)  # units of ā → object units
    seconds = time.perf_counter() - t0
    obj = np.concatenate(patches).reshape(-1, n, n)
    if a.groups:
        truth = object_patches(sim.object, sim.positions[groups.indices.ravel()], n)
        w = np.abs(norm.probe) ** 2
        r_truth, r_twin = per_patch_r(obj, truth, w > 0.1 * w.max())
        x = np.moveaxis(groups.amplitude, -1, 1).reshape(-1, n, n)  # (group, member) order, as obj
        misfit = {k: amplitude_misfit(v, x, norm.probe, norm.input_scale) for k, v in (("est", obj), ("truth", truth))}
        print(f"{a.scenario}: group estimate ({setting}), {a.iterations} iterations: {len(groups.indices)} {a.split} groups in {seconds:.0f} s; per-patch "
              f"amplitude r over lit pixels: {r_truth:.3f} with the truth, "
              f"{r_twin:.3f} with its twin; relative amplitude misfit to the patterns: estimate "
              f"{misfit['est']:.2e}, truth {misfit['truth']:.2e}")
        return
    print(f"{a.scenario}: group estimate ({setting}), {a.iterations} iterations: {len(groups.indices)} {a.split} groups in {seconds:.0f} s; stitched "
          f"{stitched_scores(obj, sim.positions[groups.indices.ravel()], norm.probe, sim.object, a.weight, a.resolve_twin)}")


if __name__ == "__main__":
    main()
