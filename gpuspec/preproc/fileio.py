"""File-level preproc: raw exposure file + calibrations → ``preproc-{camera}-{EXPID:08d}.fits``.

Backends: numpy and cupy (the file I/O itself runs on the host).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import InputError
from ..profiling import nvtx_range
from .core import preproc

__all__ = ["preproc_file", "preproc_filename"]

log = logging.getLogger(__name__)


def preproc_filename(camera: str, expid: int) -> str:
    """DESI name of a preproc file: ``preproc-{camera}-{EXPID:08d}.fits``.

    Backends: host only.
    """
    return f"preproc-{str(camera).lower()}-{int(expid):08d}.fits"


def _petal_fibermap(path: str, camera: str):
    """The fibermap rows of the petal of ``camera`` (all rows without PETAL_LOC). Host only."""
    from ..io import read_fibermap

    fm = read_fibermap(path)
    if isinstance(fm, tuple):
        fm = fm[0]
    names = getattr(getattr(fm, "dtype", None), "names", None) or ()
    if "PETAL_LOC" in names:
        petal = int(camera[1])
        sel = np.asarray(fm["PETAL_LOC"]) == petal
        if sel.any():
            fm = fm[sel]
    return fm


@nvtx_range("preproc_file")
def preproc_file(rawfile, camera: str, outfile, *, bias=None, dark=None, pixflat=None,
                 mask=None, fibermap=None, cosmics: bool = True, use_overscan_row: bool = False,
                 backend: str = "auto", **kwargs) -> str:
    """Preprocess one camera of a raw exposure file and write the preproc file atomically.

    Parameters
    ----------
    rawfile : str
        Raw exposure (``desi-EXPID.fits.fz`` or ``.fits``), one HDU per camera.
    camera : str
        Camera name (``b0`` ... ``z9``, any case).
    outfile : str
        Output file (desispec preproc layout: IMAGE, IVAR, MASK, READNOISE[, FIBERMAP]).
    bias, dark, pixflat, mask : array or str, optional
        Calibrations, see :func:`gpuspec.preproc.preproc` (the dark is a rate × EXPTIME).
    fibermap : str, optional
        Fibermap file; the rows of this camera's petal (PETAL_LOC) are stored in a
        FIBERMAP HDU.
    cosmics, use_overscan_row, backend :
        See :func:`gpuspec.preproc.preproc`.
    **kwargs :
        Further keyword arguments of :func:`gpuspec.preproc.preproc`.

    Returns
    -------
    str
        ``outfile``. Nothing is written when an error is raised.

    Backends: numpy and cupy.
    """
    from ..io import read_raw, write_image

    rawfile = os.fspath(rawfile)
    outfile = os.fspath(outfile)
    if os.path.abspath(rawfile) == os.path.abspath(outfile):
        raise InputError("output file would overwrite the raw file", path=outfile)
    # the header is validated once, by preproc (gpuspec.io.raw.raw_layout)
    raw, hdr, primary = read_raw(rawfile, camera, validate=False)
    img = preproc(raw, hdr, primary, bias=bias, dark=dark, pixflat=pixflat, mask=mask,
                  cosmics=cosmics, use_overscan_row=use_overscan_row, backend=backend,
                  path=rawfile, **kwargs)
    if fibermap is not None:
        img.fibermap = _petal_fibermap(os.fspath(fibermap), img.camera)
    write_image(outfile, img)
    log.info("wrote %s", outfile)
    return outfile
