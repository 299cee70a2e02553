"""The network's learned correction: the U-Net and the heads on its raw maps.

What belongs here: folding a group's C members into the batch axis and back
(:class:`FoldMembers`, :class:`UnfoldMembers`: the members share every weight), the
encoder–decoder itself (:func:`unet_heads`), and the heads that turn its raw maps z, u into
amplitude and phase: :class:`RefineEstimate` (a correction of the group estimate, the
PINN) and :class:`AmplitudeActivation`, :class:`PhaseActivation` (the bare CNN of the
benchmark).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

from .layers import PACKAGE, array_initializer, channels_last

#: log-amplitude bounds of the amplitude head: amp ∈ [ā·e^-20, ā·e^10]. They only guard
#: float32 overflow of exp(); a trained model sits far inside (|z| ≲ 2).
LOG_AMPLITUDE_BOUNDS = (-20.0, 10.0)


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
                                          initializer=array_initializer(self._weight_init))

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
        return channels_last(x)

    def compute_output_shape(self, shape: tuple) -> tuple:
        b, n = shape[0], shape[1]
        return (None if b is None else b // self.members, n, n, self.members)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "members": self.members}


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
