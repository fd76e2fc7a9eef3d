"""Flux calibration from standard stars (desispec.fluxcalibration), batched over stars.

:func:`compute_flux_calibration` fits one deconvolved calibration vector ``c`` (electron/Å
per 10⁻¹⁷ erg/s/cm²/Å) with per-star scales ``a_s`` to the flat-fielded, sky-subtracted
standard stars, ``flux_s ≈ a_s R_s (c · model_s)``, exactly as desispec does: a median
first guess, a generous 20 % error for the first clipping, up to 20 iterations of
(banded) least squares with a weak prior toward the median calibration, one worst
outlier per wavelength in the first iteration then every > ``nsig_clipping`` σ pixel,
stars with scale < 0.2 dropped, the worst star beyond ``nsig_flux_scale`` NMAD of the
scales dropped, the mean inverse scale normalised to 1. The result is re-convolved with
each fiber's resolution (normalised by ``R·1``); its variance is
``diag(R̄ C R̄^T)``; bins with fewer than ``min(3, nstar // 2)`` stars, widened by one,
get 0; the interstellar Ca II H&K and Na D lines (±6 Å) are interpolated over.

The point-source (fiber-aperture) correction of desispec needs desimodel's fiber
acceptance model and plate scale; here it is an input (``point_source_correction``,
default 1 for every fiber, which is exact for the simulator's fibers) and
``psf_to_fiber_flux`` likewise.

Backends: numpy, cupy. Host reads: the per-star scales (a few numbers) per iteration.
"""

from __future__ import annotations

import logging

import numpy as np

from .. import resolution
from ..backend import get_xp, to_device, to_host
from ..errors import BadDataError, InputError
from ..profiling import nvtx_range
from .banded import convolved_variance, inverse_band, normal_band, rt_dot, solve_band
from .containers import FluxCalib
from .fibers import is_std_star
from .util import interp_rows, masked_median, resample_flux

__all__ = ["compute_flux_calibration", "apply_flux_calibration", "ISM_LINES", "FLUX_UNIT",
           "CALIB_UNIT"]

log = logging.getLogger(__name__)

#: interstellar absorption lines interpolated over in the calibration (vacuum Å)
ISM_LINES = np.array([3934.77, 3969.59, 5891.58, 5897.56])
FLUX_UNIT = "10**-17 erg/(s cm2 Angstrom)"
CALIB_UNIT = "10**+17 cm2 count s / erg"
MARGIN = 3


def _add_margin(xp, a, m):
    left = xp.repeat(a[..., :1], m, axis=-1)
    right = xp.repeat(a[..., -1:], m, axis=-1)
    return xp.concatenate([left, a, right], axis=-1)


def _std_rows(fibermap, model_fibers, stdcheck):
    model_fibers = np.asarray(model_fibers, np.int64)
    if stdcheck:
        std = np.flatnonzero(is_std_star(fibermap))
        if std.size == 0:
            raise BadDataError("no standard stars in the frame's fibermap (DESI_TARGET "
                               "STD bits or FA_TYPE)", hdu="FIBERMAP", keyword="DESI_TARGET")
        dropped = set(model_fibers.tolist()) - set(std.tolist())
        if dropped:
            log.error("discarding input model fibers that are not standards: %s",
                      sorted(dropped))
        std = np.intersect1d(model_fibers, std)
    else:
        std = np.unique(model_fibers)
    if std.size == 0:
        raise BadDataError("none of the model stars is a standard star of this frame")
    return std


def _solve_calib(xp, rstd, ivar, flux, model, scale, good, prior):
    """Calibration vector: banded normal equations with a weak prior ``eps (c - prior)``."""
    w = ivar * (scale ** 2 * good)[:, None]
    ab = normal_band(rstd, w, cscale=model)
    b = rt_dot(rstd, ivar * (scale * good)[:, None] * flux, cscale=model)
    eps = xp.where(ivar > 0, ivar, xp.inf).min() / 10000.0
    ab = ab.copy()
    ab[0] = ab[0] + eps
    return solve_band(ab, b + prior * eps), ab


def _scales(xp, rstd, flux, ivar, model_calib):
    """Best scale of each star: ``sum w f M / sum w M²`` with ``M = R (c·model)``."""
    M = resolution.apply(rstd, model_calib)
    a = (ivar * M ** 2).sum(axis=1)
    b = (ivar * flux * M).sum(axis=1)
    return xp.where(a > 0, b / xp.where(a > 0, a, 1.0), 0.0), M


def _reject(xp, chi2, ivar, nsig2, first):
    if first:
        worst = xp.argmax(chi2, axis=0)
        hit = xp.any(chi2 > nsig2, axis=0)
        rej = (xp.arange(chi2.shape[0])[:, None] == worst[None, :]) & hit[None, :]
    else:
        rej = chi2 > nsig2
    return xp.where(rej, 0.0, ivar), int(rej.sum())


def _star_selection(scale, badfiber, nsig_flux_scale, nbest):
    """desispec's normalisation scale and star rejection (host, a few numbers)."""
    good = badfiber == 0
    mscale = 1.0 / np.mean(1.0 / scale[good])
    if nbest > 0:
        ii = np.argsort(scale)[::-1][:nbest]
        return 1.0 / np.mean(1.0 / scale[ii][badfiber[ii] == 0]), badfiber
    med = np.median(scale[good])
    rms = 1.4 * np.median(np.abs(scale[good] - med))
    bad = np.abs(scale - med) > nsig_flux_scale * rms if nsig_flux_scale > 0 else \
        np.zeros(scale.size, bool)
    if bad.any():
        g = ~bad
        mscale = 1.0 / np.mean(1.0 / scale[g][badfiber[g] == 0])
        newly = bad & (badfiber == 0) & (np.abs(scale - 1) > 0.05)
        if newly.any():
            badfiber = badfiber.copy()
            badfiber[np.flatnonzero(newly)[np.argmax(np.abs(scale[newly] - 1))]] = 1
    return mscale, badfiber


def _iterate(xp, rstd, flux, ivar0, model, conv, nsig, nbest, nsig_flux_scale):
    """The first guess and the 20-iteration fit of desispec (returns calib, ivar, ...)."""
    nstd, nw = flux.shape
    nsig2 = nsig ** 2
    ivar = ivar0.copy()
    calib0 = xp.where(conv != 0, flux / xp.where(conv != 0, conv, 1.0), 0.0)
    median_calib = xp.median(calib0, axis=0)
    M = median_calib[None, :] * conv
    a = (ivar * M ** 2).sum(axis=1)
    b = (ivar * flux * M).sum(axis=1)
    scale_d = xp.where(a > 0, b / xp.where(a > 0, a, 1.0), 0.0)
    scale = to_host(scale_d).astype(np.float64)
    badfiber = np.zeros(nstd, np.int64)
    null = to_host(ivar.sum(axis=1) == 0)
    badfiber[null] = 1
    low = (~null) & (scale < 0.2)
    badfiber[low] = 1
    scale[null] = 1.0
    gd = to_device(badfiber == 0, xp)
    ivar = xp.where(gd[:, None], (ivar > 0) / (1.0 / (ivar + (ivar == 0)) + (0.2 * flux) ** 2),
                    0.0)
    chi2 = xp.where(gd[:, None], ivar * (flux - to_device(scale, xp)[:, None] * M) ** 2, 0.0)
    mscale = 1.0 / np.mean(1.0 / scale[badfiber == 0])
    scale /= mscale
    median_calib = median_calib * mscale
    ivar = xp.where(chi2 > nsig2, 0.0, ivar)
    calib, ab = None, None
    for it in range(20):
        if not bool(xp.any(ivar > 0)):
            raise BadDataError("null ivar for every standard star: cannot calibrate")
        good = to_device((badfiber == 0).astype(np.float64), xp)
        sc = to_device(scale, xp)
        calib, ab = _solve_calib(xp, rstd, ivar, flux, model, sc, good, median_calib)
        s_new, M = _scales(xp, rstd, flux, ivar, calib[None, :] * model)
        s_new = to_host(s_new)
        upd = badfiber == 0
        scale[upd] = s_new[upd]
        newbad = upd & (scale < 0.2)
        badfiber[newbad] = 1
        nb = to_device(newbad, xp)
        ivar = xp.where(nb[:, None], 0.0, ivar)
        upd_d = to_device(upd & ~newbad, xp)
        chi2 = xp.where(upd_d[:, None], ivar * (flux - to_device(scale, xp)[:, None] * M) ** 2,
                        chi2)
        ivar, nout = _reject(xp, chi2, ivar, nsig2, it < 1)
        mscale, badfiber = _star_selection(scale, badfiber, nsig_flux_scale, nbest)
        scale /= mscale
        calib = calib * mscale
        log.debug("fluxcalib iter %d nout=%d mscale=%.5f", it, nout, mscale)
        if nout == 0 and abs(mscale - 1.0) < 1e-4:
            break
    return calib, ivar, scale, badfiber, ab


@nvtx_range("compute_flux_calibration")
def compute_flux_calibration(frame, input_model_wave, input_model_flux, input_model_fibers,
                             nsig_clipping=10.0, deg=2, debug=False,
                             highest_throughput_nstars=0, exposure_seeing_fwhm=1.1,
                             stdcheck=True, nsig_flux_scale=3, point_source_correction=None,
                             psf_to_fiber_flux=None, backend="auto") -> FluxCalib:
    """Flux calibration of a flat-fielded, sky-subtracted frame (desispec semantics).

    Parameters
    ----------
    frame : gpuspec.Frame
        With ``resolution_data`` and a fibermap.
    input_model_wave : (nmodelwave,)
    input_model_flux : (nmodel, nmodelwave)
        Normalised stellar models, 10⁻¹⁷ erg/s/cm²/Å.
    input_model_fibers : (nmodel,) int
        Row of each model in the frame (desispec: FIBER % 500).
    nsig_clipping, highest_throughput_nstars, stdcheck, nsig_flux_scale :
        desispec's options; ``deg``, ``debug`` and ``exposure_seeing_fwhm`` are unused
        (as in desispec, the seeing only feeds the fiber-acceptance corrections).
    point_source_correction : (nspec,), optional
        desispec's FLAT_TO_PSF_FLUX (default 1; 0 marks an unusable fiber).
    psf_to_fiber_flux : (nspec,), optional
        desispec's PSF_TO_FIBER_FLUX (default 1), stored in FIBERCORR.
    backend : {"auto", "numpy", "cupy"}

    Returns
    -------
    FluxCalib

    Raises
    ------
    BadDataError
        No standard star, S/N < 2 (desispec would then scale an average calibration
        file, which gpuspec does not have), or no usable pixel.

    Backends: numpy, cupy.
    """
    if frame.resolution_data is None or frame.fibermap is None:
        raise InputError("compute_flux_calibration needs resolution matrices and a fibermap")
    xp = get_xp(backend)
    nspec, nwave = frame.flux.shape
    m = MARGIN
    wave = np.asarray(to_host(frame.wave), np.float64)
    dw = wave[1] - wave[0]
    twave = np.concatenate([wave[0] + dw * np.arange(-m, 0), wave,
                            wave[-1] + dw * np.arange(1, m + 1)])
    flux = _add_margin(xp, to_device(frame.flux, xp, np.float64), m)
    ivar = _add_margin(xp, to_device(frame.ivar, xp, np.float64), m)
    mask = _add_margin(xp, to_device(frame.mask, xp), m) if frame.mask is not None else \
        xp.zeros((nspec, nwave + 2 * m), np.int32)
    rdata = _add_margin(xp, to_device(frame.resolution_data, xp, np.float64), m)
    psc = np.ones(nspec) if point_source_correction is None else \
        np.array(point_source_correction, np.float64)
    badpsc = psc == 0
    psc[badpsc] = 1.0
    psc_d = to_device(psc, xp)
    ivar = xp.where(to_device(badpsc, xp)[:, None], 0.0, ivar)
    flux = flux * psc_d[:, None]
    std = _std_rows(frame.fibermap, input_model_fibers, stdcheck)
    sd = to_device(std, xp)
    mfib = np.asarray(input_model_fibers, np.int64)
    first = np.array([np.flatnonzero(mfib == s)[0] for s in std])
    mflux = to_device(np.asarray(input_model_flux, np.float64)[first], xp)
    model = resample_flux(to_device(twave, xp), to_device(np.asarray(input_model_wave,
                                                                     np.float64), xp), mflux)
    rstd = rdata[sd]
    conv = resolution.apply(rstd, model)
    sflux, sivar, smask = flux[sd], ivar[sd], mask[sd]
    ok = (sivar > 0) & (smask == 0)
    snr = float(masked_median((sflux * xp.sqrt(sivar)).ravel(), ok.ravel(), axis=0))
    if not snr >= 2.0:
        raise BadDataError(f"standard stars have median S/N per bin {snr:.3g} < 2: desispec "
                           "would scale an average calibration, which gpuspec does not have")
    calib, civ, scale, badfiber, ab_last = _iterate(
        xp, rstd, sflux, sivar * (smask == 0), model, conv, float(nsig_clipping),
        int(highest_throughput_nstars), float(nsig_flux_scale))
    return _finish(xp, frame, twave, rdata, sivar, civ, rstd, sflux, model, scale, badfiber,
                   calib, mask, psc, psf_to_fiber_flux, std, psc_d, ab_last)


def _finish(xp, frame, twave, rdata, sivar, civ, rstd, sflux, model, scale, badfiber, calib,
            mask, psc, psf_to_fiber_flux, std, psc_d, ab_last):
    """Final variance, convolution per fiber, masks, ISM lines, trimming (desispec)."""
    m = MARGIN
    nspec = rdata.shape[0]
    nw = twave.size
    cur = sivar * (civ > 0)
    good = to_device((badfiber == 0).astype(np.float64), xp)
    sc = to_device(scale, xp)
    # desispec adds the final normal matrix to the last iteration's one (its code does not
    # reset A before the variance pass): reproduced for parity
    _, ab = _solve_calib(xp, rstd, cur, sflux, model, sc, good, xp.zeros(nw))
    ab = ab + ab_last
    rmean = rdata.mean(axis=0)
    cvar = convolved_variance(inverse_band(ab), rmean)
    ccivar = (cvar > 0) / (cvar + (cvar == 0))
    norme = resolution.apply(rdata, xp.ones((nspec, nw)))
    conv = resolution.apply(rdata, xp.broadcast_to(calib, (nspec, nw)))
    ccal = xp.where(norme > 0, conv / xp.where(norme > 0, norme, 1.0), 0.0)
    nstd = rstd.shape[0]
    nmin = min(3, max(1, nstd // 2))
    bad = (cur > 0).sum(axis=0) < nmin
    widened = bad.copy()
    widened[1:-1] = bad[1:-1] | bad[2:] | bad[:-2]
    ccivar = xp.where(widened, 0.0, ccivar)
    ccal = xp.where(widened[None, :], 0.0, ccal)
    ccivar = xp.broadcast_to(ccivar, (nspec, nw)) * psc_d[:, None] ** 2
    mcal = resolution.apply(rmean, calib)
    ccal = ccal / psc_d[:, None]
    ism = np.zeros(nw, bool)
    for line in ISM_LINES:
        ism |= np.abs(twave - line) <= 6.0
    if ism.any():
        gi = to_device(np.flatnonzero(~ism), xp)
        bi = to_device(np.flatnonzero(ism), xp)
        tw = to_device(twave, xp)
        mcal[bi] = interp_rows(tw[bi], tw[gi], mcal[gi])
        ccal[:, bi] = interp_rows(tw[bi], tw[gi], ccal[:, gi])
    sl = slice(m, nw - m)
    fm = frame.fibermap
    fc = np.zeros(nspec, dtype=[("FLAT_TO_PSF_FLUX", "f8"), ("PSF_TO_FIBER_FLUX", "f8")])
    fc["FLAT_TO_PSF_FLUX"] = psc
    fc["PSF_TO_FIBER_FLUX"] = 1.0 if psf_to_fiber_flux is None else psf_to_fiber_flux
    comments = {"FLAT_TO_PSF_FLUX": "point-source correction applied to flux",
                "PSF_TO_FIBER_FLUX": "multiply to get the fiber flux"}
    stdfm = None if fm is None else np.asarray(fm)[std[badfiber == 0]]
    return FluxCalib(wave=to_device(twave[sl], xp), calib=ccal[:, sl], ivar=ccivar[:, sl].copy(),
                     mask=mask[:, sl].astype(np.uint32), meancalib=mcal[sl], fibercorr=fc,
                     fibercorr_comments=comments, stdstar_fibermap=stdfm,
                     meta=dict(frame.meta or {}))


def apply_flux_calibration(frame, fluxcalib, backend="auto"):
    """Calibrate a frame: ``flux / calib`` with propagated ivar (desispec semantics).

    ``ivar' = C⁴ ivar ivar_C / (C² ivar_C + F² ivar)`` where the calibration and the
    frame are valid (0 elsewhere); ``flux' = flux / C`` where ``C > 0`` (0 elsewhere).
    A PSF_TO_FIBER_FLUX correction adds the fibermap column PSF_TO_FIBER_SPECFLUX.
    Returns a new Frame (the caller sets BUNIT; see :mod:`gpuspec.io.cframe`).

    Raises
    ------
    BadDataError
        Wavelength grids differ by more than 0.001 Å, or different shapes.

    Backends: numpy, cupy.
    """
    from dataclasses import replace

    xp = get_xp(backend)
    fw, cw = to_host(frame.wave), to_host(fluxcalib.wave)
    if fw.shape != cw.shape or np.max(np.abs(fw - cw)) > 0.001:
        raise BadDataError("frame and flux calibration do not have the same wavelength "
                           f"arrays ({fw.size} vs {cw.size} bins)")
    if frame.flux.shape != fluxcalib.calib.shape:
        raise BadDataError(f"frame has {frame.flux.shape} spectra×bins, flux calibration "
                           f"{fluxcalib.calib.shape}")
    flux = to_device(frame.flux, xp, np.float64)
    ivar = to_device(frame.ivar, xp, np.float64)
    C = to_device(fluxcalib.calib, xp, np.float64)
    civ = to_device(fluxcalib.ivar, xp, np.float64)
    good = (civ > 0) & (C > 0) & (ivar > 0)
    den = C ** 2 * civ + flux ** 2 * ivar
    new_ivar = xp.where(good, C ** 4 * ivar * civ / xp.where(good, den, 1.0), 0.0)
    new_flux = flux * (C > 0) / (C + (C == 0))
    fm = frame.fibermap
    fc = fluxcalib.fibercorr
    if fm is not None and fc is not None and "PSF_TO_FIBER_FLUX" in (fc.dtype.names or ()):
        fm = _with_column(np.asarray(fm), "PSF_TO_FIBER_SPECFLUX",
                          np.asarray(fc["PSF_TO_FIBER_FLUX"], np.float64))
    return replace(frame, flux=new_flux, ivar=new_ivar, fibermap=fm)


def _with_column(table, name, values):
    """Copy of a structured array with column ``name`` set (added when missing)."""
    if name in table.dtype.names:
        out = table.copy()
    else:
        out = np.zeros(table.shape, dtype=table.dtype.descr + [(name, "f8")])
        for n in table.dtype.names:
            out[n] = table[n]
    out[name] = values
    return out
