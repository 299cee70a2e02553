"""The split and group stages' computation: train/test halves along y, and KD-tree
neighbour groups (the stages themselves: :mod:`ptychopipe.stages.split`,
:mod:`ptychopipe.stages.group`).

Group layout (docs/design.md, 'Artifact contract'; docs/artifacts.md): indices (B, C) int64 into the simulated arrays;
centres (B, 2) float64 [x, y] px (mean of the members' positions); offsets
(B, C, 2) float64 [x, y] px (member position minus centre); amplitude
(B, N, N, C) float32 sqrt(counts), channels last (the model's layout).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .artifacts import GroupSet, Simulated, Split
from .config import GroupConfig
from .errors import PtychopipeError
from .telemetry import check_finite


class GroupingError(PtychopipeError, ValueError):
    """Groups that cannot be made as configured (one-line message)."""


class TooFewPatterns(GroupingError):
    """A split holds fewer patterns than one group needs (the data's fault, not the config's)."""


# --------------------------------------------------------------------------- split


def split_by_y(positions: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Contiguous split along y: train = positions with y < y_split, test = the rest.

    y_split = y_min + fraction·(y_max - y_min) over the scan. positions: (M, 2) [x, y] px.
    Returns (train indices, test indices, y_split), indices int64 sorted ascending.
    """
    y = positions[:, 1]
    y_split = float(y.min() + fraction * (y.max() - y.min()))
    train = np.flatnonzero(y < y_split).astype(np.int64)
    test = np.flatnonzero(y >= y_split).astype(np.int64)
    return train, test, y_split


# --------------------------------------------------------------------------- group


def make_groups(positions: np.ndarray, gridsize: int, n_groups: int, neighbour_count: int,
                seed: int, split: str = "split") -> np.ndarray:
    """Groups of C = gridsize² nearby patterns. Returns (B, C) int64 indices into ``positions``.

    Seeds: a seeded permutation of all patterns, repeated (each time re-permuted)
    until ``n_groups`` seeds are drawn, so every pattern seeds a group before any
    seeds two. Each group is the seed plus C - 1 patterns drawn without replacement
    from the seed's K - 1 nearest other patterns (K = neighbour_count, cKDTree).
    gridsize 1 gives single-pattern groups (K unused). Raises GroupingError naming the
    split when K < C, or when there are fewer than K patterns (C > 1) or none (C = 1).
    """
    m = len(positions)
    c = gridsize * gridsize
    if neighbour_count < c:
        raise GroupingError(f"[group] {split}: neighbour_count K = {neighbour_count} < C = gridsize^2 = {c}")
    need = max(c, neighbour_count if c > 1 else 1)
    if m < need:
        raise TooFewPatterns(f"[group] {split}: {m} patterns available, need at least {need} "
                             f"(C = {c}, K = {neighbour_count})")
    rng = np.random.default_rng(seed)
    reps = -(-n_groups // m)
    seeds = np.concatenate([rng.permutation(m) for _ in range(reps)])[:n_groups]
    if c == 1:
        return seeds[:, None].astype(np.int64)
    _, nbrs = cKDTree(positions).query(positions[seeds], k=neighbour_count)
    nbrs = np.asarray(nbrs).reshape(n_groups, neighbour_count)
    out = np.empty((n_groups, c), dtype=np.int64)
    for g in range(n_groups):
        others = nbrs[g][nbrs[g] != seeds[g]][: neighbour_count - 1]
        out[g, 0] = seeds[g]
        out[g, 1:] = rng.choice(others, size=c - 1, replace=False)
    return out


def centres_offsets(positions: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group centres (B, 2) = mean member position, and offsets (B, C, 2) = member - centre, px."""
    member = positions[groups]  # (B, C, 2)
    centres = member.mean(axis=1)
    return centres, member - centres[:, None, :]


def gather_channels_last(arr: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(M, N, N) per-pattern array -> (B, N, N, C) per-group array (channels last)."""
    return np.moveaxis(arr[groups], 1, -1)


def group_splits(sim: Simulated, split: Split, cfg: GroupConfig,
                 source: str = "split") -> tuple[dict[str, GroupSet], dict[str, float]]:
    """The train and test groups of ``split``'s patterns (:func:`make_groups`, seeds
    ``cfg.seed`` and ``cfg.seed + 1``), with their centres, offsets and amplitudes (module
    docstring). Returns ({"train", "test"}: GroupSet, telemetry ratios: each split's mean
    grouped amplitude over the mean raw amplitude). ``source`` names the split file in a
    TooFewPatterns message."""
    sets: dict[str, GroupSet] = {}
    raw_mean = float(sim.amplitude.mean())
    ratios = {}
    for name, idx, salt in (("train", split.train_indices, 0), ("test", split.test_indices, 1)):
        try:
            local = make_groups(sim.positions[idx], cfg.gridsize, cfg.n_groups, cfg.neighbour_count,
                                cfg.seed + salt, split=name)
        except TooFewPatterns as e:  # name the file whose split is too small
            raise TooFewPatterns(f"{source}: {name}/indices: {e}") from None
        groups = idx[local]
        centres, offsets = centres_offsets(sim.positions, groups)
        amp = gather_channels_last(sim.amplitude, groups)
        check_finite("group", f"{name}/amplitude", amp)
        sets[name] = GroupSet(groups, centres, offsets, amp)
        ratios[f"{name}_grouped_over_raw"] = float(amp.mean()) / raw_mean
    return sets, ratios
