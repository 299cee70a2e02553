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
