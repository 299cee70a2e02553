"""Progress lines a person sees while the workflow runs.

Every rule sends a stage's output to its log file; a few lines (one per training epoch,
one per finished stage with its key figure) should reach the terminal too. The rules run
each command with file descriptor 3 duplicated from Snakemake's stderr (``3>&2 > {log}
2>&1``) and the workflow sets ``PTYCHOPIPE_PROGRESS_FD=3``: :func:`progress` writes the line
to stdout (the log, with the details) and to that descriptor (the terminal, or the job's
own stderr file under a cluster executor). Without the variable, stdout only.
"""

from __future__ import annotations

import os

#: Environment variable naming the file descriptor that progress lines are copied to.
PROGRESS_FD_ENV = "PTYCHOPIPE_PROGRESS_FD"


def progress(line: str) -> None:
    """Print ``line`` (stdout, the log) and copy it to the progress descriptor when one is set.
    A descriptor that is not open is ignored (progress is never worth failing a stage for)."""
    print(line, flush=True)
    fd = os.environ.get(PROGRESS_FD_ENV, "")
    if not fd.isdigit():
        return
    try:
        os.write(int(fd), (line.rstrip("\n") + "\n").encode(errors="replace"))
    except OSError:
        pass


def duration(seconds: float) -> str:
    """``seconds`` as 4.2s, 42s, 3m07s or 1h05m."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


