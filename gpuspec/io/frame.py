"""Frames (extracted spectra of one camera): ``frame-{camera}-{EXPID:08d}.fits``.

desispec frame layout:

===================  ===================================  ===========
HDU                  content                              dtype
===================  ===================================  ===========
0 ``FLUX``           (nspec, nwave), electron/Angstrom    float32
``IVAR``             (nspec, nwave)                       float32
``MASK``             (nspec, nwave), ``specmask`` bits    uint32
``WAVELENGTH``       (nwave,), Angstrom                   float64
``RESOLUTION``       (nspec, ndiag, nwave), dia order     float32
``FIBERMAP``         table, one row per spectrum
``CHI2PIX``          (nspec, nwave)                       float32
``SCORES``           table, one row per spectrum (RAW scores)
``PIXMASK_FRACTION`` (nspec, nwave), optional             float32
``MODELIMAGE``       model CCD image, optional            float32
===================  ===================================  ===========

The FLUX header carries the preproc keywords (CAMERA, NIGHT, EXPID, TILEID,
MJD-OBS, the per-amp GAIN/OVERSCN/OBSRDN, ...), SPECMIN, NSPEC, FIBERMIN,
BUNIT='electron/Angstrom' and DEPNAMnn/DEPVERnn. The FIBERMAP has no
NIGHT/EXPID/MJD/TILEID columns (desispec adds them from this header when it turns
frames into spectra). SCORES has desispec's extraction scores
(``INTEG_RAW_FLUX_X``, ``MEDIAN_RAW_FLUX_X``, ``MEDIAN_RAW_SNR_X``), computed on
writing unless ``frame.scores`` is given. Every HDU carries CHECKSUM/DATASUM.
Host only (NumPy); device arrays given to the writer are copied to the host.
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..backend import to_host
from ..errors import BadDataError
from ..frame import Frame
from ..profiling import nvtx_range
from .fibermap import frame_fibermap, table_units
from .util import add_dependencies, atomic_output, check_same_shape, hdu_names, header_dict, \
    header_records, open_fits, read_image_hdu, read_optional_hdu, write_checksums

__all__ = ["write_frame", "read_frame", "FLUX_UNIT"]

FLUX_UNIT = "electron/Angstrom"
_U32 = np.iinfo(np.uint32)


def _arr(a, name, shape=None, ndim=None, path=None):
    a = np.asarray(to_host(a))
    if ndim is not None and a.ndim != ndim:
        raise BadDataError(f"{name} must be {ndim}-D, got shape {a.shape}", path=path, hdu=name)
    if shape is not None and a.shape != tuple(shape):
        raise BadDataError(f"{name} has shape {a.shape}, expected {tuple(shape)}", path=path,
                           hdu=name)
    return a


@nvtx_range("write_frame")
def write_frame(path: str | os.PathLike, frame: Frame, meta: dict | None = None) -> str:
    """Write a frame in the desispec layout.

    Parameters
    ----------
    path : str or PathLike
        Output file, written atomically.
    frame : gpuspec.Frame
        numpy or cupy arrays. ``mask`` None writes zeros; ``resolution_data``,
        ``chi2pix``, ``fibermap``, ``pixmask_fraction`` and ``modelimage`` are
        written when not None.
    meta : dict, optional
        Header to use instead of ``frame.meta``.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    BadDataError
        Inconsistent shapes (all checked before anything is written), an even
        number of resolution diagonals, or mask values outside uint32.

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    path = os.fspath(path)
    flux = _arr(frame.flux, "FLUX", ndim=2, path=path)
    nspec, nwave = flux.shape
    ivar = _arr(frame.ivar, "IVAR", (nspec, nwave), path=path)
    wave = _arr(frame.wave, "WAVELENGTH", (nwave,), path=path)
    if frame.mask is None:
        mask = np.zeros((nspec, nwave), np.uint32)
    else:
        mask = _arr(frame.mask, "MASK", (nspec, nwave), path=path)
        if mask.size and (mask.min() < 0 or mask.max() > _U32.max):
            raise BadDataError("mask values outside the uint32 range", path=path, hdu="MASK")
        mask = mask.astype(np.uint32)
    rdata = None
    if frame.resolution_data is not None:
        rdata = _arr(frame.resolution_data, "RESOLUTION", ndim=3, path=path)
        if rdata.shape[0] != nspec or rdata.shape[2] != nwave or rdata.shape[1] % 2 != 1:
            raise BadDataError(f"RESOLUTION has shape {rdata.shape}; expected (nspec={nspec}, "
                               f"odd ndiag, nwave={nwave})", path=path, hdu="RESOLUTION")
    chi2pix = None if frame.chi2pix is None else \
        _arr(frame.chi2pix, "CHI2PIX", (nspec, nwave), path=path)
    pmf = None if frame.pixmask_fraction is None else \
        _arr(frame.pixmask_fraction, "PIXMASK_FRACTION", (nspec, nwave), path=path)
    model = None if frame.modelimage is None else \
        _arr(frame.modelimage, "MODELIMAGE", ndim=2, path=path)
    fm = None
    if frame.fibermap is not None:
        fm = frame_fibermap(frame.fibermap)
        if len(fm) != nspec:
            raise BadDataError(f"FIBERMAP has {len(fm)} rows for {nspec} spectra", path=path,
                               hdu="FIBERMAP")
    hdr = dict(frame.meta if meta is None else meta)
    hdr.setdefault("SPECMIN", 0)
    hdr["NSPEC"] = nspec
    hdr["BUNIT"] = FLUX_UNIT
    if "CAMERA" in hdr and isinstance(hdr["CAMERA"], str):
        hdr["CAMERA"] = hdr["CAMERA"].strip().lower()
    if "FIBERMIN" not in hdr:
        hdr["FIBERMIN"] = _fibermin(fm, hdr)
    hdr = add_dependencies(hdr)
    scores = _scores(frame, wave, flux, ivar, hdr, nspec, path)
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(flux.astype(np.float32), extname="FLUX", header=header_records(hdr))
            fx.write(ivar.astype(np.float32), extname="IVAR",
                     header=[{"name": "BUNIT", "value": "Angstrom^2/electron^2"}])
            fx.write(mask, extname="MASK")
            fx.write(wave.astype(np.float64), extname="WAVELENGTH",
                     header=[{"name": "BUNIT", "value": "Angstrom"}])
            if rdata is not None:
                fx.write(rdata.astype(np.float32), extname="RESOLUTION")
            if fm is not None:
                fx.write(fm, extname="FIBERMAP", units=table_units(fm.dtype.names))
            if chi2pix is not None:
                fx.write(chi2pix.astype(np.float32), extname="CHI2PIX")
            if scores is not None:
                fx.write(scores, extname="SCORES")
            if pmf is not None:
                fx.write(pmf.astype(np.float32), extname="PIXMASK_FRACTION")
            if model is not None:
                fx.write(model.astype(np.float32), extname="MODELIMAGE")
        write_checksums(tmp)
    return path


def _fibermin(fm, hdr) -> int:
    """FIBERMIN: the first FIBER (desispec's Frame), else 500·petal + SPECMIN."""
    if fm is not None and "FIBER" in fm.dtype.names and len(fm):
        return int(np.min(fm["FIBER"]))
    cam = str(hdr.get("CAMERA", "")).strip()
    petal = int(cam[1]) if len(cam) == 2 and cam[1].isdigit() else 0
    return 500 * petal + int(hdr.get("SPECMIN", 0))


def _scores(frame, wave, flux, ivar, hdr, nspec, path):
    """The SCORES table to write: ``frame.scores``, else desispec's RAW extraction scores."""
    if frame.scores is not None:
        sc = np.asarray(frame.scores)
        if sc.dtype.names is None or len(sc) != nspec:
            raise BadDataError(f"SCORES must be a table with {nspec} rows", path=path,
                               hdu="SCORES")
        return sc
    from ..coadd.scores import frame_scores

    sc = frame_scores(wave, flux, ivar, hdr.get("CAMERA"))
    return sc if sc.dtype.names else None


@nvtx_range("read_frame")
def read_frame(path: str | os.PathLike) -> Frame:
    """Read a frame (gpuspec or desispec layout).

    Returns
    -------
    gpuspec.Frame
        float64 ``wave``, ``flux``, ``ivar``, ``resolution_data``, ``chi2pix``,
        ``pixmask_fraction``, ``modelimage``; int32 ``mask`` (zeros when the file
        has no MASK; uint32 on disk); ``scores`` the SCORES table or None;
        ``meta`` the FLUX header as a dict; native byte order.

    Raises
    ------
    MissingFileError, InputError, MissingHDUError (FLUX, IVAR or WAVELENGTH),
    BadDataError (inconsistent shapes).

    Backends: host only: returns NumPy arrays (move them with :func:`gpuspec.backend.to_device`).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        names = hdu_names(fx)
        fluxext = "FLUX" if "FLUX" in names else 0
        flux, h = read_image_hdu(fx, fluxext, path, header=True)
        ivar = read_image_hdu(fx, "IVAR", path)
        wave = read_image_hdu(fx, "WAVELENGTH", path)
        mask = read_optional_hdu(fx, names, "MASK", path)
        rdata = read_optional_hdu(fx, names, "RESOLUTION", path)
        fm = read_optional_hdu(fx, names, "FIBERMAP", path, table=True)
        chi2pix = read_optional_hdu(fx, names, "CHI2PIX", path)
        scores = read_optional_hdu(fx, names, "SCORES", path, table=True)
        pmf = read_optional_hdu(fx, names, "PIXMASK_FRACTION", path)
        model = read_optional_hdu(fx, names, "MODELIMAGE", path)
    if flux.ndim != 2:
        raise BadDataError(f"FLUX must be 2-D, got shape {flux.shape}", path=path, hdu="FLUX")
    nspec, nwave = flux.shape
    if wave.shape != (nwave,):
        raise BadDataError(f"WAVELENGTH has shape {wave.shape}, FLUX has nwave={nwave}",
                           path=path, hdu="WAVELENGTH")
    check_same_shape(flux, "FLUX", (("IVAR", ivar), ("MASK", mask), ("CHI2PIX", chi2pix),
                                    ("PIXMASK_FRACTION", pmf)), path)
    if rdata is not None and (rdata.ndim != 3 or rdata.shape[0] != nspec or
                              rdata.shape[2] != nwave):
        raise BadDataError(f"RESOLUTION has shape {rdata.shape}, expected (nspec={nspec}, "
                           f"ndiag, nwave={nwave})", path=path, hdu="RESOLUTION")
    if fm is not None and len(fm) != nspec:
        raise BadDataError(f"FIBERMAP has {len(fm)} rows for {nspec} spectra", path=path,
                           hdu="FIBERMAP")

    def f64(a):
        return None if a is None else a.astype(np.float64)

    mask = np.zeros((nspec, nwave), np.int32) if mask is None else mask.astype(np.int32)
    if scores is not None and len(scores) != nspec:
        raise BadDataError(f"SCORES has {len(scores)} rows for {nspec} spectra", path=path,
                           hdu="SCORES")
    return Frame(wave=f64(wave), flux=f64(flux), ivar=f64(ivar), mask=mask,
                 resolution_data=f64(rdata), chi2pix=f64(chi2pix), fibermap=fm,
                 meta=header_dict(h), pixmask_fraction=f64(pmf), modelimage=f64(model),
                 scores=scores)
