"""Cosmic-ray (outlier) rejection across the exposures of each target, batched.

Same statistics as desispec ``coaddition._mask_cosmics``:

1. per exposure, flux and ivar are linearly interpolated (in wavelength) over
   pixels with ivar = 0, then the flux gradient ``f[k+1] - f[k]`` and its
   variance are formed;
2. per gradient pixel, chi² of the exposures' gradients about their weighted mean;
3. threshold: the chi²(n−1) tail of ``cosmics_nsig`` sigma, or, when the median chi²
   exceeds twice the chi²(n−1) median (a variable object), ``median + nsig·(p84 − median)``;
4. at each pixel above threshold, exposures are removed one by one (largest
   contribution first) until the remaining chi² is below threshold or fewer than
   3 remain; both pixels of each removed gradient are masked.

Everything is batched over targets on the padded ``(ntarget, nexp, nwave)``
layout; the only loops are over interpolation doubling steps (log2 nwave) and
over rejection rounds (at most nexp).
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_cosmics", "chi2_threshold", "COSMICS_NSIG"]

#: desispec's default threshold of the coadd's cosmic-ray rejection (``--nsig``), in sigma
COSMICS_NSIG = 4.0

_MIN_FOR_COSMICS = 3


def chi2_threshold(nspec, nsig: float):
    """chi² (not reduced) of ``nspec`` values exceeded with the ``nsig``-sigma tail probability.

    Backends: host (scipy.stats; a scalar).
    """
    import scipy.stats  # lazy: scipy.stats costs ~0.4 s to import

    return scipy.stats.chi2(np.asarray(nspec) - 1).isf(scipy.stats.norm.cdf(-nsig))


def _prefix_max(a, xp):
    """Running maximum along the last axis (Hillis–Steele doubling, xp-neutral)."""
    out = a.copy()
    n = a.shape[-1]
    s = 1
    while s < n:
        shifted = out[..., :-s]
        out[..., s:] = xp.maximum(out[..., s:], shifted)
        s *= 2
    return out


def _interp_bad(wave, values, good, xp):
    """Replace values where ``good`` is False by np.interp over the good pixels of each row."""
    n = values.shape[-1]
    ar = xp.arange(n)
    prev = _prefix_max(xp.where(good, ar, -1), xp)                    # last good index <= k
    nxt = n - 1 - _prefix_max(xp.where(good, n - 1 - ar, -1)[..., ::-1], xp)[..., ::-1]
    nxt = xp.where(nxt > n - 1, n, nxt)                                # no good index >= k -> n
    has_prev = prev >= 0
    has_next = nxt < n
    p = xp.clip(prev, 0, n - 1)
    q = xp.clip(nxt, 0, n - 1)
    vp = xp.take_along_axis(values, p, axis=-1)
    vq = xp.take_along_axis(values, q, axis=-1)
    wp = wave[p]
    wq = wave[q]
    denom = xp.where(wq > wp, wq - wp, 1.0)
    lin = vp + (vq - vp) / denom * (wave - wp)
    interp = xp.where(has_prev & has_next, lin, xp.where(has_prev, vp, vq))
    return xp.where(good, values, interp)


def mask_cosmics(wave, flux, ivar, valid, cosmics_nsig: float, xp):
    """Cosmic mask for padded stacks of exposures.

    Parameters
    ----------
    wave : (nwave,) array
    flux, ivar : (ntarget, nexp, nwave) arrays
        ``ivar`` already includes the input mask (ivar = 0 where masked) and the
        per-exposure normalisation.
    valid : (ntarget, nexp) bool
        False for padding rows.
    cosmics_nsig : float
    xp : module

    Returns
    -------
    (ntarget, nexp, nwave) bool
        True where a cosmic was found.

    Backends: numpy, cupy.
    """
    import scipy.stats  # lazy import (slow to load)

    nt, ne, nw = flux.shape
    mask = xp.zeros(flux.shape, dtype=bool)
    if nt == 0 or ne < _MIN_FOR_COSMICS or nw < 2:
        return mask
    good_pix = ivar > 0
    rowgood = valid & xp.any(good_pix, axis=-1)                           # (nt, ne)
    nspec = xp.sum(rowgood, axis=-1)                                      # (nt,)
    gp = good_pix & rowgood[..., None]
    if bool(xp.any(rowgood[..., None] & ~gp)):
        tflux = _interp_bad(wave, flux, gp, xp)
        tivar = _interp_bad(wave, ivar, gp, xp)
    else:  # no masked pixel in any usable row: nothing to interpolate
        tflux, tivar = flux, ivar
    tvar = 1.0 / (tivar + (tivar == 0))
    grad = tflux[..., 1:] - tflux[..., :-1]
    gradvar = tvar[..., 1:] + tvar[..., :-1]
    gradivar = (gradvar > 0) / (gradvar + (gradvar == 0))
    rg = rowgood[..., None]
    gradivar = xp.where(rg, gradivar, 0.0)
    grad = xp.where(rg, grad, 0.0)
    sgi = xp.sum(gradivar, axis=1)                                        # (nt, nw-1)
    bad = sgi == 0
    meangrad = xp.sum(gradivar * grad, axis=1) / (sgi + bad)
    delta = grad - meangrad[:, None, :]
    chi2 = xp.sum(gradivar * delta ** 2, axis=1)                          # (nt, nw-1)

    # thresholds per target (host tables indexed by the number of usable exposures)
    nvals = np.arange(ne + 1)
    with np.errstate(all="ignore"):
        thr_tab = np.where(nvals >= 2, chi2_threshold(np.maximum(nvals, 2), cosmics_nsig), np.inf)
        med_tab = np.where(nvals >= 2, scipy.stats.chi2(np.maximum(nvals, 2) - 1).ppf(0.5), np.inf)
    thr_tab_x = xp.asarray(thr_tab)
    med_tab_x = xp.asarray(med_tab)
    med = xp.median(chi2, axis=-1)
    p84 = xp.percentile(chi2, 84, axis=-1)
    variable = med > 2 * med_tab_x[nspec]
    threshold = xp.where(variable, med + (p84 - med) * cosmics_nsig, thr_tab_x[nspec])
    active_t = nspec >= _MIN_FOR_COSMICS
    cbad = (chi2 > threshold[:, None]) & (~bad) & active_t[:, None]

    ti, ki = xp.nonzero(cbad)
    if int(ti.size) == 0:
        return mask
    vec = delta[ti, :, ki]                                                # (K, ne)
    iv = gradivar[ti, :, ki]
    rgk = rowgood[ti]                                                     # (K, ne)
    fixed = variable[ti]
    fix_thr = threshold[ti]
    good = rgk.copy()
    active = xp.ones(ti.shape, dtype=bool)
    for _ in range(ne):
        sw = xp.sum(iv * good, axis=-1)
        with np.errstate(all="ignore"):
            mean = xp.sum(iv * vec * good, axis=-1) / sw
        metric = (vec - mean[:, None]) ** 2 * iv
        c2 = xp.sum(xp.where(good, metric, 0.0), axis=-1)
        n = xp.sum(good, axis=-1)
        thr = xp.where(fixed, fix_thr, thr_tab_x[n])
        reject = active & (c2 > thr)
        cand = xp.where(rgk, xp.where(good, metric, 0.0), -1.0)
        worst = xp.argmax(cand, axis=-1)
        onehot = (xp.arange(ne)[None, :] == worst[:, None]) & reject[:, None]
        good = good & ~onehot
        active = reject & (xp.sum(good, axis=-1) >= _MIN_FOR_COSMICS)
        if not bool(xp.any(active)):
            break
    removed = rgk & ~good                                                 # (K, ne)
    kk, ee = xp.nonzero(removed)
    if int(kk.size):
        mask[ti[kk], ee, ki[kk]] = True
        mask[ti[kk], ee, ki[kk] + 1] = True
    return mask
