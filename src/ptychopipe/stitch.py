"""The stitch stage's computation: place the inferred object patches on one object canvas
(the stage itself is :mod:`ptychopipe.stages.stitch`).

Convention (the simulator's, :func:`ptychopipe.physics.extract_patches`): patch
pixel (i, k) of a patch centred at (x, y) samples the object at
(y - N/2 + i, x - N/2 + k). With o = (x - N/2, y - N/2), integer part
q = floor(o) and fractional part f = o - q ∈ [0, 1), patch sample t sits at object
coordinate q + f + t. Stitching inverts that: the patch is resampled at the
integer object pixels q + j (j = 0..N-1), i.e. at patch coordinates t = j - f, by
a sub-pixel Fourier shift of +f (:func:`ptychopipe.physics.fourier_shift`, after
reflect-padding by ``margin`` px so the periodic shift does not wrap). Only the
pixels with t ≥ 0 are used (j = 0 is dropped when f > 0): nothing is
extrapolated, every value is an interpolation between patch samples.

Overlap normalisation: canvas = Σ_j w_j·Ô_j / Σ_j w_j, where w_j is the weight
of config ``stitch.weight`` at the same points (bilinear interpolation of the
weight map: it is a smooth, non-negative weighting function, so interpolation
that cannot ring below zero is the right tool for it, and it costs no FFT):

- ``probe_intensity``: w = |P_abs|² / max|P_abs|² (dimensionless, max 1). The
  measured counts constrain the object only where the probe illuminates it; the
  Poisson Fisher information about O at a pixel scales with |P|², so this is the
  inverse-variance (maximum-likelihood) weighting of overlapping estimates, and
  it matches the overlap weight the model's own merge uses (docs/design.md, 'Overlap constraint'). Poorly
  lit patch borders, where the network's prediction is least constrained, get
  almost no say.
- ``uniform``: w = 1 on every patch pixel: the plain average of the overlaps.

Twin resolution (config ``stitch.resolve_twin``, gridsize 1 only): when the probe
is its own twin, P(r) = conj(P(−r)) about the patch centre (the ideal probe: real and
point-symmetric), a patch Ô and its twin conj(Ô(−r)) give identical counts
(``tests/test_physics.py``), so a one-pattern prediction cannot choose between them
and settles on a mixture. The overlap can: the true part of every patch agrees with
its neighbours, the twin part (the object mirrored through each patch's own centre)
does not. :func:`resolve_twins` stitches, compares each patch and its twin with the
stitched object under the patch (complex correlation, |P|²-weighted, so a per-patch
phase does not matter), keeps whichever agrees better and repeats until no patch
changes. Every patch it returns fits its pattern exactly as well as the network's
own prediction did: it only picks among predictions the data cannot tell apart.

The canvas is sized from the positions (not from the truth object), so no patch
is ever clipped; its origin (object coordinates of canvas pixel (0, 0)) is
stored so that compare can align it with the truth object without registration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .artifacts import ArtifactError, Inferred
from .config import StitchConfig
from .physics import extract_patches, fourier_shift
from .telemetry import InvariantError, check_finite

STAGE = "stitch"
WEIGHTS = ("probe_intensity", "uniform")
#: Origins within this distance (px) of an integer are snapped to it (rounding of position − N/2).
F_TOL = 1e-9
#: A probe is its own twin when max|P − conj(P(−r))| <= this × max|P| (complex64 round-off is ~1e-7).
TWIN_SYMMETRY_TOL = 1e-4
#: Most stitch-and-compare passes of :func:`resolve_twins` (it stops earlier once no patch changes).
TWIN_MAX_PASSES = 10


@dataclass(frozen=True)
class CanvasGeometry:
    """Where the canvas sits in object coordinates.

    Canvas pixel (r, c) is object pixel (origin_y + r, origin_x + c); the canvas
    is ``height`` × ``width`` px. Origins are integers (px) and may be negative.
    """

    origin_x: int
    origin_y: int
    height: int
    width: int


@dataclass(frozen=True)
class Stitched:
    """A stitched object.

    object: (H, W) complex128 [object amplitude], Σ w·Ô / Σ w where coverage > 0,
    0 elsewhere; coverage: (H, W) float64, Σ w (dimensionless); count: (H, W)
    int32, number of patches that contributed to each pixel; geometry: the
    canvas origin and size; weighted_magnitude: Σ_j Σ_pixels w_j·|Ô_j| (the
    denominator of :func:`overlap_consistency`).
    """

    object: np.ndarray
    coverage: np.ndarray
    count: np.ndarray
    geometry: CanvasGeometry
    weighted_magnitude: float


def patch_origins(positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer and fractional parts of the patch origins.

    positions: (M, 2) float [x, y] px, patch centres. Returns (q, f): q (M, 2)
    int64 = floor(position - n/2) and f (M, 2) float64 = (position - n/2) - q,
    in [0, 1), both [x, y] px. An origin within :data:`F_TOL` of an integer is taken
    as that integer (f = 0), so rounding never costs a patch its first row or column.
    """
    o = np.asarray(positions, dtype=np.float64) - n / 2
    snapped = np.round(o)
    o = np.where(np.abs(o - snapped) <= F_TOL, snapped, o)  # within rounding of an integer: integer
    q = np.floor(o)
    return q.astype(np.int64), o - q


def canvas_geometry(positions: np.ndarray, n: int) -> CanvasGeometry:
    """Smallest canvas holding every stitched pixel, whatever the positions.

    positions: (M, 2) float [x, y] px. Per axis, a patch with origin o = q + f
    (:func:`patch_origins`) covers the integer pixels ceil(o) .. q + n - 1 (those
    with an interpolated sample, t = pixel − o ∈ [0, n − 1]); the canvas spans the
    union, so its border rows and columns are never empty.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or len(pos) == 0:
        raise ValueError(f"positions: expected shape (M, 2) with M >= 1, got {pos.shape}")
    q, f = patch_origins(pos, n)
    first = q + (f > 0)
    x0, y0 = int(first[:, 0].min()), int(first[:, 1].min())
    return CanvasGeometry(origin_x=x0, origin_y=y0,
                          height=int(q[:, 1].max()) - y0 + n, width=int(q[:, 0].max()) - x0 + n)


def patch_weight(kind: str, probe: np.ndarray | None, n: int) -> np.ndarray:
    """The overlap weight of one patch on its own grid, (n, n) float64, max 1.

    kind: "probe_intensity" (|probe|² / max|probe|²; probe (n, n) complex) or
    "uniform" (ones).
    """
    if kind == "uniform":
        return np.ones((n, n))
    if kind == "probe_intensity":
        if probe is None or probe.shape != (n, n):
            raise ValueError(f"stitch.weight=probe_intensity: expected an ({n}, {n}) probe, "
                             f"got {None if probe is None else probe.shape}")
        w = np.abs(probe.astype(np.complex128)) ** 2
        top = w.max()
        if not top > 0:
            raise ValueError("stitch.weight=probe_intensity: probe is all zeros; expected max|P|² > 0")
        return w / top
    raise ValueError(f"stitch.weight: expected one of {list(WEIGHTS)}, got {kind!r}")


def resample_to_grid(fields: np.ndarray, fx: np.ndarray, fy: np.ndarray, margin: int = 8) -> np.ndarray:
    """Resample patches at integer object pixels: out[..., j, k] = field(t_y = j - fy, t_x = k - fx).

    fields: (M, n, n) real or complex; fx, fy: (M,) fractional origins in [0, 1) px.
    Each field is reflect-padded by ``margin`` px, shifted by (+fx, +fy) with
    :func:`~ptychopipe.physics.fourier_shift` and cropped back to (n, n).
    Returns (M, n, n) complex128 (real input: imaginary part ~0).
    """
    n = fields.shape[-1]
    pad = ((0, 0), (margin, margin), (margin, margin))
    re = np.pad(np.real(fields).astype(np.float64), pad, mode="reflect")
    im = np.pad(np.imag(fields).astype(np.float64), pad, mode="reflect")
    sr, si = fourier_shift(re, im, fx, fy)
    win = (slice(None), slice(margin, margin + n), slice(margin, margin + n))
    return sr[win] + 1j * si[win]


def interpolate_weight(weight: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """Bilinear resampling of one (n, n) weight map at t = j − f for M fractional origins.

    weight: (n, n) non-negative; fx, fy: (M,) in [0, 1). out[m, j, k] interpolates
    weight at (j − fy[m], k − fx[m]) from its samples j−1, j and k−1, k (row/column
    −1 clamps to 0; it is only reached at j = 0 with f > 0, a point the stitch
    drops anyway). Returns (M, n, n) float64, ≥ 0.
    """
    w = np.asarray(weight, dtype=np.float64)
    wy = np.concatenate([w[:1], w[:-1]], axis=0)  # sample j-1 along y
    wx = np.concatenate([w[:, :1], w[:, :-1]], axis=1)  # sample k-1 along x
    wxy = np.concatenate([wx[:1], wx[:-1]], axis=0)
    ax, ay = fx[:, None, None], fy[:, None, None]
    return (1 - ay) * ((1 - ax) * w + ax * wx) + ay * ((1 - ax) * wy + ax * wxy)


def stitch_patches(patches: np.ndarray, positions: np.ndarray, weight: np.ndarray,
                   chunk: int = 128, margin: int = 8) -> Stitched:
    """Overlap-normalised stitch of object patches at global positions (vectorised).

    patches: (M, n, n) complex [object amplitude]; positions: (M, 2) float [x, y] px,
    patch centres (simulator convention, module docstring); weight: (n, n) float,
    non-negative (:func:`patch_weight`). Patches are processed ``chunk`` at a time
    (FFT resampling of the patches, bilinear resampling of the weight, then one
    ``np.bincount`` per accumulated quantity); ``margin``: width in px of the reflect
    padding around each patch for its Fourier resampling.

    Returns :class:`Stitched` with object = Σ w·Ô / Σ w (0 where no weight),
    coverage = Σ w, count = number of contributing patches.
    """
    patches = np.asarray(patches)
    m, n, n2 = patches.shape
    if n != n2 or positions.shape != (m, 2):
        raise ValueError(f"patches {patches.shape} / positions {positions.shape}: expected (M, n, n) and (M, 2)")
    if weight.shape != (n, n) or np.any(weight < 0):
        raise ValueError(f"weight: expected non-negative ({n}, {n}), got shape {weight.shape}, "
                         f"min {float(weight.min()):.3g}")
    geo = canvas_geometry(positions, n)
    q, f = patch_origins(positions, n)
    size = geo.height * geo.width
    num_re = np.zeros(size)
    num_im = np.zeros(size)
    den = np.zeros(size)
    cnt = np.zeros(size)
    magnitude = 0.0
    grid = np.arange(n)
    uniform = bool(np.all(weight == weight.flat[0]))
    for a in range(0, m, chunk):
        b = min(a + chunk, m)
        fx, fy = f[a:b, 0], f[a:b, 1]
        vals = resample_to_grid(patches[a:b], fx, fy, margin)
        # t = j - f >= 0: only interpolated samples (j = 0 only at integer origins, f = 0)
        valid_y = grid[None, :] >= fy[:, None]  # (k, n)
        valid_x = grid[None, :] >= fx[:, None]
        mask = valid_y[:, :, None] & valid_x[:, None, :]
        if uniform:
            w = np.broadcast_to(weight, vals.shape) * mask
        else:
            w = interpolate_weight(weight, fx, fy) * mask
        rows = q[a:b, 1, None] - geo.origin_y + grid[None, :]  # (k, n)
        cols = q[a:b, 0, None] - geo.origin_x + grid[None, :]
        # window pixel j = 0 may lie one px before the canvas when f > 0: it is masked (weight 0)
        lin = np.where(mask, rows[:, :, None] * geo.width + cols[:, None, :], 0).ravel()
        num_re += np.bincount(lin, weights=(w * vals.real).ravel(), minlength=size)
        num_im += np.bincount(lin, weights=(w * vals.imag).ravel(), minlength=size)
        den += np.bincount(lin, weights=w.ravel(), minlength=size)
        cnt += np.bincount(lin, weights=mask.ravel().astype(np.float64), minlength=size)
        magnitude += float(np.sum(w * np.abs(vals)))
    covered = den > 0
    obj = np.zeros(size, dtype=np.complex128)
    obj[covered] = (num_re[covered] + 1j * num_im[covered]) / den[covered]
    shape = (geo.height, geo.width)
    return Stitched(obj.reshape(shape), den.reshape(shape), cnt.reshape(shape).astype(np.int32), geo, magnitude)


def overlap_consistency(stitched: Stitched) -> float:
    """Σ_pixels coverage·|stitched| / Σ_j Σ_pixels w_j·|Ô_j| (dimensionless, ≤ 1).

    The numerator is Σ_pixels |Σ_j w_j Ô_j|, so this equals 1 exactly when the
    overlapping patches agree in phase at every pixel and falls below 1 as they
    disagree (in phase, or when wrong positions misalign them).
    """
    total = stitched.weighted_magnitude
    return float(np.sum(stitched.coverage * np.abs(stitched.object))) / total if total > 0 else float("nan")


def twin(patches: np.ndarray) -> np.ndarray:
    """The twin conj(Ô(−r)) of each patch about its centre pixel N/2 (index i → N − i mod N,
    so the centre and the first row and column stay in place). patches: (..., N, N) complex;
    returns the same shape and dtype. Applied twice it gives the patches back."""
    n = patches.shape[-1]
    mirror = (-np.arange(n)) % n
    return np.conj(patches[..., mirror, :][..., mirror])


def twin_asymmetry(probe: np.ndarray) -> float:
    """max|P − twin(P)| / max|P| (dimensionless) of an (N, N) complex probe: 0 when the probe is
    its own twin, so that a patch and its twin give identical counts under it."""
    p = np.asarray(probe, dtype=np.complex128)
    top = float(np.abs(p).max())
    return float(np.abs(p - twin(p)).max()) / top if top > 0 else float("nan")


def canvas_patches(st: Stitched, positions: np.ndarray, n: int, pad: int = 16) -> np.ndarray:
    """The stitched object under each patch: (M, n, n) complex128, cut from ``st.object`` at
    ``positions`` (M, 2) [x, y] object px with the simulator's sub-pixel extractor (the canvas is
    zero-padded by ``pad`` px, so patches at its border keep their interpolation margin)."""
    g = st.geometry
    canvas = np.pad(st.object, pad)
    local = np.asarray(positions, dtype=np.float64) - np.array([g.origin_x, g.origin_y]) + pad
    return extract_patches(canvas, local, n)


def resolve_twins(patches: np.ndarray, positions: np.ndarray, weight: np.ndarray, probe: np.ndarray,
                  max_passes: int = TWIN_MAX_PASSES) -> tuple[np.ndarray, Stitched, list[int]]:
    """Replace each patch by its twin where the twin agrees better with the overlapping ones.

    patches: (M, n, n) complex [object amplitude], one pattern each (gridsize 1); positions:
    (M, 2) float [x, y] px; weight: the stitch weight (:func:`patch_weight`); probe: (n, n)
    complex, its own twin (:func:`twin_asymmetry`; the caller checks). Each pass stitches, cuts
    the stitched object E_j under every patch and compares |Σ|P|²·conj(Ô_j)·E_j| with the same
    for twin(Ô_j); a patch whose twin scores higher is swapped. Passes stop when none swaps
    (or after ``max_passes``). Returns (patches, their stitch, swaps per pass).
    """
    p = np.array(patches, dtype=np.complex128)
    n = p.shape[-1]
    lit = patch_weight("probe_intensity", probe, n)
    swaps: list[int] = []
    st = stitch_patches(p, positions, weight)
    for _ in range(max_passes):
        e = canvas_patches(st, positions, n)
        t = twin(p)
        keep = np.abs(np.sum(lit * np.conj(p) * e, axis=(1, 2)))
        alt = np.abs(np.sum(lit * np.conj(t) * e, axis=(1, 2)))
        swap = alt > keep
        swaps.append(int(np.count_nonzero(swap)))
        if not swap.any():
            break
        p[swap] = t[swap]
        st = stitch_patches(p, positions, weight)
    return p, st, swaps


def inferred_patches(inf: Inferred, cfg: StitchConfig,
                     source: str = "inferred.h5") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The patches of ``inf``, checked, and the weight to stitch them with.

    Returns patches (B·C, N, N) complex128 [object amplitude], positions (B·C, 2) float64
    [x, y] px and the weight (N, N) float64 of ``cfg.weight`` (:func:`patch_weight`).
    Raises InvariantError on a non-finite or negative amplitude, a non-finite phase or
    position, and ArtifactError when the probe gives no weight or, with
    ``cfg.resolve_twin``, when the groups have more than one pattern or the probe is not its
    own twin (:data:`TWIN_SYMMETRY_TOL`); ``source`` names the file in these messages.
    """
    check_finite(STAGE, f"{source}: amplitude", inf.amplitude)
    check_finite(STAGE, f"{source}: phase", inf.phase)
    check_finite(STAGE, f"{source}: positions", inf.positions)
    if np.any(inf.amplitude < 0):
        raise InvariantError(f"[{STAGE}] {source}: amplitude: {int(np.count_nonzero(inf.amplitude < 0))} "
                             f"negative values (min {float(inf.amplitude.min()):.4g}); expected >= 0")
    b, c, n, _ = inf.amplitude.shape
    patches = (inf.amplitude.astype(np.float64) * np.exp(1j * inf.phase.astype(np.float64))).reshape(b * c, n, n)
    positions = inf.positions.reshape(b * c, 2).astype(np.float64)
    try:
        weight = patch_weight(cfg.weight, inf.probe, n)
    except ValueError as exc:
        raise ArtifactError(f"{source}: probe: {exc}") from None
    if cfg.resolve_twin:
        if c != 1:
            raise ArtifactError(f"{source}: stitch.resolve_twin: expected one pattern per patch (gridsize 1), "
                                f"got groups of {c}: a group's patches share one reconstruction and one twin")
        asym = twin_asymmetry(inf.probe)
        if not asym <= TWIN_SYMMETRY_TOL:
            raise ArtifactError(f"{source}: probe: stitch.resolve_twin needs a probe that is its own twin "
                                f"(max|P - conj(P(-r))| <= {TWIN_SYMMETRY_TOL:g} max|P|), got {asym:.3g}: under "
                                "this probe a patch and its twin give different counts")
    return patches, positions, weight
