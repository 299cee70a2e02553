"""baseline stage: the iterative reference reconstruction with pty-chi, and its comparison.

The ``baseline`` rule (enabled per scenario, ``baseline.enabled``) reconstructs the
same test data the PINN reconstructed — the unique patterns of the test groups
(grouped.h5 ``test/indices``), with the known probe and the positions fixed — with
pty-chi (PyPI ``ptychi``; LSQML with its Gaussian noise model, or rPIE). It needs the
optional extra ``pip install -e .[baselines]`` (torch 2.13.0 CPU + ptychi 2.2.0); without
it the stage stops with one line saying so (:class:`BaselineUnavailable`).

Conventions (pty-chi 2.2.0), each converted here and checked by
tests/test_baseline.py, which feeds the true object through pty-chi's forward model
and matches the simulator's expected counts:
- data: the raw counts n (M, N, N), zero frequency at the centre as stored, with
  ``data_options.fft_shift = True`` (pty-chi's forward model leaves it at pixel (0, 0));
- FFT: pty-chi's far field is unnormalised, λ = |fft2(P·O)|², so the probe is passed as
  P_abs / N (shape (1, 1, N, N): one OPR mode, one incoherent mode), and its scale is
  kept (``rescale_probe_intensity_in_first_epoch = False``,
  ``remove_object_probe_ambiguity.enabled = False``; probe not optimised);
- positions: [y, x] px relative to the object buffer's centre, which pty-chi puts at
  round(S/2) − 0.5 (``determine_position_origin_coords_by = SUPPORT``) for a buffer side
  S; pty-chi's patch starts at p + round(S/2) − 0.5 − (N − 1)/2, ours at x − N/2, so
  p = x_buffer − round(S/2); positions are not optimised;
- object: a buffer around the test scan (:data:`BUFFER_MARGIN_PX` beyond the patches),
  initial guess the constant ā = sqrt(mean Σn / Σ|P_abs|²) (docs/design.md, 'Dose and normalisation') over the test
  patterns it reconstructs (the PINN's ā is the same estimate over the training split),
  zero phase.

Output ``baseline.h5`` (stage "baseline"): the final object and :data:`snapshots` taken
along the run, resampled onto the stitch stage's canvas grid for these positions
(:func:`ptychopipe.stitch.canvas_geometry`), the cumulative reconstruction time of each
snapshot (pty-chi's epochs only; building the task is ``setup_seconds``), pty-chi's
loss, and per snapshot and pattern the Poisson deviance of the data under the
pipeline's own forward model — so the PINN and the iterative result are scored by the
same functions, in object space against the truth and in data space without one.

:func:`compare_run` (``ptychopipe baseline-compare``) scores the snapshots like the
compare stage scores the PINN (same mask: the PINN's stitched coverage; same metrics:
:func:`ptychopipe.evaluation.evaluate`) and writes ``baseline_comparison.json``: PINN vs
iterative amplitude/phase Pearson r, SSIM, amplitude bias, and wall times (PINN
inference; iterative time to its final quality and to the PINN's quality).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import math
import os
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .artifacts import (BaselineResult, Grouped, Simulated, check_indices, json_safe, read_json_object, save_figure,
                        write_json_atomic)
from .config import BaselineConfig, CompareConfig
from .errors import PtychopipeError
from .physics import expected_counts, extract_patches
from .stitch import canvas_geometry, patch_weight, stitch_patches
from .telemetry import check_finite

STAGE = "baseline"
ENGINES = ("lsqml", "rpie")
NOISE_MODELS = ("gaussian", "poisson")
INITIALS = ("flat", "reconstruction")
#: Object buffer margin (px) beyond the outermost patches: ≥ 12 px for the pipeline's
#: sub-pixel extractor (data-space scoring) plus pty-chi's one-pixel shift padding.
BUFFER_MARGIN_PX = 16
#: rPIE step parameters (found to converge on this problem; docs/real_data.md).
RPIE_ALPHA = 0.1
RPIE_STEP = 1.0
#: Clamp of λ in the Poisson deviance (= ptychopipe.network.LAMBDA_FLOOR; tests check the two agree).
LAMBDA_FLOOR = 1e-8
#: Versions this stage was written and verified against (recorded; others are not refused).
VERIFIED = {"ptychi": "2.2.0", "torch": "2.13.0"}
#: Iterative "reached its final quality": combined quality within this of the final value.
FINAL_QUALITY_TOLERANCE = 0.01
#: ``torchvision.__version__`` of the stand-in module (:func:`ensure_torchvision`).
STAND_IN = "ptychopipe-stand-in"


class BaselineUnavailable(PtychopipeError, RuntimeError):
    """pty-chi / torch are not installed (the optional extra); one line saying how to install."""


class BaselineError(PtychopipeError, ValueError):
    """Bad input or a failed reconstruction (one line)."""


# --------------------------------------------------------------------------- pty-chi import


class GaussianBlur:
    """torchvision.transforms.GaussianBlur, as far as pty-chi 2.2.0 uses it (random initial
    guesses, ``ptychi.utils.generate_gaussian_random_image``): a separable Gaussian blur of
    the last two axes of a (..., H, W) real tensor with reflect padding.

    kernel_size: int or (kx, ky) odd; sigma: float, or (min, max) sampled uniformly per call
    (torchvision's semantics; pty-chi passes (3, 3)). The kernel is torchvision's:
    exp(−x²/2σ²) on x = −(k−1)/2 .. (k−1)/2, normalised to sum 1.
    """

    def __init__(self, kernel_size: int | tuple[int, int], sigma: float | tuple[float, float] = (0.1, 2.0)) -> None:
        k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(k) != 2 or any(v <= 0 or v % 2 == 0 for v in k):
            raise ValueError(f"GaussianBlur: kernel_size: expected odd positive ints, got {kernel_size!r}")
        s = (float(sigma), float(sigma)) if isinstance(sigma, (int, float)) else tuple(float(v) for v in sigma)
        if len(s) != 2 or not 0 < s[0] <= s[1]:
            raise ValueError(f"GaussianBlur: sigma: expected a positive float or (min, max), got {sigma!r}")
        self.kernel_size, self.sigma = k, s

    def __call__(self, img: Any) -> Any:
        import torch

        sigma = self.sigma[0] if self.sigma[0] == self.sigma[1] else float(
            torch.empty(1).uniform_(self.sigma[0], self.sigma[1]).item())
        kx, ky = self.kernel_size
        shape = img.shape
        x = img.reshape(-1, 1, shape[-2], shape[-1])

        def kernel(k: int) -> Any:
            t = torch.linspace(-(k - 1) / 2, (k - 1) / 2, steps=k, dtype=x.dtype, device=x.device)
            pdf = torch.exp(-0.5 * (t / sigma) ** 2)
            return pdf / pdf.sum()

        x = torch.nn.functional.pad(x, [kx // 2, kx // 2, ky // 2, ky // 2], mode="reflect")
        x = torch.nn.functional.conv2d(x, kernel(kx).reshape(1, 1, 1, kx))
        x = torch.nn.functional.conv2d(x, kernel(ky).reshape(1, 1, ky, 1))
        return x.reshape(shape)


def ensure_torchvision() -> str:
    """Make ``import torchvision`` work for pty-chi; returns what was used.

    pty-chi imports torchvision only for ``GaussianBlur`` (random initial guesses, which this
    stage never requests: it passes its own initial object). PyPI's torchvision for torch
    2.13 is a CUDA build that fails to import beside the CPU torch ("operator
    torchvision::nms does not exist"). When the real torchvision imports, it is used; when it
    is missing or fails, its partial modules are removed and a stand-in ``torchvision``
    holding only ``transforms.GaussianBlur`` (:class:`GaussianBlur`) is registered in
    ``sys.modules`` for this process only — nothing is installed or patched on disk.
    """
    have = sys.modules.get("torchvision")
    if have is not None and getattr(have, "__version__", "") == STAND_IN:
        return f"stand-in GaussianBlur (torchvision {getattr(have, '__ptychopipe_reason__', '')})"
    err = "not installed"
    if importlib.util.find_spec("torchvision") is not None:
        try:
            import torchvision  # noqa: F401

            return f"torchvision {torchvision.__version__}"
        except Exception as exc:  # noqa: BLE001 - any failure means: use the stand-in
            err = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    for mod in (tv, tr):  # a spec, so importlib.util.find_spec() of them keeps working
        mod.__spec__ = importlib.machinery.ModuleSpec(mod.__name__, None)
    tr.GaussianBlur = GaussianBlur  # type: ignore[attr-defined]
    tv.transforms = tr  # type: ignore[attr-defined]
    tv.__version__ = STAND_IN  # type: ignore[attr-defined]
    tv.__ptychopipe_reason__ = err  # type: ignore[attr-defined]
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tr
    return f"stand-in GaussianBlur (torchvision {err})"


def import_ptychi() -> tuple[Any, Any, dict[str, str]]:
    """Import torch and pty-chi's API. Returns (torch, ptychi.api, versions).

    Raises :class:`BaselineUnavailable` (one line, with the install command) when the
    optional extra is missing."""
    missing = [m for m in ("torch", "ptychi") if importlib.util.find_spec(m) is None]
    if missing:
        raise BaselineUnavailable(f"{' and '.join(missing)} not installed: the iterative baseline needs the optional "
                                  "extra, `pip install -e '.[baselines]'` (torch 2.13.0 CPU + ptychi 2.2.0; "
                                  "docs/real_data.md)")
    import torch

    tv = ensure_torchvision()
    import ptychi
    import ptychi.api as api

    return torch, api, {"torch": str(torch.__version__), "ptychi": str(getattr(ptychi, "__version__", "?")),
                        "torchvision": tv}


def available() -> tuple[bool, str]:
    """(True, versions) when the baseline can run here, else (False, why)."""
    try:
        _, _, v = import_ptychi()
    except BaselineUnavailable as exc:
        return False, str(exc)
    return True, ", ".join(f"{k} {val}" for k, val in v.items())


# --------------------------------------------------------------------------- conventions


@dataclass(frozen=True)
class Buffer:
    """The object buffer pty-chi reconstructs: buffer pixel (r, c) is object pixel
    (origin_y + r, origin_x + c); height × width px."""

    origin_x: int
    origin_y: int
    height: int
    width: int


def object_buffer(positions: np.ndarray, n: int, margin: int = BUFFER_MARGIN_PX) -> Buffer:
    """Buffer holding every N×N patch at ``positions`` (M, 2) [x, y] px plus ``margin`` px."""
    lo = np.floor(positions.min(axis=0) - n / 2).astype(np.int64) - margin
    hi = np.ceil(positions.max(axis=0) + n / 2).astype(np.int64) + margin
    return Buffer(int(lo[0]), int(lo[1]), int(hi[1] - lo[1]), int(hi[0] - lo[0]))


def to_ptychi_positions(positions: np.ndarray, buf: Buffer) -> tuple[np.ndarray, np.ndarray]:
    """Pipeline positions (M, 2) [x, y] px (object coordinates) -> pty-chi's (y, x) px relative
    to the buffer centre (SUPPORT origin round(S/2) − 0.5): p = x − origin − round(S/2).
    Returns (position_y_px, position_x_px), each (M,) float64."""
    px = positions[:, 0] - buf.origin_x - np.round(buf.width / 2)
    py = positions[:, 1] - buf.origin_y - np.round(buf.height / 2)
    return py, px


def to_ptychi_probe(probe: np.ndarray) -> np.ndarray:
    """P_abs (N, N) in the unitary convention -> pty-chi's (1, 1, N, N) probe, P_abs / N
    (its far field is the unnormalised fft2)."""
    n = probe.shape[-1]
    return (probe.astype(np.complex64) / np.float32(n))[None, None]


def rms_amplitude_estimate(counts: np.ndarray, probe: np.ndarray) -> float:
    """ā = sqrt(mean_j Σ n_j / Σ|P_abs|²) [object amplitude] (docs/design.md, 'Dose and normalisation')."""
    total = counts.sum(axis=(-2, -1), dtype=np.float64).mean()
    return float(np.sqrt(total / np.sum(np.abs(probe.astype(np.complex128)) ** 2)))


def poisson_deviance(counts: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Σ over pixels of λ − n + n·(log n − log λ) per pattern, (M,) float64 [counts]; λ clamped
    ≥ :data:`LAMBDA_FLOOR` (the PINN's test loss is its mean / mean training counts)."""
    n = np.asarray(counts, dtype=np.float64)
    lam = np.maximum(np.asarray(lam, dtype=np.float64), LAMBDA_FLOOR)
    dev = lam - n + n * (np.log(np.maximum(n, LAMBDA_FLOOR)) - np.log(lam))
    return dev.sum(axis=(-2, -1))


def predicted_counts(obj: np.ndarray, positions: np.ndarray, probe: np.ndarray, chunk: int = 128) -> np.ndarray:
    """λ_j = |fftshift(fft2(P_abs·O_j))/N|² of the object ``obj`` (H, W) complex at ``positions``
    (M, 2) [x, y] px in obj's own pixel frame — the simulator's forward model. (M, N, N) float64."""
    n = probe.shape[0]
    pr = probe.astype(np.complex128)
    out = np.empty((len(positions), n, n))
    for a in range(0, len(positions), chunk):
        patches = extract_patches(obj, positions[a:a + chunk], n)
        out[a:a + chunk] = expected_counts((pr.real, pr.imag), (patches.real, patches.imag))
    return out


# --------------------------------------------------------------------------- pty-chi task


def build_task(api: Any, cfg: BaselineConfig, counts: np.ndarray, probe: np.ndarray, positions: np.ndarray,
               initial: np.ndarray, buf: Buffer, epochs: int | None = None, device: str = "cpu") -> Any:
    """A pty-chi PtychographyTask with this module's conventions (module docstring).

    counts (M, N, N) [counts], probe P_abs (N, N), positions (M, 2) [x, y] px (object
    coordinates), initial (buf.height, buf.width) complex initial object; ``cfg.noise_model``
    chooses LSQML's likelihood (gaussian or poisson); ``device``: "cpu" or "gpu" (CUDA)."""
    if cfg.engine == "lsqml":
        opts = api.LSQMLOptions()
        if cfg.noise_model not in NOISE_MODELS:
            raise BaselineError(f"baseline.noise_model: expected one of {list(NOISE_MODELS)}, got {cfg.noise_model!r}")
        opts.reconstructor_options.noise_model = (api.NoiseModels.POISSON if cfg.noise_model == "poisson"
                                                  else api.NoiseModels.GAUSSIAN)
        opts.reconstructor_options.rescale_probe_intensity_in_first_epoch = False
    elif cfg.engine == "rpie":
        opts = api.RPIEOptions()
        opts.object_options.alpha = RPIE_ALPHA
        opts.object_options.step_size = RPIE_STEP
    else:
        raise BaselineError(f"baseline.engine: expected one of {list(ENGINES)}, got {cfg.engine!r}")
    r = opts.reconstructor_options
    r.num_epochs = int(epochs if epochs is not None else cfg.epochs)
    r.batch_size = int(min(cfg.batch_size, len(counts)))
    r.default_device = api.Devices.GPU if device == "gpu" else api.Devices.CPU
    r.random_seed = int(cfg.seed)
    opts.data_options.fft_shift = True
    o = opts.object_options
    o.optimizable = True
    o.remove_object_probe_ambiguity.enabled = False
    o.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SUPPORT
    opts.probe_options.optimizable = False
    opts.probe_position_options.optimizable = False
    opts.opr_mode_weight_options.optimizable = False
    py, px = to_ptychi_positions(positions, buf)
    from ptychi.api.task import PtychographyTask

    return PtychographyTask(opts, diffraction_data=np.asarray(counts, dtype=np.float32),
                            object_data=initial.astype(np.complex64)[None], probe_data=to_ptychi_probe(probe),
                            probe_position_x_px=px, probe_position_y_px=py)


def task_object(task: Any) -> np.ndarray:
    """The task's current object, (H, W) complex128 (first slice)."""
    return np.asarray(task.get_data_to_cpu("object", as_numpy=True))[0].astype(np.complex128)


def task_loss(task: Any) -> float:
    """pty-chi's displayed loss of the last epoch run (NaN if none)."""
    table = task.reconstructor.loss_tracker.table
    return float(table["loss"].iloc[-1]) if len(table) else float("nan")


def snapshot_epochs(epochs: int, snapshots: int) -> list[int]:
    """Epoch counts after which a snapshot is taken: ``snapshots`` roughly even steps, the last
    at ``epochs`` (duplicates removed)."""
    k = max(1, min(snapshots, epochs))
    return sorted({int(math.ceil(epochs * (i + 1) / k)) for i in range(k)})


def on_canvas(obj: np.ndarray, buf: Buffer, geo: Any) -> np.ndarray:
    """Crop the buffer object onto a canvas geometry (origin_x, origin_y, height, width), 0
    outside the buffer. (height, width) complex128."""
    out = np.zeros((geo.height, geo.width), dtype=np.complex128)
    r0, c0 = geo.origin_y - buf.origin_y, geo.origin_x - buf.origin_x
    rs = slice(max(0, r0), min(buf.height, r0 + geo.height))
    cs = slice(max(0, c0), min(buf.width, c0 + geo.width))
    out[rs.start - r0:rs.stop - r0, cs.start - c0:cs.stop - c0] = obj[rs, cs]
    return out


def initial_object(kind: str, counts: np.ndarray, probe: np.ndarray, buf: Buffer,
                   stitched: Any | None = None) -> np.ndarray:
    """pty-chi's starting object on the buffer, (buf.height, buf.width) complex128 [object
    amplitude].

    ``kind`` "flat": the constant ā (:func:`rms_amplitude_estimate` of ``counts``), zero phase.
    "reconstruction": the network's stitched test object (``stitched``, a
    :class:`ptychopipe.artifacts.StitchedCanvas`-like object with ``object``, ``coverage``,
    ``origin_x``, ``origin_y``) wherever it has coverage, ā elsewhere (pixels no patch
    lit carry no information, and pty-chi does not update them either)."""
    abar = rms_amplitude_estimate(counts, probe)
    out = np.full((buf.height, buf.width), abar, dtype=np.complex128)
    if kind == "flat":
        return out
    if kind != "reconstruction":
        raise BaselineError(f"baseline.initial: expected one of {list(INITIALS)}, got {kind!r}")
    if stitched is None:
        raise BaselineError("baseline.initial: reconstruction needs the stitched reconstruction (stitched.h5)")
    obj = np.asarray(stitched.object, dtype=np.complex128)
    lit = np.asarray(stitched.coverage) > 0
    h, w = obj.shape
    r0, c0 = stitched.origin_y - buf.origin_y, stitched.origin_x - buf.origin_x
    rs = slice(max(0, r0), min(buf.height, r0 + h))
    cs = slice(max(0, c0), min(buf.width, c0 + w))
    src = (slice(rs.start - r0, rs.stop - r0), slice(cs.start - c0, cs.stop - c0))
    region = out[rs, cs]
    out[rs, cs] = np.where(lit[src], obj[src], region)
    return out


# --------------------------------------------------------------------------- stage


def read_test_patterns(simulated: str | Path, grouped: str | Path
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The unique test patterns of grouped.h5, from simulated.h5: (indices (M,) int64 ascending,
    counts (M, N, N) float32 [counts], positions (M, 2) float64 [x, y] px, probe P_abs (N, N)
    complex64). One-line errors for an empty test split or indices outside simulated.h5."""
    sim = Simulated.read(simulated)
    idx = np.unique(Grouped.read_indices(grouped, "test").ravel()).astype(np.int64)
    if idx.size == 0:
        raise BaselineError(f"{grouped}: test/indices: empty; expected the test patterns")
    check_indices(idx, len(sim.counts), f"{grouped}: test/indices", simulated)
    return idx, sim.counts[idx], sim.positions[idx], sim.probe


def run(cfg: BaselineConfig, scenario: str, simulated: str | Path, grouped: str | Path, out: str | Path,
        stitched: str | Path | None = None) -> None:
    """Stage entry point: reconstruct the test patterns with pty-chi, write ``baseline.h5``.
    ``stitched``: the network's stitched.h5, the starting object when ``cfg.initial`` is
    "reconstruction" (:func:`initial_object`)."""
    from .artifacts import StitchedCanvas

    if cfg.initial == "reconstruction" and not stitched:
        raise BaselineError("baseline.initial: reconstruction needs --stitched (the network's stitched.h5)")
    torch, api, versions = import_ptychi()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    idx, counts, positions, probe = read_test_patterns(simulated, grouped)
    n = probe.shape[0]
    buf = object_buffer(positions, n)
    abar = rms_amplitude_estimate(counts, probe)
    initial = initial_object(cfg.initial, counts, probe, buf,
                             StitchedCanvas.read(stitched) if cfg.initial == "reconstruction" else None)
    geo = canvas_geometry(positions, n)
    local = positions - np.array([buf.origin_x, buf.origin_y], dtype=np.float64)
    t0 = time.perf_counter()
    task = build_task(api, cfg, counts, probe, positions, initial, buf)
    setup = time.perf_counter() - t0
    print(f"[{STAGE}] {scenario}: pty-chi {cfg.engine} ({cfg.noise_model}) on {len(idx)} test patterns of "
          f"{n}x{n}, buffer {buf.height}x{buf.width} px, {cfg.epochs} epochs, batch {cfg.batch_size}; start "
          f"{cfg.initial} (flat amplitude {abar:.6g}); {versions}; setup {setup:.2f} s", flush=True)
    marks = snapshot_epochs(cfg.epochs, cfg.snapshots)
    snaps, seconds, losses, devs, totals = [], [], [], [], []
    done, elapsed = 0, 0.0
    for mark in marks:
        t1 = time.perf_counter()
        task.run(n_epochs=mark - done)
        elapsed += time.perf_counter() - t1
        done = mark
        obj = task_object(task)
        if not np.all(np.isfinite(obj)):
            raise BaselineError(f"[{STAGE}] {scenario}: object: non-finite after epoch {done} ({cfg.engine} "
                                f"diverged; expected finite values): lower baseline.batch_size (pty-chi's PIE "
                                f"sums a batch's updates: rpie diverged at 8 on the ci data, converged at <= 4) "
                                f"or use engine lsqml")
        lam = predicted_counts(obj, local, probe)
        devs.append(poisson_deviance(counts, lam))
        totals.append(lam.sum(axis=(1, 2)))
        snaps.append(on_canvas(obj, buf, geo).astype(np.complex64))
        seconds.append(elapsed)
        losses.append(task_loss(task))
        print(f"[{STAGE}] epoch {done}/{cfg.epochs}: {elapsed:.2f} s; pty-chi loss {losses[-1]:.6g}; "
              f"predicted/measured counts {totals[-1].mean() / counts.sum(axis=(1, 2)).mean():.5f}", flush=True)
    final = snaps[-1]
    check_finite(STAGE, "object", final)
    weight = patch_weight("probe_intensity", probe, n)
    cov = stitch_patches(np.ones((len(positions), n, n), dtype=np.complex128), positions, weight)
    if (cov.geometry.origin_x, cov.geometry.origin_y) != (geo.origin_x, geo.origin_y):
        raise BaselineError(f"[{STAGE}] canvas: coverage geometry differs from the canvas; expected equal")
    measured = counts.sum(axis=(1, 2), dtype=np.float64)
    BaselineResult(
        final, cov.coverage.astype(np.float32), cov.count, (geo.origin_x, geo.origin_y), positions, idx,
        np.stack(snaps), np.array(marks, dtype=np.int64), np.array(seconds), np.array(losses), np.stack(devs),
        np.stack(totals), measured,
        attrs={"engine": cfg.engine, "epochs": cfg.epochs, "reconstruction_seconds": elapsed,
               "setup_seconds": setup, "initial_amplitude": abar, "origin_x": geo.origin_x,
               "origin_y": geo.origin_y, "buffer": [buf.origin_x, buf.origin_y, buf.height, buf.width],
               "versions": versions, "verified_versions": VERIFIED,
               "conventions": {"data": "raw counts, fft_shift=True", "probe": "P_abs / N, (1, 1, N, N), fixed",
                               "positions": "[y, x] px - buffer origin - round(S/2) (SUPPORT), fixed",
                               "initial": cfg.initial,
                               "engine": ({"noise_model": cfg.noise_model} if cfg.engine == "lsqml"
                                          else {"alpha": RPIE_ALPHA, "step_size": RPIE_STEP})}},
    ).write(out, scenario=scenario, config=cfg,
            ratios={"predicted_over_measured_counts": float(totals[-1].mean() / measured.mean())})
    print(f"[{STAGE}] {scenario}: {elapsed:.2f} s for {cfg.epochs} epochs ({elapsed / cfg.epochs:.3f} s/epoch)",
          flush=True)


# --------------------------------------------------------------------------- reading




# --------------------------------------------------------------------------- comparison


def time_to_reach(seconds: np.ndarray, quality: np.ndarray, target: float) -> float | None:
    """First snapshot time (s) at which ``quality`` ≥ ``target`` (higher = better); None if never."""
    hit = np.flatnonzero(np.asarray(quality) >= target)
    return float(seconds[hit[0]]) if hit.size else None


def benchmark_seconds(path: str | Path | None) -> float | None:
    """Wall seconds (column ``s``) of a Snakemake benchmark TSV, or None when absent."""
    if not path or not Path(path).is_file():
        return None
    lines = Path(path).read_text().splitlines()
    if len(lines) < 2:
        return None
    head, row = lines[0].split("\t"), lines[1].split("\t")
    return float(row[head.index("s")]) if "s" in head else None


def _quality(m: Mapping[str, Any]) -> float:
    """Combined object-space quality: mean of amplitude and phase Pearson r."""
    return 0.5 * (float(m["amplitude"]["pearson_r"]) + float(m["phase"]["pearson_r"]))


def compare_run(cfg: CompareConfig, scenario: str, *, baseline: str | Path, simulated: str | Path,
                stitched: str | Path, inferred: str | Path, comparison: str | Path, out: str | Path,
                infer_benchmark: str | Path | None = None, figure: str | Path | None = None) -> dict[str, Any]:
    """``ptychopipe baseline-compare``: PINN vs iterative for one scenario -> ``baseline_comparison.json``.

    Object space (when simulated.h5 has a true object): each snapshot is scored with
    :func:`ptychopipe.evaluation.evaluate` on the stitched canvas, with the PINN's coverage (the
    same mask as the PINN's scores). Quality q = mean of amplitude and phase Pearson r.
    Data space (always): Poisson deviance per pattern / the normalisation's mean training
    counts, averaged over the test group members (the PINN's ``poisson_nll`` definition),
    and predicted / measured counts. Times: PINN inference = the infer job's wall time
    (Snakemake benchmark) when given; iterative: total reconstruction time, the time to its
    final quality (first snapshot with q within :data:`FINAL_QUALITY_TOLERANCE` of the final
    q; data space: NLL within 1 %), and to the PINN's quality (first snapshot with q ≥ the
    PINN's q; data space: NLL ≤ the PINN's), None if never reached.
    """
    from .artifacts import ComparisonSummary, Inferred, StitchedCanvas
    from .evaluation import evaluate

    base = BaselineResult.read(baseline)
    st = StitchedCanvas.read(stitched)
    inf = Inferred.read(inferred)
    pinn = ComparisonSummary.read(comparison)
    if base.object.shape != st.object.shape or base.origin != (st.origin_x, st.origin_y):
        raise BaselineError(f"{baseline}: object/origin: canvas {base.object.shape} at {base.origin} differs from "
                            f"{stitched} ({st.object.shape} at {(st.origin_x, st.origin_y)}); expected the same "
                            "test patterns (re-run the baseline)")
    truth = Simulated.read_truth(simulated)
    mean_counts = float(inf.attrs["mean_counts"])
    pos = {int(v): i for i, v in enumerate(base.indices)}
    missing = [int(v) for v in np.unique(inf.indices) if int(v) not in pos]
    if missing:
        raise BaselineError(f"{baseline}: indices: {len(missing)} test patterns of {inferred} missing; expected the "
                            "same test patterns (re-run the baseline)")
    members = np.array([pos[int(v)] for v in inf.indices.ravel()], dtype=np.int64)
    nll = base.deviance[:, members].mean(axis=1) / mean_counts
    ratio = base.predicted[:, members].mean(axis=1) / base.measured[members].mean()
    pinn_nll = float(inf.attrs["poisson_nll"])
    seconds = base.seconds
    snaps: list[dict[str, Any]] = []
    q = None
    if truth is not None:
        evals = [evaluate(o, st.coverage, truth, st.origin_x, st.origin_y, cfg) for o in base.snapshot_objects]
        q = np.array([_quality(e.metrics) for e in evals])
        pinn_q = _quality(pinn["metrics"]) if pinn["metrics"]["amplitude"]["pearson_r"] is not None else None
        final = evals[-1]
        iterative = {"amplitude": {k: final.metrics["amplitude"][k] for k in ("pearson_r", "ssim", "rmse")},
                     "phase": {k: final.metrics["phase"][k] for k in ("pearson_r", "ssim", "rmse")},
                     "amplitude_bias": final.amplitude_bias, "phase_offset_rad": final.phase_offset_rad,
                     "n_pixels": int(final.mask.sum())}
        t_final = time_to_reach(seconds, q, float(q[-1]) - FINAL_QUALITY_TOLERANCE)
        t_pinn = time_to_reach(seconds, q, pinn_q) if pinn_q is not None else None
        quality = {"measure": "mean of amplitude and phase Pearson r vs truth", "pinn": pinn_q,
                   "iterative_final": float(q[-1])}
    else:
        iterative = {"amplitude": None, "phase": None, "amplitude_bias": None}
        t_final = time_to_reach(seconds, -nll, -float(nll[-1]) * 1.01)
        t_pinn = time_to_reach(seconds, -nll, -pinn_nll)
        quality = {"measure": "Poisson NLL of the test data (lower = better)", "pinn": pinn_nll,
                   "iterative_final": float(nll[-1])}
    for i in range(len(seconds)):
        snaps.append({"epoch": int(base.epochs[i]), "seconds": float(seconds[i]), "pty_chi_loss": float(base.loss[i]),
                      "poisson_nll": float(nll[i]), "predicted_over_measured_counts": float(ratio[i]),
                      "quality": None if q is None else float(q[i])})
    m = pinn["metrics"]
    result = {
        "scenario": scenario, "has_truth": truth is not None, "engine": str(base.attrs.get("engine", "")),
        "epochs": int(base.attrs.get("epochs", len(seconds))),
        "pinn": {"amplitude": {k: m["amplitude"][k] for k in ("pearson_r", "ssim", "rmse")},
                 "phase": {k: m["phase"][k] for k in ("pearson_r", "ssim", "rmse")},
                 "amplitude_bias": pinn["amplitude_bias"], "poisson_nll": pinn_nll,
                 "predicted_over_measured_counts": float(inf.attrs.get("predicted_over_measured_counts", float("nan"))),
                 "inference_seconds": benchmark_seconds(infer_benchmark),
                 "train_seconds": pinn["training"].get("train_seconds")},
        "iterative": {**iterative, "poisson_nll": float(nll[-1]), "predicted_over_measured_counts": float(ratio[-1]),
                      "seconds_total": float(seconds[-1]), "seconds_to_final_quality": t_final,
                      "seconds_to_pinn_quality": t_pinn, "setup_seconds": float(base.attrs.get("setup_seconds", 0.0)),
                      "versions": json.loads(base.attrs["versions"]) if "versions" in base.attrs else {}},
        "quality": quality, "snapshots": snaps,
    }
    if figure is not None:
        plot_comparison(result, figure)
        result["figure"] = str(figure)
    write_json_atomic(out, json_safe(result))
    return result


def plot_comparison(result: Mapping[str, Any], path: str | Path) -> None:
    """Quality (or NLL) of the iterative snapshots against reconstruction time, with the PINN's
    level and its inference time marked (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snaps = result["snapshots"]
    t = [s["seconds"] for s in snaps]
    truth = result["has_truth"]
    y = [s["quality"] if truth else s["poisson_nll"] for s in snaps]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    ax.plot(t, y, "-o", ms=3, label=f"pty-chi {result['engine']} (snapshots)")
    pinn_level = result["quality"]["pinn"]
    if pinn_level is not None:
        ax.axhline(pinn_level, color="C1", ls="--", label="PINN")
    inf_s = result["pinn"]["inference_seconds"]
    if inf_s is not None:
        ax.axvline(inf_s, color="C1", ls=":", label=f"PINN inference job {inf_s:.1f} s")
    ax.set_xlabel("iterative reconstruction time (s)")
    ax.set_ylabel(result["quality"]["measure"])
    if not truth and all(v is not None and v > 0 for v in y):
        ax.set_yscale("log")
    ax.set_title(f"{result['scenario']}: PINN vs iterative")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def read_baseline_comparison(path: str | Path) -> dict[str, Any]:
    """Load a ``baseline_comparison.json`` (checks the top-level keys)."""
    return read_json_object(path, "the baseline-compare JSON",
                            ("scenario", "has_truth", "engine", "pinn", "iterative", "quality", "snapshots"))


def _one(v: Any, fmt: str = "{:.4g}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def _pair(a: Any, b: Any, fmt: str = "{:.4g}") -> str:
    return f"{_one(a, fmt)} / {_one(b, fmt)}"


def baseline_section(paths: Any, md_dir: str | Path) -> list[str]:
    """Markdown lines of the report's "PINN vs iterative" section, one table row per
    baseline_comparison.json (sorted by scenario) and a link to each figure."""
    rows = sorted((read_baseline_comparison(p) for p in paths), key=lambda d: str(d["scenario"]))
    lines = ["", "## PINN vs iterative reference (pty-chi)", "",
             "Same test patterns, same probe, fixed positions; both scored on the same pixels by the same "
             "functions (object space against the true object; data space by the Poisson NLL of the test data "
             "under the pipeline's forward model). Cells are PINN / iterative. Times: PINN training and the "
             "infer job's wall time (Snakemake benchmark: process start, model load and prediction); iterative: "
             "pty-chi's epochs only (task setup excluded), in total, until its quality first came within "
             f"{FINAL_QUALITY_TOLERANCE} of its final value, and until it first matched the PINN's quality "
             "(quality = mean of amplitude and phase Pearson r; without a true object, the Poisson NLL; "
             "n/a = never, at the snapshot resolution).", "",
             "| scenario | engine (epochs) | amp r | amp SSIM | phase r | phase SSIM | amp bias | Poisson NLL | "
             "PINN train s | PINN infer s | iterative s | iter. s to final | iter. s to PINN's |",
             "|" + "---|" * 13]
    for d in rows:
        p, it = d["pinn"], d["iterative"]

        def met(part: str, key: str) -> str:
            a = (p.get(part) or {}).get(key) if d["has_truth"] else None
            b = (it.get(part) or {}).get(key) if d["has_truth"] else None
            return _pair(a, b)

        lines.append(
            f"| {d['scenario']} | {d['engine']} ({d['epochs']}) | {met('amplitude', 'pearson_r')} | "
            f"{met('amplitude', 'ssim')} | {met('phase', 'pearson_r')} | {met('phase', 'ssim')} | "
            f"{_pair(p.get('amplitude_bias'), it.get('amplitude_bias'))} | "
            f"{_pair(p.get('poisson_nll'), it.get('poisson_nll'))} | "
            f"{_one(p.get('train_seconds'), '{:.1f}')} | "
            f"{_one(p.get('inference_seconds'), '{:.1f}')} | "
            f"{_one(it.get('seconds_total'), '{:.2f}')} | "
            f"{_one(it.get('seconds_to_final_quality'), '{:.2f}')} | "
            f"{_one(it.get('seconds_to_pinn_quality'), '{:.2f}')} |")
    for d in rows:
        if not d["has_truth"]:
            lines += ["", f"{d['scenario']}: no true object, so the comparison is in data space only "
                          "(Poisson NLL, predicted/measured counts)."]
    figs = [(d["scenario"], d.get("figure")) for d in rows if d.get("figure")]
    if figs:
        lines += ["", " ".join(f"[{s} PINN vs iterative]({os.path.relpath(f, md_dir)})" for s, f in figs)]
    return lines
