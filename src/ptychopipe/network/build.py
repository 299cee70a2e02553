"""The network's models: building the PINN and the bare CNN, its sub-models and accessors.

What belongs here: :func:`build_model` (and :func:`build_model_from_config`), which
assembles the layers of the other modules into the PINN, the sub-models that share its
layers (:func:`estimate_model`, :func:`head_model`, :func:`training_model`), the bare
U-Net of the benchmark (:func:`build_cnn`) and the forward model alone
(:func:`physics_model`), and what the stages read back from a built or loaded model
(:func:`model_probe`, :func:`model_canvas`, :func:`model_amplitude_estimate`,
:func:`estimate_is_learned`). Layer names are part of a saved model: the accessors and the
sub-models find layers by them.

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
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
from keras import layers

from ..config import EstimateOptions, UNetOptions
from .estimates import ESTIMATE_LAYERS, EstimateObject
from .layers import TotalVariation, overlap_weight, physics_layers
from .unet import AmplitudeActivation, FoldMembers, PhaseActivation, RefineEstimate, unet_heads


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

    ``estimate``, an options class of :data:`ESTIMATE_LAYERS`, chooses the model's first
    layer, "group_estimate" (its output is the input of :func:`head_model`), and what
    follows it:

    - an estimate the U-Net corrects (difference map, gradient: :class:`GroupEstimate`):
      "member_features", the U-Net of ``unet`` (required; its depth must divide N:
      N % 2^depth == 0), "refine_estimate", then the physics layers;
    - an estimate without a U-Net (the learned unrolled difference map,
      :class:`UnrolledEstimate`): :class:`EstimateObject` ("estimate_object") and the
      physics layers (``unet`` must be None).

    Raises ValueError on inconsistent sizes or options.
    """
    c = gridsize * gridsize
    if np.shape(probe) != (n, n):
        raise ValueError(f"probe: expected shape ({n}, {n}), got {np.shape(probe)}")
    build_estimate = ESTIMATE_LAYERS.get(type(estimate))
    if build_estimate is None:
        names = ", ".join(cls.algorithm for cls in ESTIMATE_LAYERS)
        raise ValueError(f"model.estimate_algorithm: expected the options of one of {names}, "
                         f"got {type(estimate).__name__}")
    if not estimate.corrected and unet is not None:
        raise ValueError(f"model: the {estimate.algorithm} estimate has no U-Net; expected unet None")
    if estimate.corrected and unet is None:
        raise ValueError(f"model: the {estimate.algorithm} estimate is corrected by a U-Net; expected its options")
    if unet is not None and n % (2 ** unet.depth):
        raise ValueError(f"model.depth: N = {n} must be divisible by 2^depth = {2 ** unet.depth}")
    inputs = model_inputs(n, c)
    est = build_estimate(estimate, probe, canvas, input_scale, "group_estimate")(inputs["diffraction"], inputs["offsets"])
    if unet is None:
        amp, phase = EstimateObject(amplitude_estimate, name="estimate_object")(est)
    else:
        features = FoldMembers(overlap_weight(probe), name="member_features")(est)
        z, u = unet_heads(features, c, unet.filters, unet.depth)
        amp, phase = RefineEstimate(amplitude_estimate, unet.phase_max_rad, name="refine_estimate")(z, u, est)
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
