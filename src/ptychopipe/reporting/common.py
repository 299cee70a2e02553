"""What the reports share: writing a table as CSV. The cell formatting of each table
(significant digits, the text for a missing value) is the table's own and stays in its module."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from ..artifacts import write_text_atomic


def write_csv(path: str | Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts keyed by ``columns``; None becomes an empty cell) as CSV, atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r[k] is None else r[k] for k in columns})
    write_text_atomic(path, buf.getvalue())
