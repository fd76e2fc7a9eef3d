"""Block-sparse Cholesky and selected inverse of a patch's normal matrix (host only).

A patch's normal matrix ``M = AᵀWA`` couples two fibers only where their spots share
pixels: at DESI geometry a fiber reaches its neighbours within two fibers (the next one
through the spot cores, the one after through the outermost stamp columns), so in a
patch of 7 fibers 9 of the 49 fiber blocks are zero. The numpy backend's Numba kernel
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
(``tests/test_blocksolve.py``). On the reference r-camera PSF it does about 2.4× fewer
flops per patch (docs/extract.md has the measurements). The device keeps the dense
batched path, whose cost is dominated by memory traffic.

Backends: host only (NumPy and LAPACK).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["fill_pattern", "block_flops", "solve_tail_blocks", "solve_patch"]


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
    """Flops of :func:`solve_patch` for a fill pattern (``below``) and blocks of ``nw``.

    Returns ``{"factor": ..., "selected_inverse": ...}``: per block ``potrf`` nw³/3,
    ``trtri`` nw³/3, ``B = A Zᵀ`` (``trmm``, k·nw³ for k blocks below) and the update of
    the blocks below (k ``syrk`` of nw³ and k(k−1)/2 products of 2nw³), the
    substitutions (4 nw² per block pair); for the kept slots ``i >= kfirst``, ``G = B Z``
    (``trmm``, k·nw³), ``C_UU G`` (2k²·nw³), ``ZᵀZ`` and ``GᵀC_Ui`` (2nw³ + 2k·nw³).

    Backends: host only (plain values).
    """
    n3, n2 = float(nw) ** 3, float(nw) ** 2
    fac = sel = 0.0
    for i, u in enumerate(below):
        k = len(u)
        fac += 2.0 * n3 / 3.0 + k * n3 + (k + k * (k - 1)) * n3 + 4.0 * (k + 1) * n2
        if i >= kfirst:
            sel += k * n3 + 2.0 * k * k * n3 + 2.0 * n3 + 2.0 * k * n3
    return {"factor": fac, "selected_inverse": sel}


def solve_patch(M, b, nw: int, kfirst: int, below):
    """``x = M⁻¹b`` and the diagonal blocks of ``M⁻¹`` of slots ``kfirst …`` (one patch).

    Parameters
    ----------
    M : float64 (n, n)
        Symmetric positive-definite, blocks of ``nw`` in slot order; only the blocks of
        the pattern are read, and ``M`` is not modified.
    b : float64 (n,)
    nw : int
    kfirst : int
        First slot whose covariance block is wanted (the later slots must be closed
        under ``below``: true when they are the kept fibers, solved last).
    below : tuple of tuples
        :func:`fill_pattern` of the patch's block pattern.

    Returns
    -------
    (x, Cb) or None
        ``x`` (n,) and ``Cb`` (F − kfirst, nw, nw); None when a pivot block is not
        numerically positive definite (the caller then takes the dense path).

    Backends: host only (LAPACK ``dpotrf``/``dtrtri`` and BLAS products).
    """
    fac = _factor(M, nw, below)
    if fac is None:
        return None
    Z, Bs = fac
    return _substitute(Z, Bs, below, b), _kept_blocks(Z, Bs, below, kfirst)


def _factor(M, nw, below):
    """Block Cholesky over the fill pattern: ``Z[i] = L_ii⁻¹`` and ``Bs[i] = L[below[i], i]``
    (stacked), or None if a pivot block fails."""
    from scipy.linalg import blas, lapack

    F = len(below)
    blk = [slice(s * nw, (s + 1) * nw) for s in range(F)]
    work = {}                                   # updated blocks (u, v), u >= v

    def block(u, v):
        a = work.get((u, v))
        return M[blk[u], blk[v]] if a is None else a

    Z, Bs = [None] * F, [None] * F
    for i in range(F):
        # the diagonal blocks are updated in their lower triangle only (dsyrk), which is
        # all dpotrf reads
        c, info = lapack.dpotrf(block(i, i), lower=1, clean=1)
        if info != 0:
            return None
        z, info = lapack.dtrtri(c, lower=1, overwrite_c=1)
        if info != 0:
            return None
        Z[i] = z
        u = below[i]
        if not u:
            continue
        A = np.empty((len(u) * nw, nw), order="F")
        for a, ua in enumerate(u):
            A[a * nw:(a + 1) * nw] = block(ua, i)
        B = blas.dtrmm(1.0, z, A, side=1, lower=1, trans_a=1, overwrite_b=1)  # L[u, i]
        Bs[i] = B
        for a, ua in enumerate(u):
            Ba = B[a * nw:(a + 1) * nw]
            work[(ua, ua)] = blas.dsyrk(-1.0, Ba, beta=1.0, c=np.asfortranarray(block(ua, ua)),
                                        lower=1, overwrite_c=1)
            for c_, uc in enumerate(u[:a]):
                work[(ua, uc)] = block(ua, uc) - Ba @ B[c_ * nw:(c_ + 1) * nw].T
    return Z, Bs


def _substitute(Z, Bs, below, b):
    """``x`` from ``L Lᵀ x = b`` by block forward and back substitution."""
    F, nw = len(Z), Z[0].shape[0]
    y = np.array(b, dtype=np.float64).reshape(F, nw)
    for i in range(F):                          # L y = b
        y[i] = Z[i] @ y[i]
        if below[i]:
            y[list(below[i])] -= (Bs[i] @ y[i]).reshape(-1, nw)
    for i in range(F - 1, -1, -1):              # Lᵀ x = y (in place)
        r = y[i]
        if below[i]:
            r = r - Bs[i].T @ y[list(below[i])].reshape(-1)
        y[i] = Z[i].T @ r
    return y.reshape(-1)


def _kept_blocks(Z, Bs, below, kfirst):
    """Diagonal blocks of ``M⁻¹`` for slots ``kfirst …`` (selected inversion, last slot
    first; only blocks of the pattern among those slots are formed)."""
    from scipy.linalg import blas

    F, nw = len(Z), Z[0].shape[0]
    C = {}
    Cb = np.empty((F - kfirst, nw, nw))
    for i in range(F - 1, kfirst - 1, -1):
        u = below[i]
        Cii = Z[i].T @ Z[i]
        if u:
            G = blas.dtrmm(1.0, Z[i], Bs[i], side=1, lower=1)         # L[u, i] Z_i
            Cuu = np.empty((len(u) * nw, len(u) * nw))
            for a, ua in enumerate(u):
                for c_, uc in enumerate(u[:a + 1]):
                    Cuu[a * nw:(a + 1) * nw, c_ * nw:(c_ + 1) * nw] = C[(ua, uc)]
                    if c_ < a:
                        Cuu[c_ * nw:(c_ + 1) * nw, a * nw:(a + 1) * nw] = C[(ua, uc)].T
            Cr = Cuu @ G                        # = −C[u, i]
            Cii += G.T @ Cr
            for a, ua in enumerate(u):
                C[(ua, i)] = -Cr[a * nw:(a + 1) * nw]
        C[(i, i)] = Cii
        Cb[i - kfirst] = Cii
    return Cb


def solve_tail_blocks(M, b, m: int, nw: int, pattern):
    """:func:`solve_patch` over a stack of patches.

    Parameters
    ----------
    M : float64 (P, n, n)
    b : float64 (P, n)
    m : int
        Trailing unknowns whose covariance blocks are wanted (a multiple of ``nw``).
    nw : int
    pattern : bool (P, F, F)
        Nonzero blocks of each ``M`` (slot order).

    Returns
    -------
    x : (P, n)
    Cb : (P, m // nw, nw, nw)
    failed : int64 array
        Patches where a pivot block failed; their rows of ``x`` and ``Cb`` are unset.

    Backends: host only.
    """
    P, n = M.shape[0], M.shape[-1]
    F = n // nw
    kfirst = F - m // nw
    x = np.empty((P, n))
    Cb = np.empty((P, m // nw, nw, nw))
    failed = []
    for p in range(P):
        r = solve_patch(M[p], b[p], nw, kfirst, fill_pattern(pattern[p]))
        if r is None:
            failed.append(p)
            continue
        x[p], Cb[p] = r
    return x, Cb, np.asarray(failed, dtype=np.int64)
