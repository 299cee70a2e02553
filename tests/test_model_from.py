"""Train once, reconstruct many: infer.model_from (a scenario reconstructed with the model
another scenario trained): config checks, the DAG runs no training for it, infer's
compatibility check and rescaling, and the record of which model reconstructed what."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from pipeline_helpers import make_workdir, run_snakemake
from ptychopipe import network as net
from ptychopipe.artifacts import ArtifactError, GroupSet, Normalized
from ptychopipe.config import ConfigError, UnrolledOptions, resolve_scenarios
from ptychopipe.infer import check_model, data_scales, infer_arrays
from ptychopipe.simulate import ideal_probe

N = 64


def _with(raw, **infer):
    raw = copy.deepcopy(raw)
    raw["scenarios"]["gs2_ideal"]["infer"] = infer
    return raw


@pytest.mark.parametrize("other,message", [
    ("gs2_ideal", r"infer\.model_from: expected another scenario's name, got 'gs2_ideal'"),
    ("gs9", r"infer\.model_from: expected another scenario's name, got 'gs9'"),
    ("gs1_ideal", r"infer\.model_from: gridsize differs from scenario gs1_ideal's \(2 vs 1\); expected the data "
                  r"the model was trained for"),
    ("gs2_custom", r"infer\.model_from: probe differs from scenario gs2_custom's \(\[\"ideal\", 32\.0\] vs "
                   r"\[\"custom\", \"data/probes/custom_probe_64\.npz\", \"probeGuess\"\]\); expected .*"),
])
def test_config_refuses_a_model_of_other_data(raw_config, other, message):
    with pytest.raises(ConfigError, match=r"cfg: scenario gs2_ideal: " + message):
        resolve_scenarios(_with(raw_config, model_from=other), "ci", source="cfg")


def test_config_refuses_a_chain_and_keeps_the_source_of_a_run(raw_config):
    raw = _with(raw_config, model_from="unseen_lines")  # itself reconstructed with gs2_custom's model
    raw["scenarios"]["gs2_ideal"]["probe"] = {"kind": "custom", "file": "data/probes/custom_probe_64.npz"}
    with pytest.raises(ConfigError, match=r"'unseen_lines' is itself reconstructed with another model"):
        resolve_scenarios(raw, "ci", source="cfg")
    raw = copy.deepcopy(raw_config)
    raw["run"] = ["unseen_blobs"]
    assert sorted(resolve_scenarios(raw, "ci")) == ["gs2_custom", "unseen_blobs"]


@pytest.mark.workflow
def test_the_dag_trains_only_the_source(tmp_path):
    wd = make_workdir(tmp_path / "wd")
    res = run_snakemake(wd, "-n", "--cores", "1", "results/unseen_blobs/comparison.json", "--config", "preset=ci",
                        check=True, timeout=180)
    out = res.stdout
    assert "results/gs2_custom/model.keras" in out
    assert "results/unseen_blobs/model.keras" not in out and "wildcards: scenario=unseen_blobs" in out
    jobs = {ln.split()[0]: int(ln.split()[1]) for ln in out.split("Job stats:")[1].splitlines()[3:]
            if len(ln.split()) == 2 and ln.split()[1].isdigit()}
    assert jobs["train"] == 1 and jobs["simulate"] == 2 and jobs["infer"] == 1


def _norm(probe: np.ndarray, abar: float, b: int = 2) -> Normalized:
    rng = np.random.default_rng(0)
    x = rng.random((b, N, N, 4)).astype(np.float32)
    g = GroupSet(np.zeros((b, 4), np.int64), np.full((b, 2), 100.0), rng.uniform(-5, 5, (b, 4, 2)), x,
                 (x ** 2 * 1e4).astype(np.float32))
    return Normalized({"train": g, "test": g}, probe.astype(np.complex64), 1e-2, abar, 1e6, 2)


def test_infer_checks_the_probe_shape_and_rescales_to_the_new_data(tmp_path):
    probe = ideal_probe(N, 24) * 1e3
    m = net.build_model(N, 2, probe, 0.8, net.merge_canvas(N, 6.0), UnrolledOptions(2, 0.0, 2))
    own = _norm(probe, 0.8)
    check_model(m, own, "m.keras", "own.h5")
    other = _norm(2.0 * probe, 1.6)  # same probe shape, another dose / object transmission
    with pytest.raises(ArtifactError, match=r"m\.keras: probe: differs from other\.h5 probe"):
        check_model(m, other, "m.keras", "other.h5")  # not declared foreign: refused as before
    check_model(m, other, "m.keras", "other.h5", foreign=True)
    assert data_scales(m, other) == pytest.approx((2.0, 16.0))
    assert data_scales(m, own) == pytest.approx((1.0, 1.0))
    a_own, _ = infer_arrays(m, own, 8)
    a_other, _ = infer_arrays(m, other, 8, foreign=True)  # same inputs: only the units differ
    np.testing.assert_allclose(a_other.amplitude, 2.0 * a_own.amplitude, rtol=1e-6)
    np.testing.assert_allclose(a_other.predicted_photons, 16.0 * a_own.predicted_photons, rtol=1e-5)
    assert a_other.attrs["amplitude_scale"] == pytest.approx(2.0)
    shifted = np.roll(probe, 3, axis=1)
    with pytest.raises(ArtifactError, match=r"m\.keras: probe: its shape P/\|P\| differs from x\.h5 probe's .*"
                                             r"expected a model trained with the same probe \(infer\.model_from\)"):
        check_model(m, _norm(shifted, 0.8), "m.keras", "x.h5", foreign=True)
