"""The artifact container: what every file a stage writes has in common (docs/artifacts.md).

Every HDF5 artifact carries the attributes of docs/design.md, 'Artifact contract' (``schema_version``, ``stage``,
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

What belongs here: the errors, atomic writing (HDF5, JSON, text, figures), the generic
HDF5 writer :func:`write_artifact` and the checked low-level readers (:func:`open_artifact`,
:func:`read_array`, :func:`read_attr`, telemetry, JSON). What one artifact holds — its
datasets, shapes, units and attributes — belongs to that artifact's class in
:mod:`ptychopipe.artifacts.data`, :mod:`~ptychopipe.artifacts.reconstruction` or
:mod:`~ptychopipe.artifacts.evaluation`, never here.
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

from .. import __version__
from ..config import config_hash, to_json
from ..errors import PtychopipeError
from ..telemetry import array_stats

T = TypeVar("T")

SCHEMA_VERSION = 1
#: The root attributes every artifact carries, written by :func:`write_artifact` alone.
COMMON_ATTRS = ("schema_version", "stage", "scenario", "config_json", "config_hash", "ptychopipe_version",
                "created_utc")


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
    ``attrs`` are extra root attributes (numbers, strings; dicts and lists are stored as JSON);
    the common attributes (:data:`COMMON_ATTRS`) are the container's own, so an ``attrs`` read
    back from another artifact never overrides them.
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
            if key not in COMMON_ATTRS:
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
