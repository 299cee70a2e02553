#!/usr/bin/env python3
"""Experiment 26: how far could a *learned prior* take gridsize 1? A supervised bound.

At gridsize 1 the PINN's group estimate fits each pattern to the Poisson noise and still
scores per-patch r ≈ 0.5: one pattern leaves its patch undetermined (docs/quality.md,
experiment 25). The only thing left that could choose among the objects that fit is a
prior over objects, which the self-supervised likelihood does not teach (experiment 24).
This script measures the best such a prior could do with the shipped architecture: the
PINN's U-Net correction is trained *with the true object patches as labels* (which the
pipeline never has) on another object of the same class, then applied to the scenario's
object. If even that stays below the targets, no training of this network can reach them.

- PRIOR scenario: another "lines" object (a different ``object.seed``) with a dense scan;
  all its patterns (both splits) are labelled training data, 10 % held out (seeded) for
  the validation loss that picks the best epoch.
- EVAL scenario: the shipped scenario. It is scored on its *training region* (all its
  training groups): the network never sees this object, so that region is a validation
  set and the test split stays untouched (issue 5).
- Inputs: the PINN's own group estimate (model.GroupEstimate, the preset's algorithm and
  iterations), computed per scenario with its own probe; the U-Net sees exactly what the
  shipped model sees. Outputs through the shipped ``refine_estimate`` heads, in units of ā
  (so the two objects' ā do not matter).
- Loss per patch: Σw|e^{iθ}Ô − O|² / Σw|O|² with the best global phase θ (one pattern
  does not fix a patch's global phase) and w = |P|²/max|P|², the stitch weight.

Scores (EVAL training region): per-patch amplitude r over the lit pixels
(|P|² > 0.1·max) against the truth and its twin, and the stitched scores of the stitch and
compare stages' code (``group_estimate_quality.stitched_scores``), for the estimate alone
and for the supervised correction. Also the prior object's own held-out loss and per-patch r.

Usage (results/<scenario>/{simulated,normalized}.h5 of a scratch run; CONFIG the
scenarios.yaml that defines PRIOR and EVAL):
    python scripts/supervised_bound_experiment.py RESULTS CONFIG PRIOR EVAL
        [--preset full] [--filters F] [--epochs 20] [--batch-size 16] [--threads 2]
Prints one line per scored set.
"""

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from group_estimate_quality import per_patch_r, stitched_scores  # scripts/ is on sys.path when run as a script

from ptychopipe.artifacts import read_normalized, read_simulated
from ptychopipe.config import load_scenarios, stage_config
from ptychopipe.simulate import object_patches


def labelled(results: Path, scenario: str, splits: tuple[str, ...]) -> tuple:
    """(normalized, simulated, {split: (indices (M,), truth patches / ā (M, N, N) complex128)})
    for the named ``splits`` only (the eval scenario's test split is never cut)."""
    d = results / scenario
    norm, sim = read_normalized(d / "normalized.h5"), read_simulated(d / "simulated.h5")
    n = norm.probe.shape[0]
    out = {}
    for split in splits:
        idx = norm.sets[split].indices[:, 0]
        out[split] = idx, object_patches(sim.object, sim.positions[idx], n) / norm.amplitude_estimate
    return norm, sim, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("config", type=Path, help="scenarios.yaml that defines both scenarios")
    ap.add_argument("prior", help="scenario whose object (truth known) trains the correction")
    ap.add_argument("eval", help="scenario scored on its training region")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--filters", type=int, default=0, help="U-Net width (default: the preset's)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    from ptychopipe.cli import set_thread_limits

    set_thread_limits(a.threads)  # before TensorFlow is imported
    import keras
    from keras import ops

    from ptychopipe.model import build_model_from_config, estimate_model, overlap_weight

    scen = load_scenarios(a.config, a.preset)
    cfg = stage_config(scen[a.prior], "train")
    if cfg.model.gridsize != 1:
        raise SystemExit(f"{a.prior}: gridsize 1 expected, got {cfg.model.gridsize}")
    if a.filters:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, filters=a.filters))

    def build(norm):
        n = norm.probe.shape[0]
        return build_model_from_config(cfg, norm.probe, 1.0, n, norm.input_scale)  # ā = 1: units of ā

    def estimates(model, norm, split: str) -> np.ndarray:
        g = norm.sets[split]
        return np.asarray(estimate_model(model).predict(
            {"diffraction": g.amplitude.astype(np.float32), "offsets": g.offsets.astype(np.float32)},
            batch_size=64, verbose=0), dtype=np.float32)

    t0 = time.perf_counter()
    pnorm, _, plab = labelled(a.results, a.prior, ("train", "test"))
    enorm, esim, elab = labelled(a.results, a.eval, ("train",))
    model = build(pnorm)  # the prior's probe; its U-Net becomes the corrector below
    x = np.concatenate([estimates(model, pnorm, s) for s in ("train", "test")])
    y = np.concatenate([plab[s][1] for s in ("train", "test")])
    ex = estimates(build(enorm), enorm, "train")
    print(f"estimates: {len(x)} prior patterns, {len(ex)} eval patterns in {time.perf_counter() - t0:.0f} s", flush=True)

    est_in = model.get_layer("group_estimate").output
    amp, phase = model.get_layer("refine_estimate").output
    corrector = keras.Model(est_in, ops.stack([amp * ops.cos(phase), amp * ops.sin(phase)], axis=-1))
    w = overlap_weight(pnorm.probe)[None, :, :, None]  # |P|²/max|P|², the stitch weight

    def loss(y_true, y_pred):
        """Σw|e^{iθ}Ô − O|²/Σw|O|² at the best θ, per patch; (B, N, N, 1, 2) each."""
        pr, pi, tr, ti = y_pred[..., 0], y_pred[..., 1], y_true[..., 0], y_true[..., 1]
        cr = ops.sum(w * (pr * tr + pi * ti), axis=(1, 2, 3))  # Re Σ w Ô* O
        ci = ops.sum(w * (pr * ti - pi * tr), axis=(1, 2, 3))  # Im Σ w Ô* O
        pp = ops.sum(w * (pr * pr + pi * pi), axis=(1, 2, 3))
        tt = ops.sum(w * (tr * tr + ti * ti), axis=(1, 2, 3))
        return (pp + tt - 2.0 * ops.sqrt(cr * cr + ci * ci + 1e-12)) / tt

    def as_target(z: np.ndarray) -> np.ndarray:
        return np.stack([z.real, z.imag], axis=-1).astype(np.float32)[:, :, :, None, :]

    perm = np.random.default_rng([cfg.seed, 7919]).permutation(len(x))  # 10 % of the patterns, at random
    n_val = round(0.1 * len(x))
    tr_idx, va_idx = np.sort(perm[n_val:]), np.sort(perm[:n_val])
    steps = -(-len(tr_idx) // a.batch_size) * a.epochs
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, steps, alpha=cfg.min_learning_rate / cfg.learning_rate)
    corrector.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
    yt = as_target(y)
    l0 = corrector.evaluate(x[va_idx], yt[va_idx], batch_size=64, verbose=0)
    t0 = time.perf_counter()
    hist = corrector.fit(x[tr_idx], yt[tr_idx], batch_size=a.batch_size, epochs=a.epochs, verbose=2,
                         validation_data=(x[va_idx], yt[va_idx]),
                         callbacks=[keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)])
    secs = time.perf_counter() - t0
    vl = hist.history["val_loss"]
    print(f"{a.prior}: filters {cfg.model.filters}, {len(tr_idx)} labelled patches, {len(hist.history['loss'])} epochs "
          f"in {secs:.0f} s; held-out loss {l0:.4f} (estimate alone) -> best {min(vl):.4f} (epoch {int(np.argmin(vl)) + 1}); "
          f"training loss {hist.history['loss'][-1]:.4f}")

    def complex_out(z: np.ndarray) -> np.ndarray:
        return (z[..., 0, 0] + 1j * z[..., 0, 1]).astype(np.complex128)

    lit_p = overlap_weight(pnorm.probe) > 0.1
    r_val = per_patch_r(complex_out(corrector.predict(x[va_idx], batch_size=64, verbose=0)), y[va_idx], lit_p)
    r_val0 = per_patch_r(complex_out(x[va_idx]), y[va_idx], lit_p)
    print(f"{a.prior} held-out patches: per-patch amplitude r {r_val0[0]:.3f} (estimate) -> {r_val[0]:.3f} (supervised)")

    idx, truth = elab["train"]
    pos = esim.positions[idx]
    lit = overlap_weight(enorm.probe) > 0.1
    for name, patches in (("estimate alone", complex_out(ex)),
                          ("supervised correction", complex_out(corrector.predict(ex, batch_size=64, verbose=0)))):
        obj = patches * enorm.amplitude_estimate  # units of ā → object units
        rt, rw = per_patch_r(obj, truth, lit)
        print(f"{a.eval} training region ({len(idx)} patterns), {name}: per-patch amplitude r {rt:.3f} (twin {rw:.3f}); "
              f"stitched {stitched_scores(obj, pos, enorm.probe, esim.object)}", flush=True)


if __name__ == "__main__":
    main()
