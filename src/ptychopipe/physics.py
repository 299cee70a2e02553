"""The forward model, written once for NumPy (simulation) and Keras (training).

docs/design.md, 'One forward model', asks for one implementation of the FFT convention, the sub-pixel
shift and the overlap merge, shared by the simulator and the differentiable
model. Every function here takes an ``ops`` namespace: :data:`NUMPY_OPS` (float64
NumPy, used by :mod:`ptychopipe.simulate`) or ``keras.ops`` (used by
:mod:`ptychopipe.model`, any Keras backend). Complex fields are carried as a pair
of real arrays ``(re, im)`` because ``keras.ops`` has no portable complex dtype;
``keras.ops.fft2`` takes and returns such pairs and NUMPY_OPS mirrors it.

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


#: Largest factor by which :func:`group_estimate`'s modulus projection scales a far-field
#: pixel (|measured| / |model|): it bounds the Lipschitz constant of the projection, without
#: which the momentum iterations diverge on groups whose members nearly coincide (measured
#: on quick gs2_ideal: 6 of 400 groups blew up at momentum 0.9 within 50 iterations).
MODULUS_GAIN_MAX = 10.0

#: Step of :func:`group_estimate` relative to its diagonal preconditioner. The Fourier-shift
#: crop/place of sub-pixel offsets is not diagonal, and at step 1 with momentum 0.8–0.9
#: some groups ran away (quick gs2_ideal: 6–31 of 400 within 50 iterations); at 0.5 none
#: did within 200 iterations at momentum 0.9, with the same accuracy after 50.
STEP = 0.5


def member_crop(offsets_x: Any, offsets_y: Any, s: int, n: int, like: Any, ops: Any = NUMPY_OPS) -> tuple[Any, Pair]:
    """Crop of a group canvas into its members' frames, and the shift ramp it uses.

    Returns (crop, (cos, sin)): crop(re, im) maps canvases (B, S, S) to (B, C, N, N),
    member c's pixel t being canvas pixel lo + o_c + t (lo = (S − N)/2; o_c from
    offsets_x/offsets_y (B, C), px; sub-pixel by Fourier shift, as
    :func:`merge_and_reextract`). The ramp (B, C, S, S) is returned for the adjoint.
    """
    lo = (s - n) // 2
    win = (Ellipsis, slice(lo, lo + n), slice(lo, lo + n))
    cs, sn = shift_ramp(s, s, -offsets_x, -offsets_y, like, ops)  # canvas → member frame

    def crop(re: Any, im: Any) -> Pair:
        fr, fi = ops.fft2((ops.expand_dims(re, 1), ops.expand_dims(im, 1)))  # (B, 1, S, S)
        out_r, out_i = ops.ifft2((fr * cs - fi * sn, fr * sn + fi * cs))
        return out_r[win], out_i[win]

    return crop, (cs, sn)


ESTIMATE_ALGORITHMS = ("gradient", "difference_map")
#: Difference map: damping of the overlap projection's denominator, in units of max|P|²
#: (unlit canvas pixels are pulled to the flat object 1 with this weight).
DM_DAMPING = 0.01


def group_estimate(amplitude: Any, offsets_x: Any, offsets_y: Any, probe: Pair, canvas: int,
                   iterations: int, momentum: float, *, algorithm: str, ops: Any = NUMPY_OPS,
                   tolerance: float = 0.0) -> Pair:
    """Known-probe ptychography of each group on its own canvas: the network's physics input.

    ``algorithm``: "gradient" (below) or "difference_map" (:func:`difference_map_estimate`,
    which ignores ``momentum``, and alone takes ``tolerance``: δ of its modulus projection
    Π, :func:`modulus_projection`, in input units, :func:`noise_tolerance`). The gradient
    algorithm projects onto the exact measured modulus: a tolerance made it worse at low
    dose (4-pattern test group at 1e4 photons, per-patch r 0.43 → 0.30).

    amplitude: (B, C, N, N) measured far-field amplitudes, in the units in which
    |far_field(probe·O)| = amplitude for the true patches O; offsets_x, offsets_y: (B, C)
    px, member centre minus group centre; probe: (re, im), each (N, N); canvas: side S of
    the group canvas (static, even, ≥ :func:`canvas_size`; unused for C = 1, where the
    canvas is the patch); iterations K ≥ 1; momentum β ∈ [0, 1).

    Starts from the flat object O = 1 and takes K preconditioned gradient steps on
    Σ_c ‖ψ_c − Π(ψ_c)‖² (ψ_c = P·crop_c(O), Π the projection onto the measured far-field
    amplitude), with Nesterov momentum:

        look = O + β·v;  ψ_c = P·crop_c(look);  Δ_c = Π(ψ_c) − ψ_c
        v ← β·v + h·Σ_c place_c(conj(P)·Δ_c) / (Σ_c place_c(|P|²) + max|P|²);  O ← O + v

    with h = :data:`STEP` (0.5).
    crop_c takes member c's N×N window of the canvas at its sub-pixel offset (Fourier
    shift, as :func:`merge_and_reextract`), place_c is its adjoint. With β = 0 and K = 1
    this is a damped error-reduction step: the measured amplitude with the probe's own
    far-field phase, propagated back and divided by the probe (a back-projection). The step's
    denominator is ≥ max|P|², so dim pixels move little and nothing is divided by ~0;
    pixels no member lights stay at 1. The modulus projection Π scales a far-field pixel
    by |measured|/|model|, but by at most :data:`MODULUS_GAIN_MAX` and, where the model's
    far field is below 1e-4 of its pattern's maximum, by less in proportion: there (outside
    an ideal probe's pupil at the flat start) the model's phase is round-off and must not
    decide the result.
    Groups never mix. Cost per iteration: 2·(C + 1) FFTs of S² (C + 1 each for crop and
    place), 2·C FFTs of N² for the far field (:func:`bench.estimate_transforms` counts them).
    Returns (re, im), each (B, C, N, N): the canvas re-extracted at every member.
    """
    if algorithm == "difference_map":
        return difference_map_estimate(amplitude, offsets_x, offsets_y, probe, canvas, iterations, ops, tolerance)
    if algorithm != "gradient":
        raise ValueError(f"model.estimate_algorithm: expected one of {list(ESTIMATE_ALGORITHMS)}, got {algorithm!r}")
    c = int(amplitude.shape[1])
    n = int(amplitude.shape[-1])
    pr, pi = probe
    p2 = pr * pr + pi * pi
    zero = 0.0 * amplitude[:, :1]  # (B, 1, N, N)
    if c == 1:
        s = n

        def crop(re: Any, im: Any) -> Pair:
            return ops.expand_dims(re, 1), ops.expand_dims(im, 1)

        def place(re: Any, im: Any) -> Pair:
            return re[:, 0], im[:, 0]
    else:
        s = int(canvas)
        lo = (s - n) // 2
        pad = [[0, 0], [0, 0], [lo, s - n - lo], [lo, s - n - lo]]
        crop, (cs, sn) = member_crop(offsets_x, offsets_y, s, n, amplitude, ops)

        def place(re: Any, im: Any) -> Pair:  # adjoint of crop: conjugate ramp, sum over members
            fr, fi = ops.fft2((ops.pad(re, pad), ops.pad(im, pad)))
            return ops.ifft2((ops.sum(fr * cs + fi * sn, axis=1), ops.sum(fi * cs - fr * sn, axis=1)))

    den, _ = place(p2 + 0.0 * amplitude, 0.0 * amplitude)
    den = ops.maximum(den, 0.0) + ops.max(p2)  # (B, S, S)
    ones = 1.0 + ops.pad(zero[:, 0], [[0, 0], [0, s - n], [0, s - n]])  # (B, S, S) of 1
    zeros = 0.0 * ones

    def step(_: Any, state: tuple) -> tuple:
        o_r, o_i, v_r, v_i = state
        x_r, x_i = crop(o_r + momentum * v_r, o_i + momentum * v_i)  # (B, C, N, N)
        e_r, e_i = pr * x_r - pi * x_i, pr * x_i + pi * x_r
        q_r, q_i = modulus_projection(e_r, e_i, amplitude, ops)
        d_r, d_i = q_r - e_r, q_i - e_i
        g_r, g_i = place(pr * d_r + pi * d_i, pr * d_i - pi * d_r)  # conj(P)·Δ
        v_r, v_i = momentum * v_r + STEP * g_r / den, momentum * v_i + STEP * g_i / den
        return o_r + v_r, o_i + v_i, v_r, v_i

    o_r, o_i, _, _ = ops.fori_loop(0, int(iterations), step, (ones, zeros, zeros, zeros))
    return crop(o_r, o_i)


def modulus_projection(e_r: Any, e_i: Any, amplitude: Any, ops: Any = NUMPY_OPS, tolerance: Any = 0.0) -> Pair:
    """Π: exit waves (..., N, N) whose far field lies within ``tolerance`` of the measured
    ``amplitude`` and keeps its own phase: the model's far-field modulus m is moved to the
    nearest value of [max(A − δ, 0), A + δ] (δ = ``tolerance``, input units; δ = 0: the
    measured A itself). A far-field pixel is scaled by at most :data:`MODULUS_GAIN_MAX`,
    and where the model's far field is below 1e-4 of its pattern's maximum by less in
    proportion (there its phase is round-off).

    Why a tolerance: A = a·sqrt(n) of Poisson counts n carries noise of standard deviation
    ≈ a/2 where the expected count is ≳ 1 (sqrt is variance-stabilising; less in darker
    pixels: 0.3·a at 0.1 counts), so forcing m = A exactly fits the noise. At low
    dose most pixels count 0, and the exact projection zeroes them; the difference map
    then loses the pattern's energy (quick, 1e4 photons: stitched estimate bias 0.23).
    Projecting onto the measurements' noise ball instead keeps it (0.98;
    :func:`noise_tolerance`)."""
    fr, fi = far_field(e_r, e_i, ops)
    mag = ops.sqrt(fr * fr + fi * fi)
    target = ops.minimum(ops.maximum(mag, ops.maximum(amplitude - tolerance, 0.0)), amplitude + tolerance)
    floor = ops.maximum(amplitude / MODULUS_GAIN_MAX, 1e-4 * ops.max(mag, axis=(-2, -1), keepdims=True))
    scale = target / ops.maximum(mag, floor + 1e-30)
    return inverse_far_field(fr * scale, fi * scale, ops)


def noise_tolerance(noise_sigmas: float, input_scale: float) -> float:
    """δ of :func:`modulus_projection` in network-input units: ``noise_sigmas`` standard
    deviations of the measured amplitude X = a·sqrt(n), i.e. noise_sigmas·a/2
    (a = ``input_scale``, normalize stage; sqrt of a Poisson count has std ≈ 1/2 for expected
    counts ≳ 1). One standard deviation keeps the amplitude bias within 0.987–1.000 over
    the quick dose sweep (1e4–1e9 photons per pattern; docs/results.md)."""
    return float(noise_sigmas) * 0.5 * float(input_scale)


def difference_map_estimate(amplitude: Any, offsets_x: Any, offsets_y: Any, probe: Pair, canvas: int,
                            iterations: int, ops: Any = NUMPY_OPS, tolerance: float = 0.0) -> Pair:
    """Known-probe difference map (Thibault et al. 2009) on each group's canvas.

    Same inputs and output as :func:`group_estimate`, without its ``momentum`` and
    ``algorithm`` (note the positions of ``ops`` and ``tolerance``). The state is the members' exit
    waves ψ_c (B, C, N, N); one iteration is

        O = overlap(ψ);  φ_c = P_c·crop_c(O);  ψ_c ← ψ_c + Π(2φ_c − ψ_c) − φ_c

    with Π the modulus projection (:func:`modulus_projection`, half-width ``tolerance``). ``overlap`` is the
    least-squares object of the exit waves,
    O = (Σ_c place_c(conj(P_c)·ψ_c) + d) / (Σ_c place_c(|P_c|²) + d), d = DM_DAMPING·max|P|²,
    which pulls unlit pixels to the flat object 1. Start ψ_c = P_c·crop_c(1); output
    overlap(ψ) re-extracted at every member's sub-pixel offset.

    The difference map needs ``overlap`` to be an exact projection, so crop_c must be a
    plain window: member c's offset o_c = q_c + f_c (q_c = floor(o_c)) is split into an
    integer window of the canvas at lo + q_c (a gather; place_c, its adjoint, is a
    scatter-add) and the member's probe P_c(t) = P(t − f_c) (a Fourier shift, once). The
    exit wave is then the true one shifted by f_c: the same far-field modulus up to the
    interpolation of a product (0.5–0.7 % for the shipped probes). With the object
    shifted instead (gradient algorithm), the diagonal ``overlap`` is only approximate and
    the difference map diverges (measured). Cost per iteration: 2·C FFTs of N² plus a
    gather and a scatter-add of C·N² values.

    With the exact modulus (``tolerance`` 0) it chases the Poisson noise below ~1e6 photons
    per pattern and the amplitude collapses (quick dose sweep: bias 0.26 at 1e4, 0.87 at
    1e5). With Π onto the measurements' noise ball (``tolerance`` one noise standard
    deviation) it keeps the bias at every dose (docs/results.md).
    """
    dm = difference_map_operators(amplitude, offsets_x, offsets_y, probe, canvas, ops)

    def step(_: Any, state: tuple) -> tuple:
        return dm.update(state, 1.0, tolerance)

    state = ops.fori_loop(0, int(iterations), step, dm.start)
    return dm.output(*dm.overlap(*state))


class DifferenceMapOperators(SimpleNamespace):
    """The pieces of the known-probe difference map on a batch of group canvases
    (:func:`difference_map_operators`): ``overlap(ψ_r, ψ_i)`` → canvas object (B, S, S);
    ``exit_waves(O_r, O_i)`` → ψ (B, C, N, N); ``project(e_r, e_i, tolerance)`` the modulus
    projection onto the group's measurements; ``update(state, relaxation, tolerance)`` one
    iteration; ``output(O_r, O_i)`` the canvas re-extracted at every member's sub-pixel
    offset (B, C, N, N); ``start`` the exit waves of the flat object 1; ``illumination``
    Σ_c place_c(|P_c|²) (B, S, S)."""


def difference_map_operators(amplitude: Any, offsets_x: Any, offsets_y: Any, probe: Pair, canvas: int,
                             ops: Any = NUMPY_OPS) -> DifferenceMapOperators:
    """Operators of :func:`difference_map_estimate` for these groups (same inputs), shared by
    it and the learned unrolled iterations (:class:`ptychopipe.model.UnrolledEstimate`).

    ``update(state, relaxation β, tolerance δ)``: with O = overlap(ψ), φ_c = P_c·crop_c(O),
    ψ_c ← ψ_c + β·(Π_δ(2φ_c − ψ_c) − φ_c); β = 1 is the difference map. ``update`` also takes
    ``prior``: a function (O_r, O_i) → (O_r, O_i) applied to the overlap object before the
    exit waves are formed (identity by default)."""
    c = int(amplitude.shape[1])
    n = int(amplitude.shape[-1])
    pr, pi = probe
    zero = 0.0 * amplitude  # (B, C, N, N)
    damping = DM_DAMPING * ops.max(pr * pr + pi * pi)
    if c == 1:
        s = n
        mpr, mpi = pr + zero, pi + zero

        def crop(re: Any, im: Any) -> Pair:
            return ops.expand_dims(re, 1), ops.expand_dims(im, 1)

        def place(x: Any) -> Any:
            return x[:, 0]

        final_crop = crop
    else:
        s = int(canvas)
        lo = (s - n) // 2
        qx, qy = ops.floor(offsets_x), ops.floor(offsets_y)  # (B, C)
        mpr, mpi = fourier_shift(pr + zero, pi + zero, offsets_x - qx, offsets_y - qy, ops)  # P(t − f_c)
        # flat index of canvas pixel (lo + q_c + t) of group b in the (B, S, S) stack, in
        # integers (float32 is exact only below 2^24, which B·S² passes at B ≈ 2000)
        batch = ops.cast(ops.cumsum(ops.ones_like(qx[:, :1]), axis=0) - 1.0, "int32")  # (B, 1): 0 .. B−1
        t = ops.convert_to_tensor(np.arange(n, dtype=np.int32), dtype="int32")
        rows = ops.expand_dims(ops.expand_dims(lo + ops.cast(qy, "int32") + s * batch, -1), -1) + ops.expand_dims(t, -1)
        cols = ops.expand_dims(ops.expand_dims(lo + ops.cast(qx, "int32"), -1), -1) + t
        index = rows * s + cols  # (B, C, N, N)
        flat_index = ops.reshape(index, (-1,))
        segments = ops.shape(amplitude)[0] * s * s

        def crop(re: Any, im: Any) -> Pair:
            return ops.take(ops.reshape(re, (-1,)), index), ops.take(ops.reshape(im, (-1,)), index)

        def place(x: Any) -> Any:  # adjoint of crop: sum the members' windows into the canvas
            return ops.reshape(ops.segment_sum(ops.reshape(x, (-1,)), flat_index, num_segments=segments), (-1, s, s))

        final_crop, _ = member_crop(offsets_x, offsets_y, s, n, amplitude, ops)

    illumination = ops.maximum(place(mpr * mpr + mpi * mpi), 0.0)  # (B, S, S)
    den = illumination + damping

    def overlap(ps_r: Any, ps_i: Any) -> Pair:
        g_r, g_i = place(mpr * ps_r + mpi * ps_i), place(mpr * ps_i - mpi * ps_r)  # Σ place(conj(P_c)·ψ_c)
        return (g_r + damping) / den, g_i / den

    def exit_waves(o_r: Any, o_i: Any) -> Pair:
        x_r, x_i = crop(o_r, o_i)
        return mpr * x_r - mpi * x_i, mpr * x_i + mpi * x_r

    def project(e_r: Any, e_i: Any, tolerance: Any) -> Pair:
        return modulus_projection(e_r, e_i, amplitude, ops, tolerance)

    def update(state: Pair, relaxation: Any, tolerance: Any, prior: Any = None) -> Pair:
        ps_r, ps_i = state
        o = overlap(ps_r, ps_i)
        f_r, f_i = exit_waves(*(o if prior is None else prior(*o)))
        q_r, q_i = project(2.0 * f_r - ps_r, 2.0 * f_i - ps_i, tolerance)
        return ps_r + relaxation * (q_r - f_r), ps_i + relaxation * (q_i - f_i)

    ones = 1.0 + ops.pad(zero[:, 0], [[0, 0], [0, s - n], [0, s - n]])  # (B, S, S) of 1
    return DifferenceMapOperators(overlap=overlap, exit_waves=exit_waves, project=project, update=update,
                                  output=final_crop, start=exit_waves(ones, 0.0 * ones), illumination=illumination,
                                  canvas=s)


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
