"""Night fiber flat from several lamps and spectrographs (desispec ``autocalib_fiberflat``).

See :func:`gpuspec.calibrate.fiberflat.autocalib_fiberflat` for the method. The
focal-plane fit at every wavelength is one batched least-squares solve (the design
matrix depends on the fibers only), instead of desispec's loop over wavelengths.

Backends: numpy, cupy.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..backend import get_array_module, get_xp, to_device, to_host
from ..errors import InputError
from ..maskbits import fibermask, specmask
from .containers import FiberFlat
from .util import masked_interp

__all__ = ["autocalib", "filter_fiberflat"]


def _key(ff, name, path_hint=""):
    try:
        return ff.meta[name]
    except KeyError:
        raise InputError(f"fiberflat header has no {name}{path_hint}", keyword=name) from None


def _centre_flat(xp, flats):
    """Flat at the centre of the focal plane, per wavelength, for one exposure."""
    X, Y, Z = [], [], []
    for f in flats:
        nw = f.fiberflat.shape[1]
        good = ((f.ivar > 0) & (f.mask == 0)).sum(axis=1) > nw // 2
        fm = f.fibermap
        if fm is None:
            raise InputError("autocalib_fiberflat needs the fiberflats' FIBERMAP "
                             "(FIBERASSIGN_X/Y, FIBERSTATUS)")
        good &= to_device(np.asarray(fm["FIBERSTATUS"]) == 0, xp)
        X.append(to_device(np.asarray(fm["FIBERASSIGN_X"], np.float64), xp)[good])
        Y.append(to_device(np.asarray(fm["FIBERASSIGN_Y"], np.float64), xp)[good])
        Z.append(f.fiberflat[good])
    X, Y, Z = xp.concatenate(X), xp.concatenate(Y), xp.concatenate(Z)
    A = xp.stack([xp.ones_like(X), X, Y, X ** 2 + Y ** 2], axis=1)
    coeff = xp.linalg.lstsq(A, Z, rcond=None)[0]
    return coeff[0]


def filter_fiberflat(ff: FiberFlat) -> FiberFlat:
    """Replace single-bin spikes and very noisy bins by interpolation (desispec).

    A bin is bad where it exceeds the mean of its neighbours by more than
    0.1 + 3σ, or where its error exceeds 0.05; it is linearly interpolated over the
    good bins (1 beyond the ends).

    Backends: numpy, cupy (whatever ``ff.fiberflat`` is).
    """
    xp = get_array_module(ff.fiberflat)
    f, v = ff.fiberflat, ff.ivar
    var = 1.0 / (v + (v == 0) * 1e-6)
    diff = xp.zeros_like(f)
    dvar = xp.zeros_like(f)
    diff[:, 1:-1] = f[:, 1:-1] - 0.5 * (f[:, :-2] + f[:, 2:])
    dvar[:, 1:-1] = var[:, 1:-1] + 0.25 * (var[:, :-2] + var[:, 2:])
    bad = (diff > (0.1 + 3 * xp.sqrt(dvar))) | (var > 0.05 ** 2)
    good = ~bad
    doit = xp.any(bad, axis=1) & xp.any(good, axis=1)
    interp = masked_interp(ff.wave, ff.wave, f, good, left=1.0, right=1.0)
    return replace(ff, fiberflat=xp.where(doit[:, None] & bad, interp, f))


def autocalib(fiberflats, backend="auto") -> dict:
    """See :func:`gpuspec.calibrate.fiberflat.autocalib_fiberflat`.

    Backends: numpy, cupy (``backend``; the grouping by EXPID and spectrograph is host side).
    """
    from .fiberflat import check_same_wave

    xp = get_xp(backend)
    if len(fiberflats) == 0:
        raise InputError("input fiberflat list is empty")
    for f in fiberflats[1:]:
        check_same_wave(fiberflats[0].wave, f.wave, "fiberflats")
    flats = [replace(f, fiberflat=to_device(f.fiberflat, xp, np.float64),
                     ivar=to_device(f.ivar, xp, np.float64), mask=to_device(f.mask, xp),
                     meanspec=to_device(f.meanspec, xp, np.float64),
                     wave=to_device(f.wave, xp, np.float64)) for f in fiberflats]
    expid = np.array([int(_key(f, "EXPID")) for f in flats])
    spectro = np.array([int(str(_key(f, "CAMERA")).strip()[1]) for f in flats])
    centre = {}
    for ee in np.unique(expid):
        ii = np.flatnonzero(expid == ee)
        mm = sum(flats[i].meanspec for i in ii) / ii.size
        for i in ii:
            scale = flats[i].meanspec / (mm + (mm == 0))
            flats[i] = replace(flats[i], fiberflat=flats[i].fiberflat * scale)
        centre[ee] = _centre_flat(xp, [flats[i] for i in ii])
    out, medians = {}, []
    for sp in np.unique(spectro):
        ii = np.flatnonzero(spectro == sp)
        f0 = flats[ii[0]]
        fflat = xp.zeros_like(f0.fiberflat)
        var = xp.zeros_like(f0.ivar)
        mask = xp.zeros_like(f0.mask)
        meanspec = xp.zeros_like(f0.meanspec)
        for i in ii:
            c = centre[expid[i]]
            corr = 1.0 / (c + (c == 0))
            fi = flats[i]
            fflat = fflat + fi.fiberflat * corr
            var = var + corr ** 2 / (fi.ivar + (fi.ivar == 0)) + 1e12 * (fi.ivar == 0)
            mask = mask | fi.mask
            meanspec = meanspec + fi.meanspec * corr
        var = var / ii.size ** 2
        ivar = (var > 0) / (var + (var == 0))
        ivar = xp.where(ivar < 1e-8, 0.0, ivar)
        mask = xp.where(ivar == 0, mask | specmask.BADFIBERFLAT, mask)
        fm = None if f0.fibermap is None else f0.fibermap.copy()
        if fm is not None:
            frac = to_host((mask != 0).sum(axis=1)) / mask.shape[1]
            fm["FIBERSTATUS"][frac > 0.25] |= fibermask.BADFLAT
        out[int(sp)] = FiberFlat(wave=f0.wave, fiberflat=fflat / ii.size, ivar=ivar,
                                 mask=mask.astype(np.uint32), meanspec=meanspec / ii.size,
                                 chi2pdf=None, meta=dict(f0.meta), fibermap=fm)
        medians.append(xp.median(out[int(sp)].fiberflat, axis=0))
    mflat = xp.median(xp.stack(medians), axis=0)
    corr = 1.0 / (mflat + (mflat == 0))
    for sp in out:
        out[sp] = filter_fiberflat(replace(out[sp], fiberflat=out[sp].fiberflat * corr))
    return out
