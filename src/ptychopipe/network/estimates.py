"""The network's physics input layers: a group's diffraction and offsets → its object estimate.

What belongs here: the estimate layers, which run a known-probe ptychography solver of
:mod:`ptychopipe.solvers` on one group (:class:`GroupEstimate`, fixed physics without
weights; :class:`UnrolledEstimate`, difference-map iterations with learned parameters),
the probe in the network's input units they share (:func:`estimate_probe`),
:class:`EstimateObject` (an estimate taken as the object, for a model without a U-Net),
and :data:`ESTIMATE_LAYERS`, the one table from an estimate algorithm's options class
(:data:`ptychopipe.config.ESTIMATE_OPTIONS`) to how its layer is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from .. import solvers
from ..config import MAX_UNROLLED_ITERATIONS, DifferenceMapOptions, GradientOptions, UnrolledOptions
from .layers import PACKAGE, array_initializer, channels_first, channels_last


def estimate_probe(probe: np.ndarray) -> np.ndarray:
    """P_abs·N/(2‖P_abs‖), (N, N) complex128: the probe in the units of the network input.

    With X = a·sqrt(n) and a·ā = (N/2)/‖P_abs‖ (docs/design.md, 'Dose and normalisation'), |far_field(P_abs·O)|·a = X
    becomes |far_field(P'·O/ā)| = X for P' = P_abs·a·ā: the group estimate computed from X
    with P' is the object in units of ā, whatever the dose."""
    p = np.asarray(probe, dtype=np.complex128)
    norm = float(np.sqrt(np.sum(np.abs(p) ** 2)))
    if not norm > 0:
        raise ValueError("probe: all zero; expected a non-zero P_abs")
    return p * (p.shape[-1] / (2.0 * norm))


def add_estimate_probe(layer: layers.Layer, n: int) -> None:
    """Give an estimate layer its probe in input units (:func:`estimate_probe` of the P_abs it
    was built with, ``layer._probe_init``, or zeros to be loaded) as the non-trainable
    (N, N) weights ``probe_re``, ``probe_im``."""
    p = layer._probe_init
    if p is not None and p.shape != (n, n):
        raise ValueError(f"probe: expected shape ({n}, {n}), got {p.shape}")
    layer.probe_re = layer.add_weight(name="probe_re", shape=(n, n), trainable=False,
                                      initializer=array_initializer(None if p is None else p.real))
    layer.probe_im = layer.add_weight(name="probe_im", shape=(n, n), trainable=False,
                                      initializer=array_initializer(None if p is None else p.imag))


@keras.saving.register_keras_serializable(package=PACKAGE)
class GroupEstimate(layers.Layer):
    """The network's first layer, fixed physics: diffraction X (B, N, N, C) and offsets
    (B, C, 2) → the group's object estimate (B, N, N, C, 2) float32 [Re, Im, units of ā].

    ``iterations`` steps of known-probe ptychography on the group's own canvas
    (:func:`solvers.group_estimate`, from the flat object 1: ``algorithm`` "gradient", with
    Nesterov ``momentum``, or "difference_map", :func:`solvers.difference_map_estimate`,
    whose modulus projection accepts far-field amplitudes within ``tolerance`` of the
    measured ones, input units: :func:`solvers.noise_tolerance`),
    using the probe in input units (:func:`estimate_probe`, a non-trainable weight saved
    with the model). Parameter-free and data-independent of the weights, so the train
    stage computes it once per group (:func:`~ptychopipe.network.build.estimate_model`)
    instead of every step.

    Why: the network predicts one group at a time, and what that group's
    C patterns determine is what its C overlapping far-field amplitudes and the known
    probe say about its patches, i.e. a small ptychography problem. Solving it with
    fixed physics leaves the U-Net a *correction* to learn (priors for what the group's
    data cannot pin down), instead of a phase-retrieval algorithm. On the quick preset,
    gs2_custom, the estimate alone stitched from the test groups scores amplitude r
    0.73 (1 iteration), 0.93 (20), 0.96 (100) with the gradient algorithm; the difference
    map brings gs2_ideal from 0.78 to 0.996 at 1e9 photons, and with a tolerance of one
    noise standard deviation it keeps the bias at 1e4 photons too (the pipeline's default;
    :func:`solvers.modulus_projection`).
    """

    def __init__(self, probe: np.ndarray | None = None, canvas: int = 0, iterations: int = 1,
                 momentum: float = 0.0, algorithm: str = "gradient", tolerance: float = 0.0,
                 **kwargs: Any) -> None:
        # The defaults are for Keras deserialisation: a model saved before the difference map
        # existed has no "algorithm" in its config and was built with the gradient algorithm.
        # build_model always passes all of them.
        super().__init__(**kwargs)
        if algorithm not in solvers.ESTIMATE_ALGORITHMS:
            raise ValueError(f"model.estimate_algorithm: expected one of {list(solvers.ESTIMATE_ALGORITHMS)}, "
                             f"got {algorithm!r}")
        self.algorithm = str(algorithm)
        if int(iterations) < 1:
            raise ValueError(f"model.estimate_iterations: expected >= 1, got {iterations}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"model.estimate_momentum: expected 0 <= momentum < 1, got {momentum}")
        if not float(tolerance) >= 0.0:
            raise ValueError(f"model.estimate_noise_tolerance: expected >= 0, got {tolerance}")
        self.canvas, self.iterations, self.momentum = int(canvas), int(iterations), float(momentum)
        self.tolerance = float(tolerance)
        self._probe_init = None if probe is None else estimate_probe(probe)

    def build(self, x_shape: tuple, offsets_shape: tuple | None = None) -> None:
        add_estimate_probe(self, int(x_shape[1]))

    def call(self, x: Any, offsets: Any) -> Any:
        x = ops.stop_gradient(x)
        offsets = ops.cast(offsets, x.dtype)
        probe = (ops.convert_to_tensor(self.probe_re), ops.convert_to_tensor(self.probe_im))
        re, im = solvers.group_estimate(channels_first(x), offsets[..., 0], offsets[..., 1], probe, self.canvas,
                                        self.iterations, self.momentum, ops=ops, algorithm=self.algorithm,
                                        tolerance=self.tolerance)
        return ops.stack([channels_last(re), channels_last(im)], axis=-1)

    def compute_output_shape(self, x_shape: tuple, offsets_shape: tuple | None = None) -> tuple:
        return (*x_shape, 2)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "canvas": self.canvas, "iterations": self.iterations,
                "momentum": self.momentum, "algorithm": self.algorithm,
                "tolerance": self.tolerance}  # the probe is a weight


@keras.saving.register_keras_serializable(package=PACKAGE)
class UnrolledEstimate(layers.Layer):
    """Learned unrolled difference map: diffraction X (B, N, N, C) and offsets (B, C, 2) →
    the group's object (B, N, N, C, 2) float32 [Re, Im; units of ā], like
    :class:`GroupEstimate`, but each of its ``iterations`` (K ≤ 10) steps has learned
    parameters:

        O = overlap(ψ);  O ← O + prior_k(O);  φ_c = P_c·crop_c(O)
        ψ_c ← ψ_c + β_k·(Π_{τ_k·δ}(2φ_c − ψ_c) − φ_c)

    (:func:`solvers.difference_map_operators`). β_k = 2·sigmoid(b_k) is the relaxation
    (1 at the start: the difference map), τ_k = exp(t_k) scales the modulus tolerance δ
    (1 at the start), and prior_k is a two-layer 3×3 CNN on the canvas
    (features Re O − 1, Im O and the normalised illumination; ``filters`` channels, ReLU;
    output ΔO), whose last layer starts at zero. An untrained layer is therefore exactly
    K iterations of the difference map; training (the Poisson likelihood through the
    forward model, back-propagated through the iterations) learns step sizes, tolerances
    and a prior that make K iterations reach what the plain algorithm needs many more for.
    Cost per iteration: that of the difference map plus the prior's two convolutions on
    the (S, S) canvas.
    """

    def __init__(self, probe: np.ndarray | None = None, canvas: int = 0, iterations: int = 1,
                 tolerance: float = 0.0, filters: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 1 <= int(iterations) <= MAX_UNROLLED_ITERATIONS:
            raise ValueError(f"model.estimate_iterations: expected 1..{MAX_UNROLLED_ITERATIONS} for the unrolled "
                             f"estimate, got {iterations}")
        if int(filters) < 1:
            raise ValueError(f"model.prior_filters: expected >= 1, got {filters}")
        if not float(tolerance) >= 0.0:
            raise ValueError(f"model.estimate_noise_tolerance: expected >= 0, got {tolerance}")
        self.canvas, self.iterations, self.tolerance, self.filters = int(canvas), int(iterations), float(tolerance), int(filters)
        self.algorithm = "unrolled"
        self._probe_init = None if probe is None else estimate_probe(probe)

    def build(self, x_shape: tuple, offsets_shape: tuple | None = None) -> None:
        add_estimate_probe(self, int(x_shape[1]))
        k, f = self.iterations, self.filters
        self.relaxation = self.add_weight(name="relaxation", shape=(k,), initializer="zeros")
        self.log_tolerance = self.add_weight(name="log_tolerance", shape=(k,), initializer="zeros")
        self.prior_w1 = self.add_weight(name="prior_w1", shape=(k, 3, 3, 3, f),
                                        initializer=keras.initializers.HeNormal(seed=0))
        self.prior_b1 = self.add_weight(name="prior_b1", shape=(k, f), initializer="zeros")
        self.prior_w2 = self.add_weight(name="prior_w2", shape=(k, 3, 3, f, 2), initializer="zeros")
        self.prior_b2 = self.add_weight(name="prior_b2", shape=(k, 2), initializer="zeros")

    def _prior(self, k: int, light: Any) -> Any:
        def prior(o_r: Any, o_i: Any) -> tuple[Any, Any]:
            x = ops.stack([o_r - 1.0, o_i, light], axis=-1)  # (B, S, S, 3)
            h = ops.relu(ops.conv(x, self.prior_w1[k], padding="same") + self.prior_b1[k])
            d = ops.conv(h, self.prior_w2[k], padding="same") + self.prior_b2[k]
            return o_r + d[..., 0], o_i + d[..., 1]
        return prior

    def call(self, x: Any, offsets: Any) -> Any:
        x = ops.stop_gradient(x)
        offsets = ops.cast(offsets, x.dtype)
        probe = (ops.convert_to_tensor(self.probe_re), ops.convert_to_tensor(self.probe_im))
        dm = solvers.difference_map_operators(channels_first(x), offsets[..., 0], offsets[..., 1], probe, self.canvas, ops)
        light = dm.illumination / ops.max(dm.illumination, axis=(1, 2), keepdims=True)
        state = dm.start
        for k in range(self.iterations):
            beta = 2.0 * ops.sigmoid(self.relaxation[k])
            state = dm.update(state, beta, self.tolerance * ops.exp(self.log_tolerance[k]), prior=self._prior(k, light))
        re, im = dm.output(*dm.overlap(*state))
        return ops.stack([channels_last(re), channels_last(im)], axis=-1)

    def compute_output_shape(self, x_shape: tuple, offsets_shape: tuple | None = None) -> tuple:
        return (*x_shape, 2)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "canvas": self.canvas, "iterations": self.iterations,
                "tolerance": self.tolerance, "filters": self.filters}  # the probe is a weight


@keras.saving.register_keras_serializable(package=PACKAGE)
class EstimateObject(layers.Layer):
    """A group estimate E (B, N, N, C, 2) [Re, Im; units of ā] → amplitude ā·|E| [object
    amplitude] and phase arg E [rad], each (B, N, N, C) float32: the heads of a model whose
    learning is all in its estimate (:class:`UnrolledEstimate`)."""

    def __init__(self, amplitude_estimate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not np.isfinite(amplitude_estimate) or amplitude_estimate <= 0:
            raise ValueError(f"amplitude_estimate: expected a finite value > 0, got {amplitude_estimate}")
        self.amplitude_estimate = float(amplitude_estimate)

    def call(self, estimate: Any) -> tuple[Any, Any]:
        er, ei = estimate[..., 0], estimate[..., 1]
        return self.amplitude_estimate * ops.sqrt(er * er + ei * ei + 1e-12), ops.arctan2(ei, er)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "amplitude_estimate": self.amplitude_estimate}


def _difference_map(options: DifferenceMapOptions, probe: np.ndarray, canvas: int, input_scale: float,
                    name: str) -> GroupEstimate:
    tolerance = solvers.noise_tolerance(options.noise_tolerance, input_scale)
    return GroupEstimate(probe, canvas, options.iterations, 0.0, options.algorithm, tolerance, name=name)


def _gradient(options: GradientOptions, probe: np.ndarray, canvas: int, input_scale: float,
              name: str) -> GroupEstimate:
    return GroupEstimate(probe, canvas, options.iterations, options.momentum, options.algorithm, 0.0, name=name)


def _unrolled(options: UnrolledOptions, probe: np.ndarray, canvas: int, input_scale: float,
              name: str) -> UnrolledEstimate:
    tolerance = solvers.noise_tolerance(options.noise_tolerance, input_scale)
    return UnrolledEstimate(probe, canvas, options.iterations, tolerance, options.prior_filters, name=name)


#: The estimate algorithms the network builds: options class (the values of
#: :data:`ptychopipe.config.ESTIMATE_OPTIONS`, one per ``model.estimate_algorithm``) → the
#: function ``build(options, probe, canvas, input_scale, name)`` that returns its estimate
#: layer, not yet called: ``probe`` P_abs (N, N) complex, ``canvas`` the group canvas side
#: [px], ``input_scale`` a (normalize stage; a noise tolerance in standard deviations of the
#: measured amplitude becomes a·σ/2 in input units, :func:`solvers.noise_tolerance`). Whether
#: a U-Net corrects the estimate is the options class's ``corrected``.
ESTIMATE_LAYERS: dict[type, Callable[[Any, np.ndarray, int, float, str], layers.Layer]] = {
    DifferenceMapOptions: _difference_map,
    GradientOptions: _gradient,
    UnrolledOptions: _unrolled,
}
