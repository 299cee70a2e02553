"""The reconstruction artifacts: train.h5, inferred.h5 and stitched.h5.

What belongs here: one class per file, holding what the file holds (shapes, dtypes and
units in its docstring), whose ``write`` is the file's only writer and whose ``read`` its
only reader; both go through the container of :mod:`ptychopipe.artifacts.store`. The
trained model itself (model.keras) is Keras's format, written by the train stage. How the
content is computed belongs to the train, infer and stitch stages, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import h5py
import numpy as np

from .store import Array, ArtifactError, open_artifact, read_array, read_attr, write_artifact


@dataclass(frozen=True)
class TrainHistory:
    """train.h5: per-epoch history, each (E,) float64 — loss, val_loss (NaN when no
    validation split), learning_rate, seconds, samples_per_second (:data:`UNITS`); the
    training split's group indices (int64) used to fit (``train_groups``) and to validate
    (``validation_groups``); attrs (train_seconds, samples_per_second, epochs_run,
    nan_status: always "ok", since a run the NaN guard stops writes no train.h5)."""

    FILE: ClassVar[str] = "train.h5"
    STAGE: ClassVar[str] = "train"
    #: The history's series and their units.
    UNITS: ClassVar[dict[str, str]] = {"loss": "1", "val_loss": "1", "learning_rate": "1", "seconds": "s",
                                       "samples_per_second": "groups/s"}

    history: dict[str, np.ndarray]
    train_groups: np.ndarray
    validation_groups: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | Path, *, scenario: str, config: Any, ratios: Mapping[str, float]) -> None:
        """Atomically write train.h5."""
        if set(self.history) != set(self.UNITS):
            raise ValueError(f"history: expected the series {sorted(self.UNITS)}, got {sorted(self.history)}")
        arrays = {f"history/{k}": Array(v, self.UNITS[k]) for k, v in self.history.items()}
        arrays["split/train_groups"] = Array(self.train_groups, "index")
        arrays["split/validation_groups"] = Array(self.validation_groups, "index")
        write_artifact(path, stage=self.STAGE, scenario=scenario, config=config, arrays=arrays, attrs=self.attrs,
                       ratios=ratios)

    @classmethod
    def read(cls, path: str | Path) -> TrainHistory:
        """Read and check train.h5's history (equal lengths), split and attributes."""
        with open_artifact(path, cls.STAGE) as f:
            hist = {k: read_array(f, f"history/{k}", ndim=1, kind="f") for k in cls.UNITS}
            train = read_array(f, "split/train_groups", ndim=1, kind="i")
            val = read_array(f, "split/validation_groups", ndim=1, kind="i")
            attrs = dict(f.attrs)
        n = {len(v) for v in hist.values()}
        if len(n) != 1:
            raise ArtifactError(f"{path}: history/*: expected equal lengths, got {sorted(n)}")
        return cls(hist, train, val, attrs)


@dataclass(frozen=True)
class Inferred:
    """inferred.h5: the test split's B groups of C patches, reconstructed.

    amplitude (B, C, N, N) float32 [object amplitude], phase (B, C, N, N) float32 [rad]:
    the predicted object patches (after the overlap merge for C > 1); positions (B, C, 2)
    float64 [x, y] px: global patch centres in object coordinates (same convention as the
    simulator: patch pixel (i, k) sits at (y - N/2 + i, x - N/2 + k)); indices (B, C)
    int64 into the simulated arrays; probe (N, N) complex64 P_abs [photons^0.5];
    predicted_photons, measured_photons (B, C) float64 [counts] per pattern. attrs:
    :data:`REQUIRED_ATTRS` (predicted_over_measured_counts: mean predicted counts / mean
    measured counts per pattern; poisson_nll of the test split; mean_counts) and others.
    """

    FILE: ClassVar[str] = "inferred.h5"
    STAGE: ClassVar[str] = "infer"
    #: Root attributes the readers rely on (numeric; checked by :meth:`read`).
    REQUIRED_ATTRS: ClassVar[tuple[str, ...]] = ("predicted_over_measured_counts", "poisson_nll", "mean_counts")

    amplitude: np.ndarray
    phase: np.ndarray
    positions: np.ndarray
    indices: np.ndarray
    probe: np.ndarray
    predicted_photons: np.ndarray
    measured_photons: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | Path, *, scenario: str, config: Any, ratios: Mapping[str, float]) -> None:
        """Atomically write inferred.h5 (``attrs`` must hold :data:`REQUIRED_ATTRS`)."""
        missing = [k for k in self.REQUIRED_ATTRS if k not in self.attrs]
        if missing:
            raise ValueError(f"attrs: expected {list(self.REQUIRED_ATTRS)}, missing {missing}")
        write_artifact(
            path, stage=self.STAGE, scenario=scenario, config=config,
            arrays={"amplitude": Array(self.amplitude, "object amplitude"), "phase": Array(self.phase, "rad"),
                    "positions": Array(self.positions, "px"), "indices": Array(self.indices, "index"),
                    "predicted_photons": Array(self.predicted_photons, "counts"),
                    "measured_photons": Array(self.measured_photons, "counts"),
                    "probe": Array(self.probe, "photons^0.5")},
            attrs=self.attrs, ratios=ratios)

    @classmethod
    def read(cls, path: str | Path) -> Inferred:
        """Read and check inferred.h5 (shapes consistent with the amplitude's (B, C, N, N),
        and the attributes :data:`REQUIRED_ATTRS` present and numeric)."""
        with open_artifact(path, cls.STAGE) as f:
            amp = read_array(f, "amplitude", ndim=4, kind="f")
            b, c, n, _ = amp.shape
            phase = read_array(f, "phase", ndim=4, kind="f", shape=amp.shape)
            pos = read_array(f, "positions", ndim=3, kind="f", shape=(b, c, 2))
            idx = read_array(f, "indices", ndim=2, kind="i", shape=(b, c))
            probe = read_array(f, "probe", ndim=2, kind="c", shape=(n, n))
            predicted = read_array(f, "predicted_photons", ndim=2, kind="f", shape=(b, c))
            measured = read_array(f, "measured_photons", ndim=2, kind="f", shape=(b, c))
            for key in cls.REQUIRED_ATTRS:
                read_attr(f, key, float)
            attrs = dict(f.attrs)
        return cls(amp, phase, pos, idx, probe, predicted, measured, attrs)


def read_canvas(f: h5py.File) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """The canvas datasets an image artifact shares (stitched.h5, baseline.h5): ``object``
    (H, W) complex, ``coverage`` (H, W) float, ``count`` (H, W) int and ``origin`` (x, y) px,
    checked against one another. Returns (object, coverage, count, (origin_x, origin_y))."""
    obj = read_array(f, "object", ndim=2, kind="c")
    coverage = read_array(f, "coverage", ndim=2, kind="f", shape=obj.shape)
    count = read_array(f, "count", ndim=2, kind="i", shape=obj.shape)
    origin = read_array(f, "origin", ndim=1, kind="i", shape=(2,))
    return obj, coverage, count, (int(origin[0]), int(origin[1]))


@dataclass(frozen=True)
class StitchedCanvas:
    """stitched.h5: the reconstructed patches on one canvas.

    object (H, W) complex64 [object amplitude]: Σ w·Ô / Σ w, 0 where coverage = 0;
    coverage (H, W) float32: Σ w (dimensionless; w per config ``stitch.weight``); count
    (H, W) int32 [patches]; origin_x, origin_y (int, px): object coordinates of canvas pixel
    (0, 0), i.e. canvas pixel (r, c) is object pixel (origin_y + r, origin_x + c); attrs:
    the other root attributes.
    """

    FILE: ClassVar[str] = "stitched.h5"
    STAGE: ClassVar[str] = "stitch"

    object: np.ndarray
    coverage: np.ndarray
    count: np.ndarray
    origin_x: int
    origin_y: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | Path, *, scenario: str, config: Any, ratios: Mapping[str, float]) -> None:
        """Atomically write stitched.h5 (object as complex64, coverage as float32)."""
        write_artifact(
            path, stage=self.STAGE, scenario=scenario, config=config,
            arrays={
                "object": Array(self.object.astype(np.complex64), "object amplitude"),
                "coverage": Array(self.coverage.astype(np.float32), "weight (sum of w per pixel, dimensionless)"),
                "count": Array(self.count, "patches"),
                "origin": Array(np.array([self.origin_x, self.origin_y], dtype=np.int64), "px"),
            },
            attrs={"origin_x": self.origin_x, "origin_y": self.origin_y, **self.attrs}, ratios=ratios)

    @classmethod
    def read(cls, path: str | Path) -> StitchedCanvas:
        """Read and check stitched.h5 (canvas arrays of one shape, origin (x, y))."""
        with open_artifact(path, cls.STAGE) as f:
            obj, coverage, count, (x, y) = read_canvas(f)
            attrs = dict(f.attrs)
        return cls(obj, coverage, count, x, y, attrs)
