"""CPU (Numba) twin of :func:`gpuspec.coadd.sqrtm_band.band_sqrt`.

The array path runs one array operation per column of the banded factorisation over all
(block, shift) pairs: right for a GPU, but on a CPU each of its ~5000 operations per batch
streams the whole batch through memory. This kernel does the same arithmetic a few blocks
at a time, with the shifts (the poles of the rational approximation) of those blocks side
by side as the innermost, contiguous loop ("lanes"), so the compiler vectorises over them
and the working set (a few hundred kB) stays in cache.

Per block it takes the first of :data:`TIERS` (``(poles, κ)`` pairs) whose interval covers
the block, qualified by a scalar banded factorisation of ``C − (M/κ)·I`` (12 poles below
κ = 6e2 up to the array path's 32 poles up to κ = 1e9); a block no tier covers is flagged
for the eigh fallback. Blocks are packed into
batches of :data:`LANES` lanes (four 16-pole blocks, or two 32-pole ones): the loops over
lanes are short and their fixed cost per entry (address arithmetic, alias checks) is what
limits the speed, so more lanes per entry is faster. ``tiers=((NPOLES, KAPPA),)`` gives
the array path's numbers exactly.

Used for the numpy backend when numba is importable (``GPUSPEC_COADD_NUMBA=0`` turns it
off). ``tests/test_coadd_decorrelate.py`` checks it against the array path.
"""

from __future__ import annotations


import numpy as np

from ..backend import numba_twins_enabled
from .sqrtm_band import KAPPA, NPOLES, zolotarev_invsqrt

__all__ = ["available", "band_sqrt", "TIERS", "LANES"]

#: (poles, kappa) tried in turn for every block, each the fewest poles with a relative error
#: below 1e-11 on [1, κ]; the last is the array path's approximation (32 poles, κ = 1e9).
#: On a synthetic DESI pixel the blocks need 18.6 poles on average (55%, 31%, 11%, 3% in
#: the 16-, 20-, 24- and 32-pole tiers)
TIERS = ((12, 6e2), (16, 1e4), (20, 2e5), (24, 4e6), (NPOLES, KAPPA))
#: lanes of one batch: the poles of several blocks side by side (the loops over lanes are
#: short, so their fixed cost per entry dominates; 64 lanes amortise it better than 32)
LANES = 64

_compiled = None
_FLAGS = dict(cache=True, nogil=True, error_model="numpy",
              fastmath={"contract", "reassoc", "nsz", "arcp"})


def available() -> bool:
    """True when numba imports and ``GPUSPEC_COADD_NUMBA`` is not 0/false.

    Backends: host.
    """
    return numba_twins_enabled("GPUSPEC_COADD_NUMBA")


def _gershgorin(W0, blk):
    """Upper bound of the largest eigenvalue of block ``blk``: max_i Σ_j |C_ij|."""
    n, b1 = W0.shape[1], W0.shape[2]
    M = 0.0
    for i in range(n):
        r = abs(W0[blk, i, 0])
        for k in range(1, b1):
            if i + k < n:
                r += abs(W0[blk, i, k])
            if i - k >= 0:
                r += abs(W0[blk, i - k, k])
        M = max(M, r)
    return M


def _positive_definite(W0, blk, lam, T):
    """Scalar banded LDLᵀ of C − lam·I: True when every pivot is positive."""
    n, b1 = W0.shape[1], W0.shape[2]
    for i in range(n + b1):
        for kk in range(b1):
            T[i, kk] = W0[blk, i, kk] if i < n else 0.0
        T[i, 0] = (W0[blk, i, 0] - lam) if i < n else 1.0
    for j in range(n):
        d = T[j, 0]
        if not (d > 0.0) or not np.isfinite(d):
            return False
        for k1 in range(1, b1):
            lk = T[j, k1] / d
            for k2 in range(k1, b1):
                T[j + k1, k2 - k1] -= T[j, k2] * lk
    return True


def _load(W0, lane_blk, sh, K1, W):
    """Shifted lower bands W[i, kk, k] = C_blk(k)[i+kk, i] + δ_kk0·sh[k]; padding rows = 1."""
    n, b1 = W0.shape[1], W0.shape[2]
    nr = W.shape[0]
    for i in range(nr):
        for kk in range(b1):
            for k in range(K1):
                W[i, kk, k] = W0[lane_blk[k], i, kk] if i < n else 0.0
        for k in range(K1):
            W[i, 0, k] = (W0[lane_blk[k], i, 0] + sh[k]) if i < n else 1.0


def _factor(W, Dinv, n, K1, lj):
    """In-place banded LDLᵀ of every shift; W[j, kk] ← L[j+kk, j], Dinv ← 1/D.
    Returns False when a pivot is not finite."""
    b1 = W.shape[1]
    for j in range(n):
        for k in range(K1):
            Dinv[j, k] = 1.0 / W[j, 0, k]
        for kk in range(1, b1):
            for k in range(K1):
                lj[kk, k] = W[j, kk, k] * Dinv[j, k]
        for k1 in range(1, b1):
            for k2 in range(k1, b1):
                for k in range(K1):
                    W[j + k1, k2 - k1, k] -= W[j, k1, k] * lj[k2, k]
        for kk in range(1, b1):
            for k in range(K1):
                W[j, kk, k] = lj[kk, k]
    for j in range(n):
        for k in range(K1):
            if not np.isfinite(Dinv[j, k]):
                return False
    return True


def _takahashi(W, Dinv, n, K1, Z, zacc, acc0):
    """Z[i, d, k] = ((C + σ_k)^{-1})[i, i+d] inside the band (selected inversion)."""
    nr, b1 = Z.shape[0], Z.shape[1]
    for i in range(n, nr):
        for kk in range(b1):
            for k in range(K1):
                Z[i, kk, k] = 0.0
    for i in range(n - 1, -1, -1):
        for k in range(K1):
            acc0[k] = Dinv[i, k]
        for jj in range(1, b1):
            for k in range(K1):
                zacc[k] = 0.0
            for kk in range(1, b1):
                if kk < jj:
                    r0, dd = i + kk, jj - kk
                else:
                    r0, dd = i + jj, kk - jj
                for k in range(K1):
                    zacc[k] -= W[i, kk, k] * Z[r0, dd, k]
            for k in range(K1):
                Z[i, jj, k] = zacc[k]
                acc0[k] -= W[i, jj, k] * zacc[k]
        for k in range(K1):
            Z[i, 0, k] = acc0[k]


def _solve(W, Dinv, n, K1, U, q):
    """U[q] ← (LDLᵀ)^{-1} U[q] for every shift."""
    b1 = W.shape[1]
    for j in range(n):
        for kk in range(1, b1):
            for k in range(K1):
                U[q, j + kk, k] -= W[j, kk, k] * U[q, j, k]
    for j in range(n):
        for k in range(K1):
            U[q, j, k] *= Dinv[j, k]
    for j in range(n - 1, -1, -1):
        for kk in range(1, b1):
            for k in range(K1):
                U[q, j, k] -= W[j, kk, k] * U[q, j + kk, k]


def _combine(W0, rhs, blk, h, o, K, alpha0, bet, sh, Z, U, v, qb, s, y):
    """Sum the poles of block ``blk`` (lanes o..o+K): Q's band, C^{-1/2}·[1, rhs], then
    s = C·(C^{-1/2}·1)."""
    n, b1 = W0.shape[1], W0.shape[2]
    sb = 0.0
    for k in range(o, o + K):
        sb += bet[k]
    cz = bet[o:o + K] * sh[o:o + K]
    cu = bet[o:o + K]
    for i in range(n):
        zi = Z[i]
        for d in range(h + 1):
            zr = zi[d, o:o + K]
            acc = 0.0
            for k in range(K):
                acc += cz[k] * zr[k]
            qv = alpha0 * W0[blk, i, d] - acc if i + d < n else 0.0
            qb[blk, i, d] = qv + sb if d == 0 else qv
        for q in range(2):
            ur = U[q, i, o:o + K]
            acc = 0.0
            for k in range(K):
                acc += cu[k] * ur[k]
            v[q, i] = alpha0 * (1.0 if q == 0 else rhs[blk, i]) + acc
    for i in range(n):
        y[blk, i] = v[1, i]
        acc = W0[blk, i, 0] * v[0, i]
        for k in range(1, b1):
            if i + k < n:
                acc += W0[blk, i, k] * v[0, i + k]
            if i - k >= 0:
                acc += W0[blk, i - k, k] * v[0, i - k]
        s[blk, i] = acc


def _classify(W0, kappas, Mb, tier):
    """Gershgorin bound and the first tier whose interval covers each block (-1: none)."""
    B, n, b1 = W0.shape
    T = np.empty((n + b1, b1))
    for blk in range(B):
        M = _gershgorin(W0, blk)
        Mb[blk] = M
        tier[blk] = -1
        if M > 0.0:
            for tt in range(kappas.size):
                if _positive_definite(W0, blk, M / kappas[tt], T):
                    tier[blk] = tt
                    break


def _run_pack(W0, rhs, h, members, nm, offs, d0s, As, Cs, kappas, nps, Mb, tier,
              W, Z, U, Dinv, lj, zacc, acc0, sh, bet, lane_blk, v, qb, s, y, ok):
    """All poles of the blocks ``members[:nm]`` side by side in one set of lanes."""
    n = W0.shape[1]
    nr = W.shape[0]
    nl = 0
    for j in range(nm):
        blk = members[j]
        t = tier[blk]
        lam = Mb[blk] / kappas[t]
        sq = np.sqrt(lam)
        offs[j] = nl
        for k in range(nps[t]):
            sh[nl + k] = lam * Cs[t, k]
            bet[nl + k] = d0s[t] * As[t, k] * sq
            lane_blk[nl + k] = blk
        nl += nps[t]
    _load(W0, lane_blk, sh, nl, W)
    good = _factor(W, Dinv, n, nl, lj)
    _takahashi(W, Dinv, n, nl, Z, zacc, acc0)
    for q in range(2):
        for i in range(nr):
            for k in range(nl):
                U[q, i, k] = 0.0 if i >= n else (1.0 if q == 0 else rhs[lane_blk[k], i])
        _solve(W, Dinv, n, nl, U, q)
    for j in range(nm):
        blk = members[j]
        t = tier[blk]
        ok[blk] = good
        sq = np.sqrt(Mb[blk] / kappas[t])
        _combine(W0, rhs, blk, h, offs[j], nps[t], d0s[t] / sq, bet, sh, Z, U, v, qb, s, y)


def _kernel(W0, rhs, h, d0s, As, Cs, kappas, nps, lanes, qb, s, y, ok, tier):
    """Classify the blocks, pack them ``lanes`` poles at a time, run every pack."""
    B, n, b1 = W0.shape
    nr = n + b1 - 1
    Mb = np.empty(B)
    _classify(W0, kappas, Mb, tier)
    W = np.empty((nr, b1, lanes))
    Z = np.empty((nr, b1, lanes))
    U = np.empty((2, nr, lanes))
    Dinv = np.empty((n, lanes))
    lj = np.empty((b1, lanes))
    zacc = np.empty(lanes)
    acc0 = np.empty(lanes)
    sh = np.empty(lanes)
    bet = np.empty(lanes)
    lane_blk = np.zeros(lanes, dtype=np.int64)
    v = np.empty((2, n))
    members = np.empty(lanes, dtype=np.int64)
    offs = np.empty(lanes, dtype=np.int64)
    nm = 0
    used = 0
    for blk in range(B + 1):
        t = tier[blk] if blk < B else -1
        if blk < B:
            ok[blk] = False
        if nm > 0 and (blk == B or (t >= 0 and used + nps[t] > lanes)):
            _run_pack(W0, rhs, h, members, nm, offs, d0s, As, Cs, kappas, nps, Mb, tier,
                      W, Z, U, Dinv, lj, zacc, acc0, sh, bet, lane_blk, v, qb, s, y, ok)
            nm = 0
            used = 0
        if t >= 0:
            members[nm] = blk
            nm += 1
            used += nps[t]


#: compiled by :func:`_build` (callees before callers)
_NUMBA_FUNCS = ("_gershgorin", "_positive_definite", "_load", "_factor", "_takahashi",
                "_solve", "_combine", "_classify", "_run_pack", "_kernel")


def _build():
    """Compile the kernels (once per process; numba's on-disk cache makes later starts fast).

    The functions below are plain Python until then: each is replaced in this module by its
    compiled version, so the kernels call each other compiled.
    """
    from numba import njit

    g = globals()
    for name in _NUMBA_FUNCS:
        g[name] = njit(**_FLAGS)(g[name])
    return {name.lstrip("_"): g[name] for name in _NUMBA_FUNCS}


def _get_kernel():
    global _compiled
    if _compiled is None:
        _compiled = _build()
    return _compiled["kernel"]


def _tier_tables(tiers):
    kmax = max(k for k, _ in tiers)
    d0s, As, Cs = np.zeros(len(tiers)), np.zeros((len(tiers), kmax)), np.ones((len(tiers), kmax))
    for i, (k, kappa) in enumerate(tiers):
        d0, a, c, _ = zolotarev_invsqrt(k, kappa)
        d0s[i], As[i, :k], Cs[i, :k] = d0, a, c
    return (d0s, As, Cs, np.array([kp for _, kp in tiers], dtype=np.float64),
            np.array([k for k, _ in tiers], dtype=np.int64))


def band_sqrt(W0, rhs, h: int, *, tiers=TIERS, lanes: int = LANES, return_tier: bool = False):
    """Same inputs and outputs as :func:`gpuspec.coadd.sqrtm_band.band_sqrt` (host arrays).

    ``tiers``: the (poles, kappa) approximations tried in turn per block (default
    :data:`TIERS`; ``((NPOLES, KAPPA),)`` reproduces the array path exactly). With
    ``return_tier`` the index of the tier used per block (-1: none) is returned too.

    Backends: numpy (Numba).
    """
    W0 = np.ascontiguousarray(W0, dtype=np.float64)
    rhs = np.ascontiguousarray(rhs, dtype=np.float64)
    B, n, _ = W0.shape
    qb = np.zeros((B, n, h + 1))
    s = np.zeros((B, n))
    y = np.zeros((B, n))
    ok = np.empty(B, dtype=np.bool_)
    tier = np.empty(B, dtype=np.int64)
    tabs = _tier_tables(tuple(tiers))
    lanes = max(int(lanes), int(tabs[-1].max()))
    _get_kernel()(W0, rhs, int(h), *tabs, lanes, qb, s, y, ok, tier)
    return (qb, s, y, ok, tier) if return_tier else (qb, s, y, ok)
