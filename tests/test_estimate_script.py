"""scripts/group_estimate_quality.py: the misfit measure that experiment 25 (docs/quality.md)
rests on. An object that produced the patterns fits them exactly; one off by a known
factor misfits by the square of the excess."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ptychopipe.physics import expected_counts
from ptychopipe.simulate import ideal_probe

REPO = Path(__file__).resolve().parents[1]


def _script(name="group_estimate_quality"):
    """scripts/<name>.py as a module; scripts/ is on sys.path while it loads, as when it runs
    as a script (twin_start_experiment imports group_estimate_quality)."""
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return mod


def test_amplitude_misfit_is_zero_for_the_object_that_made_the_patterns_and_grows_with_its_error():
    rng = np.random.default_rng(0)
    n, a = 32, 0.01
    probe = ideal_probe(n, 12).astype(np.complex128) * 30.0
    obj = (1 + 0.3 * rng.standard_normal((5, n, n))) * np.exp(0.5j * rng.standard_normal((5, n, n)))
    x = a * np.sqrt(expected_counts((probe.real, probe.imag), (obj.real, obj.imag)))
    misfit = _script().amplitude_misfit
    assert misfit(obj, x, probe, a) < 1e-20
    assert abs(misfit(1.1 * obj, x, probe, a) - 0.01) < 1e-9  # every amplitude 10 % high
    assert abs(misfit(obj * np.exp(0.7j), x, probe, a)) < 1e-20  # a global phase is invisible
    assert misfit(np.conj(obj), x, probe, a) > 1e-3  # not the twin: conj alone changes the pattern


def test_stitched_scores_stitch_as_the_stage_does_twin_resolution_included():
    """Experiment 27's command (`--weight uniform --resolve-twin`): twinned patches under the
    ideal probe are swapped back and score as the truth does; without the swap they do not."""
    import re

    from ptychopipe.config import ObjectConfig
    from ptychopipe.simulate import make_object, object_patches
    from ptychopipe.stitch import twin

    n = 64
    obj = make_object(ObjectConfig("lines", 128, 42, 60, (8.0, 64.0), 1.0, (0.5, 1.5), (-1.0, 1.0)))
    rng = np.random.default_rng(3)
    pos = rng.uniform(n / 2 + 4, 128 - n / 2 - 4, size=(120, 2))
    truth = object_patches(obj, pos, n)
    patches = np.where((np.arange(len(pos)) % 3 == 0)[:, None, None], twin(truth), truth)
    scores = _script().stitched_scores

    def r(text):
        return float(re.search(r"amplitude r (\S+)", text).group(1))

    probe = ideal_probe(n, n / 2)
    resolved = scores(patches, pos, probe, obj, "uniform", True)
    assert r(resolved) > 0.999 and re.search(r"twin swaps per pass \[40, 0\]$", resolved), resolved
    assert r(scores(patches, pos, probe, obj, "uniform")) < 0.95


def _one_pattern_case(n=32, seed=0):
    from ptychopipe.model import estimate_probe
    from ptychopipe.physics import noise_tolerance

    rng = np.random.default_rng(seed)
    probe = ideal_probe(n, n / 2).astype(np.complex128) * 30.0
    obj = (1 + 0.3 * rng.standard_normal((3, n, n))) * np.exp(0.5j * rng.standard_normal((3, n, n)))
    lam = expected_counts((probe.real, probe.imag), (obj.real, obj.imag))
    a = np.sqrt((n / 2) ** 2 / lam.sum(axis=(1, 2)).mean())
    x = a * np.sqrt(rng.poisson(lam))
    return x, estimate_probe(probe), noise_tolerance(1.0, a)


def test_twin_start_experiment_runs_the_shipped_one_pattern_difference_map():
    """Experiment 28's solver from the flat start is the pipeline's own estimate at C = 1.
    Compared after 5 iterations: the one-pattern difference map amplifies a round-off
    difference about 3× per iteration (1e-15 after 1, 1e-12 after 5, 0.5 after 30 here)."""
    from ptychopipe.physics import difference_map_estimate

    s = _script("twin_start_experiment")
    x, pe, tol = _one_pattern_case()
    b, n = x.shape[0], x.shape[-1]
    mine = s.difference_map_1(x, pe, 5, tol, s.start_object("flat", b, n))
    re, im = difference_map_estimate(x[:, None], np.zeros((b, 1)), np.zeros((b, 1)), (pe.real, pe.imag), n, 5,
                                     tolerance=tol)
    assert np.abs(mine - (re + 1j * im)[:, 0]).max() < 1e-10


def test_a_start_that_is_its_own_twin_stays_so_under_a_probe_that_is_its_own_twin():
    """What experiment 28 tests: under the ideal probe the flat start's iterates are their own
    twin (to round-off, which grows over later iterations); a ramp start, or a support that
    is not centrosymmetric, leaves that subspace at once."""
    from ptychopipe.stitch import twin

    s = _script("twin_start_experiment")
    x, pe, tol = _one_pattern_case()
    b, n = x.shape[0], x.shape[-1]

    def asym(o):
        return float(np.abs(o - twin(o)).max() / np.abs(o).max())

    assert asym(s.start_object("flat", b, n)) == 0.0
    assert asym(s.difference_map_1(x, pe, 5, tol, s.start_object("flat", b, n))) < 1e-9
    for start in ("ramp", "noise", "phase"):
        assert asym(s.start_object(start, b, n)) > 0.1, start
        assert asym(s.difference_map_1(x, pe, 5, tol, s.start_object(start, b, n))) > 1e-2, start
    for mask in ("half", "triangle"):
        m = s.support_mask(mask, n)
        assert 0.2 < m.mean() < 0.8 and np.abs(m - m[(-np.arange(n)) % n][:, (-np.arange(n)) % n]).max() == 1.0
        assert asym(s.difference_map_1(x, pe, 5, tol, s.start_object("flat", b, n), m, 3)) > 1e-2, mask
