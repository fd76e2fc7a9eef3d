"""CPU (Numba) twin of the decorrelation products: ``s = Q·1``, ``R·x`` and R's band.

The array path (:func:`gpuspec.extract.solve.sqrt_inverse`, what CuPy runs) forms
``Q = V·diag(ws)·Vᵀ`` for every kept fiber block with one batched product (2·NW³ flops,
the tensor cores' work on a GPU), then ``Q·x`` and a gather of R's band. The extraction
stores only the band and ``R·x``, so on a CPU this twin computes them from ``V`` and
``ws`` directly: ``s = V·(ws∘Vᵀ1)``, ``Q·x = V·(ws∘Vᵀx)`` and the band's
(2h+1)·NW entries as dot products of rows of ``V`` (about (4h + 9)·NW² flops per block
against 2·NW³, and no Q written and read back). The eigendecomposition and the
eigenvalue floor (:func:`gpuspec.extract.solve.eig_inverse_sqrt`) are shared with the
array path.

Used with the other Numba twins on the numpy backend;
``tests/test_extract_numba.py`` compares it with the array path's products.
"""

from __future__ import annotations

import numpy as np

__all__ = ["band_products", "warm"]


def band_products(V, ws, x, h: int):
    """R's band, ``R·x`` and ``s = Q·1`` of ``Q = V·diag(ws)·Vᵀ`` (host only).

    Parameters
    ----------
    V : float64 (..., n, n)
        Eigenvectors (columns) of the covariance blocks.
    ws : float64 (..., n)
        ``λ^(-1/2)`` with the eigenvalue floor (:func:`~gpuspec.extract.solve.eig_inverse_sqrt`).
    x : float64 (..., n)
        Deconvolved flux of each block's fiber.
    h : int
        Half-width of the band.

    Returns
    -------
    s : float64 (..., n)
        Row sums of ``Q`` (the decorrelated flux's ivar is ``s²``).
    flux : float64 (..., n)
        ``R·x = (Q·x) / s``.
    rd : float64 (..., 2h+1, n)
        ``rd[..., d, j] = R[j−h+d, j]``, 0 outside the matrix (as the array path's band).

    Backends: numpy (Numba).
    """
    from .decorrelate_numba import kernel      # numba is imported at the first use

    V = np.asarray(V, dtype=np.float64)
    lead, n = V.shape[:-2], V.shape[-1]
    if V.shape[-2] != n or np.shape(ws) != lead + (n,) or np.shape(x) != lead + (n,):
        raise ValueError(f"band_products: V {V.shape}, ws {np.shape(ws)} and x {np.shape(x)} "
                         "do not match")
    B = int(np.prod(lead, dtype=np.int64))
    h = int(h)
    s = np.empty((B, n))
    flux = np.empty((B, n))
    rd = np.empty((B, 2 * h + 1, n))
    kernel(np.ascontiguousarray(V.reshape(B, n, n)),
           np.ascontiguousarray(np.reshape(ws, (B, n)), dtype=np.float64),
           np.ascontiguousarray(np.reshape(x, (B, n)), dtype=np.float64), h, s, flux, rd)
    return (s.reshape(lead + (n,)), flux.reshape(lead + (n,)),
            rd.reshape(lead + (2 * h + 1, n)))


def warm() -> None:
    """Compile the kernel (or load it from Numba's cache) in this process, on no blocks,
    before forked workers would each load it.

    Backends: host only.
    """
    band_products(np.zeros((0, 2, 2)), np.zeros((0, 2)), np.zeros((0, 2)), 1)
