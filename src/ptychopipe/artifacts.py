"""Readers and writers of every HDF5 artifact, in one place (see docs/artifacts.md).

Every file carries the attributes of docs/design.md, 'Artifact contract' (``schema_version``, ``stage``,
``scenario``, ``config_json``, ``config_hash``, ``ptychopipe_version``,
``created_utc``), a ``units`` attribute on every dataset and a ``telemetry/``
group with the statistics of each dataset (:func:`ptychopipe.telemetry.array_stats`)
plus the stage ratios (``telemetry`` group attributes ``ratio_*``).

Writes are atomic: the file is written under a temporary name in the same folder
and renamed into place only when complete, so a killed job never leaves a file
that looks complete. Readers check schema_version, stage, dataset presence,
shapes and dtypes, and the root attributes they use (:func:`read_attr`), before
returning anything, and turn unreadable or truncated files into one-line
:class:`ArtifactError` messages.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

import h5py
import numpy as np

from . import __version__
from .config import config_hash, to_json
from .errors import PtychopipeError
from .telemetry import array_stats

T = TypeVar("T")

SCHEMA_VERSION = 1


class ArtifactError(PtychopipeError, ValueError):
    """An artifact is missing, unreadable, or not what the reader expects (one-line message)."""


class ArtifactWriteError(ArtifactError, OSError):
    """An output could not be written (no permission, a read-only or full disk, ...): one line
    naming the output; still an OSError for callers that catch those."""


@dataclass(frozen=True)
class Array:
    """A dataset to write: the array and its physical units (docs/design.md, 'Artifact contract')."""

    data: np.ndarray
    units: str


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block
    completes. On any error (or a kill) nothing appears under ``path`` and the temporary
    file is removed (a SIGKILL may leave a dot-file ``.NAME.tmp-PID``, never ``NAME``).
    ``suffix`` is appended to the temporary name (e.g. ".keras", which Keras requires)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _fsync(tmp)  # the data on disk before the rename publishes it (a crash then leaves no empty file)
        os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as exc:  # no permission, a read-only or full disk, ...: one line naming the output
        raise ArtifactWriteError(f"{path}: could not write: {describe_os_error(exc)}; nothing written") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def not_a_file(path: str | Path, what: str) -> str:
    """The one-line message for an input path that is no file: a folder in its place is named
    as such (not "file not found"), else the file is missing. ``what`` says what was expected."""
    path = Path(path)
    if path.is_dir():
        return f"{path}: is a directory; expected a file ({what})"
    return f"{path}: file not found ({what})"


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error: Python's own message when it names the path,
    else the errno's text (h5py's messages are long and carry no path attribute)."""
    if exc.filename is not None:
        return str(exc)
    if exc.errno is not None:
        return f"[Errno {exc.errno}] {os.strerror(exc.errno)}"
    text = str(exc).splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def _fsync(path: Path) -> None:
    """fsync a file, or a directory (its entries), where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> None:
    """Atomically write a Matplotlib figure (format from ``path``'s suffix, e.g. PNG) and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, Path(path).suffix) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of an input file, read in 1 MiB blocks: recorded in the artifact made from it
    (a probe file, an imported data file), so a changed file shows."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_artifact(path: str | Path, *, stage: str, scenario: str, config: Any,
                   arrays: Mapping[str, Array], attrs: Mapping[str, Any] | None = None,
                   ratios: Mapping[str, float] | None = None) -> None:
    """Atomically write one stage's HDF5 artifact.

    ``arrays`` maps dataset paths (``"train/indices"`` makes a group) to :class:`Array`.
    ``attrs`` are extra root attributes (numbers, strings; dicts and lists are stored as JSON).
    ``ratios`` are stage-to-stage ratios stored as ``telemetry`` attrs ``ratio_<name>``.
    ``config`` is the stage's frozen config dataclass.
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["stage"] = stage
        f.attrs["scenario"] = scenario
        f.attrs["config_json"] = to_json(config)
        f.attrs["config_hash"] = config_hash(config)
        f.attrs["ptychopipe_version"] = __version__
        f.attrs["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        for key, value in (attrs or {}).items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        tel = f.create_group("telemetry")
        for key, value in (ratios or {}).items():
            tel.attrs[f"ratio_{key}"] = float(value)
        for name, arr in arrays.items():
            data = np.asarray(arr.data)
            # Fletcher-32 checksums: a corrupted (not only truncated) file fails on read.
            ds = f.create_dataset(name, data=data, fletcher32=bool(data.ndim and data.size))
            ds.attrs["units"] = arr.units
            g = tel.create_group(name)
            for k, v in array_stats(data).items():
                g.attrs[k] = v


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Atomically write a JSON file (temp name + rename)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Atomically write a text file (temp name + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# --------------------------------------------------------------------------- reading


#: Stages whose output is results/{scenario}/simulated.h5: the simulator, or the importer of
#: measured data (ptychopipe.ingest), which writes the same layout with the object optional.
SIMULATED_STAGES = ("simulate", "ingest")


@contextlib.contextmanager
def open_artifact(path: str | Path, stage: str | tuple[str, ...]) -> Iterator[h5py.File]:
    """Open an artifact read-only after checking it is a readable file of ``stage`` (or of one
    of the stages in a tuple; messages about a missing file name the first)."""
    path = Path(path)
    if isinstance(stage, tuple):
        stages, stage = stage, stage[0]
    else:
        stages = (stage,)
    if not path.is_file():
        raise ArtifactError(not_a_file(path, f"expected the {stage} stage's output"))
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ArtifactError(f"{path}: not a readable HDF5 file (truncated or corrupted?): {exc}") from None
    try:
        version = f.attrs.get("schema_version")
        if version is None:
            raise ArtifactError(f"{path}: attribute schema_version missing; not a ptychopipe artifact")
        try:
            ok = int(version) == SCHEMA_VERSION
        except (TypeError, ValueError):
            ok = False
        if not ok:
            shown = version.tolist() if isinstance(version, np.generic | np.ndarray) else version
            raise ArtifactError(f"{path}: schema_version: expected {SCHEMA_VERSION}, got {shown!r}")
        got = f.attrs.get("stage")
        if got not in stages:
            raise ArtifactError(f"{path}: stage: expected {' or '.join(map(repr, stages))}, got {got!r}")
        yield f
    finally:
        f.close()


def read_array(f: h5py.File, name: str, *, ndim: int | None = None, kind: str | None = None,
               shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Read dataset ``name`` and check ndim, dtype kind ('f', 'c', 'i') and shape (None = any)."""
    where = f"{f.filename}: {name}"
    if name not in f:
        raise ArtifactError(f"{where}: dataset missing")
    try:
        data = f[name][()]
    except (OSError, RuntimeError) as exc:
        raise ArtifactError(f"{where}: unreadable (truncated or corrupted?): {exc}") from None
    if ndim is not None and data.ndim != ndim:
        raise ArtifactError(f"{where}: expected {ndim} dimensions, got shape {data.shape}")
    if kind is not None and data.dtype.kind not in kind:
        raise ArtifactError(f"{where}: expected dtype kind {kind!r}, got {data.dtype}")
    if shape is not None:
        for want, got in zip(shape, data.shape):
            if want is not None and want != got:
                raise ArtifactError(f"{where}: expected shape {shape}, got {data.shape}")
    return data


def read_attr(f: h5py.File, name: str, cast: Callable[[Any], T]) -> T:
    """Root attribute ``name`` of an open artifact, converted by ``cast`` (float, int, str);
    a one-line :class:`ArtifactError` naming the file when it is missing or not convertible."""
    if name not in f.attrs:
        raise ArtifactError(f"{f.filename}: attribute {name} missing")
    value = f.attrs[name]
    try:
        return cast(value.item() if isinstance(value, np.ndarray) and value.size == 1 else value)
    except (TypeError, ValueError):
        raise ArtifactError(f"{f.filename}: attribute {name}: expected {cast.__name__}, got {value!r}") from None


def check_indices(indices: np.ndarray, m: int, where: str, patterns_of: str | Path) -> None:
    """One-line :class:`ArtifactError` unless every pattern index is in [0, m): ``indices``
    (any shape, integer) from ``where`` ("FILE: KEY") must index the m patterns of the
    ``patterns_of`` file, i.e. both artifacts come from one scenario."""
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= m):
        bad = int(indices.max()) if int(indices.max()) >= m else int(indices.min())
        raise ArtifactError(f"{where}: index {bad} outside the {m} patterns of {patterns_of}; expected "
                            "artifacts of one scenario")


def read_attrs(path: str | Path) -> dict[str, Any]:
    """All root attributes of an artifact (no stage check), with JSON strings left as str."""
    try:
        with h5py.File(path, "r") as f:
            return {k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise ArtifactError(f"{path}: not a readable HDF5 file (truncated or corrupted?): {exc}") from None


def read_telemetry(path: str | Path) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Return ({array name: stats}, {ratio name: value}) from an artifact's telemetry group."""
    stats: dict[str, dict[str, Any]] = {}
    try:
        with h5py.File(path, "r") as f:
            tel = f["telemetry"]
            ratios = {k[len("ratio_"):]: float(v) for k, v in tel.attrs.items() if k.startswith("ratio_")}

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Group) and "shape" in obj.attrs:
                    stats[name] = {k: (v.tolist() if isinstance(v, np.ndarray) else
                                       v.item() if hasattr(v, "item") else v) for k, v in obj.attrs.items()}

            tel.visititems(visit)
    except (OSError, KeyError) as exc:
        raise ArtifactError(f"{path}: telemetry unreadable: {exc}") from None
    return stats, ratios


# --------------------------------------------------------------------------- typed artifacts


@dataclass(frozen=True)
class Simulated:
    """simulate (or ingest) stage output. Shapes: object (H, W) complex64 [object amplitude],
    None when the file has no true object (imported data without one: ``has_truth`` False);
    probe (N, N) complex64 [photons^0.5, absolute: P_abs]; positions (M, 2) float64
    [x, y] px, patch centres in object pixel coordinates; counts (M, N, N) float32
    [counts]; amplitude (M, N, N) float32 [photons^0.5] = sqrt(counts); object_shape
    (H, W) of the object frame the positions live in (the object's shape when present)."""

    object: np.ndarray | None
    probe: np.ndarray
    positions: np.ndarray
    counts: np.ndarray
    amplitude: np.ndarray
    attrs: dict[str, Any]

    @property
    def has_truth(self) -> bool:
        return self.object is not None

    @property
    def object_shape(self) -> tuple[int, int]:
        if self.object is not None:
            return (int(self.object.shape[0]), int(self.object.shape[1]))
        h, w = np.asarray(self.attrs["object_shape"]).tolist()
        return (int(h), int(w))


def _object_or_none(f: h5py.File) -> np.ndarray | None:
    """The ``object`` dataset, or None when the file says it has none (attr ``has_truth`` = 0,
    written by the importer for data without a true object). A missing object without that
    attribute is an error (a simulate file always has one)."""
    if "object" not in f and not int(f.attrs.get("has_truth", 1)):
        return None
    return read_array(f, "object", ndim=2, kind="c")


def read_simulated(path: str | Path) -> Simulated:
    """Read and check simulated.h5 (simulate or ingest stage): datasets, shapes, counts ≥ 0,
    every patch inside the object frame."""
    with open_artifact(path, SIMULATED_STAGES) as f:
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
    return Simulated(obj, probe, positions, counts, amplitude, attrs)


def write_simulated(path: str | Path, *, stage: str, scenario: str, config: Any, probe: np.ndarray,
                    positions: np.ndarray, counts: np.ndarray, object: np.ndarray | None,
                    attrs: Mapping[str, Any], ratios: Mapping[str, float]) -> None:
    """Write simulated.h5, the one layout both the simulate and the ingest stage produce
    (:class:`Simulated`, read by :func:`read_simulated`): probe (N, N) complex [photons^0.5],
    positions (M, 2) [x, y] px, counts (M, N, N) [counts], amplitude = sqrt(counts)
    [photons^0.5], and the true object (H, W) [object amplitude] when there is one
    (``object`` None: imported data without one; ``attrs`` then carries ``has_truth`` 0 and
    ``object_shape``). ``stage`` is "simulate" or "ingest"."""
    if stage not in SIMULATED_STAGES:
        raise ValueError(f"stage: expected one of {list(SIMULATED_STAGES)}, got {stage!r}")
    arrays = {} if object is None else {"object": Array(object, "object amplitude")}
    arrays.update({
        "probe": Array(probe, "photons^0.5"),
        "positions": Array(positions, "px"),
        "counts": Array(counts, "counts"),
        "amplitude": Array(np.sqrt(counts), "photons^0.5"),
    })
    write_artifact(path, stage=stage, scenario=scenario, config=config, arrays=arrays, attrs=attrs, ratios=ratios)


@dataclass(frozen=True)
class Split:
    """split stage output: indices into the simulated arrays (int64) of the train and test
    halves; ``y_split`` px. (The file also stores each half's positions, float64 [x, y] px,
    for people; the stages read the positions from simulated.h5.)"""

    train_indices: np.ndarray
    test_indices: np.ndarray
    y_split: float


def read_split(path: str | Path) -> Split:
    """Read and check split.h5."""
    with open_artifact(path, "split") as f:
        tr = read_array(f, "train/indices", ndim=1, kind="i")
        te = read_array(f, "test/indices", ndim=1, kind="i")
        y = read_attr(f, "y_split", float)
    return Split(tr, te, y)


@dataclass(frozen=True)
class GroupSet:
    """Groups of one split. indices (B, C) int64 into the simulated arrays; centres
    (B, 2) float64 [x, y] px; offsets (B, C, 2) float64 [x, y] px, member position
    minus group centre; amplitude (B, N, N, C) float32 [photons^0.5] (grouped stage),
    or normalized inputs (normalize stage); counts (B, N, N, C) float32 [counts]
    (normalize stage only)."""

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


def read_grouped(path: str | Path) -> dict[str, GroupSet]:
    """{"train": GroupSet, "test": GroupSet} of the group stage (amplitude = raw sqrt counts)."""
    with open_artifact(path, "group") as f:
        return {s: _read_groupset(f, s, False, "amplitude") for s in ("train", "test")}


@dataclass(frozen=True)
class Normalized:
    """normalize stage output: the training-ready dataset.

    ``sets[split].amplitude`` holds the network input X = a * sqrt(counts)
    (B, N, N, C) float32 [a·photons^0.5]; ``sets[split].counts`` the measured counts.
    probe (N, N) complex64 P_abs [photons^0.5]; input_scale a; amplitude_estimate ā
    [object amplitude]; mean_counts mean_j Σ n_j over the training split [counts];
    gridsize (int, the attr the normalize stage wrote)."""

    sets: dict[str, GroupSet]
    probe: np.ndarray
    input_scale: float
    amplitude_estimate: float
    mean_counts: float
    gridsize: int


def read_normalized(path: str | Path) -> Normalized:
    """Read and check normalized.h5: both splits, the probe, the scale attributes."""
    with open_artifact(path, "normalize") as f:
        sets = {s: _read_groupset(f, s, True, "inputs") for s in ("train", "test")}
        probe = read_array(f, "probe", ndim=2, kind="c")
        n = probe.shape[0]
        for s, g in sets.items():
            if g.amplitude.shape[1:3] != (n, n):
                raise ArtifactError(f"{path}: {s}/inputs: expected patterns {n}x{n} (probe size), "
                                    f"got {g.amplitude.shape[1:3]}")
        return Normalized(sets, probe, read_attr(f, "input_scale", float), read_attr(f, "amplitude_estimate", float),
                          read_attr(f, "mean_counts", float), read_attr(f, "gridsize", int))


@dataclass(frozen=True)
class TrainHistory:
    """train stage output (train.h5): per-epoch history, each (E,) float64 —
    loss, val_loss (NaN when no validation split), learning_rate, seconds,
    samples_per_second — and attrs (train_seconds, samples_per_second, epochs_run,
    nan_status: always "ok", since a run the NaN guard stops writes no train.h5)."""

    history: dict[str, np.ndarray]
    attrs: dict[str, Any]


HISTORY_KEYS = ("loss", "val_loss", "learning_rate", "seconds", "samples_per_second")


def read_train_history(path: str | Path) -> TrainHistory:
    """Read and check train.h5's history (equal lengths) and attributes."""
    with open_artifact(path, "train") as f:
        hist = {k: read_array(f, f"history/{k}", ndim=1, kind="f") for k in HISTORY_KEYS}
        attrs = dict(f.attrs)
    n = {len(v) for v in hist.values()}
    if len(n) != 1:
        raise ArtifactError(f"{path}: history/*: expected equal lengths, got {sorted(n)}")
    return TrainHistory(hist, attrs)


@dataclass(frozen=True)
class Inferred:
    """infer stage output (inferred.h5) for the test split's B groups of C patches.

    amplitude (B, C, N, N) float32 [object amplitude], phase (B, C, N, N) float32
    [rad]: the predicted object patches (after the overlap merge for C > 1);
    positions (B, C, 2) float64 [x, y] px: global patch centres in object
    coordinates (same convention as the simulator: patch pixel (i, k) sits at
    (y - N/2 + i, x - N/2 + k)); indices (B, C) int64 into the simulated arrays;
    probe (N, N) complex64 P_abs. attrs: predicted_over_measured_counts (mean
    predicted counts / mean measured counts per pattern), poisson_nll (test split).
    """

    amplitude: np.ndarray
    phase: np.ndarray
    positions: np.ndarray
    indices: np.ndarray
    probe: np.ndarray
    attrs: dict[str, Any]


#: Root attributes of inferred.h5 that its readers rely on (checked by :func:`read_inferred`).
INFERRED_ATTRS = ("predicted_over_measured_counts", "poisson_nll", "mean_counts")


def read_inferred(path: str | Path) -> Inferred:
    """Read and check inferred.h5 (shapes consistent with the amplitude's (B, C, N, N), and
    the attributes :data:`INFERRED_ATTRS` present and numeric)."""
    with open_artifact(path, "infer") as f:
        amp = read_array(f, "amplitude", ndim=4, kind="f")
        b, c, n, _ = amp.shape
        phase = read_array(f, "phase", ndim=4, kind="f", shape=amp.shape)
        pos = read_array(f, "positions", ndim=3, kind="f", shape=(b, c, 2))
        idx = read_array(f, "indices", ndim=2, kind="i", shape=(b, c))
        probe = read_array(f, "probe", ndim=2, kind="c", shape=(n, n))
        for key in INFERRED_ATTRS:  # what compare and baseline read
            read_attr(f, key, float)
        attrs = dict(f.attrs)
    return Inferred(amp, phase, pos, idx, probe, attrs)


# --------------------------------------------------------------------------- evaluation artifacts


def read_truth_object(path: str | Path) -> np.ndarray | None:
    """The true object (H, W) complex64 [object amplitude] from ``simulated.h5``, without
    loading the counts (what compare needs from the simulator); None when the file has no
    true object (imported data, attr ``has_truth`` = 0)."""
    with open_artifact(path, SIMULATED_STAGES) as f:
        return _object_or_none(f)


@dataclass(frozen=True)
class StitchedCanvas:
    """stitch stage output (stitched.h5).

    object (H, W) complex64 [object amplitude]: Σ w·Ô / Σ w, 0 where coverage = 0;
    coverage (H, W) float32: Σ w (dimensionless; w per config ``stitch.weight``);
    count (H, W) int32 [patches]; origin_x, origin_y (int, px): object coordinates
    of canvas pixel (0, 0), i.e. canvas pixel (r, c) is object pixel
    (origin_y + r, origin_x + c).
    """

    object: np.ndarray
    coverage: np.ndarray
    count: np.ndarray
    origin_x: int
    origin_y: int
    attrs: dict[str, Any]


def read_stitched(path: str | Path) -> StitchedCanvas:
    """Read and check stitched.h5 (canvas arrays of one shape, origin (x, y))."""
    with open_artifact(path, "stitch") as f:
        obj = read_array(f, "object", ndim=2, kind="c")
        coverage = read_array(f, "coverage", ndim=2, kind="f", shape=obj.shape)
        count = read_array(f, "count", ndim=2, kind="i", shape=obj.shape)
        origin = read_array(f, "origin", ndim=1, kind="i", shape=(2,))
        attrs = dict(f.attrs)
    return StitchedCanvas(obj, coverage, count, int(origin[0]), int(origin[1]), attrs)


#: Top-level keys every comparison.json holds (see docs/artifacts.md).
COMPARISON_KEYS = ("scenario", "config", "config_hash", "n_pixels", "phase_offset_rad", "registration",
                   "amplitude_bias", "metrics", "frc_threshold", "chain", "first_broken", "training",
                   "nan_status", "figures")
#: Keys of each ratio-chain link in comparison.json (``evaluation.ChainLink``; the report reads them).
CHAIN_KEYS = ("stage", "ratio", "contract", "relative", "cumulative", "broken")


@dataclass(frozen=True)
class BaselineResult:
    """baseline.h5: object (h, w) complex64 on the canvas grid; coverage (h, w) float32; origin
    (x, y) px; indices (M,) int64; snapshot_objects (S, h, w) complex64; epochs (S,) int;
    seconds (S,) cumulative reconstruction s; loss (S,); deviance (S, M) [counts];
    predicted (S, M) and measured (M,) photons per pattern [counts]; attrs."""

    object: np.ndarray
    coverage: np.ndarray
    origin: tuple[int, int]
    indices: np.ndarray
    snapshot_objects: np.ndarray
    epochs: np.ndarray
    seconds: np.ndarray
    loss: np.ndarray
    deviance: np.ndarray
    predicted: np.ndarray
    measured: np.ndarray
    attrs: dict[str, Any]


def read_baseline(path: str | Path) -> BaselineResult:
    """Read and check baseline.h5 (the snapshot arrays against the object and indices)."""
    with open_artifact(path, "baseline") as f:
        obj = read_array(f, "object", ndim=2, kind="c")
        cov = read_array(f, "coverage", ndim=2, kind="f", shape=obj.shape)
        origin = read_array(f, "origin", ndim=1, kind="i", shape=(2,))
        idx = read_array(f, "indices", ndim=1, kind="i")
        snaps = read_array(f, "snapshots/object", ndim=3, kind="c", shape=(None, *obj.shape))
        s = snaps.shape[0]
        ep = read_array(f, "snapshots/epoch", ndim=1, kind="i", shape=(s,))
        sec = read_array(f, "snapshots/seconds", ndim=1, kind="f", shape=(s,))
        loss = read_array(f, "snapshots/loss", ndim=1, kind="f", shape=(s,))
        dev = read_array(f, "snapshots/deviance", ndim=2, kind="f", shape=(s, len(idx)))
        pred = read_array(f, "snapshots/predicted_photons", ndim=2, kind="f", shape=(s, len(idx)))
        meas = read_array(f, "measured_photons", ndim=1, kind="f", shape=(len(idx),))
        attrs = dict(f.attrs)
    return BaselineResult(obj, cov, (int(origin[0]), int(origin[1])), idx, snaps, ep, sec, loss, dev, pred, meas,
                          attrs)


def read_json_object(path: str | Path, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """Load a JSON file that must hold an object with at least ``keys``; one-line
    ArtifactError naming the file otherwise (``what`` says which artifact was expected)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(not_a_file(path, f"expected {what}"))
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ArtifactError(f"{path}: keys {missing} missing; expected {list(keys)}")
    return data


def read_comparison_json(path: str | Path) -> dict[str, Any]:
    """Load a ``comparison.json`` and check its keys (non-finite numbers are stored as null)."""
    path = Path(path)
    from .evaluation.metrics import METRIC_KEYS  # the metrics are declared with their functions

    data = read_json_object(path, "the compare stage's JSON", COMPARISON_KEYS)
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
        if not isinstance(link, dict) or any(k not in link for k in CHAIN_KEYS):
            raise ArtifactError(f"{path}: chain[{i}]: expected an object with keys {list(CHAIN_KEYS)}, "
                                f"got {sorted(link) if isinstance(link, dict) else link!r}")
    return data


def json_safe(obj: Any) -> Any:
    """Plain-JSON copy: NumPy scalars/arrays become Python numbers/lists, non-finite floats
    become None (strict JSON has no NaN or Infinity)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def write_comparison_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Atomically write ``comparison.json`` (keys :data:`COMPARISON_KEYS`, strict JSON)."""
    missing = [k for k in COMPARISON_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: comparison keys {missing} missing; expected {list(COMPARISON_KEYS)}")
    write_text_atomic(path, json.dumps(json_safe(dict(data)), indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_group_indices(path: str | Path, split: str) -> np.ndarray:
    """``{split}/indices`` (B, C) int64 of grouped.h5, without loading the patterns."""
    with open_artifact(path, "group") as f:
        return read_array(f, f"{split}/indices", ndim=2, kind="i")


def read_pattern_mean_amplitude(path: str | Path, indices: np.ndarray) -> np.ndarray:
    """Mean of simulated.h5 ``amplitude`` over each listed pattern's N×N pixels, (K,) float64
    [photons^0.5], for ``indices`` (K,) int (any order, repeats allowed); reads only those
    patterns."""
    idx = np.asarray(indices, dtype=np.int64).ravel()
    uniq, inverse = np.unique(idx, return_inverse=True)
    with open_artifact(path, SIMULATED_STAGES) as f:
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
