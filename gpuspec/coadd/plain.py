"""Plain (ivar-weighted) coadd across exposures, batched over targets (desispec ``coadd``).

Per target and band, with the rows whose FIBERSTATUS is good for that band:

* ``ivar_masked = ivar·(mask == 0)/norm²`` and ``ivar_orig = ivar/norm²``;
* cosmic rejection (:mod:`gpuspec.coadd.cosmics`) zeroes ``ivar_masked`` at outliers;
* ``ivar = Σ ivar_masked``; where that is 0 the unmasked ivar is used instead as weight;
* ``flux = Σ w·flux·norm / Σ w``;
* resolution diagonal d at pixel k is averaged with the normalised weight of
  its row pixel ``(k + d − h) mod nwave`` (desispec ``_resolution_coadd``);
* mask: 0 where the coadd has ivar > 0, else the OR of the input masks.

Targets are processed in chunks through a padded ``(ntarget, nexp, nwave)``
gather; every operation is an ``xp`` array operation (numpy or cupy).
"""

from __future__ import annotations

import copy
import logging

import numpy as np

from ..backend import get_xp, to_device, to_host
from ..profiling import nvtx_range
from ..spectra import Spectra
from .cosmics import COSMICS_NSIG, mask_cosmics
from .fibermap import coadd_fibermap, fiberstatus_column
from .groups import gather_rows, ordered_unique, target_index_table, use_for_coadd
from .normalize import NORM_CHI2_THRESHOLD, per_exposure_normalization
from .scores import coadd_scores

__all__ = ["coadd", "resolution_coadd"]

log = logging.getLogger(__name__)


def resolution_coadd(rdata, weights, xp):
    """Weighted resolution average.

    Parameters
    ----------
    rdata : (..., nexp, ndiag, nwave)
    weights : (..., nexp, nwave)
        Per-pixel weights (already normalised for the plain coadd).

    Returns
    -------
    res : (..., ndiag, nwave)
        ``Σ_e weights[e, (k + d − h) % nwave] · rdata[e, d, k]``.
    norm : (..., ndiag, nwave)
        ``Σ_e weights[e, (k + d − h) % nwave]``.

    Backends: numpy, cupy.
    """
    ndiag, nwave = rdata.shape[-2:]
    h = ndiag // 2
    res = xp.zeros(rdata.shape[:-3] + (ndiag, nwave), dtype=np.result_type(rdata, weights))
    norm = xp.zeros_like(res)
    for d in range(ndiag):
        w = xp.roll(weights, h - d, axis=-1)          # w[..., k] = weights[..., (k + d - h) % n]
        res[..., d, :] = xp.sum(w * rdata[..., d, :], axis=-2)
        norm[..., d, :] = xp.sum(w, axis=-2)
    return res, norm


def _or_reduce(m, valid, xp):
    """Bitwise OR over axis 1 of (T, E, W) integer masks (loop over the few exposures)."""
    out = xp.zeros((m.shape[0], m.shape[2]), dtype=m.dtype)
    for e in range(m.shape[1]):
        out |= m[:, e, :] * valid[:, e, None].astype(m.dtype)
    return out


def _coadd_band(wave, flux, ivar, mask, rdata, idx, valid, norm_tab, cosmics_nsig, xp):
    """Coadd one band for a chunk of targets; arrays on ``xp`` (``idx``, ``valid``,
    ``norm_tab`` too: they are uploaded once per band, not per chunk); returns device arrays."""
    validx = valid
    F = gather_rows(flux, idx, xp)
    IV = gather_rows(ivar, idx, xp)
    M = gather_rows(mask, idx, xp) if mask is not None else xp.zeros(F.shape, dtype=np.int32)
    nt = norm_tab[..., None]                                                      # (T, E, 1)
    v = validx[..., None]
    ivar_orig = IV * nt ** -2 * v
    ivar_masked = IV * (M == 0) * nt ** -2 * v
    if cosmics_nsig is not None and cosmics_nsig > 0:
        cm = mask_cosmics(wave, F * nt, ivar_masked, validx, cosmics_nsig, xp)
        ivar_masked = xp.where(cm, 0.0, ivar_masked)
    tivar = xp.sum(ivar_masked, axis=1)
    bad = tivar == 0
    weights = xp.where(bad[:, None, :], ivar_orig, ivar_masked)
    tivar = xp.where(bad, xp.sum(weights, axis=1), tivar)
    weights = weights / (tivar + (tivar == 0))[:, None, :]
    tflux = xp.sum(weights * F * nt, axis=1)
    trdata = None
    if rdata is not None:
        R = gather_rows(rdata, idx, xp)
        trdata = resolution_coadd(R, weights, xp)[0]
    tmask = xp.where(bad, _or_reduce(M, validx, xp), 0).astype(M.dtype)
    return tflux, tivar, tmask, trdata


def _coadd_band_chunks(wave, flux, ivar, mask, rdata, idx, valid, normtab, cosmics_nsig,
                       chunk, xp):
    """All targets of one band, ``chunk`` at a time, into device outputs (host arrays back
    once per band: no device→host copy inside the chunk loop)."""
    ntarget, nw = idx.shape[0], flux.shape[1]
    idx_d, valid_d, norm_d = xp.asarray(idx), xp.asarray(valid), xp.asarray(normtab)
    has_d = xp.asarray(valid.any(axis=1))
    tf = xp.zeros((ntarget, nw), dtype=flux.dtype)
    ti = xp.zeros((ntarget, nw), dtype=ivar.dtype)
    tm = xp.zeros((ntarget, nw), dtype=mask.dtype if mask is not None else np.int32)
    tr = xp.zeros((ntarget,) + tuple(rdata.shape[1:]), dtype=rdata.dtype) \
        if rdata is not None else None
    for s in range(0, ntarget, chunk):
        sl = slice(s, min(s + chunk, ntarget))
        f_, i_, m_, r_ = _coadd_band(wave, flux, ivar, mask, rdata, idx_d[sl], valid_d[sl],
                                     norm_d[sl], cosmics_nsig, xp)
        has = has_d[sl]
        tf[sl] = xp.where(has[:, None], f_, 0)
        ti[sl] = xp.where(has[:, None], i_, 0)
        tm[sl] = xp.where(has[:, None], m_, 0)
        if tr is not None:
            tr[sl] = xp.where(has[:, None, None], r_, 0)
    return to_host(tf), to_host(ti), to_host(tm), None if tr is None else to_host(tr)


def coadd(spectra: Spectra, *, cosmics_nsig: float | None = COSMICS_NSIG, onetile: bool = False,
          no_normalize: bool = False, coadd_norm=None, chunk: int = 256,
          norm_chi2_threshold: float = NORM_CHI2_THRESHOLD, backend="auto") -> Spectra:
    """Coadd the exposures of each target, band by band (desispec ``coadd``).

    Parameters
    ----------
    spectra : Spectra
        Uncoadded spectra with a FIBERMAP (TARGETID, FIBERSTATUS, ...). Not modified.
    cosmics_nsig : float or None
        Outlier rejection threshold in sigma (default :data:`COSMICS_NSIG`, desispec's 4);
        None or 0 switches the rejection off.
    onetile : bool
        Inputs are from one tile (keeps tile-specific columns in FIBERMAP).
    no_normalize : bool
        Skip the per-exposure normalisation (no COADD_NORM columns).
    coadd_norm : (nrows,) array, optional
        Use these per-exposure factors instead of computing them (only targets
        with a factor different from 1 get the VARIABLE bit).
    chunk : int
        Targets per batch (bounds device memory).
    norm_chi2_threshold : float
        Reduced χ² between the crude and the rescaled crude coadd at or above
        which a target is VARIABLE and keeps its per-exposure factors (desispec
        default 0.1); see :mod:`gpuspec.coadd.normalize`.
    backend : {"auto", "numpy", "cupy"} or module

    Returns
    -------
    Spectra
        One row per target (order of first appearance), arrays on the host
        (numpy) with the input dtypes; ``fibermap`` coadded, ``exp_fibermap``
        per exposure, ``scores`` as desispec.

    Backends: numpy, cupy.
    """
    xp = get_xp(backend)
    fm = spectra.fibermap
    if fm is None:
        raise ValueError("coadd needs a fibermap with TARGETID")
    targets, _ = ordered_unique(fm["TARGETID"])
    nrows = len(fm)
    fskey = fiberstatus_column(fm.dtype.names)
    fstat = np.asarray(fm[fskey]).astype(np.int64)
    norm = np.ones(nrows)
    sigma = None
    with nvtx_range("coadd.normalize"):
        if coadd_norm is not None:
            norm = np.asarray(coadd_norm, dtype=np.float64).copy()
            sigma = np.zeros(nrows)
            tids = np.asarray(fm["TARGETID"])
            from ..maskbits import fibermask
            for t in np.unique(tids[norm != 1.0]):
                fstat[tids == t] |= fibermask.VARIABLE
        elif not no_normalize:
            if "FIBERSTATUS" in fm.dtype.names:
                norm, sigma, fstat = per_exposure_normalization(
                    spectra, targets, xp, norm_chi2_threshold=norm_chi2_threshold)
    out_flux, out_ivar, out_mask, out_res = {}, {}, {}, {}
    for b in spectra.bands:
        with nvtx_range(f"coadd.band.{b}"):
            wave = to_device(spectra.wave[b], xp)
            flux = to_device(spectra.flux[b], xp)
            ivar = to_device(spectra.ivar[b], xp)
            mask = to_device(spectra.mask[b], xp) if spectra.mask is not None else None
            rdata = to_device(spectra.resolution_data[b], xp) \
                if spectra.resolution_data is not None else None
            good = use_for_coadd(fstat, b)
            idx, valid = target_index_table(fm["TARGETID"], targets, use=good)
            normtab = np.concatenate([norm, [1.0]])[idx]
            tf, ti, tm, tr = _coadd_band_chunks(wave, flux, ivar, mask, rdata, idx, valid,
                                                normtab, cosmics_nsig, chunk, xp)
            out_flux[b], out_ivar[b], out_mask[b], out_res[b] = tf, ti, tm, tr
    with nvtx_range("coadd.fibermap"):
        fm_in = fm.copy()
        fm_in[fskey] = fstat
        normalize = coadd_norm is not None or not no_normalize
        tfmap, efmap = coadd_fibermap(fm_in, onetile=onetile,
                                      coadd_norm=norm if normalize else None,
                                      sigma_coadd_norm=sigma if normalize else None)
    result = Spectra(bands=list(spectra.bands), wave={b: np.asarray(to_host(spectra.wave[b]))
                                                     for b in spectra.bands},
                     flux=out_flux, ivar=out_ivar,
                     mask=out_mask if spectra.mask is not None else None,
                     resolution_data=out_res if spectra.resolution_data is not None else None,
                     fibermap=tfmap, exp_fibermap=efmap, meta=copy.deepcopy(spectra.meta))
    result.scores = coadd_scores(result, spectra.scores, np.asarray(fm["TARGETID"]))
    return result
