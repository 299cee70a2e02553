"""The reconstruction solvers: known-probe ptychography of one group on its own canvas.

What belongs here: the iterative algorithms that invert the forward model of
:mod:`ptychopipe.physics` for a group of overlapping patterns: preconditioned gradient
descent with Nesterov momentum and the exit-wave difference map (:func:`group_estimate`),
their modulus projection with a noise tolerance, and the difference map's pieces
(:func:`difference_map_operators`) that the learned unrolled estimate reuses. They are the
network's physics input layer (:class:`ptychopipe.network.GroupEstimate`,
:class:`ptychopipe.network.UnrolledEstimate`). Like the forward model, every function takes an
``ops`` namespace (:data:`ptychopipe.physics.NUMPY_OPS` or ``keras.ops``) and carries complex
fields as (re, im) pairs.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from .physics import NUMPY_OPS, Pair, far_field, fourier_shift, inverse_far_field, shift_ramp


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
    place), 2·C FFTs of N² for the far field (:func:`benchmarks.throughput.estimate_transforms` counts them).
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
    it and the learned unrolled iterations (:class:`ptychopipe.network.UnrolledEstimate`).

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
