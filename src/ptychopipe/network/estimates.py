"""The physics-informed network (docs/design.md, 'Reconstruction modes'): physics input layer, U-Net, forward model.

Layout. The network sees one *group* at a time: its C = gridsize² normalised
diffraction amplitudes X = a·sqrt(n), shape (B, N, N, C) float32, channels last, and the
members' offsets (B, C, 2) px. It predicts C complex object patches Ô (amplitude ≥ 0
[object amplitude], phase [rad]), and the differentiable physics turns them into
expected counts λ̂ (B, N, N, C) float32 [counts], which the Poisson loss compares with
the measured counts n::

    diffraction (B,N,N,C), offsets (B,C,2)
        │  GroupEstimate: K iterations of known-probe ptychography on the group's canvas
        ▼  (fixed physics, no weights; computed once per group during training)
    estimate E (B,N,N,C,2) [Re, Im; units of ā] ──────────────────────────────┐
        │  FoldMembers: (B·C, N, N, 3) = [Re E, Im E, |P|²/max]                │
        ▼                                                                      ▼
    U-Net (encoder, amplitude and phase decoders with skips) ─► z, u ─► RefineEstimate:
                amplitude = ā·max(|E|, 0.01)·exp(z), phase = wrap(arg E + φmax·tanh(u))
        ▼
    [OverlapConstraint, C > 1] ─► FarFieldCounts (P_abs, unitary FFT) ─► λ̂ ─► PoissonLoss(n)

Why this shape. A group's C patterns and the known probe determine its patches as far as
a small ptychography problem does; :class:`GroupEstimate` solves that problem with fixed
physics (:func:`solvers.group_estimate`), so the network does not have to learn phase
retrieval. Networks that must (an encoder–decoder from diffraction to object, or a U-Net
on a one-step back-projection) reach a stitched amplitude r of only 0.61–0.75 on the
quick preset, against 0.996–1.000 at gridsize 2 with the estimate (docs/results.md). The
U-Net learns a *correction* of the estimate: what the group's data leave undetermined
(a prior over objects), starting at zero, so an untrained model is the estimate. It is
translation-equivariant on the object's pixel grid and its C members share all weights
(they are folded into the batch axis).

The physics layers call :mod:`ptychopipe.physics` with ``ops=keras.ops``: the same
functions the NumPy simulator calls with ``ops=NUMPY_OPS`` (docs/design.md, 'One forward model'), so there is
one implementation of the FFT convention, the sub-pixel shift and the merge. Physics
functions take (..., N, N) arrays, so the layers transpose (B, N, N, C) ↔ (B, C, N, N).

Only ``keras.ops`` is used here (no ``tf.*``): the same code runs with
``KERAS_BACKEND=jax``. The probe P_abs, the overlap weight |P|²/max|P|² and the
estimate's probe are non-trainable weights, so ``model.keras`` stores them with the
other weights and the layer configs stay small; every custom layer is registered for
``keras.saving.load_model``.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from .. import physics, solvers
from ..config import (MAX_UNROLLED_ITERATIONS, DifferenceMapOptions, EstimateOptions, GradientOptions,
                     UNetOptions, UnrolledOptions)

PACKAGE = "ptychopipe"

#: log-amplitude bounds of the amplitude head: amp ∈ [ā·e^-20, ā·e^10]. They only guard
#: float32 overflow of exp(); a trained model sits far inside (|z| ≲ 2).
LOG_AMPLITUDE_BOUNDS = (-20.0, 10.0)

#: Below this, λ̂ is clamped before the log of the Poisson loss (docs/design.md, 'Loss') [counts].
LAMBDA_FLOOR = 1e-8


def fft_friendly(n: int) -> int:
    """Smallest even integer ≥ n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = max(2, int(n))
    while True:
        if m % 2 == 0:
            k = m
            for p in (2, 3, 5):
                while k % p == 0:
                    k //= p
            if k == 1:
                return m
        m += 1


def merge_canvas(n: int, max_offset: float) -> int:
    """Merge canvas side S for patches of n px whose members lie within ``max_offset`` px
    of their group centre: :func:`physics.canvas_size` rounded up to an FFT-friendly size
    (never smaller, so no member is clipped)."""
    return fft_friendly(physics.canvas_size(n, max_offset))


def overlap_weight(probe: np.ndarray) -> np.ndarray:
    """|P|²/max|P|², (N, N) float32 — the overlap weight of the merge (docs/design.md, 'Overlap constraint')."""
    w = np.abs(np.asarray(probe, dtype=np.complex128)) ** 2
    top = float(w.max())
    if not top > 0:
        raise ValueError(f"probe: max |P|^2 is {top}; expected > 0")
    return (w / top).astype(np.float32)


def _to_cf(x: Any) -> Any:
    """(B, N, N, C) -> (B, C, N, N)."""
    return ops.transpose(x, (0, 3, 1, 2))


def _to_cl(x: Any) -> Any:
    """(B, C, N, N) -> (B, N, N, C)."""
    return ops.transpose(x, (0, 2, 3, 1))


def _array_initializer(value: np.ndarray | None):
    """Initializer returning ``value`` (zeros when None: weights are then loaded)."""
    def init(shape, dtype=None):
        if value is None:
            return ops.zeros(shape, dtype=dtype)
        return ops.convert_to_tensor(np.asarray(value).reshape(shape), dtype=dtype)
    return init


# --------------------------------------------------------------------------- head activations


@keras.saving.register_keras_serializable(package=PACKAGE)
class AmplitudeActivation(layers.Layer):
    """amp = ā·exp(z): (B, N, N, C) float32 log-amplitude z → amplitude [object amplitude].

    Why exp rather than softplus: the output is positive by construction, starts at
    exactly ā when z ≈ 0 (docs/design.md, 'Dose and normalisation': the final conv is initialised near zero), and the
    gradient d amp/dz = amp is *relative*, so an amplitude error of x % gives the same
    update whether the object is 1e-3 or 1e3 in absolute units — the parametrisation is
    unit-free and only ā carries the units. softplus scaled to ā behaves linearly for
    large values and saturates near zero, which conditions dark and bright regions
    differently. z is clipped to :data:`LOG_AMPLITUDE_BOUNDS` only to avoid float32
    overflow.
    """

    def __init__(self, amplitude_estimate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not np.isfinite(amplitude_estimate) or amplitude_estimate <= 0:
            raise ValueError(f"amplitude_estimate: expected a finite value > 0, got {amplitude_estimate}")
        self.amplitude_estimate = float(amplitude_estimate)

    def call(self, z: Any) -> Any:
        lo, hi = LOG_AMPLITUDE_BOUNDS
        return self.amplitude_estimate * ops.exp(ops.clip(z, lo, hi))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "amplitude_estimate": self.amplitude_estimate}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PhaseActivation(layers.Layer):
    """phase = phase_max_rad·tanh(u): (B, N, N, C) float32 → phase [rad], bounded."""

    def __init__(self, phase_max_rad: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not phase_max_rad > 0:
            raise ValueError(f"phase_max_rad: expected > 0, got {phase_max_rad}")
        self.phase_max_rad = float(phase_max_rad)

    def call(self, u: Any) -> Any:
        return self.phase_max_rad * ops.tanh(u)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "phase_max_rad": self.phase_max_rad}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TotalVariation(layers.Layer):
    """Optional TV regulariser (config ``train.loss.tv_weight``); identity on its inputs.

    Adds weight·(mean|∇amp|/ā + mean|∇phase|) (anisotropic, forward differences along
    rows and columns of each (N, N) patch; dimensionless) with ``add_loss``. Inputs:
    amplitude, phase (B, N, N, C).
    """

    def __init__(self, weight: float, amplitude_estimate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight = float(weight)
        self.amplitude_estimate = float(amplitude_estimate)

    @staticmethod
    def _tv(x: Any) -> Any:
        dy = ops.mean(ops.abs(x[:, 1:, :, :] - x[:, :-1, :, :]))
        dx = ops.mean(ops.abs(x[:, :, 1:, :] - x[:, :, :-1, :]))
        return dx + dy

    def call(self, amplitude: Any, phase: Any) -> tuple[Any, Any]:
        if self.weight > 0:
            self.add_loss(self.weight * (self._tv(amplitude) / self.amplitude_estimate + self._tv(phase)))
        return amplitude, phase

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight": self.weight, "amplitude_estimate": self.amplitude_estimate}


# --------------------------------------------------------------------------- physics layers


@keras.saving.register_keras_serializable(package=PACKAGE)
class ComplexObject(layers.Layer):
    """(amplitude, phase) → (re, im) = amp·(cos φ, sin φ); all (B, N, N, C) float32."""

    def call(self, amplitude: Any, phase: Any) -> tuple[Any, Any]:
        return amplitude * ops.cos(phase), amplitude * ops.sin(phase)


@keras.saving.register_keras_serializable(package=PACKAGE)
class OverlapConstraint(layers.Layer):
    """The per-group overlap constraint (docs/design.md, 'Overlap constraint') via :func:`physics.merge_and_reextract`.

    Inputs: re, im (B, N, N, C) float32 [object amplitude]; offsets (B, C, 2) float32
    [x, y] px (member centre minus group centre). Output: the re-extracted (re, im),
    (B, N, N, C). ``canvas`` (static, even, ≥ :func:`physics.canvas_size` of the largest
    offset; the caller guarantees this, build only checks canvas ≥ N + 2) is in the config;
    the (N, N) overlap weight |P|²/max|P|² is a non-trainable weight, set from ``weight`` at
    build time or loaded with the model. ``eps``: the weight of a member's own prediction,
    the fallback where no member is lit (:func:`physics.merge_and_reextract`).
    """

    def __init__(self, canvas: int, weight: np.ndarray | None = None, eps: float = 1e-2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.canvas = int(canvas)
        self.eps = float(eps)
        self._weight_init = None if weight is None else np.asarray(weight, dtype=np.float32)

    def build(self, re_shape: tuple, im_shape: tuple | None = None, offsets_shape: tuple | None = None) -> None:
        n = int(re_shape[1])
        if self.canvas < physics.canvas_size(n, 0.0):
            raise ValueError(f"canvas: expected >= {physics.canvas_size(n, 0.0)} for N = {n}, got {self.canvas}")
        self.overlap_weight = self.add_weight(
            name="overlap_weight", shape=(n, n), initializer=_array_initializer(self._weight_init),
            trainable=False)

    def call(self, re: Any, im: Any, offsets: Any) -> tuple[Any, Any]:
        offsets = ops.cast(offsets, re.dtype)
        w = ops.convert_to_tensor(self.overlap_weight)
        mr, mi = physics.merge_and_reextract((_to_cf(re), _to_cf(im)), offsets[..., 0], offsets[..., 1], w,
                                             self.canvas, ops=ops, eps=self.eps)
        return _to_cl(mr), _to_cl(mi)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "canvas": self.canvas, "eps": self.eps}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FarFieldCounts(layers.Layer):
    """Expected counts λ̂ = |fftshift(fft2(P_abs·Ô))/N|² via :func:`physics.expected_counts`.

    Inputs: re, im (B, N, N, C) float32 [object amplitude]. Output: λ̂ (B, N, N, C) float32
    [counts]. P_abs (normalized.h5 ``probe``, complex (N, N)) is stored as two
    non-trainable (N, N) float32 weights ``probe_re``, ``probe_im``.
    """

    def __init__(self, probe: np.ndarray | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._probe_init = None if probe is None else np.asarray(probe, dtype=np.complex64)

    def build(self, re_shape: tuple, im_shape: tuple | None = None) -> None:
        n = int(re_shape[1])
        if self._probe_init is not None and self._probe_init.shape != (n, n):
            raise ValueError(f"probe: expected shape ({n}, {n}), got {self._probe_init.shape}")
        p = self._probe_init
        self.probe_re = self.add_weight(name="probe_re", shape=(n, n), trainable=False,
                                        initializer=_array_initializer(None if p is None else p.real))
        self.probe_im = self.add_weight(name="probe_im", shape=(n, n), trainable=False,
                                        initializer=_array_initializer(None if p is None else p.imag))

    def call(self, re: Any, im: Any) -> Any:
        probe = (ops.convert_to_tensor(self.probe_re), ops.convert_to_tensor(self.probe_im))
        lam = physics.expected_counts(probe, (_to_cf(re), _to_cf(im)), ops=ops)
        return _to_cl(lam)

    def get_config(self) -> dict[str, Any]:
        # the probe is a weight (saved with the weights), not part of the config
        return super().get_config()

    def probe(self) -> np.ndarray:
        """The stored P_abs, (N, N) complex64."""
        return (ops.convert_to_numpy(self.probe_re) + 1j * ops.convert_to_numpy(self.probe_im)).astype(np.complex64)


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
                                      initializer=_array_initializer(None if p is None else p.real))
    layer.probe_im = layer.add_weight(name="probe_im", shape=(n, n), trainable=False,
                                      initializer=_array_initializer(None if p is None else p.imag))


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
    stage computes it once per group (:func:`estimate_model`) instead of every step.

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
        re, im = solvers.group_estimate(_to_cf(x), offsets[..., 0], offsets[..., 1], probe, self.canvas,
                                        self.iterations, self.momentum, ops=ops, algorithm=self.algorithm,
                                        tolerance=self.tolerance)
        return ops.stack([_to_cl(re), _to_cl(im)], axis=-1)

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
        dm = solvers.difference_map_operators(_to_cf(x), offsets[..., 0], offsets[..., 1], probe, self.canvas, ops)
        light = dm.illumination / ops.max(dm.illumination, axis=(1, 2), keepdims=True)
        state = dm.start
        for k in range(self.iterations):
            beta = 2.0 * ops.sigmoid(self.relaxation[k])
            state = dm.update(state, beta, self.tolerance * ops.exp(self.log_tolerance[k]), prior=self._prior(k, light))
        re, im = dm.output(*dm.overlap(*state))
        return ops.stack([_to_cl(re), _to_cl(im)], axis=-1)

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


@keras.saving.register_keras_serializable(package=PACKAGE)
class RefineEstimate(layers.Layer):
    """The heads: U-Net outputs z, u (B, N, N, C) and the group estimate E (B, N, N, C, 2)
    [units of ā] → amplitude [object amplitude] and phase [rad], each (B, N, N, C) float32::

        amplitude = ā·max(|E|, floor)·exp(z),   phase = wrap(arg E + phase_max_rad·tanh(u))

    The U-Net learns a multiplicative amplitude correction and a bounded phase correction
    of the physics estimate; its last convs start near zero, so the model starts at the
    estimate, whose mean amplitude is ā's (docs/design.md, 'Dose and normalisation'). exp keeps the amplitude > 0 with
    a relative (unit-free) gradient; z is clipped to :data:`LOG_AMPLITUDE_BOUNDS` only
    against float32 overflow, and ``floor`` (1e-2 of ā) lets a pixel the estimate puts at
    0 grow back; the phase is wrapped to [−π, π].
    """

    def __init__(self, amplitude_estimate: float, phase_max_rad: float, floor: float = 1e-2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not np.isfinite(amplitude_estimate) or amplitude_estimate <= 0:
            raise ValueError(f"amplitude_estimate: expected a finite value > 0, got {amplitude_estimate}")
        if not phase_max_rad > 0:
            raise ValueError(f"phase_max_rad: expected > 0, got {phase_max_rad}")
        self.amplitude_estimate, self.phase_max_rad, self.floor = float(amplitude_estimate), float(phase_max_rad), float(floor)

    def call(self, z: Any, u: Any, estimate: Any) -> tuple[Any, Any]:
        er, ei = estimate[..., 0], estimate[..., 1]
        lo, hi = LOG_AMPLITUDE_BOUNDS
        mag = ops.maximum(ops.sqrt(er * er + ei * ei), self.floor)
        amplitude = self.amplitude_estimate * mag * ops.exp(ops.clip(z, lo, hi))
        phase = ops.arctan2(ei, er) + self.phase_max_rad * ops.tanh(u)
        return amplitude, ops.arctan2(ops.sin(phase), ops.cos(phase))  # wrapped to [-π, π]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "amplitude_estimate": self.amplitude_estimate,
                "phase_max_rad": self.phase_max_rad, "floor": self.floor}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FoldMembers(layers.Layer):
    """Per-member features (B, N, N, C, F) float32 → (B·C, N, N, F + 1): member c of group
    b becomes batch row b·C + c, with the (N, N) overlap weight |P|²/max|P|² (a
    non-trainable weight) appended as the last channel."""

    def __init__(self, weight: np.ndarray | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._weight_init = None if weight is None else np.asarray(weight, dtype=np.float32)

    def build(self, shape: tuple) -> None:
        n = int(shape[1])
        self.weight_map = self.add_weight(name="weight_map", shape=(n, n), trainable=False,
                                          initializer=_array_initializer(self._weight_init))

    def call(self, features: Any) -> Any:
        n, f = int(features.shape[1]), int(features.shape[-1])
        w = ops.zeros_like(features[..., :1]) + ops.reshape(ops.convert_to_tensor(self.weight_map), (1, n, n, 1, 1))
        x = ops.concatenate([features, w], axis=-1)  # (B, N, N, C, F + 1)
        x = ops.transpose(x, (0, 3, 1, 2, 4))  # (B, C, N, N, F + 1)
        return ops.reshape(x, (-1, n, n, f + 1))

    def compute_output_shape(self, shape: tuple) -> tuple:
        b, n, _, c, f = shape
        return (None if b is None else b * c, n, n, f + 1)

    def get_config(self) -> dict[str, Any]:
        return super().get_config()  # the weight map is a weight, saved with the weights


@keras.saving.register_keras_serializable(package=PACKAGE)
class UnfoldMembers(layers.Layer):
    """(B·C, N, N, 1) → (B, N, N, C): the inverse of :class:`FoldMembers` for one map."""

    def __init__(self, members: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.members = int(members)

    def call(self, x: Any) -> Any:
        n = int(x.shape[1])
        x = ops.reshape(x, (-1, self.members, n, n))
        return _to_cl(x)

    def compute_output_shape(self, shape: tuple) -> tuple:
        b, n = shape[0], shape[1]
        return (None if b is None else b // self.members, n, n, self.members)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "members": self.members}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AmplitudePhase(layers.Layer):
    """(re, im) → (amplitude, phase) of the merged patches; (B, N, N, C) float32.

    amplitude = sqrt(re² + im²) [object amplitude], phase = atan2(im, re) [rad]. Used for
    the model's outputs only (never in the loss: sqrt has no gradient at 0).
    """

    def call(self, re: Any, im: Any) -> tuple[Any, Any]:
        return ops.sqrt(re * re + im * im), ops.arctan2(im, re)


# --------------------------------------------------------------------------- loss


@keras.saving.register_keras_serializable(package=PACKAGE)
class PoissonLoss(keras.losses.Loss):
    """Poisson deviance of measured counts n given λ̂, per pattern, over the mean count.

    y_true = n, y_pred = λ̂: (B, N, N, C) float32 [counts]. For each group b::

        L_b = Σ_{pixels, c} [λ̂ − n + n·log(n/λ̂)] / (C · mean_counts)
              + mae_weight · mean_{pixels, c} |a·sqrt(λ̂) − a·sqrt(n)|

    with λ̂ clamped ≥ :data:`LAMBDA_FLOOR` (NaN stays NaN) and n·log n := 0 at n = 0. The deviance is the
    Poisson negative log-likelihood minus its value at λ̂ = n (a constant of the data), so
    it has the NLL's gradients (docs/design.md, 'Loss') and is 0 for a perfect, noiseless fit; its
    floor for the true λ is ≈ ½·(pixels per pattern with λ ≳ 1) / mean_counts (each such
    pixel contributes E[λ − n + n·log(n/λ)] ≈ ½). Dividing by
    ``mean_counts`` (training split, counts per pattern) makes it ≈ 2·Σ(√n−√λ̂)²/Σn, a
    relative squared amplitude error independent of the dose. The optional MAE term is
    on normalised amplitudes (the network input units, a = ``input_scale``). Returns
    (B,) float32; Keras averages over the batch.
    """

    def __init__(self, mean_counts: float, input_scale: float = 1.0, mae_weight: float = 0.0,
                 name: str = "poisson_deviance", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if not mean_counts > 0:
            raise ValueError(f"mean_counts: expected > 0, got {mean_counts}")
        self.mean_counts = float(mean_counts)
        self.input_scale = float(input_scale)
        self.mae_weight = float(mae_weight)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        n = ops.cast(y_true, y_pred.dtype)
        # clamp that keeps NaN (TensorFlow's maximum(NaN, x) returns x, JAX's returns NaN):
        # a NaN prediction must give a NaN loss on every backend, for the NaN guard
        lam = ops.maximum(y_pred, LAMBDA_FLOOR) + 0.0 * y_pred
        dev = deviance_terms(n, lam)
        channels = ops.shape(n)[-1]
        loss = ops.sum(dev, axis=(1, 2, 3)) / (self.mean_counts * ops.cast(channels, dev.dtype))
        if self.mae_weight > 0:
            mae = ops.mean(ops.abs(ops.sqrt(lam) - ops.sqrt(ops.maximum(n, 0.0))), axis=(1, 2, 3))
            loss = loss + self.mae_weight * self.input_scale * mae
        return loss

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean_counts": self.mean_counts, "input_scale": self.input_scale,
                "mae_weight": self.mae_weight}


def deviance_terms(n: Any, lam: Any) -> Any:
    """Per-pixel Poisson deviance λ − n + n·log(n/λ) (n·log n := 0 at n = 0), written so that
    float32 keeps it where λ ≈ n (keras.ops; same shape as the inputs, λ ≥ LAMBDA_FLOOR).

    Near a fit at high dose each pixel's deviance is ≈ (λ − n)²/(2n) ~ ½, the difference of
    terms ~ n ~ 1e7: computed as written, float32 loses it (at 1e9 photons the loss of one
    pattern at the true λ came out 4–6 % off, up to 30 %). Where |λ − n| < n/2 the form
    n·(d − log1p(d)), d = (λ − n)/n, is used instead: λ − n is exact there (Sterbenz) and
    log1p keeps d's precision. Same value and gradient (1 − n/λ) in exact arithmetic; NaN
    in λ stays NaN.
    """
    near = ops.abs(lam - n) < 0.5 * n
    d = ops.where(near, (lam - n) / ops.where(near, n, ops.ones_like(n)), ops.zeros_like(n))
    close = n * (d - ops.log1p(d))
    far = lam - n + n * (ops.log(ops.maximum(n, LAMBDA_FLOOR)) - ops.log(lam))
    return ops.where(near, close, far)


def poisson_deviance_np(counts: np.ndarray, lam: np.ndarray, mean_counts: float) -> np.ndarray:
    """NumPy float64 twin of :class:`PoissonLoss` without the MAE term: (B,) per group.

    counts, lam: (B, N, N, C) [counts]. Used by infer (test-split loss) and the tests.
    """
    n = np.asarray(counts, dtype=np.float64)
    lam = np.maximum(np.asarray(lam, dtype=np.float64), LAMBDA_FLOOR)
    dev = lam - n + n * (np.log(np.maximum(n, LAMBDA_FLOOR)) - np.log(lam))
    return dev.sum(axis=(1, 2, 3)) / (mean_counts * n.shape[-1])


# --------------------------------------------------------------------------- builders


def _conv(x: Any, filters: int, name: str) -> Any:
    x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_a")(x)
    return layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_b")(x)


def _head_init() -> keras.initializers.Initializer:
    # Near-zero (not zero: a zero kernel would block the gradient to the decoder at
    # step 0) so the heads start at amp ≈ ā (within ~1 %) and phase ≈ 0.
    return keras.initializers.VarianceScaling(scale=1e-4, mode="fan_in", distribution="truncated_normal")


def unet_heads(features: Any, n_channels: int, filters: int, depth: int) -> tuple[Any, Any]:
    """Real-space U-Net on symbolic per-member features (B·C, N, N, F) → raw maps (z, u),
    each (B, N, N, C=n_channels) float32, for :class:`RefineEstimate` (PINN) or
    :class:`AmplitudeActivation`/:class:`PhaseActivation` (bare CNN).

    Encoder level i: two 3×3 convs with filters·2^i channels (ReLU), then 2× max-pooling;
    bottleneck filters·2^depth; two decoders (amplitude, phase), each upsampling by 2,
    concatenating the encoder's level-i features (skip) and applying two 3×3 convs. A final
    3×3 conv per head starts near zero (:func:`_head_init`), so z ≈ 0 and u ≈ 0 at step 0.
    The C members of a group share all weights (they are folded into the batch axis by
    :class:`FoldMembers`)."""
    x, skips = features, []
    for i in range(depth):
        x = _conv(x, filters * 2 ** i, f"enc{i}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = _conv(x, filters * 2 ** depth, "bottleneck")
    heads = []
    for head in ("amp", "phase"):
        h = x
        for i in reversed(range(depth)):
            h = layers.UpSampling2D(2, name=f"{head}_up{i}")(h)
            h = layers.Concatenate(name=f"{head}_skip{i}")([h, skips[i]])
            h = _conv(h, filters * 2 ** i, f"{head}_dec{i}")
        h = layers.Conv2D(1, 3, padding="same", kernel_initializer=_head_init(),
                          bias_initializer="zeros", name=f"{head}_out")(h)
        heads.append(UnfoldMembers(n_channels, name=f"{head}_members")(h))
    return heads[0], heads[1]


def physics_layers(amplitude: Any, phase: Any, offsets: Any, probe: np.ndarray | None,
                   canvas: int) -> dict[str, Any]:
    """The differentiable forward model on symbolic (amplitude, phase) (B, N, N, C) and
    offsets (B, C, 2) → {"counts", "amplitude", "phase"}, each (B, N, N, C): λ̂ [counts]
    and the object patches that produced it (after the overlap merge when C > 1)."""
    c = int(amplitude.shape[-1])
    re, im = ComplexObject(name="complex_object")(amplitude, phase)
    if c > 1:
        w = None if probe is None else overlap_weight(probe)
        re, im = OverlapConstraint(canvas, w, name="overlap")(re, im, offsets)
        amplitude, phase = AmplitudePhase(name="merged_amplitude_phase")(re, im)
    counts = FarFieldCounts(probe, name="far_field")(re, im)
    return {"counts": counts, "amplitude": amplitude, "phase": phase}


def model_inputs(n: int, c: int) -> dict[str, Any]:
    """Symbolic inputs: diffraction (B, N, N, C) [a·photons^0.5], offsets (B, C, 2) [px]."""
    return {"diffraction": keras.Input((n, n, c), name="diffraction"),
            "offsets": keras.Input((c, 2), name="offsets")}


def build_model(n: int, gridsize: int, probe: np.ndarray, amplitude_estimate: float, canvas: int,
                estimate: EstimateOptions, unet: UNetOptions | None = None, *, tv_weight: float = 0.0,
                input_scale: float = 1.0) -> keras.Model:
    """The PINN: inputs {"diffraction" (B,N,N,C), "offsets" (B,C,2)} → outputs {"counts"
    λ̂ [counts], "amplitude" [object amplitude], "phase" [rad]}, each (B, N, N, C) float32.

    n: pattern side N [px]; gridsize: √C; probe: P_abs (N, N) complex; amplitude_estimate:
    ā; canvas: group canvas side (:func:`merge_canvas`; unused for C = 1); input_scale: a
    (normalize stage), which turns the estimate's noise tolerance (standard deviations of
    the measured amplitude) into input units (:func:`solvers.noise_tolerance`); tv_weight
    > 0 adds the "total_variation" layer (:class:`TotalVariation`, a loss term; identity
    on its inputs) before the physics layers.

    ``estimate`` chooses the model:

    - :class:`~ptychopipe.config.DifferenceMapOptions` or
      :class:`~ptychopipe.config.GradientOptions`: the fixed physics input layer
      (:class:`GroupEstimate`, "group_estimate": its output is the input of
      :func:`head_model`), "member_features", the U-Net of ``unet`` (required; its depth
      must divide N: N % 2^depth == 0), "refine_estimate", then the physics layers;
    - :class:`~ptychopipe.config.UnrolledOptions`: the learned unrolled difference map
      (:class:`UnrolledEstimate` as "group_estimate"), :class:`EstimateObject`
      ("estimate_object") and the physics layers; no U-Net (``unet`` must be None).

    Raises ValueError on inconsistent sizes or options.
    """
    c = gridsize * gridsize
    if np.shape(probe) != (n, n):
        raise ValueError(f"probe: expected shape ({n}, {n}), got {np.shape(probe)}")
    inputs = model_inputs(n, c)
    if isinstance(estimate, UnrolledOptions):
        if unet is not None:
            raise ValueError("model: the unrolled estimate has no U-Net; expected unet None")
        tolerance = solvers.noise_tolerance(estimate.noise_tolerance, input_scale)
        est = UnrolledEstimate(probe, canvas, estimate.iterations, tolerance, estimate.prior_filters,
                               name="group_estimate")(inputs["diffraction"], inputs["offsets"])
        amp, phase = EstimateObject(amplitude_estimate, name="estimate_object")(est)
    elif isinstance(estimate, (DifferenceMapOptions, GradientOptions)):
        if unet is None:
            raise ValueError(f"model: the {estimate.algorithm} estimate is corrected by a U-Net; expected its options")
        if n % (2 ** unet.depth):
            raise ValueError(f"model.depth: N = {n} must be divisible by 2^depth = {2 ** unet.depth}")
        momentum = estimate.momentum if isinstance(estimate, GradientOptions) else 0.0
        tolerance = (solvers.noise_tolerance(estimate.noise_tolerance, input_scale)
                     if isinstance(estimate, DifferenceMapOptions) else 0.0)
        est = GroupEstimate(probe, canvas, estimate.iterations, momentum, estimate.algorithm, tolerance,
                            name="group_estimate")(inputs["diffraction"], inputs["offsets"])
        features = FoldMembers(overlap_weight(probe), name="member_features")(est)
        z, u = unet_heads(features, c, unet.filters, unet.depth)
        amp, phase = RefineEstimate(amplitude_estimate, unet.phase_max_rad, name="refine_estimate")(z, u, est)
    else:
        raise ValueError(f"model.estimate_algorithm: expected difference_map, gradient or unrolled options, "
                         f"got {type(estimate).__name__}")
    if tv_weight > 0:
        amp, phase = TotalVariation(tv_weight, amplitude_estimate, name="total_variation")(amp, phase)
    return keras.Model(inputs, physics_layers(amp, phase, inputs["offsets"], probe, canvas), name="ptycho_pinn")


def build_model_from_config(cfg: Any, probe: np.ndarray, amplitude_estimate: float, canvas: int,
                            input_scale: float) -> keras.Model:
    """:func:`build_model` from a :class:`ptychopipe.config.TrainConfig` (its model options and
    loss.tv_weight) and the normalize stage's ``input_scale``."""
    m = cfg.model
    return build_model(m.N, m.gridsize, probe, amplitude_estimate, canvas, m.estimate, m.unet,
                       tv_weight=cfg.loss.tv_weight, input_scale=input_scale)


def estimate_model(model: keras.Model) -> keras.Model:
    """The PINN's fixed-physics front: {"diffraction", "offsets"} → the group estimate
    (B, N, N, C, 2) float32 (no trainable weights)."""
    return keras.Model(model.input, model.get_layer("group_estimate").output, name=f"{model.name}_estimate")


def head_model(model: keras.Model) -> keras.Model:
    """The PINN after its physics front: {"estimate" (B,N,N,C,2), "offsets" (B,C,2)} →
    λ̂ "counts" (B, N, N, C). It shares every layer (and weight) with ``model``: training
    it on precomputed estimates (:func:`estimate_model`) trains ``model``, and
    ``model`` on the raw inputs computes exactly head(estimate(inputs)). Keras cannot save
    ``model`` once this sub-model exists: save a fresh build holding its weights
    (train.fit does)."""
    with warnings.catch_warnings():  # Keras asks dict keys to match tensor names, which inner tensors lack
        warnings.filterwarnings("ignore", message="When providing `inputs` as a dict")
        return keras.Model({"estimate": model.get_layer("group_estimate").output, "offsets": model.input["offsets"]},
                           model.output["counts"], name=f"{model.name}_head")


def training_model(model: keras.Model) -> keras.Model:
    """The same layers with only the "counts" output (what the loss sees). Training it
    trains ``model`` (weights are shared)."""
    return keras.Model(model.input, model.output["counts"], name=f"{model.name}_train")


def build_cnn(n: int, gridsize: int, filters: int, depth: int, phase_max_rad: float,
              amplitude_estimate: float) -> keras.Model:
    """The bare U-Net (no physics layers: no group estimate, merge or far field), for the
    throughput benchmark: diffraction (B, N, N, C) → {"amplitude", "phase"} (B, N, N, C)."""
    c = gridsize * gridsize
    x = keras.Input((n, n, c), name="diffraction")
    features = FoldMembers(np.ones((n, n), np.float32), name="member_features")(
        layers.Reshape((n, n, c, 1), name="one_feature")(x))
    z, u = unet_heads(features, c, filters, depth)
    amp = AmplitudeActivation(amplitude_estimate, name="amplitude_head")(z)
    phase = PhaseActivation(phase_max_rad, name="phase_head")(u)
    return keras.Model(x, {"amplitude": amp, "phase": phase}, name="cnn")


def physics_model(probe: np.ndarray, gridsize: int, canvas: int) -> keras.Model:
    """The physics layers alone: {"amplitude", "phase" (B,N,N,C), "offsets" (B,C,2)} →
    {"counts", "amplitude", "phase"}; the forward model of :func:`build_model`, exposed
    for the forward-model equality test and the benchmark."""
    n = int(np.shape(probe)[0])
    c = gridsize * gridsize
    amp = keras.Input((n, n, c), name="amplitude")
    phase = keras.Input((n, n, c), name="phase")
    off = keras.Input((c, 2), name="offsets")
    return keras.Model({"amplitude": amp, "phase": phase, "offsets": off},
                       physics_layers(amp, phase, off, probe, canvas), name="forward_model")


def model_probe(model: keras.Model) -> np.ndarray:
    """P_abs stored in a built PINN, (N, N) complex64."""
    return model.get_layer("far_field").probe()


def model_canvas(model: keras.Model) -> int | None:
    """Merge canvas side of a PINN (None when C = 1, no merge)."""
    try:
        return int(model.get_layer("overlap").canvas)
    except ValueError:
        return None


def model_amplitude_estimate(model: keras.Model) -> float:
    """ā baked into the amplitude head of a PINN [object amplitude]."""
    names = {layer.name for layer in model.layers}
    return float(model.get_layer("refine_estimate" if "refine_estimate" in names else "estimate_object").amplitude_estimate)


def estimate_is_learned(model: keras.Model) -> bool:
    """True when the model's group estimate has trainable weights (:class:`UnrolledEstimate`):
    it is then trained end to end rather than computed once per group."""
    return bool(model.get_layer("group_estimate").trainable_weights)
