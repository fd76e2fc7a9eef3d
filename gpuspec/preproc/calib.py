"""Calibration inputs of preproc (bias, dark, pixflat, mask): arrays or file names.

Each calibration is given as ``None``/``False`` (not applied), a numpy/cupy
array (copied, never modified) or a file name (read from its image HDU). The
shape is checked against what preproc expects, with errors that name the
calibration and the file.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..backend import is_cupy, native, to_device
from ..errors import BadDataError, InputError, MissingFileError

__all__ = ["CalibInput", "load_calibration", "read_calibration_file"]


class CalibInput:
    """A loaded calibration image.

    Attributes
    ----------
    name : str
        ``"bias"``, ``"dark"``, ``"pixflat"`` or ``"mask"``.
    data : array
        The image on the target device (float64, or int32 for the mask).
    path : str or None
        File it came from, None for an array.
    provenance : str
        What goes into the header: the file's base name, or ``"Unknown image"``.
    """

    def __init__(self, name: str, data, path: str | None):
        self.name = name
        self.data = data
        self.path = path
        self.provenance = os.path.basename(path) if path is not None else "Unknown image"

    @property
    def shape(self):
        return tuple(self.data.shape)


def read_calibration_file(path: str, name: str) -> np.ndarray:
    """Read the calibration image of a FITS file (native byte order, numpy).

    The image is HDU 0 when it holds data, else the HDU whose EXTNAME is ``name``
    in upper case (``BIAS``, ``DARK``, ``PIXFLAT``, ``MASK``), else the first image
    HDU with data.

    Raises
    ------
    MissingFileError, InputError
        Missing or unreadable file, or no image in it; the message names the
        calibration and the file.

    Host only (numpy).
    """
    import fitsio

    path = os.fspath(path)
    if not os.path.exists(path):
        raise MissingFileError(f"{name} calibration file does not exist", path=path)
    try:
        with fitsio.FITS(path) as fx:
            candidates = [0]
            if name.upper() in fx:
                candidates.append(name.upper())
            candidates += list(range(1, len(fx)))
            for ext in candidates:
                hdu = fx[ext]
                if hdu.get_exttype() != "IMAGE_HDU":
                    continue
                dims = hdu.get_dims()
                if not dims:
                    continue
                return native(hdu.read())
    except (OSError, IOError) as exc:
        raise InputError(f"cannot read {name} calibration ({exc})", path=path) from exc
    raise InputError(f"no image data found for the {name} calibration", path=path)


def load_calibration(entry: Any, name: str, xp, dtype=np.float64) -> CalibInput | None:
    """Turn a calibration argument into a :class:`CalibInput` on the device of ``xp``.

    Parameters
    ----------
    entry : None, False, str, os.PathLike or array
        None/False: no calibration. A path: read it. An array: used as is (copied).
    name : str
        Calibration name for messages.
    xp : module
        Target array namespace.
    dtype : dtype
        Output dtype (float64; int32 for masks).

    Raises
    ------
    InputError
        ``True`` (automatic lookup is not supported), or an unusable value.
    BadDataError
        Not 2-D, or NaN/inf pixels (message names the calibration and file).

    Backends: numpy and cupy (the target of ``xp``).
    """
    if entry is None or entry is False:
        return None
    if entry is True:
        raise InputError(f"{name}=True (automatic calibration lookup) is not supported: "
                         f"give the {name} as an array or a file name")
    if isinstance(entry, (str, os.PathLike)):
        path = os.fspath(entry)
        data = read_calibration_file(path, name)
    else:
        path = None
        data = entry
    if not (is_cupy(data) or isinstance(data, np.ndarray)):
        try:
            data = np.asarray(data)
        except Exception as exc:
            raise InputError(f"{name} calibration must be an array or a file name, "
                             f"got {type(entry).__name__}") from exc
    if data.ndim != 2:
        raise BadDataError(f"{name} calibration must be a 2-D image, got shape "
                           f"{tuple(data.shape)}", path=path)
    # upload in the stored dtype (float32 files: half the bytes), convert on the device
    data = to_device(data, xp)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    if data is entry:
        data = data.copy()
    if data.dtype.kind == "f" and not bool(xp.isfinite(data).all()):
        nbad = int((~xp.isfinite(data)).sum())
        raise BadDataError(f"{name} calibration has {nbad} NaN or infinite pixel(s)", path=path)
    return CalibInput(name, data, path)


def check_shape(cal: CalibInput, expected: tuple, what: str) -> None:
    """Raise :class:`BadDataError` naming the calibration (and file) if the shape is wrong."""
    if cal.shape != tuple(expected):
        raise BadDataError(f"{cal.name} calibration has shape {cal.shape} but the {what} "
                           f"shape is {tuple(expected)}", path=cal.path)
