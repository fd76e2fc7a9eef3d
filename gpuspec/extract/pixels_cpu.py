"""CPU (Numba) twin of the array path's diagnostics: model, pixel χ², chi2pix, masked
fraction and the box model, computed from the spot stamps over each patch box.

The array path (:func:`gpuspec.extract.windows.diagnostics`) multiplies dense window
arrays ``A0`` (P, F, Q, NW) — ~7 MB per patch at DESI geometry, mostly zeros — four
times. Here each spot touches only its own stamp (11 × 17 pixels): the model of the
box is accumulated spot by spot, χ² is evaluated once per box pixel, and each
unknown's sums run over its stamp. The numbers are those of the array path (same
formulas; sums in another order, differences ~1e-16 relative);
``tests/test_extract_paths.py`` compares the two.

Used with :mod:`gpuspec.extract.normal_cpu` on the numpy backend when numba imports.
"""

from __future__ import annotations

import numpy as np

__all__ = ["diagnostics"]

_kernel = None


def _get_kernel():
    global _kernel
    if _kernel is None:
        from numba import njit

        @njit(cache=True, nogil=True)
        def kernel(stamps, xc, yc, image, ivar, x0, y0, fb0, nf, k0, nw, boxes, x3, psferr,
                   chi2pix, pixmask, boxm, bufm, bufc, bufg, buft):
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
        _kernel = kernel
    return _kernel


def diagnostics(stamps, xc, yc, image, ivar, x0, y0, lay, x3, psferr, model):
    """chi2pix and masked fraction per unknown, and the box model (host only).

    Parameters
    ----------
    stamps, xc, yc
        Spots of the bundle and their CCD corners (see
        :func:`gpuspec.extract.normal_cpu.normal_matrices`).
    image, ivar : float64 (ny_img, nx_img)
        Pixels and weights; image pixel (0, 0) is CCD (x0, y0). Boxes lie inside it.
    lay : gpuspec.extract.layout.ChunkLayout
    x3 : float64 (P, F, NW)
        Deconvolved flux, fiber order.
    psferr : float
        Fractional PSF error of the χ² denominator ``1/W + (psferr·m)²``.
    model : bool
        Also return the box model.

    Returns
    -------
    chi2pix, pixmask : float64 (P, F, NW)
        ``Σ A_j χ² / Σ_{W>0} A_j`` and ``1 − Σ_{W>0} A_j`` (padding entries: 0 and 1).
    boxmodel : float64 (P, max box height, max box width) or None
        ``A·x`` over each box (rows/columns beyond a smaller box are 0).

    Backends: numpy (Numba).
    """
    P, F, NW = lay.P, lay.F, lay.NW
    b = lay.boxes
    BH = int((b[:, 3] - b[:, 2]).max())
    BW = int((b[:, 1] - b[:, 0]).max())
    chi2pix = np.zeros((P, F, NW))
    pixmask = np.ones((P, F, NW))
    boxm = np.zeros((P, BH, BW)) if model else np.zeros((0, 1, 1))
    bufs = [np.empty((BH, BW)) for _ in range(4)]
    _get_kernel()(np.ascontiguousarray(stamps, dtype=np.float64),
                  np.ascontiguousarray(xc, dtype=np.int64),
                  np.ascontiguousarray(yc, dtype=np.int64),
                  np.ascontiguousarray(image, dtype=np.float64),
                  np.ascontiguousarray(ivar, dtype=np.float64), int(x0), int(y0),
                  np.asarray(lay.fb0, np.int64), np.asarray(lay.nf, np.int64),
                  np.asarray(lay.k0, np.int64), np.asarray(lay.nw, np.int64),
                  np.ascontiguousarray(b, dtype=np.int64),
                  np.ascontiguousarray(x3, dtype=np.float64), float(psferr),
                  chi2pix, pixmask, boxm, *bufs)
    return chi2pix, pixmask, (boxm if model else None)
