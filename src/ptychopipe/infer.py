"""The infer stage's computation: predict the test split's object patches with the trained PINN.

The stage (:mod:`ptychopipe.stages.infer`) writes what :func:`infer_arrays` returns to
``inferred.h5`` (format: :class:`ptychopipe.artifacts.Inferred`): amplitude and
phase (B, C, N, N) float32 of each test group's patches (after the overlap merge when
C > 1), their global centres (B, C, 2) [x, y] px = group centre + offset, the pattern
indices (B, C), the probe P_abs, ``predicted_photons`` and ``measured_photons`` (B, C)
[counts per pattern]; attrs ``predicted_over_measured_counts`` and ``poisson_nll`` (the
Poisson-deviance part of the training loss, over mean counts, on the test split: the
whole loss when the MAE and TV weights are 0, the default), and telemetry ratios.

Before predicting, the model is checked against the dataset it is applied to: same N
and C, same probe, same ā, and a merge canvas large enough for the test offsets — a
stale model.keras is refused with one line instead of producing silently wrong patches.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import keras
import numpy as np

from .artifacts import ArtifactError, Inferred, Normalized, not_a_file
from .network import model_amplitude_estimate, model_canvas, model_probe, poisson_deviance_np
from .physics import canvas_size
from .telemetry import check_finite

STAGE = "infer"


def load_model(path: str | Path) -> keras.Model:
    """Load ``model.keras`` (custom layers registered by :mod:`ptychopipe.network`)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(not_a_file(path, "expected the train stage's model.keras"))
    check_keras_archive(path)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArtifactError(f"{path}: not a loadable Keras model: {first}") from None


def check_keras_archive(path: Path) -> None:
    """A ``.keras`` file is a zip archive: refuse a truncated or corrupted one by name (Keras
    itself says "File not found" for a file that exists but is cut short)."""
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path}: truncated or corrupted model ({size} bytes, not a complete .keras zip "
                            "archive); expected the train stage's model.keras: re-run the train stage")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ArtifactError(f"{path}: truncated or corrupted model ({size} bytes): {exc}; re-run the train stage") \
            from None
    if bad is not None:
        raise ArtifactError(f"{path}: corrupted model ({bad} in the .keras archive fails its checksum); "
                            "re-run the train stage")


def _unit(probe: np.ndarray) -> np.ndarray:
    p = np.asarray(probe, dtype=np.complex128)
    return p / np.sqrt(np.sum(np.abs(p) ** 2))


def check_model(model: keras.Model, norm: Normalized, model_path: str | Path, normalized_path: str | Path,
                foreign: bool = False) -> None:
    """Raise ArtifactError (one line) if ``model`` does not belong to ``norm``'s dataset.

    ``foreign``: the model was trained on another scenario (``infer.model_from``). The probe
    must then have the same shape, P/‖P‖, but its absolute scale and ā may differ (they
    follow the dose and the object's transmission; :func:`data_scales` rescales)."""
    shape = tuple(model.input["diffraction"].shape[1:])
    g = norm.sets["test"]
    want = tuple(g.amplitude.shape[1:])
    if shape != want:
        raise ArtifactError(f"{model_path}: input diffraction: expected (N, N, C) = {want} from "
                            f"{normalized_path}, got {shape}")
    probe = model_probe(model)
    if foreign:
        a, b = _unit(probe), _unit(norm.probe)
        if probe.shape != norm.probe.shape or not np.allclose(a, b, rtol=0, atol=1e-5 * float(np.abs(b).max())):
            raise ArtifactError(f"{model_path}: probe: its shape P/|P| differs from {normalized_path} probe's "
                                "(max difference "
                                f"{float(np.abs(a - b).max()) / float(np.abs(b).max()) if a.shape == b.shape else 1:.3g}"
                                " of max|P|); expected a model trained with the same probe (infer.model_from)")
    elif probe.shape != norm.probe.shape or not np.allclose(probe, norm.probe, rtol=1e-6,
                                                             atol=1e-6 * float(np.abs(norm.probe).max())):
        raise ArtifactError(f"{model_path}: probe: differs from {normalized_path} probe "
                            "(model trained on another dataset?); expected the same P_abs")
    abar = model_amplitude_estimate(model)
    if not foreign and not np.isclose(abar, norm.amplitude_estimate, rtol=1e-6):
        raise ArtifactError(f"{model_path}: amplitude_estimate: expected {norm.amplitude_estimate:.9g} "
                            f"(from {normalized_path}), got {abar:.9g}")
    canvas = model_canvas(model)
    if canvas is not None:
        need = canvas_size(probe.shape[0], float(np.abs(g.offsets).max()) if g.offsets.size else 0.0)
        if canvas < need:
            raise ArtifactError(f"{model_path}: merge canvas: expected >= {need} px for the test offsets of "
                                f"{normalized_path}, got {canvas}")


def predict(model: keras.Model, inputs: np.ndarray, offsets: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Run the PINN. inputs (B, N, N, C) float32, offsets (B, C, 2) [px] → {"counts",
    "amplitude", "phase"}, each (B, N, N, C) float32."""
    x = {"diffraction": np.asarray(inputs, dtype=np.float32), "offsets": np.asarray(offsets, dtype=np.float32)}
    return model.predict(x, batch_size=batch_size, verbose=0)


def data_scales(model: keras.Model, norm: Normalized) -> tuple[float, float]:
    """(amplitude factor, counts factor) that put a model's outputs in ``norm``'s units.

    The network's input X = a·sqrt(n) and its estimate (in units of ā) are the same for any
    dataset of the probe's shape; only ā, baked into the model's amplitude head, and
    the absolute probe of its forward model belong to the training data. Amplitude
    ×= ā_data/ā_model; counts ×= (‖P_data‖·ā_data / (‖P_model‖·ā_model))². Both are 1 for the
    model's own dataset."""
    abar_m, abar_d = model_amplitude_estimate(model), float(norm.amplitude_estimate)
    p_m = float(np.sqrt(np.sum(np.abs(model_probe(model).astype(np.complex128)) ** 2)))
    p_d = float(np.sqrt(np.sum(np.abs(norm.probe.astype(np.complex128)) ** 2)))
    amp = abar_d / abar_m
    return amp, (p_d * amp / p_m) ** 2


def infer_arrays(model: keras.Model, norm: Normalized, batch_size: int,
                 foreign: bool = False) -> tuple[Inferred, dict[str, float]]:
    """Predict the test split. Returns the content of ``inferred.h5`` (:class:`Inferred`:
    amplitude, phase (B, C, N, N) float32; positions (B, C, 2) float64; indices (B, C);
    predicted_photons, measured_photons (B, C) float64 [counts] per pattern; the probe;
    the attributes) and its telemetry ratios. ``foreign``:
    the model was trained on another scenario; its outputs are put in this dataset's units
    (:func:`data_scales`)."""
    g = norm.sets["test"]
    out = predict(model, g.amplitude, g.offsets, batch_size)
    amp_scale, counts_scale = data_scales(model, norm) if foreign else (1.0, 1.0)
    out = {"amplitude": out["amplitude"] * np.float32(amp_scale), "phase": out["phase"],
           "counts": out["counts"] * np.float32(counts_scale)}
    amp = np.ascontiguousarray(np.moveaxis(out["amplitude"], -1, 1), dtype=np.float32)
    phase = np.ascontiguousarray(np.moveaxis(out["phase"], -1, 1), dtype=np.float32)
    for name, arr in (("amplitude", amp), ("phase", phase), ("counts", out["counts"])):
        check_finite(STAGE, name, arr)
    predicted = out["counts"].astype(np.float64).sum(axis=(1, 2))  # (B, C)
    measured = g.counts.astype(np.float64).sum(axis=(1, 2))
    nll = float(poisson_deviance_np(g.counts, out["counts"], norm.mean_counts).mean())
    w = (np.abs(norm.probe.astype(np.complex128)) ** 2)[None, None]
    abar = norm.amplitude_estimate
    ratios = {
        "predicted_over_measured_counts": float(predicted.mean() / measured.mean()),
        "amplitude_mean_over_estimate": float(amp.mean(dtype=np.float64) / abar),
        # ā estimates the |P|²-weighted rms amplitude (Parseval, docs/design.md, 'Dose and normalisation'): the like-for-like ratio
        "amplitude_weighted_rms_over_estimate":
            float(np.sqrt((w * amp.astype(np.float64) ** 2).sum() / (w.sum() * amp.shape[0] * amp.shape[1])) / abar),
    }
    attrs = {"predicted_over_measured_counts": ratios["predicted_over_measured_counts"], "poisson_nll": nll,
             "amplitude_estimate": abar, "mean_counts": norm.mean_counts, "input_scale": norm.input_scale,
             "gridsize": norm.gridsize, "n_groups": int(amp.shape[0]), "amplitude_scale": float(amp_scale)}
    positions = g.centres[:, None, :].astype(np.float64) + g.offsets.astype(np.float64)
    return Inferred(amp, phase, positions, g.indices.astype(np.int64), norm.probe.astype(np.complex64), predicted,
                    measured, attrs), ratios
