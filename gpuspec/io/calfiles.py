"""Shared pieces of the calibration-file readers and writers (fiberflat, sky, fluxcalib).

Host only (NumPy); device arrays given to the writers are copied to the host.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_host
from ..errors import BadDataError
from .fibermap import as_fibermap_array
from .util import read_image_hdu, read_optional_hdu

__all__ = ["host", "check_2d", "clean_header", "as_table", "read_f8", "optional_f8"]

#: header keywords describing another file's layout, never copied from a frame header
_DROP = {"EXTNAME", "BUNIT", "NSPEC", "SPECMIN", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3"}


def host(a, dtype=None):
    """NumPy copy of ``a`` (numpy or cupy), optionally cast.

    Backends: numpy, cupy in; NumPy out (CuPy arrays are copied to the host).
    """
    if a is None:
        return None
    h = np.asarray(to_host(a))
    return h if dtype is None else h.astype(dtype)


def check_2d(path, ref, refname, pairs, wave=None):
    """Raise BadDataError naming the HDU whose array does not match ``ref``'s shape.

    Backends: host only (NumPy).
    """
    ref = np.asarray(ref)
    if ref.ndim != 2:
        raise BadDataError(f"{refname} must be 2-D, got shape {ref.shape}", path=path,
                           hdu=refname)
    for name, a in pairs:
        if a is not None and np.shape(a) != ref.shape:
            raise BadDataError(f"shape {np.shape(a)} differs from {refname} {ref.shape}",
                               path=path, hdu=name)
    if wave is not None and np.shape(wave) != (ref.shape[1],):
        raise BadDataError(f"WAVELENGTH has shape {np.shape(wave)}, {refname} has "
                           f"nwave={ref.shape[1]}", path=path, hdu="WAVELENGTH")


def clean_header(meta) -> dict:
    """A copy of a header dict without the keywords that describe another HDU.

    Backends: host only (plain values).
    """
    return {k: v for k, v in dict(meta or {}).items() if str(k).upper() not in _DROP}


def as_table(tab, path=None, hdu=None):
    """Structured array (host, native order, byte strings) from a table-like or dict.

    Backends: host only (NumPy).
    """
    if tab is None:
        return None
    if isinstance(tab, dict):
        n = len(next(iter(tab.values())))
        out = np.zeros(n, dtype=[(k, np.asarray(v).dtype) for k, v in tab.items()])
        for k, v in tab.items():
            out[k] = v
        tab = out
    try:
        return as_fibermap_array(tab)
    except BadDataError as exc:
        raise BadDataError(str(exc), path=path, hdu=hdu) from None


def read_f8(fx, ext, path):
    """Image HDU as float64 (native order).

    Backends: host only (NumPy; file I/O).
    """
    return read_image_hdu(fx, ext, path).astype(np.float64)


def optional_f8(fx, names, ext, path):
    """Optional image HDU as float64 (native order), or None.

    Backends: host only (NumPy; file I/O).
    """
    a = read_optional_hdu(fx, names, ext, path)
    return None if a is None else a.astype(np.float64)
