"""The image figures of the reports: what the network was given and what it reconstructed,
across scenarios. The figures that plot the reports' numbers stay with their tables (the
overview in :mod:`.summary`, the dose response in :mod:`.dose`), and the compare stage's
figures of one scenario are :mod:`ptychopipe.evaluation.figures`.

- :func:`data_figure` (``ptychopipe data-figure``, rule ``data_figure``): per scenario, the
  probe (amplitude and phase), the scan positions (train and test halves) and one
  diffraction pattern on a log scale: what the network was given.
- :func:`reconstruction_grid` (``ptychopipe report --grid``): one row per scenario, the
  true and reconstructed amplitude and phase on the stitched canvas (global phase offset
  removed, as the metrics do), so the scenarios can be compared at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..artifacts import ComparisonSummary, Simulated, Split, StitchedCanvas, save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def brightest_pattern(counts: np.ndarray) -> int:
    """Index of the pattern with the most counts (the one the figure shows)."""
    return int(np.argmax(counts.reshape(len(counts), -1).sum(axis=1, dtype=np.float64)))


def data_figure(simulated: str | Path, split: str | Path, out: str | Path, scenario: str = "") -> Path:
    """Probe amplitude and phase, scan positions (train/test) and the brightest diffraction
    pattern, log10(1 + counts), of one scenario (PNG)."""
    plt = _plt()
    sim = Simulated.read(simulated)
    sp = Split.read(split)
    probe = sim.probe.astype(np.complex128)
    amp = np.abs(probe)
    phase = np.where(amp > 0.01 * amp.max(), np.angle(probe), np.nan)  # phase where the probe has light
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), constrained_layout=True)
    im = axes[0].imshow(amp, cmap="gray")
    axes[0].set_title("probe amplitude |P| (photons$^{1/2}$)")
    fig.colorbar(im, ax=axes[0], shrink=0.8)
    im = axes[1].imshow(phase, cmap="twilight", vmin=-np.pi, vmax=np.pi)
    axes[1].set_title("probe phase (rad; where |P| > 1% of max)")
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    ax = axes[2]
    h, w = sim.object_shape
    for idx, label, colour in ((sp.train_indices, "train", "C0"), (sp.test_indices, "test", "C1")):
        pos = sim.positions[idx]
        ax.scatter(pos[:, 0], pos[:, 1], s=4, color=colour, label=f"{label} ({len(idx)})")
    ax.axhline(sp.y_split, color="k", lw=0.8, ls="--")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)  # image orientation: y down, as the object is shown
    ax.set_aspect("equal")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title(f"scan positions ({len(sim.positions)}; object frame {h}x{w} px)")
    ax.legend(fontsize=8, loc="upper right")
    j = brightest_pattern(sim.counts)
    im = axes[3].imshow(np.log10(1.0 + sim.counts[j].astype(np.float64)), cmap="magma")
    axes[3].set_title(f"diffraction pattern {j}: log10(1 + counts)")
    fig.colorbar(im, ax=axes[3], shrink=0.8)
    for a in (axes[0], axes[1], axes[3]):
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(f"{scenario}: inputs (probe, scan, a diffraction pattern; total "
                 f"{float(sim.counts[j].sum()):.3g} counts in the one shown)")
    save_figure(fig, out)
    return Path(out)


def reconstruction_grid(comparisons: Sequence[str | Path], stitched: Sequence[str | Path],
                        simulated: Sequence[str | Path], out: str | Path) -> Path:
    """One row per scenario (in the order given): true and reconstructed amplitude and phase
    on the stitched canvas, uncovered pixels blank; the reconstruction's phase has the
    comparison's global offset removed. A scenario without a true object shows its
    reconstruction only."""
    if not (len(comparisons) == len(stitched) == len(simulated)):
        raise ValueError(f"report --grid: expected as many stitched.h5 and simulated.h5 as comparison.json "
                         f"files ({len(comparisons)}), got {len(stitched)} and {len(simulated)}")
    plt = _plt()
    rows = len(comparisons)
    fig, axes = plt.subplots(rows, 4, figsize=(13, 3.0 * rows + 0.6), squeeze=False, constrained_layout=True)
    for i, (c, s, m) in enumerate(zip(comparisons, stitched, simulated)):
        comp = ComparisonSummary.read(c)
        canvas = StitchedCanvas.read(s)
        sim = Simulated.read(m)
        covered = canvas.coverage > 0
        rec = np.where(covered, canvas.object, np.nan)
        offset = float(comp.get("phase_offset_rad") or 0.0)
        rec_phase = np.where(covered, np.angle(canvas.object * np.exp(-1j * offset)), np.nan)
        truth = None
        if sim.object is not None:
            hh, ww = canvas.object.shape
            truth = sim.object[canvas.origin_y:canvas.origin_y + hh, canvas.origin_x:canvas.origin_x + ww]
            truth = np.where(covered, truth, np.nan) if truth.shape == covered.shape else None
        amp_vals = [np.abs(rec)] + ([np.abs(truth)] if truth is not None else [])
        lo = float(np.nanmin([np.nanmin(a) for a in amp_vals]))
        hi = float(np.nanmax([np.nanmax(a) for a in amp_vals]))
        ph_vals = [rec_phase] + ([np.angle(truth)] if truth is not None else [])
        plo = float(np.nanmin([np.nanmin(a) for a in ph_vals]))
        phi = float(np.nanmax([np.nanmax(a) for a in ph_vals]))
        panels = ((truth is not None and np.abs(truth), "true amplitude", "gray", lo, hi),
                  (np.abs(rec), "reconstructed amplitude", "gray", lo, hi),
                  (truth is not None and np.angle(truth), "true phase (rad)", "viridis", plo, phi),
                  (rec_phase, "reconstructed phase (rad)", "viridis", plo, phi))
        for ax, (img, title, cmap, vmin, vmax) in zip(axes[i], panels):
            ax.set_xticks([])
            ax.set_yticks([])
            if img is False:
                ax.text(0.5, 0.5, "no true object\n(imported data)", ha="center", va="center",
                        transform=ax.transAxes)
                ax.set_title(title)
                continue
            im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_title(title, fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8)
        m_ = comp.get("metrics") or {}
        amp_r = (m_.get("amplitude") or {}).get("pearson_r")
        ph_r = (m_.get("phase") or {}).get("pearson_r")
        label = str(comp["scenario"])
        if amp_r is not None and ph_r is not None:
            label += f"\namp r {amp_r:.3f}\nphase r {ph_r:.3f}"
        axes[i, 0].set_ylabel(label, fontsize=9)
    fig.suptitle("All scenarios: truth and reconstruction (test region, stitched canvas)")
    save_figure(fig, out)
    return Path(out)
