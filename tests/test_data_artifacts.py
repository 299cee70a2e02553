"""Artifact contract (docs/design.md, 'Artifact contract') at the unit level: atomic writes, required attributes,
units, telemetry statistics, one-line reader errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from pipeline_helpers import REQUIRED_ATTRS, STAT_KEYS
from ptychopipe.artifacts import store
from ptychopipe.artifacts import (SCHEMA_VERSION, Array, ArtifactError, Grouped, Simulated, Split, read_telemetry,
                                  write_artifact)
from ptychopipe.config import SplitConfig, config_hash, to_json
from ptychopipe.telemetry import InvariantError, array_stats, check_close, check_finite

CFG = SplitConfig(fraction=0.5)


def _arrays():
    return {"a": Array(np.arange(12, dtype=np.float32).reshape(3, 4), "counts"),
            "g/b": Array(np.ones((2, 2), np.complex64), "photons^0.5")}


def test_written_file_carries_the_contract(tmp_path):
    out = tmp_path / "x.h5"
    write_artifact(out, stage="split", scenario="s1", config=CFG, arrays=_arrays(), attrs={"extra": 3, "d": {"k": 1}},
                   ratios={"r": 0.5})
    with h5py.File(out, "r") as f:
        for k in REQUIRED_ATTRS:
            assert k in f.attrs, k
        assert f.attrs["schema_version"] == SCHEMA_VERSION and f.attrs["stage"] == "split"
        assert json.loads(f.attrs["config_json"]) == {"fraction": 0.5}
        assert f.attrs["config_json"] == to_json(CFG) and f.attrs["config_hash"] == config_hash(CFG)
        assert json.loads(f.attrs["d"]) == {"k": 1} and f.attrs["extra"] == 3
        assert f["a"].attrs["units"] == "counts" and f["g/b"].attrs["units"] == "photons^0.5"
        assert f["telemetry"].attrs["ratio_r"] == 0.5
    stats, ratios = read_telemetry(out)
    assert set(stats) == {"a", "g/b"} and ratios == {"r": 0.5}
    for st in stats.values():
        assert all(k in st for k in STAT_KEYS)
    assert stats["a"]["sumsq"] == pytest.approx(float(np.sum(np.arange(12.0) ** 2)))
    assert stats["g/b"]["mean"] == 1.0 and "phase_mean" in stats["g/b"]


def test_failure_inside_write_artifact_leaves_no_file_and_no_temp_file(tmp_path, monkeypatch):
    calls = []

    def boom(a):
        calls.append(1)
        if len(calls) == 2:  # fail after the first dataset is already in the temp file
            raise RuntimeError("disk on fire")
        return array_stats(a)
    monkeypatch.setattr(store, "array_stats", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_artifact(tmp_path / "x.h5", stage="split", scenario="s", config=CFG, arrays=_arrays())
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_a_previous_complete_file_untouched(tmp_path):
    out = tmp_path / "x.h5"
    write_artifact(out, stage="split", scenario="old", config=CFG, arrays=_arrays())
    before = out.read_bytes()
    bad = {"a": Array(np.array([object(), 1], dtype=object), "counts")}  # h5py cannot store this
    with pytest.raises(TypeError):
        write_artifact(out, stage="split", scenario="new", config=CFG, arrays=bad)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5"]


def test_killed_writer_never_leaves_a_complete_looking_file(tmp_path):
    """SIGKILL in the middle of a write: the target name does not exist (only a hidden
    temp name may remain, which no reader or Snakemake rule ever looks at)."""
    code = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from ptychopipe.artifacts import store
        from ptychopipe.artifacts import Array, write_artifact
        from ptychopipe.config import SplitConfig
        store.array_stats = lambda a: os.kill(os.getpid(), signal.SIGKILL)
        write_artifact({str(tmp_path / 'x.h5')!r}, stage="split", scenario="s", config=SplitConfig(0.5),
                       arrays={{"a": Array(np.ones((100, 100)), "counts")}})
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert not (tmp_path / "x.h5").exists()
    assert all(p.name.startswith(".x.h5.tmp-") for p in tmp_path.iterdir())


def test_readers_give_one_line_errors(tmp_path, ci_data):
    with pytest.raises(ArtifactError, match=r"nope\.h5: file not found \(expected the simulate stage's output\)$"):
        Simulated.read(tmp_path / "nope.h5")
    with pytest.raises(ArtifactError, match=r"simulated\.h5: stage: expected 'split', got 'simulate'$"):
        Split.read(ci_data["gs1_ideal"]["simulated"])
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(ci_data["gs1_ideal"]["grouped"].read_bytes()[:2000])
    with pytest.raises(ArtifactError, match=r"trunc\.h5: not a readable HDF5 file \(truncated or corrupted\?\)"):
        Grouped.read(trunc)
    partial = tmp_path / "partial.h5"
    write_artifact(partial, stage="split", scenario="s", config=CFG,
                   arrays={"train/indices": Array(np.arange(3), "index")}, attrs={"y_split": 1.0})
    with pytest.raises(ArtifactError, match=r"partial\.h5: test/indices: dataset missing$"):
        Split.read(partial)


def test_array_stats_counts_nan_and_inf_and_uses_finite_values():
    a = np.array([1.0, 3.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    st = array_stats(a)
    assert (st["nan"], st["inf"]) == (1, 2)
    assert (st["mean"], st["std"], st["min"], st["max"], st["sumsq"]) == (2.0, 1.0, 1.0, 3.0, 10.0)
    assert st["shape"] == (5,) and st["dtype"] == "float32"
    c = np.array([3 + 4j, np.nan + 0j, 0 + 1j], dtype=np.complex64)
    st = array_stats(c)
    assert st["nan"] == 1 and st["mean"] == pytest.approx(3.0) and st["sumsq"] == pytest.approx(26.0)
    assert st["phase_mean"] == pytest.approx((np.arctan2(4, 3) + np.pi / 2) / 2)
    big = np.random.default_rng(0).normal(5, 2, (200, 300)).astype(np.float32)
    st = array_stats(big)
    x = big.astype(np.float64)
    assert st["mean"] == pytest.approx(x.mean(), rel=1e-12) and st["std"] == pytest.approx(x.std(), rel=1e-10)
    assert st["sumsq"] == pytest.approx(np.sum(x * x), rel=1e-12)


def test_check_helpers_name_stage_array_and_numbers():
    with pytest.raises(InvariantError, match=r"^\[normalize\] train/inputs: normalized / raw = 1\.1, expected 1 "
                                             r"\(relative error 0\.1 > tolerance 1e-05\)$"):
        check_close("normalize", "train/inputs", 1.1, 1.0, 1e-5, "normalized / raw")
    with pytest.raises(InvariantError, match=r"not finite|= nan"):
        check_close("s", "a", float("nan"), 1.0, 1e-5, "x")
    check_finite("s", "ints", np.array([1, 2]))  # integer arrays are always finite
