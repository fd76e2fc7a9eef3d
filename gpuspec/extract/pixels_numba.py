"""Numba kernel of :mod:`gpuspec.extract.pixels_cpu` (imported only when it is used).

At module level, as :mod:`gpuspec.extract.normal_numba`: Numba's on-disk cache
(``cache=True``) then serves every new process, whatever the kernel comes to call.

Every index in the pixel loops is unsigned, from a non-negative base offset (see
:mod:`gpuspec.extract.normal_numba`: Numba's wrap-around of negative signed indices
keeps LLVM from vectorising).

Backends: host only (Numba, CPU).
"""

from numba import njit, uint64

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
        ubw = uint64(bw)
        ix = uint64(bx0 - x0)                       # the box lies inside the image
        bufm[:bh, :bw] = 0.0
        # model of the box: every spot times its deconvolved flux
        for f in range(nf[p]):
            fa = fb0[p] + f
            for j in range(nw[p]):
                ka = k0[p] + j
                v = x3[p, f, j]
                ya = yc[fa, ka]
                xa = xc[fa, ka]
                c0 = max(0, bx0 - xa)
                c1 = min(nxs, bx1 - xa)
                if c1 <= c0:
                    continue
                uc0 = uint64(c0)
                off = uint64(xa + c0 - bx0)
                st = stamps[fa, ka]
                for yy in range(max(0, by0 - ya), min(nys, by1 - ya)):
                    dst = bufm[ya + yy - by0]
                    src = st[yy]
                    for i in range(uint64(c1 - c0)):
                        dst[off + i] += src[uc0 + i] * v
        # pixel chi2 with the PSF error term; weights W > 0 and tot > 0
        for y in range(bh):
            iv = ivar[by0 + y - y0]
            im = image[by0 + y - y0]
            m_ = bufm[y]
            c_ = bufc[y]
            g_ = bufg[y]
            t_ = buft[y]
            for x in range(ubw):
                w = iv[ix + x]
                if w > 0:
                    m = m_[x]
                    tot = 1.0 / ((m * psferr + 1e-32) ** 2 + 1.0 / w)
                    d = im[ix + x] - m
                    c_[x] = d * d * tot
                    g_[x] = 1.0
                    t_[x] = 1.0 if tot > 0 else 0.0
                else:
                    c_[x] = 0.0
                    g_[x] = 0.0
                    t_[x] = 0.0
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
                c0 = max(0, bx0 - xa)
                c1 = min(nxs, bx1 - xa)
                if c1 > c0:
                    uc0 = uint64(c0)
                    off = uint64(xa + c0 - bx0)
                    st = stamps[fa, ka]
                    for yy in range(max(0, by0 - ya), min(nys, by1 - ya)):
                        s_ = st[yy]
                        y = ya + yy - by0
                        c_ = bufc[y]
                        g_ = bufg[y]
                        t_ = buft[y]
                        for i in range(uint64(c1 - c0)):
                            s = s_[uc0 + i]
                            num += s * c_[off + i]
                            psfw += s * t_[off + i]
                            good += s * g_[off + i]
                chi2pix[p, f, j] = 0.0 if psfw == 0 else num / psfw
                pixmask[p, f, j] = 1.0 - good
        if boxm.shape[0] == P:
            boxm[p, :bh, :bw] = bufm[:bh, :bw]
