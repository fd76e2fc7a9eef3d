"""A small synthetic library of standard-star templates (Teff × log g × [Fe/H]).

Real DESI fits its F-type standard stars against a grid of theoretical stellar
spectra (the ``stdstar_templates`` file of ``$DESI_SPECTRO_CALIB``, built from
model atmospheres) and normalises the best model to the star's Legacy Survey (or
Gaia) photometry through speclite's filter curves. Those files and curves are not
available here, so gpuspec ships a library built from physics that can be written
down, generated on demand (deterministic, ~15 MB in memory, not stored):

- continuum: a blackbody B_λ(Teff), with a blue "line haze" that deepens for
  cooler and more metal-rich stars (``1 - 0.25·10^{0.4[Fe/H]}·(6000/T)²·e^{-(λ-3500)/600}``);
- absorption lines multiplying it, Gaussian cores (+ broad wings for Balmer):
  Balmer Hα…H9 (depth ∝ (T/7500)⁴, width growing with gravity), Ca II H&K, the
  G band, Mg b, Fe 5270/5328, Na D and the Ca triplet (depths ∝ 10^{α[Fe/H]}, growing
  toward cool temperatures; wings ∝ 10^{0.1 (log g - 4)} pressure broadening);
- grid: Teff 5000–7500 K (250 K), log g 3.5/4.0/4.5, [Fe/H] −2/−1/−0.5/0 (132
  templates), vacuum wavelengths 3500–10500 Å every 0.5 Å, normalised to f_λ = 1 at
  5500 Å.

Broad-band magnitudes use smooth top-hat approximations of the DECam g, r, z
passbands (:data:`BANDPASSES`; photon-counting AB magnitudes), where DESI uses the
measured Legacy Survey curves. The library is a physically reasonable stand-in
for testing the standard-star fit and the flux calibration, not a substitute for
model atmospheres.

Host NumPy.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["TemplateLibrary", "load_templates", "make_templates", "synthetic_mag",
           "bandpass", "BANDPASSES", "write_templates", "read_templates"]

#: (blue edge, red edge, edge width) in Å of the approximate DECam passbands
BANDPASSES = {"G": (4000.0, 5450.0, 60.0), "R": (5600.0, 7150.0, 60.0),
              "Z": (8250.0, 9900.0, 80.0)}
C_AA = 2.99792458e18  # Å/s

# name, vacuum λ (Å), base depth, core σ (Å), kind ('H' Balmer, 'M' metal)
_LINES = [
    ("H9", 3836.47, 0.35, 3.0, "H"), ("H8", 3890.15, 0.40, 3.0, "H"),
    ("CAK", 3934.78, 0.70, 2.5, "M"), ("CAH", 3969.59, 0.60, 2.5, "M"),
    ("HEPS", 3971.20, 0.40, 3.5, "H"), ("HDELTA", 4102.89, 0.45, 4.0, "H"),
    ("GBAND", 4305.0, 0.25, 5.0, "M"), ("HGAMMA", 4341.68, 0.45, 4.0, "H"),
    ("HBETA", 4862.68, 0.50, 4.0, "H"), ("MGB1", 5168.76, 0.30, 1.2, "M"),
    ("MGB2", 5174.13, 0.35, 1.2, "M"), ("MGB3", 5185.05, 0.35, 1.2, "M"),
    ("FE5270", 5271.0, 0.20, 1.5, "M"), ("FE5328", 5329.5, 0.15, 1.5, "M"),
    ("NAD2", 5891.58, 0.35, 1.0, "M"), ("NAD1", 5897.56, 0.30, 1.0, "M"),
    ("HALPHA", 6564.61, 0.50, 4.5, "H"), ("CAT1", 8500.36, 0.30, 2.0, "M"),
    ("CAT2", 8544.44, 0.40, 2.0, "M"), ("CAT3", 8664.52, 0.35, 2.0, "M"),
]
TEFF_GRID = np.arange(5000.0, 7501.0, 250.0)
LOGG_GRID = np.array([3.5, 4.0, 4.5])
FEH_GRID = np.array([-2.0, -1.0, -0.5, 0.0])


@dataclass
class TemplateLibrary:
    """Template grid: ``wave`` (nwave,), ``flux`` (ntemplate, nwave), parameters."""

    wave: np.ndarray
    flux: np.ndarray
    teff: np.ndarray
    logg: np.ndarray
    feh: np.ndarray

    @property
    def templateid(self) -> np.ndarray:
        """Template index 0 … n-1.

        Backends: host only (NumPy).
        """
        return np.arange(len(self.teff))


def _spectrum(wave, teff, logg, feh):
    from .synthetic import planck_lambda

    f = planck_lambda(wave, teff)
    haze = 0.25 * 10 ** (0.4 * feh) * (6000.0 / teff) ** 2 * np.exp(-(wave - 3500.0) / 600.0)
    f = f * (1.0 - np.clip(haze, 0.0, 0.6))
    press = 10 ** (0.1 * (logg - 4.0))
    for _, lam, depth, sig, kind in _LINES:
        if kind == "H":
            d = min(0.85, depth * (teff / 7500.0) ** 4)
            prof = (0.7 * np.exp(-0.5 * ((wave - lam) / (sig * press)) ** 2)
                    + 0.3 * np.exp(-0.5 * ((wave - lam) / (6.0 * sig * press)) ** 2))
        else:
            d = min(0.9, depth * 10 ** (0.35 * feh) * (6000.0 / teff) ** 3)
            prof = np.exp(-0.5 * ((wave - lam) / (sig * np.sqrt(press))) ** 2)
        f = f * (1.0 - d * prof)
    return f


def make_templates(wave=None) -> TemplateLibrary:
    """Build the library (see the module docstring) on ``wave`` (default 3500–10500/0.5).

    Backends: host only (NumPy).
    """
    wave = np.arange(3500.0, 10500.0 + 0.25, 0.5) if wave is None else np.asarray(wave, float)
    T, G, F = np.meshgrid(TEFF_GRID, LOGG_GRID, FEH_GRID, indexing="ij")
    T, G, F = T.ravel(), G.ravel(), F.ravel()
    flux = np.empty((T.size, wave.size))
    i5500 = np.argmin(np.abs(wave - 5500.0))
    for i in range(T.size):  # building the library: 132 templates, once per process
        s = _spectrum(wave, T[i], G[i], F[i])
        flux[i] = s / s[i5500]
    return TemplateLibrary(wave=wave, flux=flux, teff=T, logg=G, feh=F)


@functools.lru_cache(maxsize=1)
def _default_library() -> TemplateLibrary:
    return make_templates()


def load_templates(path: str | os.PathLike | None = None) -> TemplateLibrary:
    """The template library: gpuspec's synthetic one, or a desispec-format file.

    Backends: host only (NumPy; file I/O).
    """
    if path is None:
        return _default_library()
    return read_templates(path)


def bandpass(band: str, wave) -> np.ndarray:
    """Approximate passband response (0–1) of DECam ``band`` (G, R or Z) at ``wave``.

    Backends: host only (NumPy).
    """
    lo, hi, e = BANDPASSES[band.upper()]
    w = np.asarray(wave, np.float64)
    return 1.0 / (1.0 + np.exp(-(w - lo) / e)) / (1.0 + np.exp((w - hi) / e))


def synthetic_mag(wave, flux, band: str) -> np.ndarray:
    """Photon-counting AB magnitude of f_λ spectra (10⁻¹⁷ erg/s/cm²/Å) in ``band``.

    ``m = -2.5 log10( ∫ f_λ S λ dλ / ∫ S c/λ dλ ) - 48.6`` with f_λ in erg/s/cm²/Å.

    Backends: host only (NumPy).
    """
    w = np.asarray(wave, np.float64)
    S = bandpass(band, w)
    f = np.atleast_2d(np.asarray(flux, np.float64)) * 1e-17
    num = np.trapezoid(f * S * w, w, axis=-1) if hasattr(np, "trapezoid") else \
        np.trapz(f * S * w, w, axis=-1)
    den = np.trapezoid(S * C_AA / w, w) if hasattr(np, "trapezoid") else \
        np.trapz(S * C_AA / w, w)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = -2.5 * np.log10(num / den) - 48.6
    return m if np.ndim(flux) > 1 else m[0]


def write_templates(path, lib: TemplateLibrary | None = None) -> str:
    """Write a library in desispec's ``stdstar_templates`` layout (read_stdstar_templates).

    HDU 0 flux (ntemplate, nwave) float32; HDU 1 table TEMPLATEID, TEFF, LOGG, FEH;
    HDU 2 wavelength (Å, float64). Written atomically.

    Backends: host only (NumPy; file I/O).
    """
    import fitsio

    from ..io.util import atomic_output, write_checksums

    lib = lib or load_templates()
    tab = np.zeros(len(lib.teff), dtype=[("TEMPLATEID", "i4"), ("TEFF", "f4"),
                                          ("LOGG", "f4"), ("FEH", "f4")])
    tab["TEMPLATEID"], tab["TEFF"], tab["LOGG"], tab["FEH"] = (lib.templateid, lib.teff,
                                                               lib.logg, lib.feh)
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(lib.flux.astype(np.float32),
                     header=[{"name": "BUNIT", "value": "arbitrary f_lambda"},
                             {"name": "ORIGIN", "value": "gpuspec synthetic templates"}])
            fx.write(tab, extname="METADATA")
            fx.write(lib.wave.astype(np.float64), extname="WAVELENGTH",
                     header=[{"name": "BUNIT", "value": "Angstrom"}])
        write_checksums(tmp)
    return os.fspath(path)


def read_templates(path) -> TemplateLibrary:
    """Read a desispec-format template file (wavelength in HDU 2).

    Backends: host only (NumPy; file I/O).
    """
    from ..errors import MissingHDUError
    from ..io.util import open_fits, read_image_hdu, read_table_hdu

    path = os.fspath(path)
    with open_fits(path) as fx:
        if len(fx) < 3:
            raise MissingHDUError("template file needs the wavelength in HDU 2", path=path,
                                  hdu=2)
        flux = read_image_hdu(fx, 0, path).astype(np.float64)
        meta = read_table_hdu(fx, 1, path)
        wave = read_image_hdu(fx, 2, path).astype(np.float64)
    return TemplateLibrary(wave=wave, flux=flux, teff=np.asarray(meta["TEFF"], float),
                           logg=np.asarray(meta["LOGG"], float),
                           feh=np.asarray(meta["FEH"], float))
