"""Banded inverse covariance of resampled spectra: ``Cinv = Σ RRᵀ diag(ivar) RR``.

For every input row (one fiber, one exposure, one camera) on its grid λ_in and an output
grid λ_out:

* ``S`` (m_in × n_out) linearly interpolates from λ_out to the input pixels inside
  ``[λ_out[0], λ_out[-1]]`` (desispec ``get_resampling_matrix``);
* ``RR = R·S``, with R the row's resolution restricted to those pixels;
* ``Cinv += RRᵀ diag(ivar) RR`` and ``Cinvf += RRᵀ (ivar·flux)``.

Each input pixel's row of RR touches a short window of output columns (length
L ≈ (2h+1)·Δλ_in/Δλ_out + 2), so RR is held as ``(m, L)`` windows and Cinv is accumulated
directly as its upper band ``Cinv[j, j+δ]``, δ < L: no dense n_out × n_out matrix is ever
built. The array path (numpy, cupy) scatter-adds whole row chunks; on the CPU the Numba
twin :mod:`gpuspec.coadd.cinv_cpu` loops over rows and pixels instead.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_host
from . import cinv_cpu

__all__ = ["accumulate_cinv", "accumulate_upper", "upper_to_band", "band_to_upper",
           "resampling_windows", "resampling_terms", "accumulate_flops"]


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

    Raises
    ------
    ValueError
        ``wave_out`` not strictly increasing.

    Backends: host (numpy).
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


def resampling_terms(wave_in, wave_out, ndiag: int):
    """Coefficients of the windows of ``RR = R·S`` for one input grid (host tables).

    ``RR[i, j0[i] + c] = Σ_d R[i, kc[d, i]]·(ah[d, i]·[c = ch[d, i]] + al[d, i]·[c = cl[d, i]])``
    with ``R[i, k] = rdata[d, k]`` for ``k = i + h − d`` (h = ndiag//2).

    Returns
    -------
    dict or None
        ``sel`` (slice of input pixels), ``m``, ``L`` (window length), ``j0`` (m,),
        ``kc, ch, ah, cl, al`` (ndiag, m), and ``a0, a1`` (m,), the first and last window
        column with a non-zero coefficient; None when no input pixel is inside the output
        range.

    Backends: host (numpy).
    """
    sel, g, alpha = resampling_windows(wave_in, wave_out)
    m = g.size
    if m == 0:
        return None
    h = ndiag // 2
    i = np.arange(m)
    j0 = np.clip(g[np.clip(i - h, 0, m - 1)] - 1, 0, None)
    j1 = g[np.clip(i + h, 0, m - 1)]
    L = int(np.max(j1 - j0) + 1)
    d = np.arange(ndiag)[:, None]
    k = i[None, :] + h - d
    okk = (k >= 0) & (k < m)
    kc = np.clip(k, 0, m - 1)
    gk = g[kc]
    t = {"sel": sel, "m": m, "L": L, "j0": j0, "kc": kc,
         "ch": np.clip(gk - j0[None, :], 0, L - 1),
         "ah": np.where(okk, alpha[kc], 0.0),
         "cl": np.clip(gk - 1 - j0[None, :], 0, L - 1),
         "al": np.where(okk & (gk > 0), 1.0 - alpha[kc], 0.0)}
    # window columns that can be non-zero (the outer product only needs those)
    used = np.concatenate([np.where(t["ah"] != 0, t["ch"], -1),
                           np.where(t["al"] != 0, t["cl"], -1)])
    t["a1"] = np.max(used, axis=0)
    t["a0"] = np.min(np.where(used >= 0, used, L), axis=0)
    return t


def accumulate_upper(bands_data, wave_out, groups, ngroup, xp, row_chunk: int = 64):
    """Row-major upper band ``U[t, i, k] = Cinv_t[i, i+k]`` and ``Cinvf`` per output group.

    Parameters
    ----------
    bands_data : list of (wave_in, flux, ivar, rdata)
        Per band: the host grid (m_all,), and (nrow, m_all), (nrow, m_all),
        (nrow, ndiag, m_all) arrays on ``xp``; ``ivar`` already includes any masking.
    wave_out : (nout,) array
    groups : (nrow,) int numpy array, or a list of them (one per band)
        Output spectrum of every row (-1: skip the row in that band).
    ngroup : int
    row_chunk : int
        Rows per scatter-add (array path).

    Returns
    -------
    U : (ngroup, nout, L)
        ``U[t, i, k] = Cinv_t[i, i + k]`` (0 beyond the matrix), L the largest window.
    cinvf : (ngroup, nout)

    Backends: numpy (Numba twin when available), cupy (no host synchronisation).
    """
    wave_out = np.asarray(wave_out, dtype=np.float64)
    nout = wave_out.size
    if not isinstance(groups, (list, tuple)):
        groups = [groups] * len(bands_data)
    terms = [resampling_terms(to_host(bd[0]), wave_out, bd[3].shape[1]) for bd in bands_data]
    L = max([t["L"] for t in terms if t is not None], default=1)
    U = xp.zeros((ngroup, nout, L))
    cinvf = xp.zeros((ngroup, nout))
    use_numba = xp is np and cinv_cpu.available()
    for (_, flux, ivar, rdata), grp, tm in zip(bands_data, groups, terms):
        if tm is None:
            continue
        grp = np.asarray(grp, dtype=np.int64)
        if use_numba:
            cinv_cpu.accumulate_band(flux, ivar, rdata, grp, tm, U, cinvf)
        else:
            _accumulate_band_xp(flux, ivar, rdata, grp, tm, U, cinvf, row_chunk, xp)
    return U, cinvf


def accumulate_cinv(bands_data, wave_out, group, ngroup, xp, row_chunk: int = 64):
    """Banded ``Cinv = Σ RRᵀ diag(ivar) RR`` and ``Cinvf`` per output group.

    Same parameters as :func:`accumulate_upper`.

    Returns
    -------
    cinv_band : (ngroup, 2*hb+1, nout)
        ``cinv_band[t, d, i] = Cinv_t[i, i + d − hb]`` (the layout of
        :func:`gpuspec.coadd.decorrelate.decorrelate` and of desispec's ``decorrelate.fits``).
    cinvf : (ngroup, nout)

    Backends: numpy (Numba twin when available), cupy (no host synchronisation).
    """
    U, cinvf = accumulate_upper(bands_data, wave_out, group, ngroup, xp, row_chunk)
    return upper_to_band(U, xp), cinvf


def upper_to_band(U, xp):
    """``U[t, i, k] = Cinv[i, i+k]`` → the symmetric band ``band[t, hb+d, i] = Cinv[i, i+d]``.

    Backends: numpy, cupy.
    """
    ngroup, nout, L = U.shape
    hb = L - 1
    band = xp.zeros((ngroup, 2 * hb + 1, nout))
    band[:, hb:] = xp.swapaxes(U, 1, 2)                                        # Cinv[i, i+k]
    for k in range(1, L):
        band[:, hb - k, k:] = U[:, :-k, k]                                      # Cinv[i, i-k]
    return band


def band_to_upper(band, xp):
    """Inverse of :func:`upper_to_band` (the upper half of the symmetric band).

    Backends: numpy, cupy.
    """
    hb = band.shape[1] // 2
    return xp.ascontiguousarray(xp.swapaxes(band[:, hb:, :], 1, 2))


def _accumulate_band_xp(flux, ivar, rdata, group, terms, U, cinvf, row_chunk: int, xp):
    """Array path of one band: RR windows of a chunk of rows, then scatter-adds into
    ``U`` (``(ngroup, nout, Lmax)``) and ``cinvf``."""
    sel, m, L = terms["sel"], terms["m"], terms["L"]
    ngroup, nout, Lmax = U.shape
    ndiag = rdata.shape[1]
    # loop-invariant index/coefficient arrays: uploaded once per band, not per chunk
    tab = {k: xp.asarray(terms[k]) for k in ("kc", "ch", "ah", "cl", "al", "j0")}
    ix = xp.arange(m)
    rows = np.nonzero(group >= 0)[0]
    rows_x = xp.asarray(rows)
    group_x = xp.asarray(group)
    up_flat = U.reshape(-1)
    cf_flat = cinvf.reshape(-1)
    jpos = tab["j0"][None, :, None] + xp.arange(L)[None, None, :]              # (1, m, L)
    for r0 in range(0, rows.size, row_chunk):
        rrx = rows_x[r0:r0 + row_chunk]
        rd = rdata[rrx][:, :, sel]                                              # (n, ndiag, m)
        iv = ivar[rrx][:, sel]
        fl = flux[rrx][:, sel]
        RRw = xp.zeros((rrx.shape[0], m, L))
        for d in range(ndiag):
            val = rd[:, d, :][:, tab["kc"][d]]                                  # R[i, k_i]
            RRw[:, ix, tab["ch"][d]] += val * tab["ah"][d]
            RRw[:, ix, tab["cl"][d]] += val * tab["al"][d]
        g = group_x[rrx][:, None, None]
        ok = xp.broadcast_to(jpos < nout, RRw.shape)
        jc = xp.minimum(jpos, nout - 1)
        _scatter_add(xp, cf_flat, (g * nout + jc).ravel(),
                     xp.where(ok, RRw * (iv * fl)[..., None], 0.0).ravel())
        for dl in range(L):
            P = iv[..., None] * RRw[:, :, : L - dl] * RRw[:, :, dl:]
            jp = jpos[:, :, : L - dl]
            okd = xp.broadcast_to((jp + dl) < nout, P.shape).ravel()
            idx = xp.broadcast_to((g * nout + xp.minimum(jp, nout - 1)) * Lmax + dl,
                                  P.shape).ravel()
            _scatter_add(xp, up_flat, idx, xp.where(okd, P.ravel(), 0.0))


def _scatter_add(xp, out, idx, w):
    """``out[idx] += w`` summing repeated indices, without a host synchronisation.

    numpy: ``bincount`` (the fastest there); cupy: ``add.at`` (atomic adds; ``cupy.bincount``
    would synchronise twice per call). ``out`` must be a contiguous 1-D view.
    """
    if xp is np:
        out += np.bincount(idx, weights=w, minlength=out.size)[: out.size]
    else:
        xp.add.at(out, idx, w)


def accumulate_flops(nrow: int, m: int, ndiag: int, L: int) -> dict:
    """Floating-point operations and bytes of :func:`accumulate_cinv` for ``nrow`` rows of
    ``m`` input pixels: ``2·ndiag`` multiply-adds per pixel for the RR window, ``L(L+1)/2 + L``
    for its outer product and Cinvf. Bytes: each row's flux, ivar and resolution in, the
    ``L`` upper diagonals read and written once per row (scatter-adds).

    Backends: host (pure arithmetic).
    """
    fma = nrow * m * (2 * ndiag + L * (L + 1) / 2 + L)
    bytes_ = nrow * m * 8.0 * (ndiag + 2) + nrow * m * 8.0 * 2 * (L + 1)
    return {"flops": 2.0 * fma, "bytes": bytes_}
