"""The overlap constraint (docs/design.md, 'Overlap constraint'): merge per group, never across groups."""

import numpy as np
import pytest

from ptychopipe.config import ObjectConfig
from ptychopipe.physics import canvas_size, extract_patches, merge_and_reextract
from ptychopipe.simulate import ideal_probe, load_probe, make_object

N = 64


@pytest.fixture(scope="module")
def obj():
    return make_object(ObjectConfig("lines", 256, 42, 300, (8.0, 64.0), 1.0, (0.5, 1.5), (-1.0, 1.0)))


def _groups(obj, b, max_off, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(70, 186, (b, 2))
    offs = rng.uniform(-max_off, max_off, (b, 4, 2))
    p = extract_patches(obj, (centres[:, None, :] + offs).reshape(-1, 2), N).reshape(b, 4, N, N)
    return p, offs


@pytest.mark.parametrize("probe_kind", ["ideal", "custom"])
def test_true_patches_are_nearly_fixed_points(obj, probe_kind):
    """Patches cut from one object agree on their overlaps: merging changes the exit
    wave by < 1 % (measured 0.2-0.4 %: each member keeps its own values where no member
    is lit, so what remains is the interpolation of patch borders), and the merged patch
    matches where the probe is bright."""
    probe = ideal_probe(N, 32) if probe_kind == "ideal" else \
        load_probe("data/probes/custom_probe_64.npz", "probeGuess", N)
    w = np.abs(probe) ** 2
    w /= w.max()
    p, offs = _groups(obj, 16, 14.0)
    r, i = merge_and_reextract((p.real, p.imag), offs[..., 0], offs[..., 1], w, canvas_size(N, 14.0))
    q = r + 1j * i
    assert np.linalg.norm(probe * (q - p)) / np.linalg.norm(probe * p) < 0.01
    assert np.abs(q - p)[..., w > 0.1].max() < 0.05


def test_single_member_is_identity_for_subpixel_offsets():
    rng = np.random.default_rng(3)
    p = rng.normal(size=(2, 1, N, N)) + 1j * rng.normal(size=(2, 1, N, N))
    offs = np.array([[[0.5, -0.3]], [[7.25, 3.9]]])
    w = np.ones((N, N))
    r, i = merge_and_reextract((p.real, p.imag), offs[..., 0], offs[..., 1], w, canvas_size(N, 8))
    np.testing.assert_allclose(r + 1j * i, p, atol=1e-10)


def test_groups_in_a_batch_never_mix(obj):
    """Changing (or removing) other groups of the batch leaves a group's output unchanged."""
    p, offs = _groups(obj, 8, 12.0)
    w = np.abs(ideal_probe(N, 32)) ** 2
    w /= w.max()
    s = canvas_size(N, 12.0)
    r, i = merge_and_reextract((p.real, p.imag), offs[..., 0], offs[..., 1], w, s)
    p2 = p.copy()
    p2[1:] = 10.0 * np.exp(1j * 2.0)  # poison every other group
    r2, i2 = merge_and_reextract((p2.real, p2.imag), offs[..., 0], offs[..., 1], w, s)
    np.testing.assert_allclose(r2[0], r[0], atol=1e-12)
    np.testing.assert_allclose(i2[0], i[0], atol=1e-12)
    r3, i3 = merge_and_reextract((p[:1].real, p[:1].imag), offs[:1, :, 0], offs[:1, :, 1], w, s)
    np.testing.assert_allclose(r3[0], r[0], atol=1e-12)


def test_members_are_averaged_within_a_group():
    """Two members at the same position with values 1 and 3 average to their mean, with
    eps·(own value) in the numerator and eps in the denominator: (4 + eps·own)/(2 + eps)."""
    a = np.full((1, 2, N, N), 1.0 + 0j)
    a[0, 1] = 3.0
    offs = np.zeros((1, 2, 2))
    offs[0, :, 0] = 0.4
    w = np.ones((N, N))
    eps = 1e-2
    r, i = merge_and_reextract((a.real, a.imag), offs[..., 0], offs[..., 1], w, canvas_size(N, 1), eps=eps)
    np.testing.assert_allclose(r[0, 0], (4 + eps) / (2 + eps), atol=1e-9)
    np.testing.assert_allclose(r[0, 1], (4 + 3 * eps) / (2 + eps), atol=1e-9)
    np.testing.assert_allclose(i, 0.0, atol=1e-9)


def test_members_keep_their_own_values_where_no_member_is_lit():
    """Where the summed weight is 0 the merge returns each member's own prediction (not 0),
    and where it is ≫ eps the weighted average."""
    a = np.full((1, 2, N, N), 1.0 + 0j)
    a[0, 1] = 3.0
    offs = np.zeros((1, 2, 2))
    w = np.zeros((N, N))
    w[16:48, 16:48] = 1.0
    r, _ = merge_and_reextract((a.real, a.imag), offs[..., 0], offs[..., 1], w, canvas_size(N, 1))
    np.testing.assert_allclose(r[0, 0, :8, :8], 1.0, atol=1e-9)
    np.testing.assert_allclose(r[0, 1, :8, :8], 3.0, atol=1e-9)
    np.testing.assert_allclose(r[0, :, 24:40, 24:40], 2.0, atol=2e-2)


def test_canvas_fits_largest_offsets_without_clipping(obj):
    """Members up to 2*14 px apart (random gridsize-2 groups reach ~14 px from their
    centre): with canvas_size the truth stays a near fixed point; a canvas sized for
    small offsets wraps neighbours into the window and breaks it."""
    p, offs = _groups(obj, 8, 14.0, seed=5)
    offs[:, 0] = 14.0  # push one member of each group to the extreme corner
    offs[:, 1] = -14.0
    p = extract_patches(obj, (np.array([[128.0, 128.0]]).repeat(8, 0)[:, None, :] + offs).reshape(-1, 2),
                        N).reshape(8, 4, N, N)
    w = np.ones((N, N))
    good = merge_and_reextract((p.real, p.imag), offs[..., 0], offs[..., 1], w, canvas_size(N, 14.0))
    small = merge_and_reextract((p.real, p.imag), offs[..., 0], offs[..., 1], w, canvas_size(N, 2.0))
    err = [np.linalg.norm((g[0] + 1j * g[1]) - p) / np.linalg.norm(p) for g in (good, small)]
    assert err[0] < 0.05
    assert err[1] > 3 * err[0]
