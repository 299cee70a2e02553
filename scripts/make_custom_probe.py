#!/usr/bin/env python3
"""Generate the shipped custom probe: a Fresnel zone plate (FZP) with central stop,
propagated out of focus.

Model (far-field optics on the N x N grid, frequency units = cycles per N px):
- the FZP's exit pupil is an annulus, outer radius `rho` (frequency px), central stop
  of `stop` x rho, with a one-pixel cosine edge taper;
- defocus multiplies the pupil by exp(i * alpha * (k / rho)^2) (alpha rad at the rim);
  geometrically the beam then has diameter ~ 2 * N * alpha / (pi * rho) px, a ring
  (the central stop's shadow) with a curved (quadratic) phase;
- probe = fftshift(ifft2(ifftshift(pupil))), scaled to unit peak amplitude.
The absolute scale is irrelevant: the pipeline sets it from `nphotons` (docs/design.md, 'Dose and normalisation').

Usage:  python scripts/make_custom_probe.py --N 64 --out data/probes/custom_probe_64.npz
"""

import argparse

import numpy as np


def fzp_probe(n: int, rho: float, stop: float, alpha: float) -> np.ndarray:
    f = np.fft.fftshift(np.fft.fftfreq(n)) * n
    ky, kx = np.meshgrid(f, f, indexing="ij")
    k = np.hypot(kx, ky)

    def taper(edge):  # 1 inside, 0 outside, cosine over one px
        t = np.clip(0.5 + edge, 0.0, 1.0)
        return 0.5 - 0.5 * np.cos(np.pi * t)

    pupil = taper(rho - k) * taper(k - stop * rho)
    pupil = pupil * np.exp(1j * alpha * (k / rho) ** 2)
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil)))
    return probe / np.abs(probe).max()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rho-frac", type=float, default=0.19, help="pupil radius / N")
    ap.add_argument("--stop", type=float, default=0.45, help="central stop radius / pupil radius")
    ap.add_argument("--footprint-frac", type=float, default=0.5, help="defocused beam diameter / N")
    a = ap.parse_args()
    rho = a.rho_frac * a.N
    alpha = np.pi * rho * a.footprint_frac / 2  # diameter 2*N*alpha/(pi*rho) = footprint_frac*N
    probe = fzp_probe(a.N, rho, a.stop, alpha).astype(np.complex64)
    np.savez(a.out, probeGuess=probe)
    print(f"wrote {a.out}: {a.N}x{a.N} complex64, pupil radius {rho:.1f} px, stop {a.stop}, "
          f"defocus {alpha:.2f} rad at the rim")


if __name__ == "__main__":
    main()
