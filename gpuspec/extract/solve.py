"""Batched linear algebra of the extraction: regularised normal equations, SPD
inversion, and specter's "signal" decorrelation (resolution matrices).

All functions take stacks of problems (leading batch axes) and run unchanged on
numpy and cupy. Only :func:`solve_tail` and :func:`inv_cholesky` pick a
backend-specific routine (LAPACK ``potrf/trtri`` per matrix on the host, batched
cuSOLVER through ``xp.linalg`` on the device); both return the same numbers to rounding.

The extraction uses :func:`solve_tail`: the unknowns of a patch are ordered so that the
fibers whose results are kept come last, and only the trailing block of the inverse
Cholesky factor is formed (``Z22 = L22⁻¹``, whose cube is a third of the whole factor's
at DESI geometry), because only the kept fibers' covariance blocks are decorrelated.
On the host, given the pattern of nonzero fiber blocks (the Numba twin reports it),
:func:`solve_tail` instead factorises block by block over it
(:mod:`gpuspec.extract.blocksolve`); the dense LAPACK path remains for the array path
and for patches whose pivot block fails.
"""

from __future__ import annotations

import sys

import numpy as np

from ..backend import get_array_module, to_host
from ..profiling import nvtx_range
from .blocksolve import solve_tail_blocks

__all__ = ["regularize_normal", "solve_tail", "inv_cholesky", "inv_cholesky_device",
           "apply_fallback", "pinv_sqrt", "decorrelate", "eig_inverse_sqrt", "sqrt_inverse",
           "EIG_THRESHOLD", "MINWEIGHT_SCALE", "CHOLESKY_RESIDUAL"]

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


def _tail_x(L21, Z11, Z22, b):
    """``x = M⁻¹ b`` from the blocks of ``M = L Lᵀ``, ``L = [[L11, 0], [L21, L22]]``, with
    ``Z11 = L11⁻¹`` and ``Z22 = L22⁻¹`` (batched matrix-vector products only)."""
    xp = get_array_module(Z22)
    k = Z11.shape[-1]
    col = b[..., :, None]
    b1, b2 = col[..., :k, :], col[..., k:, :]
    tZ22 = xp.swapaxes(Z22, -1, -2)
    if k == 0:
        return xp.matmul(tZ22, xp.matmul(Z22, b2))[..., 0]
    y1 = xp.matmul(Z11, b1)                                   # L11 y1 = b1
    y2 = xp.matmul(Z22, b2 - xp.matmul(L21, y1))              # L21 y1 + L22 y2 = b2
    x2 = xp.matmul(tZ22, y2)                                  # L22ᵀ x2 = y2
    x1 = xp.matmul(xp.swapaxes(Z11, -1, -2), y1 - xp.matmul(xp.swapaxes(L21, -1, -2), x2))
    return xp.concatenate([x1, x2], axis=-2)[..., 0]


def _tail_blocks(Z22, nw):
    """Diagonal ``nw``-blocks of ``Z22ᵀ Z22`` (= the trailing block of ``M⁻¹``); block s
    only needs rows ``>= s·nw`` of the lower-triangular ``Z22``."""
    xp = get_array_module(Z22)
    out = []
    for s in range(Z22.shape[-1] // nw):            # kept fibers: a handful, no sync
        Zs = Z22[..., s * nw:, s * nw:(s + 1) * nw]
        out.append(xp.matmul(xp.swapaxes(Zs, -1, -2), Zs))
    return xp.stack(out, axis=-3)


def _pinv_tail(M, b, m, nw):
    """The eigh fallback of :func:`solve_tail`: ``C = V diag(1/max(w, floor)) Vᵀ`` with
    specter's floor (= ``pinv_sqrt(M)ᵀ pinv_sqrt(M)``), ``x = C b`` and C's trailing
    diagonal blocks (batched)."""
    xp = get_array_module(M)
    w, V = xp.linalg.eigh(0.5 * (M + xp.swapaxes(M, -1, -2)))
    floor = xp.max(w, axis=-1, keepdims=True) * EIG_THRESHOLD
    wi = xp.where(w > floor, 1.0 / xp.where(w > floor, w, 1.0), 1.0 / floor)
    C = xp.matmul(V * wi[..., None, :], xp.swapaxes(V, -1, -2))
    x = xp.matmul(C, b[..., :, None])[..., 0]
    k = M.shape[-1] - m
    blocks = [C[..., k + s * nw:k + (s + 1) * nw, k + s * nw:k + (s + 1) * nw]
              for s in range(m // nw)]
    return x, xp.stack(blocks, axis=-3)


def _inverse_block_columns(L22, nw):
    """Diagonal ``nw``-blocks of ``Z22ᵀ Z22`` with ``Z22 = L22⁻¹`` (host, one matrix).

    Block column s of ``Z22`` (rows ``>= s·nw``) by block forward substitution,
    ``Z_ts = −Z_tt Σ_{u=s}^{t−1} L_tu Z_us`` with ``Z_tt = L_tt⁻¹`` (``trtri`` of the
    small diagonal blocks): BLAS-3 products of nw × nw blocks, faster than one ``trtri``
    of the whole ``L22`` at these sizes. Only the lower triangle of ``L22``'s diagonal
    blocks is read.
    """
    from scipy.linalg import lapack

    K = L22.shape[0] // nw
    blk = [[L22[t * nw:(t + 1) * nw, u * nw:(u + 1) * nw] for u in range(t + 1)]
           for t in range(K)]
    zd = []
    for t in range(K):
        z, info = lapack.dtrtri(blk[t][t], lower=1)
        if info != 0:
            return None
        zd.append(np.tril(z))
    out = np.empty((K, nw, nw))
    for s_ in range(K):
        col = [zd[s_]]
        acc = zd[s_].T @ zd[s_]
        for t in range(s_ + 1, K):
            v = blk[t][s_] @ col[0]
            for u in range(s_ + 1, t):
                v += blk[t][u] @ col[u - s_]
            z = -(zd[t] @ v)
            col.append(z)
            acc += z.T @ z
        out[s_] = acc
    return out


def _solve_tail_host(M, b, m, nw, pattern=None):
    """numpy branch of :func:`solve_tail`: LAPACK per matrix, eigh fallback at once;
    with ``pattern`` block by block (:mod:`~gpuspec.extract.blocksolve`), the dense path
    only for the patches where a pivot block fails."""
    from scipy.linalg import lapack

    P, n = M.shape[0], M.shape[-1]
    k = n - m
    if pattern is not None:
        x, Cb, redo = solve_tail_blocks(M, b, m, nw, pattern)
    else:
        x = np.empty((P, n))
        Cb = np.empty((P, m // nw, nw, nw))
        redo = range(P)
    for p in redo:
        # M[p] is symmetric: its transpose is the same matrix in Fortran order (no copy
        # to reorder); clean=0 leaves M's values above the diagonal (never read)
        c, info = lapack.dpotrf(M[p].T, lower=1, clean=0)
        cb = _inverse_block_columns(c[k:, k:], nw) if info == 0 else None
        if cb is None:
            x[p], Cb[p] = _pinv_tail(M[p], b[p], m, nw)
            continue
        x[p], _ = lapack.dpotrs(c, b[p], lower=1)
        Cb[p] = cb
    return x, Cb


def _solve_tail_device(M, b, m, nw):
    """Device branch of :func:`solve_tail`: batched Cholesky and two batched triangular
    inverses; failures flagged per element on the device (as :func:`inv_cholesky_device`)."""
    xp = get_array_module(M)
    n = M.shape[-1]
    k = n - m
    L = xp.linalg.cholesky(M)
    Z22 = xp.where(xp.tri(m, dtype=bool), xp.linalg.inv(L[..., k:, k:]), 0.0)
    Z11 = (xp.where(xp.tri(k, dtype=bool), xp.linalg.inv(L[..., :k, :k]), 0.0) if k
           else xp.zeros(M.shape[:-2] + (0, 0)))
    x = _tail_x(L[..., k:, :k], Z11, Z22, b)
    Cb = _tail_blocks(Z22, nw)
    ok = (_factor_ok(M, L) & xp.all(xp.isfinite(Z22), axis=(-2, -1))
          & xp.all(xp.isfinite(Z11), axis=(-2, -1)))
    return x, Cb, ~ok


def _factor_ok(M, L):
    """Device check of a Cholesky factor: finite, positive pivots and a small residual
    ``|L Lᵀ v − M v|`` on a fixed probe vector (relative to ``√M_ii Σ_j √M_jj v_j``)."""
    xp = get_array_module(M)
    n = M.shape[-1]
    d = xp.diagonal(L, axis1=-2, axis2=-1)
    v = 1.0 + 0.5 * xp.sin(xp.arange(n, dtype=M.dtype) * 0.7)            # fixed probe
    Lt_v = xp.matmul(xp.swapaxes(L, -1, -2), v[:, None])
    r = xp.matmul(L, Lt_v)[..., 0] - xp.matmul(M, v[:, None])[..., 0]
    sd = xp.sqrt(xp.abs(xp.diagonal(M, axis1=-2, axis2=-1)))
    scale = sd * xp.sum(sd * v, axis=-1, keepdims=True)
    return (xp.all(xp.isfinite(L), axis=(-2, -1)) & xp.all(d > 0, axis=-1)
            & xp.all(xp.abs(r) <= CHOLESKY_RESIDUAL * scale, axis=-1))


@nvtx_range("extract:solve_tail")
def solve_tail(M, b, m: int, nw: int, fallback=None, pattern=None):
    """Solve ``M x = b`` and the diagonal blocks of the trailing ``m × m`` block of ``M⁻¹``.

    Parameters
    ----------
    M : array (P, n, n)
        Regularised symmetric positive-definite normal matrices, unknowns ordered so
        that those whose covariance is needed are the last ``m``.
    b : array (P, n)
    m : int
        Trailing unknowns whose covariance blocks are wanted (a multiple of ``nw``).
    nw : int
        Block size (unknowns per fiber).
    fallback : host bool array (P,), optional
        Device path: solve these patches with the eigh-based inverse (the ones a
        previous call flagged in ``bad``).
    pattern : host bool array (P, n // nw, n // nw), optional
        numpy path: the fiber blocks of ``M`` (slot order) that may be nonzero; the
        others must be exactly zero. The factorisation and the covariance blocks are
        then computed block by block (:mod:`~gpuspec.extract.blocksolve`, same numbers
        to rounding). Ignored on a device.

    Returns
    -------
    x : array (P, n)
        ``M⁻¹ b``.
    Cb : array (P, m // nw, nw, nw)
        ``(M⁻¹)[k + s·nw : k + (s+1)·nw]`` on both axes, ``k = n − m``, for each block s.
    bad : device bool array (P,) or None
        cupy: elements whose batched Cholesky failed (no host synchronisation; the
        caller re-solves them with ``fallback``). numpy: None (LAPACK reports failures
        and they are re-solved at once).

    Notes
    -----
    ``M = L Lᵀ`` (``potrf``, n³/3 flops) and only the trailing block of ``L⁻¹``,
    ``Z22 = L22⁻¹`` (m³/3 instead of n³/3 for the whole ``L⁻¹``): block s of the
    covariance is ``Z22[s·nw:, s]ᵀ Z22[s·nw:, s]``. numpy: ``x`` by ``potrs`` and the
    block columns of ``Z22`` by block substitution (:func:`_inverse_block_columns`);
    cupy: batched ``inv`` of ``L22`` and ``L11`` and ``x`` by block substitution
    (matrix-vector products). numpy with ``pattern``: the block-sparse Cholesky and
    selected inverse of :func:`~gpuspec.extract.blocksolve.solve_tail_blocks`. A matrix that is not numerically positive definite
    is solved through ``eigh`` with specter's eigenvalue floor
    (``C = V diag(1/max(w, floor)) Vᵀ``, as :func:`pinv_sqrt`).

    Backends: numpy, cupy.
    """
    xp = get_array_module(M)
    if xp is np:
        x, Cb = _solve_tail_host(M, b, m, nw, pattern)
        return x, Cb, None
    x, Cb, bad = _solve_tail_device(M, b, m, nw)
    if fallback is not None:
        kk = np.flatnonzero(np.asarray(fallback))
        if kk.size:
            kd = xp.asarray(kk)
            x[kd], Cb[kd] = _pinv_tail(M[kd], b[kd], m, nw)
    return x, Cb, bad


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
    ok = _factor_ok(M, L) & xp.all(xp.isfinite(Z), axis=(-2, -1))
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
    Q, s = sqrt_inverse(Cblocks, threshold)
    return Q / s[..., :, None], s * s


def eig_inverse_sqrt(Cblocks, threshold: float = EIG_THRESHOLD):
    """Eigenvectors ``V`` and weights ``ws`` with ``C_ii^(-1/2) = V·diag(ws)·Vᵀ``.

    ``eigh`` of the symmetrised blocks; ``ws = λ^(-1/2)``, with specter's eigenvalue
    floor (see :func:`decorrelate`): the one home of that floor, for the array path's
    :func:`sqrt_inverse` and the host twin :mod:`gpuspec.extract.decorrelate_cpu`.

    Backends: numpy, cupy (batched ``eigh``).
    """
    xp = get_array_module(Cblocks)
    C = Cblocks + xp.swapaxes(Cblocks, -1, -2)
    C *= 0.5
    w, V = xp.linalg.eigh(C)
    wmax = xp.max(w, axis=-1, keepdims=True)
    minval = xp.sqrt(xp.maximum(wmax, 0.0)) * threshold
    sq = xp.sqrt(xp.maximum(w, 0.0))
    good = sq > minval
    ws = xp.where(good, 1.0 / xp.where(good, sq, 1.0), 1.0 / xp.where(minval > 0, minval, 1.0))
    return V, ws


def sqrt_inverse(Cblocks, threshold: float = EIG_THRESHOLD):
    """``Q = C_ii^(-1/2)`` of symmetrised covariance blocks and its row sums ``s = Q·1``.

    The eigenvalue floor is specter's (:func:`eig_inverse_sqrt`; :func:`decorrelate`
    returns ``R = diag(1/s)·Q``). The extraction takes ``Q`` and ``s`` and forms only what
    it stores (the band of ``R`` and ``R·f``), not ``R`` itself.

    Backends: numpy, cupy (batched ``eigh``).
    """
    xp = get_array_module(Cblocks)
    V, ws = eig_inverse_sqrt(Cblocks, threshold)
    Q = xp.matmul(V * ws[..., None, :], xp.swapaxes(V, -1, -2))
    return Q, Q.sum(axis=-1)
