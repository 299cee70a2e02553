"""The files the stages exchange (docs/artifacts.md): one class per artifact, whose ``write``
is that file's only writer and whose ``read`` its only reader.

- :mod:`~ptychopipe.artifacts.store`: the container every artifact shares: the common
  attributes, telemetry, atomic writes and checked low-level reads, and the errors.
- :mod:`~ptychopipe.artifacts.data`: :class:`Simulated` (simulated.h5, from simulate or
  ingest), :class:`Split`, :class:`Grouped` and :class:`Normalized`.
- :mod:`~ptychopipe.artifacts.reconstruction`: :class:`TrainHistory` (train.h5),
  :class:`Inferred` and :class:`StitchedCanvas`.
- :mod:`~ptychopipe.artifacts.evaluation`: :class:`Comparison` (comparison.h5),
  :class:`ComparisonSummary` (comparison.json) and :class:`BaselineResult`.

Imported file formats (NPZ, ptychodus) are not artifacts: they live in :mod:`ptychopipe.formats`.
"""

from .data import GroupSet, Grouped, Normalized, Simulated, Split
from .evaluation import BaselineResult, Comparison, ComparisonSummary
from .reconstruction import Inferred, StitchedCanvas, TrainHistory
from .store import (SCHEMA_VERSION, Array, ArtifactError, ArtifactWriteError, atomic_path, check_indices,
                    describe_os_error, file_sha256, json_safe, not_a_file, open_artifact, read_array, read_attr,
                    read_attrs, read_json_object, read_telemetry, save_figure, write_artifact, write_json_atomic,
                    write_text_atomic)

#: Every artifact class, in pipeline order (a test checks each stage's file has exactly one).
ARTIFACTS = (Simulated, Split, Grouped, Normalized, TrainHistory, Inferred, StitchedCanvas, Comparison,
             ComparisonSummary, BaselineResult)

__all__ = [
    "ARTIFACTS", "SCHEMA_VERSION", "Array", "ArtifactError", "ArtifactWriteError", "BaselineResult", "Comparison",
    "ComparisonSummary", "GroupSet", "Grouped", "Inferred", "Normalized", "Simulated", "Split", "StitchedCanvas",
    "TrainHistory", "atomic_path", "check_indices", "describe_os_error", "file_sha256", "json_safe", "not_a_file",
    "open_artifact", "read_array", "read_attr", "read_attrs", "read_json_object", "read_telemetry", "save_figure",
    "write_artifact", "write_json_atomic", "write_text_atomic",
]
