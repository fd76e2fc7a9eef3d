"""Divide-and-conquer decorrelation of banded inverse covariances, batched.

desispec ``decorrelate_divide_and_conquer`` semantics, for many spectra at once:

* core half-width ``chw = max(10, int(50/wavebin))`` and skin ``max(2, int(10/wavebin))`` bins;
* block centres ``c = chw, chw + (2chw+1), ...``; block ``[c−chw−skin, c+chw+skin]``
  clipped to the spectrum, core ``[c−chw, c+chw]``;
* per block: eigh, eigenvalues floored at ``1e-15/mean(diag Cinv)`` (per spectrum),
  ``Q = V√Λ Vᵀ``, ``s = Q·1``, ``R = Q/s`` (rows), core flux
  ``[(Rᵀ)⁻¹ Cinvf / s²]`` (computed as ``V Λ^{-1/2} Vᵀ Cinvf / s``), ivar ``s²``,
  resolution band ``R[j+d, j]``. Q itself is never formed: ``s = V(√Λ ⊙ Vᵀ1)`` and the
  ndiag needed diagonals of Q are row-wise dot products, so apart from eigh the cost
  per block is O(ndiag·m²) instead of O(m³).

All blocks of all spectra are stacked into one ``(nblock, m, m)`` array and sent
through a single batched ``xp.linalg.eigh`` (chunked by ``max_blocks`` to bound
memory). Blocks shorter than ``m`` (at the spectrum ends) are padded with a
decoupled diagonal, which leaves their eigen-decomposition unchanged. The
inverse covariance is only ever stored banded; the dense pieces are the blocks.
"""

from __future__ import annotations

import numpy as np

from ..threads import limit_blas
from ..backend import get_array_module, get_xp, to_device
from ..profiling import nvtx_range

__all__ = ["decorrelate", "block_layout"]


def block_layout(nn: int, wavebin: float):
    """Blocks of the divide-and-conquer decorrelation.

    Returns
    -------
    m : int
        Padded block size (``2chw + 1 + 2skin``, at most ``nn``).
    starts : (nblock,) int
        First global index ``b`` of each block.
    sizes : (nblock,) int
        Block sizes ``e − b``.
    core_lo, core_hi : (nblock,) int
        Local core range ``[bb, ee)`` of each block.
    """
    chw = max(10, int(50 / wavebin))
    skin = max(2, int(10 / wavebin))
    starts, sizes, lo, hi = [], [], [], []
    for c in range(chw, nn + (2 * chw + 1), 2 * chw + 1):
        b = max(0, c - chw - skin)
        e = min(nn, c + chw + skin + 1)
        b1 = max(0, c - chw)
        e1 = min(nn, c + chw + 1)
        if e <= b or e1 <= b1:
            continue
        starts.append(b)
        sizes.append(e - b)
        lo.append(max(0, b1 - b))
        hi.append(min(e - b, e1 - b))
    m = int(max(sizes)) if sizes else 0
    return m, np.array(starts), np.array(sizes), np.array(lo), np.array(hi)


@limit_blas
def decorrelate(cinv_band, cinvf, wavebin: float, ndiag: int = 11, *, max_blocks: int | None = None,
                backend=None):
    """Decorrelate banded inverse covariances (batched divide and conquer).

    Parameters
    ----------
    cinv_band : (nspec, 2*hb+1, nwave) array
        ``cinv_band[t, d, i] = Cinv_t[i, i + d − hb]`` (0 outside the matrix);
        Cinv symmetric.
    cinvf : (nspec, nwave) array
        ``Σ Rᵀ·ivar·flux``.
    wavebin : float
        Minimal bin width (Å); sets core and skin sizes.
    ndiag : int
        Number of diagonals of the output resolution.
    max_blocks : int, optional
        Blocks per batched eigh call (default 1024 on numpy, 8192 on cupy; a
        block of m = 149 is 178 kB of float64 and about six such arrays are live).
    backend : str or module, optional
        Default: the array module of ``cinv_band``.

    Returns
    -------
    flux, ivar : (nspec, nwave)
    rdata : (nspec, ndiag, nwave)
        Banded decorrelated resolution, ``rdata[t, d, j] = R_t[j + d − ndiag//2, j]``.

    Backends: numpy, cupy.
    """
    xp = get_array_module(cinv_band) if backend is None else get_xp(backend)
    cinv_band = to_device(cinv_band, xp, dtype=np.float64)
    cinvf = to_device(cinvf, xp, dtype=np.float64)
    if cinv_band.ndim == 2:
        cinv_band, cinvf = cinv_band[None], cinvf[None]
        squeeze = True
    else:
        squeeze = False
    nt, nband, nn = cinv_band.shape
    hb = nband // 2
    m, starts, sizes, lo, hi = block_layout(nn, wavebin)
    nblk = starts.size
    diag = cinv_band[:, hb, :]
    meandiag = xp.mean(diag, axis=-1)                                          # (nt,)
    empty = ~(meandiag > 0)                      # no data at all: output zeros, not NaN
    meandiag = xp.where(empty, 1.0, meandiag)
    lmin = 1e-15 / meandiag

    # local -> global index map per block, padding flagged
    loc = np.arange(m)
    gidx = starts[:, None] + loc[None, :]                                      # (nblk, m)
    real = loc[None, :] < sizes[:, None]
    gidx_c = np.where(real, gidx, 0)
    # dense block entries from the band: C[p, q] = band[hb + q - p, g(p)]
    dpq = loc[None, :] - loc[:, None]                                          # q - p
    inband = np.abs(dpq) <= hb
    realpq = real[:, :, None] & real[:, None, :] & inband[None]               # (nblk, m, m)
    drow = np.clip(hb + dpq, 0, nband - 1)                                     # (m, m)
    drow_b = np.broadcast_to(drow, (nblk, m, m))
    grow_b = np.broadcast_to(gidx_c[:, :, None], (nblk, m, m))
    padval = meandiag

    flux = xp.zeros((nt, nn))
    ivar = xp.zeros((nt, nn))
    rdata = xp.zeros((nt, ndiag, nn))
    core = (loc[None, :] >= lo[:, None]) & (loc[None, :] < hi[:, None]) & real   # (nblk, m)
    bi, li = np.nonzero(core)
    gcore = gidx[bi, li]
    dd = np.arange(ndiag) - ndiag // 2
    rr = li[:, None] + dd[None, :]                                             # local row p+dd
    okr = (rr >= 0) & (rr < sizes[bi][:, None]) & (gcore[:, None] + dd[None, :] >= 0) & \
        (gcore[:, None] + dd[None, :] < nn)

    drow_x = xp.asarray(drow_b)
    grow_x = xp.asarray(grow_b)
    realpq_x = xp.asarray(realpq)
    realdiag_x = xp.asarray(~real)
    gidx_x = xp.asarray(gidx_c)
    real_x = xp.asarray(real)
    eye = xp.eye(m)
    bi_x, li_x, gcore_x = xp.asarray(bi), xp.asarray(li), xp.asarray(gcore)
    okr_x = xp.asarray(okr)
    if max_blocks is None:
        max_blocks = 1024 if xp is np else 8192
    tchunk = max(1, int(max_blocks // max(nblk, 1)))
    with nvtx_range("coadd.decorrelate"):
        for t0 in range(0, nt, tchunk):
            ts = slice(t0, min(nt, t0 + tchunk))
            ntc = ts.stop - ts.start
            band = cinv_band[ts]                                               # (ntc, nband, nn)
            C = band[:, drow_x, grow_x]                                        # (ntc, nblk, m, m)
            C *= realpq_x
            C += eye * (realdiag_x[None, :, :, None] * padval[ts, None, None, None])
            nb = ntc * nblk
            L, V = xp.linalg.eigh(C.reshape(nb, m, m))                         # (nb, m), (nb, m, m)
            del C
            L = xp.maximum(L, xp.repeat(lmin[ts], nblk)[:, None])
            sq = xp.sqrt(L)
            Vt = xp.swapaxes(V, -1, -2)
            realb = xp.broadcast_to(real_x[None], (ntc, nblk, m)).reshape(nb, m)
            realf = realb.astype(V.dtype)
            # s = Q·1 over the real columns, Q = V √Λ Vᵀ, without forming Q: O(m²) per block
            vt1 = xp.einsum("bkp,bk->bp", V, realf)                            # Vᵀ·1_real
            s = xp.einsum("bpk,bk->bp", V, sq * vt1) * realf                   # (nb, m)
            sgood = xp.where(realb, s, 1.0)
            cf = cinvf[ts][:, gidx_x].reshape(nb, m) * realf
            vtc = xp.einsum("bkp,bk->bp", V, cf) / sq
            y = xp.einsum("bpk,bk->bp", V, vtc)
            shp = (ntc, nblk, m)
            fblk = (y / sgood).reshape(shp)
            flux[ts, gcore_x] = fblk[:, bi_x, li_x]
            ivar[ts, gcore_x] = (s ** 2).reshape(shp)[:, bi_x, li_x]
            # band of R = Q/s (rows): R[p+d, p] = Σ_k V[p+d,k] √λ_k V[p,k] / s[p+d]
            Vs = V * sq[:, None, :]
            for di, d in enumerate(dd):
                d = int(d)
                rd = xp.zeros((nb, m))                                         # R[p+d, p]
                if d >= 0:
                    rd[:, :m - d] = xp.einsum("bpk,bpk->bp", Vs[:, d:, :],
                                              V[:, :m - d, :]) / sgood[:, d:]
                else:
                    rd[:, -d:] = xp.einsum("bpk,bpk->bp", Vs[:, :m + d, :],
                                           V[:, -d:, :]) / sgood[:, :m + d]
                rdata[ts.start:ts.stop, di, gcore_x] = \
                    rd.reshape(shp)[:, bi_x, li_x] * okr_x[None, :, di]
            del Vt
    # unconditionally (testing xp.any(empty) first would synchronise on cupy)
    keep = ~empty
    flux = flux * keep[:, None]
    ivar = ivar * keep[:, None]
    rdata = rdata * keep[:, None, None]
    if squeeze:
        return flux[0], ivar[0], rdata[0]
    return flux, ivar, rdata
