"""The learned unrolled reconstruction (network.UnrolledEstimate, estimate_algorithm "unrolled"):
shapes, the Keras layer against a NumPy reference of the same iterations, gradients into
every learned parameter, determinism for a seed, save -> load -> identical predictions, and
the config's bound on its iterations."""

from __future__ import annotations

import copy

import keras
import numpy as np
import pytest
from scipy.signal import correlate2d

from ptychopipe import network as net
from ptychopipe import physics, solvers
from ptychopipe.config import ConfigError, UnrolledOptions, resolve_scenarios, stage_config
from ptychopipe.simulate import ideal_probe

N = 64


def _data(rng: np.random.Generator, b: int, c: int, probe: np.ndarray, max_off: float = 6.0):
    """Noiseless measured amplitudes (input units) of b groups of c random smooth patches."""
    from scipy.ndimage import gaussian_filter

    obj = (0.6 + rng.random((160, 160))) * np.exp(1j * rng.uniform(-1, 1, (160, 160)))
    obj = gaussian_filter(obj.real, 2.0) + 1j * gaussian_filter(obj.imag, 2.0)
    centres = rng.uniform(60, 100, (b, 2))
    offs = (rng.uniform(-max_off, max_off, (b, c, 2)) if c > 1 else np.zeros((b, 1, 2))).astype(np.float32)
    p = physics.extract_patches(obj, (centres[:, None, :] + offs).reshape(-1, 2), N).reshape(b, c, N, N)
    pe = net.estimate_probe(probe)
    fr, fi = physics.far_field((pe * p).real, (pe * p).imag)
    x = np.sqrt(fr ** 2 + fi ** 2).astype(np.float32)  # (b, c, N, N)
    return np.moveaxis(x, 1, -1), offs


def _layer(gridsize: int, k: int = 3, tolerance: float = 0.02, seed: int = 0):
    probe = ideal_probe(N, 24) * 1e3
    canvas = net.merge_canvas(N, 6.0) if gridsize > 1 else N
    keras.utils.set_random_seed(seed)
    return net.UnrolledEstimate(probe, canvas, iterations=k, tolerance=tolerance, filters=4), probe, canvas


def _randomise(layer: net.UnrolledEstimate, rng: np.random.Generator) -> None:
    """Give every learned parameter a non-trivial value (a trained-looking layer)."""
    for w in layer.trainable_weights:
        w.assign((0.05 * rng.normal(size=w.shape)).astype(np.float32))


def _numpy_reference(layer: net.UnrolledEstimate, x: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """The documented iterations in NumPy float64 with the layer's weights."""
    get = lambda w: np.asarray(keras.ops.convert_to_numpy(w), dtype=np.float64)  # noqa: E731
    pr, pi = get(layer.probe_re), get(layer.probe_im)
    amp = np.moveaxis(x.astype(np.float64), -1, 1)
    dm = solvers.difference_map_operators(amp, offs[..., 0].astype(np.float64), offs[..., 1].astype(np.float64),
                                          (pr, pi), layer.canvas, physics.NUMPY_OPS)
    light = dm.illumination / dm.illumination.max(axis=(1, 2), keepdims=True)
    w1, b1, w2, b2 = (get(v) for v in (layer.prior_w1, layer.prior_b1, layer.prior_w2, layer.prior_b2))

    def conv(z, w, b):  # (B, S, S, Cin) * (3, 3, Cin, Cout), zero-padded "same" cross-correlation
        out = np.zeros((*z.shape[:3], w.shape[-1]))
        for i in range(z.shape[0]):
            for co in range(w.shape[-1]):
                out[i, ..., co] = sum(correlate2d(z[i, ..., ci], w[:, :, ci, co], mode="same")
                                      for ci in range(w.shape[2])) + b[co]
        return out

    state = dm.start
    for k in range(layer.iterations):
        def prior(o_r, o_i, k=k):
            h = np.maximum(conv(np.stack([o_r - 1.0, o_i, light], -1), w1[k], b1[k]), 0.0)
            d = conv(h, w2[k], b2[k])
            return o_r + d[..., 0], o_i + d[..., 1]
        beta = 2.0 / (1.0 + np.exp(-get(layer.relaxation)[k]))
        state = dm.update(state, beta, layer.tolerance * np.exp(get(layer.log_tolerance)[k]), prior=prior)
    re, im = dm.output(*dm.overlap(*state))
    return np.stack([np.moveaxis(re, 1, -1), np.moveaxis(im, 1, -1)], -1)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_untrained_layer_is_the_difference_map(gridsize):
    """Relaxation 1, tolerance factor 1 and a zero prior: K iterations of the plain
    difference map (solvers.difference_map_estimate, NumPy float64), shape (B, N, N, C, 2)."""
    c = gridsize ** 2
    layer, probe, canvas = _layer(gridsize)
    x, offs = _data(np.random.default_rng(1), 3, c, probe)
    got = keras.ops.convert_to_numpy(layer(x, offs))
    assert got.shape == (3, N, N, c, 2) and got.dtype == np.float32
    pe = net.estimate_probe(probe).astype(np.complex64).astype(np.complex128)
    re, im = solvers.difference_map_estimate(np.moveaxis(x, -1, 1).astype(np.float64), offs[..., 0], offs[..., 1],
                                             (pe.real, pe.imag), canvas, 3, tolerance=0.02)
    ref = np.stack([np.moveaxis(re, 1, -1), np.moveaxis(im, 1, -1)], -1)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-4


@pytest.mark.parametrize("gridsize", [1, 2])
def test_learned_iterations_keras_equal_numpy(gridsize):
    """With non-trivial learned parameters the Keras layer (float32) computes the documented
    iterations (NumPy float64 reference of relaxation, tolerance factor and prior CNN)."""
    c = gridsize ** 2
    layer, probe, _ = _layer(gridsize, k=2)
    x, offs = _data(np.random.default_rng(2), 2, c, probe)
    layer(x, offs)  # build
    _randomise(layer, np.random.default_rng(3))
    got = keras.ops.convert_to_numpy(layer(x, offs))
    ref = _numpy_reference(layer, x, offs)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-4


def _model(gridsize: int = 2, seed: int = 0) -> keras.Model:
    probe = ideal_probe(N, 24) * 1e3
    keras.utils.set_random_seed(seed)
    # noise tolerance 0.04 standard deviations at input scale 1: δ = 0.02 in input units
    return net.build_model(N, gridsize, probe, 0.8, net.merge_canvas(N, 6.0), UnrolledOptions(3, 0.04, 4))


def test_model_shapes_and_gradients_reach_every_learned_parameter():
    m = _model()
    probe = net.model_probe(m)
    x, offs = _data(np.random.default_rng(4), 2, 4, probe.astype(np.complex128))
    out = m.predict({"diffraction": x, "offsets": offs}, verbose=0)
    assert set(out) == {"counts", "amplitude", "phase"}
    assert all(v.shape == (2, N, N, 4) and np.all(np.isfinite(v)) for v in out.values())
    assert net.model_amplitude_estimate(m) == 0.8 and net.estimate_is_learned(m)
    assert not any(layer.name.startswith("enc") for layer in m.layers)  # no U-Net
    import tensorflow as tf

    counts = tf.constant(out["counts"] * 1.05)
    with tf.GradientTape() as tape:
        lam = m({"diffraction": x, "offsets": offs})["counts"]
        loss = tf.reduce_mean(net.PoissonLoss(float(np.mean(out["counts"].sum(axis=(1, 2)))))(counts, lam))
    grads = tape.gradient(loss, m.trainable_weights)
    names = [w.name for w in m.trainable_weights]
    assert sorted(names) == sorted(["relaxation", "log_tolerance", "prior_w1", "prior_b1", "prior_w2", "prior_b2"])
    for w, g in zip(m.trainable_weights, grads):
        assert g is not None and np.all(np.isfinite(g)), w.name
        if w.name not in ("prior_w1", "prior_b1"):  # their gradient passes the zero-initialised second conv
            assert float(tf.reduce_max(tf.abs(g))) > 0, w.name


def test_an_unrolled_model_has_one_reconstruction_mode():
    from ptychopipe.benchmarks.timetoquality import mode_label, pipeline_modes

    m = _model()
    assert list(pipeline_modes(m)) == ["network"]  # its learning is all in the estimate
    from ptychopipe.config import DifferenceMapOptions, ModelConfig, UNetOptions

    assert mode_label(ModelConfig(UnrolledOptions(3), None, N=64, gridsize=2), "network") == "unrolled x3 (learned) + network"
    dm = ModelConfig(DifferenceMapOptions(10), UNetOptions(), N=64, gridsize=2)
    assert mode_label(dm, "network") == "difference_map x10 + U-Net + network"
    assert mode_label(dm, "estimate_only") == "difference_map x10, no network"


def test_save_load_gives_identical_predictions(tmp_path):
    from ptychopipe.infer import load_model
    from ptychopipe.stages.train import save_model_atomic

    m = _model()
    _randomise(m.get_layer("group_estimate"), np.random.default_rng(5))
    x, offs = _data(np.random.default_rng(6), 3, 4, net.model_probe(m).astype(np.complex128))
    before = m.predict({"diffraction": x, "offsets": offs}, verbose=0)
    save_model_atomic(m, tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    after = loaded.predict({"diffraction": x, "offsets": offs}, verbose=0)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    assert net.model_amplitude_estimate(loaded) == 0.8


def _unrolled_train_config(params):
    p = copy.deepcopy(params)
    p["model"].update(estimate_algorithm="unrolled", estimate_iterations=2, prior_filters=4)
    p["train"].update(epochs=2)
    return stage_config(p, "train")


@pytest.mark.stage
def test_training_is_deterministic_for_a_seed(ci_data):
    """Same config and data → the same loss history and weights (train.fit, twice)."""
    from ptychopipe.artifacts import Normalized
    from ptychopipe.train import fit

    d = ci_data["gs2_custom"]
    cfg = _unrolled_train_config(d["params"])
    norm = Normalized.read(d["normalized"])
    a = fit(cfg, norm, "gs2_custom", log=lambda s: None)
    b = fit(cfg, norm, "gs2_custom", log=lambda s: None)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert np.all(np.isfinite(a.history["loss"]))
    assert a.attrs["n_parameters"] == a.model.count_params()


def test_config_bounds_the_unrolled_iterations_and_leaves_unet_knobs_out(raw_config):
    raw = copy.deepcopy(raw_config)
    raw["scenarios"]["gs2_custom"]["model"] = {"estimate_algorithm": "unrolled", "estimate_iterations": 11}
    with pytest.raises(ConfigError, match=r"model\.estimate_iterations: expected <= 10 .* got 11"):
        resolve_scenarios(raw, "ci")
    raw["scenarios"]["gs2_custom"]["model"]["estimate_iterations"] = 10
    p = resolve_scenarios(raw, "ci")["gs2_custom"]
    m = stage_config(p, "train").model
    assert m.unet is None and m.estimate == UnrolledOptions(10, p["model"]["estimate_noise_tolerance"],
                                                            p["model"]["prior_filters"])
    p["model"]["filters"] = 99  # a U-Net knob: the unrolled model's stage config does not change
    assert stage_config(p, "train").model == m
