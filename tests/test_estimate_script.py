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


def _script():
    spec = importlib.util.spec_from_file_location("group_estimate_quality", REPO / "scripts" / "group_estimate_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
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
