"""Spectroperfectionism extraction of bundles and frames (one ``xp`` code path).

How a bundle is computed (all on the array backend, batched over patches):

1. :func:`~gpuspec.extract.geometry.plan_bundle` lays out specter's patches
   (subbundles × wavelength steps, with padding) on the host.
2. The PSF spots of the bundle's fibers on the padded wavelength grid are built once,
   on the device (``psf.spots``).
3. Patches are processed in chunks bounded in memory. For a chunk, every fiber of
   every patch gets a pixel *window* (the patch rows × the columns its spots can
   touch). The projection matrix is scattered into these windows, for the fiber
   itself and its right-hand neighbours whose spots reach the window, giving a dense
   array ``A[p, f, pixel, d, λ]``. Then, batched over patches and fibers:

   * normal equations ``M = AᵀWA`` and ``b = AᵀWp`` with one batched matmul,
     plus specter's minimum-weight regularisation;
   * ``C = M⁻¹`` (Cholesky-based), deconvolved flux ``f = C b``;
   * per-fiber blocks ``C_ii`` → ``Q = C_ii^(-1/2)`` (batched ``eigh``), ``R``, ivar,
     decorrelated flux ``R f``;
   * model, pixel χ² with the PSF error term, chi2pix and the masked fraction.

4. Core results are scattered into the bundle's output arrays; nothing goes back to
   the host until the bundle is finished.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .. import backend as _backend
from ..errors import InputError
from ..frame import Frame
from ..maskbits import specmask
from ..profiling import nvtx_range
from . import normal_cpu
from .. import threads as _threads
from .geometry import Patch, check_wave, plan_bundle, resolution_halfwidth
from .solve import apply_fallback, decorrelate, inv_cholesky, inv_cholesky_device, regularize_normal

__all__ = ["extract_frame", "extract_bundle", "BAD2DFIT_CHI2"]

log = logging.getLogger(__name__)

#: numpy backend: assemble M with the Numba twin (``normal_cpu``) when available.
USE_NUMBA = True

#: chi2pix above this sets BAD2DFIT (desispec's extraction script).
BAD2DFIT_CHI2 = 100.0


def _origin(image_shape, xyorigin, xyrange):
    ny, nx = image_shape
    if xyrange is not None:
        xmin, xmax, ymin, ymax = (int(v) for v in xyrange)
        if (ymax - ymin, xmax - xmin) != (ny, nx):
            raise InputError(f"xyrange {tuple(xyrange)} does not match the image shape "
                             f"{image_shape}")
        return xmin, ymin
    if xyorigin is None:
        return 0, 0
    return int(xyorigin[0]), int(xyorigin[1])


class _Context:
    """Everything shared by the bundles of one extraction call."""

    def __init__(self, image, ivar, psf, wave, *, nsubbundles, nwavestep, wavepad_frac,
                 pixpad_frac, regularize, psferr, xyorigin, xyrange, model, backend,
                 chunk_mb):
        self.xp = xp = _backend.get_xp(backend)
        image_np_shape = tuple(np.shape(image))
        if len(image_np_shape) != 2 or tuple(np.shape(ivar)) != image_np_shape:
            raise InputError(f"image {image_np_shape} and ivar {np.shape(ivar)} must be 2-D "
                             "arrays of the same shape")
        self.wave = np.asarray(_backend.to_host(wave), dtype=np.float64)
        self.dw = check_wave(self.wave)
        self.psf = psf
        self.x0, self.y0 = _origin(image_np_shape, xyorigin, xyrange)
        self.shape = image_np_shape
        self.image = _backend.to_device(image, xp, dtype=np.float64)
        iv = _backend.to_device(ivar, xp, dtype=np.float64)
        # negative or non-finite ivar, or non-finite pixels, are unusable
        bad = ~xp.isfinite(iv) | (iv < 0) | ~xp.isfinite(self.image)
        self.ivar = xp.where(bad, 0.0, iv)
        self.image = xp.where(bad, 0.0, self.image)
        self.nsubbundles = int(nsubbundles)
        self.nwavestep = int(nwavestep)
        self.wavepad_frac = float(wavepad_frac)
        self.pixpad_frac = float(pixpad_frac)
        self.regularize = float(regularize)
        if psferr is None:
            psferr = getattr(psf, "psferr", None)
        self.psferr = 0.01 if psferr is None else float(psferr)
        self.model = bool(model)
        self.ndiag = resolution_halfwidth(psf, self.dw)
        if chunk_mb is None:
            chunk_mb = 64 if xp is np else 2048
        self.chunk_bytes = int(chunk_mb * 2 ** 20)
        self.image_box = (self.x0, self.x0 + self.shape[1], self.y0, self.y0 + self.shape[0])


def _empty_results(xp, nb, nwave, ndiag):
    return dict(
        flux=xp.zeros((nb, nwave)),
        ivar=xp.zeros((nb, nwave)),
        rdata=xp.zeros((nb, nwave, 2 * ndiag + 1)),
        chi2pix=xp.zeros((nb, nwave)),
        pixmask_fraction=xp.zeros((nb, nwave)),
    )


def _chunk_dims(patches, xc, yc, b0, kmin, nxs):
    """Host-side common dimensions and per-patch window offsets of a chunk."""
    P = len(patches)
    F = max(p.nspec for p in patches)
    NW = max(p.nwave for p in patches)
    WY = max(p.box[3] - p.box[2] for p in patches)
    xw = np.zeros((P, F), dtype=np.int64)
    nf = np.array([p.nspec for p in patches])
    wx = 1
    for i, p in enumerate(patches):
        k0 = p.kfirst - kmin
        for f in range(p.nspec):
            xs = xc[p.speclo - b0 + f, k0:k0 + p.nwave]
            xw[i, f] = xs.min()
            wx = max(wx, int(xs.max()) + nxs - int(xs.min()))
        xw[i, p.nspec:] = xw[i, p.nspec - 1]
    # largest fiber offset whose windows overlap
    D = 0
    for i, p in enumerate(patches):
        for d in range(1, p.nspec):
            a, b = xw[i, : p.nspec - d], xw[i, d: p.nspec]
            if np.any((b < a + wx) & (a < b + wx)):
                D = d
    return P, F, NW, WY, wx, D + 1, xw, nf


def _scatter(xp, stamps, sf, sk, ok, win, col, oy, ox, rlo, rhi, clo, chi, nwin, wy, wx, K):
    """Dense window matrices from spots: ``out[win, y, u, col] = stamp[y - oy, u - ox]``.

    All item arrays (``sf`` … ``chi``) share one shape and are host ints: the spot
    (fiber row ``sf``, wavelength ``sk``) of each item, whether it exists (``ok``),
    the window and column it goes to, its origin in window coordinates and the
    region (rows ``[rlo, rhi)``, columns ``[clo, chi)``) where pixels are kept (the
    patch box). Returns a device array (nwin, wy * wx, K). No duplicates are written,
    so a plain indexed assignment is exact on every backend.
    """
    nys, nxs = stamps.shape[-2:]
    sy = xp.arange(nys)[:, None]
    sx = xp.arange(nxs)[None, :]

    def dev(a):
        return xp.asarray(np.ascontiguousarray(a).reshape(-1))[:, None, None]

    yy = dev(oy) + sy                                   # (items, nys, 1)
    uu = dev(ox) + sx                                   # (items, 1, nxs)
    rv = dev(ok) & (yy >= xp.maximum(dev(rlo), 0)) & (yy < xp.minimum(dev(rhi), wy))
    cv = (uu >= xp.maximum(dev(clo), 0)) & (uu < xp.minimum(dev(chi), wx))
    size = nwin * wy * wx * K
    flat = xp.where(rv & cv, (dev(win) * wy + yy) * (wx * K) + dev(col) + uu * K, size)
    vals = stamps[xp.asarray(np.ascontiguousarray(sf).reshape(-1)),
                  xp.asarray(np.ascontiguousarray(sk).reshape(-1))]
    out = xp.zeros(size + 1)
    out[flat.reshape(-1)] = vals.reshape(-1)
    return out[:size].reshape(nwin, wy * wx, K)


def _window_pixels(ctx, rows0, cols0, nrow, ncol, rowmax, bx0, bx1):
    """Gather image and ivar into windows (host-int origins ``rows0``/``cols0``).

    ``rows0``, ``cols0``: (nwin,) CCD row/column of each window's pixel (0, 0);
    ``rowmax``: (nwin,) last CCD row (exclusive) of the box; ``bx0``/``bx1``: box
    columns. Pixels outside the box or the image get ivar 0. Returns (nwin, nrow*ncol)
    device arrays (pix, ivar).
    """
    xp = ctx.xp
    yw = xp.arange(nrow)[None, :, None]
    uw = xp.arange(ncol)[None, None, :]
    rows = xp.asarray(rows0)[:, None, None] + yw
    cols = xp.asarray(cols0)[:, None, None] + uw
    ok = ((rows < xp.asarray(rowmax)[:, None, None]) & (cols >= xp.asarray(bx0)[:, None, None])
          & (cols < xp.asarray(bx1)[:, None, None]))
    iy = rows - ctx.y0
    ix = cols - ctx.x0
    ok &= (iy >= 0) & (iy < ctx.shape[0]) & (ix >= 0) & (ix < ctx.shape[1])
    iyc = xp.clip(iy, 0, ctx.shape[0] - 1)
    ixc = xp.clip(ix, 0, ctx.shape[1] - 1)
    n = len(rows0)
    pix = xp.where(ok, ctx.image[iyc, ixc], 0.0).reshape(n, nrow * ncol)
    iv = xp.where(ok, ctx.ivar[iyc, ixc], 0.0).reshape(n, nrow * ncol)
    return pix, iv


#: target number of wavelengths per tile of the normal-equation products
TILE = 16


@nvtx_range("extract:chunk")
def _solve_chunk(ctx: _Context, patches: list[Patch], b0: int, kmin: int, xc, yc, stamps,
                 fallback=None):
    """Solve a chunk of patches; returns device arrays indexed [p, f, ...].

    On a GPU the batched Cholesky reports failures per patch on the device
    (``res["chol_bad"]``, no host synchronisation); the caller re-solves such a chunk with
    ``fallback`` (host bool per patch) to use the eigh-based inverse for those patches.
    """
    xp = ctx.xp
    nys, nxs = stamps.shape[-2:]
    P, F, NW0, WY, WX, ND, xw, nf = _chunk_dims(patches, xc, yc, b0, kmin, nxs)
    NT = max(1, math.ceil(NW0 / TILE))
    T = math.ceil(NW0 / NT)
    NW = NT * T                                   # padded wavelengths per fiber
    Q = WY * WX
    nw = np.array([p.nwave for p in patches])
    k0 = np.array([p.kfirst - kmin for p in patches])
    fb0 = np.array([p.speclo - b0 for p in patches])
    bx0 = np.array([p.box[0] for p in patches])
    bx1 = np.array([p.box[1] for p in patches])
    by0 = np.array([p.box[2] for p in patches])
    bh = np.array([p.box[3] - p.box[2] for p in patches])
    # spot of (p, fiber f, wavelength j), clamped to valid ones; host ints
    fI = np.arange(F)[None, :, None]
    jI = np.arange(NW)[None, None, :]
    okfj = (fI < nf[:, None, None]) & (jI < nw[:, None, None])             # (P,F,NW)
    sf = fb0[:, None, None] + np.minimum(fI, nf[:, None, None] - 1)
    sk = k0[:, None, None] + np.minimum(jI, nw[:, None, None] - 1)
    sf, sk = np.broadcast_arrays(sf, sk)
    ycs = yc[sf, sk] - by0[:, None, None]          # stamp row 0, box coordinates
    xcs = xc[sf, sk]                               # stamp column 0, CCD

    with nvtx_range("extract:projection"):
        # ---- own-fiber windows (P*F windows of WY x WX pixels, NW columns)
        pidx = np.arange(P)[:, None, None]
        A0 = _scatter(xp, stamps, sf, sk, okfj, pidx * F + fI + 0 * jI, jI + 0 * fI + 0 * pidx,
                      ycs, xcs - xw[:, :, None], np.zeros_like(ycs), bh[:, None, None] + 0 * ycs,
                      bx0[:, None, None] - xw[:, :, None] + 0 * jI,
                      bx1[:, None, None] - xw[:, :, None] + 0 * jI, P * F, WY, WX, NW)
        A0 = A0.reshape(P, F, Q, NW)
        Pw, Ww = _window_pixels(ctx, np.repeat(by0, F), xw.reshape(-1), WY, WX,
                                np.repeat(by0 + bh, F), np.repeat(bx0, F), np.repeat(bx1, F))
        Pw = Pw.reshape(P, F, Q)
        Ww = Ww.reshape(P, F, Q)

    use_nb = ctx.xp is np and USE_NUMBA and normal_cpu.available()
    if not use_nb:
        with nvtx_range("extract:projection_tiles"):
            # ---- tiled windows for M: tile t of fiber f covers the rows of its stamps
            ycT = np.where(okfj, ycs, np.iinfo(np.int64).max).reshape(P, F, NT, T)
            ry = np.where(ycT.min(axis=-1) == np.iinfo(np.int64).max, 0, ycT.min(axis=-1))
            ry = np.maximum(ry, 0)                                              # (P,F,NT)
            ycT2 = np.where(okfj, ycs, np.iinfo(np.int64).min).reshape(P, F, NT, T)
            RT = int(max(1, (ycT2.max(axis=-1) - ry).max() + nys))
            RT = min(RT, WY)
            # neighbour tiles whose stamps reach tile t's rows (for fibers f..f+ND-1)
            E = 0
            for d in range(ND):
                g = fI + d
                okg = (g < nf[:, None, None])
                gl = np.minimum(g, F - 1)
                ycg = np.take_along_axis(np.where(okfj, ycs, -10 ** 9),
                                         np.broadcast_to(gl, (P, F, NW)), axis=1)   # (P,F,NW)
                ycg = np.where(okg & okfj[np.arange(P)[:, None, None], gl, jI], ycg, -10 ** 9)
                for t in range(NT):
                    top = ry[:, :, t][..., None]
                    hit = (ycg + nys > top) & (ycg < top + RT) & (ycg > -10 ** 8)
                    if np.any(hit):
                        ts = np.nonzero(hit.any(axis=(0, 1)))[0] // T
                        E = max(E, int(abs(ts.min() - t)), int(abs(ts.max() - t)))
            NE = 2 * E + 1
            K = ND * NE * T
        with nvtx_range("extract:projection_tiled_gather"):
            # At[(p,f,t), (y,u), (d,e,q)] = own-window A0 of fiber g=f+d at box row ry+y,
            # CCD column xw[f]+u, wavelength (t+e)*T+q: a gather of T-long rows of A0
            # (zero outside g's window / the tiles / the fibers)
            gI = np.arange(F)[None, :, None] + np.arange(ND)[None, None, :]            # (1,F,ND)
            gok = gI < nf[:, None, None]                                                # (P,F,ND)
            gcl = np.minimum(gI, F - 1)
            xwg = np.take_along_axis(xw, np.broadcast_to(gcl, (P, F, ND)).reshape(P, -1),
                                     axis=1).reshape(P, F, ND)
            cshift = xw[:, :, None] - xwg                                               # (P,F,ND)
            pgbase = np.where(gok, (np.arange(P)[:, None, None] * F + gcl) * WY, -1)    # (P,F,ND)
            tt = np.arange(NT)[:, None] + np.arange(-E, E + 1)[None, :]                 # (NT,NE)
            # device broadcasting over (P,F,NT,RT,WX,ND,NE)
            yv = xp.arange(RT).reshape(1, 1, 1, RT, 1, 1, 1)
            uv = xp.arange(WX).reshape(1, 1, 1, 1, WX, 1, 1)
            r = xp.asarray(ry).reshape(P, F, NT, 1, 1, 1, 1) + yv
            cc = uv + xp.asarray(cshift).reshape(P, F, 1, 1, 1, ND, 1)
            pg = xp.asarray(pgbase).reshape(P, F, 1, 1, 1, ND, 1)
            ttd = xp.asarray(tt).reshape(1, 1, NT, 1, 1, 1, NE)
            okg = ((pg >= 0) & (r < WY) & (cc >= 0) & (cc < WX) & (ttd >= 0) & (ttd < NT))
            rowsel = ((pg + r) * WX + cc) * NT + ttd
            nrows = P * F * WY * WX * NT
            rowsel = xp.where(okg, rowsel, nrows)
            A0r = xp.concatenate([A0.reshape(nrows, T), xp.zeros((1, T))])
            At = A0r[rowsel.reshape(-1)].reshape(P * F * NT, RT * WX, K)
            _, Wt = _window_pixels(ctx, (by0[:, None, None] + ry).reshape(-1),
                                   np.repeat(xw.reshape(-1), NT), RT, WX,
                                   np.repeat(by0 + bh, F * NT), np.repeat(bx0, F * NT),
                                   np.repeat(bx1, F * NT))

    with nvtx_range("extract:normal"):
        AW = A0 * Ww[..., None]                                        # (P,F,Q,NW)
        bvec = xp.matmul(xp.swapaxes(AW, -1, -2), Pw[..., None])[..., 0]   # (P,F,NW)
        fw = AW.sum(axis=2)                                            # (P,F,NW)
        n = F * NW
        if use_nb:  # CPU twin: M directly from the stamps
            boxes = np.array([p.box for p in patches], dtype=np.int64)
            M = normal_cpu.normal_matrices(stamps, xc, yc, ctx.ivar, ctx.x0, ctx.y0, fb0, nf,
                                           k0, nw, boxes, NW, F - 1, F)
        else:
            own = At[:, :, E * T:(E + 1) * T] * Wt[..., None]          # (P*F*NT, RT*WX, T)
            Mb = xp.matmul(xp.swapaxes(own, -1, -2), At)                # (P*F*NT, T, K)
            rows_i, cols_i, src_i = _assembly_index(F, NT, T, ND, E, K)
            M = xp.zeros((P, n * n))
            Mbf = Mb.reshape(P, F * NT * T * K)
            M[:, xp.asarray(rows_i * n + cols_i)] = Mbf[:, xp.asarray(src_i)]
            M[:, xp.asarray(cols_i * n + rows_i)] = Mbf[:, xp.asarray(src_i)]
            M = M.reshape(P, n, n)
        validu = xp.asarray(okfj.reshape(P, n))
        regularize_normal(M, fw.reshape(P, n), validu, ctx.regularize)

    with nvtx_range("extract:solve"):
        chol_bad = None
        if xp is np:
            Z = inv_cholesky(M)                                # M^-1 = Z^T Z (LAPACK + fallback)
        else:
            Z, chol_bad = inv_cholesky_device(M)               # flags stay on the device
            if fallback is not None:
                Z = apply_fallback(Z, M, fallback)
        Zt = xp.swapaxes(Z, -1, -2)
        xflux = xp.matmul(Zt, xp.matmul(Z, bvec.reshape(P, n, 1)))[..., 0]   # deconvolved
        # diagonal blocks of C = M^-1: C_ff = Z[:, f]^T Z[:, f]
        Zf = xp.moveaxis(Z.reshape(P, n, F, NW), 2, 1)                 # (P,F,n,NW)
        Cb = xp.matmul(xp.swapaxes(Zf, -1, -2), Zf)                     # (P,F,NW,NW)
        R, ivar = decorrelate(Cb)
        # patches without any weighted pixel carry no information
        nodata = fw.reshape(P, n).max(axis=-1) <= 0
        ivar = xp.where(nodata[:, None, None], 0.0, ivar)
        x3 = xflux.reshape(P, F, NW)
        flux = xp.matmul(R, x3[..., None])[..., 0]
        h = ctx.ndiag
        jj = xp.arange(NW)
        ri = jj[None, :] - h + xp.arange(2 * h + 1)[:, None]           # (2h+1, NW)
        rok = (ri >= 0) & (ri < NW)
        rd = R[:, :, xp.clip(ri, 0, NW - 1), jj[None, :]] * rok        # (P,F,2h+1,NW)

    with nvtx_range("extract:chi2"):
        yw = xp.arange(WY)[:, None]
        uw = xp.arange(WX)[None, :]
        m_own = xp.matmul(A0, x3[..., None])[..., 0]                    # (P,F,Q)
        # full model in each fiber window: own + neighbours' own-window models
        e_ = np.arange(-(ND - 1), ND)
        gidx = np.arange(F)[None, :, None] + e_[None, None, :]          # (1,F,E)
        gok = (gidx >= 0) & (gidx < nf[:, None, None])
        gcl = np.clip(gidx, 0, F - 1)
        shift = np.where(gok, xw[:, :, None] - np.take_along_axis(
            xw, np.broadcast_to(gcl, (P, F, e_.size)).reshape(P, -1), axis=1).reshape(P, F, -1), 0)
        gbase = (np.arange(P)[:, None, None] * F + gcl) * Q             # (P,F,E)
        uu2 = xp.asarray(shift)[..., None, None] + uw                     # (P,F,E,1,WX)
        ok2 = xp.asarray(gok)[..., None, None] & (uu2 >= 0) & (uu2 < WX)
        idx2 = xp.asarray(gbase)[..., None, None] + yw * WX + uu2        # (P,F,E,WY,WX)
        msize = P * F * Q
        idx2 = xp.where(ok2, idx2, msize)
        mext = xp.concatenate([m_own.reshape(-1), xp.zeros(1)])
        mwin = mext[idx2].sum(axis=2).reshape(P, F, Q)
        good = Ww > 0
        tot = xp.where(good, 1.0 / ((mwin * ctx.psferr + 1e-32) ** 2
                                    + 1.0 / xp.where(good, Ww, 1.0)), 0.0)
        chi2 = (Pw - mwin) ** 2 * tot
        A0t = xp.swapaxes(A0, -1, -2)
        num = xp.matmul(A0t, chi2[..., None])[..., 0]
        psfw = xp.matmul(A0t, (tot > 0).astype(A0.dtype)[..., None])[..., 0]
        bad = psfw == 0
        chi2pix = xp.where(bad, 0.0, num / xp.where(bad, 1.0, psfw))
        pixmask = 1.0 - xp.matmul(A0t, good.astype(A0.dtype)[..., None])[..., 0]

    boxmodel = None
    if ctx.model:
        BW = int(max(bx1 - bx0))
        bsize = P * WY * BW
        box = xp.zeros(bsize + 1)
        for f in range(F):
            colb = xp.asarray(xw[:, f] - bx0)[:, None, None] + uw       # (P,1,WX)
            okb = ((colb >= 0) & (colb < xp.asarray(bx1 - bx0)[:, None, None])
                   & (yw < xp.asarray(bh)[:, None, None]) & xp.asarray(f < nf)[:, None, None])
            idxb = (xp.arange(P)[:, None, None] * WY + yw) * BW + colb
            idxb = xp.where(okb, idxb, bsize).reshape(-1)
            box[idxb] += m_own[:, f].reshape(-1)
        boxmodel = box[:bsize].reshape(P, WY, BW)

    return dict(flux=flux, ivar=ivar, rd=rd, chi2pix=chi2pix, pixmask=pixmask,
                boxmodel=boxmodel, F=F, NW=NW, chol_bad=chol_bad)


_ASSEMBLY_CACHE: dict = {}


def _assembly_index(F, NT, T, ND, E, K):
    """Where each element of the tiled products goes in M (host, cached by shape).

    Returns ``rows, cols, src``: M[row, col] = Mb.flat[src] for the blocks on and above
    the block diagonal (fiber g >= f; same fiber: tile t2 >= t); the caller also writes
    the transposes.
    """
    key = (F, NT, T, ND, E, K)
    if key not in _ASSEMBLY_CACHE:
        NE = 2 * E + 1
        NW = NT * T
        f = np.arange(F).reshape(-1, 1, 1, 1, 1, 1)
        t = np.arange(NT).reshape(1, -1, 1, 1, 1, 1)
        i = np.arange(T).reshape(1, 1, -1, 1, 1, 1)
        d = np.arange(ND).reshape(1, 1, 1, -1, 1, 1)
        e = np.arange(-E, E + 1).reshape(1, 1, 1, 1, -1, 1)
        q = np.arange(T).reshape(1, 1, 1, 1, 1, -1)
        g = f + d
        t2 = t + e
        keep = (g < F) & (t2 >= 0) & (t2 < NT) & ((d > 0) | (e >= 0))
        row = f * NW + t * T + i
        col = g * NW + t2 * T + q
        src = (((f * NT + t) * T + i) * K) + (d * NE + e + E) * T + q
        row, col, src, keep = np.broadcast_arrays(row, col, src, keep)
        _ASSEMBLY_CACHE[key] = (row[keep], col[keep], src[keep])
    return _ASSEMBLY_CACHE[key]


def _chunks(patches, per_patch_bytes, budget):
    n = max(1, int(budget // max(per_patch_bytes, 1)))
    for i in range(0, len(patches), n):
        yield patches[i:i + n]


@nvtx_range("extract:bundle")
def _extract_range(ctx: _Context, b0: int, b1: int, modelimage=None):
    """Extract fibers [b0, b1) as one bundle; returns device arrays (nb, nwave, ...)."""
    xp = ctx.xp
    psf = ctx.psf
    nwave = ctx.wave.size
    patches = plan_bundle(psf, ctx.wave, b0, b1, nsubbundles=ctx.nsubbundles,
                          nwavestep=ctx.nwavestep, pixpad_frac=ctx.pixpad_frac,
                          wavepad_frac=ctx.wavepad_frac, ndiag=ctx.ndiag,
                          image_box=ctx.image_box)
    kmin = min(p.kfirst for p in patches)
    kmax = max(p.kfirst + p.nwave for p in patches)
    wave_ext = ctx.wave[0] + np.arange(kmin, kmax) * ctx.dw
    with nvtx_range("extract:spots"):
        xc_d, yc_d, stamps = psf.spots(np.arange(b0, b1), wave_ext, xp=xp)
        xc = _backend.to_host(xc_d).astype(np.int64)
        yc = _backend.to_host(yc_d).astype(np.int64)
    nb = b1 - b0
    out = _empty_results(xp, nb, nwave, ctx.ndiag)
    nys, nxs = stamps.shape[-2:]
    # memory per patch of the dominant array A[p, f, pixel, d, λ] (rough upper bound)
    F = max(p.nspec for p in patches)
    NW = max(p.nwave for p in patches)
    WY = max(p.box[3] - p.box[2] for p in patches)
    per_patch = 8 * F * WY * (nxs + 4) * 3 * NW * 3
    chunks = list(_chunks(patches, per_patch, ctx.chunk_bytes))
    flags = []
    for chunk in chunks:
        res = _solve_chunk(ctx, chunk, b0, kmin, xc, yc, stamps)
        _store_chunk(ctx, out, chunk, res, b0, nwave, modelimage)
        if res["chol_bad"] is not None:
            flags.append(res["chol_bad"])
    if flags:
        # one synchronisation per bundle (not per chunk): did any batched Cholesky fail?
        bad = _backend.to_host(xp.concatenate(flags))
        if bad.any():
            log.info("bundle %d-%d: %d patch(es) not positive definite on the device; "
                     "re-solved with the eigh-based inverse", b0, b1 - 1, int(bad.sum()))
            # redo from the first failed chunk on, so that the model image keeps specter's
            # order (later patches overwrite earlier ones)
            starts = np.cumsum([0] + [len(c) for c in chunks])
            first = min(i for i in range(len(chunks)) if bad[starts[i]:starts[i + 1]].any())
            for i in range(first, len(chunks)):
                fb = bad[starts[i]:starts[i + 1]]
                if not fb.any() and modelimage is None:
                    continue
                res = _solve_chunk(ctx, chunks[i], b0, kmin, xc, yc, stamps,
                                   fallback=fb if fb.any() else None)
                _store_chunk(ctx, out, chunks[i], res, b0, nwave, modelimage)
    return out


def _store_chunk(ctx, out, chunk, res, b0, nwave, modelimage):
    """Scatter the kept core bins of a solved chunk into the bundle's outputs (device)."""
    xp = ctx.xp
    Fc, NWc = res["F"], res["NW"]
    # ---- host index lists of the kept core bins, then one scatter per output
    src, dst = [], []
    for i, p in enumerate(chunk):
        for f in np.nonzero(p.keep)[0]:
            j = np.arange(p.nlo, p.nlo + p.nout)
            src.append((i * Fc + f) * NWc + j)
            dst.append((p.speclo - b0 + f) * nwave + p.iwave + np.arange(p.nout))
    src = xp.asarray(np.concatenate(src))
    dst = xp.asarray(np.concatenate(dst))
    out["flux"].reshape(-1)[dst] = res["flux"].reshape(-1)[src]
    out["ivar"].reshape(-1)[dst] = res["ivar"].reshape(-1)[src]
    out["chi2pix"].reshape(-1)[dst] = res["chi2pix"].reshape(-1)[src]
    out["pixmask_fraction"].reshape(-1)[dst] = res["pixmask"].reshape(-1)[src]
    rd = xp.moveaxis(res["rd"], 2, -1).reshape(-1, 2 * ctx.ndiag + 1)
    out["rdata"].reshape(-1, 2 * ctx.ndiag + 1)[dst] = rd[src]
    if modelimage is not None:
        bm = res["boxmodel"]
        for i, p in enumerate(chunk):  # specter order: later patches overwrite
            x0, x1, y0, y1 = p.box
            modelimage[y0 - ctx.y0:y1 - ctx.y0, x0 - ctx.x0:x1 - ctx.x0] = \
                bm[i, :y1 - y0, :x1 - x0]


def _finish(ctx: _Context, results, specmin, meta=None, modelimage=None) -> Frame:
    xp = ctx.xp
    flux = xp.concatenate([r["flux"] for r in results]) / ctx.dw
    ivar = xp.concatenate([r["ivar"] for r in results]) * ctx.dw ** 2
    rdata = xp.concatenate([r["rdata"] for r in results])
    chi2pix = xp.concatenate([r["chi2pix"] for r in results])
    pixmask = xp.concatenate([r["pixmask_fraction"] for r in results])
    mask = xp.zeros(flux.shape, dtype=xp.int32)
    mask |= xp.where(pixmask > 0.5, specmask.SOMEBADPIX, 0).astype(xp.int32)
    mask |= xp.where(pixmask == 1.0, specmask.ALLBADPIX, 0).astype(xp.int32)
    mask |= xp.where(chi2pix > BAD2DFIT_CHI2, specmask.BAD2DFIT, 0).astype(xp.int32)
    h = _backend.to_host
    m = dict(meta or {})
    m["SPECMIN"] = int(specmin)
    m["NSPEC"] = int(flux.shape[0])
    m.setdefault("BUNIT", "electron/Angstrom")
    return Frame(wave=ctx.wave.copy(), flux=h(flux), ivar=h(ivar), mask=h(mask),
                 resolution_data=np.ascontiguousarray(np.moveaxis(h(rdata), -1, 1)),
                 chi2pix=h(chi2pix), meta=m, pixmask_fraction=h(pixmask),
                 modelimage=None if modelimage is None else h(modelimage))


def _make_context(image, ivar, psf, wave, kw):
    return _Context(image, ivar, psf, wave, **kw)


def extract_frame(image, ivar, psf, wave, specmin=0, nspec=None, *, bundlesize=25,
                  nsubbundles=5, nwavestep=50, wavepad_frac=0.2, pixpad_frac=0.8,
                  regularize=0.0, psferr=None, xyorigin=None, xyrange=None, model=False,
                  full_output=None, backend="auto", chunk_mb=None, meta=None,
                  blas_threads=None, nproc=1) -> Frame:
    """Spectroperfectionism extraction of fibers ``[specmin, specmin + nspec)``.

    Parameters
    ----------
    image, ivar : array (ny, nx)
        Pixels (electrons) and inverse variance (0 where masked); numpy or cupy, any
        byte order. A sub-image is allowed: give its CCD origin with ``xyorigin`` or
        ``xyrange``.
    psf : GaussHermitePSF
    wave : array (nwave,)
        Linear wavelength grid, Å.
    specmin : int
        First fiber (index into the PSF).
    nspec : int, optional
        Number of fibers (default: to the end of the PSF).
    bundlesize : int
        Fibers per bundle, counted from ``specmin`` as in specter (25 for DESI).
    nsubbundles, nwavestep, wavepad_frac, pixpad_frac, regularize
        specter ``ex2d`` settings (``wavesize`` = ``nwavestep``).
    psferr : float, optional
        Fractional PSF model error for chi2pix (default ``psf.psferr``, else 0.01).
    xyorigin : (x0, y0), optional
        CCD coordinates of ``image[0, 0]``.
    xyrange : (xmin, xmax, ymin, ymax), optional
        specter's form: the image is the CCD cut-out ``[ymin:ymax, xmin:xmax]``.
    model : bool
        Also return the model image (specter's: each patch's ``A·f`` over its pixel
        box, later patches overwriting earlier ones).
    full_output : bool, optional
        Alias of ``model`` (specter's name).
    backend : {"auto", "numpy", "cupy"}
    chunk_mb : float, optional
        Memory budget of one batch of patches (default 64 MB on CPU, 2 GB on GPU).
    meta : dict, optional
        Header keywords copied to the frame.
    blas_threads : int, optional
        OpenBLAS threads during a CPU extraction (default: ``GPUSPEC_BLAS_THREADS`` or
        1; 0 leaves the library setting alone). Extraction is many small products:
        parallelise over bundles/processes instead (see ``gpuspec.threads``).
    nproc : int
        numpy backend: extract bundles in this many forked processes (ignored with
        ``model=True``, on cupy, or for a single bundle). Results are identical.

    Returns
    -------
    Frame
        flux (electron/Å), ivar, mask (SOMEBADPIX where more than half of a bin's PSF
        weight falls on masked pixels, ALLBADPIX where all does, BAD2DFIT where
        chi2pix > 100), resolution_data (nspec, 2·ndiag+1, nwave), chi2pix,
        pixmask_fraction and optionally modelimage. Host (numpy) arrays.

    Backends: numpy, cupy.
    """
    if full_output is not None:
        model = model or bool(full_output)
    if nspec is None:
        nspec = psf.nspec - specmin
    if specmin < 0 or nspec <= 0 or specmin + nspec > psf.nspec:
        raise InputError(f"fibers {specmin}..{specmin + nspec - 1} are outside the PSF's "
                         f"0..{psf.nspec - 1}")
    ctx = _make_context(image, ivar, psf, wave, dict(
        nsubbundles=nsubbundles, nwavestep=nwavestep, wavepad_frac=wavepad_frac,
        pixpad_frac=pixpad_frac, regularize=regularize, psferr=psferr, xyorigin=xyorigin,
        xyrange=xyrange, model=model, backend=backend, chunk_mb=chunk_mb))
    modelimage = ctx.xp.zeros(ctx.shape) if model else None
    results = []
    if blas_threads is None:
        blas_threads = _threads.default_blas_threads()
    with nvtx_range("extract:frame"), \
            _threads.blas_threads(blas_threads if ctx.xp is np else None):
        ranges = [(b0, min(b0 + bundlesize, specmin + nspec))
                  for b0 in range(specmin, specmin + nspec, bundlesize)]
        nproc = int(nproc or 1)
        if nproc > 1 and ctx.xp is np and not model and len(ranges) > 1:
            results = _extract_parallel(ctx, ranges, nproc)
        else:
            for b0, b1 in ranges:
                results.append(_extract_range(ctx, b0, b1, modelimage))
        return _finish(ctx, results, specmin, meta, modelimage)


_POOL_CTX = None


def _pool_bundle(rng):
    return _extract_range(_POOL_CTX, rng[0], rng[1], None)


def _extract_parallel(ctx, ranges, nproc):
    """Bundles in ``nproc`` forked processes (numpy backend; inputs shared by fork)."""
    import multiprocessing as mp

    global _POOL_CTX
    try:
        mpctx = mp.get_context("fork")
    except ValueError:  # pragma: no cover - platforms without fork
        return [_extract_range(ctx, b0, b1, None) for b0, b1 in ranges]
    _POOL_CTX = ctx
    try:
        with mpctx.Pool(min(nproc, len(ranges))) as pool:
            return pool.map(_pool_bundle, ranges, chunksize=1)
    finally:
        _POOL_CTX = None


def extract_bundle(image, ivar, psf, wave, bundle, *, bundlesize=25, **kwargs) -> Frame:
    """Extract one bundle: fibers ``[bundle·bundlesize, (bundle+1)·bundlesize)``.

    The unit of work the launcher distributes; the result is a partial frame with
    ``SPECMIN``/``NSPEC`` set (merge with :func:`gpuspec.extract.merge_frames`).
    Keyword arguments are those of :func:`extract_frame`.

    Backends: numpy, cupy.
    """
    b0 = int(bundle) * int(bundlesize)
    if b0 < 0 or b0 >= psf.nspec:
        raise InputError(f"bundle {bundle} (bundlesize {bundlesize}) is outside the PSF's "
                         f"{psf.nspec} fibers")
    nspec = min(int(bundlesize), psf.nspec - b0)
    return extract_frame(image, ivar, psf, wave, b0, nspec, bundlesize=bundlesize, **kwargs)
