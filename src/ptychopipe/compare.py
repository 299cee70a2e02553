"""compare stage: the stitched reconstruction against the true object.

Alignment (docs/design.md, 'Comparison and ambiguities'). The stitched canvas carries its origin in object
coordinates, so the truth is cropped onto the canvas grid directly: no
registration (unless ``compare.register`` is set). The only ambiguity removed
is the global phase offset φ₀ = arg Σ Ô·conj(O) over the evaluation mask (the
least-squares optimal constant phase); a global amplitude factor is never
removed, it is reported as the amplitude bias mean|Ô| / mean|O|.

Evaluation mask: canvas pixels inside the truth object whose coverage (Σ of the
stitch weights) is at least ``compare.coverage_threshold`` × the median coverage
of the covered canvas pixels: the well-covered part of the test region.

Metrics, for amplitude |Ô| vs |O| (object amplitude units) and for phase
(rad; the reconstruction's phase unwrapped relative to the truth, i.e.
arg O + wrap(arg Ô − arg O − φ₀)), all over the mask: MAE, RMSE, Pearson r,
SSIM (scikit-image, 7×7 windows lying wholly inside the mask), PSNR (dB, peak =
the truth's range over the mask), the least-squares scalar β = Σ x̂x / Σ x²
(x̂ ≈ β·x; 1 = no scale error) and the FRC (:func:`frc_curve`).

The stage-ratio chain (:func:`chain_entries`, then :func:`ratio_chain`) follows the mean amplitude
from the raw data to the truth through the artifacts' telemetry and names the
first stage that departs from its contract; its last link, ``phase``, is the phase
contrast kept (the phase's least-squares scale against the truth), so a reconstruction
whose phase is compressed is flagged even where its phase r is high.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt
from scipy.ndimage import shift as ndimage_shift

from .artifacts import (Array, ArtifactError, json_safe, read_attrs, read_group_indices,
                        read_pattern_mean_amplitude, read_stitched, read_telemetry, read_train_history,
                        read_truth_object, save_figure, write_artifact, write_comparison_json)
from .config import CompareConfig, config_hash, to_dict
from .physics import fourier_shift

STAGE = "compare"
FRC_TAPER_PX = 8.0  # width of the cosine taper of the FRC window at the mask boundary (px)
SSIM_WIN = 7  # SSIM window side (px), scikit-image's default


# --------------------------------------------------------------------------- alignment


def truth_on_canvas(truth: np.ndarray, origin_x: int, origin_y: int,
                    shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Crop the truth object onto the canvas grid.

    truth: (H, W) complex [object amplitude]; canvas pixel (r, c) is object pixel
    (origin_y + r, origin_x + c); shape: (h, w) of the canvas.
    Returns (truth on canvas (h, w) complex128, 0 outside the object; inside (h, w)
    bool, True where the canvas pixel lies in the object).
    """
    h, w = shape
    H, W = truth.shape
    out = np.zeros((h, w), dtype=np.complex128)
    inside = np.zeros((h, w), dtype=bool)
    r0, r1 = max(0, -origin_y), min(h, H - origin_y)
    c0, c1 = max(0, -origin_x), min(w, W - origin_x)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = truth[origin_y + r0:origin_y + r1, origin_x + c0:origin_x + c1]
        inside[r0:r1, c0:c1] = True
    return out, inside


def evaluation_mask(coverage: np.ndarray, inside: np.ndarray, threshold: float,
                    window: int = 1) -> tuple[np.ndarray, float]:
    """Well-covered pixels: inside & coverage > 0 & coverage ≥ threshold × median(coverage > 0).

    coverage: (h, w) float, Σ w per pixel; inside: (h, w) bool. Returns (mask (h, w)
    bool, the median coverage). Raises ValueError when no pixel qualifies, or when no
    ``window`` × ``window`` block of them does (the SSIM window, for a mask that is scored
    by :func:`masked_ssim`).
    """
    covered = coverage > 0
    if not np.any(covered & inside):
        raise ValueError("coverage: no covered canvas pixel lies inside the truth object; "
                         "expected the stitched canvas to overlap the object")
    med = float(np.median(coverage[covered]))
    mask = inside & covered & (coverage >= threshold * med)
    if not np.any(mask):
        raise ValueError(f"compare.coverage_threshold: {threshold} x median coverage {med:.4g} leaves "
                         "no pixel to evaluate; expected a lower threshold")
    if window > 1 and not np.any(_windows_inside(mask, window)):
        raise ValueError(f"compare.coverage_threshold: {threshold} x median coverage {med:.4g} leaves "
                         f"{int(mask.sum())} pixels but no {window}x{window} block of them (the SSIM window); "
                         "expected a lower threshold or a larger test region")
    return mask, med


def _windows_inside(mask: np.ndarray, window: int) -> np.ndarray:
    """Pixels whose whole window × window neighbourhood lies in ``mask``, (h, w) bool."""
    return binary_erosion(mask, structure=np.ones((window, window), bool), border_value=0)


def global_phase_offset(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """φ₀ = arg Σ_mask Ô·conj(O) (rad): the constant phase minimising Σ|Ô e^{-iφ₀} − O|²."""
    return float(np.angle(np.sum(recon[mask] * np.conj(truth[mask]))))


def relative_phase(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """arg O + wrap(arg Ô − arg O) (rad): the reconstruction's phase, unwrapped relative to
    the truth so that phase differences are wrapped to (−π, π]. Shapes equal; float64."""
    return np.angle(truth) + np.angle(recon * np.conj(truth))


def register_shift(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray,
                   upsample_factor: int = 20) -> tuple[float, float]:
    """Sub-pixel translation (dx, dy) px that moves ``recon`` onto ``truth`` (only used when
    ``compare.register`` is set): skimage.registration.phase_cross_correlation of the
    mean-subtracted, boundary-tapered complex images over the mask's bounding box
    (plain cross-correlation, ``normalization=None``). Apply with
    :func:`~ptychopipe.physics.fourier_shift` (out(r) = in(r − d))."""
    from skimage.registration import phase_cross_correlation

    win = _taper(mask)
    box = _bbox(mask)
    a = (truth - np.sum(win * truth) / np.sum(win)) * win
    b = (recon - np.sum(win * recon) / np.sum(win)) * win
    shift, _, _ = phase_cross_correlation(a[box], b[box], upsample_factor=upsample_factor, normalization=None)
    return float(shift[1]), float(shift[0])


def shift_image(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Fourier shift of a (h, w) real or complex image by (dx, dy) px (periodic);
    complex128 (real input: take ``.real``)."""
    sr, si = fourier_shift(np.real(img).astype(np.float64), np.imag(img).astype(np.float64),
                           np.asarray(dx, dtype=np.float64), np.asarray(dy, dtype=np.float64))
    return sr + 1j * si


# --------------------------------------------------------------------------- metrics
# est, ref: real float arrays of one shape (h, w) in the same units (object amplitude or
# rad); mask: bool (h, w), the pixels that count. Errors are est − ref.


def _bbox(mask: np.ndarray) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def mae(est: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error over the mask (units of the images)."""
    return float(np.mean(np.abs(est[mask] - ref[mask])))


def rmse(est: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Root-mean-square error over the mask (units of the images)."""
    return float(np.sqrt(np.mean((est[mask] - ref[mask]) ** 2)))


def pearson_r(est: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation over the mask; NaN when either image is constant there."""
    a = est[mask] - est[mask].mean()
    b = ref[mask] - ref[mask].mean()
    den = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    return float(np.sum(a * b)) / den if den > 0 else float("nan")


def psnr(est: np.ndarray, ref: np.ndarray, mask: np.ndarray, data_range: float) -> float:
    """10·log10(data_range² / MSE) dB over the mask; +inf when the images agree exactly."""
    mse = float(np.mean((est[mask] - ref[mask]) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ls_scale(est: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """β = Σ x̂·x / Σ x² over the mask: the scalar minimising Σ(x̂ − β·x)², i.e. est ≈ β·ref."""
    den = float(np.sum(ref[mask] ** 2))
    return float(np.sum(est[mask] * ref[mask])) / den if den > 0 else float("nan")


def masked_ssim(est: np.ndarray, ref: np.ndarray, mask: np.ndarray, data_range: float,
                win_size: int = SSIM_WIN) -> float:
    """Mean SSIM (skimage.metrics.structural_similarity, ``win_size`` windows, given
    ``data_range``) over the pixels whose whole window lies inside the mask. Raises
    ValueError when no window fits in the mask (:func:`evaluation_mask` with
    ``window=SSIM_WIN`` refuses such masks first)."""
    from skimage.metrics import structural_similarity

    inner = _windows_inside(mask, win_size)
    if not np.any(inner):
        raise ValueError(f"SSIM: the mask ({int(mask.sum())} pixels) holds no whole {win_size}x{win_size} window")
    box = _bbox(mask)
    e, r = est[box].astype(np.float64), ref[box].astype(np.float64)
    e = np.where(mask[box], e, r)  # values outside the mask never enter a counted window
    _, smap = structural_similarity(r, e, win_size=win_size, data_range=data_range, full=True)
    return float(np.mean(smap[inner[box]]))


def _taper(mask: np.ndarray, width: float = FRC_TAPER_PX) -> np.ndarray:
    """Soft window: 0 outside the mask, rising as a half cosine to 1 over ``width`` px
    (Euclidean distance from the mask boundary). (h, w) float64."""
    d = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(d / width, 0.0, 1.0))


@dataclass(frozen=True)
class FRC:
    """A Fourier ring correlation curve and its cutoff.

    frequency (R,) cycles/px (ring centres, k / min(h, w), up to 0.5); frc (R,);
    threshold (R,); n_pixels (R,) Fourier pixels per ring; cutoff: first crossing of
    the threshold below it (cycles/px, linear interpolation; the last ring's
    frequency, 0.5 for an even box, when it never crosses); resolution_px = 1 / cutoff; crossed: whether it crossed.
    """

    frequency: np.ndarray
    frc: np.ndarray
    threshold: np.ndarray
    n_pixels: np.ndarray
    cutoff: float
    resolution_px: float
    crossed: bool


def frc_threshold_curve(n_pixels: np.ndarray, kind: str) -> np.ndarray:
    """FRC threshold per ring: ``"half_bit"`` (van Heel & Schatz 2005:
    (0.2071 + 1.9102/√n) / (1.2071 + 0.9102/√n), n = pixels in the ring) or ``"0.5"``."""
    n = np.maximum(np.asarray(n_pixels, dtype=np.float64), 1.0)
    if kind == "half_bit":
        s = np.sqrt(n)
        return (0.2071 + 1.9102 / s) / (1.2071 + 0.9102 / s)
    if kind == "0.5":
        return np.full(n.shape, 0.5)
    raise ValueError(f"compare.frc_threshold: expected 'half_bit' or '0.5', got {kind!r}")


def frc_cutoff(frequency: np.ndarray, curve: np.ndarray, threshold: np.ndarray) -> tuple[float, bool]:
    """Where the FRC first drops below the threshold (cycles/px).

    Ring 0 (the mean, removed before the FFT) carries no information and is skipped.
    First ring k ≥ 1 with curve < threshold: for k ≥ 2 the crossing is interpolated
    linearly between rings k−1 and k; for k = 1 it is frequency[1] (no correlation
    even at the lowest measurable frequency: resolution = the box size). A NaN ring
    (no power) counts as below the threshold. Returns (cutoff, crossed);
    (frequency[-1], False) when the curve never crosses.
    """
    diff = curve - threshold
    for k in range(1, len(curve)):
        if not np.isfinite(diff[k]) or diff[k] < 0:
            if k == 1 or not np.isfinite(diff[k]):
                return float(frequency[k]), True
            t = diff[k - 1] / (diff[k - 1] - diff[k])
            return float(frequency[k - 1] + t * (frequency[k] - frequency[k - 1])), True
    return float(frequency[-1]), False


def frc_curve(est: np.ndarray, ref: np.ndarray, mask: np.ndarray, kind: str = "half_bit") -> FRC:
    """FRC between two real (h, w) images over the mask.

    Both images are reduced to the mask's bounding box, their window-weighted means
    removed, and multiplied by the boundary taper (:func:`_taper`, 8 px). Rings
    are 1/L wide (L = min side of the box), centred at k/L cycles/px, k = 0..L/2.
    FRC_k = Re Σ F̂F* / √(Σ|F̂|² Σ|F|²) over ring k (NaN for an empty-power ring).
    """
    box = _bbox(mask)
    win = _taper(mask)[box]
    a, b = est[box].astype(np.float64), ref[box].astype(np.float64)
    sw = float(win.sum())
    a = (a - float(np.sum(win * a)) / sw) * win
    b = (b - float(np.sum(win * b)) / sw) * win
    h, w = a.shape
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    length = min(h, w)
    r = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    ring = np.rint(r * length).astype(np.int64)
    n_rings = length // 2 + 1
    keep = ring < n_rings
    idx = ring[keep]
    num = np.bincount(idx, weights=np.real(fa * np.conj(fb))[keep], minlength=n_rings)
    pa = np.bincount(idx, weights=(np.abs(fa) ** 2)[keep], minlength=n_rings)
    pb = np.bincount(idx, weights=(np.abs(fb) ** 2)[keep], minlength=n_rings)
    npx = np.bincount(idx, minlength=n_rings).astype(np.int64)
    den = np.sqrt(pa * pb)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    freq = np.arange(n_rings) / length
    thr = frc_threshold_curve(npx, kind)
    cutoff, crossed = frc_cutoff(freq, curve, thr)
    res = 1.0 / cutoff if cutoff > 0 else float("inf")
    return FRC(freq, curve, thr, npx, cutoff, res, crossed)


def image_metrics(est: np.ndarray, ref: np.ndarray, mask: np.ndarray, frc_kind: str) -> tuple[dict[str, Any], FRC]:
    """All metrics of one real image pair over the mask (keys :data:`ptychopipe.artifacts.METRIC_KEYS`).

    data_range (SSIM, PSNR) = max − min of ``ref`` over the mask (the truth's range,
    so the reconstruction cannot move its own yardstick; 1.0 where the truth is constant
    over the mask).
    """
    vals = ref[mask]
    data_range = float(vals.max() - vals.min()) or 1.0
    f = frc_curve(est, ref, mask, frc_kind)
    return {
        "mae": mae(est, ref, mask),
        "rmse": rmse(est, ref, mask),
        "pearson_r": pearson_r(est, ref, mask),
        "ssim": masked_ssim(est, ref, mask, data_range),
        "psnr_db": psnr(est, ref, mask, data_range),
        "ls_scale": ls_scale(est, ref, mask),
        "frc_cutoff_cycles_per_px": f.cutoff,
        "frc_resolution_px": f.resolution_px,
        "frc_crossed": f.crossed,
    }, f


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate` on the canvas grid (h, w).

    amplitude_truth/recon (h, w) float64 [object amplitude]; phase_truth/recon (h, w)
    float64 [rad] (recon: offset removed, unwrapped relative to the truth); mask (h, w)
    bool; phase_offset_rad; shift_px (dx, dy) applied by registration ((0, 0) when
    off); amplitude_bias = mean|Ô| / mean|O| over the mask; metrics {"amplitude",
    "phase"}; frc {"amplitude", "phase"}; coverage_median.
    """

    amplitude_truth: np.ndarray
    amplitude_recon: np.ndarray
    phase_truth: np.ndarray
    phase_recon: np.ndarray
    mask: np.ndarray
    phase_offset_rad: float
    shift_px: tuple[float, float]
    amplitude_bias: float
    metrics: dict[str, dict[str, Any]]
    frc: dict[str, FRC]
    coverage_median: float


def evaluate(recon: np.ndarray, coverage: np.ndarray, truth: np.ndarray, origin_x: int, origin_y: int,
             cfg: CompareConfig) -> Evaluation:
    """Score a stitched reconstruction against the truth (module docstring).

    recon: (h, w) complex [object amplitude], the stitched canvas; coverage: (h, w)
    float Σ w; truth: (H, W) complex object; (origin_x, origin_y): object
    coordinates of canvas pixel (0, 0).
    """
    recon = np.asarray(recon, dtype=np.complex128)
    coverage = np.asarray(coverage, dtype=np.float64)
    t, inside = truth_on_canvas(np.asarray(truth), origin_x, origin_y, recon.shape)
    mask, med = evaluation_mask(coverage, inside, cfg.coverage_threshold, SSIM_WIN)
    shift = (0.0, 0.0)
    if cfg.register:
        shift = register_shift(recon, t, mask)
        recon = shift_image(recon, *shift)
        # the coverage moves with the reconstruction, by linear interpolation: a Fourier shift
        # would ring over the whole canvas and count every pixel as a little covered
        coverage = ndimage_shift(coverage, (shift[1], shift[0]), order=1, mode="constant", cval=0.0)
        mask, med = evaluation_mask(coverage, inside, cfg.coverage_threshold, SSIM_WIN)
    phi0 = global_phase_offset(recon, t, mask)
    recon = recon * np.exp(-1j * phi0)
    amp_t, amp_r = np.abs(t), np.abs(recon)
    ph_t, ph_r = np.angle(t), relative_phase(recon, t)
    m_amp, f_amp = image_metrics(amp_r, amp_t, mask, cfg.frc_threshold)
    m_ph, f_ph = image_metrics(ph_r, ph_t, mask, cfg.frc_threshold)
    bias = float(amp_r[mask].mean() / amp_t[mask].mean())
    return Evaluation(amp_t, amp_r, ph_t, ph_r, mask, phi0, shift, bias,
                      {"amplitude": m_amp, "phase": m_ph}, {"amplitude": f_amp, "phase": f_ph}, med)


# --------------------------------------------------------------------------- stage-ratio chain

#: The chain raw -> grouped -> normalized -> prediction -> stitched -> truth: (stage, what the
#: ratio is, its contract). The normalized contract is the input scale a recorded by normalize.
CHAIN_CONTRACTS: tuple[tuple[str, str, str], ...] = (
    ("raw", "mean measured counts per pattern / nphotons (simulated.h5)", "1"),
    ("grouped", "mean test-group amplitude (grouped.h5) / mean raw amplitude of the same patterns "
                "(simulated.h5)", "1"),
    ("normalized", "mean test input / mean test-group amplitude (normalized.h5 / grouped.h5)",
     "a (input_scale)"),
    ("prediction", "mean predicted counts / mean measured counts (inferred.h5)", "1"),
    ("stitched", "Σ coverage·|stitched| / Σ_j Σ w_j·|Ô_j|: amplitude kept by the overlap average (stitched.h5)",
     "1"),
    ("truth", "mean|Ô| / mean|O| over the evaluation mask (amplitude bias)", "1"),
    ("phase", "least-squares scale of the reconstructed phase against the true phase over the evaluation mask "
              "(phase contrast kept)", "1"),
)
#: Links that follow the phase rather than the amplitude: their cumulative values are their own.
PHASE_LINKS = frozenset({"phase"})


@dataclass(frozen=True)
class ChainLink:
    """One stage of the ratio chain: ratio and contract (dimensionless unless noted),
    relative = ratio / contract, cumulative = Π ratios so far, cumulative_relative =
    Π relatives so far, broken = |relative − 1| > tolerance or not finite."""

    stage: str
    quantity: str
    ratio: float
    contract: float
    relative: float
    cumulative: float
    cumulative_relative: float
    broken: bool


def ratio_chain(entries: Sequence[tuple[str, str, float, float]], tolerance: float
                ) -> tuple[list[ChainLink], str | None]:
    """Build the chain from (stage, quantity, ratio, contract) entries in pipeline order.

    A link of :data:`PHASE_LINKS` measures the phase, not the amplitude: its cumulative
    values start afresh. Returns (links, name of the first broken stage or None).
    """
    links: list[ChainLink] = []
    cum, cum_rel = 1.0, 1.0
    first: str | None = None
    for stage, quantity, ratio, contract in entries:
        if stage in PHASE_LINKS:
            cum, cum_rel = 1.0, 1.0
        rel = ratio / contract if contract else float("nan")
        cum *= ratio
        cum_rel *= rel
        broken = not math.isfinite(rel) or abs(rel - 1.0) > tolerance
        if broken and first is None:
            first = stage
        links.append(ChainLink(stage, quantity, float(ratio), float(contract), float(rel), float(cum),
                               float(cum_rel), bool(broken)))
    return links, first


def _ratio_or_attr(path: str | Path, name: str) -> float:
    _, ratios = read_telemetry(path)
    if name in ratios:
        return float(ratios[name])
    attrs = read_attrs(path)
    if name in attrs:
        return float(attrs[name])
    raise ArtifactError(f"{path}: {name}: expected a telemetry ratio_{name} or a root attribute, found neither")


def _mean(path: str | Path, array: str) -> float:
    stats, _ = read_telemetry(path)
    if array not in stats or "mean" not in stats[array]:
        raise ArtifactError(f"{path}: telemetry/{array}: expected its statistics (mean), found arrays {sorted(stats)}")
    return float(stats[array]["mean"])


def raw_mean_amplitude(simulated: str | Path, grouped: str | Path) -> float:
    """Mean raw amplitude sqrt(n) [photons^0.5] over exactly the patterns of the test groups
    (grouped.h5 ``test/indices``, repeats counted), read from simulated.h5 ``amplitude``.

    The scan-wide mean in simulated.h5's telemetry is not the right reference: the mean
    of a subset of patterns differs from the scan's by the object's local contrast
    (6 % on the ci preset, gs2_ideal), which a 5 % tolerance would flag as broken.
    """
    return float(read_pattern_mean_amplitude(simulated, read_group_indices(grouped, "test")).mean())


def chain_entries(simulated: str | Path, grouped: str | Path, normalized: str | Path, inferred: str | Path,
                  stitched: str | Path, amplitude_bias: float | None,
                  phase_scale: float | None = None) -> list[tuple[str, str, float, float]]:
    """The chain's (stage, quantity, ratio, contract) entries in pipeline order, from the
    artifacts' telemetry (and, for the grouped link's reference, :func:`raw_mean_amplitude`).

    ``amplitude_bias`` None (imported data, no true object) keeps only the links that need
    neither the simulated dose nor the truth: grouped, normalized, prediction, stitched.
    ``phase_scale`` (the phase's least-squares scale against the truth) adds the phase link.
    """
    grp_amp = _mean(grouped, "test/amplitude")
    links = {
        "grouped": (grp_amp / raw_mean_amplitude(simulated, grouped), 1.0),
        "normalized": (_mean(normalized, "test/inputs") / grp_amp, _ratio_or_attr(normalized, "input_scale")),
        "prediction": (_ratio_or_attr(inferred, "predicted_over_measured_counts"), 1.0),
        "stitched": (_ratio_or_attr(stitched, "stitched_over_inferred"), 1.0),
    }
    if amplitude_bias is not None:
        links["raw"] = (_ratio_or_attr(simulated, "measured_over_expected"), 1.0)
        links["truth"] = (amplitude_bias, 1.0)
    if phase_scale is not None:
        links["phase"] = (phase_scale, 1.0)
    return [(stage, quantity, *links[stage]) for stage, quantity, _ in CHAIN_CONTRACTS if stage in links]


def nan_status(train_status: str, artifacts: Mapping[str, str | Path]) -> str:
    """"ok", or what is wrong: the train stage's NaN guard message and the NaN/Inf counts
    of every array in the given artifacts' telemetry ({label: path})."""
    problems = [] if train_status == "ok" else [f"train: {train_status}"]
    for label, path in artifacts.items():
        stats, _ = read_telemetry(path)
        for name, st in stats.items():
            nan, inf = int(st.get("nan", 0) or 0), int(st.get("inf", 0) or 0)
            if nan or inf:
                problems.append(f"{label}:{name}: {nan} NaN, {inf} Inf")
    return "ok" if not problems else "; ".join(problems)


# --------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_truth_recon_error(truth: np.ndarray, recon: np.ndarray, mask: np.ndarray, path: str | Path,
                           title: str, units: str, error: np.ndarray | None = None) -> None:
    """Three panels over the mask's bounding box: truth, reconstruction (one shared colour
    scale) and the error (symmetric diverging scale), each with a colour bar labelled
    ``units``; pixels outside the mask are grey. ``error`` defaults to reconstruction −
    truth; pass it to show another one (the phase's wrapped difference)."""
    plt = _pyplot()
    box = _bbox(mask)
    m = ~mask[box]
    err = (recon - truth) if error is None else error
    t = np.ma.array(truth[box], mask=m)
    r = np.ma.array(recon[box], mask=m)
    e = np.ma.array(err[box], mask=m)
    lo = min(float(t.min()), float(np.percentile(recon[mask], 0.5)))
    hi = max(float(t.max()), float(np.percentile(recon[mask], 99.5)))
    emax = float(np.abs(err[mask]).max()) or 1e-12
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
    for ax, img, name, kw in ((axes[0], t, "truth", dict(vmin=lo, vmax=hi, cmap="gray")),
                              (axes[1], r, "reconstruction", dict(vmin=lo, vmax=hi, cmap="gray")),
                              (axes[2], e, "reconstruction − truth", dict(vmin=-emax, vmax=emax, cmap="RdBu_r"))):
        cmap = plt.get_cmap(kw.pop("cmap")).with_extremes(bad="0.75")
        im = ax.imshow(img, cmap=cmap, interpolation="nearest", **kw)
        ax.set_title(name)
        ax.set_xlabel("x (px, canvas)")
        ax.set_ylabel("y (px, canvas)")
        fig.colorbar(im, ax=ax, shrink=0.85, label=units)
    fig.suptitle(title)
    save_figure(fig, path)


def plot_frc(frcs: Mapping[str, FRC], path: str | Path, title: str, kind: str) -> None:
    """FRC curves (one per entry) with the threshold and each cutoff marked (ring 0, the
    removed mean, is not drawn)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for (name, f), colour in zip(frcs.items(), ("C0", "C1", "C2", "C3")):
        ax.plot(f.frequency[1:], f.frc[1:], color=colour,
                label=f"{name}: cutoff {f.cutoff:.3f} cyc/px ({f.resolution_px:.1f} px)"
                      + ("" if f.crossed else ", no crossing"))
        ax.axvline(f.cutoff, color=colour, ls=":", lw=1)
    first = next(iter(frcs.values()))
    ax.plot(first.frequency[1:], first.threshold[1:], color="k", ls="--",
            label="half-bit threshold" if kind == "half_bit" else "0.5 threshold")
    ax.set_xlim(0, 0.5)
    ax.set_ylim(-0.2, 1.05)
    ax.set_xlabel("spatial frequency (cycles/px)")
    ax.set_ylabel("FRC (reconstruction vs truth)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_training(history: Mapping[str, np.ndarray], path: str | Path, title: str) -> None:
    """Training curves: loss and val_loss per epoch (log axis when positive) and the
    learning rate."""
    plt = _pyplot()
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for key, style in (("loss", "-o"), ("val_loss", "-s")):
        v = np.asarray(history[key], dtype=np.float64)
        if np.any(np.isfinite(v)):
            a0.plot(epochs, v, style, ms=3, label=key)
    vals = np.concatenate([np.asarray(history[k], float) for k in ("loss", "val_loss")])
    vals = vals[np.isfinite(vals)]
    if vals.size and np.all(vals > 0):
        a0.set_yscale("log")
    a0.set_xlabel("epoch")
    a0.set_ylabel("Poisson NLL / mean count")
    a0.legend()
    a0.grid(alpha=0.3)
    a1.plot(epochs, history["learning_rate"], "-o", ms=3)
    a1.set_yscale("log")
    a1.set_xlabel("epoch")
    a1.set_ylabel("learning rate")
    a1.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for ax in (a0, a1):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    save_figure(fig, path)


# --------------------------------------------------------------------------- stage


def _attr(attrs: Mapping[str, Any], key: str, cast: type, default: Any) -> Any:
    v = attrs.get(key, default)
    if isinstance(v, bytes):
        v = v.decode()
    try:
        return cast(v.item() if hasattr(v, "item") else v)
    except (TypeError, ValueError):
        return default


def training_summary(hist: Any) -> dict[str, Any]:
    """The train stage's figures for comparison.json: train_seconds, samples_per_second,
    epochs_run and nan_status (from train.h5 attrs; NaN/"unknown" when absent, except
    epochs_run, which then falls back to the length of the loss history)."""
    return {
        "train_seconds": _attr(hist.attrs, "train_seconds", float, float("nan")),
        "samples_per_second": _attr(hist.attrs, "samples_per_second", float, float("nan")),
        "epochs_run": _attr(hist.attrs, "epochs_run", int, len(hist.history["loss"])),
        "nan_status": _attr(hist.attrs, "nan_status", str, "unknown"),
    }


def model_scenario(inferred: str | Path, scenario: str) -> str:
    """The scenario whose trained model reconstructed ``inferred`` (infer.model_from), as
    inferred.h5 records it (``scenario`` itself for files that predate the record)."""
    return str(read_attrs(inferred).get("model_scenario", scenario))


def run(cfg: CompareConfig, scenario: str, *, simulated: str | Path, grouped: str | Path,
        normalized: str | Path, inferred: str | Path, stitched: str | Path, train: str | Path,
        out: str | Path, json: str | Path, amplitude_png: str | Path, phase_png: str | Path,
        frc_png: str | Path, training_png: str | Path) -> None:
    """Stage entry point: write comparison.h5, comparison.json and four PNG figures."""
    st = read_stitched(stitched)
    truth = read_truth_object(simulated)
    if truth is None:  # imported data without a true object: data-space metrics only
        return run_data_only(cfg, scenario, st=st, simulated=simulated, grouped=grouped, normalized=normalized,
                             inferred=inferred, stitched=stitched, train=train, out=out, json=json,
                             amplitude_png=amplitude_png, phase_png=phase_png, frc_png=frc_png,
                             training_png=training_png)
    hist = read_train_history(train)
    try:
        ev = evaluate(st.object, st.coverage, truth, st.origin_x, st.origin_y, cfg)
    except ValueError as exc:  # the canvas does not meet the object, or leaves nothing to score
        raise ArtifactError(f"{stitched} (canvas {st.object.shape[0]}x{st.object.shape[1]} at object pixel "
                            f"x={st.origin_x}, y={st.origin_y}) against {simulated} (object "
                            f"{truth.shape[0]}x{truth.shape[1]}): {exc}") from None
    links, first = ratio_chain(chain_entries(simulated, grouped, normalized, inferred, stitched,
                                             ev.amplitude_bias, ev.metrics["phase"]["ls_scale"]),
                               cfg.ratio_tolerance)
    training = training_summary(hist)
    status = nan_status(training["nan_status"], {"inferred": inferred, "stitched": stitched})
    figures = {"amplitude": amplitude_png, "phase": phase_png, "frc": frc_png, "training": training_png}
    for p in figures.values():
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    phase_err = np.angle(np.exp(1j * (ev.phase_recon - ev.phase_truth)))
    plot_truth_recon_error(ev.amplitude_truth, ev.amplitude_recon, ev.mask, amplitude_png,
                           f"{scenario}: amplitude (bias {ev.amplitude_bias:.3f}, "
                           f"r {ev.metrics['amplitude']['pearson_r']:.3f})", "object amplitude")
    plot_truth_recon_error(ev.phase_truth, ev.phase_recon, ev.mask, phase_png,
                           f"{scenario}: phase (global offset {ev.phase_offset_rad:+.3f} rad removed, "
                           f"r {ev.metrics['phase']['pearson_r']:.3f})", "rad", error=phase_err)
    plot_frc(ev.frc, frc_png, f"{scenario}: Fourier ring correlation", cfg.frc_threshold)
    plot_training(hist.history, training_png, f"{scenario}: training ({training['epochs_run']} epochs, "
                                              f"{training['train_seconds']:.1f} s)")
    summary = {
        "scenario": scenario,
        "config": to_dict(cfg),
        "config_hash": config_hash(cfg),
        "n_pixels": int(ev.mask.sum()),
        "coverage_median": ev.coverage_median,
        "origin": [st.origin_x, st.origin_y],
        "phase_offset_rad": ev.phase_offset_rad,
        "registration": {"enabled": cfg.register, "shift_px": list(ev.shift_px)},
        "amplitude_bias": ev.amplitude_bias,
        "metrics": ev.metrics,
        "frc_threshold": cfg.frc_threshold,
        "chain": [asdict(link) for link in links],
        "first_broken": first,
        "training": training,
        "model_scenario": model_scenario(inferred, scenario),
        "nan_status": status,
        "figures": {k: str(v) for k, v in figures.items()},
    }
    mask = ev.mask
    write_artifact(
        out, stage=STAGE, scenario=scenario, config=cfg,
        arrays={
            "mask": Array(mask.astype(np.uint8), "1 = evaluated"),
            "amplitude/truth": Array(ev.amplitude_truth.astype(np.float32), "object amplitude"),
            "amplitude/reconstruction": Array(ev.amplitude_recon.astype(np.float32), "object amplitude"),
            "amplitude/error": Array(np.where(mask, ev.amplitude_recon - ev.amplitude_truth, 0).astype(np.float32),
                                     "object amplitude"),
            "phase/truth": Array(ev.phase_truth.astype(np.float32), "rad"),
            "phase/reconstruction": Array(ev.phase_recon.astype(np.float32), "rad"),
            "phase/error": Array(np.where(mask, phase_err, 0).astype(np.float32), "rad"),
            "frc/frequency": Array(ev.frc["amplitude"].frequency, "cycles/px"),
            "frc/amplitude": Array(ev.frc["amplitude"].frc, "1"),
            "frc/phase": Array(ev.frc["phase"].frc, "1"),
            "frc/threshold": Array(ev.frc["amplitude"].threshold, "1"),
            "frc/n_pixels": Array(ev.frc["amplitude"].n_pixels, "Fourier px"),
        },
        attrs={"origin_x": st.origin_x, "origin_y": st.origin_y, "phase_offset_rad": ev.phase_offset_rad,
               "amplitude_bias": ev.amplitude_bias, "first_broken": first or "",
               "nan_status": status, "summary_json": json_safe(summary)},
        ratios={"amplitude_bias": ev.amplitude_bias, **{f"chain_{l.stage}": l.relative for l in links}},
    )
    write_comparison_json(json, summary)
    m = ev.metrics
    print(f"[{STAGE}] {scenario}: {summary['n_pixels']} px evaluated; amplitude r {m['amplitude']['pearson_r']:.4f} "
          f"SSIM {m['amplitude']['ssim']:.4f} bias {ev.amplitude_bias:.4f}; phase r {m['phase']['pearson_r']:.4f} "
          f"SSIM {m['phase']['ssim']:.4f}; first broken: {first or 'none'}; NaN status: {status}; model of "
          f"{summary['model_scenario']}", flush=True)


# --------------------------------------------------------------------------- no true object: data space


def ring_profile(patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over patterns and over detector rings of (K, N, N) zero-frequency-centred patterns.

    Ring k holds the pixels at radius round(|q|) = k px from the centre (N/2, N/2),
    k = 0..N/2. Returns (frequency (R,) cycles/px of the object = k/N, mean (R,) per pixel)."""
    n = patterns.shape[-1]
    yy, xx = np.indices((n, n)) - n // 2
    ring = np.rint(np.hypot(yy, xx)).astype(np.int64)
    keep = ring <= n // 2
    total = np.asarray(patterns, dtype=np.float64).sum(axis=0)
    sums = np.bincount(ring[keep], weights=total[keep], minlength=n // 2 + 1)
    npx = np.bincount(ring[keep], minlength=n // 2 + 1)
    return np.arange(n // 2 + 1) / n, sums / (npx * len(patterns))


def data_space_metrics(inferred: str | Path, simulated: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """What can be measured without a true object, over the test group members.

    From inferred.h5: the Poisson NLL (``poisson_nll``: deviance / mean training counts, the
    training loss on the test split) and mean predicted / mean measured counts per pattern.
    Recomputed here from the predicted patches Ô (the model's forward model,
    λ̂ = |fftshift(fft2(P_abs·Ô))/N|²) and the measured counts n of the same patterns:
    the mean per detector ring of n and λ̂ (:func:`ring_profile`) and their ratio, i.e. how
    much of the measured signal the reconstruction explains at each spatial frequency.
    Returns (metrics, arrays: ring_frequency, measured_ring_mean, predicted_ring_mean)."""
    from .artifacts import check_indices, read_inferred, read_simulated
    from .physics import expected_counts

    inf = read_inferred(inferred)
    sim = read_simulated(simulated)
    check_indices(inf.indices, len(sim.counts), f"{inferred}: indices", simulated)
    b, c, n, _ = inf.amplitude.shape
    patches = (inf.amplitude.astype(np.float64) * np.exp(1j * inf.phase.astype(np.float64))).reshape(b * c, n, n)
    pr = inf.probe.astype(np.complex128)
    lam = np.empty((b * c, n, n))
    for a in range(0, b * c, 256):
        q = patches[a:a + 256]
        lam[a:a + 256] = expected_counts((pr.real, pr.imag), (q.real, q.imag))
    meas = sim.counts[inf.indices.ravel()].astype(np.float64)
    freq, m_ring = ring_profile(meas)
    _, p_ring = ring_profile(lam)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(m_ring > 0, p_ring / m_ring, np.nan)
    metrics = {
        "poisson_nll": float(inf.attrs["poisson_nll"]),
        "predicted_over_measured_counts": float(inf.attrs["predicted_over_measured_counts"]),
        "predicted_over_measured_counts_recomputed": float(lam.sum() / meas.sum()),
        "ring_predicted_over_measured": {f"{f:.4f}": r for f, r in zip(freq, ratio)},
        "n_patterns": int(b * c),
    }
    return metrics, {"ring_frequency": freq, "measured_ring_mean": m_ring, "predicted_ring_mean": p_ring}


def plot_reconstruction(image: np.ndarray, coverage: np.ndarray, mask: np.ndarray, path: str | Path, title: str,
                        units: str) -> None:
    """Two panels: the reconstruction over the well-covered mask (grey elsewhere) and the stitch
    coverage (Σ of the overlap weights) with the mask outline. No truth panel: there is none."""
    plt = _pyplot()
    box = _bbox(mask)
    img = np.ma.array(image[box], mask=~mask[box])
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.2), constrained_layout=True)
    cmap = plt.get_cmap("gray").with_extremes(bad="0.75")
    im = axes[0].imshow(img, cmap=cmap, interpolation="nearest")
    fig.colorbar(im, ax=axes[0], shrink=0.85, label=units)
    axes[0].set_title("reconstruction (no true object to compare with)")
    im = axes[1].imshow(coverage[box], cmap="viridis", interpolation="nearest")
    axes[1].contour(mask[box], levels=[0.5], colors="w", linewidths=0.8)
    fig.colorbar(im, ax=axes[1], shrink=0.85, label="coverage (Σ w)")
    axes[1].set_title("stitch coverage; white: evaluated region")
    for ax in axes:
        ax.set_xlabel("x (px, canvas)")
        ax.set_ylabel("y (px, canvas)")
    fig.suptitle(title)
    save_figure(fig, path)


def plot_rings(arrays: Mapping[str, np.ndarray], path: str | Path, title: str) -> None:
    """Data-space stand-in for the FRC when there is no truth: mean measured and predicted counts
    per detector ring (log scale) and their ratio, against spatial frequency."""
    plt = _pyplot()
    f = arrays["ring_frequency"]
    m, p = arrays["measured_ring_mean"], arrays["predicted_ring_mean"]
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    a0.semilogy(f, np.maximum(m, 1e-12), "-", label="measured n")
    a0.semilogy(f, np.maximum(p, 1e-12), "--", label="predicted λ̂ (PINN)")
    a0.set_ylabel("mean counts per pixel")
    a0.legend()
    with np.errstate(invalid="ignore", divide="ignore"):
        a1.plot(f, np.where(m > 0, p / m, np.nan), "-o", ms=3)
    a1.axhline(1.0, color="k", lw=0.8)
    a1.set_ylabel("predicted / measured (per ring)")
    for ax in (a0, a1):
        ax.set_xlabel("spatial frequency (cycles/px)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, path)


def run_data_only(cfg: CompareConfig, scenario: str, *, st: Any, simulated: str | Path, grouped: str | Path,
                  normalized: str | Path, inferred: str | Path, stitched: str | Path, train: str | Path,
                  out: str | Path, json: str | Path, amplitude_png: str | Path, phase_png: str | Path,
                  frc_png: str | Path, training_png: str | Path) -> None:
    """compare for imported data without a true object (simulated.h5 ``has_truth`` = 0).

    Writes the same files as :func:`run`; comparison.json has every object-space metric null
    (metrics.*, amplitude_bias, phase_offset_rad), ``has_truth`` false and
    ``data_metrics`` (:func:`data_space_metrics`). The ratio chain keeps the links that need
    no truth (grouped, normalized, prediction, stitched). Figures: the reconstruction and the coverage
    (amplitude, phase), measured vs predicted counts per detector ring (in the FRC's place),
    training curves."""
    hist = read_train_history(train)
    covered = st.coverage > 0
    try:
        mask, med = evaluation_mask(st.coverage, covered, cfg.coverage_threshold)
    except ValueError as exc:
        raise ArtifactError(f"{stitched}: {exc}") from None
    metrics, arrays = data_space_metrics(inferred, simulated)
    links, first = ratio_chain(chain_entries(simulated, grouped, normalized, inferred, stitched, None),
                               cfg.ratio_tolerance)
    training = training_summary(hist)
    status = nan_status(training["nan_status"], {"inferred": inferred, "stitched": stitched})
    figures = {"amplitude": amplitude_png, "phase": phase_png, "frc": frc_png, "training": training_png}
    for p_ in figures.values():
        Path(p_).parent.mkdir(parents=True, exist_ok=True)
    amp, ph = np.abs(st.object).astype(np.float64), np.angle(st.object).astype(np.float64)
    plot_reconstruction(amp, st.coverage, mask, amplitude_png, f"{scenario}: amplitude (no true object; "
                        f"Poisson NLL {metrics['poisson_nll']:.4g})", "object amplitude")
    plot_reconstruction(ph, st.coverage, mask, phase_png, f"{scenario}: phase (no true object)", "rad")
    plot_rings(arrays, frc_png, f"{scenario}: data space (no true object, so no FRC): measured vs predicted counts")
    plot_training(hist.history, training_png, f"{scenario}: training ({training['epochs_run']} epochs, "
                                              f"{training['train_seconds']:.1f} s)")
    from .artifacts import METRIC_KEYS

    summary = {
        "scenario": scenario, "config": to_dict(cfg), "config_hash": config_hash(cfg),
        "has_truth": False, "n_pixels": int(mask.sum()), "coverage_median": med,
        "origin": [st.origin_x, st.origin_y], "phase_offset_rad": None,
        "registration": {"enabled": cfg.register, "shift_px": None, "note": "no true object to register to"},
        "amplitude_bias": None, "metrics": {k: {m: None for m in METRIC_KEYS} for k in ("amplitude", "phase")},
        "data_metrics": metrics, "frc_threshold": cfg.frc_threshold,
        "chain": [asdict(link) for link in links], "first_broken": first, "training": training,
        "model_scenario": model_scenario(inferred, scenario),
        "nan_status": status, "figures": {k: str(v) for k, v in figures.items()},
    }
    write_artifact(
        out, stage=STAGE, scenario=scenario, config=cfg,
        arrays={
            "mask": Array(mask.astype(np.uint8), "1 = evaluated"),
            "amplitude/reconstruction": Array(amp.astype(np.float32), "object amplitude"),
            "phase/reconstruction": Array(ph.astype(np.float32), "rad"),
            "data/ring_frequency": Array(arrays["ring_frequency"], "cycles/px"),
            "data/measured_ring_mean": Array(arrays["measured_ring_mean"], "counts"),
            "data/predicted_ring_mean": Array(arrays["predicted_ring_mean"], "counts"),
        },
        attrs={"origin_x": st.origin_x, "origin_y": st.origin_y, "has_truth": 0, "first_broken": first or "",
               "nan_status": status, "summary_json": json_safe(summary)},
        ratios={"poisson_nll": metrics["poisson_nll"],
                **{f"chain_{link.stage}": link.relative for link in links}},
    )
    write_comparison_json(json, summary)
    print(f"[{STAGE}] {scenario}: no true object: data-space metrics only; Poisson NLL "
          f"{metrics['poisson_nll']:.6g}, predicted/measured counts {metrics['predicted_over_measured_counts']:.5f}; "
          f"first broken: {first or 'none'}; NaN status: {status}", flush=True)
