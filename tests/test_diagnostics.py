"""ptychopipe.diagnostics: per-patch truth/twin scores, the misfit of patches to their patterns,
and the stitched score of patches as the stitch and compare stages compute it."""

from __future__ import annotations

import dataclasses

import numpy as np

from ptychopipe import diagnostics
from ptychopipe.physics import expected_counts
from ptychopipe.simulate import ideal_probe
from ptychopipe.stitch import twin


def test_amplitude_misfit_is_zero_for_the_object_that_made_the_patterns_and_grows_with_its_error():
    rng = np.random.default_rng(0)
    n, a = 32, 0.01
    probe = ideal_probe(n, 12).astype(np.complex128) * 30.0
    obj = (1 + 0.3 * rng.standard_normal((5, n, n))) * np.exp(0.5j * rng.standard_normal((5, n, n)))
    x = a * np.sqrt(expected_counts((probe.real, probe.imag), (obj.real, obj.imag)))
    misfit = diagnostics.amplitude_misfit
    assert misfit(obj, x, probe, a) < 1e-20
    assert abs(misfit(1.1 * obj, x, probe, a) - 0.01) < 1e-9  # every amplitude 10 % high
    assert abs(misfit(obj * np.exp(0.7j), x, probe, a)) < 1e-20  # a global phase is invisible
    assert misfit(np.conj(obj), x, probe, a) > 1e-3  # not the twin: conj alone changes the pattern


def test_per_patch_scores_tell_the_truth_from_its_twin():
    rng = np.random.default_rng(1)
    n = 32
    truth = (1 + 0.3 * rng.standard_normal((4, n, n))) * np.exp(0.5j * rng.standard_normal((4, n, n)))
    lit = diagnostics.lit_pixels(ideal_probe(n, n / 2))
    assert 0.05 < lit.mean() < 0.6
    r_truth, r_twin = diagnostics.per_patch_scores(truth, truth, lit)
    assert r_truth > 0.999 and r_twin < 0.3
    r_truth, r_twin = diagnostics.per_patch_scores(twin(truth), truth, lit)
    assert r_twin > 0.999 and r_truth < 0.3


def test_stitched_scores_stitch_as_the_stage_does_twin_resolution_included():
    """Twinned patches under the ideal probe are swapped back by twin resolution and score as
    the truth does; without the swap they do not."""
    from ptychopipe.config import ObjectConfig
    from ptychopipe.simulate import make_object, object_patches

    n = 64
    obj = make_object(ObjectConfig("lines", 128, 42, 60, (8.0, 64.0), 1.0, (0.5, 1.5), (-1.0, 1.0)))
    rng = np.random.default_rng(3)
    pos = rng.uniform(n / 2 + 4, 128 - n / 2 - 4, size=(120, 2))
    truth = object_patches(obj, pos, n)
    patches = np.where((np.arange(len(pos)) % 3 == 0)[:, None, None], twin(truth), truth)
    probe = ideal_probe(n, n / 2)
    resolved = diagnostics.stitched_scores(patches, pos, probe, obj, "uniform", True)
    assert resolved["amplitude_r"] > 0.999 and resolved["twin_swaps"] == [40, 0], resolved
    plain = diagnostics.stitched_scores(patches, pos, probe, obj, "uniform")
    assert plain["amplitude_r"] < 0.95 and plain["twin_swaps"] == []


def test_evenly_spaced_keeps_the_first_and_last_group_and_cuts_every_array():
    @dataclasses.dataclass(frozen=True)
    class Groups:
        indices: np.ndarray
        offsets: np.ndarray
        weights: np.ndarray | None = None

    g = Groups(np.arange(20).reshape(10, 2), np.zeros((10, 2, 2)))
    sub = diagnostics.evenly_spaced(g, 4)
    assert sub.indices[:, 0].tolist() == [0, 6, 12, 18]
    assert sub.offsets.shape == (4, 2, 2) and sub.weights is None
