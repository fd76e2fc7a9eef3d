"""Divide-and-conquer decorrelation of banded inverse covariances, batched.

desispec ``decorrelate_divide_and_conquer`` semantics, for many spectra at once:

* core half-width ``chw = max(10, int(50/wavebin))`` and skin ``max(2, int(10/wavebin))`` bins;
* block centres ``c = chw, chw + (2chw+1), ...``; block ``[c−chw−skin, c+chw+skin]``
  clipped to the spectrum, core ``[c−chw, c+chw]``;
* per block ``Q = C^{1/2}`` (eigenvalues floored at ``1e-15/mean(diag Cinv)`` per spectrum),
  ``s = Q·1``, ``R = Q/s`` (rows), core flux ``[(Rᵀ)⁻¹ Cinvf / s²] = C^{-1/2}·Cinvf / s``,
  ivar ``s²``, resolution band ``R[j+d, j]``.

Every block of every spectrum is cut out of the band at once and all blocks go through one
batched computation of the three pieces of ``Q`` the outputs need (``s``, ``C^{-1/2}·Cinvf``
and ``Q``'s diagonals next to the main one). Two methods compute them:

``"zolotarev"`` (default)
    a rational approximation of ``C^{-1/2}`` with banded factorisations only
    (:mod:`gpuspec.coadd.sqrtm_band`; Numba twin on the CPU): ``O(n·b²)`` per pole instead
    of ``O(n³)``; relative difference to the exact square root ~1e-11. Blocks outside its
    interval (numerically singular ones) are recomputed with ``"eigh"``.
``"eigh"``
    desispec's method: batched dense ``xp.linalg.eigh`` with the eigenvalue floor. It is
    the reference; the default method is tested against it.

Zero rows (output pixels no input pixel constrains) are decoupled: they get ivar
``1e-15/mean(diag)`` (the floored eigenvalue), flux 0 and a unit resolution diagonal, as with
the eigendecomposition.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..threads import blas_threads, default_blas_threads
from ..backend import get_array_module, get_xp, to_device, to_host
from ..profiling import nvtx_range
from . import sqrtm_band, sqrtm_band_cpu
from .cinv import band_to_upper

__all__ = ["decorrelate", "decorrelate_upper", "block_layout", "METHODS", "EIG_FLOOR",
           "decorrelate_flops"]

#: eigenvalue floor of desispec's decorrelation, relative to 1/mean(diag Cinv) of the spectrum
EIG_FLOOR = 1e-15
METHODS = ("auto", "zolotarev", "eigh")
#: blocks per batch: (numpy eigh, numpy array path, numba twin, cupy)
_MAX_BLOCKS = {"eigh": 1024, "array": 256, "numba": 2048, "cupy": 4096}


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

    Backends: host (numpy).
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


class _Plan:
    """Host index tables of the block layout of one spectrum length (shared by all spectra)."""

    def __init__(self, nn: int, wavebin: float, ndiag: int, hb: int):
        self.nn, self.ndiag, self.hb = nn, ndiag, hb
        self.m, self.starts, self.sizes, lo, hi = block_layout(nn, wavebin)
        self.nblk = self.starts.size
        loc = np.arange(self.m)
        self.real = loc[None, :] < self.sizes[:, None]                          # (nblk, m)
        self.gidx = np.where(self.real, self.starts[:, None] + loc[None, :], 0)
        core = (loc[None, :] >= lo[:, None]) & (loc[None, :] < hi[:, None]) & self.real
        self.bi, self.li = np.nonzero(core)                                    # core entries
        self.gcore = self.gidx[self.bi, self.li]
        dd = np.arange(ndiag) - ndiag // 2
        rr = self.li[:, None] + dd[None, :]                                     # local row p+d
        g = self.gcore[:, None] + dd[None, :]
        self.okr = (rr >= 0) & (rr < self.sizes[self.bi][:, None]) & (g >= 0) & (g < nn)
        # lower band of a block from the upper band U[t, i, k] = Cinv[i, i+k]:
        # W0[i, k] = Cinv[g(i)+k, g(i)] = U[g(i), k] inside the block
        k = np.arange(hb + 1)
        inside = (loc[None, :, None] + k[None, None, :]) < self.sizes[:, None, None]
        self.wmask = inside & self.real[:, :, None]


def _gather(U, cinvf, plan: _Plan, dev: dict, xp):
    """Lower bands ``W0`` (``(nt·nblk, m, hb+1)``) and right-hand sides of all blocks."""
    nt = U.shape[0]
    W0 = U[:, dev["gidx"], :] * dev["wmask"]                                  # (nt, nblk, m, hb+1)
    rhs = cinvf[:, dev["gidx"]] * dev["realf"]
    nb = nt * plan.nblk
    return W0.reshape(nb, plan.m, plan.hb + 1), rhs.reshape(nb, plan.m)


def _device_tables(plan: _Plan, xp) -> dict:
    return {"wmask": xp.asarray(plan.wmask.astype(np.float64)),
            "gidx": xp.asarray(plan.gidx), "realf": xp.asarray(plan.real.astype(np.float64)),
            "real": xp.asarray(plan.real), "bi": xp.asarray(plan.bi), "li": xp.asarray(plan.li),
            "gcore": xp.asarray(plan.gcore), "okr": xp.asarray(plan.okr.astype(np.float64))}


def _pieces_eigh(W0, rhs, real, lmin, padval, h: int, xp):
    """desispec's method: ``Q`` from a dense ``eigh`` of every block (reference path).

    ``real`` (``(nb, m)`` bool) marks the rows inside the spectrum; padding rows get the
    decoupled diagonal ``padval`` (``(nb,)``), which leaves the real eigenpairs unchanged.
    Returns ``qb`` (``Q[i, i+d]``, d = 0..h), ``s = Q·1_real`` and ``y = C^{-1/2}·rhs``.
    """
    nb, m, b1 = W0.shape
    loc = np.arange(m)
    dpq = loc[None, :] - loc[:, None]
    rowi = xp.asarray(np.minimum(loc[:, None], loc[None, :]))
    inb = np.abs(dpq) < b1
    offs = xp.asarray(np.where(inb, np.abs(dpq), 0))
    C = W0[:, rowi, offs] * xp.asarray(inb.astype(np.float64))                # (nb, m, m)
    C += xp.eye(m) * ((~real) * padval[:, None])[:, :, None]
    L, V = xp.linalg.eigh(C)
    del C
    L = xp.maximum(L, lmin[:, None])
    sq = xp.sqrt(L)
    realf = real.astype(V.dtype)
    s = xp.einsum("bpk,bk->bp", V, sq * xp.einsum("bkp,bk->bp", V, realf)) * realf
    y = xp.einsum("bpk,bk->bp", V, xp.einsum("bkp,bk->bp", V, rhs * realf) / sq)
    Vs = V * sq[:, None, :]
    qb = xp.zeros((nb, m, h + 1))
    for d in range(h + 1):
        qb[:, : m - d, d] = xp.einsum("bpk,bpk->bp", Vs[:, : m - d], V[:, d:])
    return qb, s, y


def _pieces_zolotarev(W0, rhs, real, lmin, h: int, xp, use_numba: bool):
    """Same pieces by the rational approximation; ``ok`` flags the blocks it covers."""
    d = W0[:, :, 0]
    zero = d == 0                                          # zero rows and padding: decoupled
    fill = xp.max(d, axis=1)
    fill = xp.where(fill > 0, fill, 1.0)
    W = W0.copy()
    W[:, :, 0] = xp.where(zero, fill[:, None], d)
    if use_numba:
        qb, s, y, ok = sqrtm_band_cpu.band_sqrt(W, rhs, h)
    else:
        qb, s, y, ok = sqrtm_band.band_sqrt(W, rhs, h, xp)
    zr = zero & real                                       # rows of the spectrum without data
    sl = xp.sqrt(lmin)[:, None]
    s = xp.where(zr, sl, s)
    qb[:, :, 0] = xp.where(zr, sl, qb[:, :, 0])
    y = xp.where(zr, rhs / sl, y)
    return qb, s, y, ok


def _assemble(qb, s, y, nt: int, plan: _Plan, dev: dict, out, ts, xp):
    """Core outputs of a chunk of whole spectra (``ts``) into ``out = (flux, ivar, rdata)``."""
    flux, ivar, rdata = out
    m, nblk = plan.m, plan.nblk
    real = xp.broadcast_to(dev["real"][None], (nt, nblk, m)).reshape(nt * nblk, m)
    sgood = xp.where(real & (s != 0), s, 1.0)      # s = 0 only in blocks recomputed later
    shp = (nt, nblk, m)
    bi, li, gcore = dev["bi"], dev["li"], dev["gcore"]
    flux[ts, gcore] = (y / sgood).reshape(shp)[:, bi, li]
    ivar[ts, gcore] = (s ** 2).reshape(shp)[:, bi, li]
    for di, d in enumerate(np.arange(plan.ndiag) - plan.ndiag // 2):
        rd = _rdiag(qb, sgood, int(d), xp)
        rdata[ts, di, gcore] = rd.reshape(shp)[:, bi, li] * dev["okr"][None, :, di]


def _rdiag(qb, sgood, d: int, xp):
    """``R[p+d, p] = Q[p+d, p] / s[p+d]`` for every local row p (0 outside the block)."""
    nb, m, h1 = qb.shape
    rd = xp.zeros((nb, m))
    a = abs(d)
    if a >= h1 or a >= m:
        return rd
    if d >= 0:
        rd[:, : m - d] = qb[:, : m - d, d] / sgood[:, d:]
    else:
        rd[:, a:] = qb[:, : m - a, a] / sgood[:, : m - a]
    return rd


def _trim_band(U, xp):
    """Drop the outer diagonals that are zero in every spectrum (the resampling window has
    two columns of slack: on a grid that contains the input pixels, the last is empty).
    Every cost of the decorrelation grows with the band width. One device→host copy."""
    nz = xp.any(U != 0, axis=(0, 1))                                           # (L,)
    last = int(to_host(xp.max(xp.where(nz, xp.arange(U.shape[2]), 0))))
    return U[:, :, : last + 1] if last + 1 < U.shape[2] else U


def _resolve_method(method: str, xp):
    if method not in METHODS:
        raise ValueError(f"decorrelate method must be one of {METHODS}, not {method!r}")
    if method == "eigh":
        return "eigh", False
    use_numba = xp is np and sqrtm_band_cpu.available()
    return "zolotarev", use_numba


def decorrelate(cinv_band, cinvf, wavebin: float, ndiag: int = 11, *, max_blocks: int | None = None,
                method: str = "auto", backend=None):
    """Decorrelate banded inverse covariances (batched divide and conquer).

    Parameters
    ----------
    cinv_band : (nspec, 2*hb+1, nwave) array
        ``cinv_band[t, d, i] = Cinv_t[i, i + d − hb]`` (0 outside the matrix);
        Cinv symmetric positive semi-definite.
    cinvf : (nspec, nwave) array
        ``Σ Rᵀ·ivar·flux``.
    wavebin : float
        Minimal bin width (Å); sets core and skin sizes.
    ndiag : int
        Number of diagonals of the output resolution.
    max_blocks : int, optional
        Blocks per batch (bounds memory; default 2048 with the Numba twin, 256 for the
        numpy array path, 1024 for numpy eigh, 4096 on cupy: about 1 MB per block there).
    method : {"auto", "zolotarev", "eigh"}
        ``"eigh"``: desispec's eigendecomposition (reference); ``"zolotarev"``/``"auto"``:
        the rational approximation (:mod:`gpuspec.coadd.sqrtm_band`), blocks it does not
        cover recomputed by ``"eigh"``.
    backend : str or module, optional
        Default: the array module of ``cinv_band``.

    Returns
    -------
    flux, ivar : (nspec, nwave)
    rdata : (nspec, ndiag, nwave)
        Banded decorrelated resolution, ``rdata[t, d, j] = R_t[j + d − ndiag//2, j]``.

    Backends: numpy (Numba twin when available), cupy (one host synchronisation per call,
    to find blocks for the eigh fallback).
    """
    xp = get_array_module(cinv_band) if backend is None else get_xp(backend)
    cinv_band = to_device(cinv_band, xp, dtype=np.float64)
    cinvf = to_device(cinvf, xp, dtype=np.float64)
    squeeze = cinv_band.ndim == 2
    if squeeze:
        cinv_band, cinvf = cinv_band[None], cinvf[None]
    out = decorrelate_upper(band_to_upper(cinv_band, xp), cinvf, wavebin, ndiag,
                            max_blocks=max_blocks, method=method, xp=xp)
    return tuple(o[0] for o in out) if squeeze else out


def decorrelate_upper(U, cinvf, wavebin: float, ndiag: int = 11, *, max_blocks=None,
                      method: str = "auto", xp=np):
    """:func:`decorrelate` on the row-major upper band ``U[t, i, k] = Cinv_t[i, i+k]``
    (``(nspec, nwave, hb+1)``, :func:`gpuspec.coadd.cinv.accumulate_upper`'s layout), device
    arrays on ``xp``. Same outputs.

    Backends: numpy (Numba twin when available), cupy (two host synchronisations per call:
    the band width and the blocks for the eigh fallback).
    """
    U = _trim_band(U, xp)
    nt, nn, b1 = U.shape
    hb = b1 - 1
    kind, use_numba = _resolve_method(method, xp)
    plan = _Plan(nn, wavebin, ndiag, hb)
    dev = _device_tables(plan, xp)
    meandiag = xp.mean(U[:, :, 0], axis=-1)                                    # (nt,)
    empty = ~(meandiag > 0)                      # no data at all: output zeros, not NaN
    lmin_t = EIG_FLOOR / xp.where(empty, 1.0, meandiag)
    out = (xp.zeros((nt, nn)), xp.zeros((nt, nn)), xp.zeros((nt, ndiag, nn)))
    key = "eigh" if kind == "eigh" else ("numba" if use_numba else
                                         ("array" if xp is np else "cupy"))
    if kind == "eigh" and xp is not np:
        key = "cupy"
    max_blocks = _MAX_BLOCKS[key] if max_blocks is None else max_blocks
    tchunk = max(1, int(max_blocks // max(plan.nblk, 1)))
    h = ndiag // 2
    oks = []
    with nvtx_range("coadd.decorrelate"), _host_blas(kind == "eigh", xp):
        for t0 in range(0, nt, tchunk):
            ts = slice(t0, min(nt, t0 + tchunk))
            ntc = ts.stop - ts.start
            W0, rhs = _gather(U[ts], cinvf[ts], plan, dev, xp)
            real = xp.broadcast_to(dev["real"][None], (ntc, plan.nblk, plan.m)).reshape(
                ntc * plan.nblk, plan.m)
            lmin = xp.repeat(lmin_t[ts], plan.nblk)
            if kind == "eigh":
                qb, s, y = _pieces_eigh(W0, rhs, real, lmin, EIG_FLOOR / lmin, h, xp)
            else:
                qb, s, y, ok = _pieces_zolotarev(W0, rhs, real, lmin, h, xp, use_numba)
                oks.append(xp.asarray(ok))
            _assemble(qb, s, y, ntc, plan, dev, out, ts, xp)
        if oks:
            _eigh_fallback(U, cinvf, lmin_t, xp.concatenate(oks), plan, dev, out, h, xp)
    keep = (~empty).astype(np.float64)
    return out[0] * keep[:, None], out[1] * keep[:, None], out[2] * keep[:, None, None]


def _eigh_fallback(U, cinvf, lmin_t, ok, plan: _Plan, dev: dict, out, h: int, xp):
    """Recompute with ``eigh`` the blocks the rational approximation does not cover.

    One device→host copy of the per-block flags (the only synchronisation of
    :func:`decorrelate`); nothing else happens when every block is covered.
    """
    bad = np.flatnonzero(~to_host(ok))
    if bad.size == 0:
        return
    tb, kb = np.divmod(bad, plan.nblk)
    with _host_blas(True, xp):
        for t in np.unique(tb):
            ks = kb[tb == t]
            ksx = xp.asarray(ks)
            W0, rhs = _gather(U[t:t + 1], cinvf[t:t + 1], plan, dev, xp)
            lmin = xp.repeat(lmin_t[t:t + 1], ks.size)
            qb, s, y = _pieces_eigh(W0[ksx], rhs[ksx], dev["real"][ksx], lmin,
                                    EIG_FLOOR / lmin, h, xp)
            _assemble_blocks(qb, s, y, t, ks, plan, out, xp)


def _host_blas(needed: bool, xp):
    """The configured BLAS thread count around host LAPACK work (the eigh path); a no-op
    elsewhere: the banded kernels use no BLAS, and threadpoolctl's library scan costs
    ~10 ms per call (an eighth of a plain coadd of 10 targets)."""
    return blas_threads(default_blas_threads()) if needed and xp is np else \
        contextlib.nullcontext()


def _assemble_blocks(qb, s, y, t: int, ks, plan: _Plan, out, xp):
    """Core outputs of the blocks ``ks`` of spectrum ``t`` (host-chosen subset)."""
    flux, ivar, rdata = out
    sel = np.isin(plan.bi, ks)
    pos = {int(k): i for i, k in enumerate(ks)}
    bl = np.array([pos[int(k)] for k in plan.bi[sel]])
    li, gcore = plan.li[sel], plan.gcore[sel]
    real = plan.real[ks]
    sgood = xp.where(xp.asarray(real) & (s != 0), s, 1.0)
    blx, lix, gx = xp.asarray(bl), xp.asarray(li), xp.asarray(gcore)
    flux[t, gx] = (y / sgood)[blx, lix]
    ivar[t, gx] = (s ** 2)[blx, lix]
    okr = xp.asarray(plan.okr[sel].astype(np.float64))
    for di, d in enumerate(np.arange(plan.ndiag) - plan.ndiag // 2):
        rdata[t, di, gx] = _rdiag(qb, sgood, int(d), xp)[blx, lix] * okr[:, di]


def decorrelate_flops(nspec: int, nwave: int, wavebin: float, hb: int, ndiag: int = 11,
                      method: str = "zolotarev") -> dict:
    """Floating-point operations and bytes of :func:`decorrelate` (for the GPU cost model).

    ``"zolotarev"``: :func:`gpuspec.coadd.sqrtm_band.band_sqrt_flops` over all blocks;
    ``"eigh"``: about ``9·m³`` per block for a dense symmetric eigendecomposition with
    vectors (tridiagonal reduction ``4/3·m³``, divide and conquer ``~3·m³`` worst case,
    back-transformation ``2·m³``, plus the products forming ``s`` and ``Q``'s band), bytes
    the ``m × m`` blocks read and written a few times.

    Backends: host (pure arithmetic).
    """
    m, starts, *_ = block_layout(nwave, wavebin)
    nblock = nspec * starts.size
    if method == "eigh":
        flops = nblock * (9.0 * m ** 3 + 4.0 * m * m)
        return {"flops": flops, "bytes": nblock * 8.0 * m * m * 6, "nblock": nblock, "m": m}
    r = sqrtm_band.band_sqrt_flops(nblock, m, hb, ndiag // 2)
    r["m"] = m
    return r
