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

import numpy as np

from ..backend import numba_twins_enabled

__all__ = ["available", "normal_matrices", "warm"]

_kernel = None


def available() -> bool:
    """True when numba imports and ``GPUSPEC_EXTRACT_NUMBA`` is not 0/false.

    Backends: host only.
    """
    return numba_twins_enabled("GPUSPEC_EXTRACT_NUMBA")


def _get_kernel():
    global _kernel
    if _kernel is None:
        from .normal_numba import kernel

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
    coupled : bool (P, F, F)
        Pairs of fibers (fiber order) with overlapping spots: every other block of
        ``M`` is exactly zero (the diagonal blocks are always set).
        :func:`gpuspec.extract.blocksolve.solve_tail_blocks` factorises over it.

    Backends: numpy (Numba).
    """
    P, F, NW = lay.P, lay.F, lay.NW
    M = np.zeros((P, F * NW, F * NW))
    bvec = np.zeros((P, F, NW))
    fw = np.zeros((P, F, NW))
    SW = np.empty((F, NW) + tuple(stamps.shape[-2:]))
    coupled = np.zeros((P, F, F), dtype=np.uint8)
    xc, yc = _checked_args(stamps, xc, yc, lay.fb0, lay.nf, lay.k0, lay.nw, lay.boxes, NW, F)
    _get_kernel()(np.ascontiguousarray(stamps, dtype=np.float64), xc, yc,
                  np.ascontiguousarray(ivar, dtype=np.float64),
                  np.ascontiguousarray(image, dtype=np.float64), int(x0), int(y0),
                  np.asarray(lay.fb0, np.int64), np.asarray(lay.nf, np.int64),
                  np.asarray(lay.k0, np.int64), np.asarray(lay.nw, np.int64),
                  np.ascontiguousarray(lay.boxes, dtype=np.int64),
                  np.ascontiguousarray(lay.pos, dtype=np.int64), int(NW), int(F - 1),
                  M, bvec, fw, SW, coupled)
    coupled[:, np.arange(F), np.arange(F)] = 1
    return M, bvec, fw, coupled.view(bool)


def warm() -> None:
    """Compile the kernel (or load it from Numba's cache) in this process, on an empty chunk.

    Forked bundle workers (:func:`gpuspec.extract.core._extract_parallel`) then inherit
    the compiled code; otherwise every worker of every call loads it again from the disk
    cache, or compiles it (measured on Case B: ~0.2 CPU-s per worker and call, against
    0.3 s of extraction).

    Backends: host only.
    """
    from .layout import empty_layout

    one = np.zeros((1, 1))
    corner = np.zeros((1, 1), dtype=np.int64)
    normal_matrices(np.zeros((1, 1, 1, 1)), corner, corner, one, one, 0, 0, empty_layout())


#: Stamp corners are clipped to +-2**40 before the kernel: the pixel loops are then
#: ranges between values of that size, which never overflow int64 (a NaN trace casts
#: to -2**63, and ``range(113, -2**63 + 17)`` would wrap to a huge count).
CORNER_BOUND = 2 ** 40


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
    xc = np.clip(np.asarray(xc, dtype=np.int64), -CORNER_BOUND, CORNER_BOUND)
    yc = np.clip(np.asarray(yc, dtype=np.int64), -CORNER_BOUND, CORNER_BOUND)
    return np.ascontiguousarray(xc), np.ascontiguousarray(yc)
