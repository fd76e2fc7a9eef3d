"""Numba kernel of :mod:`gpuspec.extract.blocksolve` (imported only when it is used).

The block solve is ~200 small LAPACK/BLAS calls per patch on 73 × 73 blocks; from Python
each call costs a few µs of wrapper overhead, about as much as the arithmetic (measured
2026-12-03 on bundle 0 of the r0 PSF: 17 GFLOP/s from Python against ~35 for the same
calls back to back). Here the whole chunk runs in one compiled call: the products are
Numba's ``np.dot`` (BLAS ``dgemm``) and the two LAPACK routines, ``dpotrf`` and
``dtrtri``, are SciPy's (``scipy.linalg.cython_lapack``), bound by symbol name so that
the kernel stays in Numba's on-disk cache.

Layout. Blocks are C-ordered; LAPACK sees a C-ordered matrix as its transpose, so
``dpotrf('U')`` of a C-ordered symmetric block leaves its lower Cholesky factor ``L`` in
the lower triangle, and ``dtrtri('U')`` of that triangle gives ``L⁻¹`` (lower).

Backends: host only (Numba, CPU).
"""

import llvmlite.binding as ll
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

__all__ = ["solve_chunk", "chol_inv"]

for _name in ("dpotrf", "dtrtri"):
    ll.add_symbol("gpuspec_" + _name,
                  get_cython_function_address("scipy.linalg.cython_lapack", _name))
_vp = types.voidptr
_dpotrf = types.ExternalFunction("gpuspec_dpotrf", types.void(_vp, _vp, _vp, _vp, _vp))
_dtrtri = types.ExternalFunction("gpuspec_dtrtri", types.void(_vp, _vp, _vp, _vp, _vp, _vp))


@njit(cache=True, nogil=True)
def chol_inv(a, work):
    """``a`` (C-ordered, symmetric) ← ``L⁻¹`` with ``a = L Lᵀ`` (lower, zeros above);
    returns LAPACK's ``info`` (0: success). ``work``: int32 (2,) scratch.

    Backends: host only (Numba)."""
    n = a.shape[0]
    ch = np.empty(2, np.uint8)
    ch[0] = 85                                  # 'U' (LAPACK's view of the transpose)
    ch[1] = 78                                  # 'N': not unit triangular
    work[0] = n
    work[1] = 0
    _dpotrf(ch[0:1].ctypes.data, work[0:1].ctypes.data, a.ctypes.data,
            work[0:1].ctypes.data, work[1:2].ctypes.data)
    if work[1] != 0:
        return work[1]
    for i in range(n):
        for j in range(i + 1, n):
            a[i, j] = 0.0
    _dtrtri(ch[0:1].ctypes.data, ch[1:2].ctypes.data, work[0:1].ctypes.data, a.ctypes.data,
            work[0:1].ctypes.data, work[1:2].ctypes.data)
    return work[1]


@njit(cache=True, nogil=True)
def solve_chunk(M, b, nw, kfirst, filled, x, Cb, failed):
    """``blocksolve.solve_tail_blocks`` for a chunk: see that function.

    ``filled[p]`` (F, F) uint8: 1 at ``(u, v)``, ``u > v``, where ``L[u, v]`` may be
    nonzero (the fill pattern). Sets ``x[p]``, ``Cb[p]`` or ``failed[p] = 1``.

    Backends: host only (Numba)."""
    P, n = M.shape[0], M.shape[1]
    F = n // nw
    W = np.zeros((F, F, nw, nw))                # updated lower blocks, then L's blocks
    C = np.zeros((F, F, nw, nw))                # selected inverse, lower blocks
    Z = np.zeros((F, nw, nw))
    y = np.empty((F, nw))
    iw = np.empty(2, np.int32)
    for p in range(P):
        L = filled[p]
        for u in range(F):
            for v in range(u + 1):
                if u == v or L[u, v]:
                    W[u, v] = M[p, u * nw:(u + 1) * nw, v * nw:(v + 1) * nw]
        ok = True
        for i in range(F):                      # block Cholesky over the pattern
            Z[i] = W[i, i]
            if chol_inv(Z[i], iw) != 0:
                ok = False
                break
            for u in range(i + 1, F):
                if L[u, i]:
                    W[u, i] = np.dot(W[u, i], Z[i].T)            # L[u, i]
            for a in range(i + 1, F):
                if L[a, i]:
                    for c in range(i + 1, a + 1):
                        if L[c, i]:
                            W[a, c] -= np.dot(W[a, i], W[c, i].T)
        if not ok:
            failed[p] = 1
            continue
        for i in range(F):
            y[i] = b[p, i * nw:(i + 1) * nw]
        for i in range(F):                      # L y = b
            y[i] = np.dot(Z[i], y[i])
            for u in range(i + 1, F):
                if L[u, i]:
                    y[u] -= np.dot(W[u, i], y[i])
        for i in range(F - 1, -1, -1):          # Lᵀ x = y
            r = y[i].copy()
            for u in range(i + 1, F):
                if L[u, i]:
                    r -= np.dot(W[u, i].T, y[u])
            y[i] = np.dot(Z[i].T, r)
        for i in range(F):
            x[p, i * nw:(i + 1) * nw] = y[i]
        for i in range(F - 1, kfirst - 1, -1):  # selected inverse, last slot first
            Cii = np.dot(Z[i].T, Z[i])
            for u in range(i + 1, F):
                if L[u, i]:
                    W[u, i] = np.dot(W[u, i], Z[i])               # G_u = L[u, i] Z_i
            for u in range(i + 1, F):
                if L[u, i]:
                    acc = np.zeros((nw, nw))
                    for v in range(i + 1, F):
                        if L[v, i]:
                            if u >= v:
                                acc -= np.dot(C[u, v], W[v, i])
                            else:
                                acc -= np.dot(C[v, u].T, W[v, i])
                    C[u, i] = acc                                 # C_ui = −Σ_v C_uv G_v
            for u in range(i + 1, F):
                if L[u, i]:
                    Cii -= np.dot(W[u, i].T, C[u, i])
            C[i, i] = Cii
            Cb[p, i - kfirst] = Cii
