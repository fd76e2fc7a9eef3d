"""Calibration inputs of preproc (bias, dark, pixflat, mask): arrays or file names.

Each calibration is given as ``None``/``False`` (not applied), a numpy/cupy
array (copied, never modified) or a file name. Files are read by gpuspec's one
calibration reader, :func:`gpuspec.io.calib.read_calib_image`, and arrays obey
the same value rules (:func:`gpuspec.io.calib.check_calib_values`: finite
images; a mask of integral, non-negative ``ccdmask`` bits). The shape is checked
against what preproc expects, with errors that name the calibration and the file.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..backend import is_cupy, to_device
from ..errors import BadDataError, InputError
from ..io.calib import check_calib_values, read_calib_image

__all__ = ["CalibInput", "load_calibration", "read_calibration_file", "check_shape"]


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
        """Shape of the calibration image.

        Backends: numpy, cupy (reads only the shape).
        """
        return tuple(self.data.shape)


def read_calibration_file(path: str, name: str) -> np.ndarray:
    """The validated image of a calibration file, in its stored float dtype (int32 for a mask).

    :func:`gpuspec.io.calib.read_calib_image` with ``kind=name, as_stored=True``,
    without the header.

    Backends: host only (numpy).
    """
    return read_calib_image(path, kind=name, as_stored=True)[0]


def _as_array(entry: Any, name: str):
    """``entry`` as a numpy or cupy array (errors name the calibration)."""
    if is_cupy(entry) or isinstance(entry, np.ndarray):
        return entry
    try:
        return np.asarray(entry)
    except Exception as exc:
        raise InputError(f"{name} calibration must be an array or a file name, "
                         f"got {type(entry).__name__}") from exc


def load_calibration(entry: Any, name: str, xp, dtype=np.float64) -> CalibInput | None:
    """Turn a calibration argument into a :class:`CalibInput` on the device of ``xp``.

    Parameters
    ----------
    entry : None, False, str, os.PathLike or array
        None/False: no calibration. A path: read with
        :func:`gpuspec.io.calib.read_calib_image`. An array: validated with
        :func:`gpuspec.io.calib.check_calib_values`, used as is (copied).
    name : str
        Calibration kind (``bias``, ``dark``, ``pixflat``, ``mask``).
    xp : module
        Target array namespace.
    dtype : dtype or None
        Output dtype (float64; int32 for masks; None keeps the stored dtype).

    Raises
    ------
    InputError
        ``True`` (automatic lookup is not supported), or an unusable value.
    BadDataError
        Not 2-D, NaN/inf pixels, a negative or fractional mask (the message names the
        calibration, the file and the HDU).

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
        data = _as_array(entry, name)
        check_calib_values(data, name)
    # upload in the stored dtype (float32 files: half the bytes), convert on the device
    data = to_device(data, xp)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    if data is entry:
        data = data.copy()
    return CalibInput(name, data, path)


def check_shape(cal: CalibInput, expected: tuple, what: str) -> None:
    """Raise :class:`BadDataError` naming the calibration (and file) if the shape is wrong.

    Backends: host only (shapes).
    """
    if cal.shape != tuple(expected):
        raise BadDataError(f"{cal.name} calibration has shape {cal.shape} but the {what} "
                           f"shape is {tuple(expected)}", path=cal.path)
