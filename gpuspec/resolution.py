"""Resolution matrices in the DESI banded ("dia") storage, for any ``xp``.

A spectrum's resolution matrix R (nwave × nwave) is stored as
``rdata[d, k] = R[k - h + d, k]`` for d = 0 … 2h, i.e. scipy ``dia_matrix.data``
with offsets ``+h … −h`` (scipy: ``data[d, k] = A[k - offset_d, k]``). This is the
layout of desispec ``Resolution`` and of the ``RESOLUTION`` HDUs.

All functions accept numpy or cupy arrays and return the same kind.
"""

from __future__ import annotations

import numpy as np

from .backend import get_array_module

__all__ = ["offsets", "apply", "to_dense", "from_dense", "to_scipy"]


def offsets(ndiag: int):
    """Diagonal offsets of the stored rows: ``[h, h-1, ..., -h]``.

    Backends: host only (NumPy).
    """
    h = ndiag // 2
    return np.arange(h, -h - 1, -1)


def apply(rdata, flux):
    """Compute ``R @ flux`` from banded storage, batched.

    Parameters
    ----------
    rdata : array (..., ndiag, nwave)
    flux : array (..., nwave)

    Returns
    -------
    array (..., nwave)
        ``out[i] = sum_k R[i, k] flux[k]``.

    Backends: numpy, cupy.
    """
    xp = get_array_module(rdata, flux)
    ndiag, nwave = rdata.shape[-2:]
    h = ndiag // 2
    out = xp.zeros(flux.shape, dtype=np.result_type(rdata.dtype, flux.dtype))
    for d in range(ndiag):
        off = d - h  # R[k + off, k] = rdata[d, k]; i = k + off
        if off >= 0:
            out[..., off:] += rdata[..., d, : nwave - off] * flux[..., : nwave - off]
        else:
            out[..., : nwave + off] += rdata[..., d, -off:] * flux[..., -off:]
    return out


def to_dense(rdata):
    """Dense R (..., nwave, nwave) from banded storage (for tests and small cases).

    Backends: numpy and cupy (any array module).
    """
    xp = get_array_module(rdata)
    ndiag, nwave = rdata.shape[-2:]
    h = ndiag // 2
    out = xp.zeros(rdata.shape[:-2] + (nwave, nwave), dtype=rdata.dtype)
    k = xp.arange(nwave)
    for d in range(ndiag):
        i = k - h + d
        ok = (i >= 0) & (i < nwave)
        out[..., i[ok], k[ok]] = rdata[..., d, k[ok]]
    return out


def from_dense(R, ndiag: int):
    """Banded storage (..., ndiag, nwave) of dense R, keeping ``ndiag`` diagonals.

    Backends: numpy and cupy (any array module).
    """
    xp = get_array_module(R)
    nwave = R.shape[-1]
    h = ndiag // 2
    out = xp.zeros(R.shape[:-2] + (ndiag, nwave), dtype=R.dtype)
    k = xp.arange(nwave)
    for d in range(ndiag):
        i = k - h + d
        ok = (i >= 0) & (i < nwave)
        out[..., d, k[ok]] = R[..., i[ok], k[ok]]
    return out


def to_scipy(rdata):
    """A ``scipy.sparse.dia_matrix`` of one spectrum's banded R (numpy input).

    Backends: host only (NumPy input, SciPy sparse output).
    """
    import scipy.sparse

    ndiag, nwave = rdata.shape
    return scipy.sparse.dia_matrix((np.asarray(rdata), offsets(ndiag)), shape=(nwave, nwave))
