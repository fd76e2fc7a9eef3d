"""Coadd across cameras (b, r, z → brz) on the union grid (desispec ``coadd_cameras``).

Non-overlapping pixels are copied; pixels present in two neighbouring bands
(within 1e-4 Å) are ivar-weighted: flux ``Σ ivar·f / Σ ivar``, ivar summed, mask
OR-ed (and cleared where ivar > 0), resolution averaged with the ivar of its row
pixel. Works on all targets at once (whole-array operations on ``xp``).
"""

from __future__ import annotations

import copy

import numpy as np

from ..backend import get_xp, to_device, to_host
from ..profiling import nvtx_range
from ..spectra import Spectra
from .plain import resolution_coadd

__all__ = ["coadd_cameras"]

_TOL = 1e-4


def coadd_cameras(spectra: Spectra, backend="auto") -> Spectra:
    """Combine the bands of each spectrum into one band on the union grid.

    Parameters
    ----------
    spectra : Spectra
        Usually a coadd across exposures (one row per target); not modified.

    Returns
    -------
    Spectra
        Band ``"".join(bands sorted by wavelength)`` (e.g. ``"brz"``); host arrays;
        fibermap/exp_fibermap/scores copied. A single-band input is returned as is.

    Raises
    ------
    ValueError
        Band grids that are not aligned on a common grid.

    Backends: numpy, cupy.
    """
    bands = list(spectra.bands)
    if len(bands) == 1:
        return spectra
    xp = get_xp(backend)
    mw = [float(np.mean(to_host(spectra.wave[b]))) for b in bands]
    sbands = [bands[i] for i in np.argsort(mw)]
    wave = None
    for b in sbands:
        w = np.asarray(to_host(spectra.wave[b]), dtype=np.float64)
        wave = w.copy() if wave is None else np.append(wave, w[w > wave[-1] + _TOL])
    start = {}
    for b in bands:
        w = np.asarray(to_host(spectra.wave[b]), dtype=np.float64)
        imin = int(np.argmin(np.abs(w[0] - wave)))
        if imin + w.size > wave.size or np.any(np.abs(w - wave[imin:imin + w.size]) > _TOL):
            raise ValueError(f"input wavelength grids (band {b!r}) are not aligned; resample "
                             "them to a common grid first (lin_step)")
        start[b] = imin
    # overlap flags (previous / next band in the given order, desispec rule)
    oflag = {}
    for i, b in enumerate(bands):
        w = np.asarray(to_host(spectra.wave[b]), dtype=np.float64)
        f = np.zeros(w.size, bool)
        for j in (i - 1, i + 1):
            if 0 <= j < len(bands):
                o = np.asarray(to_host(spectra.wave[bands[j]]), dtype=np.float64)
                f |= np.min(np.abs(w[:, None] - o[None, :]), axis=1) <= _TOL
        oflag[b] = f
    nt = spectra.flux[bands[0]].shape[0]
    nw = wave.size
    has_mask = spectra.mask is not None
    has_res = spectra.resolution_data is not None
    with nvtx_range("coadd.cameras"):
        flux = xp.zeros((nt, nw))
        ivar = xp.zeros((nt, nw))
        mask = xp.zeros((nt, nw), dtype=np.int32)
        if has_res:
            mnd = max(spectra.resolution_data[b].shape[1] for b in bands)
            rdata = xp.zeros((nt, mnd, nw))
            rnorm = xp.zeros((nt, mnd, nw))
        norm_pix = np.zeros(nw, bool)
        for b in sbands:
            s0 = start[b]
            f = to_device(spectra.flux[b], xp, dtype=np.float64)
            iv = to_device(spectra.ivar[b], xp, dtype=np.float64)
            ov = oflag[b]
            no = np.nonzero(~ov)[0] + s0
            oo = np.nonzero(ov)[0] + s0
            nox, oox = xp.asarray(no), xp.asarray(oo)
            ovx = xp.asarray(np.nonzero(ov)[0])
            noxl = xp.asarray(np.nonzero(~ov)[0])
            flux[:, nox] = f[:, noxl]
            ivar[:, nox] = iv[:, noxl]
            flux[:, oox] += (iv * f)[:, ovx]
            ivar[:, oox] += iv[:, ovx]
            if has_mask:
                m = to_device(spectra.mask[b], xp).astype(np.int32)
                mask[:, nox] = m[:, noxl]
                mask[:, oox] |= m[:, ovx]
            if has_res:
                r = to_device(spectra.resolution_data[b], xp, dtype=np.float64)
                nd = r.shape[1]
                off = (mnd - nd) // 2
                racc, rn = resolution_coadd(r[:, None], iv[:, None], xp)
                rdata[:, off:off + nd, nox] = r[:, :, noxl]
                rnorm[:, off:off + nd, nox] = 1.0
                rdata[:, off:off + nd, oox] += racc[:, :, ovx]
                rnorm[:, off:off + nd, oox] += rn[:, :, ovx]
        for b in bands:
            norm_pix[start[b]:start[b] + spectra.wave[b].size] = oflag[b]
        npx = xp.asarray(np.nonzero(norm_pix)[0])
        flux[:, npx] = flux[:, npx] / (ivar[:, npx] + (ivar[:, npx] == 0))
        mask = xp.where(ivar > 0, 0, mask)
        if has_res:
            rn = rnorm[:, :, npx]
            rdata[:, :, npx] = rdata[:, :, npx] / (rn + (rn == 0))
    name = "".join(sbands)
    return Spectra(bands=[name], wave={name: wave}, flux={name: to_host(flux)},
                   ivar={name: to_host(ivar)},
                   mask={name: to_host(mask)} if has_mask else None,
                   resolution_data={name: to_host(rdata)} if has_res else None,
                   fibermap=None if spectra.fibermap is None else spectra.fibermap.copy(),
                   exp_fibermap=None if spectra.exp_fibermap is None
                   else spectra.exp_fibermap.copy(),
                   meta=copy.deepcopy(spectra.meta),
                   scores=None if spectra.scores is None else spectra.scores.copy())
