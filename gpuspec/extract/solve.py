"""Batched linear algebra of the extraction: regularised normal equations, SPD
inversion, and specter's "signal" decorrelation (resolution matrices).

All functions take stacks of problems (leading batch axes) and run unchanged on
numpy and cupy. Only :func:`inv_cholesky` picks a backend-specific routine (LAPACK
``potrf/trtri`` per matrix on the host, batched cuSOLVER through ``xp.linalg`` on
the device); both return the same matrix to rounding.
"""

from __future__ import annotations

import sys

import numpy as np

from ..backend import get_array_module
from ..profiling import nvtx_range

__all__ = ["regularize_normal", "inv_cholesky", "decorrelate", "EIG_THRESHOLD",
           "MINWEIGHT_SCALE"]

#: specter's eigenvalue floor, relative: 10 machine epsilons.
EIG_THRESHOLD = 10.0 * sys.float_info.epsilon
#: Unknowns whose pixel weight is below this fraction of the patch's maximum are
#: pulled towards 0 (specter / gpu_specter's minimum-weight regularisation).
MINWEIGHT_SCALE = 1e-4


@nvtx_range("extract:regularize")
def regularize_normal(M, fluxweight, valid, regularize: float = 0.0,
                      weight_scale: float = MINWEIGHT_SCALE):
    """Add specter's regularisation to the normal matrices, in place.

    Parameters
    ----------
    M : array (..., n, n)
        AᵀWA per patch; modified in place.
    fluxweight : array (..., n)
        Σ_pixels W·A_j per unknown.
    valid : bool array (..., n)
        False for padding unknowns (batching); they are decoupled with a unit-scale
        diagonal so they do not disturb the solution or its conditioning.
    regularize : float
        Extra Tikhonov term: ``regularize²`` is added to every valid diagonal.
    weight_scale : float
        ``minweight = weight_scale · max(fluxweight)`` per patch.

    Returns
    -------
    M
        The same array. Unknowns with ``fluxweight < minweight`` get
        ``(minweight − fluxweight)²`` on the diagonal instead of ``regularize²``.

    Backends: numpy, cupy.
    """
    xp = get_array_module(M)
    fw = xp.where(valid, fluxweight, 0.0)
    minweight = weight_scale * xp.max(fw, axis=-1, keepdims=True)
    # a patch without any weighted pixel: pin every unknown to 0 with unit weight
    minweight = xp.where(minweight > 0, minweight, 1.0)
    ibad = (fw < minweight) & valid
    lam = xp.where(ibad, minweight - fw, float(regularize))
    add = xp.where(valid, lam * lam, 0.0)
    n = M.shape[-1]
    diag = xp.diagonal(M, axis1=-2, axis2=-1)
    # scale for the padding unknowns: mean valid diagonal (1 if none)
    nvalid = xp.maximum(valid.sum(axis=-1, keepdims=True), 1)
    dmean = xp.where(valid, diag, 0.0).sum(axis=-1, keepdims=True) / nvalid
    dmean = xp.where(dmean > 0, dmean, 1.0)
    newdiag = xp.where(valid, diag + add, dmean)
    idx = xp.arange(n)
    M[..., idx, idx] = newdiag
    return M


@nvtx_range("extract:inv_cholesky")
def inv_cholesky(M):
    """Inverse Cholesky factors of a stack of symmetric positive-definite matrices.

    Parameters
    ----------
    M : array (..., n, n)

    Returns
    -------
    Z : array (..., n, n)
        Lower-triangular ``L⁻¹`` where ``M = L Lᵀ``, so that ``M⁻¹ = Zᵀ Z``: the
        solution of ``M x = b`` is ``Zᵀ (Z b)`` and diagonal blocks of ``M⁻¹`` are
        ``Z[:, blk]ᵀ Z[:, blk]``.

    Notes
    -----
    numpy: LAPACK ``dpotrf`` + ``dtrtri`` per matrix (2n³/3 flops). A matrix that is
    not numerically positive definite falls back to the symmetric square root of its
    pseudo-inverse computed by ``eigh`` with specter's eigenvalue floor (then
    ``Zᵀ Z`` is still the regularised inverse).
    cupy: one batched ``cupy.linalg.cholesky`` and one batched ``cupy.linalg.inv`` of
    the triangular factors (no host synchronisation per matrix).

    Backends: numpy, cupy.
    """
    xp = get_array_module(M)
    if xp is not np:  # pragma: no cover - GPU only
        L = xp.linalg.cholesky(M)
        n = M.shape[-1]
        return xp.where(xp.tri(n, dtype=bool), xp.linalg.inv(L), 0.0)
    from scipy.linalg import lapack

    shape = M.shape
    n = shape[-1]
    flat = M.reshape(-1, n, n)
    out = np.empty_like(flat)
    for k in range(flat.shape[0]):
        c, info = lapack.dpotrf(flat[k], lower=1, clean=1)
        if info == 0:
            z, info = lapack.dtrtri(c, lower=1)
        if info != 0:
            out[k] = _pinv_sqrt(flat[k])
            continue
        out[k] = z
    return out.reshape(shape)


def _pinv_sqrt(m):
    """Symmetric ``M^(-1/2)`` with eigenvalues floored like specter (numpy, one matrix)."""
    w, v = np.linalg.eigh(0.5 * (m + m.T))
    floor = np.max(w) * EIG_THRESHOLD
    wi = np.where(w > floor, 1.0 / np.sqrt(np.where(w > floor, w, 1.0)), 1.0 / np.sqrt(floor))
    return (v * wi) @ v.T


@nvtx_range("extract:decorrelate")
def decorrelate(Cblocks, threshold: float = EIG_THRESHOLD):
    """specter's "signal" decorrelation of per-fiber covariance blocks.

    Parameters
    ----------
    Cblocks : array (..., m, m)
        Diagonal blocks C_ii of the covariance M⁻¹ (one per fiber).
    threshold : float
        Eigenvalue floor relative to the largest one, as in specter's
        ``eigen_compose(invert=True, sqr=True)``.

    Returns
    -------
    R : array (..., m, m)
        Resolution matrices ``diag(1/s) · Q`` with ``Q = C_ii^(-1/2)``, ``s = Q·1``
        (rows sum to 1).
    ivar : array (..., m)
        ``s²``, the inverse variance of the decorrelated flux ``R f``.

    Backends: numpy, cupy (batched ``eigh``).
    """
    xp = get_array_module(Cblocks)
    C = 0.5 * (Cblocks + xp.swapaxes(Cblocks, -1, -2))
    w, V = xp.linalg.eigh(C)
    wmax = xp.max(w, axis=-1, keepdims=True)
    minval = xp.sqrt(xp.maximum(wmax, 0.0)) * threshold
    sq = xp.sqrt(xp.maximum(w, 0.0))
    good = sq > minval
    ws = xp.where(good, 1.0 / xp.where(good, sq, 1.0), 1.0 / xp.where(minval > 0, minval, 1.0))
    Q = xp.matmul(V * ws[..., None, :], xp.swapaxes(V, -1, -2))
    s = Q.sum(axis=-1)
    R = Q / s[..., :, None]
    return R, s * s
