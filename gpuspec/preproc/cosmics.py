"""SDSS-style cosmic-ray rejection on a preprocessed image (desispec behaviour), through ``xp``.

Every step is an array expression (candidate pixels gathered by flat index,
neighbours read at fixed offsets), so it runs on the GPU without copying pixels
to the host:

1. Candidates: ``pix·sqrt(ivar) > nsig`` with ``ivar`` zeroed where the mask is set.
2. For each candidate not on the image border, and each of four axes
   (horizontal, vertical, two diagonals), the two neighbours are averaged (a
   neighbour with ivar = 0 counts as the central value with the central error).
   Criterion 1: on at least 2 axes ``centre > mean + nsig·σ_centre``.
   Criterion 2: on at least 1 axis
   ``(centre - cfudge·σ_c)·c2fudge·g_axis > mean + cfudge·σ_mean``,
   with per-band PSF gradients ``g``. Rejected: both criteria.
3. Iterate on the 8-neighbours of the rejected pixels with nsig=3, cfudge=0
   (rejected pixels get ivar = 0) until no new pixel is rejected (at most
   ``niter`` times).
4. Dilate by 3x3, then repair with binary closings (see :mod:`.morphology`).

Backends: numpy and cupy.
"""

from __future__ import annotations

import logging

import numpy as np

from ..backend import get_array_module
from ..errors import InputError
from ..maskbits import ccdmask
from ..profiling import nvtx_range
from .morphology import dilate3x3, repair_mask

__all__ = ["NSIG", "CFUDGE", "C2FUDGE", "NITER", "PSF_GRADIENTS", "psf_gradients",
           "reject_single_pass", "reject_cosmic_rays",
           "cosmic_mask"]

log = logging.getLogger(__name__)

#: desispec defaults of preproc's cosmic-ray rejection.
NSIG = 6.0
CFUDGE = 3.0
C2FUDGE = 0.5
NITER = 100

#: Mean PSF gradients along the four axes (horizontal, vertical, diagonal, anti-diagonal),
#: per band, as used by desispec.
PSF_GRADIENTS = {
    "b": (0.758221, 0.771945, 0.570183, 0.592199),
    "r": (0.819245, 0.847529, 0.617514, 0.656629),
    "z": (0.829552, 0.862828, 0.633424, 0.664144),
}

# (dy, dx) of the neighbour pair "+" for each axis; the "-" neighbour is the opposite.
_AXES = ((0, 1), (1, 0), (1, 1), (1, -1))


def psf_gradients(camera: str) -> tuple:
    """PSF gradients for the band of ``camera`` (``b0`` → band ``b``); host tuple.

    Host only (a tuple of floats).
    """
    band = str(camera or "")[:1].lower()
    if band not in PSF_GRADIENTS:
        raise InputError(f"no PSF gradients for band {band!r} (camera {camera!r}); "
                         "cosmic-ray rejection needs a b, r or z camera", keyword="CAMERA")
    return PSF_GRADIENTS[band]


def reject_single_pass(pix, ivar, selection, gradients, nsig: float, cfudge: float,
                       c2fudge: float):
    """One pass of the SDSS criteria on the selected pixels.

    Only the candidates are evaluated: their flat indices are gathered once (one
    ``nonzero``, i.e. one size synchronisation on a GPU) and the eight neighbours
    are read at fixed index offsets, so the cost scales with the number of
    candidates, not with the image size.

    Parameters
    ----------
    pix, ivar : float arrays (ny, nx)
        Image and inverse variance (ivar = 0 for masked pixels).
    selection : bool array (ny, nx)
        Pixels to test. Border pixels are never rejected.
    gradients : sequence of 4 floats
        PSF gradients of the band.
    nsig, cfudge, c2fudge : float
        Thresholds (see module docstring).

    Returns
    -------
    bool array (ny, nx) of rejected pixels, same device as ``pix``.

    Backends: numpy and cupy.
    """
    xp = get_array_module(pix)
    ny, nx = pix.shape
    rejected = xp.zeros(ny * nx, dtype=bool)
    if ny < 3 or nx < 3:
        return rejected.reshape(ny, nx)
    inner = xp.zeros((ny, nx), dtype=bool)
    inner[1:-1, 1:-1] = selection[1:-1, 1:-1] & (ivar[1:-1, 1:-1] > 0)
    idx = xp.flatnonzero(inner)
    if idx.size == 0:
        return rejected.reshape(ny, nx)
    p = pix.reshape(-1)
    v = ivar.reshape(-1)
    c = p[idx]
    cerr = 1.0 / xp.sqrt(v[idx])
    cvar = cerr ** 2
    first = xp.zeros(idx.shape, dtype=xp.int8)
    second = xp.zeros(idx.shape, dtype=bool)
    for a, (dy, dx) in enumerate(_AXES):
        off = dy * nx + dx
        val = None
        var = None
        for sgn in (-1, 1):
            j = idx + sgn * off
            pn = p[j]
            iv = v[j]
            good = iv > 0
            vn = xp.where(good, pn, c)
            en = xp.where(good, 1.0 / xp.where(good, iv, 1.0), cvar)
            val = vn if val is None else val + vn
            var = en if var is None else var + en
        val = val * 0.5
        err = xp.sqrt(var) * 0.5
        first += (c > val + nsig * cerr)
        second |= ((c - cfudge * cerr) * c2fudge * gradients[a]) > (val + cfudge * err)
    rejected[idx] = (first >= 2) & second
    return rejected.reshape(ny, nx)


def reject_cosmic_rays(pix, ivar, mask, camera: str, nsig: float = NSIG, cfudge: float = CFUDGE,
                       c2fudge: float = C2FUDGE, niter: int = NITER, dilate: bool = True):
    """Boolean map of the pixels hit by cosmic rays (desispec's ``reject_cosmic_rays_ala_sdss``).

    Parameters
    ----------
    pix, ivar : float arrays (ny, nx)
        Preprocessed image (electrons) and its inverse variance.
    mask : int array (ny, nx)
        Pixels with mask != 0 are ignored (ivar taken as 0).
    camera : str
        Camera name; its band selects the PSF gradients.
    nsig, cfudge, c2fudge : float
        Detection thresholds (desispec defaults 6, 3, 0.5).
    niter : int
        Maximum number of neighbour iterations (desispec's ``reject_cosmic_rays``
        passes 100 and stops at the first iteration that adds nothing).
    dilate : bool
        Dilate by 3x3 and repair with binary closings.

    Returns
    -------
    bool array (ny, nx) on the device of ``pix``.

    Backends: numpy and cupy.
    """
    xp = get_array_module(pix)
    gradients = psf_gradients(camera)
    if c2fudge is None:
        c2fudge = C2FUDGE
    tivar = ivar * (mask == 0) * (ivar > 0)
    with nvtx_range("preproc:cosmics:first_pass"):
        selection = (pix * xp.sqrt(tivar)) > nsig
        rejected = reject_single_pass(pix, tivar, selection, gradients, nsig, cfudge, c2fudge)
    with nvtx_range("preproc:cosmics:neighbours"):
        for it in range(int(niter)):
            neighbours = dilate3x3(rejected) & ~rejected
            tivar = xp.where(rejected, 0.0, tivar)
            new = reject_single_pass(pix, tivar, neighbours, gradients, 3.0, 0.0, c2fudge)
            if not bool(new.any()):   # one scalar to the host per iteration
                break
            rejected |= new
            log.debug("cosmics iteration %d: new pixels rejected", it)
    if dilate:
        with nvtx_range("preproc:cosmics:dilate_repair"):
            rejected = dilate3x3(rejected)
            rejected = repair_mask(rejected)
    return rejected


def cosmic_mask(image, nsig: float = NSIG, cfudge: float = CFUDGE, c2fudge: float = C2FUDGE,
                niter: int = NITER, dilate: bool = True):
    """Set the COSMIC bit in ``image.mask`` (in place) and return the rejection map.

    ``image`` is a :class:`gpuspec.Image` whose arrays live on one device.

    Backends: numpy and cupy.
    """
    rejected = reject_cosmic_rays(image.pix, image.ivar, image.mask, image.camera, nsig=nsig,
                                  cfudge=cfudge, c2fudge=c2fudge, niter=niter, dilate=dilate)
    xp = get_array_module(image.mask)
    image.mask = xp.where(rejected, image.mask | np.int32(ccdmask.COSMIC), image.mask)
    return rejected
