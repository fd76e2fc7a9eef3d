"""The calibration products as the QA pictures use them (dicts keyed by HDU name).

The files are read by gpuspec's own readers, which accept gpuspec's and desispec's
layouts alike (:func:`gpuspec.io.read_fiberflat`, :func:`gpuspec.io.read_sky`,
:func:`gpuspec.io.read_flux_calibration`; errors name the file and HDU). This module
only re-labels their fields for the plotting code. Host (NumPy).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["read_fiberflat_file", "read_sky_file", "read_fluxcalib_file"]


def _common(path, obj, primary, values) -> dict:
    return {primary: np.asarray(values, dtype=np.float64),
            "IVAR": np.asarray(obj.ivar), "MASK": np.asarray(obj.mask),
            "WAVELENGTH": np.asarray(obj.wave, dtype=np.float64).ravel(),
            "header": dict(obj.meta or {}), "path": os.fspath(path)}


def read_fiberflat_file(path) -> dict:
    """FIBERFLAT, IVAR, MASK, MEANSPEC, WAVELENGTH, header (and FIBERMAP) of a fiberflat file.

    Backends: host only (NumPy; file I/O).
    """
    from ..io.fiberflat import read_fiberflat

    ff = read_fiberflat(path)
    out = _common(path, ff, "FIBERFLAT", ff.fiberflat)
    out["MEANSPEC"] = np.asarray(ff.meanspec, dtype=np.float64).ravel()
    if ff.fibermap is not None:
        out["FIBERMAP"] = ff.fibermap
    return out


def read_sky_file(path) -> dict:
    """SKY, IVAR, MASK, WAVELENGTH and header of a sky model file.

    Backends: host only (NumPy; file I/O).
    """
    from ..io.sky import read_sky

    sky = read_sky(path)
    return _common(path, sky, "SKY", sky.flux)


def read_fluxcalib_file(path) -> dict:
    """FLUXCALIB, IVAR, MASK, WAVELENGTH and header of a flux calibration file.

    Backends: host only (NumPy; file I/O).
    """
    from ..io.fluxcalib import read_flux_calibration

    fc = read_flux_calibration(path)
    return _common(path, fc, "FLUXCALIB", fc.calib)
