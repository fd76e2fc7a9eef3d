"""Square root of many banded SPD blocks at once, by Zolotarev's rational approximation.

The divide-and-conquer decorrelation (:mod:`gpuspec.coadd.decorrelate`) needs, for every
block ``C`` (n × n, symmetric positive definite, half-bandwidth b; n = 149 and b ≈ 11 for
DESI's 0.8 Å grids), only three things from ``Q = C^{1/2}``:

* ``s = Q·1`` (ivar ``s²`` and the row norms of ``R = Q/s``);
* ``y = C^{-1/2}·Cinvf`` (the decorrelated flux is ``y/s``);
* the ``h`` diagonals of ``Q`` next to the main one (the resolution band of ``R``).

desispec gets them from a dense eigendecomposition (``O(n³)`` per block). Here
``C^{-1/2}`` is replaced by Zolotarev's best relative rational approximation of
``x^{-1/2}`` on ``[1, κ]`` in partial fractions,

    x^{-1/2} ≈ d0·(1 + Σ_l a_l / (x + c_l)),                 l = 1 … K,

applied to ``X = C/λ_low`` (``λ_low = M/κ``, ``M`` the Gershgorin bound of ``C``), so that

    C^{-1/2} ≈ α0·I + Σ_l β_l (C + σ_l I)^{-1},   C^{1/2} = C·C^{-1/2}
    α0 = d0/√λ_low,  β_l = d0·a_l·√λ_low,  σ_l = λ_low·c_l.

Each shifted matrix is factorised ``LDLᵀ`` in banded form, its inverse is formed only
inside the band (Takahashi's recursion, the "selected inversion"), and two banded solves
give ``(C + σ_l)^{-1}·1`` and ``(C + σ_l)^{-1}·Cinvf``. All of it is ``O(n·b²)`` per shift
instead of ``O(n³)``, and every step is one array operation over all (block, shift) pairs
at once: on a GPU it is a few thousand element-wise kernels per batch, with no cuSOLVER
call and no host synchronisation.

Accuracy: with ``κ = 1e9`` and ``K = 32`` poles the relative error of the scalar
approximation is ~1e-11 on ``[1, κ]``; a block qualifies when ``C − λ_low I`` is positive
definite (checked by the same banded factorisation: every pivot > 0), i.e. when its
condition number is below ``κ·λ_max/M``. Blocks that do not (numerically singular ones,
where desispec floors the eigenvalues) are flagged ``ok = False`` and the caller sends them
through the reference eigendecomposition.

:func:`band_sqrt` is the array (numpy/cupy) implementation; :mod:`.sqrtm_band_cpu` is its
Numba twin for the CPU, tested against it.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["KAPPA", "NPOLES", "zolotarev_invsqrt", "band_sqrt", "band_sqrt_flops"]

#: condition-number bound of the rational approximation (relative to the Gershgorin bound)
KAPPA = 1e9
#: number of poles; relative error of x^{-1/2} on [1, KAPPA]: ~1e-11, the float64 rounding
#: floor of the partial-fraction sum (9e-12 to 1.03e-11 depending on numpy/scipy versions)
NPOLES = 32


def _sn_cn(u, mc):
    """Jacobi sn(u|m), cn(u|m) for real u, given the complementary parameter ``mc = 1 − m``.

    Descending Landen transformation (arithmetic-geometric mean, Abramowitz & Stegun
    16.4); taking ``mc`` rather than ``m`` keeps full accuracy for ``m`` close to 1.
    """
    a, b, c = [1.0], np.sqrt(mc), [np.sqrt(1.0 - mc)]
    while abs(c[-1]) > 1e-17 and len(a) < 60:
        an = a[-1]
        a.append(0.5 * (an + b))
        c.append(0.5 * (an - b))
        b = np.sqrt(an * b)
    n = len(a) - 1
    phi = (2.0 ** n) * a[n] * np.asarray(u, dtype=np.float64)
    for k in range(n, 0, -1):
        phi = 0.5 * (phi + np.arcsin(c[k] / a[k] * np.sin(phi)))
    return np.sin(phi), np.cos(phi)


@functools.lru_cache(maxsize=16)
def zolotarev_invsqrt(npoles: int = NPOLES, kappa: float = KAPPA):
    """Zolotarev's optimal relative approximation of ``x^{-1/2}`` on ``[1, kappa]``.

    ``r(x) = d0·Π_l (x + c_{2l}) / (x + c_{2l−1}) = d0·(1 + Σ_l a_l/(x + c_{2l−1}))`` with
    ``c_j = sc²(j·K'/(2n+1); k')``, ``k'² = 1 − 1/kappa`` (Zolotarev 1877; the form used for
    the inverse square root in lattice QCD, e.g. Chiu et al., Phys. Rev. D 66, 114502).
    ``d0`` equilibrates the relative error, measured on a dense logarithmic grid.

    Returns
    -------
    d0 : float
    a, c : (npoles,) float arrays
        Residues and (positive) pole shifts of the partial-fraction form.
    delta : float
        Largest relative error ``|1 − √x·r(x)|`` on the grid.

    Backends: host (numpy); the coefficients are computed once per (npoles, kappa).
    """
    from scipy.special import ellipkm1

    mc = 1.0 / float(kappa)
    kk = ellipkm1(mc)                                  # K(m), m = 1 − mc
    j = np.arange(1, 2 * npoles + 1)
    sn, cn = _sn_cn(j * kk / (2 * npoles + 1), mc)
    cc = (sn / cn) ** 2
    codd, ceven = cc[0::2], cc[1::2]
    a = np.empty(npoles)
    for i in range(npoles):                        # pairwise ratios: no overflow for large kappa
        others = np.delete(codd, i)
        a[i] = (ceven[-1] - codd[i]) * np.prod((ceven[:-1] - codd[i]) / (others - codd[i]))
    x = np.geomspace(1.0, float(kappa), 20001)
    prod = np.prod((x[None] + ceven[:, None]) / (x[None] + codd[:, None]), axis=0)
    e = np.sqrt(x) * prod
    d0 = 2.0 / (e.max() + e.min())
    r = d0 * (1.0 + np.sum(a[:, None] / (x[None] + codd[:, None]), axis=0))
    delta = float(np.max(np.abs(1.0 - np.sqrt(x) * r)))
    return float(d0), a, codd, delta


def gershgorin_max(W0, xp):
    """Upper bound of the largest eigenvalue of each block: ``max_i Σ_j |C_ij|``.

    ``W0`` is the lower band ``W0[β, i, k] = C[i+k, i]`` (``(B, n, b+1)``). Backends: numpy, cupy.
    """
    A = xp.abs(W0)
    rows = xp.sum(A, axis=2)                                    # C[i, i] + Σ_k |C[i+k, i]|
    n, b1 = W0.shape[1], W0.shape[2]
    for k in range(1, b1):
        rows[:, k:] += A[:, : n - k, k]                         # Σ_k |C[i, i−k]|
    return xp.max(rows, axis=1)


def _factor(W, xp):
    """In-place banded LDLᵀ of ``(N, n + b, b + 1)`` lower bands (rows ≥ n are padding).

    On return ``W[:, j, k] = L[j+k, j]`` (k ≥ 1); the pivots ``D`` (``(N, n)``) are returned.
    The trailing update of column j touches ``W[j+1+k1, k2−k1]`` (0 ≤ k1 ≤ k2 < b), which in
    the flattened band is the contiguous range ``(j+1)(b+1) + k1·b + k2``: one masked
    rank-1 update of a ``b × b`` slice per column (basic slicing only).
    """
    N, nr, b1 = W.shape
    b = b1 - 1
    n = nr - b
    triu = xp.asarray(np.triu(np.ones((b, b))))                 # k2 ≥ k1
    Wf = W.reshape(N, nr * b1)
    D = xp.empty((N, n))
    for j in range(n):
        d = W[:, j, 0]
        D[:, j] = d
        lj = W[:, j, 1:] / d[:, None]                           # L[j+k, j], k = 1..b
        upd = (W[:, j, 1:, None] * lj[:, None, :]) * triu       # C[j+1+k1, j]·L[j+1+k2, j]
        base = (j + 1) * b1
        Wf[:, base: base + b * b] -= upd.reshape(N, b * b)
        W[:, j, 1:] = lj
    return D


def _takahashi_weighted(W, D, wts, h: int, xp):
    """``Σ_k wts[β, k]·((C + σ_k)^{-1})[i, i+d]`` for d = 0..h (Takahashi's recursion).

    The selected inverse ``Z_{i, i+d}`` (d ≤ b) is computed row by row from the bottom; row
    ``i`` needs rows ``i+1 … i+b`` only, so they are kept in a circular window of ``b+1``
    rows instead of the whole band, and each finished row is folded into the weighted sum
    at once. ``W``/``D``: factors of ``(N, n+b, b+1)``, ``N = B·K``; ``wts``: ``(B, K)``.
    Returns ``(B, n, h+1)``.
    """
    N, nr, b1 = W.shape
    b = b1 - 1
    n = nr - b
    B, K = wts.shape
    kk = np.arange(b)
    rmin = np.minimum.outer(kk, kk) + 1                        # row offset of Z_{i+1+k, i+1+j}
    slots = xp.asarray((np.arange(n)[:, None, None] + rmin[None]) % b1)    # (n, b, b)
    dabs = xp.asarray(np.abs(np.subtract.outer(kk, kk)))
    Zw = xp.zeros((N, b1, b1))                                 # slot r % b1 holds row r
    out = xp.zeros((B, n, h + 1))
    for i in range(n - 1, -1, -1):
        G = Zw[:, slots[i], dabs]                               # (N, b, b)
        li = W[:, i, 1:]
        zr = -xp.einsum("nk,nkj->nj", li, G)
        slot = i % b1
        Zw[:, slot, 1:] = zr
        Zw[:, slot, 0] = 1.0 / D[:, i] - xp.sum(li * zr, axis=1)
        out[:, i, :] = xp.einsum("bk,bkd->bd", wts, Zw[:, slot, : h + 1].reshape(B, K, h + 1))
    return out


def _solve(W, D, r, xp):
    """Solve ``LDLᵀ x = r`` for every shift; ``r`` ``(B, q, n)`` is shared by the ``K = N/B``
    shifts of a block. Returns ``(N, q, n)``."""
    N, nr, b1 = W.shape
    b = b1 - 1
    n = nr - b
    B, q = r.shape[0], r.shape[1]
    u = xp.zeros((B, N // B, q, nr))
    u[:, :, :, :n] = r[:, None]
    u = u.reshape(N, q, nr)
    for j in range(n):                                          # forward: L u = r
        u[:, :, j + 1: j + b1] -= u[:, :, j: j + 1] * W[:, None, j, 1:]
    u[:, :, :n] /= D[:, None, :]
    for j in range(n - 1, -1, -1):                              # backward: Lᵀ x = u
        u[:, :, j] -= xp.einsum("nqk,nk->nq", u[:, :, j + 1: j + b1], W[:, j, 1:])
    return u[:, :, :n]


def band_sqrt(W0, rhs, h: int, xp, *, npoles: int = NPOLES, kappa: float = KAPPA):
    """``Q = C^{1/2}`` pieces of a batch of banded SPD blocks (array path).

    Parameters
    ----------
    W0 : (B, n, b+1) array
        Lower band of each block, ``W0[β, i, k] = C_β[i+k, i]`` (0 outside the block).
        No zero rows (the caller replaces them by a decoupled diagonal).
    rhs : (B, n) array
        Right-hand side of ``y = C^{-1/2}·rhs``.
    h : int
        Number of off-diagonals of ``Q`` to return.
    xp : module
    npoles, kappa : see :func:`zolotarev_invsqrt`.

    Returns
    -------
    qb : (B, n, h+1)
        ``qb[β, i, d] = Q_β[i, i+d]`` (0 where ``i + d ≥ n``).
    s : (B, n)
        ``Q·1``.
    y : (B, n)
        ``C^{-1/2}·rhs``.
    ok : (B,) bool
        The block's spectrum lies inside the approximation's interval (else recompute it).

    Backends: numpy, cupy (no host synchronisation).
    """
    d0, a, c, _ = zolotarev_invsqrt(npoles, kappa)
    B, n, b1 = W0.shape
    b = b1 - 1
    M = gershgorin_max(W0, xp)
    lam = M / kappa                                              # (B,)
    sq = xp.sqrt(lam)
    alpha0 = d0 / sq                                             # (B,)
    beta = d0 * xp.asarray(a)[None, :] * sq[:, None]             # (B, K)
    K = a.size
    # shift 0 is the qualification: C − λ_low I must be positive definite (pivots > 0);
    # shifts 1..K are the poles. One factorisation pass for all of them.
    shifts = xp.concatenate([-lam[:, None], lam[:, None] * xp.asarray(c)[None, :]], axis=1)
    K1 = K + 1
    N = B * K1
    W = xp.zeros((B, K1, n + b, b1))
    W[:, :, :n] = W0[:, None]
    W[:, :, :n, 0] += shifts[:, :, None]
    W[:, :, n:, 0] = 1.0
    W = W.reshape(N, n + b, b1)
    D = _factor(W, xp)
    Dc = D.reshape(B, K1, n)[:, 0]
    ok = xp.all(Dc > 0, axis=1) & xp.all(xp.isfinite(D.reshape(B, K1 * n)), axis=1) & (M > 0)
    sigma = shifts[:, 1:]
    bs = xp.concatenate([xp.zeros((B, 1)), beta * sigma], axis=1)  # shift 0 has no weight
    zsum = _takahashi_weighted(W, D, bs, h, xp)                  # Σ β σ (C + σ)^{-1}, band
    r = xp.stack([xp.ones((B, n)), rhs], axis=1)                 # (B, 2, n)
    X = _solve(W, D, r, xp)
    X = X.reshape(B, K1, 2, n)[:, 1:]
    del W, D
    qb = alpha0[:, None, None] * W0[:, :, : h + 1] - zsum
    qb[:, :, 0] += xp.sum(beta, axis=1)[:, None]
    v = alpha0[:, None, None] * r + xp.einsum("bk,bkqi->bqi", beta, X)   # C^{-1/2}·[1, rhs]
    s = _band_matvec(W0, v[:, 0], xp)
    return qb, s, v[:, 1], ok


def _band_matvec(W0, v, xp):
    """``C·v`` for lower bands ``W0`` (``(B, n, b+1)``) and vectors ``v`` (``(B, n)``)."""
    n, b1 = W0.shape[1], W0.shape[2]
    out = W0[:, :, 0] * v
    for k in range(1, b1):
        out[:, : n - k] += W0[:, : n - k, k] * v[:, k:]          # C[i, i+k] v[i+k]
        out[:, k:] += W0[:, : n - k, k] * v[:, : n - k]          # C[i+k, i] v[i]
    return out


def band_sqrt_flops(nblock: int, n: int, b: int, h: int, npoles: int = NPOLES) -> dict:
    """Floating-point operations and bytes of :func:`band_sqrt` for ``nblock`` blocks.

    Counted from the loops (one multiply-add = 2 flops): per block and shift, the banded
    ``LDLᵀ`` (``n·b(b+1)/2`` multiply-adds), Takahashi's recursion (``n·(b² + b)``), two
    banded solves (``4·n·b``), plus one qualifying factorisation per block. Bytes: the
    band arrays (factor and selected inverse, ``n·(b+1)`` doubles each) are read and
    written about ``b`` times per shift by the array path (one pass per column step),
    which bounds the GPU time from below by memory bandwidth.

    Backends: host (pure arithmetic).
    """
    fma_shift = n * b * (b + 1) / 2 + n * (b * b + b) + 4 * n * b
    fma_block = npoles * fma_shift + n * b * (b + 1) / 2
    flops = 2.0 * fma_block * nblock
    band_bytes = 8.0 * n * (b + 1)
    bytes_ = nblock * npoles * band_bytes * 2 * 3 * 2           # L and Z, ~3 passes, r+w
    return {"flops": flops, "bytes": bytes_, "npoles": npoles, "n": n, "b": b,
            "nblock": nblock}
