"""Figures of the compare stage: truth, reconstruction and error maps, FRC curves, the
training curve, and the reconstruction and ring profiles of data without a truth."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..artifacts import save_figure
from .alignment import bounding_box
from .metrics import FRC


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
    box = bounding_box(mask)
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

def plot_reconstruction(image: np.ndarray, coverage: np.ndarray, mask: np.ndarray, path: str | Path, title: str,
                        units: str) -> None:
    """Two panels: the reconstruction over the well-covered mask (grey elsewhere) and the stitch
    coverage (Σ of the overlap weights) with the mask outline. No truth panel: there is none."""
    plt = _pyplot()
    box = bounding_box(mask)
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
