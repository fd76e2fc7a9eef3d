"""Per-exposure flux normalisation before the coadd (COADD_NORM, SIGMA_COADD_NORM, VARIABLE).

desispec (since 0.71) rescales the exposures of a target whose broad-band flux
levels disagree before it coadds them, records the factors in the EXP_FIBERMAP
columns ``COADD_NORM``/``SIGMA_COADD_NORM`` and sets the FIBERSTATUS bit
``VARIABLE`` (2**20) on all exposures of such a target.

The rule reproduced here (desispec ``per_exposure_normalization`` with its
default ``norm_chi2_threshold=0.1``):

* only targets with OBJTYPE ``TGT`` and more than one exposure without fatal
  FIBERSTATUS bits are considered;
* a band is usable for a target when every good exposure has a good camera
  FIBERSTATUS for it and fewer than 40% masked pixels in it; pixels shared with
  another usable band are left out;
* an ivar-weighted crude coadd ``fc`` (variance ``v_c = 1/Σ ivar``) of the good
  exposures is formed; with per-pixel weights ``w = 1/(1/ivar_j + v_c)`` (0 where
  ``ivar_j = 0``) each exposure's factor is
  ``a_j = Σ w fc² / Σ w fc f_j`` and ``σ_j = √(Σ w fc²) / Σ w fc f_j``;
* a target without a usable band, or with an exposure of fewer than 51 usable
  pixels, gets BADFIBER on all its exposures and factors of 1;
* exposures whose factor is not finite or lies outside 0.1–10 get BADFIBER and
  the target is solved again without them (at most 5 rounds; a target still
  unsolved then gets BADFIBER on all its exposures);
* the crude coadd is formed again from the rescaled exposures (flux·a_j,
  ivar/a_j²) and ``χ²_red = Σ (fc − fc_rescaled)² · W / #(W ≠ 0)`` over the
  used pixels, with ``W = Σ ivar_j`` the weight of the unrescaled crude coadd.
  Below ``norm_chi2_threshold`` the factors are reset to COADD_NORM = 1 and
  SIGMA_COADD_NORM = 0; at or above it the factors are kept and VARIABLE is set
  on all the target's exposures.

The factor estimator reproduces the COADD_NORM/SIGMA_COADD_NORM of the Case-C and
Case-D references (desispec at the reference commit) to 3e-8. The χ² weighting
(unrescaled W, used pixels only) is inferred: the references only bound it (their
flagged targets have χ²_red ≈ 0.27–0.33, the unflagged ≤ 0.01 whichever of the
plausible weightings is used).

Implementation: one ``xp`` code path. The flux, ivar and mask of every band are
gathered once into padded ``(ntarget, nexp, nwave)`` arrays on the device; each
round is whole-array arithmetic over all targets, FIBERSTATUS and the factors are
updated on the device by scatter, and the only host synchronisations are one
``bool`` per round (at most 5) to stop early and the final copy of the results.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_device, to_host
from ..maskbits import fibermask
from .groups import gather_rows, nonamp_bad_fiberstatus, target_index_table, use_for_coadd

__all__ = ["per_exposure_normalization", "NORM_CHI2_THRESHOLD", "MIN_UNMASKED",
           "NORM_RANGE", "MAX_ROUNDS"]

#: desispec's default ``norm_chi2_threshold``.
NORM_CHI2_THRESHOLD = 0.1
#: Fewest usable pixels an exposure needs (desispec's median-filter width).
MIN_UNMASKED = 51
#: Factors outside this range mark the exposure BADFIBER.
NORM_RANGE = (0.1, 10.0)
#: Rounds of re-solving after BADFIBER exposures are dropped.
MAX_ROUNDS = 5


def _overlap(wave_a, wave_b, tol=1e-4) -> np.ndarray:
    """Bool per pixel of ``wave_a``: within ``tol`` Å of a pixel of ``wave_b``."""
    a = np.asarray(to_host(wave_a), dtype=np.float64)
    b = np.sort(np.asarray(to_host(wave_b), dtype=np.float64))
    if b.size == 0:
        return np.zeros(a.size, dtype=bool)
    k = np.clip(np.searchsorted(b, a), 1, max(b.size - 1, 1))
    d = np.minimum(np.abs(a - b[k - 1]), np.abs(a - b[np.minimum(k, b.size - 1)]))
    return d <= tol


def _pad(a, value):
    """Host array ``a`` with one padding entry ``value`` appended (index ``nrows``)."""
    return np.concatenate([np.asarray(a), np.asarray([value], dtype=np.asarray(a).dtype)])


def _setup(spectra, idx, valid, fstat, xp):
    """Device arrays of every band, uploaded once: flux, weights, static usability."""
    fm = spectra.fibermap
    bands = list(spectra.bands)
    validx = xp.asarray(valid)
    per_band = {}
    for b in bands:
        F = gather_rows(to_device(spectra.flux[b], xp), idx, xp)
        iv = gather_rows(to_device(spectra.ivar[b], xp), idx, xp)
        if spectra.mask is not None and spectra.mask.get(b) is not None:
            mk = gather_rows(to_device(spectra.mask[b], xp), idx, xp)
            W = iv * (mk == 0)
        else:
            W = iv * 1.0
        W = xp.where(validx[..., None], W, 0.0)
        nw = F.shape[-1]
        camok = xp.asarray(_pad(use_for_coadd(fstat, b), True)[idx])            # (T, E)
        fewmask = xp.sum(W == 0, axis=-1) < int(0.4 * nw)                        # (T, E)
        per_band[b] = dict(F=F, W=W, camok=camok, fewmask=fewmask)
    ovl = {(b, c): xp.asarray(_overlap(spectra.wave[b], spectra.wave[c]))
           for b in bands for c in bands if c != b}
    if "OBJTYPE" in fm.dtype.names:
        obj = np.char.strip(np.asarray(fm["OBJTYPE"]).astype(str)) == "TGT"
    else:
        obj = np.ones(len(fm), dtype=bool)
    tgt = xp.asarray(_pad(obj, True)[idx])
    return per_band, ovl, tgt


def _solve(per_band, ovl, g, xp):
    """Factors, their errors, usable-pixel counts and the χ² inputs for good rows ``g``."""
    bands = list(per_band)
    gf = g[..., None]
    usable = {}
    for b, d in per_band.items():
        usable[b] = xp.all(d["camok"] | ~g, axis=1) & xp.all(d["fewmask"] | ~g, axis=1)
    num = den = nunm = 0.0
    crude = {}
    for b, d in per_band.items():
        F = d["F"]
        w = d["W"] * gf
        keep = xp.ones(F.shape[::2], dtype=bool)                                   # (T, W)
        for c in bands:
            if c != b:
                keep = keep & ~(usable[c][:, None] & ovl[(b, c)][None, :])
        keep = keep & usable[b][:, None]
        wt = xp.sum(w, axis=1)
        inv = 1.0 / (wt + (wt == 0))
        fc = xp.sum(w * F, axis=1) * inv                                           # (T, W)
        wj = xp.where(w > 0, 1.0 / (1.0 / xp.where(w > 0, w, 1.0) + inv[:, None, :]), 0.0)
        wk = wj * keep[:, None, :]
        num = num + xp.sum(wk * fc[:, None, :] ** 2, axis=-1)
        den = den + xp.sum(wk * fc[:, None, :] * F, axis=-1)
        nunm = nunm + xp.sum(wk != 0, axis=-1)
        crude[b] = (w, fc, wt, keep)
    anyusable = xp.zeros(g.shape[0], dtype=bool)
    for b in bands:
        anyusable = anyusable | usable[b]
    with np.errstate(all="ignore"):
        a = num / den
        sig = xp.sqrt(num) / xp.abs(den)
    return a, sig, nunm, anyusable, crude


def _chi2(per_band, crude, a, g, xp):
    """Reduced χ² between the crude coadd and the crude coadd of the rescaled exposures."""
    s = n = 0.0
    af = xp.where(g & xp.isfinite(a) & (a != 0), a, 1.0)[..., None]
    for b, d in per_band.items():
        w, fc, wt, keep = crude[b]
        wr = w / af ** 2
        wrt = xp.sum(wr, axis=1)
        fr = xp.sum(wr * d["F"] * af, axis=1) / (wrt + (wrt == 0))
        s = s + xp.sum(keep * (fc - fr) ** 2 * wt, axis=-1)
        n = n + xp.sum(keep & (wt != 0), axis=-1)
    return s / xp.maximum(n, 1)


def _scatter(dst, idxf, cond, value, xp):
    """``dst[idx] = value`` where ``cond`` (flattened (T, E) tables; padding at the end)."""
    cur = dst[idxf]
    dst[idxf] = xp.where(cond, value, cur)


def per_exposure_normalization(spectra, targets, xp,
                               norm_chi2_threshold: float = NORM_CHI2_THRESHOLD):
    """Normalisation factors of every row of ``spectra`` (desispec rule, see module doc).

    Parameters
    ----------
    spectra : Spectra
        Uncoadded spectra (arrays on the host or on ``xp``'s device) with a FIBERMAP
        holding TARGETID, FIBERSTATUS and (optionally) OBJTYPE.
    targets : (ntarget,) array
        Targets in output order.
    xp : module
        numpy or cupy.
    norm_chi2_threshold : float
        Reduced χ² between the crude and the rescaled crude coadd at or above which
        a target is VARIABLE and keeps its factors (desispec default 0.1).

    Returns
    -------
    norm : (nrows,) float64 numpy array
        COADD_NORM per row (1 for non-VARIABLE targets and BADFIBER rows).
    sigma : (nrows,) float64 numpy array
        SIGMA_COADD_NORM per row (0 where COADD_NORM is 1 by default).
    fiberstatus : (nrows,) int64 numpy array
        Updated FIBERSTATUS (VARIABLE and BADFIBER bits).

    Notes
    -----
    Backends: numpy, cupy. At most ``MAX_ROUNDS`` device→host synchronisations
    (one ``bool`` per round) plus the final copy of the three results.
    """
    fm = spectra.fibermap
    nrows = len(fm)
    fstat0 = np.asarray(fm["FIBERSTATUS"]).astype(np.int64)
    targets = np.asarray(targets)
    idx, valid = target_index_table(np.asarray(fm["TARGETID"]), targets)
    per_band, ovl, tgt = _setup(spectra, idx, valid, fstat0, xp)
    idxf = xp.asarray(idx.reshape(-1))
    validx = xp.asarray(valid)
    fs = xp.asarray(_pad(fstat0, 0))                  # per row (+ padding slot), on device
    norm = xp.ones(nrows + 1)
    sigma = xp.zeros(nrows + 1)
    fatal = nonamp_bad_fiberstatus()
    bad_bit, var_bit = int(fibermask.BADFIBER), int(fibermask.VARIABLE)
    lo, hi = NORM_RANGE
    active = xp.ones(len(targets), dtype=bool)
    T, E = idx.shape
    for _round in range(MAX_ROUNDS):
        g = validx & ((fs[idxf].reshape(T, E) & fatal) == 0)
        eligible = active & (xp.sum(g, axis=1) > 1) & xp.all(tgt | ~g, axis=1)
        a, sig, nunm, anyusable, crude = _solve(per_band, ovl, g, xp)
        toomasked = eligible & (~anyusable | xp.any(g & (nunm < MIN_UNMASKED), axis=1))
        okval = xp.isfinite(a) & (a >= lo) & (a <= hi)
        badexp = (eligible & ~toomasked)[:, None] & g & ~okval
        redo = xp.any(badexp, axis=1)
        solved = eligible & ~toomasked & ~redo
        variable = solved & (_chi2(per_band, crude, a, g, xp) >= norm_chi2_threshold)
        keepf = (variable[:, None] & g).reshape(-1)
        _scatter(norm, idxf, keepf, a.reshape(-1), xp)
        _scatter(sigma, idxf, keepf, sig.reshape(-1), xp)
        bits = xp.where((toomasked[:, None] & validx) | badexp, bad_bit, 0) | \
            xp.where(variable[:, None] & validx, var_bit, 0)
        fs[idxf] = fs[idxf] | bits.reshape(-1)
        active = active & redo
        if not bool(xp.any(active)):          # one synchronisation per round
            break
    else:
        # still unsolved after MAX_ROUNDS: BADFIBER on every exposure, factors 1
        _scatter(fs, idxf, (active[:, None] & validx).reshape(-1), fs[idxf] | bad_bit, xp)
    return (np.asarray(to_host(norm[:nrows]), dtype=np.float64),
            np.asarray(to_host(sigma[:nrows]), dtype=np.float64),
            np.asarray(to_host(fs[:nrows]), dtype=np.int64))
