"""The network's shared layers and its differentiable forward model.

What belongs here: what every network module shares (:data:`PACKAGE`, under which each
custom layer is registered, the (B, N, N, C) ↔ (B, C, N, N) transposes, the initializer of
a fixed-array weight), the merge canvas and the probe's overlap weight, the optional TV
regulariser (:class:`TotalVariation`), and the forward model from object patches to
expected counts (:class:`ComplexObject`, :class:`OverlapConstraint`,
:class:`AmplitudePhase`, :class:`FarFieldCounts`, assembled by :func:`physics_layers`).
The physics layers call :mod:`ptychopipe.physics` with ``ops=keras.ops``, the functions
the NumPy simulator calls with ``ops=NUMPY_OPS`` (docs/design.md, 'One forward model'), so
there is one implementation of the FFT convention, the sub-pixel shift and the merge;
physics functions take (..., N, N) arrays, hence the transposes.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

from .. import physics

#: The package every custom layer is registered under: a saved model names its layers
#: "ptychopipe>ClassName", whichever module defines them.
PACKAGE = "ptychopipe"


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


def channels_first(x: Any) -> Any:
    """(B, N, N, C) -> (B, C, N, N)."""
    return ops.transpose(x, (0, 3, 1, 2))


def channels_last(x: Any) -> Any:
    """(B, C, N, N) -> (B, N, N, C)."""
    return ops.transpose(x, (0, 2, 3, 1))


def array_initializer(value: np.ndarray | None):
    """Initializer returning ``value`` (zeros when None: weights are then loaded)."""
    def init(shape, dtype=None):
        if value is None:
            return ops.zeros(shape, dtype=dtype)
        return ops.convert_to_tensor(np.asarray(value).reshape(shape), dtype=dtype)
    return init


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
            name="overlap_weight", shape=(n, n), initializer=array_initializer(self._weight_init),
            trainable=False)

    def call(self, re: Any, im: Any, offsets: Any) -> tuple[Any, Any]:
        offsets = ops.cast(offsets, re.dtype)
        w = ops.convert_to_tensor(self.overlap_weight)
        mr, mi = physics.merge_and_reextract((channels_first(re), channels_first(im)), offsets[..., 0], offsets[..., 1], w,
                                             self.canvas, ops=ops, eps=self.eps)
        return channels_last(mr), channels_last(mi)

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
                                        initializer=array_initializer(None if p is None else p.real))
        self.probe_im = self.add_weight(name="probe_im", shape=(n, n), trainable=False,
                                        initializer=array_initializer(None if p is None else p.imag))

    def call(self, re: Any, im: Any) -> Any:
        probe = (ops.convert_to_tensor(self.probe_re), ops.convert_to_tensor(self.probe_im))
        lam = physics.expected_counts(probe, (channels_first(re), channels_first(im)), ops=ops)
        return channels_last(lam)

    def get_config(self) -> dict[str, Any]:
        # the probe is a weight (saved with the weights), not part of the config
        return super().get_config()

    def probe(self) -> np.ndarray:
        """The stored P_abs, (N, N) complex64."""
        return (ops.convert_to_numpy(self.probe_re) + 1j * ops.convert_to_numpy(self.probe_im)).astype(np.complex64)


@keras.saving.register_keras_serializable(package=PACKAGE)
class AmplitudePhase(layers.Layer):
    """(re, im) → (amplitude, phase) of the merged patches; (B, N, N, C) float32.

    amplitude = sqrt(re² + im²) [object amplitude], phase = atan2(im, re) [rad]. Used for
    the model's outputs only (never in the loss: sqrt has no gradient at 0).
    """

    def call(self, re: Any, im: Any) -> tuple[Any, Any]:
        return ops.sqrt(re * re + im * im), ops.arctan2(im, re)


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
