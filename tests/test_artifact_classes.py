"""One class per artifact (ptychopipe.artifacts): each stage's file has exactly one class,
whose ``write`` is the file's only writer and whose ``read`` gives back what was written."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline_helpers import REPO
from ptychopipe import artifacts as A
from ptychopipe.config import SplitConfig, config_hash
from ptychopipe.stages import STAGES

pytestmark = pytest.mark.unit

CFG = SplitConfig(0.5)  # any frozen options object: the writers record it, the readers do not use it
RNG = np.random.default_rng(0)


def _stages_of(cls: type) -> tuple[str, ...]:
    return getattr(cls, "STAGES", (getattr(cls, "STAGE", None),))


def test_every_stage_file_has_exactly_one_class():
    for s in STAGES.values():
        for name in {s.out, s.telemetry_file} - {"model.keras"}:
            owners = [c.__name__ for c in A.ARTIFACTS if c.FILE == name]
            assert len(owners) == 1, (s.name, name, owners)
            (cls,) = [c for c in A.ARTIFACTS if c.FILE == name]
            assert s.name in _stages_of(cls), (s.name, cls.__name__)
    for s in STAGES.values():  # the other named outputs that are artifacts (comparison.json)
        for out in s.outputs:
            if out == "json":
                assert A.ComparisonSummary.FILE == "comparison.json"


def test_no_stage_writes_an_artifact_layout_of_its_own():
    """The generic writer is called only inside the artifacts package: a stage writes through
    its artifact's class."""
    src = REPO / "src" / "ptychopipe"
    callers = [p.relative_to(src).as_posix() for p in src.rglob("*.py")
               if re.search(r"\bwrite_artifact\(", p.read_text()) and p.parent.name != "artifacts"]
    assert callers == []


def _groupset(b: int, c: int, n: int, counts: bool) -> A.GroupSet:
    return A.GroupSet(RNG.integers(0, 50, (b, c)), RNG.uniform(20, 80, (b, 2)), RNG.uniform(-4, 4, (b, c, 2)),
                      RNG.uniform(0, 9, (b, n, n, c)).astype(np.float32),
                      RNG.uniform(0, 80, (b, n, n, c)).astype(np.float32) if counts else None)


def _examples() -> list:
    n, m = 8, 12
    obj = (RNG.uniform(0.5, 1, (40, 40)) * np.exp(1j * RNG.uniform(-1, 1, (40, 40)))).astype(np.complex64)
    probe = (RNG.standard_normal((n, n)) + 1j * RNG.standard_normal((n, n))).astype(np.complex64)
    pos = RNG.uniform(n / 2, 40 - n / 2, (m, 2))
    counts = RNG.poisson(20, (m, n, n)).astype(np.float32)
    b, c = 3, 4
    return [
        A.Simulated.from_counts(object=obj, probe=probe, positions=pos, counts=counts, attrs={"N": n}),
        A.Split(np.arange(6), np.arange(6, 12), pos[:6], pos[6:], 21.5, 12),
        A.Grouped({"train": _groupset(b, c, n, False), "test": _groupset(2, c, n, False)}, 2),
        A.Normalized({"train": _groupset(b, c, n, True), "test": _groupset(2, c, n, True)}, probe, 0.01, 0.8, 1e4,
                     2, {"N": n}),
        A.TrainHistory({k: RNG.uniform(0, 1, 5) for k in A.TrainHistory.UNITS}, np.arange(4), np.arange(4, 5),
                       {"epochs_run": 5}),
        A.Inferred(RNG.uniform(0, 1, (b, c, n, n)).astype(np.float32), RNG.uniform(-1, 1, (b, c, n, n)).astype(
            np.float32), RNG.uniform(10, 30, (b, c, 2)), RNG.integers(0, m, (b, c)), probe, RNG.uniform(0, 9, (b, c)),
            RNG.uniform(0, 9, (b, c)), {"predicted_over_measured_counts": 1.0, "poisson_nll": 0.1, "mean_counts": 9.0}),
        A.StitchedCanvas(obj, RNG.uniform(0, 1, (40, 40)).astype(np.float32), RNG.integers(0, 4, (40, 40)).astype(
            np.int32), 3, 5, {"weight": "probe_intensity"}),
        A.Comparison({"mask": np.ones((40, 40), np.uint8), "amplitude/reconstruction": np.ones((40, 40), np.float32),
                      "phase/reconstruction": np.zeros((40, 40), np.float32),
                      "frc/frequency": np.linspace(0, 0.5, 9)}, {"nan_status": "ok"}),
        A.BaselineResult(obj, np.ones((40, 40), np.float32), np.ones((40, 40), np.int32), (3, 5), pos, np.arange(m),
                         np.stack([obj, obj]), np.array([5, 10]), np.array([0.5, 1.0]), np.array([2.0, 1.0]),
                         RNG.uniform(0, 1, (2, m)), RNG.uniform(0, 1, (2, m)), RNG.uniform(0, 1, m), {"epochs": 10}),
    ]


def _same(got, want, where: str) -> None:
    if isinstance(want, dict):
        for k, v in want.items():
            _same(got[k], v, f"{where}.{k}")
    elif dataclasses.is_dataclass(want):
        for f in dataclasses.fields(want):
            _same(getattr(got, f.name), getattr(want, f.name), f"{where}.{f.name}")
    elif want is None:
        assert got is None, where
    else:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=where)
        assert np.asarray(got).dtype == np.asarray(want).dtype or np.ndim(want) == 0, where


@pytest.mark.parametrize("record", _examples(), ids=lambda r: type(r).__name__)
def test_write_then_read_gives_back_every_field(tmp_path, record):
    path = tmp_path / type(record).FILE
    stage = {"stage": _stages_of(type(record))[0]} if isinstance(record, A.Simulated) else {}
    record.write(path, scenario="s", config=CFG, ratios={"x": 1.0}, **stage)
    _same(type(record).read(path), record, type(record).__name__)


def test_comparison_summary_round_trip_and_required_keys(tmp_path):
    from ptychopipe.evaluation.metrics import METRIC_KEYS

    data = {k: None for k in A.ComparisonSummary.KEYS}
    data.update(config={"ratio_tolerance": 0.05}, registration={"enabled": False, "shift_px": [0, 0]}, chain=[],
                metrics={p: {k: 0.5 for k in METRIC_KEYS} for p in ("amplitude", "phase")})
    A.ComparisonSummary.write(tmp_path / "c.json", {**data, "n_pixels": float("nan")})
    assert A.ComparisonSummary.read(tmp_path / "c.json")["n_pixels"] is None  # strict JSON: NaN as null
    with pytest.raises(ValueError, match=r"comparison keys \['figures'\] missing"):
        A.ComparisonSummary.write(tmp_path / "d.json", {k: v for k, v in data.items() if k != "figures"})
    assert not Path(tmp_path / "d.json").exists()


def test_writers_refuse_incomplete_content_and_write_nothing(tmp_path):
    """A record missing what its readers rely on stops before any file appears."""
    ex = {type(r).__name__: r for r in _examples()}
    bad = [
        dataclasses.replace(ex["Inferred"], attrs={"poisson_nll": 0.1}),
        dataclasses.replace(ex["TrainHistory"], history={"loss": np.ones(3)}),
        dataclasses.replace(ex["Comparison"], images={"mask": np.ones((4, 4), np.uint8)}),
        dataclasses.replace(ex["Normalized"], sets={s: dataclasses.replace(g, counts=None)
                                                    for s, g in ex["Normalized"].sets.items()}),
    ]
    for record in bad:
        with pytest.raises(ValueError, match="expected"):
            record.write(tmp_path / "x.h5", scenario="s", config=CFG, ratios={})
    assert list(tmp_path.iterdir()) == []


def test_a_record_read_back_and_written_again_carries_the_new_common_attributes(tmp_path):
    """attrs read from one file hold its common attributes (scenario, config hash, ...); writing
    the record again records the new ones: the container owns them."""
    ex = {type(r).__name__: r for r in _examples()}
    ex["StitchedCanvas"].write(tmp_path / "s1.h5", scenario="first", config=CFG, ratios={})
    read = A.StitchedCanvas.read(tmp_path / "s1.h5")
    assert read.attrs["scenario"] == "first"
    other = SplitConfig(0.25)
    read.write(tmp_path / "s2.h5", scenario="second", config=other, ratios={})
    attrs = A.read_attrs(tmp_path / "s2.h5")
    assert attrs["scenario"] == "second" and attrs["config_hash"] == config_hash(other)
    assert attrs["weight"] == "probe_intensity"  # the record's own attributes are kept


def test_grouped_reader_checks_the_group_width_against_gridsize(tmp_path):
    g = {type(r).__name__: r for r in _examples()}["Grouped"]  # groups of 4 patterns
    dataclasses.replace(g, gridsize=3).write(tmp_path / "g.h5", scenario="s", config=CFG, ratios={})
    with pytest.raises(A.ArtifactError, match=r"train/indices: expected groups of gridsize² = 9 patterns "
                                              r"\(attribute gridsize 3\), got 4"):
        A.Grouped.read(tmp_path / "g.h5")
