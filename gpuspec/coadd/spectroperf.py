"""Spectroperfectionism resampling and coadd (Kirkby, DESI-doc-1056; desispec
``spectroperf_resample_spectra``), batched on ``xp``.

For every input row (one fiber, one exposure, one camera) on its grid λ_in and
an output grid λ_out:

* ``S`` (m_in × n_out) linearly interpolates from λ_out to the input pixels
  inside ``[λ_out[0], λ_out[-1]]`` (desispec ``get_resampling_matrix``);
* ``RR = R·S``, with R the row's resolution restricted to those pixels;
* ``Cinv += RRᵀ diag(ivar) RR`` and ``Cinvf += RRᵀ (ivar·flux)``.

RR is held as one short window of output columns per input pixel, so Cinv is
accumulated directly in banded form (a scatter-add through ``bincount``): no
dense n_out × n_out matrix is ever built. The banded Cinv then goes to
:func:`gpuspec.coadd.decorrelate.decorrelate`.

:func:`spectroperf_resample` sums over the bands of each row (desispec
semantics: one output spectrum per input row); :func:`coadd_spectroperf` sums
over all rows and bands of each target (one decorrelated spectrum per target).
"""

from __future__ import annotations

import copy

import numpy as np

from ..threads import limit_blas
from ..backend import get_xp, to_device, to_host
from ..profiling import nvtx_range
from ..spectra import Spectra
from .decorrelate import decorrelate
from .fibermap import coadd_fibermap
from .groups import ordered_unique, use_for_coadd

__all__ = ["spectroperf_resample", "coadd_spectroperf", "accumulate_cinv", "resampling_windows",
           "min_wavebin", "combined_wave"]


def min_wavebin(wave_out) -> float:
    """Smallest positive ``np.gradient`` step of the output grid (desispec ``wavebin``)."""
    dw = np.gradient(np.asarray(wave_out, dtype=np.float64))
    return float(np.min(dw[dw > 0]))


def combined_wave(spectra, tol: float = 1e-4):
    """Union of the band grids (desispec ``coadd_cameras`` rule; bands sorted by mean λ)."""
    bands = sorted(spectra.bands, key=lambda b: float(np.mean(to_host(spectra.wave[b]))))
    wave = None
    for b in bands:
        w = np.asarray(to_host(spectra.wave[b]), dtype=np.float64)
        wave = w.copy() if wave is None else np.append(wave, w[w > wave[-1] + tol])
    return wave


def resampling_windows(wave_in, wave_out):
    """Linear resampling of the input pixels inside the output range.

    Returns
    -------
    sel : slice
        Input pixels used (contiguous).
    g : (m,) int
        Upper bracketing output index of each input pixel.
    alpha : (m,) float
        Weight of output pixel ``g`` (``1 − alpha`` goes to ``g − 1``).
    """
    wave_in = np.asarray(wave_in, dtype=np.float64)
    wave_out = np.asarray(wave_out, dtype=np.float64)
    if np.any(np.diff(wave_out) <= 0):
        raise ValueError("output wavelength grid is not strictly increasing")
    ok = np.nonzero((wave_in >= wave_out[0]) & (wave_in <= wave_out[-1]))[0]
    if ok.size == 0:
        return slice(0, 0), np.zeros(0, int), np.zeros(0)
    sel = slice(int(ok[0]), int(ok[-1]) + 1)
    tw = wave_in[sel]
    g = np.searchsorted(wave_out, tw)
    lo = np.clip(g - 1, 0, None)
    with np.errstate(all="ignore"):
        alpha = np.where(g > 0, (tw - wave_out[lo]) / (wave_out[g] - wave_out[lo]), 1.0)
    return sel, g, alpha


def accumulate_cinv(bands_data, wave_out, group, ngroup, xp, row_chunk: int = 64):
    """Banded ``Cinv = Σ RRᵀ diag(ivar) RR`` and ``Cinvf`` per output group.

    Parameters
    ----------
    bands_data : list of (wave_in, flux, ivar, rdata)
        Per band: (m_all,), (nrow, m_all), (nrow, m_all), (nrow, ndiag, m_all) arrays on ``xp``.
        ``ivar`` already includes any masking.
    wave_out : (nout,) array
    group : (nrow,) int numpy array
        Output spectrum of every row (-1: skip the row).
    ngroup : int

    Returns
    -------
    cinv_band : (ngroup, 2*hb+1, nout)
        ``cinv_band[t, d, i] = Cinv_t[i, i + d − hb]``.
    cinvf : (ngroup, nout)

    Backends: numpy, cupy.
    """
    wave_out = np.asarray(wave_out, dtype=np.float64)
    nout = wave_out.size
    upper = {}
    cinvf = xp.zeros(ngroup * nout)
    group = np.asarray(group)
    for wave_in, flux, ivar, rdata in bands_data:
        sel, g, alpha = resampling_windows(to_host(wave_in), wave_out)
        m = g.size
        if m == 0:
            continue
        ndiag = rdata.shape[1]
        h = ndiag // 2
        i = np.arange(m)
        j0 = np.clip(g[np.clip(i - h, 0, m - 1)] - 1, 0, None)
        j1 = g[np.clip(i + h, 0, m - 1)]
        L = int(np.max(j1 - j0) + 1)
        # per (d, i): column positions and coefficients of the two interpolation terms
        terms = []
        for d in range(ndiag):
            k = i + h - d
            okk = (k >= 0) & (k < m)
            kc = np.clip(k, 0, m - 1)
            c_hi = g[kc] - j0
            c_lo = g[kc] - 1 - j0
            a_hi = np.where(okk, alpha[kc], 0.0)
            a_lo = np.where(okk & (g[kc] > 0), 1.0 - alpha[kc], 0.0)
            terms.append((d, kc, np.clip(c_hi, 0, L - 1), a_hi, np.clip(c_lo, 0, L - 1), a_lo))
        rows = np.nonzero(group >= 0)[0]
        # loop-invariant index/coefficient arrays: uploaded once per band, not per chunk
        terms_x = [(d, xp.asarray(kc), xp.asarray(ch), xp.asarray(ah), xp.asarray(cl),
                    xp.asarray(al)) for d, kc, ch, ah, cl, al in terms]
        ix = xp.asarray(i)
        sel_x = sel                       # a slice
        j0_x = xp.asarray(j0)
        group_x = xp.asarray(np.asarray(group, dtype=np.int64))
        rows_x = xp.asarray(rows)
        for r0 in range(0, rows.size, row_chunk):
            rrx = rows_x[r0:r0 + row_chunk]
            rd = rdata[rrx][:, :, sel_x]                                        # (n, ndiag, m)
            iv = ivar[rrx][:, sel_x]
            fl = flux[rrx][:, sel_x]
            n = rrx.shape[0]
            RRw = xp.zeros((n, m, L))
            for d, kc, ch, ah, cl, al in terms_x:
                val = rd[:, d, :][:, kc]                                        # R[i, k_i]
                RRw[:, ix, ch] += val * ah
                RRw[:, ix, cl] += val * al
            gbase = (group_x[rrx] * nout)[:, None, None]
            jpos = j0_x[None, :, None] + xp.arange(L)[None, None, :]
            # Cinvf
            w = RRw * (iv * fl)[..., None]
            idx = (gbase + jpos).ravel()
            okj = xp.broadcast_to(jpos < nout, RRw.shape).ravel()
            _scatter_add(xp, cinvf, xp.where(okj, idx, 0), xp.where(okj, w.ravel(), 0.0))
            for dl in range(L):
                P = iv[..., None] * RRw[:, :, : L - dl] * RRw[:, :, dl:]
                jp = jpos[:, :, : L - dl]
                ok = xp.broadcast_to((jp + dl) < nout, P.shape).ravel()
                idx = xp.broadcast_to(gbase + jp, P.shape).ravel()
                if dl not in upper:
                    upper[dl] = xp.zeros(ngroup * nout)
                _scatter_add(xp, upper[dl], xp.where(ok, idx, 0), xp.where(ok, P.ravel(), 0.0))
    hb = max(upper) if upper else 0
    band = xp.zeros((ngroup, 2 * hb + 1, nout))
    for dl, acc in upper.items():
        u = acc.reshape(ngroup, nout)                                           # Cinv[i, i+dl]
        band[:, hb + dl, :] = u
        if dl > 0:
            band[:, hb - dl, dl:] = u[:, :-dl]                                  # Cinv[i, i-dl]
    return band, cinvf.reshape(ngroup, nout)


def _scatter_add(xp, out, idx, w):
    """``out[idx] += w`` summing repeated indices, without a host synchronisation.

    numpy: ``bincount`` (the fastest there); cupy: ``add.at`` (atomic adds; ``cupy.bincount``
    would synchronise twice per call). Backends: numpy, cupy.
    """
    if xp is np:
        out += np.bincount(idx, weights=w, minlength=out.size)[: out.size]
    else:
        xp.add.at(out, idx, w)


def _bands_data(spectra, xp, use_mask: bool):
    out = []
    for b in spectra.bands:
        iv = to_device(spectra.ivar[b], xp, dtype=np.float64)
        if use_mask and spectra.mask is not None:
            iv = iv * (to_device(spectra.mask[b], xp) == 0)
        out.append((to_device(spectra.wave[b], xp, dtype=np.float64),
                    to_device(spectra.flux[b], xp, dtype=np.float64), iv,
                    to_device(spectra.resolution_data[b], xp, dtype=np.float64)))
    return out


@limit_blas
def spectroperf_resample(spectra: Spectra, wave_out, backend="auto", **kw) -> Spectra:
    """Resample every row onto ``wave_out`` with a decorrelated resolution (desispec semantics).

    Each row (one fiber of one exposure) has its bands combined; the input mask
    is ignored (only ivar is used), as in desispec.

    Returns
    -------
    Spectra
        One band named ``"".join(bands)``; flux/ivar (nrow, nout), resolution
        (nrow, max ndiag, nout) on the host; mask zeros when the input had one;
        fibermap/meta copied.

    Backends: numpy, cupy.
    """
    xp = get_xp(backend)
    wave_out = np.asarray(wave_out, dtype=np.float64)
    nrow = spectra.flux[spectra.bands[0]].shape[0]
    ndiag = max(spectra.resolution_data[b].shape[1] for b in spectra.bands)
    with nvtx_range("coadd.spectroperf.accumulate"):
        cb, cf = accumulate_cinv(_bands_data(spectra, xp, False), wave_out, np.arange(nrow),
                                 nrow, xp)
    flux, ivar, rdata = decorrelate(cb, cf, min_wavebin(wave_out), ndiag=ndiag, backend=xp, **kw)
    name = "".join(spectra.bands)
    mask = {name: np.zeros((nrow, wave_out.size), np.int32)} if spectra.mask is not None else None
    return Spectra(bands=[name], wave={name: wave_out}, flux={name: to_host(flux)},
                   ivar={name: to_host(ivar)}, mask=mask,
                   resolution_data={name: to_host(rdata)},
                   fibermap=None if spectra.fibermap is None else spectra.fibermap.copy(),
                   meta=copy.deepcopy(spectra.meta), scores=spectra.scores)


@limit_blas
def coadd_spectroperf(spectra: Spectra, wave_out=None, *, onetile: bool = False,
                      backend="auto", **kw) -> Spectra:
    """Spectroperfectionism coadd: one decorrelated spectrum per target.

    Cinv and Cinvf are summed over all exposures and bands of each target (rows
    with FIBERSTATUS bad for the band are left out; pixels with a non-zero mask
    get zero weight), then decorrelated on ``wave_out``.

    Parameters
    ----------
    spectra : Spectra
        Uncoadded spectra with FIBERMAP.
    wave_out : array, optional
        Output grid; default the union of the band grids (``combined_wave``).
    onetile : bool
        Passed to the fibermap coadd.

    Returns
    -------
    Spectra
        One band (``"".join(bands)`` sorted by wavelength), host arrays, coadded
        FIBERMAP/EXP_FIBERMAP.

    Backends: numpy, cupy.
    """
    xp = get_xp(backend)
    fm = spectra.fibermap
    targets, _ = ordered_unique(fm["TARGETID"])
    pos = {t: i for i, t in enumerate(targets.tolist())}
    grp = np.array([pos[t] for t in fm["TARGETID"].tolist()])
    wave_out = combined_wave(spectra) if wave_out is None else np.asarray(wave_out, np.float64)
    fskey = "FIBERSTATUS" if "FIBERSTATUS" in fm.dtype.names else "COADD_FIBERSTATUS"
    ndiag = max(spectra.resolution_data[b].shape[1] for b in spectra.bands)
    cb = cf = None
    with nvtx_range("coadd.spectroperf.accumulate"):
        for bd, b in zip(_bands_data(spectra, xp, True), spectra.bands):
            g = np.where(use_for_coadd(fm[fskey], b), grp, -1)
            c1, f1 = accumulate_cinv([bd], wave_out, g, targets.size, xp)
            if cb is None:
                cb, cf = c1, f1
            else:
                hb = max(cb.shape[1], c1.shape[1]) // 2
                cb = _pad_band(cb, hb, xp) + _pad_band(c1, hb, xp)
                cf = cf + f1
    flux, ivar, rdata = decorrelate(cb, cf, min_wavebin(wave_out), ndiag=ndiag, backend=xp, **kw)
    bands = sorted(spectra.bands, key=lambda b: float(np.mean(to_host(spectra.wave[b]))))
    name = "".join(bands)
    tfmap, efmap = coadd_fibermap(fm, onetile=onetile)
    ivar_h = to_host(ivar)
    mask = {name: np.where(ivar_h > 0, 0, 1 << 1).astype(np.int32)} \
        if spectra.mask is not None else None
    return Spectra(bands=[name], wave={name: wave_out}, flux={name: to_host(flux)},
                   ivar={name: ivar_h}, mask=mask, resolution_data={name: to_host(rdata)},
                   fibermap=tfmap, exp_fibermap=efmap, meta=copy.deepcopy(spectra.meta))


def _pad_band(band, hb, xp):
    h0 = band.shape[1] // 2
    if h0 == hb:
        return band
    out = xp.zeros((band.shape[0], 2 * hb + 1, band.shape[2]))
    out[:, hb - h0: hb + h0 + 1] = band
    return out
