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

The writer adds ``CALTYPE`` (the kind) and ``BUNIT``. Readers accept files
whose image is in the first HDU that has data (e.g. tile-compressed ones).
Host only (NumPy).
"""

from __future__ import annotations

import os

import fitsio
import numpy as np

from ..backend import native, to_host
from ..errors import BadDataError, InputError
from ..profiling import nvtx_range
from .util import atomic_output, header_dict, header_records, open_fits

__all__ = ["read_calib_image", "write_calib_image", "CALIB_KINDS",
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


@nvtx_range("read_calib")
def read_calib_image(path: str | os.PathLike, expected_shape: tuple | None = None,
                     kind: str = "bias"):
    """Read a calibration image.

    Parameters
    ----------
    path : str or PathLike
    expected_shape : (ny, nx), optional
        Required shape (the raw shape for a bias, the trimmed shape otherwise).
    kind : {"bias", "dark", "pixflat", "mask"}

    Returns
    -------
    image : ndarray
        float64 (bias, dark, pixflat) or int32 (mask), native byte order.
    header : dict
        The image header keywords.

    Raises
    ------
    MissingFileError, InputError (unreadable/truncated/no image),
    BadDataError (wrong shape; non-finite values; a mask with non-integer or
    negative values).
    """
    path = os.fspath(path)
    kind = _kind(kind, path)
    with open_fits(path) as fx:
        ext = None
        for i, h in enumerate(fx):
            try:
                if h.get_exttype() == "IMAGE_HDU" and h.get_dims():
                    ext = i
                    break
            except Exception:
                continue
        if ext is None:
            raise InputError(f"no image found in {kind} calibration file", path=path)
        try:
            data = fx[ext].read()
            hdr = header_dict(fx[ext].read_header())
        except Exception as exc:
            raise InputError(f"cannot read {kind} image ({str(exc).splitlines()[0]})",
                             path=path, hdu=ext) from exc
    data = native(data)
    if data.ndim != 2:
        raise BadDataError(f"{kind} image must be 2-D, got shape {data.shape}", path=path,
                           hdu=ext)
    if expected_shape is not None and tuple(data.shape) != tuple(expected_shape):
        raise BadDataError(f"{kind} image has shape {data.shape}, expected "
                           f"{tuple(expected_shape)}", path=path, hdu=ext)
    mem = CALIB_KINDS[kind][1]
    if kind == "mask":
        if data.dtype.kind == "f" and (not np.all(np.isfinite(data)) or
                                       np.any(data != np.round(data))):
            raise BadDataError("mask has non-integer values", path=path, hdu=ext)
        if data.size and data.min() < 0:
            raise BadDataError("mask has negative values", path=path, hdu=ext)
        return data.astype(mem), hdr
    bad = ~np.isfinite(data)
    if bad.any():
        raise BadDataError(f"{kind} image has {int(bad.sum())} non-finite pixels", path=path,
                           hdu=ext)
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
    """
    path = os.fspath(path)
    kind = _kind(kind, path)
    a = native(np.asarray(to_host(image)))
    if a.ndim != 2:
        raise BadDataError(f"{kind} image must be 2-D, got shape {a.shape}", path=path)
    disk, _, bunit = CALIB_KINDS[kind]
    if kind == "mask":
        if a.dtype.kind == "f" and (not np.all(np.isfinite(a)) or np.any(a != np.round(a))):
            raise BadDataError("mask has non-integer values", path=path)
        if a.size and (a.min() < 0 or a.max() > np.iinfo(np.int32).max):
            raise BadDataError("mask values must be in 0 … 2**31-1", path=path)
    elif not np.all(np.isfinite(a)):
        raise BadDataError(f"{kind} image has non-finite pixels", path=path)
    hdr = dict(header or {})
    hdr.setdefault("CALTYPE", kind.upper())
    if bunit:
        hdr.setdefault("BUNIT", bunit)
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(a.astype(disk), header=header_records(hdr))
    return path


def read_bias(path, expected_shape=None):
    """:func:`read_calib_image` with ``kind="bias"``."""
    return read_calib_image(path, expected_shape, "bias")


def read_dark(path, expected_shape=None):
    """:func:`read_calib_image` with ``kind="dark"`` (a rate in e⁻/s)."""
    return read_calib_image(path, expected_shape, "dark")


def read_pixflat(path, expected_shape=None):
    """:func:`read_calib_image` with ``kind="pixflat"``."""
    return read_calib_image(path, expected_shape, "pixflat")


def read_mask(path, expected_shape=None):
    """:func:`read_calib_image` with ``kind="mask"``."""
    return read_calib_image(path, expected_shape, "mask")


def write_bias(path, image, header=None):
    """:func:`write_calib_image` with ``kind="bias"``."""
    return write_calib_image(path, image, header, "bias")


def write_dark(path, image, header=None):
    """:func:`write_calib_image` with ``kind="dark"``."""
    return write_calib_image(path, image, header, "dark")


def write_pixflat(path, image, header=None):
    """:func:`write_calib_image` with ``kind="pixflat"``."""
    return write_calib_image(path, image, header, "pixflat")


def write_mask(path, image, header=None):
    """:func:`write_calib_image` with ``kind="mask"``."""
    return write_calib_image(path, image, header, "mask")
