"""The evaluation artifacts: comparison.h5, comparison.json and baseline.h5.

What belongs here: one class per file, holding what the file holds (shapes, dtypes and
units in its docstring), whose ``write`` is the file's only writer and whose ``read`` its
only reader; both go through the container of :mod:`ptychopipe.artifacts.store`. How the
scores are computed belongs to :mod:`ptychopipe.evaluation` and the compare and baseline
stages, never here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from .reconstruction import read_canvas
from .store import (Array, ArtifactError, json_safe, open_artifact, read_array, read_json_object, write_artifact,
                    write_text_atomic)


@dataclass(frozen=True)
class Comparison:
    """comparison.h5: the images the compare stage scored, on the stitched canvas.

    ``images`` maps dataset paths to arrays, each (H, W) float32 unless said otherwise;
    their units are :data:`UNITS`. Always: ``mask`` (H, W) uint8 (1 = evaluated),
    ``amplitude/reconstruction`` and ``phase/reconstruction``. With a true object also
    ``{amplitude,phase}/{truth,error}`` and the FRC curves ``frc/*`` (1-D over Fourier
    rings); without one the data-space ring means ``data/*`` (1-D over detector rings).
    attrs: the root attributes (origin_x, origin_y, first_broken, nan_status,
    summary_json, ...)."""

    FILE: ClassVar[str] = "comparison.h5"
    STAGE: ClassVar[str] = "compare"
    #: Every dataset the file may hold, in writing order, with its units.
    UNITS: ClassVar[dict[str, str]] = {
        "mask": "1 = evaluated",
        "amplitude/truth": "object amplitude", "amplitude/reconstruction": "object amplitude",
        "amplitude/error": "object amplitude",
        "phase/truth": "rad", "phase/reconstruction": "rad", "phase/error": "rad",
        "frc/frequency": "cycles/px", "frc/amplitude": "1", "frc/phase": "1", "frc/threshold": "1",
        "frc/n_pixels": "Fourier px",
        "data/ring_frequency": "cycles/px", "data/measured_ring_mean": "counts",
        "data/predicted_ring_mean": "counts",
    }
    REQUIRED: ClassVar[tuple[str, ...]] = ("mask", "amplitude/reconstruction", "phase/reconstruction")

    images: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | Path, *, scenario: str, config: Any, ratios: Mapping[str, float]) -> None:
        """Atomically write comparison.h5 (datasets in :data:`UNITS` order)."""
        unknown = sorted(set(self.images) - set(self.UNITS))
        missing = [k for k in self.REQUIRED if k not in self.images]
        if unknown or missing:
            raise ValueError(f"images: expected keys of {list(self.UNITS)} with {list(self.REQUIRED)}; "
                             f"unknown {unknown}, missing {missing}")
        arrays = {k: Array(self.images[k], unit) for k, unit in self.UNITS.items() if k in self.images}
        write_artifact(path, stage=self.STAGE, scenario=scenario, config=config, arrays=arrays, attrs=self.attrs,
                       ratios=ratios)

    @classmethod
    def read(cls, path: str | Path) -> Comparison:
        """Read and check comparison.h5: the required images, of one (H, W) shape."""
        with open_artifact(path, cls.STAGE) as f:
            mask = read_array(f, "mask", ndim=2, kind="iu")
            images = {"mask": mask}
            for key in cls.UNITS:
                if key != "mask" and (key in cls.REQUIRED or key in f):
                    two_d = key.split("/")[0] in ("amplitude", "phase")
                    images[key] = read_array(f, key, ndim=2 if two_d else 1, kind="fiu",
                                             shape=mask.shape if two_d else None)
            attrs = dict(f.attrs)
        return cls(images, attrs)


class ComparisonSummary:
    """comparison.json: the compare stage's scores as a JSON object with at least
    :data:`KEYS` (docs/artifacts.md); each ratio-chain link has :data:`CHAIN_KEYS`.
    Non-finite numbers are stored as null (strict JSON)."""

    FILE: ClassVar[str] = "comparison.json"
    #: Top-level keys every comparison.json holds.
    KEYS: ClassVar[tuple[str, ...]] = (
        "scenario", "config", "config_hash", "n_pixels", "phase_offset_rad", "registration", "amplitude_bias",
        "metrics", "frc_threshold", "chain", "first_broken", "training", "nan_status", "figures")
    #: Keys of each ratio-chain link (``evaluation.ChainLink``; the report reads them).
    CHAIN_KEYS: ClassVar[tuple[str, ...]] = ("stage", "ratio", "contract", "relative", "cumulative", "broken")

    @classmethod
    def write(cls, path: str | Path, data: Mapping[str, Any]) -> None:
        """Atomically write comparison.json (keys :data:`KEYS`, strict JSON)."""
        missing = [k for k in cls.KEYS if k not in data]
        if missing:
            raise ValueError(f"{path}: comparison keys {missing} missing; expected {list(cls.KEYS)}")
        write_text_atomic(path, json.dumps(json_safe(dict(data)), indent=2, sort_keys=True, allow_nan=False) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> dict[str, Any]:
        """Load a comparison.json and check its keys, metrics, registration and chain."""
        from ..evaluation.metrics import METRIC_KEYS  # the metrics are declared with their functions

        path = Path(path)
        data = read_json_object(path, "the compare stage's JSON", cls.KEYS)
        for part in ("amplitude", "phase"):
            got = data["metrics"].get(part) if isinstance(data["metrics"], dict) else None
            if not isinstance(got, dict) or any(k not in got for k in METRIC_KEYS):
                raise ArtifactError(f"{path}: metrics.{part}: expected keys {list(METRIC_KEYS)}, "
                                    f"got {sorted(got) if isinstance(got, dict) else got!r}")
        tolerance = data["config"].get("ratio_tolerance") if isinstance(data["config"], dict) else None
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
            raise ArtifactError(f"{path}: config.ratio_tolerance: expected a number, got {tolerance!r}")
        reg = data["registration"]
        if not isinstance(reg, dict) or not isinstance(reg.get("enabled"), bool) or "shift_px" not in reg:
            raise ArtifactError(f"{path}: registration: expected an object with keys enabled (bool) and shift_px, "
                                f"got {reg!r}")
        chain = data["chain"]
        for i, link in enumerate(chain if isinstance(chain, list) else [chain]):
            if not isinstance(link, dict) or any(k not in link for k in cls.CHAIN_KEYS):
                raise ArtifactError(f"{path}: chain[{i}]: expected an object with keys {list(cls.CHAIN_KEYS)}, "
                                    f"got {sorted(link) if isinstance(link, dict) else link!r}")
        return data


@dataclass(frozen=True)
class BaselineResult:
    """baseline.h5: the iterative reference on the stitched canvas's grid.

    object (h, w) complex64 [object amplitude]; coverage (h, w) float32 [Σ |P|²/max|P|²
    per pixel]; count (h, w) int32 [patches]; origin (x, y) px; positions (M, 2) float64
    [x, y] px; indices (M,) int64 into the simulated arrays; snapshot_objects (S, h, w)
    complex64; epochs (S,) int64; seconds (S,) float64 cumulative reconstruction s; loss
    (S,) float64 (pty-chi's displayed loss); deviance (S, M) float64 [counts, Poisson
    deviance per pattern]; predicted (S, M) and measured (M,) float64 photons per pattern
    [counts]; attrs: the root attributes."""

    FILE: ClassVar[str] = "baseline.h5"
    STAGE: ClassVar[str] = "baseline"

    object: np.ndarray
    coverage: np.ndarray
    count: np.ndarray
    origin: tuple[int, int]
    positions: np.ndarray
    indices: np.ndarray
    snapshot_objects: np.ndarray
    epochs: np.ndarray
    seconds: np.ndarray
    loss: np.ndarray
    deviance: np.ndarray
    predicted: np.ndarray
    measured: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | Path, *, scenario: str, config: Any, ratios: Mapping[str, float]) -> None:
        """Atomically write baseline.h5."""
        write_artifact(
            path, stage=self.STAGE, scenario=scenario, config=config,
            arrays={
                "object": Array(self.object, "object amplitude"),
                "coverage": Array(self.coverage, "weight (sum of |P|²/max|P|² per pixel)"),
                "count": Array(self.count, "patches"),
                "origin": Array(np.array(self.origin, dtype=np.int64), "px"),
                "positions": Array(self.positions, "px"),
                "indices": Array(self.indices, "index"),
                "snapshots/object": Array(self.snapshot_objects, "object amplitude"),
                "snapshots/epoch": Array(self.epochs, "epochs"),
                "snapshots/seconds": Array(self.seconds, "s"),
                "snapshots/loss": Array(self.loss, "pty-chi displayed loss"),
                "snapshots/deviance": Array(self.deviance, "counts (Poisson deviance per pattern)"),
                "snapshots/predicted_photons": Array(self.predicted, "counts"),
                "measured_photons": Array(self.measured, "counts"),
            },
            attrs=self.attrs, ratios=ratios)

    @classmethod
    def read(cls, path: str | Path) -> BaselineResult:
        """Read and check baseline.h5 (the snapshot arrays against the object and indices)."""
        with open_artifact(path, cls.STAGE) as f:
            obj, cov, count, origin = read_canvas(f)
            idx = read_array(f, "indices", ndim=1, kind="i")
            m = len(idx)
            pos = read_array(f, "positions", ndim=2, kind="f", shape=(m, 2))
            snaps = read_array(f, "snapshots/object", ndim=3, kind="c", shape=(None, *obj.shape))
            s = snaps.shape[0]
            ep = read_array(f, "snapshots/epoch", ndim=1, kind="i", shape=(s,))
            sec = read_array(f, "snapshots/seconds", ndim=1, kind="f", shape=(s,))
            loss = read_array(f, "snapshots/loss", ndim=1, kind="f", shape=(s,))
            dev = read_array(f, "snapshots/deviance", ndim=2, kind="f", shape=(s, m))
            pred = read_array(f, "snapshots/predicted_photons", ndim=2, kind="f", shape=(s, m))
            meas = read_array(f, "measured_photons", ndim=1, kind="f", shape=(m,))
            attrs = dict(f.attrs)
        return cls(obj, cov, count, origin, pos, idx, snaps, ep, sec, loss, dev, pred,
                   meas, attrs)
