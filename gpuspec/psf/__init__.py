"""Gauss–Hermite PSF model (specex format), batched through ``xp``.

>>> psf = gpuspec.psf.read_psf("psf-r0-00051060.fits")       # doctest: +SKIP
>>> xc, yc, stamps = psf.spots(fibers, wave, xp=cupy)          # doctest: +SKIP
"""

from .gausshermite import GaussHermitePSF


def read_psf(path):
    """Read a Gauss–Hermite PSF file (see :func:`gpuspec.io.psf.read_psf`).

    Backends: host only (file I/O); the PSF evaluates on any ``xp``.
    """
    from ..io.psf import read_psf as _read

    return _read(path)


def write_psf(path, psf, extra_meta=None):
    """Write a Gauss–Hermite PSF file (see :func:`gpuspec.io.psf.write_psf`).

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    from ..io.psf import write_psf as _write

    return _write(path, psf, extra_meta)


__all__ = ["GaussHermitePSF", "read_psf", "write_psf"]
