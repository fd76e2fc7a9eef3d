"""Legendre series through ``xp`` (numpy or cupy), batched over fibers."""

from __future__ import annotations

__all__ = ["reduced", "legval_batch", "legder_coeffs"]


def reduced(wave, wmin: float, wmax: float):
    """Reduced variable u = 2(λ − wmin)/(wmax − wmin) − 1 (u ∈ [−1, 1] on the domain).

    Backends: numpy and cupy (any array module). or scalars.
    """
    return 2.0 * (wave - wmin) / (wmax - wmin) - 1.0


def legval_batch(u, coeff, xp):
    """Evaluate per-fiber Legendre series.

    Parameters
    ----------
    u : array (nfib, nwave) or (nwave,)
        Reduced variable; a 1-D ``u`` is shared by all fibers.
    coeff : array (nfib, ndeg+1)
        Coefficients of each fiber's series.
    xp : module
        numpy or cupy.

    Returns
    -------
    array (nfib, nwave)

    Backends: numpy, cupy.
    """
    coeff = xp.asarray(coeff)
    u = xp.asarray(u, dtype=xp.float64)
    if u.ndim == 1:
        u = xp.broadcast_to(u[None, :], (coeff.shape[0], u.shape[0]))
    ncoef = coeff.shape[1]
    p_prev = xp.ones_like(u)
    out = coeff[:, 0:1] * p_prev
    if ncoef == 1:
        return out
    p = u
    out = out + coeff[:, 1:2] * p
    for n in range(2, ncoef):
        p_prev, p = p, ((2 * n - 1) * u * p - (n - 1) * p_prev) / n
        out = out + coeff[:, n : n + 1] * p
    return out


def legder_coeffs(coeff, xp):
    """Coefficients (nfib, ndeg) of d/du of per-fiber Legendre series (nfib, ndeg+1).

    Uses P'_{n+1} − P'_{n−1} = (2n+1) P_n.

    Backends: numpy and cupy (computed on the host once, returned on ``xp``).
    """
    import numpy as np

    c = np.array(coeff if xp is np else xp.asnumpy(coeff), dtype=np.float64, copy=True)
    n = c.shape[1] - 1
    der = np.zeros((c.shape[0], max(n, 1)))
    for j in range(n, 0, -1):
        der[:, j - 1] = (2 * j - 1) * c[:, j]
        if j >= 2:
            c[:, j - 2] += c[:, j]
    return xp.asarray(der)
