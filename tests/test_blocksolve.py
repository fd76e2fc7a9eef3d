"""The block-sparse host solve (gpuspec.extract.blocksolve) against dense linear algebra.

Matrices are built like a patch's normal matrix: F fibers of nw unknowns, each fiber
coupled to the fibers within ``reach`` of it (banded in wavelength inside a block), in
slot order (the not-kept fibers first). The reference is numpy's dense inverse.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpuspec.extract import blocksolve
from gpuspec.extract.solve import _solve_tail_host, solve_tail


def _patch(rng, F=7, nw=9, reach=2, kept=(1, 2, 3, 4, 5), scale=1.0):
    """(M, b, perm, pattern in slot order) of one synthetic patch."""
    n = F * nw
    A = np.zeros((n, n))
    for f in range(F):
        for g in range(max(0, f - reach), min(F, f + reach + 1)):
            blk = rng.normal(size=(nw, nw)) * (0.3 if f != g else 1.0) * scale ** abs(f - g)
            i, j = np.indices((nw, nw))
            blk[np.abs(i - j) > 3] = 0.0                     # banded in wavelength
            A[f * nw:(f + 1) * nw, g * nw:(g + 1) * nw] = blk
    M = A @ A.T + 0.5 * np.eye(n)          # couples fibers up to 2·reach apart
    keep = np.zeros(F, bool)
    keep[list(kept)] = True
    perm = np.argsort(keep, kind="stable")                   # not-kept first (layout)
    order = (perm[:, None] * nw + np.arange(nw)).reshape(-1)
    Ms = M[np.ix_(order, order)]
    nzb = np.abs(Ms.reshape(F, nw, F, nw)).max(axis=(1, 3)) > 0
    return Ms, rng.normal(size=n), perm, nzb, int(keep.sum())


def _dense(M, b, F, nw, NK):
    C = np.linalg.inv(M)
    k = (F - NK) * nw
    return np.linalg.solve(M, b), np.array(
        [C[k + s * nw:k + (s + 1) * nw, k + s * nw:k + (s + 1) * nw] for s in range(NK)])


@pytest.mark.parametrize("reach,kept", [(1, (1, 2, 3, 4, 5)), (1, (0, 1, 2, 3, 4)),
                                        (2, (2, 3, 4)), (0, (1, 3)), (3, (0, 6))])
def test_block_solve_matches_dense(rng, reach, kept):
    F, nw = 7, 9
    M, b, perm, nzb, NK = _patch(rng, F, nw, reach, kept)
    assert not nzb.all() or reach == 3          # the pattern has zero blocks to skip
    x, Cb, failed = blocksolve.solve_tail_blocks(M[None], b[None], NK * nw, nw, nzb[None])
    assert failed.size == 0
    xr, Cr = _dense(M, b, F, nw, NK)
    np.testing.assert_allclose(x[0], xr, rtol=0, atol=1e-12 * np.abs(xr).max())
    np.testing.assert_allclose(Cb[0], Cr, rtol=0, atol=1e-12 * np.abs(Cr).max())


def test_fill_pattern_fills_the_kept_blocks():
    # slot 0 couples with slots 2 and 4, which are not coupled to each other: eliminating
    # slot 0 fills (4, 2); slot 1 couples with nothing
    pat = np.eye(5, dtype=bool)
    pat[0, 2] = pat[2, 0] = pat[0, 4] = pat[4, 0] = True
    below = blocksolve.fill_pattern(pat)
    assert below == ((2, 4), (), (4,), (), ())


def test_pattern_missing_a_block_gives_wrong_numbers(rng):
    """The pattern is trusted: a nonzero block left out of it changes the result (so the
    kernel's ``coupled`` must cover every block it writes, tests/test_extract_numba.py)."""
    F, nw = 7, 9
    M, b, perm, nzb, NK = _patch(rng, F, nw, 1, (1, 2, 3, 4, 5))
    s, t = np.argwhere(np.triu(nzb, 1))[0]
    bad = nzb.copy()
    bad[s, t] = bad[t, s] = False
    x, Cb, _ = blocksolve.solve_tail_blocks(M[None], b[None], NK * nw, nw, bad[None])
    xr, _ = _dense(M, b, F, nw, NK)
    assert np.abs(x[0] - xr).max() > 1e-6 * np.abs(xr).max()


def test_not_positive_definite_goes_to_the_dense_path(rng):
    """A pivot block that fails is reported, and solve_tail's numpy path then solves that
    patch as before (dpotrf of the whole matrix, then the eigh fallback)."""
    F, nw = 5, 6
    M, b, perm, nzb, NK = _patch(rng, F, nw, 1, (1, 2, 3))
    Mbad = M.copy()
    w, V = np.linalg.eigh(Mbad[-nw:, -nw:])
    Mbad[-nw:, -nw:] -= (w[-1] + 1.0) * np.outer(V[:, -1], V[:, -1])   # indefinite block
    Ms = np.stack([M, Mbad])
    bs = np.stack([b, b])
    pats = np.stack([nzb, nzb])
    x, Cb, failed = blocksolve.solve_tail_blocks(Ms, bs, NK * nw, nw, pats)
    assert failed.tolist() == [1]
    xh, Ch = _solve_tail_host(Ms.copy(), bs, NK * nw, nw, pats)
    xd, Cd = _solve_tail_host(Ms.copy(), bs, NK * nw, nw)          # the dense path
    np.testing.assert_allclose(xh, xd, rtol=0, atol=1e-12 * np.abs(xd).max())
    np.testing.assert_allclose(Ch, Cd, rtol=0, atol=1e-12 * np.abs(Cd).max())
    assert np.isfinite(xh).all()
    # a failed patch leaves nothing behind for the next ones of the chunk (its work
    # blocks are reused), whatever their patterns
    M2, b2, _, nzb2, _ = _patch(rng, F, nw, 0, (1, 2, 3))
    Ms = np.stack([Mbad, M, M2])
    bs = np.stack([b, b, b2])
    x, Cb, failed = blocksolve.solve_tail_blocks(Ms, bs, NK * nw, nw,
                                                 np.stack([nzb, nzb, nzb2]))
    assert failed.tolist() == [0]
    for k, (Mk, bk) in enumerate(((M, b), (M2, b2)), start=1):
        xr, Cr = _dense(Mk, bk, F, nw, NK)
        np.testing.assert_allclose(x[k], xr, rtol=0, atol=1e-12 * np.abs(xr).max())
        np.testing.assert_allclose(Cb[k], Cr, rtol=0, atol=1e-12 * np.abs(Cr).max())


def test_solve_tail_with_a_pattern_matches_the_dense_path(rng):
    """solve_tail with a pattern on numpy equals solve_tail without one (the dense LAPACK
    path) to rounding."""
    F, nw = 6, 8
    M, b, perm, nzb, NK = _patch(rng, F, nw, 2, (1, 2, 3, 4))
    x1, C1, _ = solve_tail(M[None].copy(), b[None], NK * nw, nw, pattern=nzb[None])
    x2, C2, _ = solve_tail(M[None].copy(), b[None], NK * nw, nw)
    np.testing.assert_allclose(x1, x2, rtol=0, atol=1e-12 * np.abs(x2).max())
    np.testing.assert_allclose(C1, C2, rtol=0, atol=1e-12 * np.abs(C2).max())


def test_block_flops_below_dense():
    """At DESI's pattern (reach 2, 7 fibers, 5 kept) the block solve does ~1.7x fewer
    flops than dpotrf of the whole matrix plus the block substitution (every product
    a dense dgemm of nw-blocks)."""
    F, nw, NK = 7, 73, 5
    pat = np.abs(np.subtract.outer(np.arange(F), np.arange(F))) <= 2
    keep = np.zeros(F, bool)
    keep[1:6] = True
    perm = np.argsort(keep, kind="stable")
    below = blocksolve.fill_pattern(pat[np.ix_(perm, perm)])
    fl = blocksolve.block_flops(below, nw, F - NK)
    n = F * nw
    # dpotrf of the whole matrix, then solve._inverse_block_columns: per kept block column
    # s a trtri and Z_ssᵀZ_ss, per row t > s (t − s) products, −Z_tt·v and zᵀz
    subst = sum(nw ** 3 / 3 + 2 * nw ** 3 + sum(2 * nw ** 3 * ((t - s) + 2)
                                               for t in range(s + 1, NK)) for s in range(NK))
    dense = n ** 3 / 3 + subst
    assert 1.5 < dense / (fl["factor"] + fl["selected_inverse"]) < 2.0
