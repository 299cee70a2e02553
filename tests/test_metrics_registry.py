"""The image metrics are declared once (evaluation.metrics.METRICS): image_metrics computes
exactly them, comparison.json's reader requires them and summary.csv's metric columns are
derived from them, so a metric added there reaches all three."""

from __future__ import annotations

import numpy as np
import pytest

from ptychopipe import artifacts
from ptychopipe.evaluation import metrics
from ptychopipe.evaluation.metrics import METRIC_KEYS, METRICS, Metric, image_metrics
from ptychopipe.reporting import summary


def _pair():
    rng = np.random.default_rng(0)
    ref = rng.random((48, 48))
    return ref + 0.05 * rng.standard_normal(ref.shape), ref, np.ones(ref.shape, bool)


def test_image_metrics_are_the_declared_ones_in_order():
    got, frc = image_metrics(*_pair(), "half_bit")
    assert tuple(got) == METRIC_KEYS == tuple(m.key for m in METRICS)
    assert got["frc_cutoff_cycles_per_px"] == frc.cutoff and 0.9 < got["pearson_r"] < 1.0


def test_summary_columns_derive_from_the_metrics():
    cols = {c: (where, unit) for c, where, unit in summary.SUMMARY_COLUMNS}
    for m in METRICS:
        amp, phase = f"amp_{m.key}", f"phase_{m.key}" + ("_rad" if m.unit == "image" else "")
        assert (amp in cols and phase in cols) == m.summary, m.key
    assert cols["amp_mae"] == (("metrics", "amplitude", "mae"), "object amplitude")
    assert cols["phase_mae_rad"] == (("metrics", "phase", "mae"), "rad")
    assert cols["amp_psnr_db"][1] == "dB"


def test_a_metric_added_to_the_table_reaches_image_metrics_the_reader_and_the_summary(monkeypatch, tmp_path):
    extra = Metric("max_abs_error", "image", lambda est, ref, mask, rng, frc: float(np.abs(est - ref)[mask].max()))
    monkeypatch.setattr(metrics, "METRICS", (*METRICS, extra))
    monkeypatch.setattr(metrics, "METRIC_KEYS", (*METRIC_KEYS, extra.key))
    got, _ = image_metrics(*_pair(), "half_bit")
    assert got["max_abs_error"] > 0
    assert ("phase_max_abs_error_rad", ("metrics", "phase", "max_abs_error"), "rad") in summary._metric_columns()
    path = tmp_path / "comparison.json"
    data = {k: None for k in artifacts.ComparisonSummary.KEYS}
    data.update(metrics={p: dict.fromkeys(METRIC_KEYS, 0.5) for p in ("amplitude", "phase")}, config={"ratio_tolerance": 0.05})
    path.write_text(__import__("json").dumps(data))
    with pytest.raises(artifacts.ArtifactError, match=r"metrics\.amplitude: expected keys .*max_abs_error"):
        artifacts.ComparisonSummary.read(path)
