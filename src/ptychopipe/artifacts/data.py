"""The data artifacts: simulated.h5, split.h5, grouped.h5 and normalized.h5.

What belongs here: one class per file, holding what the file holds (shapes, dtypes and
units in its docstring), whose ``write`` is the file's only writer and whose ``read`` its
only reader; both go through the container of :mod:`ptychopipe.artifacts.store`. How the
content is computed belongs to the stage that makes it (simulate or ingest, split, group,
normalize), never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import h5py
import numpy as np

from .store import Array, ArtifactError, open_artifact, read_array, read_attr, write_artifact

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Simulated:
    """simulated.h5, written by the simulate stage or by the importer of measured data
    (ingest), which writes the same layout with the object optional.

    object (H, W) complex64 [object amplitude], None when the file has no true object
    (imported data without one: ``has_truth`` False, and ``attrs`` carries ``has_truth`` 0
    and ``object_shape`` [H, W]); probe (N, N) complex64 [photons^0.5, absolute: P_abs];
    positions (M, 2) float64 [x, y] px, patch centres in object pixel coordinates; counts
    (M, N, N) float32 [counts]; amplitude (M, N, N) float32 [photons^0.5] = sqrt(counts);
    attrs: the file's other root attributes (on writing: the ones to store besides the
    common ones)."""

    FILE: ClassVar[str] = "simulated.h5"
    STAGES: ClassVar[tuple[str, ...]] = ("simulate", "ingest")

    object: np.ndarray | None
    probe: np.ndarray
    positions: np.ndarray
    counts: np.ndarray
    amplitude: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_counts(cls, *, object: np.ndarray | None, probe: np.ndarray, positions: np.ndarray,
                    counts: np.ndarray, attrs: Mapping[str, Any]) -> Simulated:
        """The record of measured (or simulated) counts, with amplitude = sqrt(counts)."""
        return cls(object, probe, positions, counts, np.sqrt(counts), dict(attrs))

    @property
    def has_truth(self) -> bool:
        return self.object is not None

    @property
    def object_shape(self) -> tuple[int, int]:
        """(H, W) of the object frame the positions live in (the object's shape when present)."""
        if self.object is not None:
            return (int(self.object.shape[0]), int(self.object.shape[1]))
        h, w = np.asarray(self.attrs["object_shape"]).tolist()
        return (int(h), int(w))

    def write(self, path: str | Path, *, stage: str, scenario: str, config: Any,
              ratios: Mapping[str, float]) -> None:
        """Atomically write simulated.h5; ``stage`` is "simulate" or "ingest"."""
        if stage not in self.STAGES:
            raise ValueError(f"stage: expected one of {list(self.STAGES)}, got {stage!r}")
        arrays = {} if self.object is None else {"object": Array(self.object, "object amplitude")}
        arrays.update({
            "probe": Array(self.probe, "photons^0.5"),
            "positions": Array(self.positions, "px"),
            "counts": Array(self.counts, "counts"),
            "amplitude": Array(self.amplitude, "photons^0.5"),
        })
        write_artifact(path, stage=stage, scenario=scenario, config=config, arrays=arrays, attrs=self.attrs,
                       ratios=ratios)

    @classmethod
    def read(cls, path: str | Path) -> Simulated:
        """Read and check simulated.h5: datasets, shapes, counts ≥ 0, every patch inside the
        object frame."""
        with open_artifact(path, cls.STAGES) as f:
            probe = read_array(f, "probe", ndim=2, kind="c")
            n = probe.shape[0]
            if probe.shape != (n, n):
                raise ArtifactError(f"{path}: probe: expected a square array, got {probe.shape}")
            positions = read_array(f, "positions", ndim=2, kind="f", shape=(None, 2))
            m = positions.shape[0]
            counts = read_array(f, "counts", ndim=3, kind="f", shape=(m, n, n))
            amplitude = read_array(f, "amplitude", ndim=3, kind="f", shape=(m, n, n))
            obj = _object_or_none(f)
            attrs = dict(f.attrs)
            if obj is None and np.shape(attrs.get("object_shape")) != (2,):
                raise ArtifactError(f"{path}: object_shape: expected the attribute [H, W] (the file has no object), "
                                    f"got {attrs.get('object_shape')!r}")
        neg = int(np.count_nonzero(~(counts >= 0)))
        if neg:
            raise ArtifactError(f"{path}: counts: {neg} negative or NaN values (min {float(np.nanmin(counts)):.6g}); "
                                "expected counts >= 0")
        h, w = obj.shape if obj is not None else (int(v) for v in attrs["object_shape"])
        inside = ((positions[:, 0] >= n / 2) & (positions[:, 0] <= w - n / 2)
                  & (positions[:, 1] >= n / 2) & (positions[:, 1] <= h - n / 2))
        if not inside.all():
            bad = int(np.count_nonzero(~inside))
            raise ArtifactError(f"{path}: positions: {bad} of {m} patch centres put the {n}x{n} patch outside "
                                f"the {h}x{w} object; expected {n / 2:g} <= x <= {w - n / 2:g} and "
                                f"{n / 2:g} <= y <= {h - n / 2:g}")
        return cls(obj, probe, positions, counts, amplitude, attrs)

    @classmethod
    def read_truth(cls, path: str | Path) -> np.ndarray | None:
        """The true object (H, W) complex64 [object amplitude] without loading the counts
        (what the evaluation needs); None when the file has no true object."""
        with open_artifact(path, cls.STAGES) as f:
            return _object_or_none(f)

    @classmethod
    def read_pattern_mean_amplitude(cls, path: str | Path, indices: np.ndarray) -> np.ndarray:
        """Mean of ``amplitude`` over each listed pattern's N×N pixels, (K,) float64
        [photons^0.5], for ``indices`` (K,) int (any order, repeats allowed); reads only
        those patterns."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        uniq, inverse = np.unique(idx, return_inverse=True)
        with open_artifact(path, cls.STAGES) as f:
            if "amplitude" not in f or f["amplitude"].ndim != 3:
                raise ArtifactError(f"{path}: amplitude: expected an (M, N, N) dataset")
            m = f["amplitude"].shape[0]
            if uniq.size and (uniq[0] < 0 or uniq[-1] >= m):
                raise ArtifactError(f"{path}: amplitude: expected pattern indices in [0, {m}), "
                                    f"got [{int(uniq[0])}, {int(uniq[-1])}]")
            try:
                means = np.asarray(f["amplitude"][uniq], dtype=np.float64).mean(axis=(1, 2))
            except (OSError, RuntimeError) as exc:
                raise ArtifactError(f"{path}: amplitude: unreadable (truncated or corrupted?): {exc}") from None
        return means[inverse]


def _object_or_none(f: h5py.File) -> np.ndarray | None:
    """The ``object`` dataset, or None when the file says it has none (attr ``has_truth`` = 0,
    written by the importer for data without a true object). A missing object without that
    attribute is an error (a simulate file always has one)."""
    if "object" not in f and not int(f.attrs.get("has_truth", 1)):
        return None
    return read_array(f, "object", ndim=2, kind="c")


@dataclass(frozen=True)
class Split:
    """split.h5: indices (int64) into the simulated arrays of the train and test halves,
    their positions ((K, 2) float64 [x, y] px, for people; the stages read the positions
    from simulated.h5), ``y_split`` [px] and ``n_total`` (the number of patterns split)."""

    FILE: ClassVar[str] = "split.h5"
    STAGE: ClassVar[str] = "split"

    train_indices: np.ndarray
    test_indices: np.ndarray
    train_positions: np.ndarray
    test_positions: np.ndarray
    y_split: float
    n_total: int

    def write(self, path: str | Path, *, scenario: str, config: Any, ratios: Mapping[str, float]) -> None:
        """Atomically write split.h5."""
        write_artifact(
            path, stage=self.STAGE, scenario=scenario, config=config,
            arrays={"train/indices": Array(self.train_indices, "index"),
                    "test/indices": Array(self.test_indices, "index"),
                    "train/positions": Array(self.train_positions, "px"),
                    "test/positions": Array(self.test_positions, "px")},
            attrs={"y_split": self.y_split, "n_total": self.n_total}, ratios=ratios)

    @classmethod
    def read(cls, path: str | Path) -> Split:
        """Read and check split.h5."""
        with open_artifact(path, cls.STAGE) as f:
            tr = read_array(f, "train/indices", ndim=1, kind="i")
            te = read_array(f, "test/indices", ndim=1, kind="i")
            tr_pos = read_array(f, "train/positions", ndim=2, kind="f", shape=(len(tr), 2))
            te_pos = read_array(f, "test/positions", ndim=2, kind="f", shape=(len(te), 2))
            return cls(tr, te, tr_pos, te_pos, read_attr(f, "y_split", float), read_attr(f, "n_total", int))


@dataclass(frozen=True)
class GroupSet:
    """The groups of one split. indices (B, C) int64 into the simulated arrays; centres
    (B, 2) float64 [x, y] px; offsets (B, C, 2) float64 [x, y] px, member position minus
    group centre; amplitude (B, N, N, C) float32: the measured amplitudes [photons^0.5]
    (grouped.h5) or the network inputs [a·photons^0.5] (normalized.h5); counts (B, N, N, C)
    float32 [counts] (normalized.h5 only)."""

    indices: np.ndarray
    centres: np.ndarray
    offsets: np.ndarray
    amplitude: np.ndarray
    counts: np.ndarray | None = None


def _read_groupset(f: h5py.File, split: str, with_counts: bool, amp_name: str) -> GroupSet:
    idx = read_array(f, f"{split}/indices", ndim=2, kind="i")
    b, c = idx.shape
    centres = read_array(f, f"{split}/centres", ndim=2, kind="f", shape=(b, 2))
    offsets = read_array(f, f"{split}/offsets", ndim=3, kind="f", shape=(b, c, 2))
    amp = read_array(f, f"{split}/{amp_name}", ndim=4, kind="f", shape=(b, None, None, c))
    counts = read_array(f, f"{split}/counts", ndim=4, kind="f", shape=amp.shape) if with_counts else None
    return GroupSet(idx, centres, offsets, amp, counts)


@dataclass(frozen=True)
class Grouped:
    """grouped.h5: ``sets`` {"train", "test"} of :class:`GroupSet` (amplitude = the raw
    sqrt counts); gridsize (C = gridsize²); attrs: the other root attributes (on reading,
    among them ``max_abs_offset_px``, the largest |offset| [px] of either split, which
    :meth:`write` computes)."""

    FILE: ClassVar[str] = "grouped.h5"
    STAGE: ClassVar[str] = "group"

    sets: dict[str, GroupSet]
    gridsize: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | Path, *, scenario: str, config: Any, ratios: Mapping[str, float]) -> None:
        """Atomically write grouped.h5."""
        arrays: dict[str, Array] = {}
        for name in SPLITS:
            g = self.sets[name]
            arrays.update({
                f"{name}/indices": Array(g.indices, "index"),
                f"{name}/centres": Array(g.centres, "px"),
                f"{name}/offsets": Array(g.offsets, "px"),
                f"{name}/amplitude": Array(g.amplitude, "photons^0.5"),
            })
        max_off = max(float(np.abs(self.sets[s].offsets).max()) for s in SPLITS)
        write_artifact(path, stage=self.STAGE, scenario=scenario, config=config, arrays=arrays,
                       attrs={"gridsize": self.gridsize, "max_abs_offset_px": max_off, **self.attrs}, ratios=ratios)

    @classmethod
    def read(cls, path: str | Path) -> Grouped:
        """Read and check both splits of grouped.h5."""
        with open_artifact(path, cls.STAGE) as f:
            sets = {s: _read_groupset(f, s, False, "amplitude") for s in SPLITS}
            gridsize = read_attr(f, "gridsize", int)
            attrs = dict(f.attrs)
        for s, g in sets.items():
            if g.indices.shape[1] != gridsize ** 2:
                raise ArtifactError(f"{path}: {s}/indices: expected groups of gridsize² = {gridsize ** 2} patterns "
                                    f"(attribute gridsize {gridsize}), got {g.indices.shape[1]}")
        return cls(sets, gridsize, attrs)

    @classmethod
    def read_indices(cls, path: str | Path, split: str) -> np.ndarray:
        """``{split}/indices`` (B, C) int64, without loading the patterns."""
        with open_artifact(path, cls.STAGE) as f:
            return read_array(f, f"{split}/indices", ndim=2, kind="i")


@dataclass(frozen=True)
class Normalized:
    """normalized.h5: the training-ready dataset.

    ``sets[split].amplitude`` holds the network input X = a * sqrt(counts) (B, N, N, C)
    float32 [a·photons^0.5]; ``sets[split].counts`` the measured counts. probe (N, N)
    complex64 P_abs [photons^0.5]; input_scale a; amplitude_estimate ā [object amplitude];
    mean_counts mean_j Σ n_j over the training split [counts]; gridsize; attrs: the other
    root attributes."""

    FILE: ClassVar[str] = "normalized.h5"
    STAGE: ClassVar[str] = "normalize"

    sets: dict[str, GroupSet]
    probe: np.ndarray
    input_scale: float
    amplitude_estimate: float
    mean_counts: float
    gridsize: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def write(self, path: str | Path, *, scenario: str, config: Any, ratios: Mapping[str, float]) -> None:
        """Atomically write normalized.h5 (every split's counts must be set)."""
        arrays: dict[str, Array] = {"probe": Array(self.probe, "photons^0.5")}
        for name in SPLITS:
            g = self.sets[name]
            if g.counts is None:
                raise ValueError(f"{name}: counts: expected the measured counts, got None")
            arrays.update({
                f"{name}/inputs": Array(g.amplitude, "a*photons^0.5"),
                f"{name}/counts": Array(g.counts, "counts"),
                f"{name}/indices": Array(g.indices, "index"),
                f"{name}/centres": Array(g.centres, "px"),
                f"{name}/offsets": Array(g.offsets, "px"),
            })
        write_artifact(
            path, stage=self.STAGE, scenario=scenario, config=config, arrays=arrays,
            attrs={"input_scale": self.input_scale, "amplitude_estimate": self.amplitude_estimate,
                   "mean_counts": self.mean_counts, "gridsize": self.gridsize, **self.attrs},
            ratios=ratios)

    @classmethod
    def read(cls, path: str | Path) -> Normalized:
        """Read and check normalized.h5: both splits, the probe, the scale attributes."""
        with open_artifact(path, cls.STAGE) as f:
            sets = {s: _read_groupset(f, s, True, "inputs") for s in SPLITS}
            probe = read_array(f, "probe", ndim=2, kind="c")
            n = probe.shape[0]
            for s, g in sets.items():
                if g.amplitude.shape[1:3] != (n, n):
                    raise ArtifactError(f"{path}: {s}/inputs: expected patterns {n}x{n} (probe size), "
                                        f"got {g.amplitude.shape[1:3]}")
            return cls(sets, probe, read_attr(f, "input_scale", float), read_attr(f, "amplitude_estimate", float),
                       read_attr(f, "mean_counts", float), read_attr(f, "gridsize", int), dict(f.attrs))
