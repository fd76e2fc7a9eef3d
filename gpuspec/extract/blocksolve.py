"""Block-sparse Cholesky and selected inverse of a patch's normal matrix (host only).

A patch's normal matrix ``M = AᵀWA`` couples two fibers only where their spots share
pixels: at DESI geometry a fiber reaches its neighbours within two fibers (the next one
through the spot cores, the one after through the outermost stamp columns), so in a
patch of 7 fibers 20 of the 49 fiber blocks are zero. The numpy backend's Numba kernel
(:mod:`gpuspec.extract.normal_cpu`) reports which blocks it wrote, and
:func:`solve_tail_blocks` factorises ``M`` block by block over that pattern instead of
as one dense matrix:

* the Cholesky factor ``L`` in slot order (kept fibers last, :mod:`~.layout`), with the
  fill of the elimination computed symbolically (:func:`fill_pattern`): a leading,
  not-kept fiber only fills blocks among the kept fibers it touches;
* ``x = M⁻¹b`` by block forward and back substitution;
* the kept fibers' diagonal blocks of ``C = M⁻¹`` by the block form of Takahashi's
  selected inversion, from the last slot up: with ``Z_i = L_ii⁻¹``,
  ``G_u = L_ui Z_i`` for the blocks u below i,
  ``C_ui = −Σ_v C_uv G_v`` and ``C_ii = Z_iᵀZ_i − Σ_u G_uᵀ C_ui``. Only blocks of
  the filled pattern among the kept slots are formed.

It is the same algebra as the dense path (``dpotrf`` of the whole matrix and the block
substitution of ``solve._inverse_block_columns``); the numbers agree to rounding
(``tests/test_blocksolve.py``). The pattern comes from the Numba twin, so the solve is
a Numba kernel too (:mod:`~gpuspec.extract.blocksolve_numba`: one compiled call per
chunk, LAPACK ``dpotrf``/``dtrtri`` and BLAS products on blocks of one fiber). On the
reference r-camera PSF it does about 1.7× fewer flops per patch than the dense path
(docs/extract.md has the measurements). The device keeps the dense batched path,
whose cost is dominated by memory traffic.

Backends: host only (Numba, LAPACK).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["fill_pattern", "filled_matrix", "block_flops", "solve_tail_blocks", "warm"]


@lru_cache(maxsize=256)
def _fill(key: bytes, F: int) -> tuple:
    pat = np.frombuffer(key, dtype=bool).reshape(F, F)
    L = np.tril(pat | pat.T, -1)
    below = []
    for i in range(F):
        u = np.flatnonzero(L[:, i])
        # eliminating block i couples every pair of blocks below it (the fill)
        L[np.ix_(u, u)] |= np.tri(len(u), k=-1, dtype=bool)
        below.append(tuple(int(v) for v in u))
    return tuple(below)


def fill_pattern(pattern) -> tuple:
    """Blocks below each diagonal block of the Cholesky factor, fill included.

    Parameters
    ----------
    pattern : bool array (F, F)
        Nonzero blocks of a symmetric block matrix, in elimination order.

    Returns
    -------
    tuple of tuples
        ``below[i]``: the block rows ``u > i`` where ``L[u, i]`` may be nonzero.

    Backends: host only (cached per pattern).
    """
    pat = np.ascontiguousarray(pattern, dtype=bool)
    return _fill(pat.tobytes(), pat.shape[0])


def block_flops(below, nw: int, kfirst: int) -> dict:
    """Flops of the block solve for a fill pattern (``below``) and blocks of ``nw``.

    Returns ``{"factor": ..., "selected_inverse": ..., "lapack": ...}`` (``lapack``: the
    part of ``factor`` in ``potrf`` + ``trtri``, 2nw³/3 per block). Every product is a dense
    ``dgemm`` of nw-blocks (2nw³). Per block: ``potrf`` nw³/3 and ``trtri`` nw³/3,
    ``L[u, i] = A_ui Zᵢᵀ`` for its k blocks below (2k·nw³), the updates of the
    k(k+1)/2 blocks among them (k(k+1)·nw³), the substitutions (4 nw² per block pair);
    for the kept slots ``i >= kfirst``: ``G = L[u, i] Zᵢ`` (2k·nw³), ``C_uv G_v``
    (2k²·nw³), ``ZᵢᵀZᵢ`` and ``G_uᵀC_ui`` (2nw³ + 2k·nw³).

    Backends: host only (plain values).
    """
    n3, n2 = float(nw) ** 3, float(nw) ** 2
    fac = sel = 0.0
    lap = len(below) * 2.0 * n3 / 3.0
    for i, u in enumerate(below):
        k = len(u)
        fac += 2.0 * n3 / 3.0 + 2.0 * k * n3 + k * (k + 1) * n3 + 4.0 * (k + 1) * n2
        if i >= kfirst:
            sel += 2.0 * k * n3 + 2.0 * k * k * n3 + 2.0 * n3 + 2.0 * k * n3
    return {"factor": fac, "selected_inverse": sel, "lapack": lap}


def filled_matrix(pattern) -> np.ndarray:
    """(F, F) uint8: 1 at ``(u, v)``, ``u > v``, where the factor may be nonzero
    (:func:`fill_pattern` as a matrix, what the kernel reads).

    Backends: host only (cached per pattern)."""
    pat = np.ascontiguousarray(pattern, dtype=bool)
    return _filled(pat.tobytes(), pat.shape[0])


@lru_cache(maxsize=256)
def _filled(key: bytes, F: int) -> np.ndarray:
    out = np.zeros((F, F), dtype=np.uint8)
    for i, u in enumerate(_fill(key, F)):
        out[list(u), i] = 1
    out.setflags(write=False)
    return out


def solve_tail_blocks(M, b, m: int, nw: int, pattern):
    """``x = M⁻¹b`` and the diagonal blocks of the trailing ``m × m`` block of ``M⁻¹``,
    block by block over each patch's pattern (one compiled call per chunk,
    :mod:`~gpuspec.extract.blocksolve_numba`).

    Parameters
    ----------
    M : float64 (P, n, n)
        Symmetric positive-definite, blocks of ``nw`` in slot order; only the blocks of
        the pattern are read, and ``M`` is not modified.
    b : float64 (P, n)
    m : int
        Trailing unknowns whose covariance blocks are wanted (a multiple of ``nw``; the
        trailing slots must be closed under the pattern's fill: true for the kept
        fibers, which come last).
    nw : int
    pattern : bool (P, F, F)
        Nonzero blocks of each ``M`` (slot order); every other block must be exactly 0.

    Returns
    -------
    x : (P, n)
    Cb : (P, m // nw, nw, nw)
    failed : int64 array
        Patches where a pivot block is not numerically positive definite; their rows of
        ``x`` and ``Cb`` are unset (the caller solves them densely).

    Backends: host only (Numba).
    """
    from .blocksolve_numba import solve_chunk

    P, n = M.shape[0], M.shape[-1]
    F = n // nw
    x = np.empty((P, n))
    Cb = np.empty((P, m // nw, nw, nw))
    failed = np.zeros(P, dtype=np.uint8)
    filled = np.stack([filled_matrix(pattern[p]) for p in range(P)]) if P else \
        np.zeros((0, F, F), np.uint8)
    solve_chunk(np.ascontiguousarray(M, dtype=np.float64),
                np.ascontiguousarray(b, dtype=np.float64), int(nw), F - m // nw,
                filled, x, Cb, failed)
    return x, Cb, np.flatnonzero(failed).astype(np.int64)


def warm() -> None:
    """Compile the kernel (or load it from Numba's cache) in this process, on a 1 × 1
    patch, so that forked bundle workers inherit it (as ``normal_cpu.warm``).

    Backends: host only."""
    solve_tail_blocks(np.ones((1, 1, 1)), np.ones((1, 1)), 1, 1, np.ones((1, 1, 1), bool))
