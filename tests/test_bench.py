"""`ptychopipe bench model` (issue 3 item 6): the benchmark runs on the ci preset's model
sizes, reports the rows and settings it measured, and honours --infer-batch-size."""

from __future__ import annotations

import json
from pathlib import Path

from ptychopipe.bench import run_cli

REPO = Path(__file__).resolve().parents[1]


def test_bench_model_reports_pinn_and_cnn_rows_with_the_requested_batch(tmp_path):
    out = tmp_path / "bench.json"
    text = run_cli(str(REPO / "config" / "scenarios.yaml"), "ci", (1,), steps=2, json_out=str(out),
                   deterministic=True, infer_batch_size=8)
    data = json.loads(out.read_text())
    assert data["settings"]["infer_batch_size"] == 8 and data["settings"]["preset"] == "ci"
    rows = {r["model"]: r for r in data["rows"]}
    assert set(rows) == {"pinn", "cnn"}
    for r in rows.values():
        assert r["gridsize"] == 1 and r["train_samples_per_s"] > 0 and r["infer_samples_per_s"] > 0
    assert rows["pinn"]["forward_flops"] > rows["cnn"]["forward_flops"] > 0 and rows["pinn"]["physics_flops"] > 0
    assert data["machine"]["devices"], data["machine"]
    assert "| pinn | 1 |" in text and "infer_batch_size 8" in text
