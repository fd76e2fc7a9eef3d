"""Small batched array helpers of the calibration steps (NumPy and CuPy).

All functions take and return arrays of one backend and never synchronise the device.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module

__all__ = ["masked_median", "masked_interp", "interp_rows", "max_run_length", "combine_ivar",
           "resample_flux", "top_k_mask", "first_true", "last_true"]


def masked_median(a, valid, axis: int = 0, default=0.0):
    """Median of ``a`` over ``axis`` using only the ``valid`` entries.

    Same value as ``np.median(a[valid])`` along the axis (the mean of the two middle
    values for an even count); ``default`` (scalar or array broadcastable to the
    result) where no entry is valid.

    Backends: numpy, cupy (sort-based, NaN-free).
    """
    xp = get_array_module(a, valid)
    a = xp.moveaxis(a, axis, -1)
    valid = xp.moveaxis(valid, axis, -1)
    s = xp.sort(xp.where(valid, a, xp.inf), axis=-1)
    k = valid.sum(axis=-1)
    lo = xp.clip((k - 1) // 2, 0, None)
    hi = xp.clip(k // 2, 0, a.shape[-1] - 1)
    vlo = xp.take_along_axis(s, lo[..., None], axis=-1)[..., 0]
    vhi = xp.take_along_axis(s, hi[..., None], axis=-1)[..., 0]
    med = 0.5 * (vlo + vhi)
    return xp.where(k > 0, med, default)


def first_true(b, axis: int = -1):
    """Index of the first True along ``axis`` (0 when none).

    Backends: numpy, cupy (whatever ``b`` is).
    """
    xp = get_array_module(b)
    return xp.argmax(b, axis=axis)


def last_true(b, axis: int = -1):
    """Index of the last True along the last axis (n - 1 when none).

    Backends: numpy, cupy (whatever ``b`` is).
    """
    xp = get_array_module(b)
    n = b.shape[-1]
    return n - 1 - xp.argmax(b[..., ::-1], axis=-1)


def _valid_positions(good):
    """``vpos[f, j]`` = index of the (j+1)-th good entry of row f; ``cv`` = cumulative count."""
    xp = get_array_module(good)
    nf, n = good.shape
    cv = xp.cumsum(good, axis=1)
    vpos = xp.zeros((nf, n + 1), dtype=np.int64)
    vpos[xp.arange(nf)[:, None], xp.where(good, cv - 1, n)] = xp.arange(n)[None, :]
    return vpos, cv


def masked_interp(xq, x, y, good, left=None, right=None):
    """Row-wise ``np.interp(xq, x[good[f]], y[f, good[f]], left, right)``.

    Parameters
    ----------
    xq : array (nq,)
    x : array (n,) sorted, shared by all rows
    y : array (nf, n)
    good : bool array (nf, n)
        Rows without any good entry return zeros (callers skip them, as desispec does).

    Returns
    -------
    array (nf, nq)

    Backends: numpy, cupy (whatever ``x``, ``y``, ``good`` are).
    """
    xp = get_array_module(x, y, good)
    nf, n = y.shape
    vpos, cv = _valid_positions(good)
    ng = cv[:, -1]
    g = xp.searchsorted(x, xq, side="right") - 1              # last grid index <= xq
    c = xp.where(g[None, :] >= 0, cv[:, xp.clip(g, 0, n - 1)], 0)  # good entries <= xq
    i0 = xp.take_along_axis(vpos, xp.clip(c - 1, 0, n), axis=1)
    i1 = xp.take_along_axis(vpos, xp.clip(c, 0, n), axis=1)
    i0 = xp.where(c >= 1, i0, i1)                              # left of all good: first good
    i1 = xp.where(c < ng[:, None], i1, i0)                     # right of all good: last good
    x0, x1 = x[i0], x[i1]
    y0 = xp.take_along_axis(y, xp.clip(i0, 0, n - 1), axis=1)
    y1 = xp.take_along_axis(y, xp.clip(i1, 0, n - 1), axis=1)
    dx = x1 - x0
    t = xp.where(dx > 0, (xq[None, :] - x0) / xp.where(dx > 0, dx, 1.0), 0.0)
    out = y0 + t * (y1 - y0)
    if left is not None:
        out = xp.where(c == 0, left, out)
    if right is not None:
        out = xp.where(xq[None, :] > x[i1], right, out)
    return xp.where(ng[:, None] > 0, out, 0.0)


def interp_rows(xq, x, y, left=None, right=None):
    """``np.interp(xq, x, y[f])`` for every row f of ``y`` (nodes shared by all rows).

    Backends: numpy, cupy (whatever ``x`` and ``y`` are).
    """
    xp = get_array_module(x, y)
    n = x.shape[0]
    j = xp.clip(xp.searchsorted(x, xq, side="right") - 1, 0, n - 2)
    x0, x1 = x[j], x[j + 1]
    t = (xq - x0) / (x1 - x0)
    out = y[..., j] + t * (y[..., j + 1] - y[..., j])
    lo = y[..., :1] if left is None else left
    hi = y[..., -1:] if right is None else right
    out = xp.where(xq < x[0], lo, out)
    out = xp.where(xq > x[-1], hi, out)
    return out


def max_run_length(b):
    """Longest run of consecutive True in each row of ``b`` (nf, n).

    Backends: numpy, cupy (whatever ``b`` is).
    """
    from .spline import _segment_sums

    xp = get_array_module(b)
    nf, n = b.shape
    runid = xp.cumsum(~b, axis=1)  # constant along a run of True, non-decreasing
    counts = _segment_sums(xp, b * 1.0, runid, n + 1)
    return counts.max(axis=1).astype(np.int64)


def top_k_mask(score, candidate, k: int):
    """True for at most the ``k`` largest ``score`` values among ``candidate`` of each row.

    Backends: numpy, cupy (whatever ``score`` is).
    """
    xp = get_array_module(score, candidate)
    s = xp.where(candidate, score, -xp.inf)
    if s.shape[1] <= k:
        return candidate.copy()
    order = xp.argsort(s, axis=1)[:, -k:]
    out = xp.zeros(s.shape, bool)
    rows = xp.arange(s.shape[0])[:, None]
    out[rows, order] = True
    return out & candidate


def combine_ivar(ivar1, ivar2):
    """Inverse variance of a sum: ``1/(1/ivar1 + 1/ivar2)``, 0 where either is 0.

    Backends: numpy, cupy (whatever ``ivar1`` is).
    """
    xp = get_array_module(ivar1, ivar2)
    good = (ivar1 > 0) & (ivar2 > 0)
    a = xp.where(good, ivar1, 1.0)
    b = xp.where(good, ivar2, 1.0)
    return xp.where(good, 1.0 / (1.0 / a + 1.0 / b), 0.0)


def resample_flux(xout, x, flux):
    """Flux-conserving resampling of densities ``flux`` (..., n) from ``x`` to ``xout``.

    The input is the piecewise-linear function through ``(x, flux)``, zero beyond
    half a step outside the first and last nodes (desispec ``resample_flux`` without
    extrapolation); each output value is its exact average over the output bin
    (edges half-way between output nodes).

    Backends: numpy, cupy.
    """
    xp = get_array_module(x, flux)
    ix = xp.concatenate([x[:1] * 2 - x[1:2], x, x[-1:] * 2 - x[-2:-1]])
    zeros = xp.zeros(flux.shape[:-1] + (1,), dtype=flux.dtype)
    iy = xp.concatenate([zeros, flux, zeros], axis=-1)
    edges = xp.concatenate([xout[:1] * 1.5 - xout[1:2] * 0.5, 0.5 * (xout[:-1] + xout[1:]),
                            xout[-1:] * 1.5 - xout[-2:-1] * 0.5])
    dx = ix[1:] - ix[:-1]
    slope = (iy[..., 1:] - iy[..., :-1]) / dx
    cum = xp.concatenate([zeros, xp.cumsum(0.5 * (iy[..., 1:] + iy[..., :-1]) * dx, axis=-1)],
                         axis=-1)
    m = ix.shape[0]
    j = xp.clip(xp.searchsorted(ix, edges, side="right") - 1, 0, m - 2)
    t = xp.clip(edges, ix[0], ix[-1]) - ix[j]
    F = cum[..., j] + iy[..., j] * t + 0.5 * slope[..., j] * t * t
    binsize = edges[1:] - edges[:-1]
    if bool(np.any(np.asarray(binsize <= 0) if xp is np else False)):
        raise ValueError("output wavelengths are not increasing")
    return (F[..., 1:] - F[..., :-1]) / binsize
