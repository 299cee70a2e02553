"""The train stage's computation: fit the PINN to the training split of ``normalized.h5``
(docs/design.md, 'Reconstruction modes', 'Loss').

The stage (:mod:`ptychopipe.stages.train`) writes what :func:`fit` returns to
``model.keras`` (the Keras model, probe and overlap weight included) and ``train.h5``
(per-epoch history, see :class:`ptychopipe.artifacts.TrainHistory`, plus the stage config
and telemetry).

Reproducibility: :func:`keras.utils.set_random_seed` seeds the weight initialisation;
the mini-batch order is a seeded permutation per epoch drawn by :class:`GroupBatches`
(not by the backend), so it is the same under TensorFlow and JAX; with TensorFlow the
ops are made deterministic (``tf.config.experimental.enable_op_determinism``, which
also turns XLA off for the train step).

Safety: :class:`NonFiniteGuard` checks, after every batch, the loss Keras reports (the
running mean over the epoch's batches so far, which turns non-finite at the first bad
batch) and the finiteness of every trainable weight (a non-finite gradient shows up as
non-finite weights after the Adam update). The first failure stops training; the stage
then writes a diagnostic JSON (:func:`failure_record`: history so far, per-weight
statistics, statistics of the offending batch's inputs) and raises :class:`NonFiniteError`
whose one-line message (:func:`failure_message`) names the scenario, epoch, batch and
quantity.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from .artifacts import Normalized, TrainHistory
from .config import TrainConfig
from .errors import PtychopipeError
from .network import (PoissonLoss, build_model_from_config, estimate_is_learned, estimate_model, head_model,
                      merge_canvas, training_model)
from .progress import duration, progress
from .telemetry import array_stats, check_finite, check_nonnegative, cpu_description

STAGE = "train"


class NonFiniteError(PtychopipeError, RuntimeError):
    """Training produced a non-finite loss or weights (one-line message)."""


# --------------------------------------------------------------------------- backend


def configure_backend(deterministic: bool = True) -> dict[str, Any]:
    """Thread pools and determinism of the Keras backend; returns what was set.

    Threads come from ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS``, which
    ``ptychopipe.cli.set_thread_limits`` sets from ``--threads`` before TensorFlow is
    imported (TensorFlow reads them at start-up; they are also applied through
    ``tf.config.threading`` here when the runtime is not yet initialised). For JAX the
    CLI's ``XLA_FLAGS`` apply. ``deterministic`` enables TensorFlow op determinism.
    ``device`` names what the backend computes on ("gpu: NVIDIA H100 80GB HBM3", or "cpu:
    " and :func:`~ptychopipe.telemetry.cpu_description`), so every train.h5 says which
    hardware its timings come from.
    """
    backend = keras.backend.backend()
    intra = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0") or 0)
    inter = int(os.environ.get("TF_NUM_INTEROP_THREADS", "0") or 0)
    info: dict[str, Any] = {"backend": backend, "intra_op_threads": intra, "inter_op_threads": inter,
                            "deterministic": bool(deterministic)}
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            if intra:
                tf.config.threading.set_intra_op_parallelism_threads(intra)
            if inter:
                tf.config.threading.set_inter_op_parallelism_threads(inter)
        except RuntimeError:  # runtime already initialised: the env vars were read at start-up
            pass
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        info["backend_version"] = tf.__version__
        gpus = tf.config.list_physical_devices("GPU")
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        info["device"] = f"gpu: {', '.join(names)}" if names else f"cpu: {cpu_description()}"
    elif backend == "jax":
        import jax

        info["backend_version"] = jax.__version__
        devices = jax.devices()
        info["device"] = (f"cpu: {cpu_description()}" if devices[0].platform == "cpu" else
                          f"{devices[0].platform}: " + ", ".join(sorted({d.device_kind for d in devices})))
    return info


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class GroupArrays:
    """One split's model inputs and targets. inputs (B, N, N, C) float32 [a·photons^0.5];
    offsets (B, C, 2) float32 [x, y] px; counts (B, N, N, C) float32 [counts]; estimate
    (B, N, N, C, 2) float32 [units of ā], the PINN's fixed-physics group estimate
    (:func:`with_estimate`), or None before it is computed."""

    inputs: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    estimate: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def x(self, idx: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
        """Input dict of the whole PINN for the groups ``idx``."""
        return {"diffraction": self.inputs[idx], "offsets": self.offsets[idx]}

    def head_x(self, idx: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
        """Input dict of :func:`ptychopipe.network.head_model` for the groups ``idx``."""
        if self.estimate is None:
            raise ValueError("GroupArrays.head_x: no estimate; compute it with with_estimate()")
        return {"estimate": self.estimate[idx], "offsets": self.offsets[idx]}

    def subset(self, idx: np.ndarray) -> "GroupArrays":
        """The groups ``idx`` (an index array into axis 0) of every array."""
        return GroupArrays(self.inputs[idx], self.offsets[idx], self.counts[idx],
                           None if self.estimate is None else self.estimate[idx])


def with_estimate(data: GroupArrays, model: keras.Model, batch_size: int) -> GroupArrays:
    """``data`` with the PINN's group estimate (:func:`ptychopipe.network.estimate_model`)
    of every group. It has no trainable weights, so it is computed once per training run
    instead of at every step."""
    if len(data) == 0:
        return GroupArrays(data.inputs, data.offsets, data.counts,
                           np.zeros((*data.inputs.shape, 2), np.float32))
    est = estimate_model(model).predict(data.x(), batch_size=batch_size, verbose=0)
    return GroupArrays(data.inputs, data.offsets, data.counts, np.asarray(est, dtype=np.float32))


def group_arrays(norm: Normalized, split: str) -> GroupArrays:
    """Float32 model arrays of ``split`` ("train" or "test") of a normalized dataset."""
    g = norm.sets[split]
    if g.counts is None:
        raise ValueError(f"normalized: {split}/counts missing; expected measured counts")
    return GroupArrays(np.ascontiguousarray(g.amplitude, dtype=np.float32),
                       np.ascontiguousarray(g.offsets, dtype=np.float32),
                       np.ascontiguousarray(g.counts, dtype=np.float32))


def max_abs_offset(norm: Normalized) -> float:
    """Largest |offset| (x or y, px) over the train and test groups: sizes the merge canvas."""
    return max(float(np.abs(g.offsets).max()) if g.offsets.size else 0.0 for g in norm.sets.values())


def validation_split(indices: np.ndarray, centres: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split the B training groups into (train, validation) rows (int64, sorted) that share
    no pattern, so that val_loss is measured on patterns the model never trains on.

    indices: (B, C) int, the pattern indices of each group; centres: (B, 2) float [x, y] px.
    Validation: the round(fraction·B) groups (at most B − 1) whose centres lie highest in
    y, a contiguous band at the edge of the training region (which split puts below the
    test region): train | validation | test along y. Training: every other group that
    contains none of the validation groups' patterns. Groups overlap (gridsize-2 neighbours
    share patterns, and seeds repeat when there are more groups than patterns), so a random
    choice of validation groups would leave most of their patterns in training (measured:
    45 % of them on quick gs1, 72 % on quick gs2); the band costs only the groups along its
    border (5 of 360 on quick gs2). Raises ValueError when no training group is left.
    """
    b = len(indices)
    n_val = min(int(round(fraction * b)), b - 1) if fraction > 0 else 0
    if n_val == 0:
        return np.arange(b, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(np.asarray(centres, dtype=np.float64)[:, 1], kind="stable")
    val = np.sort(order[b - n_val:])
    shares = np.isin(indices, indices[val]).any(axis=1)  # the validation groups themselves included
    train = np.flatnonzero(~shares)
    if len(train) == 0:
        raise ValueError(f"train.validation_fraction: {fraction} leaves no training group that shares no pattern "
                         f"with the {n_val} validation groups; expected a smaller fraction or more groups")
    return train.astype(np.int64), val.astype(np.int64)


class GroupBatches(keras.utils.PyDataset):
    """Mini-batches of groups in a seeded order that is redrawn at each epoch.

    The order of epoch e is ``default_rng([seed, e]).permutation(B)`` — independent of
    the backend's RNG, so TensorFlow and JAX see the same batches and the NaN guard can
    name the groups of any batch (:meth:`batch_indices`). The last batch may be short.
    """

    def __init__(self, data: GroupArrays, batch_size: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        if len(data) == 0:
            raise ValueError("train: no training groups; expected at least one")
        self.data = data
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = -1
        self.order = np.arange(len(data))

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def on_epoch_begin(self) -> None:
        self.epoch += 1
        if self.shuffle:
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.data))

    def batch_indices(self, i: int) -> np.ndarray:
        """Indices (into the training groups) of batch i of the current epoch."""
        return self.order[i * self.batch_size:(i + 1) * self.batch_size]

    def __getitem__(self, i: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        idx = self.batch_indices(i)
        x = self.data.x(idx) if self.data.estimate is None else self.data.head_x(idx)
        return x, self.data.counts[idx]


# --------------------------------------------------------------------------- callbacks


def _scalar(value: Any) -> float:
    try:
        return float(keras.ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return float("nan")


class EpochLog(keras.callbacks.Callback):
    """Per-epoch history (loss, val_loss, learning_rate, seconds, samples_per_second)
    and one progress line per epoch through ``log``.

    seconds: the whole epoch (training and validation); samples_per_second: training
    groups per second of the training phase only (validation excluded).
    """

    def __init__(self, scenario: str, n_train: int, epochs: int, log: Callable[[str], None]) -> None:
        super().__init__()
        self.scenario = scenario
        self.n_train = n_train
        self.epochs = epochs
        self.log = log
        self.history: dict[str, list[float]] = {k: [] for k in TrainHistory.UNITS}
        self._t0 = self._t_train = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0 = time.perf_counter()
        self._t_train = 0.0

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self._t0 and not self._t_train:
            self._t_train = time.perf_counter() - self._t0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        now = time.perf_counter()
        seconds = now - self._t0
        train_s = self._t_train or seconds
        lr = _scalar(self.model.optimizer.learning_rate)
        row = {"loss": _scalar(logs.get("loss", float("nan"))),
               "val_loss": _scalar(logs.get("val_loss", float("nan"))),
               "learning_rate": lr, "seconds": seconds, "samples_per_second": self.n_train / train_s}
        for k, v in row.items():
            self.history[k].append(v)
        left = self.epochs - epoch - 1  # at most: early stopping may end sooner
        eta = float(np.mean(self.history["seconds"])) * left
        self.log(f"[train] {self.scenario} epoch {epoch + 1}/{self.epochs}: loss {row['loss']:.6g} "
                 f"val_loss {row['val_loss']:.6g} lr {lr:.3g} {seconds:.1f} s "
                 f"{row['samples_per_second']:.1f} groups/s, ETA {duration(eta) if left else 'done'}")


def weight_stats(model: keras.Model) -> dict[str, dict[str, Any]]:
    """{weight path: array_stats} of every weight of ``model`` (NaN-safe)."""
    return {w.path: array_stats(keras.ops.convert_to_numpy(w)) for w in model.weights}


class NonFiniteGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss (the epoch's running mean) or trainable weight (see
    module docstring).

    After it fires, ``failure`` holds epoch and batch (1-based), the quantity, the
    (running) loss at that batch and the training-group indices of the offending batch;
    ``weights`` holds :func:`weight_stats` at that moment of ``report_model`` (default: the
    model being trained; ``fit`` passes the full PINN, whose layers the trained head shares)
    -- early stopping may restore earlier, finite weights before ``fit`` returns;
    ``model.stop_training`` is set.
    """

    def __init__(self, batches: GroupBatches | None = None, report_model: keras.Model | None = None) -> None:
        super().__init__()
        self.batches = batches
        self.report_model = report_model
        self.failure: dict[str, Any] | None = None
        self.weights: dict[str, dict[str, Any]] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def _bad_weight(self) -> str | None:
        for layer in self.model.layers:
            for w in layer.trainable_weights:
                if not np.all(np.isfinite(keras.ops.convert_to_numpy(w))):
                    return (f"weights of layer {layer.name} ({w.path}) after the update, "
                            "i.e. a non-finite gradient")
        return None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.failure is not None:
            return
        loss = _scalar((logs or {}).get("loss", float("nan")))
        quantity = "loss" if not np.isfinite(loss) else self._bad_weight()
        if quantity is None:
            return
        idx = self.batches.batch_indices(batch) if self.batches is not None else np.array([], np.int64)
        self.failure = {"epoch": self._epoch + 1, "batch": batch + 1, "quantity": quantity,
                        "loss": loss, "batch_groups": [int(i) for i in idx]}
        self.weights = weight_stats(self.report_model or self.model)
        self.model.stop_training = True


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`fit` returns: the trained PINN (full model), the per-epoch history
    (each (E,) float64), scalar attributes for train.h5, the (train, validation) group
    indices, and the NaN guard's failure record and the weight statistics at the failure
    (both None when training finished)."""

    model: keras.Model
    history: dict[str, np.ndarray]
    attrs: dict[str, Any]
    train_idx: np.ndarray
    val_idx: np.ndarray
    failure: dict[str, Any] | None
    failure_weights: dict[str, dict[str, Any]] | None = None


def _stdout(line: str) -> None:
    progress(line)  # the log, and the terminal during `snakemake` (ptychopipe.progress)


def fit(cfg: TrainConfig, norm: Normalized, scenario: str, log: Callable[[str], None] = _stdout,
        deterministic: bool = True, source: str = "normalized") -> TrainResult:
    """Build and train the PINN on ``norm``'s training split. Pure apart from the backend's
    global seed/determinism state; same config and data → same loss, val_loss and
    learning_rate history on CPU (seconds and samples_per_second are wall-clock).
    ``log`` receives one progress line per epoch; ``deterministic`` turns on TensorFlow's
    op determinism (the train stage always does; off lets XLA compile the step).

    Adam with a cosine decay from ``learning_rate`` to ``min_learning_rate`` over all
    steps; early stopping on val_loss (on loss when there is no validation split) with
    the best weights restored. Non-finite inputs or counts, or negative counts, in the
    training split are refused up front (InvariantError naming ``source`` and the array);
    the NaN guard covers what training itself produces.
    """
    backend_info = configure_backend(deterministic)
    n, c = cfg.model.N, cfg.model.gridsize ** 2
    if norm.probe.shape != (n, n):
        raise ValueError(f"normalized: probe: expected ({n}, {n}) from config N, got {norm.probe.shape}")
    if norm.gridsize != cfg.model.gridsize:
        raise ValueError(f"normalized: attr gridsize: expected {cfg.model.gridsize} (config), got {norm.gridsize}")
    data = group_arrays(norm, "train")
    if data.inputs.shape[1:] != (n, n, c):
        raise ValueError(f"{source}: train/inputs: expected (B, {n}, {n}, {c}), got {data.inputs.shape}")
    check_finite(STAGE, f"{source}: train/inputs", data.inputs)
    check_finite(STAGE, f"{source}: train/counts", data.counts)
    check_nonnegative(STAGE, f"{source}: train/counts", data.counts)
    groups = norm.sets["train"]
    train_idx, val_idx = validation_split(groups.indices, groups.centres, cfg.validation_fraction)
    train_set, val_set = data.subset(train_idx), data.subset(val_idx)

    keras.utils.set_random_seed(cfg.seed)
    canvas = merge_canvas(n, max_abs_offset(norm)) if c > 1 else n
    model = build_model_from_config(cfg, norm.probe, norm.amplitude_estimate, canvas, norm.input_scale)
    t_est = time.perf_counter()
    learned = estimate_is_learned(model)
    if learned:  # the estimate has weights: trained end to end through its iterations
        trainer = training_model(model)
    else:  # fixed physics: computed once per group, the head trains on it (shares model's weights)
        train_set = with_estimate(train_set, model, 64)
        val_set = with_estimate(val_set, model, 64)
        trainer = head_model(model)
    estimate_seconds = time.perf_counter() - t_est
    batches = GroupBatches(train_set, cfg.batch_size, cfg.seed)
    steps = len(batches) * cfg.epochs
    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate, decay_steps=steps, alpha=cfg.min_learning_rate / cfg.learning_rate)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule),
                    loss=PoissonLoss(norm.mean_counts, norm.input_scale, cfg.loss.mae_weight))

    has_val = len(val_set) > 0
    epoch_log = EpochLog(scenario, len(train_set), cfg.epochs, log)
    guard = NonFiniteGuard(batches, report_model=model)
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss" if has_val else "loss", mode="min",
                                            patience=cfg.early_stopping_patience, restore_best_weights=True)
    n_excluded = len(data) - len(train_set) - len(val_set)
    log(f"[train] {scenario}: {len(train_set)} training groups, {len(val_set)} validation groups "
        f"({n_excluded} left out: they share patterns with the validation groups), "
        f"C = {c}, N = {n}, {model.count_params()} parameters, canvas {canvas} px, "
        f"backend {backend_info['backend']} ({backend_info.get('backend_version', '?')}) on "
        f"{backend_info.get('device', '?')}, "
        f"threads {backend_info['intra_op_threads'] or 'default'}, deterministic {deterministic}; "
        f"group estimate ({cfg.model.estimate.algorithm}, {cfg.model.estimate.iterations} iterations, modulus "
        f"tolerance {model.get_layer('group_estimate').tolerance:.3g}) "
        + ("learned end to end" if learned else f"of all groups in {estimate_seconds:.1f} s"))
    t0 = time.perf_counter()
    trainer.fit(batches, epochs=cfg.epochs, verbose=0,
                validation_data=((val_set.x() if learned else val_set.head_x()), val_set.counts) if has_val else None,
                validation_batch_size=cfg.batch_size, callbacks=[guard, epoch_log, stopper])
    wall = time.perf_counter() - t0
    # A Keras model whose layers also serve a sub-model built from an intermediate tensor
    # (head_model) can no longer be saved, so the result is a fresh build with the weights.
    trained, model = model, build_model_from_config(cfg, norm.probe, norm.amplitude_estimate, canvas, norm.input_scale)
    model.set_weights(trained.get_weights())
    history = {k: np.asarray(v, dtype=np.float64) for k, v in epoch_log.history.items()}
    epochs_run = len(history["loss"])
    monitor = history["val_loss"] if has_val else history["loss"]
    best = int(np.nanargmin(monitor)) if epochs_run and np.isfinite(monitor).any() else -1
    steady = slice(1, None) if epochs_run > 1 else slice(None)
    train_s = len(train_set) / np.maximum(history["samples_per_second"], 1e-300)
    attrs = {
        "train_seconds": float(wall),
        "estimate_seconds": float(estimate_seconds),
        # steady state: groups per second of the training phases of epochs 2.. (epoch 1
        # includes tracing/compilation); samples_per_second_all counts every epoch
        "samples_per_second": float(len(train_set) * len(train_s[steady]) / train_s[steady].sum())
        if epochs_run else float("nan"),
        "samples_per_second_all": float(len(train_set) * epochs_run / train_s.sum()) if epochs_run else float("nan"),
        "epochs_run": int(epochs_run),
        "best_epoch": best + 1,
        "best_monitor": float(monitor[best]) if best >= 0 else float("nan"),
        "monitor": "val_loss" if has_val else "loss",
        "stopped_early": bool(epochs_run < cfg.epochs and guard.failure is None),
        "nan_status": "ok",
        "n_train_groups": len(train_set),
        "n_validation_groups": len(val_set),
        "n_excluded_groups": int(n_excluded),
        "n_parameters": int(model.count_params()),
        "canvas": int(canvas),
        "gridsize": cfg.model.gridsize,
        "amplitude_estimate": norm.amplitude_estimate,
        "mean_counts": norm.mean_counts,
        "input_scale": norm.input_scale,
        "keras_version": keras.__version__,
        **{k: (str(v) if not isinstance(v, (int, float, bool)) else v) for k, v in backend_info.items()},
    }
    if guard.failure is None and best >= 0:
        log(f"[train] {scenario}: {epochs_run} epochs in {wall:.1f} s; best {attrs['monitor']} "
            f"{attrs['best_monitor']:.6g} at epoch {best + 1} (weights restored)")
    return TrainResult(model, history, attrs, train_idx, val_idx, guard.failure, guard.weights)


def prediction_ratios(model: keras.Model, data: GroupArrays, amplitude_estimate: float,
                      batch_size: int, limit: int = 256) -> dict[str, float]:
    """Stage ratios on up to ``limit`` groups: predicted/measured mean counts per pattern and
    predicted amplitude (mean, and |P|²-weighted rms) over ā."""
    sub = data.subset(np.arange(min(limit, len(data))))
    out = model.predict(sub.x(), batch_size=batch_size, verbose=0)
    probe_w = np.abs(model.get_layer("far_field").probe()) ** 2
    amp = out["amplitude"].astype(np.float64)
    w = probe_w[None, :, :, None]
    return {
        "predicted_over_measured_counts": float(out["counts"].sum(axis=(1, 2)).mean() /
                                                sub.counts.sum(axis=(1, 2)).mean()),
        "amplitude_mean_over_estimate": float(amp.mean() / amplitude_estimate),
        "amplitude_weighted_rms_over_estimate":
            float(np.sqrt((w * amp ** 2).sum() / (w.sum() * amp.shape[0] * amp.shape[-1])) / amplitude_estimate),
    }


def failure_message(scenario: str, failure: dict[str, Any], diagnostics: Path) -> str:
    """The NaN guard's one-line message."""
    what = failure["quantity"]
    value = f" (loss = {failure['loss']})" if what == "loss" else ""
    return (f"[train] scenario {scenario}: non-finite {what}{value} at epoch {failure['epoch']}, "
            f"batch {failure['batch']}; training stopped; diagnostics: {diagnostics}")


def failure_record(scenario: str, result: TrainResult, norm: Normalized, message: str) -> dict[str, Any]:
    """The NaN guard's diagnostics (JSON-ready): message, failure record, history so far,
    per-weight statistics at the failing update (not the weights early stopping restored
    afterwards) and the statistics of the offending batch's inputs and counts."""
    failure = result.failure or {}
    groups = np.asarray(result.train_idx[failure.get("batch_groups", [])], dtype=np.int64)
    g = norm.sets["train"]
    batch = {"train_group_indices": groups.tolist(),
             "inputs": array_stats(g.amplitude[groups]), "offsets": array_stats(g.offsets[groups]),
             "counts": array_stats(g.counts[groups]) if g.counts is not None else {},
             "non_finite_inputs_per_group": [int(np.count_nonzero(~np.isfinite(g.amplitude[i]))) for i in groups]}
    return {
        "stage": STAGE, "scenario": scenario, "message": message, "failure": failure,
        "history": {k: v.tolist() for k, v in result.history.items()},
        "weights": result.failure_weights if result.failure_weights is not None else weight_stats(result.model),
        "batch": batch,
    }


def train_ratios(result: TrainResult, norm: Normalized, batch_size: int) -> dict[str, float]:
    """train.h5's telemetry ratios: :func:`prediction_ratios` of the trained model on the
    validation groups (the training groups when there are none) and the final over the
    initial loss."""
    data = group_arrays(norm, "train")
    monitor_set = data.subset(result.val_idx) if len(result.val_idx) else data.subset(result.train_idx)
    ratios = prediction_ratios(result.model, monitor_set, norm.amplitude_estimate, batch_size)
    h = result.history
    ratios["final_over_initial_loss"] = float(h["loss"][-1] / h["loss"][0]) if h["loss"][0] else float("nan")
    return ratios
