"""Instrument, atmosphere, fiber throughputs and the flat-field lamp of the simulator.

One home for the light path of simulated photons (the calibration tests'
:mod:`gpuspec.calibrate.synthetic` calls these too):

- :func:`instrument_throughput` — telescope × fiber × spectrograph × CCD QE of a band
  (piecewise linear, peak ≈ 0.34);
- :func:`atmosphere_transmission` — smooth extinction at Kitt Peak: Rayleigh scattering,
  aerosols and the ozone Chappuis band, ``10^(-0.4 k(λ) X)`` at airmass ``X``;
- :func:`throughput` (their product) and :func:`calib_vector`, the photons detected per
  bin per unit f_λ (10⁻¹⁷ erg/s/cm²/Å): ``1e-17 λ/(hc) · A · T(λ) · EXPTIME · dw``;
- :func:`fiber_throughput` — each fiber's relative throughput ``T_f(λ)``: an achromatic
  factor times ``1 + c·(g1·x + 0.3·g2·x²)``, ``x = (λ - 6700)/3100``;
- :func:`flat_lamp` — the continuum (quartz-halogen, 3100 K blackbody) lamp of the
  flat-field exposures seen through the instrument (no atmosphere), electron/Å per fiber.

The numbers are plausible values written down for the simulation, not DESI
measurements: DESI's throughputs come from desimodel, its extinction curve from
KPNO measurements.

Host NumPy (small arrays).
"""

from __future__ import annotations

import numpy as np

from .cameras import PRODUCTION_WAVE

__all__ = ["AREA_CM2", "HC_ERG_AA", "AIRMASS", "FLAT_LAMP_TEMP", "instrument_throughput",
           "atmosphere_extinction", "atmosphere_transmission", "throughput", "calib_vector",
           "planck_lambda", "fiber_throughput", "flat_lamp"]

H_PLANCK, C_LIGHT, K_BOLTZ = 6.62607015e-27, 2.99792458e10, 1.380649e-16  # cgs (exact SI)
HC_ERG_AA = H_PLANCK * C_LIGHT * 1e8   # h·c in erg·Å
AREA_CM2 = 8.678e4          # Mayall collecting area used by the simulator (cm²)
AIRMASS = 1.1               # airmass of every simulated science exposure (header AIRMASS)
FLAT_LAMP_TEMP = 3100.0     # K, colour temperature of the flat-field lamps

# telescope × fiber × spectrograph × CCD QE per band, piecewise linear (no atmosphere)
_INSTRUMENT = {
    "b": ([3300, 3600, 4000, 4600, 5200, 5800, 6100], [0.03, 0.10, 0.25, 0.35, 0.35, 0.29, 0.23]),
    "r": ([5500, 5760, 6500, 7620, 7850], [0.23, 0.31, 0.35, 0.31, 0.26]),
    "z": ([7200, 7520, 8500, 9300, 9824, 10100], [0.27, 0.33, 0.31, 0.21, 0.10, 0.05]),
}


def instrument_throughput(band: str, wave) -> np.ndarray:
    """Instrument throughput (0–1) of ``band`` at ``wave`` (Å), without the atmosphere.

    Backends: host only (NumPy).
    """
    x, y = _INSTRUMENT[band]
    return np.interp(np.asarray(wave, dtype=np.float64), x, y)


def atmosphere_extinction(wave) -> np.ndarray:
    """Extinction k(λ) in magnitudes per airmass (smooth model of the Kitt Peak sky).

    Rayleigh scattering (sea-level optical depth 0.0088 λ_µm^-4.05, scaled by the 0.78 atm
    pressure at 2100 m), aerosols (0.02 λ_µm^-1.3 mag) and the ozone Chappuis band
    (0.03 mag, Gaussian of σ 600 Å at 6000 Å): 0.54 mag at 3600 Å, 0.18 at 5000 Å,
    0.07 at 7000 Å, 0.03 at 9000 Å. Telluric absorption bands are not modelled.

    Backends: host only (NumPy).
    """
    lam = np.asarray(wave, dtype=np.float64) / 1e4
    rayleigh = 1.0857 * 0.78 * 0.0088 * lam ** -4.05
    aerosol = 0.02 * lam ** -1.3
    ozone = 0.03 * np.exp(-0.5 * ((lam - 0.6) / 0.06) ** 2)
    return rayleigh + aerosol + ozone


def atmosphere_transmission(wave, airmass: float = AIRMASS) -> np.ndarray:
    """Fraction of the light transmitted by the atmosphere at ``airmass``.

    Backends: host only (NumPy).
    """
    return 10.0 ** (-0.4 * atmosphere_extinction(wave) * float(airmass))


def throughput(band: str, wave, airmass: float = AIRMASS) -> np.ndarray:
    """System throughput (atmosphere × instrument) of ``band`` at ``wave``.

    Backends: host only (NumPy).
    """
    return instrument_throughput(band, wave) * atmosphere_transmission(wave, airmass)


def calib_vector(band: str, wave, dw: float, exptime: float,
                 airmass: float = AIRMASS) -> np.ndarray:
    """Photons per bin per unit f_λ (1e-17 erg/s/cm²/Å): 1e-17·λ/(hc)·A·T(λ)·t·dw.

    ``T`` is :func:`throughput` (atmosphere at ``airmass`` × instrument), for a fiber of
    relative throughput 1 and a transparency of 1.

    Backends: host only (NumPy).
    """
    w = np.asarray(wave, dtype=np.float64)
    return (1e-17 * w / HC_ERG_AA * AREA_CM2 * throughput(band, w, airmass) * float(exptime)
            * float(dw))


def planck_lambda(wave, teff):
    """Blackbody B_λ(T) in erg/s/cm²/Å/sr (``wave`` Å, ``teff`` K; broadcasting).

    Backends: host only (NumPy).
    """
    lam = np.asarray(wave, np.float64) * 1e-8
    x = H_PLANCK * C_LIGHT / (lam * K_BOLTZ * np.asarray(teff, np.float64))
    return 2 * H_PLANCK * C_LIGHT ** 2 / lam ** 5 / np.expm1(x) * 1e-8


def fiber_throughput(achromatic, g1, g2, wave, chromatic: float = 0.02) -> np.ndarray:
    """Relative throughput of each fiber, (nfiber, nwave).

    ``T_f(λ) = a_f · (1 + chromatic·(g1_f·x + 0.3·g2_f·x²))`` with ``x = (λ - 6700)/3100``
    (−1…1 over 3600–9800 Å): a few % from fiber to fiber (``a_f``) and across wavelength.

    Parameters
    ----------
    achromatic, g1, g2 : arrays (nfiber,)
        Achromatic factor and two standard-normal shape coefficients of each fiber.
    wave : array (nwave,)
    chromatic : float
        Amplitude of the wavelength dependence.

    Backends: host only (NumPy).
    """
    x = (np.asarray(wave, np.float64) - 6700.0) / 3100.0
    a = np.asarray(achromatic, np.float64)[:, None]
    c1 = np.asarray(g1, np.float64)[:, None]
    c2 = np.asarray(g2, np.float64)[:, None]
    return a * (1.0 + chromatic * c1 * x[None, :] + 0.3 * chromatic * c2 * x[None, :] ** 2)


def flat_lamp(band: str, wave, level: float = 2.0e4) -> np.ndarray:
    """Continuum lamp through the instrument (electron/Å per fiber of throughput 1).

    A 3100 K blackbody (quartz-halogen lamp) times :func:`instrument_throughput`,
    scaled so that its maximum over the band's production grid is ``level``.

    Backends: host only (NumPy).
    """
    w = np.asarray(wave, np.float64)
    lo, hi = PRODUCTION_WAVE[band]
    ref = np.arange(lo, hi + 0.25, 0.5)
    s_ref = planck_lambda(ref, FLAT_LAMP_TEMP) * instrument_throughput(band, ref)
    s = planck_lambda(w, FLAT_LAMP_TEMP) * instrument_throughput(band, w)
    return level * s / s_ref.max()
