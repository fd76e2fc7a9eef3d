"""Sky model and sky subtraction (desispec.sky, default method), batched over fibers.

:func:`compute_sky` fits one deconvolved sky spectrum ``s`` on the frame's wavelength
grid to all sky fibers at once, ``flux_f ≈ R_f s`` (banded normal equations
``sum_f R_f^T W_f R_f s = sum_f R_f^T W_f flux_f``), with desispec's iterative
rejection (worst pixel per wavelength in the first iteration, then every > 4σ pixel;
whole fibers whose median residual is > 7 NMAD away), then re-convolves ``s`` with
every fiber's own resolution. Its variance is ``diag(R̄ C R̄^T)`` with ``C`` the
inverse normal matrix (only its band is computed) and ``R̄`` the mean resolution,
plus desispec's extra variance around bright sky lines (``add_variance``), and the
per-fiber throughput corrections fitted on the sky lines (THRPUTCORR).

Not implemented (desispec options that need calibration files not modelled here):
``adjust_wavelength``, ``adjust_lsf``, ``pcacorr``, ``fit_offsets``, ``skygradpca``,
``tpcorrparam``; asking for them raises :class:`NotImplementedError`.

Backends: numpy, cupy. Host reads: one scalar per rejection iteration.
"""

from __future__ import annotations

import logging

import numpy as np

from .. import resolution
from ..backend import get_xp, to_device, to_host
from ..errors import BadDataError, InputError
from ..maskbits import specmask
from ..profiling import nvtx_range
from .banded import convolved_variance, inverse_band, normal_band, rt_dot, solve_band
from .containers import SkyModel
from .fibers import fiberbitmasked, sky_fibers
from .skylines import SKY_LINES
from .util import combine_ivar, interp_rows, masked_median

__all__ = ["compute_sky", "subtract_sky", "throughput_corrections", "model_variance"]

log = logging.getLogger(__name__)


def _band(meta) -> str:
    cam = str((meta or {}).get("CAMERA", "brz")).strip().lower()
    return cam[0] if cam else "brz"


def _widen(xp, bad):
    out = bad.copy()
    out[1:-1] = bad[1:-1] | bad[2:] | bad[:-2]
    return out


def _fit_sky(xp, flux, ivar, rsky, nsig, max_iterations, min_iterations):
    """desispec ``compute_sky_linear`` without offsets, gradients or throughput model."""
    nsky, nw = flux.shape
    nsig2 = nsig ** 2
    bad_fibers = xp.zeros(nsky, bool)
    nout_tot = 0
    for it in range(max_iterations):
        ab = normal_band(rsky, ivar)
        param = solve_band(ab, rt_dot(rsky, ivar * flux))
        model = resolution.apply(rsky, xp.broadcast_to(param, (nsky, nw)))
        res = flux - model
        chi2 = ivar * res ** 2
        ok = ivar > 0
        medflux = masked_median(res, ok, axis=1, default=0.0)
        nz = medflux != 0
        rms = 1.48 * masked_median(xp.abs(medflux), nz, axis=0, default=0.0)
        newbad = (xp.abs(medflux) > 7 * rms) & (nz.sum() > 2)
        bad_fibers |= newbad
        ivar = xp.where(newbad[:, None], 0.0, ivar)
        if it < 1:
            worst = xp.argmax(chi2, axis=0)
            hit = xp.any(chi2 > nsig2, axis=0)
            rej = (xp.arange(nsky)[:, None] == worst[None, :]) & hit[None, :]
        else:
            rej = chi2 > nsig2
        ivar = xp.where(rej, 0.0, ivar)
        nout = int(rej.sum())
        nout_tot += nout
        if nout == 0 and it >= min_iterations - 1:
            break
    return param, ab, ivar, nout_tot, bad_fibers


def _model_ivar(xp, ivar):
    """desispec ``model_ivar``: a smooth ivar model keeping the very low weights."""
    vs_wave = xp.median(ivar, axis=0)
    vs_fiber = xp.median(ivar, axis=1)
    mm = xp.median(vs_fiber)
    model = vs_fiber[:, None] / mm * vs_wave[None, :]
    return xp.where(ivar <= 0.01 * vs_wave[None, :], ivar, model)


@nvtx_range("compute_sky")
def compute_sky(frame, nsig_clipping=4.0, max_iterations=100, model_ivar=False,
                add_variance=True, adjust_wavelength=False, adjust_lsf=False,
                only_use_skyfibers_for_adjustments=True, pcacorr=None, fit_offsets=False,
                fiberflat=None, skygradpca=None, min_iterations=5, tpcorrparam=None,
                exclude_sky_targetids=None, override_sky_targetids=None,
                backend="auto") -> SkyModel:
    """Sky model of a flat-fielded frame (desispec ``compute_sky``, default method).

    Parameters
    ----------
    frame : gpuspec.Frame
        Flat-fielded frame with ``resolution_data`` and a fibermap with OBJTYPE.
    nsig_clipping, max_iterations, model_ivar, add_variance, min_iterations,
    exclude_sky_targetids, override_sky_targetids :
        desispec's options and defaults.
    adjust_wavelength, adjust_lsf, pcacorr, fit_offsets, skygradpca, tpcorrparam :
        Must keep their defaults (not implemented).
    fiberflat, only_use_skyfibers_for_adjustments :
        Accepted for compatibility (only used by the options above in desispec).
    backend : {"auto", "numpy", "cupy"}

    Returns
    -------
    SkyModel

    Raises
    ------
    BadDataError
        No (valid) sky fiber in the frame.
    InputError
        No resolution data or no fibermap.

    Backends: numpy, cupy.
    """
    if adjust_wavelength or adjust_lsf or pcacorr is not None or fit_offsets or \
            skygradpca is not None or tpcorrparam is not None:
        raise NotImplementedError("gpuspec compute_sky implements desispec's default method "
                                  "only (no wavelength/LSF adjustment, PCA, offsets, sky "
                                  "gradients or throughput model)")
    if frame.resolution_data is None or frame.fibermap is None:
        raise InputError("compute_sky needs the frame's resolution matrices and fibermap")
    xp = get_xp(backend)
    sky_idx = sky_fibers(frame.fibermap, override_sky_targetids, exclude_sky_targetids)
    if sky_idx.size == 0:
        raise BadDataError("frame has no sky fibers (no fibermap row with OBJTYPE='SKY')",
                           hdu="FIBERMAP", keyword="OBJTYPE")
    wave = to_device(frame.wave, xp, np.float64)
    flux_all = to_device(frame.flux, xp, np.float64)
    ivar_in = to_device(frame.ivar, xp, np.float64)
    mask_in = to_device(frame.mask, xp) if frame.mask is not None else \
        xp.zeros(flux_all.shape, np.int32)
    rdata = to_device(frame.resolution_data, xp, np.float64)
    civar, _ = fiberbitmasked(ivar_in, mask_in, frame.fibermap, "sky", _band(frame.meta))
    has = to_host(xp.any(civar[to_device(sky_idx, xp)] > 0, axis=1))
    sky_idx = sky_idx[has]
    if sky_idx.size == 0:
        raise BadDataError("no valid sky fibers (all have ivar=0 or a bad FIBERSTATUS)",
                           hdu="FIBERMAP")
    sdev = to_device(sky_idx, xp)
    ivar = civar[sdev]
    flux = flux_all[sdev]
    if model_ivar:
        ivar = _model_ivar(xp, ivar)
    param, ab, ivar, nrej, badf = _fit_sky(xp, flux, ivar, rdata[sdev], float(nsig_clipping),
                                           int(max_iterations), int(min_iterations))
    nf, nw = flux_all.shape
    csky = resolution.apply(rdata, xp.broadcast_to(param, (nf, nw)))
    rmean = rdata.mean(axis=0)
    cvar = convolved_variance(inverse_band(ab), rmean)
    cskyivar = xp.broadcast_to((cvar > 0) / (cvar + (cvar == 0)), (nf, nw)).copy()
    if sky_idx.size > 1 and add_variance:
        skyivar = model_variance(wave, flux_all, ivar_in, csky, cskyivar, sdev)
    else:
        skyivar = cskyivar.copy()
    # poorly constrained wavelengths, widened by twice the resolution
    wbad = (ab[0] <= 0).astype(np.float64)
    wbad = resolution.apply(rmean, resolution.apply(rmean, wbad)) != 0
    nmin = min(10, max(1, sky_idx.size // 2))
    wbad |= _widen(xp, (ivar > 0).sum(axis=0) < nmin)
    csky = xp.where(wbad[None, :], 0.0, csky)
    skyivar = xp.where(wbad[None, :], 0.0, skyivar)
    mask = (skyivar == 0).astype(np.uint32)
    badrows = xp.zeros(nf, bool)
    badrows[sdev] = badf
    mask = xp.where(badrows[:, None], mask | specmask.BADSKY, mask).astype(np.uint32)
    tid = np.asarray(frame.fibermap["TARGETID"])[sky_idx] \
        if "TARGETID" in frame.fibermap.dtype.names else None
    model = SkyModel(wave=wave, flux=csky, ivar=skyivar, mask=mask, stat_ivar=cskyivar,
                     throughput_corrections_model=xp.ones(nf, dtype=np.float32),
                     skytargetid=tid, nrej=int(nrej), meta=dict(frame.meta or {}))
    model.throughput_corrections = throughput_corrections(
        wave, flux_all, ivar_in * (mask_in == 0), model.flux, model.ivar)
    return model


def model_variance(wave, flux, ivar, csky, cskyivar, sdev):
    """desispec ``_model_variance``: extra sky variance around the bright sky lines.

    At every local maximum of the mean sky above 10 % of its peak, finds the smallest
    wavelength error σ_w (0.005–2 Å) for which the median χ² of the sky-fiber residuals
    (sky error ``0.005·sky`` and ``σ_w·|dsky/dλ|`` added) is ≤ 1 (with desispec's
    median-to-mean factor 0.7888), and adds that variance to the sky model within
    ±3 bins of the peak (a later peak wins where windows overlap). Batched over peaks.

    Backends: numpy, cupy.
    """
    from ..backend import get_array_module

    xp = get_array_module(flux, csky)
    nw = wave.shape[0]
    sflux, scsky = flux[sdev], csky[sdev]
    tivar = combine_ivar(ivar[sdev], cskyivar[sdev])
    msky = csky.mean(axis=0)
    dsky = xp.zeros(nw)
    dsky[1:-1] = xp.abs((msky[2:] - msky[:-2]) / (wave[2:] - wave[:-2]))
    maxvar = 1.0 / (tivar + (tivar == 0)) + (0.2 * msky) ** 2 + (0.5 * dsky) ** 2
    res2 = (sflux - scsky) ** 2
    tivar = xp.where(res2 > 9 * maxvar, 0.0, tivar)
    tmp = (msky[1:-1] > msky[2:]) & (msky[1:-1] > msky[:-2]) & (msky[1:-1] > 0.1 * msky.max())
    peaks = xp.flatnonzero(tmp) + 1
    peaks = peaks[peaks >= 3]  # desispec's windows with negative starts change nothing
    in_var = 1.0 / (cskyivar + (cskyivar == 0))
    npk = int(peaks.shape[0])
    if npk == 0:
        return (cskyivar > 0) / (in_var + (in_var == 0))
    sw = xp.arange(0.005, 2, 0.005)
    swp = xp.zeros(npk)
    off = xp.arange(-2, 3)
    for c0 in range(0, npk, 32):  # chunks of peaks (memory), no host reads
        pk = peaks[c0:c0 + 32]
        idx = pk[:, None] + off[None, :]                      # (P, 5)
        ok = idx < nw
        ii = xp.clip(idx, 0, nw - 1)
        tv = tivar[:, ii] * ok[None]                          # (nsky, P, 5)
        r2 = res2[:, ii]
        var = 1.0 / (tv + (tv == 0))
        base = var + (0.005 * msky[ii]) ** 2
        pv = (tv[..., None] > 0) / (base[..., None] + (sw * dsky[ii][..., None]) ** 2)
        num = (pv * r2[..., None]).sum(axis=2)                # (nsky, P, nsw)
        den = (tv > 0).sum(axis=2)[..., None]
        with np.errstate(invalid="ignore", divide="ignore"):
            c2 = num / den
        nanany = xp.any(xp.isnan(c2), axis=0)
        med = masked_median(xp.where(xp.isnan(c2), 0.0, c2), xp.ones(c2.shape, bool),
                            axis=0) / 0.7888
        good = (med <= 1) & ~nanany                           # (P, nsw)
        first = xp.argmax(good, axis=1)
        swp[c0:c0 + 32] = xp.where(xp.any(good, axis=1), sw[first], 2.0)
    p = xp.arange(nw)
    j = xp.searchsorted(peaks, p + 3, side="right") - 1
    owned = (j >= 0) & (peaks[xp.clip(j, 0, npk - 1)] >= p - 3)
    s = swp[xp.clip(j, 0, npk - 1)]
    extra = (0.005 * msky) ** 2 + (s * dsky) ** 2
    skyvar = xp.where(owned[None, :], in_var + extra[None, :], in_var)
    return (cskyivar > 0) / (skyvar + (skyvar == 0))


def throughput_corrections(wave, flux, tivar, skyflux, skyivar, half_width=4.0):
    """Per-fiber sky throughput corrections (desispec ``calculate_throughput_corrections``).

    For every bright sky line (:data:`~gpuspec.calibrate.skylines.SKY_LINES`) inside the
    grid, fits ``flux ≈ a + c·sky`` within ±``half_width`` Å; combines the scales ``c``
    per fiber (error floor 0.005) with iterative 3σ rejection of the worst line; keeps 1
    where the combined error exceeds 0.1 or nothing could be fitted.

    Parameters
    ----------
    tivar : array (nspec, nwave)
        Frame ivar already multiplied by ``mask == 0``.

    Returns
    -------
    array (nspec,)

    Backends: numpy, cupy.
    """
    from ..backend import get_array_module

    xp = get_array_module(flux, skyflux)
    w = to_host(wave)
    lines = SKY_LINES[(SKY_LINES > w[0]) & (SKY_LINES < w[-1])]
    win = (w[None, :] >= lines[:, None] - half_width) & (w[None, :] <= lines[:, None] +
                                                         half_width)
    keep = win.sum(axis=1) >= 2
    W = to_device(win[keep].T.astype(np.float64), xp)          # (nwave, nlines)
    nf = flux.shape[0]
    if W.shape[1] == 0:
        return xp.ones(nf)
    tv = tivar * (skyivar > 0)
    sw, swf = tv @ W, (tv * flux) @ W
    sws, sws2 = (tv * skyflux) @ W, (tv * skyflux ** 2) @ W
    swsf = (tv * flux * skyflux) @ W
    det = sw * sws2 - sws ** 2
    valid = (sw > 0) & (det != 0)
    dd = xp.where(valid, det, 1.0)
    coef = (sw * swsf - sws * swf) / dd
    var = xp.where(valid, sw / dd, 0.0)
    ivar = (var > 0) / (var + (var == 0) + 0.005 ** 2) * valid
    ivo = (var > 0) / (var + (var == 0) + 0.02 ** 2) * valid
    running = xp.any(valid, axis=1)
    mcoef = xp.ones(nf)
    failed = ~running
    for _ in range(50):
        a = ivar.sum(axis=1)
        failed |= running & (a <= 0)
        running &= a > 0
        m = (ivar * coef).sum(axis=1) / xp.where(a > 0, a, 1.0)
        mcoef = xp.where(running, m, mcoef)
        chi2 = ivo * (coef - mcoef[:, None]) ** 2
        worst = xp.argmax(chi2, axis=1)
        cmax = xp.take_along_axis(chi2, worst[:, None], axis=1)[:, 0]
        med = masked_median(chi2, chi2 > 0, axis=1, default=np.nan)
        rej = running & (cmax > 9 * med)
        hit = (xp.arange(chi2.shape[1])[None, :] == worst[:, None]) & rej[:, None]
        ivar = xp.where(hit, 0.0, ivar)
        ivo = xp.where(hit, 0.0, ivo)
        running &= rej
        if not bool(xp.any(running)):
            break
    a = ivar.sum(axis=1)
    err = 1.0 / xp.sqrt(xp.where(a > 0, a, 1e-300))
    return xp.where(~failed & (err <= 0.1) & xp.any(valid, axis=1), mcoef, 1.0)


def subtract_sky(frame, skymodel, apply_throughput_correction_to_lines=True,
                 apply_throughput_correction=False, zero_ivar=True, backend="auto"):
    """Subtract a sky model from a frame (desispec ``subtract_sky``); returns a new Frame.

    Fibers with a bad FIBERSTATUS for sky subtraction get ``mask |= BADFIBER`` (and ivar
    0 when ``zero_ivar``). The sky throughput corrections multiply the whole sky
    (``apply_throughput_correction``) or, by default and except for blue cameras, only
    the sky lines above 5700 Å (the sky minus a continuum interpolated between bins more
    than 2 Å from every line). ``ivar`` combines both variances, ``mask |= sky mask``.

    Raises
    ------
    BadDataError
        Different wavelength grids or numbers of fibers.

    Backends: numpy, cupy.
    """
    from dataclasses import replace

    from .fiberflat import check_same_wave

    xp = get_xp(backend)
    if frame.flux.shape != skymodel.flux.shape:
        raise BadDataError(f"frame has {frame.flux.shape} spectra×bins, sky model "
                           f"{skymodel.flux.shape}")
    check_same_wave(frame.wave, skymodel.wave, "frame and sky model")
    flux = to_device(frame.flux, xp, np.float64)
    ivar = to_device(frame.ivar, xp, np.float64)
    mask = to_device(frame.mask, xp) if frame.mask is not None else \
        xp.zeros(flux.shape, np.int32)
    ivar, mask = fiberbitmasked(ivar, mask, frame.fibermap, "sky", _band(frame.meta),
                                ivar_framemask=zero_ivar)
    sflux = to_device(skymodel.flux, xp, np.float64)
    model = sflux.copy()
    tc = skymodel.throughput_corrections
    if tc is not None:
        tc = to_device(tc, xp, np.float64)
        if apply_throughput_correction:
            model = model * tc[:, None]
        elif apply_throughput_correction_to_lines and _band(frame.meta) != "b":
            w = to_host(skymodel.wave).astype(np.float64)
            cont = np.ones(w.size, bool)
            for line in SKY_LINES[SKY_LINES >= 5700]:
                cont &= np.abs(w - line) > 2.0
            if cont.any():
                wd = to_device(w, xp)
                ci = to_device(np.flatnonzero(cont), xp)
                c = interp_rows(wd, wd[ci], sflux[:, ci])
                lines = xp.clip(sflux - c, 0.0, None)
                model = model + (tc[:, None] - 1.0) * lines
            else:
                log.warning("no sky continuum bins: no throughput correction of sky lines")
    new_flux = flux - model
    new_ivar = combine_ivar(ivar, to_device(skymodel.ivar, xp, np.float64))
    new_mask = mask | to_device(skymodel.mask, xp).astype(mask.dtype)
    return replace(frame, flux=new_flux, ivar=new_ivar, mask=new_mask)
