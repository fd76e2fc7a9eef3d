"""Numba kernel of :mod:`gpuspec.psf.spots_cpu` (imported only when it is used).

One pass per spot, with no temporaries: the pixel-integrated Gauss–Hermite functions
along x and y (:func:`_pix_gh`, the scalar form of
``gpuspec.psf.gausshermite._pix_gh``), the product ``fyᵀ·cᵀ·fx``, the PSF tail, the
clip at 0 and the normalisation. The arithmetic follows
:meth:`gpuspec.psf.gausshermite.GaussHermitePSF.spots` operation for operation; only
``erf`` (libm's against SciPy's) and the order of the stamp sum differ, at the level
of rounding.

Backends: host only (Numba, CPU).
"""

import math

import numpy as np
from numba import njit

__all__ = ["kernel"]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


@njit(cache=True, nogil=True)
def _pix_gh(corner, centre, sig, e, g, he_prev, he, out):
    """out[k, m] for degrees k = 0..deg and the stamp's pixels m, one spot and axis.

    Degree 0 is ½[erf(u_{m+1}/√2) − erf(u_m/√2)]; degree k ≥ 1 is
    He_{k−1}(u_m)G(u_m) − He_{k−1}(u_{m+1})G(u_{m+1}), for the pixel edges u in sigma
    units. ``e``, ``g``, ``he_prev``, ``he`` are scratch of n + 1 edges.

    Backends: host only (Numba)."""
    deg = out.shape[0] - 1
    n = out.shape[1]
    for m in range(n + 1):
        u = (corner + m - 0.5 - centre) / sig
        e[m] = u
        g[m] = math.exp(-0.5 * u ** 2) / _SQRT2PI
        he_prev[m] = 1.0
        he[m] = u
    erf0 = math.erf(e[0] / _SQRT2)
    for m in range(n):
        erf1 = math.erf(e[m + 1] / _SQRT2)
        out[0, m] = 0.5 * (erf1 - erf0)
        erf0 = erf1
    for k in range(1, deg + 1):
        if k == 1:
            for m in range(n):
                out[1, m] = he_prev[m] * g[m] - he_prev[m + 1] * g[m + 1]
        else:
            for m in range(n):
                out[k, m] = he[m] * g[m] - he[m + 1] * g[m + 1]
            for m in range(n + 1):
                h = e[m] * he[m] - (k - 1) * he_prev[m]
                he_prev[m] = he[m]
                he[m] = h


@njit(cache=True, nogil=True)
def kernel(X, Y, sigx, sigy, xc, yc, coef, tail, clip, out, k0):
    """Stamps ``out[f, k0 + k]`` (ny, nx) of every spot (f, k) of the inputs (nf, nw).

    ``coef`` is (nf, nw, degx+1, degy+1); ``tail`` (nf, nw, 5) or (0, 0, 5) when the
    PSF has none; ``xc``, ``yc`` the float corners. Inputs as
    :meth:`gpuspec.psf.gausshermite.GaussHermitePSF.spot_terms` returns them.

    Backends: host only (Numba)."""
    nf, nw = X.shape
    ny, nx = out.shape[2], out.shape[3]
    ndx, ndy = coef.shape[2], coef.shape[3]
    has_tail = tail.shape[0] > 0
    n = max(nx, ny) + 1
    e = np.empty(n)
    g = np.empty(n)
    hp = np.empty(n)
    he = np.empty(n)
    fx = np.empty((ndx, nx))
    fy = np.empty((ndy, ny))
    t = np.empty((ndy, nx))
    for f in range(nf):
        for k in range(nw):
            _pix_gh(xc[f, k], X[f, k], sigx[f, k], e, g, hp, he, fx)
            _pix_gh(yc[f, k], Y[f, k], sigy[f, k], e, g, hp, he, fy)
            c = coef[f, k]
            # t[j, x] = Σ_i c[i, j] fx[i, x]; core[y, x] = Σ_j fy[j, y] t[j, x]
            for j in range(ndy):
                for x in range(nx):
                    t[j, x] = 0.0
                for i in range(ndx):
                    cij = c[i, j]
                    for x in range(nx):
                        t[j, x] += cij * fx[i, x]
            st = out[f, k0 + k]
            for y in range(ny):
                row = st[y]
                for x in range(nx):
                    row[x] = 0.0
                for j in range(ndy):
                    fyj = fy[j, y]
                    for x in range(nx):
                        row[x] += fyj * t[j, x]
            if has_tail:
                amp, core2 = tail[f, k, 0], tail[f, k, 1] ** 2
                xs, ys, p = tail[f, k, 2], tail[f, k, 3], 1 + tail[f, k, 4] / 2.0
                for y in range(ny):
                    dy = (yc[f, k] + y - Y[f, k]) / ys
                    for x in range(nx):
                        dx = (xc[f, k] + x - X[f, k]) / xs
                        r2 = dy ** 2 + dx ** 2
                        st[y, x] += amp * r2 / (core2 + r2) ** p
            if clip:
                s = 0.0
                for y in range(ny):
                    for x in range(nx):
                        v = st[y, x]
                        if v < 0.0:          # NaN stays NaN, as with np.maximum
                            v = 0.0
                        st[y, x] = v
                        s += v
                for y in range(ny):
                    for x in range(nx):
                        st[y, x] = st[y, x] / s
