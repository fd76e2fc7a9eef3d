"""Host-side layout of a chunk of patches: its dimensions and the order of its unknowns.

A chunk is a batch of patches solved together (:func:`gpuspec.extract.core._solve_chunk`).
Patches of a chunk have different sizes; every array of the chunk is padded to the
largest one, and padding entries are flagged invalid. The dimension names below are used
throughout :mod:`gpuspec.extract` (their one definition):

======  =====================================================================
name    meaning
======  =====================================================================
P       patches in the chunk
F       fibers per patch (the largest patch's; the others padded)
NW0     wavelengths per fiber of the largest patch (core + ``nlo`` + ``nhi``)
NW      wavelengths per fiber in the layout: NW0 on the CPU twin, NT·T on the
        array path (padded to whole tiles)
n       unknowns per patch, F·NW
NK      kept fibers per patch (the largest count); they are solved last
f, g    fiber of a patch (0 … F−1, ``speclo + f`` in the bundle)
j, l    wavelength of a fiber's unknowns (0 … NW−1; bin ``kfirst + j``)
s       slot of a fiber in the solve order (kept fibers in the last NK slots)
nys,    rows and columns of a spot stamp (11 × 17 for DESI)
nxs
h       resolution half-width, ``ndiag`` (5 for DESI: 2h+1 = 11 diagonals)
======  =====================================================================

The array path (:mod:`gpuspec.extract.windows`) adds the window and tile dimensions
WY, WX, Q, ND, T, NT, RT, E, NE and KT, documented there.

Unknowns are stored *fiber-major*: unknown ``f·NW + j``. The normal matrices are solved
in *slot order* (``s·NW + j``): the fibers whose results are kept come last, so only
the trailing ``NK·NW`` block of the inverse Cholesky factor has to be formed
(:func:`gpuspec.extract.solve.solve_tail`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ChunkLayout", "chunk_layout", "empty_layout", "slot_order"]


def slot_order(keep) -> np.ndarray:
    """Fiber in each slot of the solve order: the not-kept fibers first, then the kept
    ones, each group in fiber order.

    Parameters
    ----------
    keep : bool array (..., F)

    Returns
    -------
    int64 array (..., F)

    Backends: host only (NumPy).
    """
    return np.argsort(np.asarray(keep, dtype=bool), axis=-1, kind="stable").astype(np.int64)


@dataclass
class ChunkLayout:
    """Dimensions and host index arrays of a chunk (see the module docstring).

    Attributes
    ----------
    P, F, NW, NK : int
    nf, nw, k0, fb0 : int64 (P,)
        Fibers, wavelengths, first wavelength index on the bundle's spot grid, first
        fiber (row of the bundle's spots) of each patch.
    boxes : int64 (P, 4)
        Pixel boxes (xlo, xhi, ylo, yhi), CCD coordinates.
    valid : bool (P, F, NW)
        Unknowns that exist (the others are padding).
    perm : int64 (P, F)
        Fiber in each slot of the solve order (kept fibers last, each group in fiber
        order); ``pos`` is its inverse (slot of each fiber).

    Backends: host only (NumPy).
    """

    P: int
    F: int
    NW: int
    NK: int
    nf: np.ndarray
    nw: np.ndarray
    k0: np.ndarray
    fb0: np.ndarray
    boxes: np.ndarray
    valid: np.ndarray
    perm: np.ndarray
    pos: np.ndarray

    @property
    def n(self) -> int:
        """Unknowns per patch, F·NW.

        Backends: host only (plain values).
        """
        return self.F * self.NW

    def order(self) -> np.ndarray:
        """(P, n) int64: the fiber-order unknown at each slot-order position.

        Backends: host only (NumPy).
        """
        j = np.arange(self.NW)
        return (self.perm[:, :, None] * self.NW + j).reshape(self.P, self.n)

    def kept_fibers(self) -> np.ndarray:
        """(P, NK) int64: the fiber in each of the last NK slots.

        Backends: host only (NumPy).
        """
        return self.perm[:, self.F - self.NK:]


def chunk_layout(patches, b0: int, kmin: int, NW: int | None = None) -> ChunkLayout:
    """Layout of a chunk of :class:`~gpuspec.extract.geometry.Patch` (host ints).

    Parameters
    ----------
    patches : list of Patch
    b0 : int
        First fiber of the bundle (row 0 of its spots).
    kmin : int
        Output-grid index of column 0 of the bundle's spot grid.
    NW : int, optional
        Wavelengths per fiber in the layout (default: the largest patch's).

    Backends: host only (NumPy).
    """
    P = len(patches)
    F = max(p.nspec for p in patches)
    nw = np.array([p.nwave for p in patches], dtype=np.int64)
    NW = int(nw.max()) if NW is None else int(NW)
    nf = np.array([p.nspec for p in patches], dtype=np.int64)
    keep = np.zeros((P, F), dtype=bool)
    for i, p in enumerate(patches):
        keep[i, :p.nspec] = p.keep
    perm = slot_order(keep)
    pos = np.argsort(perm, axis=1).astype(np.int64)
    valid = ((np.arange(F)[None, :, None] < nf[:, None, None])
             & (np.arange(NW)[None, None, :] < nw[:, None, None]))
    return ChunkLayout(
        P=P, F=F, NW=NW, NK=max(1, int(keep.sum(axis=1).max())), nf=nf, nw=nw,
        k0=np.array([p.kfirst - kmin for p in patches], dtype=np.int64),
        fb0=np.array([p.speclo - b0 for p in patches], dtype=np.int64),
        boxes=np.array([p.box for p in patches], dtype=np.int64).reshape(P, 4),
        valid=valid, perm=perm, pos=pos)


def empty_layout() -> ChunkLayout:
    """A chunk of one patch without fibers or wavelengths and a 1 × 1 box at (0, 0).

    The CPU twins run on it to compile (or load from Numba's cache) their kernels with
    the argument types of a real chunk, doing no work
    (:func:`gpuspec.extract.normal_cpu.warm`, :func:`gpuspec.extract.pixels_cpu.warm`).

    Backends: host only (NumPy).
    """
    z = np.zeros(1, dtype=np.int64)
    return ChunkLayout(P=1, F=1, NW=1, NK=1, nf=z.copy(), nw=z.copy(), k0=z.copy(),
                       fb0=z.copy(), boxes=np.array([[0, 1, 0, 1]], dtype=np.int64),
                       valid=np.zeros((1, 1, 1), dtype=bool),
                       perm=np.zeros((1, 1), dtype=np.int64),
                       pos=np.zeros((1, 1), dtype=np.int64))
