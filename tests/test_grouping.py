"""split and group stages: contiguous y split; groups of C = gridsize² patterns drawn from
the K nearest neighbours of a seed; offsets consistent with centres; determinism;
a clear error when a split has too few patterns."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ptychopipe.artifacts import Grouped, Simulated, Split
from ptychopipe.config import GroupConfig, SplitConfig
from ptychopipe.grouping import GroupingError, centres_offsets, gather_channels_last, make_groups, split_by_y
from ptychopipe.stages import group, split


@pytest.fixture(scope="module")
def positions():
    return np.random.default_rng(11).uniform(40, 350, (800, 2))


# --------------------------------------------------------------------------- split


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8])
def test_split_is_contiguous_along_y_and_partitions_the_scan(positions, fraction):
    train, test, y_split = split_by_y(positions, fraction)
    y = positions[:, 1]
    assert y_split == pytest.approx(y.min() + fraction * np.ptp(y))
    assert np.all(y[train] < y_split) and np.all(y[test] >= y_split)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(positions)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    assert train.dtype == np.int64
    assert len(train) / len(positions) == pytest.approx(fraction, abs=0.06)  # uniform scan


# --------------------------------------------------------------------------- group


def _k_nearest_sets(positions, seeds, k):
    """Brute force: indices whose distance to the seed is <= the k-th smallest (ties included)."""
    d = np.linalg.norm(positions[None, :, :] - positions[seeds][:, None, :], axis=-1)
    kth = np.sort(d, axis=1)[:, k - 1]
    return [set(np.flatnonzero(row <= t + 1e-12)) for row, t in zip(d, kth)]


@pytest.mark.parametrize("gridsize,k", [(2, 4), (2, 7), (3, 12)])
def test_group_members_are_among_the_k_nearest_of_the_seed(positions, gridsize, k):
    c = gridsize ** 2
    g = make_groups(positions, gridsize, 300, k, seed=3)
    assert g.shape == (300, c) and g.dtype == np.int64
    near = _k_nearest_sets(positions, g[:, 0], k)
    for row, allowed in zip(g, near):
        assert len(set(row)) == c, "members must be distinct"
        assert set(row) <= allowed, "a member outside the seed's K nearest"


def test_k_equal_c_takes_the_seed_and_its_nearest_neighbours(positions):
    g = make_groups(positions, 2, 200, 4, seed=0)
    near = _k_nearest_sets(positions, g[:, 0], 4)
    assert all(set(row) == s for row, s in zip(g, near))


def test_k_larger_than_c_draws_different_subsets(positions):
    """With K > C the C - 1 companions are a random subset of the K - 1 nearest."""
    g = make_groups(positions, 2, 800, 10, seed=0)
    near = _k_nearest_sets(positions, g[:, 0], 4)
    assert sum(set(row) != s for row, s in zip(g, near)) > 400


def test_seeds_cover_every_pattern_before_repeating(positions):
    m = len(positions)
    g = make_groups(positions, 2, m, 4, seed=1)
    assert np.array_equal(np.sort(g[:, 0]), np.arange(m))
    g2 = make_groups(positions, 1, m + 50, 1, seed=1)  # more groups than patterns
    counts = np.bincount(g2[:, 0], minlength=m)
    assert counts.min() == 1 and counts.max() == 2


def test_gridsize_one_groups_are_single_patterns(positions):
    g = make_groups(positions, 1, 100, 4, seed=2)
    assert g.shape == (100, 1) and len(np.unique(g)) == 100


def test_grouping_is_deterministic_for_a_seed(positions):
    a = make_groups(positions, 2, 300, 8, seed=5)
    b = make_groups(positions, 2, 300, 8, seed=5)
    c = make_groups(positions, 2, 300, 8, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_offsets_are_consistent_with_centres(positions):
    g = make_groups(positions, 2, 300, 6, seed=4)
    centres, offsets = centres_offsets(positions, g)
    assert centres.shape == (300, 2) and offsets.shape == (300, 4, 2)
    np.testing.assert_allclose(centres[:, None, :] + offsets, positions[g], atol=1e-12)
    np.testing.assert_allclose(offsets.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(centres, positions[g].mean(axis=1), atol=1e-12)


def test_gather_channels_last():
    arr = np.arange(5 * 3 * 3).reshape(5, 3, 3).astype(np.float32)
    groups = np.array([[0, 4], [2, 2]])
    out = gather_channels_last(arr, groups)
    assert out.shape == (2, 3, 3, 2)
    np.testing.assert_array_equal(out[0, ..., 1], arr[4])
    np.testing.assert_array_equal(out[1, ..., 0], arr[2])


@pytest.mark.parametrize("m,gridsize,k,pattern", [
    (3, 2, 4, r"^\[group\] train: 3 patterns available, need at least 4 \(C = 4, K = 4\)$"),
    (6, 2, 8, r"^\[group\] train: 6 patterns available, need at least 8 \(C = 4, K = 8\)$"),
    (0, 1, 1, r"^\[group\] train: 0 patterns available, need at least 1 \(C = 1, K = 1\)$"),
])
def test_too_few_patterns_is_a_clear_error(m, gridsize, k, pattern):
    pos = np.random.default_rng(0).uniform(0, 10, (m, 2))
    with pytest.raises(GroupingError, match=pattern):
        make_groups(pos, gridsize, 10, k, seed=0, split="train")


def test_k_smaller_than_c_is_refused(positions):
    with pytest.raises(GroupingError, match=r"^\[group\] test: neighbour_count K = 3 < C = gridsize\^2 = 4$"):
        make_groups(positions, 2, 10, 3, seed=0, split="test")


# --------------------------------------------------------------------------- stage entry points


def test_group_stage_artifact_is_consistent(ci_data):
    d = ci_data["gs2_custom"]
    sim = Simulated.read(d["simulated"])
    sp = Split.read(d["split"])
    groups = Grouped.read(d["grouped"]).sets
    p = d["params"]
    for name, idx in (("train", sp.train_indices), ("test", sp.test_indices)):
        g = groups[name]
        assert g.indices.shape == (p["group"]["n_groups"], 4)
        assert set(np.unique(g.indices)) <= set(idx), f"{name} groups must use {name} patterns only"
        np.testing.assert_allclose(g.centres[:, None, :] + g.offsets, sim.positions[g.indices], atol=1e-9)
        np.testing.assert_array_equal(g.amplitude, np.moveaxis(sim.amplitude[g.indices], 1, -1))
    # members of a group are close: within the K = 4 nearest of a dense ci scan
    assert np.abs(groups["train"].offsets).max() < 20


def test_group_stage_names_the_split_that_is_too_small(ci_data, tmp_path):
    """The ci scan of gs1_ideal has ~26 training patterns; asking for K = 40 neighbours fails
    naming the file, the split and the numbers."""
    d = ci_data["gs1_ideal"]
    n_train = len(Split.read(d["split"]).train_indices)
    cfg = GroupConfig(gridsize=2, n_groups=10, neighbour_count=40, seed=1)
    out = tmp_path / "grouped.h5"
    with pytest.raises(GroupingError, match=rf"^{re.escape(str(d['split']))}: train/indices: \[group\] train: "
                                            rf"{n_train} patterns available, need at least 40 \(C = 4, K = 40\)$"):
        group.run(cfg, "gs1_ideal", d["simulated"], d["split"], out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_split_stage_refuses_an_empty_split(ci_data, tmp_path):
    """A one-pattern scan cannot be split: train would be empty."""
    from ptychopipe.artifacts import Array, write_artifact
    d = ci_data["gs1_ideal"]
    sim = Simulated.read(d["simulated"])
    one = tmp_path / "one.h5"
    write_artifact(one, stage="simulate", scenario="x", config=SplitConfig(0.5), arrays={
        "object": Array(sim.object, "object amplitude"), "probe": Array(sim.probe, "photons^0.5"),
        "positions": Array(sim.positions[:1], "px"), "counts": Array(sim.counts[:1], "counts"),
        "amplitude": Array(sim.amplitude[:1], "photons^0.5")})
    with pytest.raises(GroupingError, match=rf"^{re.escape(str(one))}: positions: \[split\] train: empty split \(fraction 0\.5, 1 positions\)"):
        split.run(SplitConfig(0.5), "x", one, tmp_path / "split.h5")
    assert not (tmp_path / "split.h5").exists()
