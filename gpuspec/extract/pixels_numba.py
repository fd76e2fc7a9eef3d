"""Numba kernel of :mod:`gpuspec.extract.pixels_cpu` (imported only when it is used).

At module level, as :mod:`gpuspec.extract.normal_numba`: Numba's on-disk cache
(``cache=True``) then serves every new process, whatever the kernel comes to call.

Backends: host only (Numba, CPU).
"""

from numba import njit

__all__ = ["kernel"]


@njit(cache=True, nogil=True)
def kernel(stamps, xc, yc, image, ivar, x0, y0, fb0, nf, k0, nw, boxes, x3, psferr,
           chi2pix, pixmask, boxm, bufm, bufc, bufg, buft):
    """chi2pix, masked fraction and the box model of each patch (``pixels_cpu.diagnostics``).

    Backends: host only (Numba)."""
    P = fb0.shape[0]
    nys = stamps.shape[2]
    nxs = stamps.shape[3]
    for p in range(P):
        bx0, bx1, by0, by1 = boxes[p, 0], boxes[p, 1], boxes[p, 2], boxes[p, 3]
        bh = by1 - by0
        bw = bx1 - bx0
        for y in range(bh):
            for x in range(bw):
                bufm[y, x] = 0.0
        # model of the box: every spot times its deconvolved flux
        for f in range(nf[p]):
            fa = fb0[p] + f
            for j in range(nw[p]):
                ka = k0[p] + j
                v = x3[p, f, j]
                ya = yc[fa, ka]
                xa = xc[fa, ka]
                for yy in range(max(0, by0 - ya), min(nys, by1 - ya)):
                    for xx in range(max(0, bx0 - xa), min(nxs, bx1 - xa)):
                        bufm[ya + yy - by0, xa + xx - bx0] += stamps[fa, ka, yy, xx] * v
        # pixel chi2 with the PSF error term; weights W > 0 and tot > 0
        for y in range(bh):
            for x in range(bw):
                w = ivar[by0 + y - y0, bx0 + x - x0]
                if w > 0:
                    m = bufm[y, x]
                    tot = 1.0 / ((m * psferr + 1e-32) ** 2 + 1.0 / w)
                    d = image[by0 + y - y0, bx0 + x - x0] - m
                    bufc[y, x] = d * d * tot
                    bufg[y, x] = 1.0
                    buft[y, x] = 1.0 if tot > 0 else 0.0
                else:
                    bufc[y, x] = 0.0
                    bufg[y, x] = 0.0
                    buft[y, x] = 0.0
        # per unknown: stamp-weighted sums over its stamp inside the box
        for f in range(nf[p]):
            fa = fb0[p] + f
            for j in range(nw[p]):
                ka = k0[p] + j
                ya = yc[fa, ka]
                xa = xc[fa, ka]
                num = 0.0
                psfw = 0.0
                good = 0.0
                for yy in range(max(0, by0 - ya), min(nys, by1 - ya)):
                    for xx in range(max(0, bx0 - xa), min(nxs, bx1 - xa)):
                        s = stamps[fa, ka, yy, xx]
                        y = ya + yy - by0
                        x = xa + xx - bx0
                        num += s * bufc[y, x]
                        psfw += s * buft[y, x]
                        good += s * bufg[y, x]
                chi2pix[p, f, j] = 0.0 if psfw == 0 else num / psfw
                pixmask[p, f, j] = 1.0 - good
        if boxm.shape[0] == P:
            for y in range(bh):
                for x in range(bw):
                    boxm[p, y, x] = bufm[y, x]
