"""The array path of a chunk: dense pixel windows, tiled normal equations, diagnostics.

This is what runs on a GPU (and on numpy when the Numba twins are switched off,
``GPUSPEC_EXTRACT_NUMBA=0``): every step is a batched ``xp`` expression over the patches
of a chunk, with host-side integer bookkeeping only.

Each fiber f of each patch gets a pixel *window*: the patch's box rows × the columns its
spots can reach. Dimensions (besides those of :mod:`gpuspec.extract.layout`):

======  =====================================================================
name    meaning
======  =====================================================================
WY      window rows: the largest box height of the chunk
WX      window columns: stamp width + the largest trace drift over a patch
Q       pixels per window, WY·WX
ND      fibers g = f … f+ND−1 whose windows overlap fiber f's (D+1)
T, NT   wavelengths per tile (about :data:`TILE`) and tiles per fiber, NW = NT·T
RT      rows of a tile's window (the rows its stamps cover, at most WY)
E, NE   tiles t−E … t+E whose stamps reach tile t's rows; NE = 2E+1
KT      columns of one tile product, ND·NE·T
======  =====================================================================

* ``A0[p, f, pixel, j]``: fiber f's own spots in its window (used for ``b = AᵀWp``,
  the weights and the diagnostics);
* ``At[(p, f, t), pixel, (d, e, q)]``: the spots of fibers f+d, tiles t+e, in the rows of
  tile t of fiber f's window; ``(own·W)ᵀ At`` gives every block of ``M = AᵀWA`` above the
  block diagonal, placed into M by one indexed assignment (:func:`_assembly_index`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..profiling import nvtx_range

__all__ = ["WindowLayout", "window_layout", "own_windows", "tiled_normal", "rhs",
           "diagnostics", "bytes_per_patch", "TILE"]

#: target number of wavelengths per tile of the normal-equation products
TILE = 16


@dataclass
class WindowLayout:
    """Window and tile dimensions of a chunk (host ints; see the module docstring).

    ``xw[p, f]`` is the CCD column of pixel 0 of fiber f's window; ``sf, sk`` (P, F, NW)
    the spot (bundle fiber, spot-grid wavelength) of each unknown, clamped to existing
    ones; ``ycs`` its stamp's row 0 in box coordinates and ``xcs`` its CCD column 0.

    Backends: host only (NumPy).
    """

    WY: int
    WX: int
    ND: int
    T: int
    NT: int
    xw: np.ndarray
    sf: np.ndarray
    sk: np.ndarray
    ycs: np.ndarray
    xcs: np.ndarray

    @property
    def Q(self) -> int:
        """Pixels per window, WY·WX.

        Backends: host only (plain values).
        """
        return self.WY * self.WX

    @property
    def NW(self) -> int:
        """Wavelengths per window, NT·T.

        Backends: host only (plain values).
        """
        return self.NT * self.T


def window_layout(patches, b0: int, kmin: int, xc, yc, nxs: int) -> WindowLayout:
    """Windows of a chunk: offsets, widths, the fiber reach ND and the tiles (host).

    Backends: host only (NumPy).
    """
    P = len(patches)
    F = max(p.nspec for p in patches)
    NW0 = max(p.nwave for p in patches)
    WY = max(p.box[3] - p.box[2] for p in patches)
    NT = max(1, math.ceil(NW0 / TILE))
    T = math.ceil(NW0 / NT)
    NW = NT * T
    xw = np.zeros((P, F), dtype=np.int64)
    wx = 1
    for i, p in enumerate(patches):
        k0 = p.kfirst - kmin
        for f in range(p.nspec):
            xs = xc[p.speclo - b0 + f, k0:k0 + p.nwave]
            xw[i, f] = xs.min()
            wx = max(wx, int(xs.max()) + nxs - int(xs.min()))
        xw[i, p.nspec:] = xw[i, p.nspec - 1]
    D = 0                                          # largest fiber offset whose windows overlap
    for i, p in enumerate(patches):
        for d in range(1, p.nspec):
            a, b = xw[i, : p.nspec - d], xw[i, d: p.nspec]
            if np.any((b < a + wx) & (a < b + wx)):
                D = d
    nf = np.array([p.nspec for p in patches])[:, None, None]
    nw = np.array([p.nwave for p in patches])[:, None, None]
    sf = np.array([p.speclo - b0 for p in patches])[:, None, None] + np.minimum(
        np.arange(F)[None, :, None], nf - 1)
    sk = np.array([p.kfirst - kmin for p in patches])[:, None, None] + np.minimum(
        np.arange(NW)[None, None, :], nw - 1)
    sf, sk = np.broadcast_arrays(sf, sk)
    by0 = np.array([p.box[2] for p in patches])[:, None, None]
    return WindowLayout(WY=WY, WX=wx, ND=D + 1, T=T, NT=NT, xw=xw, sf=sf, sk=sk,
                        ycs=yc[sf, sk] - by0, xcs=xc[sf, sk])


def bytes_per_patch(patches, b0: int, kmin: int, xc, yc, nys: int, nxs: int) -> int:
    """Peak bytes one patch adds to a chunk on the array path (the chunk-size model).

    The peak is reached in the tiled gather (:func:`_tile_gather`), where these arrays
    are alive at once (float64 and int64 are 8 bytes; dimensions of the module docstring):

    * ``A0`` and its copy with a zero row appended (the gather source): 2 · F·Q·NW;
    * ``At``, the gathered tiles: F·NT·RT·WX·KT = F·NW·RT·WX·ND·NE;
    * the gather index and its masked copy (int64): 2 · F·NT·RT·WX·ND·NE.

    So ``8·(2·F·Q·NW + F·NW·RT·WX·ND·NE + 2·F·NT·RT·WX·ND·NE)`` bytes, with every
    dimension the largest over ``patches`` (the whole bundle: an upper bound for any chunk
    of it). At Case B geometry (F 7, NW 75, Q 105·18, RT 32, ND 3, NE 3, NT 5) that is
    40.6 MB per patch; the peak measured with ``tracemalloc`` around ``_solve_chunk``
    (numpy, Case B bundle 0) is 38.2–38.4 MB per patch for 1, 5 and 20 patches per chunk
    (``tests/test_extract_paths.py::test_chunk_memory_model``). Everything else of a chunk
    (window pixels, normal matrices, the solve, the diagnostics) is smaller and is freed
    before or allocated after.

    Backends: host only (NumPy; integers from the patch geometry).
    """
    from .layout import chunk_layout

    win = window_layout(patches, b0, kmin, xc, yc, nxs)
    lay = chunk_layout(patches, b0, kmin, NW=win.NW)
    _, RT, E = _tile_rows(lay, win, nys)
    F, NW, NT, ND, NE = lay.F, lay.NW, win.NT, win.ND, 2 * E + 1
    tile = F * NT * RT * win.WX * ND * NE
    return 8 * (2 * F * win.Q * NW + tile * win.T + 2 * tile)


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


def window_pixels(ctx, rows0, cols0, nrow, ncol, rowmax, bx0, bx1):
    """Gather image and ivar into windows (host-int origins ``rows0``/``cols0``).

    ``rows0``, ``cols0``: (nwin,) CCD row/column of each window's pixel (0, 0);
    ``rowmax``: (nwin,) last CCD row (exclusive) of the box; ``bx0``/``bx1``: box
    columns. Pixels outside the box or the image get ivar 0. Returns (nwin, nrow*ncol)
    device arrays (pix, ivar).

    Backends: numpy, cupy.
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


def _box(lay):
    b = lay.boxes
    return b[:, 0], b[:, 1], b[:, 2], b[:, 3] - b[:, 2]


@nvtx_range("extract:projection")
def own_windows(ctx, lay, win: WindowLayout, stamps):
    """``A0`` (P, F, Q, NW) and the window pixels ``Pw`` and weights ``Ww`` (P, F, Q).

    Backends: numpy, cupy.
    """
    xp = ctx.xp
    P, F, NW, WY, WX = lay.P, lay.F, lay.NW, win.WY, win.WX
    bx0, bx1, by0, bh = _box(lay)
    fI = np.arange(F)[None, :, None]
    jI = np.arange(NW)[None, None, :]
    pidx = np.arange(P)[:, None, None]
    xw = win.xw[:, :, None]
    A0 = _scatter(xp, stamps, win.sf, win.sk, lay.valid, pidx * F + fI + 0 * jI,
                  jI + 0 * fI + 0 * pidx, win.ycs, win.xcs - xw, np.zeros_like(win.ycs),
                  bh[:, None, None] + 0 * win.ycs, bx0[:, None, None] - xw + 0 * jI,
                  bx1[:, None, None] - xw + 0 * jI, P * F, WY, WX, NW)
    Pw, Ww = window_pixels(ctx, np.repeat(by0, F), win.xw.reshape(-1), WY, WX,
                           np.repeat(by0 + bh, F), np.repeat(bx0, F), np.repeat(bx1, F))
    return A0.reshape(P, F, win.Q, NW), Pw.reshape(P, F, win.Q), Ww.reshape(P, F, win.Q)


def rhs(A0, Pw, Ww):
    """``b = AᵀWp`` and the weights ``Σ W·A_j`` per unknown, (P, F, NW) each.

    Backends: numpy, cupy.
    """
    xp = _xp(A0)
    AW = A0 * Ww[..., None]                                            # (P,F,Q,NW)
    bvec = xp.matmul(xp.swapaxes(AW, -1, -2), Pw[..., None])[..., 0]
    return bvec, AW.sum(axis=2)


def _xp(a):
    from ..backend import get_array_module

    return get_array_module(a)


def _tile_rows(lay, win: WindowLayout, nys: int):
    """First box row ``ry`` (P, F, NT) and height RT of each tile's window, and the tile
    reach E (tiles t−E … t+E of fibers f … f+ND−1 whose stamps reach tile t's rows)."""
    P, F, NW, NT, T = lay.P, lay.F, lay.NW, win.NT, win.T
    okfj, ycs, nf = lay.valid, win.ycs, lay.nf
    big = np.iinfo(np.int64).max
    ycT = np.where(okfj, ycs, big).reshape(P, F, NT, T)
    ry = np.maximum(np.where(ycT.min(axis=-1) == big, 0, ycT.min(axis=-1)), 0)
    ycT2 = np.where(okfj, ycs, np.iinfo(np.int64).min).reshape(P, F, NT, T)
    RT = min(int(max(1, (ycT2.max(axis=-1) - ry).max() + nys)), win.WY)
    fI = np.arange(F)[None, :, None]
    jI = np.arange(NW)[None, None, :]
    # tiles without unknowns (a short patch padded to the chunk's NW) reach nothing
    tile_ok = okfj.reshape(P, F, NT, T).any(axis=-1)                   # (P,F,NT)
    E = 0
    for d in range(win.ND):
        g = fI + d
        okg = (g < nf[:, None, None])
        gl = np.minimum(g, F - 1)
        ycg = np.take_along_axis(np.where(okfj, ycs, -10 ** 9),
                                 np.broadcast_to(gl, (P, F, NW)), axis=1)     # (P,F,NW)
        ycg = np.where(okg & okfj[np.arange(P)[:, None, None], gl, jI], ycg, -10 ** 9)
        for t in range(NT):
            top = ry[:, :, t][..., None]
            hit = ((ycg + nys > top) & (ycg < top + RT) & (ycg > -10 ** 8)
                   & tile_ok[:, :, t][..., None])
            if np.any(hit):
                ts = np.nonzero(hit.any(axis=(0, 1)))[0] // T
                E = max(E, int(abs(ts.min() - t)), int(abs(ts.max() - t)))
    return ry, RT, E


@nvtx_range("extract:projection_tiled_gather")
def _tile_gather(ctx, lay, win: WindowLayout, A0, ry, RT, E):
    """``At`` (P·F·NT, RT·WX, KT) gathered from ``A0``, and the tile weights ``Wt``."""
    xp = ctx.xp
    P, F, NT, T, WY, WX, ND = lay.P, lay.F, win.NT, win.T, win.WY, win.WX, win.ND
    NE = 2 * E + 1
    KT = ND * NE * T
    xw, nf = win.xw, lay.nf
    bx0, bx1, by0, bh = _box(lay)
    # At[(p,f,t), (y,u), (d,e,q)] = own-window A0 of fiber g=f+d at box row ry+y,
    # CCD column xw[f]+u, wavelength (t+e)*T+q: a gather of T-long rows of A0
    # (zero outside g's window / the tiles / the fibers)
    gI = np.arange(F)[None, :, None] + np.arange(ND)[None, None, :]                # (1,F,ND)
    gok = gI < nf[:, None, None]                                                    # (P,F,ND)
    gcl = np.minimum(gI, F - 1)
    xwg = np.take_along_axis(xw, np.broadcast_to(gcl, (P, F, ND)).reshape(P, -1),
                             axis=1).reshape(P, F, ND)
    cshift = xw[:, :, None] - xwg                                                   # (P,F,ND)
    pgbase = np.where(gok, (np.arange(P)[:, None, None] * F + gcl) * WY, -1)        # (P,F,ND)
    tt = np.arange(NT)[:, None] + np.arange(-E, E + 1)[None, :]                     # (NT,NE)
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
    At = A0r[rowsel.reshape(-1)].reshape(P * F * NT, RT * WX, KT)
    _, Wt = window_pixels(ctx, (by0[:, None, None] + ry).reshape(-1),
                          np.repeat(xw.reshape(-1), NT), RT, WX,
                          np.repeat(by0 + bh, F * NT), np.repeat(bx0, F * NT),
                          np.repeat(bx1, F * NT))
    return At, Wt, KT


@nvtx_range("extract:normal")
def tiled_normal(ctx, lay, win: WindowLayout, A0, nys: int):
    """``M = AᵀWA`` (P, n, n), fiber order, from tiled batched products of the windows.

    Backends: numpy, cupy.
    """
    xp = ctx.xp
    P, F, n, T, NT = lay.P, lay.F, lay.n, win.T, win.NT
    with nvtx_range("extract:projection_tiles"):
        ry, RT, E = _tile_rows(lay, win, nys)
    At, Wt, KT = _tile_gather(ctx, lay, win, A0, ry, RT, E)
    own = At[:, :, E * T:(E + 1) * T] * Wt[..., None]          # (P*F*NT, RT*WX, T)
    Mb = xp.matmul(xp.swapaxes(own, -1, -2), At)                # (P*F*NT, T, KT)
    rows_i, cols_i, src_i = _assembly_index(F, NT, T, win.ND, E, KT)
    M = xp.zeros((P, n * n))
    Mbf = Mb.reshape(P, F * NT * T * KT)
    M[:, xp.asarray(rows_i * n + cols_i)] = Mbf[:, xp.asarray(src_i)]
    M[:, xp.asarray(cols_i * n + rows_i)] = Mbf[:, xp.asarray(src_i)]
    return M.reshape(P, n, n)


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


def _window_model(lay, win: WindowLayout, A0, x3):
    """Own-window models ``m_own`` (P, F, Q) and the full model in each fiber's window
    (own + the neighbours' own-window models that reach it)."""
    xp = _xp(A0)
    P, F, Q, WY, WX, ND = lay.P, lay.F, win.Q, win.WY, win.WX, win.ND
    xw, nf = win.xw, lay.nf
    yw = xp.arange(WY)[:, None]
    uw = xp.arange(WX)[None, :]
    m_own = xp.matmul(A0, x3[..., None])[..., 0]                    # (P,F,Q)
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
    return m_own, mext[idx2].sum(axis=2).reshape(P, F, Q)


def _box_model(lay, win: WindowLayout, m_own):
    """Model over each patch box (P, WY, BW): the sum of the fibers' own-window models."""
    xp = _xp(m_own)
    P, F, WY, WX = lay.P, lay.F, win.WY, win.WX
    bx0, bx1, _, bh = _box(lay)
    yw = xp.arange(WY)[:, None]
    uw = xp.arange(WX)[None, :]
    BW = int(max(bx1 - bx0))
    bsize = P * WY * BW
    box = xp.zeros(bsize + 1)
    for f in range(F):
        colb = xp.asarray(win.xw[:, f] - bx0)[:, None, None] + uw       # (P,1,WX)
        okb = ((colb >= 0) & (colb < xp.asarray(bx1 - bx0)[:, None, None])
               & (yw < xp.asarray(bh)[:, None, None]) & xp.asarray(f < lay.nf)[:, None, None])
        idxb = (xp.arange(P)[:, None, None] * WY + yw) * BW + colb
        idxb = xp.where(okb, idxb, bsize).reshape(-1)
        box[idxb] += m_own[:, f].reshape(-1)
    return box[:bsize].reshape(P, WY, BW)


@nvtx_range("extract:chi2")
def diagnostics(ctx, lay, win: WindowLayout, A0, Pw, Ww, x3):
    """Pixel χ², chi2pix and the masked fraction per unknown (P, F, NW), and the box
    model (P, WY, BW) when ``ctx.model``, from the deconvolved flux ``x3`` (P, F, NW).

    Backends: numpy, cupy.
    """
    xp = ctx.xp
    m_own, mwin = _window_model(lay, win, A0, x3)
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
    boxmodel = _box_model(lay, win, m_own) if ctx.model else None
    return chi2pix, pixmask, boxmodel
