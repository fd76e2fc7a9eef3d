"""Weighted least-squares cubic splines, batched over fibers (desispec ``spline_fit``).

desispec's ``linalg.spline_fit(output_wave, input_wave, input_flux, res, ivar)``
places interior knots every ``res`` between the first and last point with positive
weight, drops knots farther than the (adjusted) spacing from any point, fits a cubic
least-squares spline with FITPACK (``splrep(task=-1, w=ivar)``, which minimises
``sum (w_i (y_i - s(x_i)))**2``, i.e. weights ``ivar**2``) and evaluates it, with
polynomial extrapolation, at the output wavelengths.

:func:`spline_fit` does the same for many fibers at once on a common grid: each fiber
gets its own knots (its own first/last valid point, gaps and resolution), knot vectors
are padded to a common length with zero-width intervals, the normal equations are
banded (bandwidth 3) and solved by a batched banded Cholesky. The solution equals
FITPACK's to rounding (FITPACK solves the same least-squares problem by Givens
rotations). Where FITPACK would fail (fewer than 4 points, more knots than points
allow, a basis function without data) the fiber is retried at ``max_resolution`` and
reported as failed if that fails too, as desispec does by raising.

Backends: numpy, cupy. No synchronisation except one scalar read to decide on the
``max_resolution`` retry and one to size the knot arrays when ``res`` is an array.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module

__all__ = ["spline_fit"]

_K = 3  # cubic


def _take(a, idx):
    xp = get_array_module(a, idx)
    return xp.take_along_axis(a, idx, axis=1)


def _knots(xp, x, valid, res, kmax):
    """Interior knots per fiber, compacted to the front and padded with the end point."""
    nf, n = valid.shape
    idx = xp.arange(n)
    nvalid = valid.sum(axis=1)
    first = xp.argmax(valid, axis=1)
    last = n - 1 - xp.argmax(valid[:, ::-1], axis=1)
    w1, w2 = x[first], x[last]
    nk = xp.floor((w2 - w1) / res).astype(np.int64)
    nk = xp.where(nvalid >= 2, nk, 0)
    resp = (w2 - w1) / (nk + 1)
    resp = xp.where(resp > 0, resp, 1.0)
    k = xp.arange(kmax)
    knots = w1[:, None] + resp[:, None] * (0.5 + k[None, :])
    exists = k[None, :] < nk[:, None]
    # nearest valid point of each knot: the last valid point <= t and the next one
    cv = xp.cumsum(valid, axis=1)  # number of valid points up to and including i
    vpos = xp.full((nf, n + 1), n - 1, dtype=np.int64)
    rows = xp.arange(nf)[:, None]
    vpos[rows, xp.where(valid, cv - 1, n)] = idx[None, :]
    g = xp.searchsorted(x, knots, side="right") - 1
    c = xp.where(g >= 0, _take(cv, xp.clip(g, 0, n - 1)), 0)
    prev = _take(vpos, xp.clip(c - 1, 0, n))
    nxt = _take(vpos, xp.clip(c, 0, n))
    big = xp.inf
    dprev = xp.where(c >= 1, knots - x[prev], big)
    dnext = xp.where(c < nvalid[:, None], x[nxt] - knots, big)
    keep = exists & (xp.minimum(dprev, dnext) < resp[:, None])
    kc = xp.cumsum(keep, axis=1)
    nkeep = kc[:, -1] if kmax else xp.zeros(nf, np.int64)
    kept = xp.repeat(w2[:, None], kmax + 1, axis=1)
    kept[rows, xp.where(keep, kc - 1, kmax)] = knots
    keepcum = xp.concatenate([xp.zeros((nf, 1), np.int64), kc], axis=1)
    return dict(w1=w1, w2=w2, nk=nk, resp=resp, keepcum=keepcum, nkeep=nkeep,
                kept=kept[:, :kmax], nvalid=nvalid)


def _interval(xp, xq, kn):
    """Interval index ``l - 3`` (number of kept knots <= x) of each query point."""
    nk = kn["nk"]
    u = xp.floor((xq[None, :] - kn["w1"][:, None]) / kn["resp"][:, None] - 0.5) + 1
    u = xp.clip(u, 0, nk[:, None]).astype(np.int64)
    return _take(kn["keepcum"], u)


def _basis(xp, T, l, xq):
    """Values of the 4 cubic B-splines that are non-zero on interval ``l`` (Cox–de Boor)."""
    nf, tl = T.shape
    flat = T.reshape(-1)
    base = l + (xp.arange(nf) * tl)[:, None]
    x = xq[None, :]
    t = {o: flat[base + o] for o in range(-2, 4)}                   # T[l + o], contiguous
    left = [None] + [x - t[1 - j] for j in range(1, _K + 1)]
    right = [None] + [t[j] - x for j in range(1, _K + 1)]
    B = [xp.ones(l.shape, dtype=np.float64)]
    for j in range(1, _K + 1):
        saved = None
        new = []
        for r in range(j):
            den = right[r + 1] + left[j - r]
            temp = B[r] / xp.where(den != 0, den, 1.0)
            v = right[r + 1] * temp
            new.append(v if saved is None else v + saved)
            saved = left[j - r] * temp
        new.append(saved)
        B = new
    return B  # list of 4 arrays (nfib, nq)


def _segment_sums(xp, g, lk, nint, runs=None):
    """``S[f, k] = sum_{i: lk[f, i] == k} g[f, i]`` for ``lk`` non-decreasing along i.

    ``runs`` = ``(lk_start(...), lk_end(...))`` when already computed for this ``lk``.
    """
    nf, n = g.shape
    start, end = runs if runs is not None else (lk_start(xp, lk, nint), lk_end(xp, lk, nint))
    cs = xp.concatenate([xp.zeros((nf, 1), g.dtype), xp.cumsum(g, axis=1)], axis=1)
    return _take(cs, end) - _take(cs, start)


def lk_start(xp, lk, nint):
    """First index of each run of ``lk`` (0 for empty runs; with lk_end gives empty sums).

    Backends: numpy, cupy (the ``xp`` argument).
    """
    nf, n = lk.shape
    i = xp.arange(n)
    isstart = xp.ones(lk.shape, bool)
    isstart[:, 1:] = lk[:, 1:] != lk[:, :-1]
    out = xp.zeros((nf, nint + 1), np.int64)
    out[xp.arange(nf)[:, None], xp.where(isstart, lk, nint)] = i[None, :]
    return out[:, :nint]


def lk_end(xp, lk, nint):
    """One past the last index of each run of ``lk`` (0 for empty runs).

    Backends: numpy, cupy (the ``xp`` argument).
    """
    nf, n = lk.shape
    i = xp.arange(n)
    isend = xp.ones(lk.shape, bool)
    isend[:, :-1] = lk[:, :-1] != lk[:, 1:]
    out = xp.zeros((nf, nint + 1), np.int64)
    out[xp.arange(nf)[:, None], xp.where(isend, lk, nint)] = i[None, :] + 1
    return out[:, :nint]


def _band_cholesky_solve(xp, ab, b):
    """Solve banded SPD systems ``(nb, p+1, F)`` lower storage, rhs ``(nb, F)``; batched."""
    nb, p1, nf = ab.shape
    p = p1 - 1
    L = xp.zeros_like(ab)
    bad = xp.zeros(nf, bool)
    for j in range(nb):
        s = ab[j, 0].copy()
        for k in range(1, min(p, j) + 1):
            s -= L[j - k, k] ** 2
        bad |= ~(s > 0)
        d = xp.sqrt(xp.where(s > 0, s, 1.0))
        L[j, 0] = d
        for m in range(1, min(p, nb - 1 - j) + 1):
            s = ab[j, m].copy()
            for k in range(1, min(p - m, j) + 1):
                s -= L[j - k, m + k] * L[j - k, k]
            L[j, m] = s / d
    z = xp.zeros_like(b)
    for j in range(nb):
        s = b[j].copy()
        for k in range(1, min(p, j) + 1):
            s -= L[j - k, k] * z[j - k]
        z[j] = s / L[j, 0]
    xs = xp.zeros_like(b)
    for j in range(nb - 1, -1, -1):
        s = z[j].copy()
        for k in range(1, min(p, nb - 1 - j) + 1):
            s -= L[j, k] * xs[j + k]
        xs[j] = s / L[j, 0]
    return xs, bad


def _fit_once(xp, xq, x, y, wgt, res, kmax):
    nf, n = y.shape
    valid = wgt > 0
    kn = _knots(xp, x, valid, res, kmax)
    xb = kn["w1"][:, None]
    xe = kn["w2"][:, None]
    T = xp.concatenate([xp.repeat(xb, _K + 1, axis=1), kn["kept"],
                        xp.repeat(xe, _K + 1, axis=1)], axis=1)
    nint = kmax + 1
    nb = kmax + _K + 1
    lk = _interval(xp, x, kn)                       # (F, n) in 0 .. nkeep
    B = _basis(xp, T, lk + _K, x)
    ww = xp.where(valid, wgt, 0.0) ** 2             # FITPACK weights w -> w**2
    yv = xp.where(valid, y, 0.0)
    runs = (lk_start(xp, lk, nint), lk_end(xp, lk, nint))
    ab = xp.zeros((nb, _K + 1, nf))
    rhs = xp.zeros((nb, nf))
    cnt = xp.zeros((nb, nf))
    wy = ww * yv
    for p in range(_K + 1):
        rhs[p:p + nint] += _segment_sums(xp, wy * B[p], lk, nint, runs).T
        wb = ww * B[p]
        for m in range(_K + 1 - p):
            ab[p:p + nint, m] += _segment_sums(xp, wb * B[p + m], lk, nint, runs).T
        # Schoenberg-Whitney (approximately): every basis function needs a point inside it
        cnt[p:p + nint] += _segment_sums(xp, valid * (B[p] > 0) * 1.0, lk, nint, runs).T
    # coefficients beyond the fiber's own basis (padding) are zero-width: identity rows
    j = xp.arange(nb)[:, None]
    real = j < (kn["nkeep"][None, :] + _K + 1)
    empty = real & ~(cnt > 0)
    failed = xp.any(empty, axis=0)
    ab[:, 0] = xp.where(real & ~empty, ab[:, 0], 1.0)
    ab[:, 1:] = xp.where((real & ~empty)[:, None, :], ab[:, 1:], 0.0)
    for m in range(1, _K + 1):  # also the couplings *into* removed coefficients
        ok_m = xp.zeros((nb, nf), bool)
        ok_m[: nb - m] = (real & ~empty)[m:]
        ab[:, m] = xp.where(ok_m, ab[:, m], 0.0)
    rhs = xp.where(real & ~empty, rhs, 0.0)
    coef, bad = _band_cholesky_solve(xp, ab, rhs)
    coef = coef.T                                   # (F, nb)
    failed = failed | bad | (kn["nvalid"] < _K + 1) | \
        (kn["nkeep"] + 2 * (_K + 1) > kn["nvalid"] + _K + 1)
    lq = _interval(xp, xq, kn)
    Bq = B if xq is x else _basis(xp, T, lq + _K, xq)
    out = xp.zeros((nf, xq.shape[0]))
    for p in range(_K + 1):
        out += _take(coef, lq + p) * Bq[p]
    return out, failed


def _kmax(x, res):
    span = float(x[-1] - x[0]) if x.shape[0] else 0.0
    return int(span / float(res)) + 1


def spline_fit(xq, x, y, weight, res, max_resolution=None, res_min=None):
    """Batched desispec ``spline_fit``: weighted cubic LSQ splines on a common grid.

    Parameters
    ----------
    xq : array (nq,)
        Output abscissae (sorted).
    x : array (n,)
        Input abscissae shared by all fibers (sorted).
    y, weight : array (nfib, n)
        Values and desispec weights (``input_ivar``); points with weight <= 0 are
        not used (desispec's callers pass only those with positive weight).
    res : float or array (nfib,)
        Knot spacing, in the unit of ``x``.
    max_resolution : float, optional
        Spacing of the second try for fibers whose first fit fails (desispec's
        ``max_resolution``).
    res_min : float, optional
        A lower bound of ``res`` (sizes the knot arrays without reading ``res``).

    Returns
    -------
    values : array (nfib, nq)
    failed : bool array (nfib,)
        Fibers for which desispec's ``spline_fit`` raises (their values are
        meaningless).

    Backends: numpy, cupy.
    """
    xp = get_array_module(x, y, weight)
    nf = y.shape[0]
    if np.ndim(res) == 0:
        res_arr = xp.full(nf, float(res))
        kmax = _kmax(x, float(res))
    else:
        res_arr = res
        kmax = _kmax(x, res_min if res_min is not None else float(res.min()))
    out, failed = _fit_once(xp, xq, x, y, weight, res_arr, kmax)
    if max_resolution is not None and bool(xp.any(failed)):
        retry = failed & (res_arr < max_resolution)
        out2, failed2 = _fit_once(xp, xq, x, y, weight, xp.full(nf, float(max_resolution)),
                                  _kmax(x, float(max_resolution)))
        out = xp.where(retry[:, None], out2, out)
        failed = xp.where(retry, failed2, failed)
    return out, failed
