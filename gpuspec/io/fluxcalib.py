"""Flux calibrations (``fluxcalib-{camera}-{EXPID:08d}.fits``) and standard-star models
(``stdstars-{SPECTROGRAPH}-{EXPID:08d}.fits``), in desispec's layouts.

fluxcalib (``desispec.io.write_flux_calibration``):

======================  ===========================================================
HDU                     content
======================  ===========================================================
0 ``FLUXCALIB``         (nspec, nwave) float32 calibration, BUNIT
                        ``10**+17 cm2 count s / erg`` (electron/Å per 1e-17 erg/s/cm²/Å)
``IVAR``                (nspec, nwave) float32
``MASK``                (nspec, nwave) uint32
``WAVELENGTH``          (nwave,) float32, Å
``FIBERCORR``           table FLAT_TO_PSF_FLUX, PSF_TO_FIBER_FLUX (optional)
``STDSTAR_FIBERMAP``    fibermap rows of the stars used (optional)
======================  ===========================================================

stdstars (``desispec.io.write_stdstar_models``): ``FLUX`` (nstar, nwave) float32 in
10⁻¹⁷ erg/s/cm²/Å, ``WAVELENGTH`` float32, ``FIBERS`` int32, ``METADATA`` table
(TARGETID, FIBER, LOGG, TEFF, FEH, CHI2DOF, REDSHIFT, DATA_G-R, MODEL_G-R, BLUE_SNR,
RED_SNR, NIR_SNR), ``COEFF`` (nstar, ntemplate), ``FIBERMAP``, ``INPUT_FRAMES``.
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..calibrate.containers import FluxCalib, StdStarModels
from ..errors import BadDataError
from ..profiling import nvtx_range
from .calfiles import as_table, check_2d, clean_header, host, read_f8
from .util import atomic_output, hdu_names, header_dict, header_records, open_fits, \
    read_image_hdu, read_optional_hdu, read_table_hdu, write_checksums

__all__ = ["write_flux_calibration", "read_flux_calibration", "write_stdstar_models",
           "read_stdstar_models", "CALIB_UNIT", "FLUX_UNIT"]

CALIB_UNIT = "10**+17 cm2 count s / erg"
FLUX_UNIT = "10**-17 erg/(s cm2 Angstrom)"


def _comment_records(tab, comments):
    out = []
    if comments:
        for i, name in enumerate(tab.dtype.names, start=1):
            if name in comments:
                out.append({"name": f"TTYPE{i}", "value": name, "comment": comments[name]})
    return out


@nvtx_range("write_flux_calibration")
def write_flux_calibration(path, fluxcalib: FluxCalib, header: dict | None = None) -> str:
    """Write a flux calibration in the desispec layout (atomically).

    Raises
    ------
    BadDataError
        Inconsistent shapes or negative ivar (checked before anything is written).

    Backends: host only (file I/O); CuPy arrays are copied to the host first.
    """
    path = os.fspath(path)
    calib = host(fluxcalib.calib, np.float32)
    ivar = host(fluxcalib.ivar, np.float32)
    mask = host(fluxcalib.mask)
    wave = host(fluxcalib.wave, np.float64)
    check_2d(path, calib, "FLUXCALIB", (("IVAR", ivar), ("MASK", mask)), wave)
    if np.any(ivar < 0):
        raise BadDataError("negative calibration ivar", path=path, hdu="IVAR")
    fc = as_table(fluxcalib.fibercorr, path, "FIBERCORR")
    sf = as_table(fluxcalib.stdstar_fibermap, path, "STDSTAR_FIBERMAP")
    hdr = clean_header(fluxcalib.meta if header is None else header)
    hdr["BUNIT"] = CALIB_UNIT
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(calib, extname="FLUXCALIB", header=header_records(hdr))
            fx.write(ivar, extname="IVAR")
            fx.write(mask.astype(np.uint32), extname="MASK")
            fx.write(wave.astype(np.float32), extname="WAVELENGTH",
                     header=[{"name": "BUNIT", "value": "Angstrom"}])
            if fc is not None:
                fx.write(fc, extname="FIBERCORR")
                for rec in _comment_records(fc, fluxcalib.fibercorr_comments):
                    fx["FIBERCORR"].write_key(rec["name"], rec["value"], rec["comment"])
            if sf is not None:
                fx.write(sf, extname="STDSTAR_FIBERMAP")
        write_checksums(tmp)
    return path


@nvtx_range("read_flux_calibration")
def read_flux_calibration(path) -> FluxCalib:
    """Read a flux calibration (gpuspec or desispec file); float64, uint32 mask.

    Raises
    ------
    MissingFileError, InputError, MissingHDUError, BadDataError.

    Backends: host only (NumPy; file I/O).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        names = hdu_names(fx)
        ext = "FLUXCALIB" if "FLUXCALIB" in names else 0
        calib, h = read_image_hdu(fx, ext, path, header=True)
        ivar = read_f8(fx, "IVAR", path)
        mask = read_image_hdu(fx, "MASK", path)
        wave = read_f8(fx, "WAVELENGTH", path)
        fc = read_optional_hdu(fx, names, "FIBERCORR", path, table=True)
        comments = None
        if fc is not None:
            recs = {r.get("name"): r for r in fx["FIBERCORR"].read_header().records()}
            comments = {name: (recs.get(f"TTYPE{i}") or {}).get("comment", "") or ""
                        for i, name in enumerate(fc.dtype.names, start=1)}
        sf = read_optional_hdu(fx, names, "STDSTAR_FIBERMAP", path, table=True)
    calib = calib.astype(np.float64)
    check_2d(path, calib, "FLUXCALIB", (("IVAR", ivar), ("MASK", mask)), wave)
    return FluxCalib(wave=wave, calib=calib, ivar=ivar, mask=mask.astype(np.uint32),
                     fibercorr=fc, fibercorr_comments=comments, stdstar_fibermap=sf,
                     meta=header_dict(h))


@nvtx_range("write_stdstar_models")
def write_stdstar_models(path, models: StdStarModels, header: dict | None = None) -> str:
    """Write standard-star models in the desispec layout (atomically).

    Raises
    ------
    BadDataError
        Inconsistent sizes.

    Backends: host only (file I/O); CuPy arrays are copied to the host first.
    """
    path = os.fspath(path)
    flux = host(models.flux, np.float32)
    wave = host(models.wave, np.float64)
    fibers = host(models.fibers, np.int32)
    meta = as_table(models.metadata, path, "METADATA")
    if flux.ndim != 2 or flux.shape[1] != wave.shape[0]:
        raise BadDataError(f"FLUX has shape {flux.shape} for {wave.shape[0]} wavelengths",
                           path=path, hdu="FLUX")
    if fibers.shape != (flux.shape[0],) or len(meta) != flux.shape[0]:
        raise BadDataError(f"{flux.shape[0]} models but {fibers.shape[0]} FIBERS and "
                           f"{len(meta)} METADATA rows", path=path, hdu="FIBERS")
    coeff = host(models.coeff, np.float64)
    fm = as_table(models.fibermap, path, "FIBERMAP")
    inp = as_table(models.input_frames, path, "INPUT_FRAMES")
    hdr = clean_header(models.meta if header is None else header)
    hdr["BUNIT"] = FLUX_UNIT
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(flux, extname="FLUX", header=header_records(hdr))
            fx.write(wave.astype(np.float32), extname="WAVELENGTH",
                     header=[{"name": "BUNIT", "value": "Angstrom"}])
            fx.write(fibers, extname="FIBERS")
            fx.write(meta, extname="METADATA")
            if coeff is not None:
                fx.write(coeff, extname="COEFF")
            if fm is not None:
                fx.write(fm, extname="FIBERMAP")
            if inp is not None:
                fx.write(inp, extname="INPUT_FRAMES")
        write_checksums(tmp)
    return path


@nvtx_range("read_stdstar_models")
def read_stdstar_models(path) -> StdStarModels:
    """Read standard-star models (gpuspec or desispec ``stdstars`` file).

    Raises
    ------
    MissingFileError, InputError, MissingHDUError (FLUX, WAVELENGTH, FIBERS, METADATA),
    BadDataError.

    Backends: host only (NumPy; file I/O).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        names = hdu_names(fx)
        flux, h = read_image_hdu(fx, "FLUX", path, header=True)
        wave = read_f8(fx, "WAVELENGTH", path)
        fibers = read_image_hdu(fx, "FIBERS", path)
        meta = read_table_hdu(fx, "METADATA", path)
        coeff = read_optional_hdu(fx, names, "COEFF", path)
        fm = read_optional_hdu(fx, names, "FIBERMAP", path, table=True)
        inp = read_optional_hdu(fx, names, "INPUT_FRAMES", path, table=True)
    flux = flux.astype(np.float64)
    if flux.ndim != 2 or flux.shape[1] != wave.shape[0] or fibers.shape != (flux.shape[0],):
        raise BadDataError(f"FLUX {flux.shape}, WAVELENGTH {wave.shape} and FIBERS "
                           f"{fibers.shape} do not match", path=path, hdu="FLUX")
    return StdStarModels(wave=wave, flux=flux, fibers=fibers.astype(np.int64), metadata=meta,
                         coeff=None if coeff is None else coeff.astype(np.float64),
                         fibermap=fm, input_frames=inp, meta=header_dict(h))
