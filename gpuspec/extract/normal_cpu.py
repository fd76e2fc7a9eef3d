"""CPU (Numba) twin of the normal-matrix assembly ``M = AᵀWA``.

The array path (:mod:`gpuspec.extract.core`, numpy and cupy) builds dense tiled
projection arrays and multiplies them. That suits a GPU, but on a CPU it streams
~25 MB per patch through memory for products that are mostly zeros. This kernel
computes the same entries directly from the spot stamps: for every pair of spots
that overlap inside the patch box, ``Σ_pixels S_a·W·S_b``. It does no allocation
and is about 5× cheaper.

Used for the numpy backend when numba is importable (``GPUSPEC_EXTRACT_NUMBA=0``
turns it off). ``tests/test_extract.py::test_numba_normal_matches_array_path``
checks it against the array path.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["available", "normal_matrices"]

_kernel = None


def available() -> bool:
    """True when numba imports and ``GPUSPEC_EXTRACT_NUMBA`` is not 0/false.

    Backends: host only.
    """
    if os.environ.get("GPUSPEC_EXTRACT_NUMBA", "1").strip().lower() in ("0", "false", "no"):
        return False
    try:
        import numba  # noqa: F401
    except Exception:
        return False
    return True


def _get_kernel():
    global _kernel
    if _kernel is None:
        from numba import njit

        @njit(cache=True, nogil=True)
        def weighted_stamps(stamps, xc, yc, ivar, image, x0, y0, fa0, nf, ka0, nw, box, SW,
                            bvec, fw):
            """SW[f, j] = stamp · ivar inside the box (0 outside); b and Σ SW per spot."""
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
                    sb = 0.0
                    sw = 0.0
                    for yy in range(nys):
                        y = ya + yy
                        for xx in range(nxs):
                            x = xa + xx
                            w = 0.0
                            if ylo_b <= y < yhi_b and xlo_b <= x < xhi_b:
                                w = stamps[fa, ka, yy, xx] * ivar[y - y0, x - x0]
                                sb += w * image[y - y0, x - x0]
                                sw += w
                            SW[f, j, yy, xx] = w
                    bvec[f, j] = sb
                    fw[f, j] = sw

        @njit(cache=True, nogil=True)
        def kernel(stamps, xc, yc, ivar, image, x0, y0, fb0, nf, k0, nw, boxes, pos, NW, D,
                   M, bvec, fw, SW):
            P = fb0.shape[0]
            lo = np.zeros(pos.shape[1], dtype=np.int64)
            nys = stamps.shape[2]
            nxs = stamps.shape[3]
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
                                # SW is 0 outside the box: the overlap of the two stamps,
                                # cut to the box rows, is enough
                                ylo = max(max(ya, yb), ylo_b)
                                yhi = min(min(ya, yb) + nys, yhi_b)
                                xlo = max(xa, xb)
                                xhi = min(xa, xb) + nxs
                                s = 0.0
                                for y in range(ylo, yhi):
                                    for x in range(xlo, xhi):
                                        s += SW[f, j, y - ya, x - xa] * stamps[fg, kb, y - yb, x - xb]
                                ib = pos[p, g] * NW + l
                                M[p, ia, ib] = s
                                M[p, ib, ia] = s
        _kernel = kernel
    return _kernel


def normal_matrices(stamps, xc, yc, ivar, image, x0, y0, lay):
    """``M = AᵀWA`` in slot order, ``b = AᵀWp`` and ``Σ W·A_j`` for a chunk (host only).

    Parameters
    ----------
    stamps : float64 (nfib, nwave_ext, ny, nx)
        Spots of the bundle on its padded wavelength grid.
    xc, yc : int64 (nfib, nwave_ext)
        CCD corners of the stamps.
    ivar, image : float64 (ny_img, nx_img)
        Pixel weights and pixels of the image, whose pixel (0, 0) is CCD (x0, y0).
    lay : gpuspec.extract.layout.ChunkLayout
        Patches of the chunk: first fiber (row of ``stamps``), fibers, first wavelength
        index, wavelengths, boxes, and the slot of each fiber (``lay.pos``).

    Returns
    -------
    M : float64 (P, n, n)
        ``M[p, s·NW + j, s'·NW + l]`` for the fibers in slots s, s' (slot order,
        :mod:`gpuspec.extract.layout`).
    bvec, fw : float64 (P, F, NW)
        ``Σ A_j W p`` and ``Σ A_j W`` over the box, fiber order.

    Backends: numpy (Numba).
    """
    P, F, NW = lay.P, lay.F, lay.NW
    M = np.zeros((P, F * NW, F * NW))
    bvec = np.zeros((P, F, NW))
    fw = np.zeros((P, F, NW))
    SW = np.empty((F, NW) + tuple(stamps.shape[-2:]))
    _get_kernel()(np.ascontiguousarray(stamps, dtype=np.float64),
                  np.ascontiguousarray(xc, dtype=np.int64),
                  np.ascontiguousarray(yc, dtype=np.int64),
                  np.ascontiguousarray(ivar, dtype=np.float64),
                  np.ascontiguousarray(image, dtype=np.float64), int(x0), int(y0),
                  np.asarray(lay.fb0, np.int64), np.asarray(lay.nf, np.int64),
                  np.asarray(lay.k0, np.int64), np.asarray(lay.nw, np.int64),
                  np.ascontiguousarray(lay.boxes, dtype=np.int64),
                  np.ascontiguousarray(lay.pos, dtype=np.int64), int(NW), int(F - 1),
                  M, bvec, fw, SW)
    return M, bvec, fw
