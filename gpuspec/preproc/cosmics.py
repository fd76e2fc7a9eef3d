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

Cost: a necessary condition of criterion 2 (exact in floating point, see
:func:`_may_pass_block` and :func:`_may_pass`) drops the smooth S/N candidates (traces,
sky) with contiguous block operations before the per-candidate tests, and the
iterations of step 3 work on the flat indices of the rejected pixels, so the work
follows the number of cosmic-ray pixels rather than the image size.

Backends: numpy and cupy.
"""

from __future__ import annotations

import logging

import numpy as np

from ..backend import get_array_module
from ..errors import InputError
from ..maskbits import ccdmask
from ..profiling import nvtx_range
from .blocks import row_blocks
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

    Backends: host only (a tuple of floats).
    """
    band = str(camera or "")[:1].lower()
    if band not in PSF_GRADIENTS:
        raise InputError(f"no PSF gradients for band {band!r} (camera {camera!r}); "
                         "cosmic-ray rejection needs a b, r or z camera", keyword="CAMERA")
    return PSF_GRADIENTS[band]


def _exact_tests(p, v, ok, idx, nx: int, gradients, nsig: float, cfudge: float,
                 c2fudge: float):
    """The SDSS criteria on the candidates ``idx`` (flat indices, interior, ``ok``).

    ``ok`` (flat bool) marks the pixels whose inverse variance ``v`` is used (not
    masked, ivar > 0, not rejected yet); a neighbour that is not ``ok`` counts as the
    central value with the central error. Returns a bool array over ``idx``.
    """
    xp = get_array_module(p)
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
            good = ok[j]
            vn = xp.where(good, p[j], c)
            en = xp.where(good, 1.0 / xp.where(good, v[j], 1.0), cvar)
            val = vn if val is None else val + vn
            var = en if var is None else var + en
        val = val * 0.5
        err = xp.sqrt(var) * 0.5
        first += (c > val + nsig * cerr)
        second |= ((c - cfudge * cerr) * c2fudge * gradients[a]) > (val + cfudge * err)
    return (first >= 2) & second


def _may_pass(p, v, ok, idx, nx: int, gradients, cfudge: float, c2fudge: float):
    """A necessary condition of criterion 2, from the neighbour values alone (bool over idx).

    Criterion 2 on an axis is ``L > val + cfudge·err`` with ``err ≥ 0``; rounding is
    monotone, so it implies ``L > val`` with the same floating-point ``L`` and ``val``.
    Smooth sources (traces, sky) fail this cheap test, and only the few candidates
    that pass it go through :func:`_exact_tests`: the answer is unchanged.
    """
    xp = get_array_module(p)
    c = p[idx]
    base = (c - cfudge * (1.0 / xp.sqrt(v[idx]))) * c2fudge
    maybe = xp.zeros(idx.shape, dtype=bool)
    for a, (dy, dx) in enumerate(_AXES):
        off = dy * nx + dx
        jm, jp = idx - off, idx + off
        val = (xp.where(ok[jm], p[jm], c) + xp.where(ok[jp], p[jp], c)) * 0.5
        maybe |= (base * gradients[a]) > val
    return maybe


def _candidate_tests(p, v, ok, idx, nx: int, gradients, nsig: float, cfudge: float,
                     c2fudge: float):
    """:func:`_exact_tests` on the candidates that pass :func:`_may_pass` (bool over idx)."""
    xp = get_array_module(p)
    out = xp.zeros(idx.shape, dtype=bool)
    if idx.size == 0:
        return out
    keep = xp.flatnonzero(_may_pass(p, v, ok, idx, nx, gradients, cfudge, c2fudge))
    if keep.size:
        out[keep] = _exact_tests(p, v, ok, idx[keep], nx, gradients, nsig, cfudge, c2fudge)
    return out


def _interior(shape, xp):
    """Bool (ny, nx): True away from the image border (border pixels are never rejected)."""
    ny, nx = shape
    inner = xp.zeros((ny, nx), dtype=bool)
    inner[1:-1, 1:-1] = True
    return inner


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
    ok = (ivar > 0).reshape(-1)
    idx = xp.flatnonzero(selection.reshape(-1) & ok & _interior((ny, nx), xp).reshape(-1))
    if idx.size == 0:
        return rejected.reshape(ny, nx)
    rejected[idx] = _candidate_tests(pix.reshape(-1), ivar.reshape(-1), ok, idx, nx,
                                     gradients, nsig, cfudge, c2fudge)
    return rejected.reshape(ny, nx)


def _may_pass_block(pix, ok, rows: slice, gradients, c2fudge: float):
    """Necessary condition of criterion 2 on the interior pixels of ``rows`` (bool block).

    With ``L'_a = c·c2fudge·g_a ≥ L_a = (c - cfudge·σ_c)·c2fudge·g_a`` (cfudge,
    c2fudge, g ≥ 0 and monotone rounding) and unusable neighbours taken as -inf
    (≤ the central value they stand for), criterion 2 on axis ``a`` implies
    ``2·L'_a > p₋ + p₊``; doubling is exact, so the test is exact in floating point.
    Contiguous shifted views of the block, no gathers.
    """
    xp = get_array_module(pix)
    nx = pix.shape[1]
    halo = slice(rows.start - 1, rows.stop + 1)
    nb = rows.stop - rows.start
    pl = xp.where(ok[halo], pix[halo], -xp.inf)
    cc2 = pix[rows, 1:-1] * c2fudge
    cc2 += cc2                                      # 2·fl(c·c2fudge), exact
    maybe = xp.zeros((nb, nx - 2), dtype=bool)
    for a, (dy, dx) in enumerate(_AXES):
        lo = pl[1 - dy:1 - dy + nb, 1 - dx:1 - dx + nx - 2]
        hi = pl[1 + dy:1 + dy + nb, 1 + dx:1 + dx + nx - 2]
        maybe |= (cc2 * gradients[a]) > (lo + hi)
    return maybe


def _first_candidates(pix, ivar, mask, nsig: float, gradients, cfudge: float,
                      c2fudge: float):
    """First-pass candidates and the map of usable pixels.

    A candidate is an interior pixel with ``pix·sqrt(tivar) > nsig`` and tivar > 0,
    where ``tivar = ivar·(mask == 0)·(ivar > 0)`` (desispec's), that passes the
    necessary condition of criterion 2 of :func:`_may_pass_block` (smooth traces and
    sky, most of the S/N > nsig pixels of a bright exposure, fail it), evaluated with
    contiguous block operations instead of per-candidate gathers. The condition needs
    ``cfudge, c2fudge ≥ 0`` and positive gradients (desispec's values); otherwise every
    S/N candidate is kept.

    Returns the flat candidate indices and the flat bool map ``tivar > 0``. Evaluated
    by blocks of rows (no full-size float temporary); one ``flatnonzero``.
    """
    xp = get_array_module(pix)
    ny, nx = pix.shape
    prefilter = cfudge >= 0 and c2fudge >= 0 and min(gradients) >= 0
    sel = xp.zeros((ny, nx), dtype=bool)
    ok = xp.empty((ny, nx), dtype=bool)
    for rows in row_blocks(0, ny, xp):
        iv = ivar[rows]
        tv = iv * (mask[rows] == 0) * (iv > 0)
        ok[rows] = tv > 0
        sel[rows] = ((pix[rows] * xp.sqrt(tv)) > nsig) & ok[rows]
    for rows in row_blocks(1, ny - 1, xp) if prefilter else ():
        sel[rows, 1:-1] &= _may_pass_block(pix, ok, rows, gradients, c2fudge)
    sel[0] = sel[-1] = False
    sel[:, 0] = sel[:, -1] = False
    return xp.flatnonzero(sel), ok.reshape(-1)


def _neighbour_candidates(rej_idx, shape, ok):
    """Interior 8-neighbours of the rejected pixels that pass ``ok_at`` (unique, sorted)."""
    xp = get_array_module(rej_idx)
    ny, nx = shape
    r = rej_idx // nx
    c = rej_idx % nx
    parts = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            rr, cc = r + dy, c + dx
            inside = (rr >= 1) & (rr <= ny - 2) & (cc >= 1) & (cc <= nx - 2)
            parts.append((rr * nx + cc)[inside])
    cand = xp.unique(xp.concatenate(parts))
    return cand[ok[cand]]


def reject_cosmic_rays(pix, ivar, mask, camera: str, nsig: float = NSIG, cfudge: float = CFUDGE,
                       c2fudge: float = C2FUDGE, niter: int = NITER, dilate: bool = True):
    """Boolean map of the pixels hit by cosmic rays (desispec's ``reject_cosmic_rays_ala_sdss``).

    The neighbour iterations work on the flat indices of the rejected pixels (their
    8-neighbours are the candidates of the next pass), so they cost in proportion to
    the number of rejected pixels; the effective inverse variance (zero for masked and
    rejected pixels) is read at the pixels that are tested, never stored as an image.

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
    ny, nx = pix.shape
    rejected = xp.zeros(ny * nx, dtype=bool)
    if ny < 3 or nx < 3:
        return rejected.reshape(ny, nx)
    p, v = pix.reshape(-1), ivar.reshape(-1)
    with nvtx_range("preproc:cosmics:first_pass"):
        idx, ok = _first_candidates(pix, ivar, mask, nsig, gradients, cfudge, c2fudge)
        rej_idx = idx[_candidate_tests(p, v, ok, idx, nx, gradients, nsig, cfudge, c2fudge)]
        rejected[rej_idx] = True
    with nvtx_range("preproc:cosmics:neighbours"):
        for it in range(int(niter)):
            if rej_idx.size == 0:
                break
            ok[rej_idx] = False        # rejected pixels: ivar taken as 0
            cand = _neighbour_candidates(rej_idx, (ny, nx), ok)
            new = cand[_candidate_tests(p, v, ok, cand, nx, gradients, 3.0, 0.0, c2fudge)]
            if new.size == 0:          # the size is on the host (one sync per iteration)
                break
            rejected[new] = True
            rej_idx = xp.concatenate([rej_idx, new])
            log.debug("cosmics iteration %d: %d new pixels rejected", it, int(new.size))
    rejected = rejected.reshape(ny, nx)
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
    image.mask[rejected] |= np.int32(ccdmask.COSMIC)
    return rejected
