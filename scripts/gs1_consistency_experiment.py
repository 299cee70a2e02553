#!/usr/bin/env python3
"""Experiment 23 (docs/quality.md): a one-pattern (gridsize-1) PINN trained through the
gridsize-2 overlap physics.

Data: the data stages of a gridsize-2 scenario (results/<scenario>/{simulated,normalized}.h5
of a run). A gridsize-1 network (input: one pattern and its own one-pattern group
estimate) is trained on the patterns of the training groups, then evaluated one test
pattern at a time, stitched and scored with the stitch and compare stages' code. Modes:
- single: the standard gridsize-1 loss, each pattern on its own;
- consistency: the members of each training group are predicted independently by the
  same network, then merged on the group's canvas and re-extracted (the gridsize-2
  physics layers) before the far field and the Poisson loss, so predictions of
  overlapping patterns that disagree are penalised.
Both see the same patterns per step (batch_size groups of C, or batch_size·C patterns).

Usage (from the repository root):
    python scripts/gs1_consistency_experiment.py RESULTS_DIR SCENARIO single|consistency [EPOCHS]
        [--config config/scenarios.yaml] [--preset quick]
Prints the training time and loss, then one line: stitched amplitude r / SSIM / bias, phase r.
"""

import argparse
import math
import time

import keras
import numpy as np
from group_estimate_quality import stitched_scores  # scripts/ is on sys.path when run as a script

from ptychopipe import physics
from ptychopipe.artifacts import read_normalized, read_simulated
from ptychopipe.config import load_scenarios, stage_config
from ptychopipe.model import PoissonLoss, build_model, estimate_model, head_model, merge_canvas
from ptychopipe.train import GroupArrays, GroupBatches, configure_backend, group_arrays, max_abs_offset


def singles(g: GroupArrays) -> GroupArrays:
    """Groups (B, N, N, C) → B·C one-pattern groups (B·C, N, N, 1), offsets 0."""
    b, n, _, c = g.inputs.shape
    x = np.moveaxis(g.inputs, -1, 1).reshape(b * c, n, n, 1)
    k = np.moveaxis(g.counts, -1, 1).reshape(b * c, n, n, 1)
    return GroupArrays(x, np.zeros((b * c, 1, 2), np.float32), k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("scenario")
    ap.add_argument("mode", choices=["single", "consistency"])
    ap.add_argument("epochs", type=int, nargs="?", default=15)
    ap.add_argument("--config", default="config/scenarios.yaml")
    ap.add_argument("--preset", default="quick")
    a = ap.parse_args()
    configure_backend(True)
    cfg = stage_config(load_scenarios(a.config, a.preset)[a.scenario], "train")
    m = cfg.model
    d = f"{a.results}/{a.scenario}"
    norm, sim = read_normalized(f"{d}/normalized.h5"), read_simulated(f"{d}/simulated.h5")
    train = group_arrays(norm, "train")
    n, c = m.N, train.inputs.shape[-1]
    if c == 1:
        raise SystemExit(f"{d}/normalized.h5: groups of 1 pattern; expected a gridsize-2 scenario")
    canvas = merge_canvas(n, max_abs_offset(norm))
    tol = physics.noise_tolerance(m.estimate_noise_tolerance, norm.input_scale)
    keras.utils.set_random_seed(cfg.seed)

    def build(gridsize: int) -> keras.Model:
        return build_model(n, gridsize, m.filters, m.depth, m.phase_max_rad, norm.probe, norm.amplitude_estimate,
                           canvas if gridsize > 1 else n, m.estimate_iterations, m.estimate_momentum,
                           estimate_algorithm=m.estimate_algorithm, estimate_tolerance=tol)

    one = build(1)
    t0 = time.perf_counter()
    s1 = singles(train)
    est = estimate_model(one).predict(s1.x(), batch_size=64, verbose=0)  # (B·C, N, N, 1, 2)
    print(f"one-pattern estimates of {len(s1)} training patterns: {time.perf_counter() - t0:.0f} s", flush=True)
    if a.mode == "consistency":
        group = build(math.isqrt(c))
        est_groups = np.moveaxis(est[..., 0, :].reshape(len(train), c, n, n, 2), 1, 3)  # (B, N, N, C, 2)
        data = GroupArrays(train.inputs, train.offsets, train.counts, est_groups.astype(np.float32))
        trainer, batch = head_model(group), cfg.batch_size
    else:
        data = GroupArrays(s1.inputs, s1.offsets, s1.counts, est.astype(np.float32))
        trainer, batch = head_model(one), cfg.batch_size * c
    batches = GroupBatches(data, batch, cfg.seed)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=len(batches) * a.epochs,
                                                      alpha=cfg.min_learning_rate / cfg.learning_rate)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule),
                    loss=PoissonLoss(norm.mean_counts, norm.input_scale))
    t0 = time.perf_counter()
    h = trainer.fit(batches, epochs=a.epochs, verbose=0)
    print(f"{a.mode}: {a.epochs} epochs in {time.perf_counter() - t0:.0f} s, loss {h.history['loss'][0]:.4g} -> "
          f"{h.history['loss'][-1]:.4g}", flush=True)
    if a.mode == "consistency":  # the U-Net's weights do not depend on C: give them to the one-pattern model
        trained = {v.path: v for v in group.weights}
        for v in one.weights:
            v.assign(trained[v.path])
    test = singles(group_arrays(norm, "test"))
    pred = one.predict(test.x(), batch_size=64, verbose=0)
    patches = (pred["amplitude"] * np.exp(1j * pred["phase"]))[..., 0]
    scores = stitched_scores(patches, sim.positions[norm.sets["test"].indices.ravel()], norm.probe, sim.object)
    print(f"{a.scenario} {a.mode}: one-pattern inference on {len(test)} test patterns: {scores}")


if __name__ == "__main__":
    main()
