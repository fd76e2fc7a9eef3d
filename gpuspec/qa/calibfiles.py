"""Readers of the calibration products in desispec's layouts, for the QA pictures.

desispec writes (``desispec.io.write_fiberflat``, ``write_sky``,
``write_flux_calibration``):

=================  ==========================================================
file               HDUs (primary first)
=================  ==========================================================
fiberflat-*.fits   FIBERFLAT (nspec, nwave), IVAR, MASK, MEANSPEC (nwave),
                   WAVELENGTH (nwave), FIBERMAP (optional)
sky-*.fits         SKY (nspec, nwave) e⁻/Å, IVAR, MASK, WAVELENGTH, STATIVAR
                   and others (optional)
fluxcalib-*.fits   FLUXCALIB (nspec, nwave) (e⁻/Å)/(1e-17 erg/s/cm²/Å), IVAR,
                   MASK, WAVELENGTH
=================  ==========================================================

These readers only take what the pictures need, with errors naming the file
and HDU. When gpuspec's own calibration steps land with readers in
``gpuspec.io``, the pictures should call those instead. Host (NumPy).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import BadDataError

__all__ = ["read_fiberflat_file", "read_sky_file", "read_fluxcalib_file"]


def _read(path: str, primary: str, others: tuple, optional: tuple = ()) -> dict:
    from ..io.util import header_dict, open_fits, read_image_hdu, read_table_hdu

    path = os.fspath(path)
    with open_fits(path) as fx:
        data, hdr = read_image_hdu(fx, 0, path, header=True)
        out = {primary: np.asarray(data, dtype=np.float64), "header": header_dict(hdr)}
        for name in others:
            out[name] = read_image_hdu(fx, name, path)
        for name in optional:
            if name in fx:
                out[name] = (read_table_hdu(fx, name, path) if name == "FIBERMAP"
                             else read_image_hdu(fx, name, path))
    shape = out[primary].shape
    if len(shape) != 2:
        raise BadDataError(f"expected a 2-D (nspec, nwave) image, got shape {shape}",
                           path=path, hdu=primary)
    wave = np.asarray(out["WAVELENGTH"], dtype=np.float64).ravel()
    if wave.size != shape[1]:
        raise BadDataError(f"{wave.size} wavelengths for {shape[1]} columns", path=path,
                           hdu="WAVELENGTH")
    out["WAVELENGTH"] = wave
    for name in ("IVAR", "MASK"):
        if name in out and np.shape(out[name]) != shape:
            raise BadDataError(f"shape {np.shape(out[name])} differs from {primary} {shape}",
                               path=path, hdu=name)
    out["path"] = path
    return out


def read_fiberflat_file(path: str) -> dict:
    """FIBERFLAT, IVAR, MASK, MEANSPEC, WAVELENGTH, header (and FIBERMAP) of a fiberflat file."""
    d = _read(path, "FIBERFLAT", ("IVAR", "MASK", "MEANSPEC", "WAVELENGTH"), ("FIBERMAP",))
    d["MEANSPEC"] = np.asarray(d["MEANSPEC"], dtype=np.float64).ravel()
    return d


def read_sky_file(path: str) -> dict:
    """SKY, IVAR, MASK, WAVELENGTH and header of a sky model file."""
    return _read(path, "SKY", ("IVAR", "MASK", "WAVELENGTH"))


def read_fluxcalib_file(path: str) -> dict:
    """FLUXCALIB, IVAR, MASK, WAVELENGTH and header of a flux calibration file."""
    return _read(path, "FLUXCALIB", ("IVAR", "MASK", "WAVELENGTH"))
