"""Truth spectra: object fluxes, sky, throughput and the photon budget per bin.

Units
-----
- Wavelengths: vacuum Å. Spectra live on a linear grid of bin centres ``wave``
  with constant step ``dw`` (default 0.8 Å, aligned with the production grid).
- Flux densities f_λ: 1e-17 erg/s/cm²/Å (DESI's unit), averaged over each bin
  (emission and absorption lines are integrated exactly over the bin edges).
- ``calib`` (:func:`gpuspec.sim.instrument.calib_vector`): photons detected per bin per
  unit f_λ (1e-17 erg/s/cm²/Å) for the exposure time, the collecting area, the
  atmosphere and the instrument throughput of the camera.
  ``PHOT = (f_obj·transparency + f_sky·sky_scale)·calib·T_f(λ)`` are the photo-electrons
  per bin that enter the rendering (before pixflat), ``T_f`` the fiber's relative
  throughput (:meth:`gpuspec.sim.targets.Targets.throughput`).

Host-side NumPy (small arrays: nspec × nwave).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from .instrument import AREA_CM2, calib_vector, throughput
from .streams import stream
from .targets import Targets, continuum

# AREA_CM2, throughput and calib_vector live in :mod:`gpuspec.sim.instrument`
__all__ = ["AREA_CM2", "throughput", "calib_vector", "bin_gauss", "object_flux", "SkyModel",
           "make_sky", "exposure_conditions"]


def bin_gauss(wave, dw: float, center, sigma) -> np.ndarray:
    """Fraction of a unit Gaussian (``center``, ``sigma`` broadcastable, shape (..., 1))
    falling in each bin ``[wave - dw/2, wave + dw/2]``: shape (..., nwave).

    Backends: host only (NumPy).
    """
    w = np.asarray(wave, dtype=np.float64)
    c = np.asarray(center, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64) * np.sqrt(2.0)
    return 0.5 * (erf((w + 0.5 * dw - c) / s) - erf((w - 0.5 * dw - c) / s))


def object_flux(t: Targets, wave, dw: float) -> np.ndarray:
    """Bin-averaged object f_λ (1e-17 erg/s/cm²/Å), shape (nspec, nwave).

    Galaxies and QSOs: continuum (sampled at bin centres) × absorption dips + emission
    lines integrated over each bin. Standard stars: their template averaged over each
    bin (:func:`gpuspec.sim.stars.star_flux`). Sky fibers get 0.

    Backends: host only (NumPy).
    """
    from .stars import star_flux

    w = np.asarray(wave, dtype=np.float64)
    f = continuum(t, w)
    std = np.flatnonzero(t.kind == "STD")
    if std.size:
        f[std] = star_flux(t.template[std], t.vrad[std], t.mag_r[std], w)
    for j in range(t.ab_wave.shape[1]):
        depth = t.ab_depth[:, j]
        if not np.any(depth):
            continue
        sig = t.ab_sigma[:, j][:, None]
        # bin average of depth·exp(-x²/2σ²) = depth·σ√(2π)/dw · (fraction in bin)
        prof = bin_gauss(w, dw, t.ab_wave[:, j][:, None], sig) * sig * np.sqrt(2 * np.pi) / dw
        f *= 1.0 - depth[:, None] * prof
    for j in range(t.em_wave.shape[1]):
        flux = t.em_flux[:, j]
        if not np.any(flux):
            continue
        f += flux[:, None] * bin_gauss(w, dw, t.em_wave[:, j][:, None],
                                       t.em_sigma[:, j][:, None]) / dw
    return f


@dataclass
class SkyModel:
    """Night sky per fiber: smooth continuum plus unresolved emission lines.

    ``line_wave`` (Å), ``line_flux`` (1e-17 erg/s/cm² per fiber), ``cont`` (x, y)
    anchor points of the continuum f_λ (1e-17 erg/s/cm²/Å per fiber).
    """

    line_wave: np.ndarray
    line_flux: np.ndarray
    cont_x: np.ndarray
    cont_y: np.ndarray
    line_sigma: float = 0.05

    def flux(self, wave, dw: float, scale: float = 1.0) -> np.ndarray:
        """Bin-averaged sky f_λ at ``wave`` (nwave,) times ``scale``.

        Backends: host only (NumPy).
        """
        w = np.asarray(wave, dtype=np.float64)
        f = np.interp(w, self.cont_x, self.cont_y)
        sel = (self.line_wave > w[0] - 2 * dw) & (self.line_wave < w[-1] + 2 * dw) if w.size \
            else np.zeros(0, bool)
        if np.any(sel):
            # each unresolved line touches at most two bins: exact but local evaluation
            lw, lf = self.line_wave[sel], self.line_flux[sel]
            k = np.clip(np.searchsorted(w, lw), 1, w.size - 1)
            for off in (-2, -1, 0, 1):
                kk = np.clip(k + off, 0, w.size - 1)
                frac = bin_gauss(w[kk], dw, lw, self.line_sigma)
                contrib = lf * frac / dw
                # kk may repeat across lines: accumulate with bincount (host numpy)
                f = f + np.bincount(kk, weights=np.where((k + off >= 0) & (k + off < w.size),
                                                         contrib, 0.0), minlength=w.size)
        return f * scale


_SKY_LINES = [  # vacuum Å, flux (1e-17 erg/s/cm² per fiber)
    (4048.85, 8.0), (4359.56, 15.0), (5462.27, 20.0), (5578.89, 80.0), (5891.58, 12.0),
    (5897.56, 10.0), (6302.05, 35.0), (6365.54, 12.0),
]


def make_sky(seed: int) -> SkyModel:
    """The night's sky model (fixed for the night; drawn from ``stream(seed, "sky")``).

    Atomic lines (Hg 4047/4358/5461, [OI] 5577/6300/6364, Na D) plus an OH forest: the
    bright Kitt Peak lines redward of 5900 Å (:data:`gpuspec.calibrate.skylines.SKY_LINES`,
    the wavelengths desispec fits throughput corrections on) with log-normal fluxes
    (median 8 × 1e-17 erg/s/cm² per fiber, σ_ln 0.9) growing to the red (×3 at 10100 Å).

    Backends: host only (NumPy).
    """
    from ..calibrate.skylines import SKY_LINES

    rng = stream(seed, "sky")
    atomic = np.array([w for w, _ in _SKY_LINES])
    oh_wave = SKY_LINES[(SKY_LINES > 5900.0)
                        & (np.abs(SKY_LINES[:, None] - atomic[None, :]).min(axis=1) > 1.0)]
    oh_flux = rng.lognormal(np.log(8.0), 0.9, oh_wave.size) * (
        1.0 + 2.0 * np.clip(oh_wave - 6200.0, 0.0, None) / 3900.0)
    lw = np.concatenate([atomic, oh_wave])
    lf = np.concatenate([[f for _, f in _SKY_LINES], oh_flux])
    order = np.argsort(lw)
    cx = np.array([3300.0, 3800.0, 4500.0, 5500.0, 6500.0, 7500.0, 8500.0, 9500.0, 10200.0])
    cy = np.array([0.55, 0.45, 0.40, 0.45, 0.45, 0.50, 0.55, 0.60, 0.65])
    return SkyModel(line_wave=lw[order], line_flux=lf[order], cont_x=cx, cont_y=cy)


def exposure_conditions(seed: int, expid: int) -> dict:
    """Per-exposure sky brightness scale and transparency (same for all cameras).

    Backends: host only (NumPy).
    """
    rng = stream(seed, "conditions", expid)
    return {"sky_scale": float(rng.uniform(0.9, 1.2)),
            "transparency": float(np.clip(rng.normal(1.0, 0.02), 0.9, 1.1)),
            "bias_seed": int(rng.integers(0, 2**31 - 1))}
