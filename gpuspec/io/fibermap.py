"""Fibermaps: the per-fiber ``FIBERMAP`` binary table (desispec column names and types).

The columns of :func:`fibermap_dtype` are the subset of desispec's
``fibermap_columns`` that gpuspec uses, with the same names and types, plus the
exposure columns (TILEID, NIGHT, EXPID, MJD, EXPTIME) that desispec adds when
it builds spectra. Readers accept any extra or missing columns.
Host only (NumPy structured arrays).
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..backend import native
from ..errors import BadDataError, InputError
from ..profiling import nvtx_range
from .util import atomic_output, header_dict, header_records, open_fits, read_table_hdu

__all__ = ["fibermap_dtype", "empty_fibermap", "read_fibermap", "write_fibermap",
           "as_fibermap_array", "FIBERMAP_COLUMNS", "FIBERS_PER_PETAL"]

FIBERS_PER_PETAL = 500

#: (name, dtype, unit, description), in desispec order.
FIBERMAP_COLUMNS = [
    ("TARGETID", "i8", "", "Unique target ID"),
    ("PETAL_LOC", "i2", "", "Petal location [0-9]"),
    ("DEVICE_LOC", "i4", "", "Device location on focal plane [0-523]"),
    ("LOCATION", "i8", "", "FP location PETAL_LOC*1000 + DEVICE_LOC"),
    ("FIBER", "i4", "", "Fiber ID on the CCDs [0-4999]"),
    ("FIBERSTATUS", "i4", "", "Fiber status mask; 0=good"),
    ("TARGET_RA", "f8", "deg", "Target right ascension"),
    ("TARGET_DEC", "f8", "deg", "Target declination"),
    ("PMRA", "f4", "mas yr^-1", "Proper motion in RA"),
    ("PMDEC", "f4", "mas yr^-1", "Proper motion in Dec"),
    ("REF_EPOCH", "f4", "yr", "Reference epoch of the coordinates"),
    ("LAMBDA_REF", "f4", "Angstrom", "Wavelength at which the fiber was centred"),
    ("FA_TARGET", "i8", "", "Targeting bit used by fiberassign"),
    ("FA_TYPE", "u1", "", "fiberassign target type"),
    ("OBJTYPE", "S3", "", "SKY, TGT, NON, BAD"),
    ("FIBERASSIGN_X", "f4", "mm", "Expected CS5 X on focal plane"),
    ("FIBERASSIGN_Y", "f4", "mm", "Expected CS5 Y on focal plane"),
    ("PRIORITY", "i4", "", "Target priority"),
    ("SUBPRIORITY", "f8", "", "Random subpriority"),
    ("DESI_TARGET", "i8", "", "DESI targeting bits"),
    ("BGS_TARGET", "i8", "", "BGS targeting bits"),
    ("MWS_TARGET", "i8", "", "MWS targeting bits"),
    ("SCND_TARGET", "i8", "", "Secondary targeting bits"),
    ("FLUX_G", "f4", "nanomaggy", "g-band flux"),
    ("FLUX_R", "f4", "nanomaggy", "r-band flux"),
    ("FLUX_Z", "f4", "nanomaggy", "z-band flux"),
    ("FIBER_RA", "f8", "deg", "RA of the actual fiber position"),
    ("FIBER_DEC", "f8", "deg", "Dec of the actual fiber position"),
    ("DELTA_X", "f4", "mm", "CS5 X requested minus actual position"),
    ("DELTA_Y", "f4", "mm", "CS5 Y requested minus actual position"),
    ("FIBER_X", "f4", "mm", "CS5 X of the actual fiber position"),
    ("FIBER_Y", "f4", "mm", "CS5 Y of the actual fiber position"),
    ("TILEID", "i4", "", "Tile ID"),
    ("NIGHT", "i4", "", "Night of the exposure, YYYYMMDD"),
    ("EXPID", "i4", "", "Exposure ID"),
    ("MJD", "f8", "d", "MJD at the start of the exposure"),
    ("EXPTIME", "f4", "s", "Exposure time"),
]


def fibermap_dtype() -> np.dtype:
    """Structured dtype of a gpuspec fibermap (see :data:`FIBERMAP_COLUMNS`).

    Host only (NumPy).
    """
    return np.dtype([(n, t) for n, t, _, _ in FIBERMAP_COLUMNS])


def empty_fibermap(nspec: int, specmin: int = 0, petal: int | None = None) -> np.ndarray:
    """A fibermap of ``nspec`` consecutive fibers starting at FIBER ``specmin``.

    Parameters
    ----------
    nspec : int
        Number of rows.
    specmin : int
        First FIBER (0–4999).
    petal : int, optional
        PETAL_LOC of every row; default ``FIBER // 500`` (0 for fibers 0–499).

    Returns
    -------
    ndarray
        FIBER = specmin … specmin+nspec-1, PETAL_LOC, DEVICE_LOC = FIBER % 500
        (a placeholder: the real focal-plane mapping is not modelled),
        LOCATION = 1000·PETAL_LOC + DEVICE_LOC, TARGETID = −(FIBER+1) (unique
        and negative like DESI's unassigned fibers), OBJTYPE ``'NON'``,
        NIGHT/EXPID/TILEID = −1, everything else 0.

    Host only (NumPy).
    """
    nspec = int(nspec)
    if nspec < 0 or specmin < 0:
        raise InputError(f"invalid fibermap size nspec={nspec}, specmin={specmin}")
    fm = np.zeros(nspec, dtype=fibermap_dtype())
    fiber = np.arange(specmin, specmin + nspec, dtype=np.int64)
    fm["FIBER"] = fiber
    fm["PETAL_LOC"] = fiber // FIBERS_PER_PETAL if petal is None else int(petal)
    fm["DEVICE_LOC"] = fiber % FIBERS_PER_PETAL
    fm["LOCATION"] = 1000 * fm["PETAL_LOC"].astype(np.int64) + fm["DEVICE_LOC"]
    fm["TARGETID"] = -(fiber + 1)
    fm["OBJTYPE"] = "NON"
    fm["NIGHT"] = fm["EXPID"] = fm["TILEID"] = -1
    return fm


def as_fibermap_array(fibermap) -> np.ndarray:
    """A native-byte-order structured array from a fibermap (ndarray or astropy Table).

    Unicode string columns become byte strings (FITS ``A`` columns).

    Host only (NumPy).
    """
    if hasattr(fibermap, "as_array") and not isinstance(fibermap, np.ndarray):
        fibermap = fibermap.as_array()
    fm = np.asarray(fibermap)
    if fm.dtype.names is None or fm.ndim != 1:
        raise BadDataError("a fibermap must be a 1-D structured array (or astropy Table)")
    descr = []
    changed = False
    for name in fm.dtype.names:
        t = fm.dtype[name]
        if t.kind == "U":
            t = np.dtype(("S", max(1, t.itemsize // 4)) if t.shape == () else
                         (np.dtype(("S", max(1, t.base.itemsize // 4))), t.shape))
            changed = True
        elif t.kind == "O":
            raise BadDataError(f"fibermap column {name} has object dtype")
        descr.append((name, t))
    if changed:
        out = np.empty(fm.shape, dtype=descr)
        for name in fm.dtype.names:
            out[name] = np.char.encode(fm[name], "ascii") if fm.dtype[name].kind == "U" \
                else fm[name]
        fm = out
    return native_table(fm)


def native_table(a: np.ndarray) -> np.ndarray:
    """Structured array with every field in native byte order (no copy if already).

    Host only (NumPy).
    """
    return native(a)


@nvtx_range("read_fibermap")
def read_fibermap(path: str | os.PathLike, header: bool = False):
    """Read the ``FIBERMAP`` table of a file (fibermap, preproc, frame or spectra file).

    Parameters
    ----------
    path : str or PathLike
    header : bool
        Also return the FIBERMAP header as a dict.

    Returns
    -------
    ndarray or (ndarray, dict)
        Native-byte-order structured array.

    Raises
    ------
    MissingFileError, InputError, MissingHDUError (no FIBERMAP HDU).

    Host only: returns NumPy arrays (move them with :func:`gpuspec.backend.to_device`).
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        fm, h = read_table_hdu(fx, "FIBERMAP", path, header=True)
    if fm is None or fm.dtype.names is None:
        raise InputError("FIBERMAP is not a table", path=path, hdu="FIBERMAP")
    fm = native_table(native(fm))
    return (fm, header_dict(h)) if header else fm


@nvtx_range("write_fibermap")
def write_fibermap(path: str | os.PathLike, fibermap, meta: dict | None = None) -> str:
    """Write a fibermap file: empty primary HDU, then the ``FIBERMAP`` table.

    Parameters
    ----------
    path : str or PathLike
        Output file, written atomically.
    fibermap : structured ndarray or astropy Table
    meta : dict, optional
        Keywords for the FIBERMAP header (and the primary header).

    Returns
    -------
    str
        ``path``.

    Host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    path = os.fspath(path)
    fm = as_fibermap_array(fibermap)
    recs = header_records(dict(meta or {}))
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(None, header=recs)
            fx.write(fm, extname="FIBERMAP", header=recs)
    return path
