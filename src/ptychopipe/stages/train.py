"""train stage: train the PINN on ``normalized.h5`` and write ``model.keras`` and ``train.h5``.

What belongs here: :func:`run`, which reads the normalized dataset, trains, and writes the
model and its :class:`~ptychopipe.artifacts.TrainHistory` as a pair (or, when training
turns non-finite, the diagnostics file alone), and :func:`save_model_atomic`. What does
not: the model, the training loop, the NaN guard and the figures it reports
(:mod:`ptychopipe.train`, :mod:`ptychopipe.network`).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import keras

from ..artifacts import Normalized, TrainHistory, atomic_path, write_json_atomic
from ..config import TrainConfig
from ..train import NonFiniteError, failure_message, failure_record, fit, train_ratios


def save_model_atomic(model: keras.Model, path: str | Path) -> None:
    """``model.save`` to a temporary ``.keras`` name in the same folder, then rename."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def run(cfg: TrainConfig, scenario: str, normalized: str | Path, out: str | Path,
        history: str | Path, diagnostics: str | Path | None = None) -> None:
    """Stage entry point: train, then write ``out`` (model.keras) and ``history`` (train.h5).

    On a non-finite loss or weight, writes ``diagnostics`` (default: logs/train_nonfinite.json
    next to ``out``) and raises :class:`~ptychopipe.train.NonFiniteError`; nothing else is
    written.
    """
    norm = Normalized.read(normalized)
    diagnostics = Path(diagnostics) if diagnostics else Path(out).parent / "logs" / "train_nonfinite.json"
    result = fit(cfg, norm, scenario, source=str(normalized))
    if result.failure is not None:
        msg = failure_message(scenario, result.failure, diagnostics)
        write_json_atomic(diagnostics, failure_record(scenario, result, norm, msg))
        raise NonFiniteError(msg)  # the CLI prints it as one line on stderr
    ratios = train_ratios(result, norm, cfg.batch_size)
    record = TrainHistory(result.history, result.train_idx, result.val_idx,
                          {**result.attrs, "model_file": Path(out).name})
    # Both are renamed into place only once both are complete, model.keras first and train.h5
    # last (the stack unwinds last-in first): a failed write leaves neither, and a new train.h5
    # always has its model.keras beside it (only a kill between the two renames can leave a
    # new model.keras without its train.h5; Snakemake re-runs such a job).
    with ExitStack() as stack:
        tmp_history = stack.enter_context(atomic_path(history))
        tmp_model = stack.enter_context(atomic_path(out, suffix=".keras"))
        result.model.save(tmp_model)
        record.write(tmp_history, scenario=scenario, config=cfg, ratios=ratios)
