"""Fiber flats: ``fiberflat-{camera}-{EXPID:08d}.fits`` / ``fiberflatnight-{camera}-{NIGHT}.fits``.

desispec layout (``desispec.io.write_fiberflat``):

==============  =========================================  =======
HDU             content                                    dtype
==============  =========================================  =======
0 ``FIBERFLAT`` (nspec, nwave) flat to divide by; header    float32
                of the flat frame + CHI2PDF, BUNIT ''
``IVAR``        (nspec, nwave)                             float32
``MASK``        (nspec, nwave) ``specmask`` bits           uint32
``MEANSPEC``    (nwave,) mean lamp spectrum, electron/Å    float32
``WAVELENGTH``  (nwave,) Å                                 float32
``FIBERMAP``    table (optional)
==============  =========================================  =======
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..calibrate.containers import FiberFlat
from ..errors import BadDataError
from ..profiling import nvtx_range
from .calfiles import as_table, check_2d, clean_header, host, read_f8
from .util import atomic_output, hdu_names, header_dict, header_records, open_fits, \
    read_image_hdu, read_optional_hdu, write_checksums

__all__ = ["write_fiberflat", "read_fiberflat"]


@nvtx_range("write_fiberflat")
def write_fiberflat(path, fiberflat: FiberFlat, header: dict | None = None) -> str:
    """Write a fiber flat in the desispec layout (atomically).

    Parameters
    ----------
    path : str or PathLike
    fiberflat : FiberFlat
        numpy or cupy arrays.
    header : dict, optional
        HDU 0 header instead of ``fiberflat.meta``.

    Raises
    ------
    BadDataError
        Inconsistent shapes (checked before anything is written).

    Backends: host only (file I/O); CuPy arrays are copied to the host first.
    """
    path = os.fspath(path)
    ff = host(fiberflat.fiberflat, np.float32)
    ivar = host(fiberflat.ivar, np.float32)
    mask = host(fiberflat.mask)
    wave = host(fiberflat.wave, np.float64)
    meanspec = host(fiberflat.meanspec if fiberflat.meanspec is not None else
                    np.ones(ff.shape[1]), np.float32)
    check_2d(path, ff, "FIBERFLAT", (("IVAR", ivar), ("MASK", mask)), wave)
    if meanspec.shape != wave.shape:
        raise BadDataError(f"MEANSPEC has shape {meanspec.shape}, expected {wave.shape}",
                           path=path, hdu="MEANSPEC")
    if mask.size and (mask.min() < 0 or mask.max() > np.iinfo(np.uint32).max):
        raise BadDataError("mask values outside uint32", path=path, hdu="MASK")
    fm = as_table(fiberflat.fibermap, path, "FIBERMAP")
    if fm is not None and len(fm) != ff.shape[0]:
        raise BadDataError(f"FIBERMAP has {len(fm)} rows for {ff.shape[0]} spectra",
                           path=path, hdu="FIBERMAP")
    hdr = clean_header(fiberflat.meta if header is None else header)
    if fiberflat.chi2pdf is not None:
        hdr["CHI2PDF"] = float(fiberflat.chi2pdf)
    hdr["BUNIT"] = ""
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(ff, extname="FIBERFLAT", header=header_records(hdr))
            fx.write(ivar, extname="IVAR", header=[{"name": "BUNIT", "value": ""}])
            fx.write(mask.astype(np.uint32), extname="MASK")
            fx.write(meanspec, extname="MEANSPEC",
                     header=[{"name": "BUNIT", "value": "electron/Angstrom"}])
            fx.write(wave.astype(np.float32), extname="WAVELENGTH",
                     header=[{"name": "BUNIT", "value": "Angstrom"}])
            if fm is not None:
                fx.write(fm, extname="FIBERMAP")
        write_checksums(tmp)
    return path


@nvtx_range("read_fiberflat")
def read_fiberflat(path) -> FiberFlat:
    """Read a fiber flat (gpuspec or desispec file).

    Returns
    -------
    FiberFlat
        float64 arrays, uint32 mask, ``meta`` the HDU 0 header (CHI2PDF → ``chi2pdf``).

    Raises
    ------
    MissingFileError, InputError, MissingHDUError (IVAR, MASK, MEANSPEC, WAVELENGTH),
    BadDataError (inconsistent shapes).

    Backends: host only (NumPy; file I/O).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        names = hdu_names(fx)
        ext = "FIBERFLAT" if "FIBERFLAT" in names else 0
        ff, h = read_image_hdu(fx, ext, path, header=True)
        ivar = read_f8(fx, "IVAR", path)
        mask = read_image_hdu(fx, "MASK", path)
        meanspec = read_f8(fx, "MEANSPEC", path)
        wave = read_f8(fx, "WAVELENGTH", path)
        fm = read_optional_hdu(fx, names, "FIBERMAP", path, table=True)
    ff = ff.astype(np.float64)
    check_2d(path, ff, "FIBERFLAT", (("IVAR", ivar), ("MASK", mask)), wave)
    if meanspec.shape != wave.shape:
        raise BadDataError(f"MEANSPEC has shape {meanspec.shape}, expected {wave.shape}",
                           path=path, hdu="MEANSPEC")
    if fm is not None and len(fm) != ff.shape[0]:
        raise BadDataError(f"FIBERMAP has {len(fm)} rows for {ff.shape[0]} spectra",
                           path=path, hdu="FIBERMAP")
    meta = header_dict(h)
    chi2 = meta.get("CHI2PDF")
    return FiberFlat(wave=wave, fiberflat=ff, ivar=ivar, mask=mask.astype(np.uint32),
                     meanspec=meanspec, chi2pdf=None if chi2 is None else float(chi2),
                     meta=meta, fibermap=fm)
