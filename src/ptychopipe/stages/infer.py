"""infer stage: reconstruct the test groups of ``normalized.h5`` with ``model.keras`` and
write ``inferred.h5``.

What belongs here: :func:`run`, which reads the dataset and the model, has the model
checked against the dataset, writes the :class:`~ptychopipe.artifacts.Inferred` artifact
with the model's provenance and prints the stage's one-line log. What does not: the
checks, the prediction and its figures (:mod:`ptychopipe.infer`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..artifacts import Normalized
from ..config import InferConfig
from ..infer import check_model, infer_arrays, load_model


def run(cfg: InferConfig, scenario: str, normalized: str | Path, model: str | Path, out: str | Path) -> None:
    """Stage entry point: write ``inferred.h5`` (see docs/artifacts.md)."""
    norm = Normalized.read(normalized)
    m = load_model(model)
    foreign = cfg.model_from is not None
    check_model(m, norm, model, normalized, foreign=foreign)
    inferred, ratios = infer_arrays(m, norm, cfg.batch_size, foreign=foreign)
    attrs = {**inferred.attrs, "model_file": Path(model).name, "model_scenario": cfg.model_from or scenario}
    replace(inferred, attrs=attrs).write(out, scenario=scenario, config=cfg, ratios=ratios)
    source = (f"{cfg.model_from} (amplitude x {attrs['amplitude_scale']:.4f})" if foreign else "this scenario")
    print(f"[infer] {scenario}: {attrs['n_groups']} test groups, model of {source}"
          f"; predicted/measured counts "
          f"{ratios['predicted_over_measured_counts']:.4f}; amplitude mean/ā "
          f"{ratios['amplitude_mean_over_estimate']:.4f}; poisson_nll {attrs['poisson_nll']:.6g}", flush=True)
