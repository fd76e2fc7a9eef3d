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
    """True when numba imports and ``GPUSPEC_EXTRACT_NUMBA`` is not 0/false."""
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
        def kernel(stamps, xc, yc, ivar, x0, y0, fb0, nf, k0, nw, bx0, bx1, by0, by1,
                   NW, D, M):
            P = fb0.shape[0]
            nys = stamps.shape[2]
            nxs = stamps.shape[3]
            nyi = ivar.shape[0]
            nxi = ivar.shape[1]
            for p in range(P):
                for f in range(nf[p]):
                    fa = fb0[p] + f
                    for j in range(nw[p]):
                        ka = k0[p] + j
                        xa = xc[fa, ka]
                        ya = yc[fa, ka]
                        ia = f * NW + j
                        gmax = min(f + D + 1, nf[p])
                        for g in range(f, gmax):
                            fg = fb0[p] + g
                            lstart = j if g == f else 0
                            for l in range(lstart, nw[p]):
                                kb = k0[p] + l
                                yb = yc[fg, kb]
                                if yb >= ya + nys or yb + nys <= ya:
                                    continue
                                xb = xc[fg, kb]
                                if xb >= xa + nxs or xb + nxs <= xa:
                                    continue
                                ylo = max(max(ya, yb), max(by0[p], y0))
                                yhi = min(min(ya, yb) + nys, min(by1[p], y0 + nyi))
                                xlo = max(max(xa, xb), max(bx0[p], x0))
                                xhi = min(min(xa, xb) + nxs, min(bx1[p], x0 + nxi))
                                s = 0.0
                                for y in range(ylo, yhi):
                                    for x in range(xlo, xhi):
                                        s += (stamps[fa, ka, y - ya, x - xa] * ivar[y - y0, x - x0]
                                              * stamps[fg, kb, y - yb, x - xb])
                                ib = g * NW + l
                                M[p, ia, ib] = s
                                M[p, ib, ia] = s
        _kernel = kernel
    return _kernel


def normal_matrices(stamps, xc, yc, ivar, x0, y0, fb0, nf, k0, nw, boxes, NW, D, F):
    """``M = AᵀWA`` for a chunk of patches (numpy arrays; host only).

    Parameters
    ----------
    stamps : float64 (nfib, nwave_ext, ny, nx)
        Spots of the bundle on its padded wavelength grid.
    xc, yc : int64 (nfib, nwave_ext)
        CCD corners of the stamps.
    ivar : float64 (ny_img, nx_img)
        Pixel weights of the image, whose pixel (0, 0) is CCD (x0, y0).
    fb0, nf, k0, nw : int64 (P,)
        Per patch: first fiber (row of ``stamps``), fibers, first wavelength index,
        wavelengths.
    boxes : int64 (P, 4)
        Pixel boxes (xlo, xhi, ylo, yhi) in CCD coordinates.
    NW, F : int
        Stride per fiber and fibers in the output layout ``M[p, f*NW + j, g*NW + l]``.
    D : int
        Largest fiber offset whose spots can overlap.

    Returns
    -------
    M : float64 (P, F*NW, F*NW)
    """
    P = len(fb0)
    M = np.zeros((P, F * NW, F * NW))
    b = np.asarray(boxes, dtype=np.int64)
    xc, yc = _checked_args(stamps, xc, yc, fb0, nf, k0, nw, b, NW, F)
    _get_kernel()(np.ascontiguousarray(stamps, dtype=np.float64),
                  xc, yc,
                  np.ascontiguousarray(ivar, dtype=np.float64), int(x0), int(y0),
                  np.asarray(fb0, np.int64), np.asarray(nf, np.int64),
                  np.asarray(k0, np.int64), np.asarray(nw, np.int64),
                  np.ascontiguousarray(b[:, 0]), np.ascontiguousarray(b[:, 1]),
                  np.ascontiguousarray(b[:, 2]), np.ascontiguousarray(b[:, 3]),
                  int(NW), int(D), M)
    return M


#: Stamp corners are clipped to +-2**40 before the kernel: the pixel loops are then
#: ranges between values of that size, which never overflow int64 (a NaN trace casts
#: to -2**63, and ``range(113, -2**63 + 17)`` would wrap to a huge count).
_CORNER_BOUND = 2 ** 40


def _checked_args(stamps, xc, yc, fb0, nf, k0, nw, boxes, NW, F):
    """Refuse indices outside the arrays; clip the corners; return (xc, yc) for the kernel.

    Every index the kernel computes is then inside its array: fibers
    ``fb0 + [0, nf)`` and wavelengths ``k0 + [0, nw)`` inside ``stamps``/``xc``/``yc``,
    ``nf <= F`` and ``nw <= NW`` inside ``M``, and pixel loops bounded by the stamp,
    the box and the image. Host only.
    """
    nfib, nwave = np.shape(stamps)[:2]
    fb0, nf, k0, nw = (np.asarray(a, dtype=np.int64) for a in (fb0, nf, k0, nw))
    if np.shape(xc) != (nfib, nwave) or np.shape(yc) != (nfib, nwave):
        raise ValueError(f"normal_matrices: corners {np.shape(xc)}/{np.shape(yc)} do not match "
                         f"the stamps {np.shape(stamps)}")
    if len({len(fb0), len(nf), len(k0), len(nw), len(boxes)}) != 1 or np.ndim(boxes) != 2:
        raise ValueError("normal_matrices: per-patch arrays of different lengths")
    if fb0.size and ((fb0 < 0).any() or (nf < 0).any() or (fb0 + nf > nfib).any()
                     or (k0 < 0).any() or (nw < 0).any() or (k0 + nw > nwave).any()
                     or (nf > F).any() or (nw > NW).any()):
        raise ValueError("normal_matrices: a patch's fibers or wavelengths fall outside the "
                         f"stamps ({nfib} x {nwave}) or the output layout ({F} x {NW})")
    xc = np.clip(np.asarray(xc, dtype=np.int64), -_CORNER_BOUND, _CORNER_BOUND)
    yc = np.clip(np.asarray(yc, dtype=np.int64), -_CORNER_BOUND, _CORNER_BOUND)
    return np.ascontiguousarray(xc), np.ascontiguousarray(yc)
