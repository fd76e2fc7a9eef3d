"""Which fibers each calibration step may use: FIBERSTATUS masks, sky fibers, standards.

The FIBERSTATUS bits that disqualify a fiber are desispec's
(``desispec.fiberbitmasking.get_fiberbitmask_comparison_value``), by step and band:

========  ==========================================================================
step      bits
========  ==========================================================================
flat      BROKENFIBER BADFIBER BADTRACE BADARC MANYBADCOL MANYREJECTED
sky/flux  flat's + MISSINGPOSITION BADPOSITION BADFLAT + BADAMP<band>
stdstars  sky's + POORPOSITION
========  ==========================================================================

MANYBADCOL is bit 20 in desispec 0.70 (gpuspec's :mod:`gpuspec.maskbits` names that
bit VARIABLE, after the desispec version of the coadd references).
Host-side NumPy for fibermap work; the ivar/mask masking accepts device arrays.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module, to_device
from ..maskbits import fibermask, specmask

__all__ = ["fiberstatus_mask", "bad_fiber_rows", "fiberbitmasked", "sky_fibers",
           "is_std_star", "STD_DESI_BITS", "FA_TYPE_STD", "MANYBADCOL"]

MANYBADCOL = 1 << 20  # desispec 0.70 fibermask.MANYBADCOL
#: desitarget desi_mask bits of standard stars: STD_FAINT (33), STD_BRIGHT (35)
STD_DESI_BITS = {"STD_FAINT": 1 << 33, "STD_BRIGHT": 1 << 35}
#: MWS_TARGET bits of Gaia standards: GAIA_STD_FAINT (33), GAIA_STD_BRIGHT (35)
STD_MWS_BITS = {"GAIA_STD_FAINT": 1 << 33, "GAIA_STD_BRIGHT": 1 << 35}
#: fiberassign TARGET_TYPE_STANDARD bit of FA_TYPE
FA_TYPE_STD = 2


def fiberstatus_mask(step: str, band: str = "brz") -> int:
    """FIBERSTATUS bits that disqualify a fiber for ``step`` ('flat', 'sky', 'flux',
    'stdstars') in ``band`` (b, r, z or a combination).

    Backends: host only (plain values).
    """
    m = (fibermask.BROKENFIBER | fibermask.BADFIBER | fibermask.BADTRACE | fibermask.BADARC
         | MANYBADCOL | fibermask.MANYREJECTED)
    step = step.lower()
    if step == "flat":
        return m
    m |= fibermask.MISSINGPOSITION | fibermask.BADPOSITION | fibermask.BADFLAT
    for b in band.lower():
        m |= {"b": fibermask.BADAMPB, "r": fibermask.BADAMPR, "z": fibermask.BADAMPZ}.get(b, 0)
    if step in ("sky", "skysub", "flux", "fluxcalib"):
        return m
    if step in ("stdstars", "star"):
        return m | fibermask.POORPOSITION
    raise ValueError(f"unknown calibration step {step!r}")


def bad_fiber_rows(fibermap, step: str, band: str) -> np.ndarray:
    """Boolean (nspec,) of fibers whose FIBERSTATUS has a disqualifying bit (host).

    Backends: host only (NumPy; fibermap table).
    """
    if fibermap is None or "FIBERSTATUS" not in (fibermap.dtype.names or ()):
        n = 0 if fibermap is None else len(fibermap)
        return np.zeros(n, bool)
    return (np.asarray(fibermap["FIBERSTATUS"]).astype(np.int64)
            & fiberstatus_mask(step, band)) != 0


def fiberbitmasked(ivar, mask, fibermap, step: str, band: str, ivar_framemask: bool = True):
    """desispec ``get_fiberbitmasked_frame_arrays``: ivar and mask after FIBERSTATUS.

    ``ivar *= (mask == 0)`` when ``ivar_framemask``; fibers with a disqualifying bit
    get ``mask |= BADFIBER`` and (when ``ivar_framemask``) ivar 0. Returns new arrays.

    Backends: numpy, cupy (the fibermap stays on the host).
    """
    xp = get_array_module(ivar, mask)
    ivar = ivar * (mask == 0) if ivar_framemask else ivar.copy()
    mask = mask.copy()
    if fibermap is None:
        return ivar, mask
    bad = to_device(bad_fiber_rows(fibermap, step, band), xp)
    mask = xp.where(bad[:, None], mask | specmask.BADFIBER, mask)
    if ivar_framemask:
        ivar = xp.where(bad[:, None], 0.0, ivar)
    return ivar, mask


def _col(fibermap, name, default=0):
    names = fibermap.dtype.names or ()
    if name in names:
        return np.asarray(fibermap[name])
    return np.full(len(fibermap), default)


def sky_fibers(fibermap, override_sky_targetids=None, exclude_sky_targetids=None) -> np.ndarray:
    """Indices of the sky fibers (desispec ``get_sky_fibers``).

    OBJTYPE == 'SKY' without the VARIABLETHRU FIBERSTATUS bit, minus
    ``exclude_sky_targetids``; or exactly the rows of ``override_sky_targetids``.

    Backends: host only (NumPy; fibermap table).
    """
    tid = _col(fibermap, "TARGETID")
    if override_sky_targetids is not None:
        return np.flatnonzero(np.isin(tid, np.asarray(override_sky_targetids)))
    obj = np.char.strip(np.asarray(_col(fibermap, "OBJTYPE", "")).astype(str))
    ok = (obj == "SKY") & ((_col(fibermap, "FIBERSTATUS").astype(np.int64)
                           & fibermask.VARIABLETHRU) == 0)
    idx = np.flatnonzero(ok)
    if exclude_sky_targetids is not None:
        idx = idx[~np.isin(tid[idx], np.asarray(exclude_sky_targetids))]
    return idx


def is_std_star(fibermap, bright: bool | None = None) -> np.ndarray:
    """Standard stars of a fibermap (desispec ``isStdStar``, main-survey bits).

    DESI_TARGET STD_FAINT/STD_BRIGHT or MWS_TARGET GAIA_STD_*; if no row has them,
    FA_TYPE's standard bit; never fibers with FIBERSTATUS VARIABLETHRU.

    Backends: host only (NumPy; fibermap table).
    """
    desi = {None: ("STD_FAINT", "STD_BRIGHT"), True: ("STD_BRIGHT",),
            False: ("STD_FAINT",)}[bright]
    mws = {None: ("GAIA_STD_FAINT", "GAIA_STD_BRIGHT"), True: ("GAIA_STD_BRIGHT",),
           False: ("GAIA_STD_FAINT",)}[bright]
    dt = _col(fibermap, "DESI_TARGET").astype(np.int64)
    mt = _col(fibermap, "MWS_TARGET").astype(np.int64)
    yes = np.zeros(len(fibermap), bool)
    for k in desi:
        yes |= (dt & STD_DESI_BITS[k]) != 0
    for k in mws:
        yes |= (mt & STD_MWS_BITS[k]) != 0
    if not yes.any():
        yes = (_col(fibermap, "FA_TYPE").astype(np.int64) & FA_TYPE_STD) != 0
    yes &= (_col(fibermap, "FIBERSTATUS").astype(np.int64) & fibermask.VARIABLETHRU) == 0
    return yes
