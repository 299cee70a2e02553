"""`ptychopipe bench model`: the benchmark runs on the ci preset's model
sizes, reports the rows and settings it measured, and honours --infer-batch-size."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pipeline_helpers import CONFIG_FILE


@pytest.mark.stage
def test_bench_model_reports_pinn_and_cnn_rows_with_the_requested_batch(tmp_path, monkeypatch, capsys):
    """Through the CLI: --infer-batch-size reaches every timed prediction (not only the
    settings it reports)."""
    from ptychopipe import cli
    from ptychopipe.benchmarks import throughput

    batch_sizes = []
    predict = throughput._predict

    def recording_predict(model, x, batch_size):
        batch_sizes.append(batch_size)
        return predict(model, x, batch_size)

    monkeypatch.setattr(throughput, "_predict", recording_predict)
    monkeypatch.setattr(cli, "set_thread_limits", lambda threads: None)  # keep this process's environment
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "model", "--configfile", str(CONFIG_FILE), "--preset", "ci",
                     "--gridsize", "1", "--steps", "2", "--json", str(out), "--infer-batch-size", "8"]) == 0
    text = capsys.readouterr().out
    assert batch_sizes and set(batch_sizes) == {8}, batch_sizes
    data = json.loads(out.read_text())
    assert data["settings"]["infer_batch_size"] == 8 and data["settings"]["preset"] == "ci"
    rows = {r["model"]: r for r in data["rows"]}
    assert set(rows) == {"pinn", "cnn"}
    for r in rows.values():
        assert r["gridsize"] == 1 and r["train_samples_per_s"] > 0 and r["infer_samples_per_s"] > 0
    assert rows["pinn"]["forward_flops"] > rows["cnn"]["forward_flops"] > 0 and rows["pinn"]["physics_flops"] > 0
    assert data["machine"]["devices"], data["machine"]
    assert "| pinn | 1 |" in text and "infer_batch_size 8" in text


def _counting_ops(counts: dict[int, int]):
    """NUMPY_OPS whose fft2/ifft2 add {points per transform: number of transforms} to counts."""
    from types import SimpleNamespace

    from ptychopipe import physics

    def counted(fn):
        def run(pair):
            shape = np.shape(pair[0])
            points = shape[-1] * shape[-2]
            counts[points] = counts.get(points, 0) + int(np.prod(shape[:-2], dtype=int))
            return fn(pair)
        return run

    return SimpleNamespace(**{**vars(physics.NUMPY_OPS), "fft2": counted(physics.NUMPY_OPS.fft2),
                              "ifft2": counted(physics.NUMPY_OPS.ifft2)})


@pytest.mark.parametrize("algorithm", ["gradient", "difference_map"])
@pytest.mark.parametrize("gridsize", [1, 2])
def test_estimate_transforms_are_the_ffts_group_estimate_runs_per_iteration(algorithm, gridsize):
    """The FLOP count's FFT term (benchmarks.throughput.estimate_transforms) against the transforms the
    estimate really runs: the difference between 2 and 1 iterations of one group."""
    from ptychopipe import physics, solvers
    from ptychopipe.benchmarks import throughput

    n, c = 16, gridsize * gridsize
    rng = np.random.default_rng(0)
    offsets_x = rng.uniform(-3, 3, (1, c)) if c > 1 else np.zeros((1, 1))
    offsets_y = rng.uniform(-3, 3, (1, c)) if c > 1 else np.zeros((1, 1))
    canvas = physics.canvas_size(n, 3.0)
    probe = (np.exp(-((np.arange(n) - n / 2) ** 2)[:, None] / 20 - ((np.arange(n) - n / 2) ** 2)[None] / 20),
             np.zeros((n, n)))
    amplitude = rng.uniform(0.1, 1.0, (1, c, n, n))
    per_run = []
    for iterations in (1, 2):
        counts: dict[int, int] = {}
        solvers.group_estimate(amplitude, offsets_x, offsets_y, probe, canvas, iterations, 0.5,
                               algorithm=algorithm, ops=_counting_ops(counts), tolerance=0.1)
        per_run.append(counts)
    per_iteration = {p: per_run[1].get(p, 0) - per_run[0].get(p, 0) for p in per_run[1]}
    per_iteration = {p: k for p, k in per_iteration.items() if k}
    assert per_iteration == throughput.estimate_transforms(n, gridsize, canvas, algorithm)
