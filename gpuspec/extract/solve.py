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

from ..backend import get_array_module, to_host
from ..profiling import nvtx_range

__all__ = ["regularize_normal", "inv_cholesky", "inv_cholesky_device", "apply_fallback",
           "pinv_sqrt", "decorrelate", "EIG_THRESHOLD", "MINWEIGHT_SCALE",
           "CHOLESKY_RESIDUAL"]

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
    cupy: :func:`inv_cholesky_device` (one batched Cholesky and one batched inverse),
    then the same fallback for the elements it flags as failed; finding out whether any
    failed costs one host synchronisation per call (the extraction avoids it, see
    :func:`inv_cholesky_device`).

    Backends: numpy, cupy.
    """
    xp = get_array_module(M)
    if xp is not np:
        Z, bad = inv_cholesky_device(M)
        flat_bad = to_host(bad).reshape(-1)          # one sync per call
        if flat_bad.any():
            n = M.shape[-1]
            Z = apply_fallback(Z.reshape(-1, n, n), M.reshape(-1, n, n), flat_bad).reshape(M.shape)
        return Z
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


#: relative residual above which a device Cholesky factor is taken as failed (the backward
#: error of a successful factorisation is ~n·eps ≈ 1e-13 for n ~ 500)
CHOLESKY_RESIDUAL = 1e-9


def inv_cholesky_device(M):
    """Batched ``L⁻¹`` and per-element failure flags, without any host synchronisation.

    cuSOLVER's batched Cholesky does not raise on a matrix that is not positive definite
    (its per-matrix ``info`` is only checked under ``cupyx.errstate(linalg="raise")``,
    which synchronises); the factor is then partial or garbage. Failure is detected on
    the device, per batch element, from the results themselves: a non-finite entry in
    ``L`` or ``L⁻¹``, a non-positive pivot, or a residual ``|L Lᵀ v − M v|`` on a fixed
    probe vector ``v`` above :data:`CHOLESKY_RESIDUAL` of its scale
    ``√M_ii Σ_j √M_jj v_j``.

    Parameters
    ----------
    M : array (..., n, n)

    Returns
    -------
    Z : array (..., n, n)
        Lower-triangular ``L⁻¹`` (meaningless where ``bad``).
    bad : bool array (...)
        Elements to redo with :func:`apply_fallback`.

    Backends: cupy (numpy works too; the numpy path of :func:`inv_cholesky` uses LAPACK).
    """
    xp = get_array_module(M)
    n = M.shape[-1]
    L = xp.linalg.cholesky(M)
    Z = xp.where(xp.tri(n, dtype=bool), xp.linalg.inv(L), 0.0)
    d = xp.diagonal(L, axis1=-2, axis2=-1)
    v = 1.0 + 0.5 * xp.sin(xp.arange(n, dtype=M.dtype) * 0.7)            # fixed probe
    Lt_v = xp.matmul(xp.swapaxes(L, -1, -2), v[:, None])
    r = xp.matmul(L, Lt_v)[..., 0] - xp.matmul(M, v[:, None])[..., 0]
    sd = xp.sqrt(xp.abs(xp.diagonal(M, axis1=-2, axis2=-1)))
    scale = sd * xp.sum(sd * v, axis=-1, keepdims=True)
    ok = (xp.all(xp.isfinite(L), axis=(-2, -1)) & xp.all(xp.isfinite(Z), axis=(-2, -1))
          & xp.all(d > 0, axis=-1)
          & xp.all(xp.abs(r) <= CHOLESKY_RESIDUAL * scale, axis=-1))
    return Z, ~ok


def apply_fallback(Z, M, bad):
    """Replace ``Z[k]`` by the eigh-based ``M[k]^(-1/2)`` where the host bool array ``bad``
    is True (the numpy path's fallback, batched on ``Z``'s backend).

    Backends: numpy, cupy.
    """
    xp = get_array_module(Z)
    k = np.flatnonzero(np.asarray(bad))
    if k.size:
        kd = xp.asarray(k)
        Z[kd] = pinv_sqrt(M[kd])
    return Z


def pinv_sqrt(M):
    """Symmetric ``M^(-1/2)`` of a stack, eigenvalues floored like specter (batched eigh).

    Backends: numpy, cupy.
    """
    xp = get_array_module(M)
    w, v = xp.linalg.eigh(0.5 * (M + xp.swapaxes(M, -1, -2)))
    floor = xp.max(w, axis=-1, keepdims=True) * EIG_THRESHOLD
    wi = xp.where(w > floor, 1.0 / xp.sqrt(xp.where(w > floor, w, 1.0)), 1.0 / xp.sqrt(floor))
    return xp.matmul(v * wi[..., None, :], xp.swapaxes(v, -1, -2))


def _pinv_sqrt(m):
    """Symmetric ``M^(-1/2)`` with eigenvalues floored like specter (numpy, one matrix)."""
    return pinv_sqrt(m)


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
