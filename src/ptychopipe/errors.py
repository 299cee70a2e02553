"""The one base class of the errors ptychopipe raises on bad input or a failed check.

Each module keeps its own error (``ConfigError`` in config, ``ArtifactError`` in artifacts, ...);
all of them derive from :class:`PtychopipeError` as well as from the built-in class they have
always been (``ValueError`` or ``RuntimeError``), so ``except ValueError`` keeps working.

The CLI prints any ``PtychopipeError`` -- subclasses included -- as one line
(``ptychopipe STAGE: error: MESSAGE``) and exits 1, leaving nothing half-written.
"""
from __future__ import annotations


class PtychopipeError(Exception):
    """Bad input or a failed check; the message is one line naming file, key, expected vs got."""
