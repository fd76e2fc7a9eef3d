"""Per-camera PSFs of the simulator, derived from the real r0 template.

The template is a real specex Gauss–Hermite PSF of camera r0
(``shared/reference/psf/psf-r0-00051060.fits``, shipped as
``gpuspec/data/psf-r0-00051060.fits.gz``; trace domain 5543–7826 Å).
r cameras use it unchanged. b and z cameras use a copy whose wavelength axis is
linearly remapped (:meth:`GaussHermitePSF.remap_wavelength`) so that the
production grid of the band lands where r's production grid (5760–7620 Å) lies
on the CCD: b 3600–5800 Å and z 7520–9824 Å then span the same rows as r
5760–7620 Å, fully on the CCD. The pixel geometry (traces, spot shapes) is the
template's; only the wavelengths attached to it move. Every petal uses the same
model.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import MissingFileError
from ..grids import lattice_grid
from .cameras import PRODUCTION_WAVE

__all__ = ["default_template_path", "band_domain", "camera_psf", "load_template",
           "trace_wave_range"]

_ENV = "GPUSPEC_PSF_TEMPLATE"


def default_template_path() -> str:
    """Path of the r0 template PSF.

    ``$GPUSPEC_PSF_TEMPLATE`` when set, else the copy shipped in the package
    (``gpuspec/data/psf-r0-00051060.fits.gz``: the real r0 PSF of
    ``shared/reference/psf``, byte-identical once decompressed, md5
    f8315673eba76c802a48c1295873fdc3), so the simulator and the demo work on a
    fresh machine without the reference data.

    Backends: host only (NumPy).
    """
    if os.environ.get(_ENV):
        return os.environ[_ENV]
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                        "psf-r0-00051060.fits.gz")


def load_template(path: str | None = None):
    """Read the template PSF (r band).

    Backends: host only (NumPy).
    """
    from ..psf import read_psf

    path = path or default_template_path()
    if not os.path.exists(path):
        raise MissingFileError("template PSF not found (set GPUSPEC_PSF_TEMPLATE)", path=path)
    return read_psf(path)


def band_domain(band: str, template) -> tuple[float, float]:
    """Trace wavelength domain (wmin, wmax) of ``band`` derived from the r template.

    The linear map sends r's production grid ends (5760, 7620 Å) onto the
    band's production grid ends; the template domain follows the same map.

    Backends: host only (NumPy).
    """
    if band == "r":
        return float(template.wmin), float(template.wmax)
    r0, r1 = PRODUCTION_WAVE["r"]
    b0, b1 = PRODUCTION_WAVE[band]
    a = (b1 - b0) / (r1 - r0)
    return b0 + (template.wmin - r0) * a, b0 + (template.wmax - r0) * a


def camera_psf(camera: str, template):
    """The PSF model of ``camera`` (a remapped copy of the template for b and z).

    Backends: host only (NumPy).
    """
    band = camera[0]
    if band == "r":
        return template
    wmin, wmax = band_domain(band, template)
    return template.remap_wavelength(wmin, wmax)


def trace_wave_range(psf, fibers, y_lo: float, y_hi: float, step: float = 0.8,
                     anchor: float = 0.0) -> np.ndarray:
    """Wavelength grid ``anchor + k*step`` (within the PSF domain) whose trace rows
    for any of ``fibers`` fall within ``[y_lo, y_hi]``.

    Used to render every wavelength that can put light on the image rows.

    Backends: host only (NumPy).
    """
    wave = lattice_grid(psf.wmin, psf.wmax, step, anchor)
    y = psf.y(np.asarray(fibers), wave)
    ok = np.any((y >= y_lo) & (y <= y_hi), axis=0)
    if not ok.any():
        return wave[:0]
    i0, i1 = np.flatnonzero(ok)[[0, -1]]
    return wave[i0:i1 + 1].copy()
