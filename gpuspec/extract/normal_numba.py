"""Numba kernels of :mod:`gpuspec.extract.normal_cpu` (imported only when they are used).

They live at module level, not in a closure: Numba's on-disk cache (``cache=True``)
keys a closure by the objects it captures, and a captured dispatcher differs in every
process, so a closure kernel compiled again in every task process. Here ``kernel``
calls ``weighted_stamps`` as a global and both are compiled once per installation.

Indices. Inside the pixel loops every index is an unsigned integer (``uint64``) from a
base offset known to be non-negative. With signed indices Numba wraps negative ones
around (``a[-1]`` is the last element), a test and an add per access that keeps LLVM
from vectorising the loops: measured 2026-12-02 on the 15 chunks of bundle 0 of the
r0 PSF, the same loops with signed and unsigned indices took 0.255 and 0.18 s per
bundle (results identical to rounding).

Backends: host only (Numba, CPU).
"""

import numpy as np
from numba import njit, uint64

__all__ = ["weighted_stamps", "kernel"]


@njit(cache=True, nogil=True)
def weighted_stamps(stamps, xc, yc, ivar, image, x0, y0, fa0, nf, ka0, nw, box, SW,
                    bvec, fw):
    """SW[f, j] = stamp · ivar inside the box (0 outside); b and Σ SW per spot.

    Backends: host only (Numba)."""
    nys = stamps.shape[2]
    nxs = stamps.shape[3]
    ylo_b = max(box[2], y0)
    yhi_b = min(box[3], y0 + ivar.shape[0])
    xlo_b = max(box[0], x0)
    xhi_b = min(box[1], x0 + ivar.shape[1])
    for f in range(nf):
        fa = fa0 + f
        for j in range(nw):
            ka = ka0 + j
            xa = xc[fa, ka]
            ya = yc[fa, ka]
            out = SW[f, j]
            st = stamps[fa, ka]
            # the stamp's rows [r0, r1) and columns [c0, c1) inside the box and the image
            r0 = min(max(ylo_b - ya, 0), nys)
            r1 = max(min(yhi_b - ya, nys), r0)
            c0 = min(max(xlo_b - xa, 0), nxs)
            c1 = max(min(xhi_b - xa, nxs), c0)
            uc0 = uint64(c0)
            sb = 0.0
            sw = 0.0
            for yy in range(nys):
                row = out[yy]
                if yy < r0 or yy >= r1:
                    row[:] = 0.0
                    continue
                srow = st[yy]
                iv = ivar[ya + yy - y0]                 # inside the image: >= 0
                im = image[ya + yy - y0]
                off = uint64(xa - x0 + c0)
                row[:c0] = 0.0
                for i in range(uint64(c1 - c0)):
                    w = srow[uc0 + i] * iv[off + i]
                    row[uc0 + i] = w
                    sb += w * im[off + i]
                    sw += w
                row[c1:] = 0.0
            bvec[f, j] = sb
            fw[f, j] = sw

#: The overlap sums may be reassociated and fused (multiply-add): LLVM then keeps
#: several partial sums instead of one serial chain (about 15% off the kernel, measured
#: 2026-12-02 on bundle 0 of the r0 PSF; results move at the 1e-15 level). No other
#: fast-math flag: NaN and inf keep their IEEE meaning.
_FASTMATH = {"reassoc", "contract"}


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def kernel(stamps, xc, yc, ivar, image, x0, y0, fb0, nf, k0, nw, boxes, pos, NW, D,
           M, bvec, fw, SW, coupled):
    """M, b and Σ W·A of each patch (``normal_cpu.normal_matrices``); ``coupled[p, f, g]``
    is set to 1 for each pair of fibers (fiber order) with a pair of overlapping spots,
    the blocks of M that may be nonzero.

    Backends: host only (Numba)."""
    P = fb0.shape[0]
    lo = np.zeros(pos.shape[1], dtype=np.int64)
    nys = stamps.shape[2]
    nxs = stamps.shape[3]
    nwa = stamps.shape[1]
    nwsw = SW.shape[1]
    # flat views: a pair's overlap is read from base offsets (unsigned, see the module)
    Sf = stamps.reshape(stamps.size)
    Wf = SW.reshape(SW.size)
    unx = uint64(nxs)
    for p in range(P):
        weighted_stamps(stamps, xc, yc, ivar, image, x0, y0, fb0[p], nf[p], k0[p],
                        nw[p], boxes[p], SW, bvec[p], fw[p])
        ylo_b = boxes[p, 2]
        yhi_b = boxes[p, 3]
        # stamp rows increase with wavelength along each trace (DESI): then the
        # partners of spot (f, j) in fiber g are a window of l that moves with j
        mono = True
        for g in range(nf[p]):
            for l in range(1, nw[p]):
                if yc[fb0[p] + g, k0[p] + l] < yc[fb0[p] + g, k0[p] + l - 1]:
                    mono = False
        for f in range(nf[p]):
            fa = fb0[p] + f
            for g in range(nf[p]):
                lo[g] = 0
            for j in range(nw[p]):
                ka = k0[p] + j
                xa = xc[fa, ka]
                ya = yc[fa, ka]
                ia = pos[p, f] * NW + j
                gmax = min(f + D + 1, nf[p])
                for g in range(f, gmax):
                    fg = fb0[p] + g
                    if mono:
                        while lo[g] < nw[p] and yc[fg, k0[p] + lo[g]] + nys <= ya:
                            lo[g] += 1
                    lstart = j if g == f else lo[g]
                    for l in range(lstart, nw[p]):
                        kb = k0[p] + l
                        yb = yc[fg, kb]
                        if yb >= ya + nys:
                            if mono:
                                break
                            continue
                        if yb + nys <= ya:
                            continue
                        xb = xc[fg, kb]
                        if xb >= xa + nxs or xb + nxs <= xa:
                            continue
                        coupled[p, f, g] = 1
                        coupled[p, g, f] = 1
                        # SW is 0 outside the box: the overlap of the two stamps,
                        # cut to the box rows, is enough
                        ylo = max(max(ya, yb), ylo_b)
                        yhi = min(min(ya, yb) + nys, yhi_b)
                        xlo = max(xa, xb)
                        xhi = min(xa, xb) + nxs
                        ia0 = uint64(((f * nwsw + j) * nys + ylo - ya) * nxs + xlo - xa)
                        ib0 = uint64(((fg * nwa + kb) * nys + ylo - yb) * nxs + xlo - xb)
                        wdt = uint64(xhi - xlo)
                        nr = uint64(max(yhi - ylo, 0))        # the box may cut them all
                        s = 0.0
                        if wdt == unx:
                            # same columns: the overlapping rows are one run in both
                            for i in range(nr * unx):
                                s += Wf[ia0 + i] * Sf[ib0 + i]
                        else:
                            for r in range(nr):
                                oa = ia0 + r * unx
                                ob = ib0 + r * unx
                                for i in range(wdt):
                                    s += Wf[oa + i] * Sf[ob + i]
                        ib = pos[p, g] * NW + l
                        M[p, ia, ib] = s
                        M[p, ib, ia] = s
