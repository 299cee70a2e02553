#!/usr/bin/env python3
"""Train a scenario with one training setting changed and score it on the training region.

The PINN never sees the true object: it is trained on the Poisson likelihood of the counts
alone. So the true object over the *training* region is a fair validation set for training
settings, and the test split stays untouched (issue 5: choose on a validation split of the
training region). This script runs the train stage's own command on a run's normalized.h5
with the preset's train config, ``train.loss.tv_weight`` replaced and, optionally, Adam's
ε replaced (the train stage uses Keras's default, 1e-7), then scores the trained model:

- per patch, on the held-out validation groups (train.h5 ``split/validation_groups``):
  the mean amplitude r against the truth patch over the pixels the probe lights
  (|P|² > 0.1·max), and against the truth's twin;
- stitched, over every group of the training region, with the stitch and compare stages'
  own code (``group_estimate_quality.stitched_scores``).

A WORKDIR that already holds model.keras and train.h5 is scored without training (copy
a pipeline run's two files there to score the shipped setting).

Usage (results/<scenario>/{simulated,normalized}.h5 of a run, e.g. a quick scratch DAG):
    python scripts/train_variant_quality.py RESULTS_DIR SCENARIO WORKDIR [--preset quick]
        [--tv-weight 0] [--adam-epsilon EPS] [--threads 2]
Prints one line: best val_loss, per-patch r (truth, twin), stitched scores.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from group_estimate_quality import per_patch_r, stitched_scores  # scripts/ is on sys.path when run as a script

from ptychopipe.artifacts import read_normalized, read_simulated
from ptychopipe.config import load_scenarios, stage_config, to_dict
from ptychopipe.simulate import object_patches

REPO = Path(__file__).resolve().parents[1]

# Runs `ptychopipe train ...` (argv[3:]) with Adam's default ε replaced by argv[1].
EPSILON_LAUNCHER = """
import sys, keras
class Adam(keras.optimizers.Adam):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("epsilon", float(sys.argv[1]))
        super().__init__(*args, **kwargs)
keras.optimizers.Adam = Adam
from ptychopipe.cli import main
sys.exit(main(sys.argv[2:]))
"""


def train(results: Path, scenario: str, work: Path, preset: str, tv_weight: float,
          epsilon: float | None, threads: int) -> float:
    """Run the train stage into work/ (model.keras, train.h5, train.log); returns seconds."""
    cfg = to_dict(stage_config(load_scenarios(REPO / "config" / "scenarios.yaml", preset)[scenario], "train"))
    cfg["loss"]["tv_weight"] = tv_weight
    launcher = ([sys.executable, "-m", "ptychopipe"] if epsilon is None
                else [sys.executable, "-c", EPSILON_LAUNCHER, repr(epsilon)])
    args = ["train", "--scenario", scenario, "--config", json.dumps(cfg),
            "--normalized", str(results / scenario / "normalized.h5"), "--out", str(work / "model.keras"),
            "--history", str(work / "train.h5"), "--diagnostics", str(work / "train_nonfinite.json"),
            "--threads", str(threads)]
    t0 = time.perf_counter()
    with open(work / "train.log", "w") as log:
        subprocess.run(launcher + args, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("scenario")
    ap.add_argument("work", type=Path, help="where model.keras, train.h5 and train.log go")
    ap.add_argument("--preset", default="quick", help="preset whose train config is used")
    ap.add_argument("--tv-weight", type=float, default=0.0, help="train.loss.tv_weight")
    ap.add_argument("--adam-epsilon", type=float, default=None, help="Adam's ε (default: Keras's, 1e-7)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    trained = ""
    if not (a.work / "model.keras").is_file():
        trained = f"trained in {train(a.results, a.scenario, a.work, a.preset, a.tv_weight, a.adam_epsilon, a.threads):.0f} s; "

    from ptychopipe.infer import load_model, predict

    model = load_model(a.work / "model.keras")
    d = a.results / a.scenario
    sim, norm = read_simulated(d / "simulated.h5"), read_normalized(d / "normalized.h5")
    with h5py.File(a.work / "train.h5", "r") as f:
        val_groups = f["split/validation_groups"][()]
        best = float(np.nanmin(f["history/val_loss"][()]))
    n = norm.probe.shape[0]
    groups = norm.sets["train"]

    def patches(sel: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """Predicted patches (M, N, N) complex [object units] and their positions (M, 2) px."""
        out = predict(model, groups.amplitude[sel], groups.offsets[sel], 64)
        obj = np.moveaxis(out["amplitude"] * np.exp(1j * out["phase"]), -1, 1).reshape(-1, n, n)
        return obj, sim.positions[groups.indices[sel].ravel()]

    obj, pos = patches(val_groups)
    w = np.abs(norm.probe) ** 2
    r_truth, r_twin = per_patch_r(obj, object_patches(sim.object, pos, n), w > 0.1 * w.max())
    obj, pos = patches(slice(None))
    eps = "Keras default" if a.adam_epsilon is None else f"{a.adam_epsilon:g}"
    print(f"{a.scenario}: tv_weight {a.tv_weight:g}, Adam epsilon {eps}: {trained}best val_loss {best:.3g}; "
          f"validation groups, per-patch amplitude r {r_truth:.3f} (twin {r_twin:.3f}); training region "
          f"({len(groups.indices)} groups) stitched {stitched_scores(obj, pos, norm.probe, sim.object)}")


if __name__ == "__main__":
    main()
