"""Calibrated frames: ``cframe-{camera}-{EXPID:08d}.fits``.

Same layout as a frame (:mod:`gpuspec.io.frame`, written by its writer) with flux in
10⁻¹⁷ erg/s/cm²/Å: the FLUX header carries ``BUNIT = '10**-17 erg/(s cm2 Angstrom)'``
(desispec ``write_frame(units=...)``), the IVAR header the matching inverse unit.
"""

from __future__ import annotations

import os

import fitsio

from ..profiling import nvtx_range
from .frame import read_frame, write_frame
from .util import atomic_output, write_checksums

__all__ = ["write_cframe", "read_cframe", "CFRAME_UNIT", "CFRAME_IVAR_UNIT", "cframe_name"]

CFRAME_UNIT = "10**-17 erg/(s cm2 Angstrom)"
CFRAME_IVAR_UNIT = "10**+34 (s2 cm4 Angstrom2) / erg2"


def cframe_name(camera: str, expid: int) -> str:
    """desispec's file name of a calibrated frame.

    Backends: host only (plain values).
    """
    return f"cframe-{camera.lower()}-{int(expid):08d}.fits"


@nvtx_range("write_cframe")
def write_cframe(path, frame, meta: dict | None = None) -> str:
    """Write a calibrated frame (atomically): the frame writer, then the flux units.

    Backends: host only (file I/O); CuPy arrays are copied to the host first.
    """
    path = os.fspath(path)
    with atomic_output(path) as tmp:
        write_frame(tmp, frame, meta=meta)
        with fitsio.FITS(tmp, "rw") as fx:
            fx["FLUX"].write_key("BUNIT", CFRAME_UNIT)
            fx["IVAR"].write_key("BUNIT", CFRAME_IVAR_UNIT)
        write_checksums(tmp)
    return path


def read_cframe(path):
    """Read a calibrated frame (a :class:`gpuspec.Frame`; ``meta['BUNIT']`` gives the unit).

    Backends: host only (NumPy; file I/O).
    """
    return read_frame(path)
