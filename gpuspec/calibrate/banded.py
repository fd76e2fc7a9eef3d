"""Banded normal equations of resolution-convolved models, batched over fibers.

The calibration fits (fiberflat mean spectrum, sky, flux calibration vector) all solve

    A x = B,   A = sum_f C_f R_f^T W_f R_f C_f,   B = sum_f C_f R_f^T W_f y_f

where ``R_f`` is fiber f's resolution matrix (banded, half-width h, stored as
``rdata[f, d, k] = R_f[k - h + d, k]``, see :mod:`gpuspec.resolution`), ``W_f`` a
diagonal weight and ``C_f`` an optional diagonal column scale. ``A`` is symmetric
with half-bandwidth ``p = 2h``; it is kept in LAPACK lower band storage
``ab[m, i] = A[i + m, i]`` (m = 0 … p), never as a dense matrix on the CPU.

Solvers: NumPy uses LAPACK's banded Cholesky (``scipy.linalg.solveh_banded`` and
``cho_solve_banded``); CuPy, which has no banded solver, expands the band to a
dense matrix and uses cuSOLVER (dense ``n ≈ 3000`` systems are milliseconds on a
GPU). The result is the same to rounding.

Every function accepts NumPy or CuPy arrays and returns the same kind. None of them
synchronises the device except where stated.
"""

from __future__ import annotations

import numpy as np

from ..backend import get_array_module

__all__ = ["shift", "normal_band", "rt_dot", "band_to_dense", "solve_band",
           "inverse_band", "convolved_variance", "band_apply"]


def shift(v, s: int):
    """``out[..., i] = v[..., i + s]`` with zeros where ``i + s`` leaves the array.

    Backends: numpy, cupy (whatever ``v`` is).
    """
    xp = get_array_module(v)
    n = v.shape[-1]
    out = xp.zeros_like(v)
    if s >= 0:
        if s < n:
            out[..., : n - s] = v[..., s:]
    else:
        if -s < n:
            out[..., -s:] = v[..., : n + s]
    return out


def _row_weights(rdata, w):
    """``G[f, d, i] = w[f, i - h + d]`` (weight of the row that ``rdata[f, d, i]`` sits in)."""
    xp = get_array_module(rdata, w)
    ndiag = rdata.shape[-2]
    h = ndiag // 2
    g = xp.empty(rdata.shape, dtype=np.result_type(rdata.dtype, w.dtype))
    for d in range(ndiag):
        g[..., d, :] = shift(w, d - h)
    return g


def normal_band(rdata, w, cscale=None):
    """Lower band of ``A = sum_f C_f R_f^T diag(w_f) R_f C_f``.

    Parameters
    ----------
    rdata : array (nfib, ndiag, nwave)
        Resolution bands.
    w : array (nfib, nwave)
        Row weights (inverse variances, zero for masked pixels).
    cscale : array (nfib, nwave), optional
        Column scales ``C_f`` (e.g. a model spectrum); default 1.

    Returns
    -------
    array (2h + 1, nwave)
        ``ab[m, i] = A[i + m, i]`` (LAPACK lower storage), zero beyond the matrix.

    Backends: numpy, cupy (one einsum per diagonal; no synchronisation).
    """
    xp = get_array_module(rdata, w)
    nfib, ndiag, n = rdata.shape
    H = rdata if cscale is None else rdata * cscale[:, None, :]
    G = _row_weights(rdata, w) * H
    ab = xp.zeros((ndiag, n), dtype=G.dtype)
    # A[i+m, i] = sum_f sum_{d} G[f, d, i] H[f, d - m, i + m]   (rows w = i - h + d)
    for m in range(ndiag):
        if m >= n:
            break
        ab[m, : n - m] = xp.einsum("fdi,fdi->i", G[:, m:, : n - m], H[:, : ndiag - m, m:])
    return ab


def rt_dot(rdata, v, cscale=None):
    """``sum_f C_f R_f^T v_f`` (the right-hand side of the normal equations).

    Parameters
    ----------
    rdata : array (nfib, ndiag, nwave)
    v : array (nfib, nwave)
        Already weighted data, e.g. ``ivar * flux``.
    cscale : array (nfib, nwave), optional

    Returns
    -------
    array (nwave,)

    Backends: numpy, cupy.
    """
    G = _row_weights(rdata, v) * rdata
    out = G.sum(axis=1)
    if cscale is not None:
        out = out * cscale
    return out.sum(axis=0)


def band_to_dense(ab):
    """Dense symmetric matrix of a lower band ``ab`` (tests, CuPy solves).

    Backends: numpy, cupy (whatever ``ab`` is).
    """
    xp = get_array_module(ab)
    p1, n = ab.shape
    A = xp.zeros((n, n), dtype=ab.dtype)
    k = xp.arange(n)
    for m in range(p1):
        if m >= n:
            break
        i = k[: n - m]
        A[i + m, i] = ab[m, : n - m]
        if m:
            A[i, i + m] = ab[m, : n - m]
    return A


def band_apply(ab, x):
    """``A @ x`` for a symmetric lower band ``ab`` and ``x`` (nwave,) or (nwave, k).

    Backends: numpy, cupy (whatever ``ab`` and ``x`` are).
    """
    p1, n = ab.shape
    xx = x if x.ndim == 2 else x[:, None]
    out = ab[0][:, None] * xx
    for m in range(1, min(p1, n)):
        out[m:] += ab[m, : n - m][:, None] * xx[: n - m]
        out[: n - m] += ab[m, : n - m][:, None] * xx[m:]
    return out if x.ndim == 2 else out[:, 0]


def _mask_empty(ab, b=None):
    """Put 1 on the diagonal (and 0 in ``b``) where ``A[i, i] <= 0``.

    desispec solves only the rows with a positive diagonal and leaves the others at
    0; a zero diagonal means a zero row and column, so this is the same system.
    """
    xp = get_array_module(ab)
    good = ab[0] > 0
    ab = ab.copy()
    ab[:, :] = ab * good[None, :]
    for m in range(1, ab.shape[0]):
        ab[m, : ab.shape[1] - m] *= good[m:]
    ab[0] = xp.where(good, ab[0], 1.0)
    if b is not None:
        b = xp.where(good if b.ndim == 1 else good[:, None], b, 0.0)
    return ab, b, good


def solve_band(ab, b):
    """Solve ``A x = b`` for symmetric positive (semi-)definite banded ``A``.

    Rows and columns with ``A[i, i] <= 0`` are left out (x = 0 there), as desispec
    does. NumPy: LAPACK banded Cholesky, falling back to a dense least-squares
    solution when the matrix is not positive definite (desispec's fallback too).
    CuPy: dense solve on the device (cuSOLVER; no positive-definiteness check).

    Parameters
    ----------
    ab : array (p + 1, n)
        Lower band of A.
    b : array (n,) or (n, k)

    Returns
    -------
    array like ``b``

    Backends: numpy, cupy.
    """
    xp = get_array_module(ab, b)
    ab, b, good = _mask_empty(ab, b)
    if xp is np:
        import scipy.linalg

        try:
            x = scipy.linalg.solveh_banded(ab, b, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            x = np.linalg.lstsq(band_to_dense(ab), b, rcond=None)[0]
    else:  # pragma: no cover - GPU only
        x = xp.linalg.solve(band_to_dense(ab), b)
    return xp.where(good if x.ndim == 1 else good[:, None], x, 0.0)


def inverse_band(ab, width: int | None = None, chunk: int = 512):
    """Band ``[0, width]`` of ``A^{-1}`` (lower storage), for the covariance diagonals.

    Rows/columns with a zero diagonal get 0 (desispec's pseudo-inverse gives the same
    there). NumPy: banded Cholesky once, then triangular banded solves on identity
    blocks of ``chunk`` columns (O(n² p), never an n×n array). CuPy: dense inverse.

    Parameters
    ----------
    ab : array (p + 1, n)
    width : int, optional
        Half-width of the band of the inverse to return (default p).

    Returns
    -------
    array (width + 1, n)
        ``out[m, i] = (A^{-1})[i + m, i]``.

    Backends: numpy, cupy.
    """
    xp = get_array_module(ab)
    p1, n = ab.shape
    width = p1 - 1 if width is None else int(width)
    ab, _, good = _mask_empty(ab)
    out = xp.zeros((width + 1, n), dtype=ab.dtype)
    if xp is np:
        import scipy.linalg

        try:
            cb = scipy.linalg.cholesky_banded(ab, lower=True, check_finite=False)
            solve = lambda e: scipy.linalg.cho_solve_banded((cb, True), e,  # noqa: E731
                                                            check_finite=False)
        except np.linalg.LinAlgError:
            pinv = np.linalg.pinv(band_to_dense(ab))
            solve = lambda e: pinv @ e  # noqa: E731
        for j0 in range(0, n, chunk):
            j1 = min(n, j0 + chunk)
            r1 = min(n, j1 + width)
            e = np.zeros((n, j1 - j0))
            e[np.arange(j0, j1), np.arange(j1 - j0)] = 1.0
            cols = solve(e)[j0:r1]  # rows j0 .. r1-1 of columns j0 .. j1-1
            for m in range(width + 1):
                jj = np.arange(j0, min(j1, n - m))
                out[m, jj] = cols[jj + m - j0, jj - j0]
    else:  # pragma: no cover - GPU only
        inv = xp.linalg.inv(band_to_dense(ab))
        k = xp.arange(n)
        for m in range(width + 1):
            out[m, : n - m] = inv[k[: n - m] + m, k[: n - m]]
    out = out * good[None, :]
    for m in range(1, width + 1):
        out[m, : n - m] *= good[m:]
    return out


def convolved_variance(cband, rmean):
    """``diag(R C R^T)`` for a band of a symmetric ``C`` and one resolution matrix ``R``.

    Parameters
    ----------
    cband : array (q + 1, n)
        Lower band of C with ``q >= 2h`` (from :func:`inverse_band`).
    rmean : array (ndiag, n)
        Resolution band (e.g. the mean over fibers, as desispec uses).

    Returns
    -------
    array (n,)

    Backends: numpy, cupy.
    """
    xp = get_array_module(cband, rmean)
    ndiag, n = rmean.shape
    h = ndiag // 2
    if cband.shape[0] < 2 * h + 1:
        raise ValueError(f"covariance band of width {cband.shape[0] - 1} < 2h = {2 * h}")
    # R[w, i] = rmean[d, i] with i = w + h - d; var[w] = sum_{d1,d2} R[w,i1] C[i1,i2] R[w,i2]
    cols = [shift(rmean[d], h - d) for d in range(ndiag)]  # cols[d][w] = R[w, w + h - d]
    var = xp.zeros(n, dtype=np.result_type(cband.dtype, rmean.dtype))
    for d1 in range(ndiag):
        for d2 in range(d1, ndiag):
            # i1 = w + h - d1 >= i2 = w + h - d2; C[i1, i2] = cband[d2 - d1, i2]
            m = d2 - d1
            c = shift(cband[m], h - d2)
            term = cols[d1] * cols[d2] * c
            var = var + (term if m == 0 else 2.0 * term)
    return var
