"""Numba kernel of :mod:`gpuspec.extract.decorrelate_cpu` (imported only when it is used).

Backends: host only (Numba, CPU).
"""

import numpy as np
from numba import njit

__all__ = ["kernel"]

#: The dot products over the eigenvectors may be reassociated and fused (several
#: partial sums, vectorised); results move at the 1e-16 level. No other fast-math
#: flag: NaN and inf keep their IEEE meaning.
_FASTMATH = {"reassoc", "contract"}


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def kernel(V, ws, x, h, s, flux, rd):
    """``s = Q·1``, ``flux = Q·x / s`` and R's band for ``Q = V·diag(ws)·Vᵀ`` per block.

    ``V`` (B, n, n) holds the eigenvectors in its columns, ``ws`` (B, n) the weights,
    ``x`` (B, n) the deconvolved flux. Outputs ``s``, ``flux`` (B, n) and ``rd``
    (B, 2h+1, n): ``rd[b, d, j] = Q[j−h+d, j] / s[j−h+d]``, 0 where ``j−h+d`` is
    outside ``[0, n)``.

    Backends: host only (Numba)."""
    B, n = ws.shape
    nd = 2 * h + 1
    vw = np.empty((n, n))
    u = np.empty(n)
    a = np.empty(n)
    for b in range(B):
        Vb = V[b]
        wb = ws[b]
        xb = x[b]
        # u = diag(ws)·Vᵀ·1, a = diag(ws)·Vᵀ·x
        for m in range(n):
            u[m] = 0.0
            a[m] = 0.0
        for i in range(n):
            xi = xb[i]
            row = Vb[i]
            for m in range(n):
                u[m] += row[m]
                a[m] += row[m] * xi
        for m in range(n):
            u[m] *= wb[m]
            a[m] *= wb[m]
        for i in range(n):
            row = Vb[i]
            si = 0.0
            fi = 0.0
            for m in range(n):
                si += row[m] * u[m]
                fi += row[m] * a[m]
            s[b, i] = si
            flux[b, i] = fi / si
        for j in range(n):
            for m in range(n):
                vw[j, m] = Vb[j, m] * wb[m]
        for d in range(nd):
            out = rd[b, d]
            for j in range(n):
                i = j - h + d
                if i < 0 or i >= n:
                    out[j] = 0.0
                    continue
                row = Vb[i]
                rw = vw[j]
                q = 0.0
                for m in range(n):
                    q += row[m] * rw[m]
                out[j] = q / s[b, i]
