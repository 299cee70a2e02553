"""The forward model, written once for NumPy (simulation) and Keras (training).

docs/design.md, 'One forward model', asks for one implementation of the FFT convention, the sub-pixel
shift and the overlap merge, shared by the simulator and the differentiable
model. Every function here takes an ``ops`` namespace: :data:`NUMPY_OPS` (float64
NumPy, used by :mod:`ptychopipe.simulate`) or ``keras.ops`` (used by
:mod:`ptychopipe.network`, any Keras backend). Complex fields are carried as a pair
of real arrays ``(re, im)`` because ``keras.ops`` has no portable complex dtype;
``keras.ops.fft2`` takes and returns such pairs and NUMPY_OPS mirrors it. The iterative
solvers that invert this model for one group live in :mod:`ptychopipe.solvers`.

Conventions (docs/design.md, 'Forward model'):
- arrays are (..., N, N) with the two last axes (row = y, column = x);
- far field, unitary: F = fftshift(fft2(ψ)) / N, so Σ|F|² = Σ|ψ|²;
- shift by (dx, dy) px moves content towards +x, +y: out(r) = in(r - d),
  by multiplying the spectrum with exp(-2πi (kx·dx + ky·dy)) (band-limited, exact
  for band-limited content, periodic over the array).

Exception, NumPy only: :func:`extract_patches` (the simulator cutting sub-pixel
patches out of the large, non-periodic object) interpolates with a windowed sinc
instead of Fourier-shifting a crop, whose border jumps would ring through the patch
(1.6e-2 error against 6.5e-6; tests/test_physics.py). Same band-limited model of
the object, same convention (patch pixel (i, k) samples O at y - N/2 + i,
x - N/2 + k); the model never extracts from the object, so nothing of it is shared
with Keras.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

Pair = tuple[Any, Any]


def _np_fft2(x: Pair) -> Pair:
    z = np.fft.fft2(np.asarray(x[0]) + 1j * np.asarray(x[1]))
    return z.real, z.imag


def _np_ifft2(x: Pair) -> Pair:
    z = np.fft.ifft2(np.asarray(x[0]) + 1j * np.asarray(x[1]))
    return z.real, z.imag


#: The subset of ``keras.ops`` used below, implemented with NumPy.
NUMPY_OPS = SimpleNamespace(
    fft2=_np_fft2,
    ifft2=_np_ifft2,
    roll=np.roll,
    cos=np.cos,
    sin=np.sin,
    sum=np.sum,
    maximum=np.maximum,
    minimum=np.minimum,
    max=np.max,
    pad=lambda x, pad_width: np.pad(x, pad_width),
    expand_dims=np.expand_dims,
    square=np.square,
    sqrt=np.sqrt,
    dtype=lambda x: str(np.asarray(x).dtype),
    convert_to_tensor=lambda x, dtype=None: np.asarray(x, dtype=dtype),
    fori_loop=lambda lower, upper, body, state: _np_fori_loop(lower, upper, body, state),
    floor=np.floor,
    cast=lambda x, dtype: np.asarray(x).astype(dtype),
    cumsum=np.cumsum,
    ones_like=np.ones_like,
    reshape=np.reshape,
    shape=np.shape,
    take=lambda x, indices: np.take(x, indices),
    segment_sum=lambda data, segment_ids, num_segments: np.bincount(
        np.ravel(segment_ids), weights=np.ravel(data), minlength=int(num_segments)).astype(np.asarray(data).dtype),
)


def _np_fori_loop(lower: int, upper: int, body: Any, state: Any) -> Any:
    for i in range(lower, upper):
        state = body(i, state)
    return state


def _const(ops: Any, value: np.ndarray, like: Any) -> Any:
    return ops.convert_to_tensor(value, dtype=ops.dtype(like))


def fftshift2(x: Any, ops: Any = NUMPY_OPS) -> Any:
    """fftshift over the last two axes (even sizes: shift by n/2)."""
    n0, n1 = x.shape[-2], x.shape[-1]
    return ops.roll(x, (n0 // 2, n1 // 2), axis=(-2, -1))


def far_field(re: Any, im: Any, ops: Any = NUMPY_OPS) -> Pair:
    """Unitary far field F = fftshift(fft2(ψ)) / N of ψ = re + i·im, shape (..., N, N)."""
    n = re.shape[-1]
    fr, fi = ops.fft2((re, im))
    return fftshift2(fr, ops) / n, fftshift2(fi, ops) / n


def inverse_far_field(fr: Any, fi: Any, ops: Any = NUMPY_OPS) -> Pair:
    """Inverse of :func:`far_field`: ψ = ifft2(ifftshift(F))·N for F = fr + i·fi, (..., N, N)."""
    n = fr.shape[-1]
    pr, pi = ops.ifft2((fftshift2(fr, ops), fftshift2(fi, ops)))  # ifftshift = fftshift for even N
    return pr * n, pi * n


def expected_counts(probe: Pair, obj: Pair, ops: Any = NUMPY_OPS) -> Any:
    """λ = |fftshift(fft2(P · O)) / N|²  (docs/design.md, 'Forward model', 'Dose and normalisation').

    probe: (re, im), shape (N, N) or broadcastable to obj; obj: (re, im), (..., N, N).
    Returns expected counts (..., N, N) when P is P_abs [photons^0.5 per unit of object
    amplitude], so that P·O is in photons^0.5.
    """
    pr, pi = probe
    orr, oi = obj
    ex_r = pr * orr - pi * oi
    ex_i = pr * oi + pi * orr
    fr, fi = far_field(ex_r, ex_i, ops)
    return fr * fr + fi * fi


def shift_ramp(s0: int, s1: int, dx: Any, dy: Any, like: Any, ops: Any = NUMPY_OPS) -> Pair:
    """Spectral phase ramp exp(-2πi (kx·dx + ky·dy)) as (cos, sin), shape (..., s0, s1).

    dx, dy: arrays of shifts in px, shape ``...``; ``like``: an array of the compute dtype.
    """
    ky = _const(ops, np.fft.fftfreq(s0).reshape(s0, 1), like)
    kx = _const(ops, np.fft.fftfreq(s1).reshape(1, s1), like)
    dx = ops.expand_dims(ops.expand_dims(dx, -1), -1)
    dy = ops.expand_dims(ops.expand_dims(dy, -1), -1)
    phase = -2.0 * np.pi * (kx * dx + ky * dy)
    return ops.cos(phase), ops.sin(phase)


def fourier_shift(re: Any, im: Any, dx: Any, dy: Any, ops: Any = NUMPY_OPS) -> Pair:
    """Sub-pixel shift of (..., S0, S1) fields by (dx, dy) px; out(r) = in(r - d).

    dx, dy: arrays broadcastable to the leading dims ``...`` (one shift per field).
    """
    c, s = shift_ramp(re.shape[-2], re.shape[-1], dx, dy, re, ops)
    fr, fi = ops.fft2((re, im))
    return ops.ifft2((fr * c - fi * s, fr * s + fi * c))


def canvas_size(n: int, max_offset: float) -> int:
    """Side of the merge canvas for patches of size n whose centres lie within
    ``max_offset`` px (max over x and y) of the group centre: n + 2·ceil(max_offset) + 2,
    rounded up to even. Members are at most 2·max_offset apart, so a source patch
    shifted into another member's frame never wraps into that member's central n×n
    window (wrap-free when side ≥ n + 2·max_offset)."""
    s = n + 2 * int(np.ceil(max_offset)) + 2
    return s + (s % 2)


def merge_and_reextract(patches: Pair, offsets_x: Any, offsets_y: Any, weight: Any,
                        canvas: int, ops: Any = NUMPY_OPS, eps: float = 1e-2) -> Pair:
    """The overlap constraint (docs/design.md, 'Overlap constraint'), per group.

    patches: (re, im), each (B, C, N, N) — C object patches of B groups.
    offsets_x, offsets_y: (B, C) px, member centre minus group centre.
    weight: (N, N) non-negative overlap weight (max 1), e.g. |P|²/max|P|², a
    tensor of the compute dtype.
    canvas: side S ≥ :func:`canvas_size` (static, even).

    The C patches of a group form one shared object (the canvas); each member's
    patch is replaced by the overlap-weighted average of all members over its own
    window, with its own prediction as the fallback where no member is lit::

        Ô'_c = (Σ_d shift_{o_d − o_c}(w·Ô_d) + eps·Ô_c) / (Σ_d shift_{o_d − o_c}(w) + eps)

    i.e. the canvas Σ w·Ô / Σ w re-extracted at member c's offset where the probe lights
    it (Σ w ≫ eps), and Ô_c where it does not (Σ w ≪ eps). Why the fallback: patches cut
    from one object are then fixed points wherever the probe is dim too (the exit-wave
    change of true patches is 0.2-0.4 % at eps = 1e-2, against 1.4-1.9 % when the
    average fades to 0 through max(Σ w, eps)), and float32 FFT round-off is divided by
    Σ w + eps ≥ eps, never by a tiny sum. It is evaluated in member c's frame (each
    source patch zero-padded to S×S, its spectrum times the relative-shift ramp, summed
    over sources, one inverse FFT per member). Groups never mix: sums run over the C
    members of one group only.
    Returns (re, im), each (B, C, N, N).
    """
    re, im = patches
    n = re.shape[-1]
    lo = (canvas - n) // 2
    pad = [[0, 0], [0, 0], [lo, canvas - n - lo], [lo, canvas - n - lo]]
    w_full = weight + 0.0 * re  # (B, C, N, N)
    # spectra of the sources, (B, 1, C, S, S): axis 1 = target member, axis 2 = source
    ar, ai = ops.fft2((ops.pad(weight * re, pad), ops.pad(weight * im, pad)))
    wr, wi = ops.fft2((ops.pad(w_full, pad), 0.0 * ops.pad(w_full, pad)))
    ar, ai, wr, wi = (ops.expand_dims(t, 1) for t in (ar, ai, wr, wi))
    # relative shifts source d -> target c: o_d - o_c, shape (B, C_target, C_source)
    dx = ops.expand_dims(offsets_x, 1) - ops.expand_dims(offsets_x, 2)
    dy = ops.expand_dims(offsets_y, 1) - ops.expand_dims(offsets_y, 2)
    c, s = shift_ramp(canvas, canvas, dx, dy, re, ops)
    num_r, num_i = ops.ifft2((ops.sum(ar * c - ai * s, axis=2), ops.sum(ar * s + ai * c, axis=2)))
    den, _ = ops.ifft2((ops.sum(wr * c - wi * s, axis=2), ops.sum(wr * s + wi * c, axis=2)))
    win = (Ellipsis, slice(lo, lo + n), slice(lo, lo + n))
    den = ops.maximum(den[win], 0.0) + eps  # Σ shift(w) ≥ 0; sub-pixel shifts can ring below 0
    return (num_r[win] + eps * re) / den, (num_i[win] + eps * im) / den




def sinc_weights(frac: np.ndarray, half_width: int, beta: float | None = None) -> np.ndarray:
    """Kaiser-windowed sinc interpolation weights for fractional offsets ``frac`` (M,) in [0, 1).

    Returns (M, 2·half_width) float64 weights w[j, u] for the samples at integer
    offsets t = u - half_width + 1 (t = -half_width + 1 .. half_width): the value at
    position ``frac`` is Σ_t w[j, t]·f(t). Kernel sinc(t - frac)·I0(β·sqrt(1 - ((t -
    frac)/half_width)²))/I0(β), normalised to sum 1 (constants are reproduced exactly;
    frac = 0 gives the identity). β defaults to 10·half_width/12.
    """
    beta = 10.0 * half_width / 12.0 if beta is None else beta
    t = np.arange(-half_width + 1, half_width + 1, dtype=np.float64)
    d = t[None, :] - np.asarray(frac, dtype=np.float64)[:, None]
    w = np.sinc(d) * np.i0(beta * np.sqrt(np.clip(1.0 - (d / half_width) ** 2, 0.0, 1.0)))
    return w / w.sum(axis=1, keepdims=True)


def _banded(w: np.ndarray, n: int) -> np.ndarray:
    """(M, L) tap weights -> (M, n + L - 1, n) banded matrices B[j, k + u, k] = w[j, u]."""
    m, taps = w.shape
    band = np.zeros((m, n + taps - 1, n), dtype=np.float64)
    k = np.arange(n)
    for u in range(taps):
        band[:, k + u, k] = w[:, u, None]
    return band


def extract_patches(obj: np.ndarray, positions: np.ndarray, n: int, margin: int = 12,
                    chunk: int = 128) -> np.ndarray:
    """Sub-pixel N×N patches of a complex object, centred at ``positions``.

    obj: (H, W) complex; positions: (M, 2) float [x, y] px (patch centres).
    Patch pixel (i, k) samples O at (y_j - N/2 + i, x_j - N/2 + k), an integer
    origin plus one fractional offset (fx, fy) ∈ [0, 1)² per patch. The fractional
    part is applied by separable Kaiser-windowed sinc interpolation
    (:func:`sinc_weights`, 2·``margin`` taps, so ``margin`` px of object are read
    beyond each side of the patch), as two batched banded matrix products.

    Why not :func:`fourier_shift` of a crop: a crop of a non-periodic object has
    jumps at its borders, whose ringing leaves a ~1.5 % rms error over the whole
    patch (measured, margin 8). The windowed sinc reproduces band-limited content
    (|frequency| ≤ 0.3 cycles/px) to ~1e-5 relative and is exact at integer
    positions; tests/test_physics.py measures and bounds the error against
    analytic shifts. Returns (M, N, N) complex128.
    Raises ValueError if a patch (with margin) leaves the object.
    """
    obj = np.asarray(obj)
    h, w = obj.shape
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    ox = pos[:, 0] - n / 2
    oy = pos[:, 1] - n / 2
    ix, iy = np.floor(ox).astype(np.int64), np.floor(oy).astype(np.int64)
    fx, fy = ox - ix, oy - iy
    s = n + 2 * margin
    if pos.size and (ix.min() - margin < 0 or iy.min() - margin < 0
                     or ix.max() - margin + s > w or iy.max() - margin + s > h):
        raise ValueError(f"positions: patches of {n} px (+{margin} px margin) leave the {h}x{w} object; "
                         f"x in [{pos[:, 0].min():.2f}, {pos[:, 0].max():.2f}], "
                         f"y in [{pos[:, 1].min():.2f}, {pos[:, 1].max():.2f}]")
    wx, wy = sinc_weights(fx, margin), sinc_weights(fy, margin)
    grid = np.arange(s - 1)  # taps 2·margin: rows/cols origin - margin + 1 .. origin + n - 1 + margin
    out = np.empty((len(pos), n, n), dtype=np.complex128)
    for a in range(0, len(pos), chunk):
        b = min(a + chunk, len(pos))
        rows = (iy[a:b, None] - margin + 1 + grid[None, :])[:, :, None]
        cols = (ix[a:b, None] - margin + 1 + grid[None, :])[:, None, :]
        crops = obj[rows, cols]  # (m, S-1, S-1)
        bx = _banded(wx[a:b], n)  # (m, S-1, n): interpolate along x (columns)
        byt = _banded(wy[a:b], n).transpose(0, 2, 1)  # (m, n, S-1): along y (rows)
        out[a:b].real = byt @ (crops.real @ bx)
        out[a:b].imag = byt @ (crops.imag @ bx)
    return out
