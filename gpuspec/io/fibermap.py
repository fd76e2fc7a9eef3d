"""Fibermaps: the per-fiber ``FIBERMAP`` binary table (desispec's ``main`` survey columns).

:data:`FIBERMAP_COLUMNS` are the 71 columns, in order, with the types and units of
desispec's ``main`` fibermap (``desispec.io.fibermap.fibermap_columns``, provenance
``empty``): what ``desi_assemble_fibermap`` writes into ``fibermap-EXPID.fits`` and
what desispec propagates into preproc images and frames. Frames carry no NIGHT,
EXPID, TILEID or MJD columns: desispec adds them from the frame header when it builds
spectra (:data:`EXPOSURE_COLUMNS`, appended in desispec's order), so a frame that had
them cannot be read back as spectra (duplicate fields). :func:`frame_fibermap` drops
them; every frame/preproc writer uses it.

Writers add ``TUNITn`` for every column with a unit (desispec's units, also for the
coadd columns of :data:`COADD_UNITS`). Readers accept any extra or missing columns.
Host only (NumPy structured arrays).
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..backend import native
from ..errors import BadDataError, InputError
from ..profiling import nvtx_range
from .util import add_dependencies, atomic_output, header_dict, header_records, open_fits, \
    read_table_hdu, write_checksums

__all__ = ["fibermap_dtype", "empty_fibermap", "read_fibermap", "write_fibermap",
           "as_fibermap_array", "frame_fibermap", "table_units", "FIBERMAP_COLUMNS",
           "EXPOSURE_COLUMNS", "COADD_UNITS", "FIBERS_PER_PETAL"]

FIBERS_PER_PETAL = 500

#: (name, dtype, unit, description) of desispec's ``main`` fibermap, in its order.
FIBERMAP_COLUMNS = [
    ("TARGETID", "i8", "", "Unique DESI target ID"),
    ("PETAL_LOC", "i2", "", "Petal location [0-9]"),
    ("DEVICE_LOC", "i4", "", "Device location on the focal plane [0-523]"),
    ("LOCATION", "i8", "", "PETAL_LOC*1000 + DEVICE_LOC"),
    ("FIBER", "i4", "", "Fiber on the CCDs [0-4999]"),
    ("FIBERSTATUS", "i4", "", "Fiber status bits (fibermask); 0 = good"),
    ("TARGET_RA", "f8", "deg", "Target right ascension (ICRS)"),
    ("TARGET_DEC", "f8", "deg", "Target declination (ICRS)"),
    ("DESINAME", "S22", "", "DESI name from the sky position"),
    ("PMRA", "f4", "mas yr-1", "Proper motion along RA"),
    ("PMDEC", "f4", "mas yr-1", "Proper motion along Dec"),
    ("REF_EPOCH", "f4", "yr", "Reference epoch of the astrometry"),
    ("LAMBDA_REF", "f4", "Angstrom", "Wavelength at which the fiber was centred"),
    ("FA_TARGET", "i8", "", "fiberassign target bits"),
    ("FA_TYPE", "u1", "", "fiberassign target type"),
    ("OBJTYPE", "S3", "", "TGT, SKY, NON or BAD"),
    ("FIBERASSIGN_X", "f4", "mm", "Expected CS5 X on the focal plane"),
    ("FIBERASSIGN_Y", "f4", "mm", "Expected CS5 Y on the focal plane"),
    ("PRIORITY", "i4", "", "Current target priority"),
    ("SUBPRIORITY", "f8", "", "Assignment subpriority [0-1)"),
    ("OBSCONDITIONS", "i4", "", "Allowed observing conditions (bits)"),
    ("RELEASE", "i2", "", "Imaging release"),
    ("BRICKNAME", "S8", "", "Imaging brick name"),
    ("BRICKID", "i4", "", "Imaging brick ID"),
    ("BRICK_OBJID", "i4", "", "Imaging object ID in its brick"),
    ("MORPHTYPE", "S4", "", "Imaging morphological type"),
    ("EBV", "f4", "mag", "Galactic E(B-V)"),
    ("FLUX_G", "f4", "nanomaggy", "g-band flux"),
    ("FLUX_R", "f4", "nanomaggy", "r-band flux"),
    ("FLUX_Z", "f4", "nanomaggy", "z-band flux"),
    ("FLUX_W1", "f4", "nanomaggy", "WISE W1 flux"),
    ("FLUX_W2", "f4", "nanomaggy", "WISE W2 flux"),
    ("FLUX_IVAR_G", "f4", "nanomaggy^-2", "Inverse variance of FLUX_G"),
    ("FLUX_IVAR_R", "f4", "nanomaggy^-2", "Inverse variance of FLUX_R"),
    ("FLUX_IVAR_Z", "f4", "nanomaggy^-2", "Inverse variance of FLUX_Z"),
    ("FLUX_IVAR_W1", "f4", "nanomaggy^-2", "Inverse variance of FLUX_W1"),
    ("FLUX_IVAR_W2", "f4", "nanomaggy^-2", "Inverse variance of FLUX_W2"),
    ("FIBERFLUX_G", "f4", "nanomaggy", "Predicted g flux in a 1.5 arcsec fiber"),
    ("FIBERFLUX_R", "f4", "nanomaggy", "Predicted r flux in a 1.5 arcsec fiber"),
    ("FIBERFLUX_Z", "f4", "nanomaggy", "Predicted z flux in a 1.5 arcsec fiber"),
    ("FIBERTOTFLUX_G", "f4", "nanomaggy", "g flux in a 1.5 arcsec fiber, all sources"),
    ("FIBERTOTFLUX_R", "f4", "nanomaggy", "r flux in a 1.5 arcsec fiber, all sources"),
    ("FIBERTOTFLUX_Z", "f4", "nanomaggy", "z flux in a 1.5 arcsec fiber, all sources"),
    ("MASKBITS", "i2", "", "Imaging photometry bits"),
    ("SERSIC", "f4", "", "Sersic index"),
    ("SHAPE_R", "f4", "arcsec", "Half-light radius"),
    ("SHAPE_E1", "f4", "", "Ellipticity component 1"),
    ("SHAPE_E2", "f4", "", "Ellipticity component 2"),
    ("REF_ID", "i8", "", "Reference catalogue ID (Gaia source_id)"),
    ("REF_CAT", "S2", "", "Reference catalogue of a star"),
    ("GAIA_PHOT_G_MEAN_MAG", "f4", "mag", "Gaia G magnitude"),
    ("GAIA_PHOT_BP_MEAN_MAG", "f4", "mag", "Gaia BP magnitude"),
    ("GAIA_PHOT_RP_MEAN_MAG", "f4", "mag", "Gaia RP magnitude"),
    ("PARALLAX", "f4", "mas", "Reference catalogue parallax"),
    ("PHOTSYS", "S1", "", "N (BASS/MzLS) or S (DECam)"),
    ("PRIORITY_INIT", "i8", "", "Initial target priority"),
    ("NUMOBS_INIT", "i8", "", "Initial number of observations"),
    ("DESI_TARGET", "i8", "", "DESI target bits"),
    ("BGS_TARGET", "i8", "", "BGS target bits"),
    ("MWS_TARGET", "i8", "", "MWS target bits"),
    ("SCND_TARGET", "i8", "", "Secondary target bits"),
    ("PLATE_RA", "f8", "deg", "RA given to PlateMaker"),
    ("PLATE_DEC", "f8", "deg", "Dec given to PlateMaker"),
    ("NUM_ITER", "i8", "", "Positioner iterations"),
    ("FIBER_X", "f8", "mm", "CS5 X requested by PlateMaker"),
    ("FIBER_Y", "f8", "mm", "CS5 Y requested by PlateMaker"),
    ("DELTA_X", "f8", "mm", "CS5 X requested minus actual"),
    ("DELTA_Y", "f8", "mm", "CS5 Y requested minus actual"),
    ("FIBER_RA", "f8", "deg", "RA of the actual fiber position"),
    ("FIBER_DEC", "f8", "deg", "Dec of the actual fiber position"),
    ("EXPTIME", "f8", "s", "Shutter open time"),
]

#: Columns desispec appends (in this order) when it turns frames into spectra.
EXPOSURE_COLUMNS = [
    ("NIGHT", "i4", "", "Night of the exposure (YYYYMMDD)"),
    ("EXPID", "i4", "", "Exposure ID"),
    ("MJD", "f8", "d", "MJD when the shutter opened"),
    ("TILEID", "i4", "", "Tile ID"),
]

#: Units of the columns that coadds add (desispec's data model strings).
COADD_UNITS = {
    "MIN_MJD": "d", "MEAN_MJD": "d", "MAX_MJD": "d", "COADD_EXPTIME": "s",
    "MEAN_DELTA_X": "mm", "RMS_DELTA_X": "mm", "MEAN_DELTA_Y": "mm", "RMS_DELTA_Y": "mm",
    "MEAN_FIBER_RA": "deg", "STD_FIBER_RA": "deg", "MEAN_FIBER_DEC": "deg",
    "STD_FIBER_DEC": "deg", "MEAN_FIBER_X": "mm", "MEAN_FIBER_Y": "mm",
}

_UNITS = {n: u for n, _, u, _ in FIBERMAP_COLUMNS + EXPOSURE_COLUMNS}
_UNITS.update(COADD_UNITS)
_EXPOSURE_NAMES = tuple(n for n, _, _, _ in EXPOSURE_COLUMNS)


def table_units(names) -> list[str] | None:
    """TUNIT strings for the columns ``names`` (desispec's units; "" when none).

    Backends: host only (plain values).
    """
    units = [_UNITS.get(n, "") for n in names]
    return units if any(units) else None


def fibermap_dtype(exposure_columns: bool = False) -> np.dtype:
    """Structured dtype of a fibermap (:data:`FIBERMAP_COLUMNS`).

    ``exposure_columns`` appends NIGHT, EXPID, MJD and TILEID (a spectra fibermap).

    Backends: host only (NumPy).
    """
    cols = FIBERMAP_COLUMNS + (EXPOSURE_COLUMNS if exposure_columns else [])
    return np.dtype([(n, t) for n, t, _, _ in cols])


def empty_fibermap(nspec: int, specmin: int = 0, petal: int | None = None,
                   exposure_columns: bool = False) -> np.ndarray:
    """A fibermap of ``nspec`` consecutive fibers starting at FIBER ``specmin``.

    Parameters
    ----------
    nspec : int
        Number of rows.
    specmin : int
        First FIBER (0–4999).
    petal : int, optional
        PETAL_LOC of every row; default ``FIBER // 500`` (0 for fibers 0–499).
    exposure_columns : bool
        Append NIGHT, EXPID, MJD, TILEID (set to −1) as in a spectra fibermap.

    Returns
    -------
    ndarray
        FIBER = specmin … specmin+nspec-1, PETAL_LOC, DEVICE_LOC = FIBER % 500
        (a placeholder: the real focal-plane mapping is not modelled),
        LOCATION = 1000·PETAL_LOC + DEVICE_LOC, TARGETID = −(FIBER+1) (unique
        and negative like DESI's unassigned fibers), OBJTYPE ``'NON'``,
        LAMBDA_REF 5400, NUM_ITER 2, EBV 0.001, PHOTSYS ``'S'`` (desispec's
        ``empty_fibermap`` fill values), everything else 0.

    Backends: host only (NumPy).
    """
    nspec = int(nspec)
    if nspec < 0 or specmin < 0:
        raise InputError(f"invalid fibermap size nspec={nspec}, specmin={specmin}")
    fm = np.zeros(nspec, dtype=fibermap_dtype(exposure_columns))
    fiber = np.arange(specmin, specmin + nspec, dtype=np.int64)
    fm["FIBER"] = fiber
    fm["PETAL_LOC"] = fiber // FIBERS_PER_PETAL if petal is None else int(petal)
    fm["DEVICE_LOC"] = fiber % FIBERS_PER_PETAL
    fm["LOCATION"] = 1000 * fm["PETAL_LOC"].astype(np.int64) + fm["DEVICE_LOC"]
    fm["TARGETID"] = -(fiber + 1)
    fm["OBJTYPE"] = "NON"
    fm["LAMBDA_REF"] = 5400.0
    fm["NUM_ITER"] = 2
    fm["EBV"] = 0.001
    fm["PHOTSYS"] = "S"
    if exposure_columns:
        fm["NIGHT"] = fm["EXPID"] = fm["TILEID"] = -1
        fm["MJD"] = -1.0
    return fm


def frame_fibermap(fibermap) -> np.ndarray:
    """The fibermap as a frame (or preproc image) stores it: without NIGHT/EXPID/MJD/TILEID.

    desispec adds those columns itself from the frame header when it reads a frame
    as spectra or groups frames, and fails on duplicates.

    Backends: host only (NumPy).
    """
    fm = as_fibermap_array(fibermap)
    keep = [n for n in fm.dtype.names if n not in _EXPOSURE_NAMES]
    if len(keep) == len(fm.dtype.names):
        return fm
    out = np.empty(fm.shape, dtype=[(n, fm.dtype[n]) for n in keep])
    for n in keep:
        out[n] = fm[n]
    return out


def as_fibermap_array(fibermap) -> np.ndarray:
    """A native-byte-order structured array from a fibermap (ndarray or astropy Table).

    Unicode string columns become byte strings (FITS ``A`` columns).

    Backends: host only (NumPy).
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

    Backends: host only (NumPy).
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

    Backends: host only: returns NumPy arrays (move them with :func:`gpuspec.backend.to_device`).
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

    The columns are written as given (use :func:`empty_fibermap` for desispec's
    ``main`` columns), with TUNITs, DEPNAMnn/DEPVERnn and checksums.

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

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    path = os.fspath(path)
    fm = as_fibermap_array(fibermap)
    recs = header_records(add_dependencies(dict(meta or {})))
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(None, header=recs)
            fx.write(fm, extname="FIBERMAP", header=recs, units=table_units(fm.dtype.names))
        write_checksums(tmp)
    return path
