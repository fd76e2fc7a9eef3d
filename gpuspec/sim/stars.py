"""Standard stars of the simulator: templates of gpuspec's stellar library.

A standard star is a template of :mod:`gpuspec.calibrate.templates` (the library the
standard-star fit uses), Doppler-shifted by its radial velocity and scaled so that
its r-band magnitude (:func:`gpuspec.calibrate.templates.synthetic_mag`) is the
star's ``MAG_R``; its FLUX_G/R/Z are the same synthetic magnitudes in nanomaggies.
:func:`star_library` is the library evaluated on a grid that covers every simulated
wavelength (3200–10800 Å, 0.5 Å, containing the library's own 3500–10500 Å grid and
its 5500 Å normalisation point, so that it equals ``load_templates()`` there).
Templates are drawn among the F/G dwarfs and subgiants of the grid (Teff 5750–7000 K).

Host NumPy.
"""

from __future__ import annotations

import functools

import numpy as np

from .streams import stream

__all__ = ["star_library", "draw_templates", "star_flux", "star_nanomaggies", "STD_TEFF_RANGE",
           "C_KMS"]

STD_TEFF_RANGE = (5750.0, 7000.0)
C_KMS = 299792.458
_GRID = (3200.0, 10800.0, 0.5)


@functools.lru_cache(maxsize=1)
def star_library():
    """The stellar template library on 3200–10800 Å every 0.5 Å (cached).

    Backends: host only (NumPy).
    """
    from ..calibrate.templates import make_templates

    lo, hi, step = _GRID
    return make_templates(np.arange(lo, hi + 0.25 * step, step))


def draw_templates(seed: int, petal: int, n: int) -> np.ndarray:
    """Template index of every fiber of ``petal`` (used for its standard stars).

    Drawn from ``stream(seed, "stdstars", petal)`` among the templates with Teff in
    :data:`STD_TEFF_RANGE`, for all ``n`` fibers (independent of which are stars).

    Backends: host only (NumPy).
    """
    lib = star_library()
    cand = np.flatnonzero((lib.teff >= STD_TEFF_RANGE[0]) & (lib.teff <= STD_TEFF_RANGE[1]))
    return cand[stream(seed, "stdstars", petal).integers(0, cand.size, n)]


def _scaled(template, vrad, mag_r):
    """Observed-frame wavelengths (nstar, nlib) and f_λ (1e-17) of the scaled templates."""
    from ..calibrate.templates import synthetic_mag

    lib = star_library()
    tid = np.asarray(template, int)
    w = lib.wave[None, :] * (1.0 + np.asarray(vrad, np.float64)[:, None] / C_KMS)
    f = lib.flux[tid]
    m = np.array([synthetic_mag(w[i], f[i], "R") for i in range(tid.size)])
    return w, f * 10.0 ** (-0.4 * (np.asarray(mag_r, np.float64) - m))[:, None]


def star_flux(template, vrad, mag_r, wave) -> np.ndarray:
    """Bin-averaged f_λ (1e-17 erg/s/cm²/Å) of stars on the bin centres ``wave``.

    Parameters
    ----------
    template : int array (nstar,)
        Indices in :func:`star_library`.
    vrad : array (nstar,)
        Radial velocities (km/s).
    mag_r : array (nstar,)
        AB r magnitudes (through :func:`gpuspec.calibrate.templates.synthetic_mag`).
    wave : array (nwave,)
        Bin centres (a linear grid).

    Returns
    -------
    ndarray (nstar, nwave)
        The exact average over each bin of the piecewise-linear template
        (:func:`gpuspec.calibrate.util.resample_flux`).

    Backends: host only (NumPy).
    """
    from ..calibrate.util import resample_flux

    w, f = _scaled(template, vrad, mag_r)
    wave = np.asarray(wave, np.float64)
    out = np.empty((len(f), wave.size))
    for i in range(len(f)):  # a few stars per petal
        out[i] = resample_flux(wave, w[i], f[i]) if wave.size > 1 else \
            np.interp(wave, w[i], f[i])
    return out


def star_nanomaggies(template, vrad, mag_r) -> dict:
    """FLUX_G, FLUX_R, FLUX_Z (nanomaggies) of the scaled, shifted templates.

    Backends: host only (NumPy).
    """
    from ..calibrate.templates import synthetic_mag

    w, f = _scaled(template, vrad, mag_r)
    out = {}
    for b in ("G", "R", "Z"):
        m = np.array([synthetic_mag(w[i], f[i], b) for i in range(len(f))])
        out[b] = 10.0 ** (-0.4 * (m - 22.5))
    return out
