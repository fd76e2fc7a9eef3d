"""Calibration images for preproc: master bias, dark, pixel flat and bad-pixel mask.

Each file holds one image in the primary HDU (like desispec's calibration
files and the Case A reference ``calib_*.fits``), with an optional header:

=========  ==============================  =================  =========
kind       content                         shape              dtype
=========  ==============================  =================  =========
bias       overscan-subtracted bias, ADU   raw image          float32
dark       dark current rate, e⁻/s         trimmed image      float32
pixflat    relative pixel response         trimmed image      float32
mask       ``ccdmask`` bits                trimmed image      int32
=========  ==============================  =================  =========

The writer adds ``CALTYPE`` (the kind) and ``BUNIT``. The reader takes the
image of HDU 0, else of the HDU named after the kind (``BIAS`` …), else of the
first image HDU with data (e.g. tile-compressed files). :func:`read_calib_image`
is gpuspec's one calibration reader (preproc reads its files through it) and
:func:`check_calib_values` its one set of value rules (also applied to arrays
given to preproc). Files: host only (NumPy).
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..backend import get_array_module, native, to_host
from ..errors import BadDataError, InputError, MissingFileError
from ..profiling import nvtx_range
from .util import (atomic_output, check_image_size, hdu_names, header_dict, header_records,
                   open_fits, write_checksums)

__all__ = ["read_calib_image", "write_calib_image", "check_calib_values", "CALIB_KINDS",
           "calib_camera",
           "read_bias", "read_dark", "read_pixflat", "read_mask",
           "write_bias", "write_dark", "write_pixflat", "write_mask"]

#: kind -> (on-disk dtype, in-memory dtype, BUNIT)
CALIB_KINDS = {
    "bias": (np.float32, np.float64, "adu"),
    "dark": (np.float32, np.float64, "electron/s"),
    "pixflat": (np.float32, np.float64, ""),
    "mask": (np.int32, np.int32, ""),
}


def _kind(kind: str, path=None) -> str:
    k = str(kind).lower()
    if k not in CALIB_KINDS:
        raise InputError(f"unknown calibration kind {kind!r}; expected one of "
                         f"{sorted(CALIB_KINDS)}", path=path)
    return k


def check_calib_values(data, kind: str, path: str | None = None, hdu=None) -> None:
    """Raise :class:`BadDataError` unless ``data`` is a usable ``kind`` calibration image.

    A 2-D image; bias, dark and pixflat finite everywhere; a mask finite, integral and
    in 0 … 2**31-1 (``ccdmask`` bits: a float −3.5 or an int −3 is refused, never cast).
    The message names the calibration, the file and the HDU.

    Backends: numpy and cupy (one device→host scalar per check).
    """
    kind = _kind(kind, path)
    xp = get_array_module(data)
    if data.ndim != 2:
        raise BadDataError(f"{kind} image must be 2-D, got shape {tuple(data.shape)}",
                           path=path, hdu=hdu)
    if data.dtype.kind == "f":
        nbad = int((~xp.isfinite(data)).sum())
        if nbad:
            raise BadDataError(f"{kind} calibration has {nbad} NaN or infinite (non-finite) "
                               "pixel(s)", path=path, hdu=hdu)
    if kind != "mask" or data.size == 0:
        return
    if data.dtype.kind == "f" and bool(xp.any(data != xp.round(data))):
        raise BadDataError("mask has non-integer values (ccdmask bits are integers)",
                           path=path, hdu=hdu)
    if data.dtype.kind not in "fiub":
        raise BadDataError(f"mask has unsupported dtype {data.dtype}", path=path, hdu=hdu)
    lo, hi = float(data.min()), float(data.max())
    if lo < 0 or hi > np.iinfo(np.int32).max:
        raise BadDataError(f"mask values must be in 0 … 2**31-1 (ccdmask bits), got "
                           f"{lo:g} … {hi:g}", path=path, hdu=hdu)


def _image_hdu(fx, kind: str, path: str):
    """Index of the calibration image: HDU 0 when it holds data, else the HDU named
    ``kind`` in upper case (``BIAS``, ``DARK``, ``PIXFLAT``, ``MASK``), else the first
    image HDU with data (e.g. a tile-compressed file)."""
    names = hdu_names(fx)
    order = [0] + ([names.index(kind.upper())] if kind.upper() in names else [])
    order += list(range(1, len(names)))
    for i in order:
        try:
            if fx[i].get_exttype() == "IMAGE_HDU" and fx[i].get_dims():
                return i
        except Exception:
            continue
    raise InputError(f"no image found in {kind} calibration file", path=path)


@nvtx_range("read_calib")
def read_calib_image(path: str | os.PathLike, expected_shape: tuple | None = None,
                     kind: str = "bias", as_stored: bool = False):
    """Read and validate a calibration image (gpuspec's one calibration reader).

    Parameters
    ----------
    path : str or PathLike
    expected_shape : (ny, nx), optional
        Required shape (the raw shape for a bias, the trimmed shape otherwise).
    kind : {"bias", "dark", "pixflat", "mask"}
    as_stored : bool
        Keep the file's float dtype (a float32 dark stays float32, as preproc needs for
        desispec's rounding and for a half-size upload) instead of float64. A mask is
        int32 either way.

    Returns
    -------
    image : ndarray
        float64 (bias, dark, pixflat; the stored float dtype with ``as_stored``) or
        int32 (mask), native byte order.
    header : dict
        The image header keywords.

    Raises
    ------
    MissingFileError, InputError (unreadable/truncated/no image),
    BadDataError (wrong shape; see :func:`check_calib_values`). Every message
    names the calibration, the file and the HDU.

    Backends: host only (NumPy).
    """
    path = os.fspath(path)
    kind = _kind(kind, path)
    if not os.path.exists(path):
        raise MissingFileError(f"{kind} calibration file does not exist", path=path)
    with open_fits(path) as fx:
        ext = _image_hdu(fx, kind, path)
        check_image_size(fx[ext], path, ext)
        try:
            data = fx[ext].read()
            hdr = header_dict(fx[ext].read_header())
        except Exception as exc:
            raise InputError(f"cannot read {kind} image ({str(exc).splitlines()[0]})",
                             path=path, hdu=ext) from exc
    data = native(data)
    check_calib_values(data, kind, path=path, hdu=ext)
    if expected_shape is not None and tuple(data.shape) != tuple(expected_shape):
        raise BadDataError(f"{kind} image has shape {data.shape}, expected "
                           f"{tuple(expected_shape)}", path=path, hdu=ext)
    mem = CALIB_KINDS[kind][1]
    if as_stored and kind != "mask" and data.dtype.kind == "f":
        return data, hdr
    return data.astype(mem), hdr


@nvtx_range("write_calib")
def write_calib_image(path: str | os.PathLike, image, header: dict | None = None,
                      kind: str = "bias") -> str:
    """Write a calibration image in the primary HDU, atomically.

    Parameters
    ----------
    path : str or PathLike
    image : array (ny, nx)
        numpy or cupy; stored as float32 (int32 for a mask).
    header : dict, optional
        Extra keywords (e.g. CAMERA, NIGHT).
    kind : {"bias", "dark", "pixflat", "mask"}

    Returns
    -------
    str
        ``path``.

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    path = os.fspath(path)
    kind = _kind(kind, path)
    a = native(np.asarray(to_host(image)))
    disk, _, bunit = CALIB_KINDS[kind]
    check_calib_values(a, kind, path=path)
    hdr = dict(header or {})
    hdr.setdefault("CALTYPE", kind.upper())
    if bunit:
        hdr.setdefault("BUNIT", bunit)
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(a.astype(disk), header=header_records(hdr))
        write_checksums(tmp)
    return path


def calib_camera(path: str | os.PathLike, kind: str = "bias") -> str | None:
    """The CAMERA keyword of a calibration file (lower case), or None when it has none.

    Backends: host only.
    """
    path = os.fspath(path)
    with open_fits(path) as fx:
        ext = _image_hdu(fx, _kind(kind, path), path)
        hdr = header_dict(fx[ext].read_header())
        if "CAMERA" not in hdr and ext != 0:
            hdr = header_dict(fx[0].read_header())
    cam = hdr.get("CAMERA")
    return None if cam is None else str(cam).strip().strip("'").strip().lower() or None


def read_bias(path, expected_shape=None):
    """:func:`read_calib_image` with ``kind="bias"``.

    Backends: host only: returns NumPy arrays (move them with :func:`gpuspec.backend.to_device`).
    """
    return read_calib_image(path, expected_shape, "bias")


def read_dark(path, expected_shape=None):
    """:func:`read_calib_image` with ``kind="dark"`` (a rate in e⁻/s).

    Backends: host only: returns NumPy arrays (move them with :func:`gpuspec.backend.to_device`).
    """
    return read_calib_image(path, expected_shape, "dark")


def read_pixflat(path, expected_shape=None):
    """:func:`read_calib_image` with ``kind="pixflat"``.

    Backends: host only: returns NumPy arrays (move them with :func:`gpuspec.backend.to_device`).
    """
    return read_calib_image(path, expected_shape, "pixflat")


def read_mask(path, expected_shape=None):
    """:func:`read_calib_image` with ``kind="mask"``.

    Backends: host only: returns NumPy arrays (move them with :func:`gpuspec.backend.to_device`).
    """
    return read_calib_image(path, expected_shape, "mask")


def write_bias(path, image, header=None):
    """:func:`write_calib_image` with ``kind="bias"``.

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    return write_calib_image(path, image, header, "bias")


def write_dark(path, image, header=None):
    """:func:`write_calib_image` with ``kind="dark"``.

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    return write_calib_image(path, image, header, "dark")


def write_pixflat(path, image, header=None):
    """:func:`write_calib_image` with ``kind="pixflat"``.

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    return write_calib_image(path, image, header, "pixflat")


def write_mask(path, image, header=None):
    """:func:`write_calib_image` with ``kind="mask"``.

    Backends: host only (file I/O); device (CuPy) arrays are copied to the host first.
    """
    return write_calib_image(path, image, header, "mask")
