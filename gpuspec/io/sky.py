"""Sky models: ``sky-{camera}-{EXPID:08d}.fits``.

desispec layout (``desispec.io.write_sky``):

==================  ==============================================  =======
HDU                 content                                         dtype
==================  ==============================================  =======
0 ``SKY``           (nspec, nwave) sky flux per fiber (frame unit)  float32
``IVAR``            (nspec, nwave)                                  float32
``MASK``            (nspec, nwave)                                  uint32
``WAVELENGTH``      (nwave,) Å                                      float32
``STATIVAR``        (nspec, nwave) statistical ivar, optional       float32
``THRPUTCORR``      (nspec,) sky-line throughput corrections, opt.  float32
``THRPUTCORR_MOD``  (nspec,) model throughput corrections, opt.     float32
``SKYTARGETID``     (nsky,) TARGETIDs of the sky fibers, optional   int64
==================  ==============================================  =======
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..calibrate.containers import SkyModel
from ..errors import BadDataError
from ..profiling import nvtx_range
from .calfiles import check_2d, clean_header, host, optional_f8, read_f8
from .util import atomic_output, hdu_names, header_dict, header_records, open_fits, \
    read_image_hdu, read_optional_hdu, write_checksums

__all__ = ["write_sky", "read_sky"]


def _vec(path, name, a, n):
    if a is not None and np.shape(a) != (n,):
        raise BadDataError(f"{name} has shape {np.shape(a)}, expected ({n},)", path=path,
                           hdu=name)
    return a


@nvtx_range("write_sky")
def write_sky(path, skymodel: SkyModel, header: dict | None = None) -> str:
    """Write a sky model in the desispec layout (atomically).

    Raises
    ------
    BadDataError
        Inconsistent shapes (checked before anything is written).

    Backends: host only (file I/O); CuPy arrays are copied to the host first.
    """
    path = os.fspath(path)
    flux = host(skymodel.flux, np.float32)
    ivar = host(skymodel.ivar, np.float32)
    mask = host(skymodel.mask)
    wave = host(skymodel.wave, np.float64)
    stat = host(skymodel.stat_ivar, np.float32)
    check_2d(path, flux, "SKY", (("IVAR", ivar), ("MASK", mask), ("STATIVAR", stat)), wave)
    n = flux.shape[0]
    tc = _vec(path, "THRPUTCORR", host(skymodel.throughput_corrections, np.float32), n)
    tcm = _vec(path, "THRPUTCORR_MOD", host(skymodel.throughput_corrections_model,
                                            np.float32), n)
    tid = host(skymodel.skytargetid, np.int64)
    hdr = clean_header(skymodel.meta if header is None else header)
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(flux, extname="SKY", header=header_records(hdr))
            fx.write(ivar, extname="IVAR")
            fx.write(mask.astype(np.uint32), extname="MASK")
            fx.write(wave.astype(np.float32), extname="WAVELENGTH",
                     header=[{"name": "BUNIT", "value": "Angstrom"}])
            if stat is not None:
                fx.write(stat, extname="STATIVAR")
            if tc is not None:
                fx.write(tc, extname="THRPUTCORR")
            if tcm is not None:
                fx.write(tcm, extname="THRPUTCORR_MOD")
            if tid is not None:
                fx.write(tid, extname="SKYTARGETID")
        write_checksums(tmp)
    return path


@nvtx_range("read_sky")
def read_sky(path) -> SkyModel:
    """Read a sky model (gpuspec or desispec file); float64 arrays, uint32 mask.

    Raises
    ------
    MissingFileError, InputError, MissingHDUError, BadDataError.

    Backends: host only (NumPy; file I/O).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        names = hdu_names(fx)
        ext = "SKY" if "SKY" in names else 0
        flux, h = read_image_hdu(fx, ext, path, header=True)
        ivar = read_f8(fx, "IVAR", path)
        mask = read_image_hdu(fx, "MASK", path)
        wave = read_f8(fx, "WAVELENGTH", path)
        stat = optional_f8(fx, names, "STATIVAR", path)
        tc = optional_f8(fx, names, "THRPUTCORR", path)
        tcm = optional_f8(fx, names, "THRPUTCORR_MOD", path)
        tid = read_optional_hdu(fx, names, "SKYTARGETID", path)
    flux = flux.astype(np.float64)
    check_2d(path, flux, "SKY", (("IVAR", ivar), ("MASK", mask), ("STATIVAR", stat)), wave)
    n = flux.shape[0]
    _vec(path, "THRPUTCORR", tc, n)
    _vec(path, "THRPUTCORR_MOD", tcm, n)
    return SkyModel(wave=wave, flux=flux, ivar=ivar, mask=mask.astype(np.uint32),
                    stat_ivar=stat, throughput_corrections=tc,
                    throughput_corrections_model=tcm, skytargetid=tid, meta=header_dict(h))
