"""The pty-chi adapter: importing pty-chi, its conventions, and its reconstruction task.

What belongs here: everything that knows pty-chi's API and conventions (pty-chi 2.2.0),
each converted here and checked by tests/test_baseline.py, which feeds the true object
through pty-chi's forward model and matches the simulator's expected counts:
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
- object: a buffer around the test scan (:data:`BUFFER_MARGIN_PX` beyond the patches).

It needs the optional extra ``pip install -e .[baselines]`` (torch 2.13.0 CPU + ptychi
2.2.0); without it :func:`import_ptychi` stops with one line saying so
(:class:`BaselineUnavailable`). What the pipeline does with the task (snapshots, scoring)
belongs to :mod:`~ptychopipe.baseline.reconstruction` and
:mod:`~ptychopipe.baseline.comparison`.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import BaselineConfig
from ..errors import PtychopipeError

ENGINES = ("lsqml", "rpie")
NOISE_MODELS = ("gaussian", "poisson")
#: Object buffer margin (px) beyond the outermost patches: ≥ 12 px for the pipeline's
#: sub-pixel extractor (data-space scoring) plus pty-chi's one-pixel shift padding.
BUFFER_MARGIN_PX = 16
#: rPIE step parameters (found to converge on this problem; docs/real_data.md).
RPIE_ALPHA = 0.1
RPIE_STEP = 1.0
#: Versions this stage was written and verified against (recorded; others are not refused).
VERIFIED = {"ptychi": "2.2.0", "torch": "2.13.0"}
#: ``torchvision.__version__`` of the stand-in module (:func:`ensure_torchvision`).
STAND_IN = "ptychopipe-stand-in"


class BaselineUnavailable(PtychopipeError, RuntimeError):
    """pty-chi / torch are not installed (the optional extra); one line saying how to install."""


class BaselineError(PtychopipeError, ValueError):
    """Bad input or a failed reconstruction (one line)."""


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


def on_canvas(obj: np.ndarray, buf: Buffer, geo: Any) -> np.ndarray:
    """Crop the buffer object onto a canvas geometry (origin_x, origin_y, height, width), 0
    outside the buffer. (height, width) complex128."""
    out = np.zeros((geo.height, geo.width), dtype=np.complex128)
    r0, c0 = geo.origin_y - buf.origin_y, geo.origin_x - buf.origin_x
    rs = slice(max(0, r0), min(buf.height, r0 + geo.height))
    cs = slice(max(0, c0), min(buf.width, c0 + geo.width))
    out[rs.start - r0:rs.stop - r0, cs.start - c0:cs.stop - c0] = obj[rs, cs]
    return out
