"""Determinism: the data stages are bit-identical across runs and core counts; training
is reproducible on the CPU for a given seed.

Bit-identical means every dataset (dtype, shape, every bit of every value) and every
attribute except the run-dependent ones (``created_utc``, timings) — see
pipeline_helpers.assert_h5_identical. Runs are full Snakemake runs of the ci preset
in separate temporary working directories.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from pipeline_helpers import (DATA_FILES, DATA_TARGETS, PROFILES, SCENARIOS, _same_value, assert_h5_close,
                              assert_h5_identical, ci_params, h5_contents, make_workdir, run_snakemake, run_stage)
from ptychopipe.config import stage_config, to_json

pytestmark = [pytest.mark.workflow, pytest.mark.slow]  # make test-slow


@pytest.fixture(scope="module")
def data_runs(ci_run, tmp_path_factory):
    """Three runs of the data stages of every scenario: --cores 1, --cores 2, --cores 2 (the
    session's shared data run, ``ci_run``, is the first --cores 2 one)."""
    root = tmp_path_factory.mktemp("determinism")
    runs = {"cores2_b": ci_run["workdir"]}
    for name, cores in (("cores1_a", 1), ("cores2_c", 2)):
        wd = make_workdir(root / name)
        run_snakemake(wd, "--workflow-profile", str(PROFILES / "local"), "--cores", str(cores), *DATA_TARGETS,
                      check=True, timeout=600)
        runs[name] = wd
    return runs


@pytest.mark.parametrize("a,b", [("cores1_a", "cores2_b"), ("cores2_b", "cores2_c")],
                         ids=["cores1-vs-cores2", "run-vs-rerun"])
@pytest.mark.parametrize("name", DATA_FILES)
def test_data_stages_bit_identical(data_runs, a, b, name):
    """cores1-vs-cores2: the same DAG with its jobs one at a time and two at a time (and the
    simulate job's BLAS/OpenMP thread cap 1 and 2; the data stages run no threaded code of
    their own); run-vs-rerun: the same command twice."""
    for s in SCENARIOS:
        assert_h5_identical(data_runs[a] / "results" / s / name, data_runs[b] / "results" / s / name)


@pytest.mark.parametrize("name", DATA_FILES)
def test_volatile_attributes_are_the_only_difference(data_runs, name):
    """Of all attributes, on every object of the file, only created_utc may differ between
    two runs; config_json, config_hash and the rest do not."""
    _, att_a = h5_contents(data_runs["cores1_a"] / "results/gs2_custom" / name)
    _, att_b = h5_contents(data_runs["cores2_b"] / "results/gs2_custom" / name)
    assert {p: set(a) for p, a in att_a.items()} == {p: set(a) for p, a in att_b.items()}
    differ = {(p, k) for p, attrs in att_a.items() for k, v in attrs.items()
              if not _same_value(v, att_b[p][k])}
    assert differ <= {("/", "created_utc")}, differ
    for key in ("config_json", "config_hash", "schema_version", "created_utc"):
        assert key in att_a["/"]


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(data_runs, tmp_path_factory):
    """gs2_custom (ci preset) trained three times on the CPU from the same normalized.h5:
    twice with the config's seed, once with another seed; each model then run by infer."""
    root = tmp_path_factory.mktemp("train")
    params = ci_params("gs2_custom")
    normalized = root / "normalized.h5"
    shutil.copy(data_runs["cores1_a"] / "results/gs2_custom/normalized.h5", normalized)
    base = stage_config(params, "train")
    out = {}
    for name, cfg in (("seed_a", base), ("seed_b", base), ("other_seed", dataclasses.replace(base, seed=base.seed + 1))):
        d = root / name
        d.mkdir()
        res = run_stage("train", "--scenario", "gs2_custom", "--config", to_json(cfg), "--normalized", str(normalized),
                        "--out", str(d / "model.keras"), "--history", str(d / "train.h5"),
                        "--diagnostics", str(d / "nonfinite.json"), threads=2, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        res = run_stage("infer", "--scenario", "gs2_custom", "--config", to_json(stage_config(params, "infer")),
                        "--normalized", str(normalized), "--model", str(d / "model.keras"),
                        "--out", str(d / "inferred.h5"), threads=2, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        out[name] = d
    return out


#: Same seed, same machine, CPU: the history and predictions agree to this relative L2
#: difference (measured: 0, bit-identical, with TensorFlow's op determinism).
TRAIN_RTOL = 1e-5


def test_training_reproducible_for_a_seed(trained):
    a, b = trained["seed_a"], trained["seed_b"]
    assert_h5_close(a / "train.h5", b / "train.h5", rtol=TRAIN_RTOL, skip=("seconds", "samples_per_second"))
    assert_h5_close(a / "inferred.h5", b / "inferred.h5", rtol=TRAIN_RTOL)


def test_another_seed_trains_differently(trained):
    """The comparison above is not vacuous: a different seed changes the result."""
    arr_a, _ = h5_contents(trained["seed_a"] / "inferred.h5")
    arr_c, _ = h5_contents(trained["other_seed"] / "inferred.h5")
    assert not np.allclose(arr_a["amplitude"], arr_c["amplitude"], rtol=1e-4, atol=0)
