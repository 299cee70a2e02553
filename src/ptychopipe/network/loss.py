"""The training loss: the Poisson deviance of measured counts given the expected counts λ̂.

What belongs here: :class:`PoissonLoss` (the Keras loss the train stage compiles), its
per-pixel terms in float32-safe form (:func:`deviance_terms`), its NumPy float64 twin
(:func:`poisson_deviance_np`, the infer stage's test-split loss) and the clamp of λ̂ they
share (:data:`LAMBDA_FLOOR`).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from .layers import PACKAGE

#: Below this, λ̂ is clamped before the log of the Poisson loss (docs/design.md, 'Loss') [counts].
LAMBDA_FLOOR = 1e-8


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
