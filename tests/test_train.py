"""The train stage (ptychopipe.train, ptychopipe.stages.train): determinism, artifacts,
early stopping, the NaN guard, and an overfit test of the whole PINN on one group."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from ptychopipe import network as net
from ptychopipe import train as T
from ptychopipe.artifacts import Normalized, TrainHistory, read_telemetry
from ptychopipe.config import GradientOptions, ObjectConfig, UNetOptions, stage_config, to_json
from ptychopipe.physics import expected_counts, extract_patches
from ptychopipe.stages import train as train_stage
from pipeline_helpers import REPO

CUSTOM_PROBE = REPO / "data" / "probes" / "custom_probe_64.npz"


@pytest.fixture(scope="module")
def ci_gs1(ci_data):
    """(normalized.h5, merged params) of the session's ci gs1_ideal data (read-only)."""
    return ci_data["gs1_ideal"]["normalized"], ci_data["gs1_ideal"]["params"]


def _quiet(_line: str) -> None:
    pass


# --------------------------------------------------------------------------- pure helpers


def test_validation_split_is_a_band_that_shares_no_pattern_with_training():
    rng = np.random.default_rng(3)
    centres = rng.uniform(0, 100, (50, 2))
    one = np.arange(50)[:, None]  # gridsize 1, every group its own pattern
    tr, va = T.validation_split(one, centres, 0.1)
    assert len(va) == 5 and len(tr) == 45
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(50))
    assert centres[va, 1].min() > centres[tr, 1].max()  # the band highest in y
    assert len(T.validation_split(one, centres, 0.0)[1]) == 0
    assert len(T.validation_split(one[:2], centres[:2], 0.9)[0]) == 1  # one group always trains
    # groups that overlap: each (a row of 4 patterns) shares patterns with its neighbours
    patterns = np.arange(60).reshape(20, 3)
    groups = np.concatenate([patterns, np.roll(patterns[:, :1], -1, axis=0)], axis=1)  # last member: next row's
    y = np.arange(20.0)
    tr, va = T.validation_split(groups, np.stack([np.zeros(20), y], axis=1), 0.1)
    np.testing.assert_array_equal(va, [18, 19])
    assert not np.isin(groups[tr], groups[va]).any()
    # left out: row 17 (it holds row 18's first pattern) and row 0 (validation row 19 holds its first)
    np.testing.assert_array_equal(tr, np.arange(1, 17))
    # a repeated seed (the same group twice) never lands on both sides
    rep = np.concatenate([one[:10], one[9:10]])
    c = np.concatenate([centres[:10], centres[9:10]])
    tr, va = T.validation_split(rep, c, 0.1)
    assert not np.isin(rep[tr], rep[va]).any()
    with pytest.raises(ValueError, match=r"train\.validation_fraction: 0\.5 leaves no training group"):
        T.validation_split(np.zeros((4, 1), int), centres[:4], 0.5)  # every group is the same pattern


def test_group_batches_reshuffle_per_epoch_and_name_their_groups():
    rng = np.random.default_rng(0)
    data = T.GroupArrays(rng.random((10, 4, 4, 1)).astype(np.float32), np.zeros((10, 1, 2), np.float32),
                         rng.random((10, 4, 4, 1)).astype(np.float32))
    b = T.GroupBatches(data, batch_size=4, seed=1)
    assert len(b) == 3
    orders = []
    for _ in range(2):
        b.on_epoch_begin()
        seen = np.concatenate([b.batch_indices(i) for i in range(len(b))])
        assert sorted(seen.tolist()) == list(range(10))  # each group once per epoch, last batch short
        x, y = b[1]
        np.testing.assert_array_equal(x["diffraction"], data.inputs[b.batch_indices(1)])
        np.testing.assert_array_equal(y, data.counts[b.batch_indices(1)])
        orders.append(seen)
    assert not np.array_equal(orders[0], orders[1])
    b2 = T.GroupBatches(data, batch_size=4, seed=1)
    b2.on_epoch_begin()
    np.testing.assert_array_equal(b2.order, orders[0])  # backend-independent, seeded


# --------------------------------------------------------------------------- training


@pytest.mark.stage
def test_training_is_deterministic(ci_gs1):
    """Two trainings with one seed on the ci dataset: same loss history within 1e-6 (CPU)."""
    path, params = ci_gs1
    cfg = stage_config(params, "train")
    norm = Normalized.read(path)
    a = T.fit(cfg, norm, "gs1_ideal", log=_quiet)
    b = T.fit(cfg, norm, "gs1_ideal", log=_quiet)
    assert len(a.history["loss"]) == cfg.epochs
    for key in ("loss", "val_loss"):
        assert np.all(np.isfinite(a.history[key]))
        np.testing.assert_allclose(b.history[key], a.history[key], rtol=0, atol=1e-6)
    x = T.group_arrays(norm, "test").x()
    np.testing.assert_allclose(b.model.predict(x, verbose=0)["amplitude"], a.model.predict(x, verbose=0)["amplitude"],
                               rtol=1e-6)


@pytest.mark.stage
def test_run_writes_model_and_history(ci_gs1, tmp_path, capsys):
    path, params = ci_gs1
    cfg = stage_config(params, "train")
    out, hist, diag = tmp_path / "model.keras", tmp_path / "train.h5", tmp_path / "logs" / "train_nonfinite.json"
    train_stage.run(cfg, "gs1_ideal", normalized=path, out=out, history=hist, diagnostics=diag)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras", "train.h5"]  # no temp files, no diagnostics
    progress = [ln for ln in capsys.readouterr().out.splitlines() if re.search(r" epoch \d+/\d+: ", ln)]
    assert len(progress) == cfg.epochs and progress[0].startswith("[train] gs1_ideal epoch 1/")
    h = TrainHistory.read(hist)
    e = int(h.attrs["epochs_run"])
    assert e == cfg.epochs  # ci: 2 epochs, patience 2
    for k, v in h.history.items():
        assert v.shape == (e,) and v.dtype == np.float64, k
    lr = h.history["learning_rate"]
    assert np.all(np.diff(lr) < 0)  # cosine decay ...
    np.testing.assert_allclose(lr[-1], cfg.min_learning_rate, rtol=1e-5)  # ... down to the floor at the last step
    assert np.all(h.history["seconds"] > 0) and np.all(h.history["samples_per_second"] > 0)
    assert h.attrs["nan_status"] == "ok"
    assert h.attrs["train_seconds"] > 0 and h.attrs["samples_per_second"] > 0
    assert h.attrs["config_json"] == to_json(cfg) and h.attrs["stage"] == "train"
    assert h.attrs["backend"] == keras.backend.backend() and str(h.attrs["device"]).startswith(("cpu: ", "gpu: "))
    # the recorded split: validation patterns are never trained on (ci gs1 repeats seeds)
    with h5py.File(hist, "r") as f:
        tr, va = f["split/train_groups"][()], f["split/validation_groups"][()]
    rows = Normalized.read(path).sets["train"].indices
    assert len(va) and not np.isin(rows[tr], rows[va]).any()
    assert len(tr) + len(va) + int(h.attrs["n_excluded_groups"]) == len(rows)
    stats, ratios = read_telemetry(hist)
    assert "history/loss" in stats
    for k in ("predicted_over_measured_counts", "amplitude_mean_over_estimate", "final_over_initial_loss"):
        assert np.isfinite(ratios[k]), k
    assert 0.5 < ratios["amplitude_mean_over_estimate"] < 2.0
    # the saved model loads (with the registered layers) and carries the normalize stage's ā;
    # that it predicts what the stage trained is test_infer's (stored patches vs the forward model)
    m = keras.saving.load_model(out, compile=False)
    np.testing.assert_allclose(net.model_amplitude_estimate(m), Normalized.read(path).amplitude_estimate)


@pytest.mark.stage
def test_early_stopping_restores_the_best_weights(ci_gs1):
    """After fit, the model's validation loss is the best epoch's, not the last one's. A
    constant learning rate of 3e-2 overshoots after epoch 2 on the ci data (val_loss 5.1e8,
    0.116, 0.122, measured), so with patience 1 the run stops early with a best epoch before
    the last."""
    path, params = ci_gs1
    cfg = stage_config(params, "train")
    cfg = dataclasses.replace(cfg, epochs=6, early_stopping_patience=1, learning_rate=3e-2, min_learning_rate=3e-2)
    norm = Normalized.read(path)
    r = T.fit(cfg, norm, "gs1_ideal", log=_quiet)
    val = T.group_arrays(norm, "train").subset(r.val_idx)
    t = net.training_model(r.model)
    t.compile(loss=net.PoissonLoss(norm.mean_counts, norm.input_scale))
    got = t.evaluate(val.x(), val.counts, batch_size=cfg.batch_size, verbose=0)
    vl = r.history["val_loss"]
    assert int(np.argmin(vl)) < len(vl) - 1, f"the case under test needs a best epoch before the last: {vl}"
    np.testing.assert_allclose(got, np.min(vl), rtol=1e-5)
    assert not np.isclose(got, vl[-1], rtol=1e-4), (got, vl)  # not the last epoch's weights
    assert r.attrs["best_epoch"] == int(np.argmin(vl)) + 1
    assert r.attrs["stopped_early"] and len(vl) < cfg.epochs


# --------------------------------------------------------------------------- NaN guard


def test_poisoned_inputs_are_refused_before_training(ci_gs1, tmp_path):
    """A NaN in one training group's input (normalize would never write one): one line
    naming the file, the array and the count; nothing is written."""
    from ptychopipe.telemetry import InvariantError

    path, params = ci_gs1
    cfg = stage_config(params, "train")
    poisoned = tmp_path / "normalized.h5"
    shutil.copy(path, poisoned)
    with h5py.File(poisoned, "r+") as f:
        f["train/inputs"][3, 10, 10, 0] = np.nan
    with pytest.raises(InvariantError, match=r"\[train\] .*normalized.h5: train/inputs: 1 non-finite values"):
        train_stage.run(cfg, "gs1_ideal", normalized=poisoned, out=tmp_path / "model.keras",
                        history=tmp_path / "train.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["normalized.h5"]


@pytest.mark.stage
def test_nan_guard_absurd_learning_rate_fails_with_one_line_and_diagnostics(ci_gs1, tmp_path):
    """learning_rate 1e3: training blows up in epoch 1. The CLI exits 1 with one line naming
    scenario, epoch, batch and quantity; the diagnostic JSON (history so far, per-weight
    stats, the offending batch's input stats) is kept; no model or history is written."""
    path, params = ci_gs1
    cfg = stage_config(params, "train")
    # the 5-iteration estimate and U-Net of the ci preset (gs1_ideal itself ships the 200-iteration estimate,
    # whose U-Net stays finite, if useless, at this learning rate)
    cfg = dataclasses.replace(cfg, learning_rate=1e3, min_learning_rate=1e3,
                              model=dataclasses.replace(cfg.model, estimate=dataclasses.replace(cfg.model.estimate,
                                                                                           iterations=5)))
    out, hist, diag = tmp_path / "model.keras", tmp_path / "train.h5", tmp_path / "logs" / "train_nonfinite.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ptychopipe", "train", "--scenario", "gs1_ideal", "--config", to_json(cfg),
         "--normalized", str(path), "--out", str(out), "--history", str(hist), "--diagnostics", str(diag),
         "--threads", "1"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ptychopipe train: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    m = re.fullmatch(r"ptychopipe train: error: \[train\] scenario gs1_ideal: non-finite "
                     r"(loss \(loss = nan\)|weights of layer \S+ \(\S+\) after the update, i\.e\. a non-finite "
                     r"gradient) at epoch (\d+), batch (\d+); training stopped; diagnostics: (.+)", errors[0])
    assert m, errors[0]
    assert Path(m.group(4)) == diag
    assert not out.exists() and not hist.exists()
    d = json.loads(diag.read_text())
    assert d["message"] in errors[0]
    assert d["failure"]["epoch"] == int(m.group(2)) == 1 and d["failure"]["batch"] == int(m.group(3))
    assert d["failure"]["quantity"] == m.group(1).split(" (loss")[0]
    assert set(d["history"]) == {"loss", "val_loss", "learning_rate", "seconds", "samples_per_second"}
    assert any(name.startswith("amp_out/") for name in d["weights"])
    assert all({"mean", "nan", "inf"} <= set(st) for st in d["weights"].values())
    assert sum(st["nan"] + st["inf"] for st in d["weights"].values()) > 0 or d["failure"]["quantity"] == "loss"
    assert 0 < len(d["batch"]["train_group_indices"]) <= cfg.batch_size
    assert d["batch"]["inputs"]["nan"] == 0 and d["batch"]["inputs"]["shape"][0] == len(d["batch"]["train_group_indices"])


@pytest.mark.stage
def test_model_and_history_are_written_as_a_pair(ci_gs1, tmp_path, monkeypatch):
    """If train.h5 cannot be written, no model.keras appears either (and no temporary file)."""
    path, params = ci_gs1
    cfg = dataclasses.replace(stage_config(params, "train"), epochs=1)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    write = TrainHistory.write
    monkeypatch.setattr(TrainHistory, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        train_stage.run(cfg, "gs1_ideal", normalized=path, out=tmp_path / "model.keras", history=tmp_path / "train.h5")
    assert list(tmp_path.iterdir()) == []
    # and when both are written, train.h5 is renamed last: a new train.h5 has its model beside it
    monkeypatch.setattr(TrainHistory, "write", write)
    replace, order = os.replace, []

    def recording(src, dst):
        order.append(os.path.basename(dst))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", recording)
    train_stage.run(cfg, "gs1_ideal", normalized=path, out=tmp_path / "model.keras", history=tmp_path / "train.h5")
    assert [name for name in order if not name.startswith(".")] == ["model.keras", "train.h5"]


@pytest.mark.stage
def test_nan_guard_diagnostics_hold_the_weights_of_the_failure_not_the_restored_ones(ci_gs1, tmp_path, monkeypatch):
    """A NaN count in batch 2 of epoch 2: early stopping restores epoch 1's (finite) weights
    when training ends, but the diagnostic file shows the weights as the failing update left
    them (non-finite), which is what one needs to see."""
    path, params = ci_gs1
    cfg = dataclasses.replace(stage_config(params, "train"), epochs=3, early_stopping_patience=5)
    getitem = T.GroupBatches.__getitem__

    def poisoned(self, i):
        x, counts = getitem(self, i)
        if self.epoch == 1 and i == 1:
            counts = counts.copy()
            counts[0, 3, 3] = np.nan
        return x, counts

    monkeypatch.setattr(T.GroupBatches, "__getitem__", poisoned)
    diag = tmp_path / "logs" / "train_nonfinite.json"
    with pytest.raises(T.NonFiniteError, match=r"non-finite loss \(loss = nan\) at epoch 2, batch 2;"):
        train_stage.run(cfg, "gs1_ideal", normalized=path, out=tmp_path / "model.keras", history=tmp_path / "train.h5",
                        diagnostics=diag)
    d = json.loads(diag.read_text())
    assert d["failure"]["epoch"] == 2 and d["failure"]["batch"] == 2
    assert sum(st["nan"] + st["inf"] for st in d["weights"].values()) > 0
    assert not (tmp_path / "model.keras").exists() and not (tmp_path / "train.h5").exists()


def test_nan_guard_names_the_layer_whose_weights_became_non_finite():
    """A finite loss but non-finite weights after the update (a non-finite gradient) is
    reported as such, naming the layer."""
    from ptychopipe.simulate import ideal_probe

    m = net.build_model(64, 1, ideal_probe(64, 32), 1.0, 64, GradientOptions(1, 0.0), UNetOptions(4, 1, np.pi))
    guard = T.NonFiniteGuard()
    guard.set_model(m)
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(0, {"loss": 0.5})
    assert guard.failure is None
    kernel = m.get_layer("phase_dec0_b").kernel
    bad = keras.ops.convert_to_numpy(kernel).copy()
    bad[0, 0, 0, 0] = np.inf
    kernel.assign(bad)
    guard.on_train_batch_end(4, {"loss": 0.5})
    assert guard.failure["epoch"] == 3 and guard.failure["batch"] == 5
    assert guard.failure["quantity"].startswith("weights of layer phase_dec0_b")
    assert "non-finite gradient" in guard.failure["quantity"]
    assert m.stop_training
    msg = T.failure_message("sc1", guard.failure, Path("logs/x.json"))
    assert msg.startswith("[train] scenario sc1: non-finite weights of layer phase_dec0_b") and "epoch 3, batch 5" in msg


# --------------------------------------------------------------------------- overfit


@pytest.mark.stage
def test_overfit_one_group_reaches_the_poisson_floor():
    """One gridsize-2 group (custom probe, 1e5 photons/pattern), 800 Adam steps with a
    cosine learning rate, the quick preset's U-Net width (8 filters): the loss falls to
    within 1.5x its Poisson floor (the deviance of the true λ; measured 0.93x: the U-Net
    also fits some of the noise) and the predicted amplitude correlates >= 0.9 with the
    truth patches where the probe is bright (|P|² > 0.1 max; measured 0.938). 70-115 s on
    2 CPU cores (16 filters: 165-240 s, 0.2 s per step)."""
    from ptychopipe.simulate import load_probe, make_object

    T.configure_backend(deterministic=True)
    n, steps = 64, 800
    obj = make_object(ObjectConfig("lines", 128, 42, 60, (8.0, 64.0), 1.0, (0.5, 1.5), (-1.0, 1.0)))
    probe = load_probe(CUSTOM_PROBE, "probeGuess", n)
    offs = np.array([[-6.2, -5.1], [5.7, -6.4], [-5.5, 6.3], [6.1, 5.2]])
    offs -= offs.mean(axis=0)
    truth = extract_patches(obj, np.array([64.3, 61.7]) + offs, n)  # (C, N, N)
    lam = expected_counts((probe.real, probe.imag), (truth.real, truth.imag))
    scale = np.sqrt(1e5 / lam.sum(axis=(1, 2)).mean())
    probe, lam = probe * scale, lam * scale ** 2
    counts = np.random.default_rng(0).poisson(lam).astype(np.float32)
    mean_counts = float(counts.sum(axis=(1, 2)).mean())
    a = np.sqrt((n / 2) ** 2 / mean_counts)
    abar = float(np.sqrt(mean_counts / np.sum(np.abs(probe) ** 2)))
    keras.utils.set_random_seed(0)
    m = net.build_model(n, 2, probe, abar, net.merge_canvas(n, float(np.abs(offs).max())), GradientOptions(1, 0.0),
                        UNetOptions(8, 3, np.pi))
    t = net.training_model(m)
    t.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps, alpha=0.01)),
              loss=net.PoissonLoss(mean_counts, a))
    x1 = {"diffraction": np.moveaxis(a * np.sqrt(counts), 0, -1)[None].astype(np.float32),
          "offsets": offs[None].astype(np.float32)}
    y1 = np.moveaxis(counts, 0, -1)[None]
    floor = float(net.poisson_deviance_np(y1, np.moveaxis(lam, 0, -1)[None], mean_counts)[0])
    start = t.evaluate(x1, y1, verbose=0)
    t.fit({k: np.repeat(v, steps, axis=0) for k, v in x1.items()}, np.repeat(y1, steps, axis=0),
          batch_size=1, epochs=1, shuffle=False, verbose=0)
    end = t.evaluate(x1, y1, verbose=0)
    assert end < 0.05 * start
    assert end < 1.5 * floor, (end, floor)
    amp = np.moveaxis(m.predict(x1, verbose=0)["amplitude"][0], -1, 0)
    bright = np.broadcast_to(np.abs(probe) ** 2 > 0.1 * np.max(np.abs(probe) ** 2), amp.shape)
    r = np.corrcoef(amp[bright], np.abs(truth)[bright])[0, 1]
    assert r >= 0.9, r


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow", reason="TF-specific")
def test_backend_configuration_reports_threads_and_determinism():
    info = T.configure_backend(deterministic=True)

    assert info["backend"] == "tensorflow" and info["deterministic"]
    from tensorflow.python.framework.config import is_op_determinism_enabled

    assert is_op_determinism_enabled()
    import tensorflow as tf

    from ptychopipe.telemetry import cpu_description

    gpu = bool(tf.config.list_physical_devices("GPU"))
    assert info["device"].startswith("gpu: ") if gpu else info["device"] == f"cpu: {cpu_description()}", info
    assert f"{os.cpu_count()} CPUs" in cpu_description()


def test_each_epoch_prints_one_line_with_its_eta():
    """One line per epoch: scenario, epoch/total, loss, val_loss, seconds and the ETA (mean epoch
    time x epochs left, at most: early stopping may end sooner); the last says done."""
    import types

    lines: list[str] = []
    cb = T.EpochLog("gs1_ideal", n_train=100, epochs=3, log=lines.append)
    cb.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(learning_rate=1e-3)))
    for epoch, loss in enumerate((2.0, 1.5, 1.25)):
        cb.on_epoch_begin(epoch)
        cb._t0 -= 30.0  # a 30 s epoch
        cb.on_epoch_end(epoch, {"loss": loss, "val_loss": loss + 0.1})
    assert re.fullmatch(r"\[train\] gs1_ideal epoch 1/3: loss 2 val_loss 2\.1 lr 0\.001 30\.0 s [\d.]+ groups/s, "
                        r"ETA 1m00s", lines[0]), lines[0]
    assert lines[1].endswith(", ETA 30s") and lines[2].endswith(", ETA done"), lines
