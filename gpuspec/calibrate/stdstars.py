"""Standard-star fit against a template library (the idea of desispec ``desi_fit_stdstars``).

For one exposure and spectrograph (b, r and z frames together):

1. standard stars from the fibermap (DESI_TARGET STD bits, FA_TYPE) or a TARGETID list,
   FIBERSTATUS OR-ed over the cameras and bad fibers dropped; each camera flat-fielded
   and sky-subtracted; masked, sky-masked and flat-masked bins get ivar 0;
2. the stars with the highest blue S/N per √Å (at most ``maxstdstars``, above
   ``min_blue_snr``) are kept; 4300–4500 Å is masked (desispec's throughput dip);
3. data and models are divided by running-median continua (160 Å medians of 8 Å means,
   the same operator on both), the data's positive > 3σ spikes, bright sky lines (±6 Å), the
   Ca II H&K interstellar lines and λ > 8270 Å are masked and a ``template_error``
   fraction of the continuum is added to the variance;
4. the radial velocity is scanned in ``[-z_max, z_max]`` on the template closest to
   (6000 K, 4.0, −1.5) — coarse steps of 1e-4, then ``z_res`` — with each camera's model
   the template convolved with the star's resolution;
5. at that redshift every template whose g − r colour is within ``delta_color`` of the
   star's (and the smallest Teff/log g/[Fe/H] box around them) is fitted, with a
   quadratic multiplicative polynomial per camera marginalised (absorbs the residual
   instrument shape); the best χ² wins (desispec interpolates on the parameter grid);
   then desispec's second pass: the templates times each camera's smoothed data/best-model
   ratio, normalised again, are refitted (the instrument throughput's imprint on the
   running-median continuum otherwise biases the choice, e.g. 250 K cool);
6. the best template, redshifted, is scaled to the star's r-band magnitude (FLUX_R).

Everything is batched over stars (and templates); no per-star Python loop.
What real DESI uses instead: theoretical model-atmosphere templates and speclite's
Legacy Survey filter curves, Milky-Way extinction from E(B−V), Gaia photometry for
Gaia standards, and an interpolation on the parameter grid. See
:mod:`gpuspec.calibrate.templates`.

Backends: numpy, cupy (the median filters use ``scipy.ndimage`` / ``cupyx``).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from .. import resolution
from ..backend import get_xp, scipy_module, to_device, to_host
from ..limits import MAX_ZGRID, check_size
from ..errors import BadDataError, InputError
from ..profiling import nvtx_range
from .containers import StdStarModels
from .fiberflat import apply_fiberflat
from .fibers import bad_fiber_rows, is_std_star
from .sky import subtract_sky
from .templates import TemplateLibrary, load_templates, synthetic_mag
from .util import interp_rows, masked_median

__all__ = ["fit_stdstars", "STAR_SKY_LINES", "select_stars"]

log = logging.getLogger(__name__)

#: sky lines masked in the stellar fit (vacuum Å; desispec's list)
STAR_SKY_LINES = np.array([4047.5, 4359.3, 5462.3, 5578.9, 5891.3, 5897.3, 6301.8, 6365.4,
                           7823.3, 7855.2])
_ISM = np.array([3934.77, 3969.59])
_LEGACY_FLUX_RANGE = (10 ** ((22.5 - 30) / 2.5), 10 ** (22.5 / 2.5))


def _camdict(x):
    return {k: (v if isinstance(v, (list, tuple)) else [v]) for k, v in x.items()}


def select_stars(fibermap, std_targetids=None) -> np.ndarray:
    """Row indices of the standard stars with usable Legacy Survey photometry.

    Backends: host only (NumPy; fibermap table).
    """
    if std_targetids is not None:
        keep = np.isin(np.asarray(fibermap["TARGETID"]), np.asarray(std_targetids))
    else:
        keep = is_std_star(fibermap)
    lo, hi = _LEGACY_FLUX_RANGE
    for c in ("FLUX_G", "FLUX_R", "FLUX_Z"):
        v = np.asarray(fibermap[c], np.float64)
        keep &= (v > lo) & (v < hi)
    return np.flatnonzero(keep)


def _prepare(xp, frames, skies, flats, rows, status, apply_tc):
    """Flat-field and sky-subtract the stars of each camera (coadding repeated exposures)."""
    out = {}
    for cam, flist in frames.items():
        if cam not in skies or cam not in flats:
            log.warning("missing sky or flat for %s: camera ignored", cam)
            continue
        parts = []
        for i, fr in enumerate(flist):
            sub = _subset(fr, rows)
            sub.fibermap["FIBERSTATUS"] = status
            sky = _subset_sky(skies[cam][min(i, len(skies[cam]) - 1)], rows)
            ff = _subset_flat(flats[cam], rows)
            bad = to_device(bad_fiber_rows(sub.fibermap, "stdstars", cam[0]), xp)
            ivar = to_device(sub.ivar, xp, np.float64)
            ivar = ivar * (to_device(sub.mask, xp) == 0) * (to_device(sky.ivar, xp) != 0) \
                * (to_device(sky.mask, xp) == 0) * (to_device(ff.ivar, xp) != 0) \
                * (to_device(ff.mask, xp) == 0) * (~bad)[:, None]
            flux = to_device(sub.flux, xp, np.float64) * (ivar > 0)
            sub = replace(sub, flux=flux, ivar=ivar)
            sub = apply_fiberflat(sub, ff, backend=xp)
            sub = subtract_sky(sub, sky, apply_throughput_correction=apply_tc, backend=xp)
            parts.append(sub)
        out[cam] = _coadd(xp, parts)
    return out


def _subset(fr, rows):
    return replace(fr, flux=fr.flux[rows], ivar=fr.ivar[rows],
                   mask=None if fr.mask is None else fr.mask[rows],
                   resolution_data=fr.resolution_data[rows],
                   fibermap=np.asarray(fr.fibermap)[rows].copy(), chi2pix=None,
                   pixmask_fraction=None, modelimage=None)


def _subset_sky(sky, rows):
    tc = sky.throughput_corrections
    return replace(sky, flux=sky.flux[rows], ivar=sky.ivar[rows], mask=sky.mask[rows],
                   stat_ivar=None, throughput_corrections=None if tc is None else tc[rows])


def _subset_flat(ff, rows):
    return replace(ff, fiberflat=ff.fiberflat[rows], ivar=ff.ivar[rows], mask=ff.mask[rows],
                   fibermap=None if ff.fibermap is None else np.asarray(ff.fibermap)[rows])


def _coadd(xp, parts):
    """desispec's weighted coadd of repeated exposures of one camera (weights ∝ median flux)."""
    if len(parts) == 1:
        return parts[0]
    med = np.array([float(masked_median(p.flux.ravel(), (p.ivar > 0).ravel(), 0))
                    for p in parts])
    med = np.clip(med, 0, None)
    if not (med > 0).any():
        raise BadDataError("median flux <= 0 for every exposure of the standard stars")
    w = med / med[med > 0].mean()
    sw = sum(wi * p.ivar for wi, p in zip(w, parts))
    swf = sum(wi * p.ivar * p.flux for wi, p in zip(w, parts))
    swr = sum(wi * p.ivar[:, None, :] * to_device(p.resolution_data, xp) for wi, p in
              zip(w, parts))
    den = sw + (sw == 0)
    return replace(parts[0], ivar=sw, flux=swf / den, resolution_data=swr / den[:, None, :])


def _median_continuum(xp, a, width):
    nd = scipy_module(xp, "ndimage")
    return nd.median_filter(a, size=(1,) * (a.ndim - 1) + (int(width),), mode="nearest")


def _star_data(xp, fr, template_error):
    """Continuum-normalised flux and ivar of the stars of one camera, with desispec masks."""
    w = np.asarray(to_host(fr.wave), np.float64)
    wave = to_device(w, xp)
    flux, ivar = fr.flux, fr.ivar
    cont = _continuum(xp, flux, wave, float(w[1] - w[0]))
    ivar = xp.where(flux < cont + 3.0 / xp.sqrt(xp.where(ivar > 0, ivar, 1.0)), ivar, 0.0)
    bad = (w > 8270) | ((w >= 4300) & (w <= 4500))
    for line in np.concatenate([STAR_SKY_LINES, _ISM]):
        bad |= np.abs(w - line) <= 6.0
    ivar = ivar * to_device(~bad, xp)[None, :]
    if template_error > 0:
        ivar = xp.where(ivar > 0, 1.0 / (1.0 / xp.where(ivar > 0, ivar, 1.0) +
                                         (template_error * cont) ** 2), 0.0)
    c = cont + (cont == 0)
    return wave, flux / c, ivar * cont ** 2, float(w[1] - w[0])


def _continuum(xp, a, wave, dw, width=160.0, coarse=8.0):
    """Running-median continuum along the last axis: 160 Å median of 8 Å means.

    The same operator normalises the data and the models (edges included), so that the
    normalisation cancels in the fit. ``dw`` is the (host) bin size.
    """
    k = max(1, int(round(coarse / dw)))
    n = (a.shape[-1] // k) * k
    ac = a[..., :n].reshape(a.shape[:-1] + (n // k, k)).mean(axis=-1)
    wc = wave[:n].reshape(n // k, k).mean(axis=-1)
    cc = _median_continuum(xp, ac, max(3, int(width / (k * dw)) | 1))
    return interp_rows(wave, wc, cc)


def _interp_templates(xp, twave, tflux, xq):
    """Templates (T, nt) linearly interpolated at ``xq`` (n,) or (S, n): (T, [S,] n)."""
    n = twave.shape[0]
    j = xp.clip(xp.searchsorted(twave, xq, side="right") - 1, 0, n - 2)
    t = (xq - twave[j]) / (twave[j + 1] - twave[j])
    return tflux[:, j] * (1 - t)[None] + tflux[:, j + 1] * t[None]


def _model(xp, twave, tflux, tcont, wave, z, rdata, calib=None, dw=None):
    """``R_s · T(λ/(1+z_s)) / C_T(λ)`` on one camera grid: (nstar, ntemplate, nwave).

    With ``calib`` (nstar, nwave), the second pass: ``calib_s · R_s · T(λ/(1+z_s))``
    divided by its own continuum (the data's operator, bin size ``dw``); ``tcont`` unused.
    """
    m = _interp_templates(xp, twave, tflux, wave[None, :] / (1.0 + z[:, None]))  # (T, S, n)
    m = resolution.apply(rdata[:, None, :, :], xp.moveaxis(m, 0, 1))           # (S, T, n)
    if calib is not None:
        m = m * calib[:, None, :]
        tcont = _continuum(xp, m, wave, dw)
        return m / (tcont + (tcont == 0))
    return m / (tcont + (tcont == 0))[None]


def _poly_chi2(xp, d, w, m, x, deg=2):
    """χ² of ``d ≈ P(x)·m`` minimised over a degree-``deg`` polynomial P (batched)."""
    K = deg + 1
    phi = xp.stack([x ** k for k in range(K)])                       # (K, n)
    pp = (phi[:, None, :] * phi[None, :, :]).reshape(K * K, -1)
    wm = w[:, None, :] * m                                            # (S, T, n)
    S, T = m.shape[:2]
    N = ((wm * m) @ pp.T).reshape(S, T, K, K)
    b = (wm * d[:, None, :]) @ phi.T                                  # (S, T, K)
    ridge = 1e-12 * xp.trace(N, axis1=-2, axis2=-1)[..., None, None] * xp.eye(K)
    coef = xp.linalg.solve(N + ridge + (xp.eye(K) * (N[..., :1, :1] == 0)), b[..., None])
    return (w * d * d).sum(axis=1)[:, None] - (b * coef[..., 0]).sum(axis=-1)


def _template_continua(xp, data, twave, tflux):
    """Continuum of every template on every camera grid (the data's operator), once."""
    return [_continuum(xp, _interp_templates(xp, twave, tflux, wave), wave, dw)
            for wave, _, _, _, dw in data]


def _chi2_templates(xp, data, twave, tflux, tconts, z, calibs=None, chunk=24):
    """Σ over cameras of the polynomial-marginalised χ² of every template: (S, T).

    ``calibs``: per camera (S, nwave) calibration of the second pass (see :func:`_model`).
    """
    total = 0.0
    calibs = [None] * len(data) if calibs is None else calibs
    for (wave, d, w, rdata, dw), tcont, cal in zip(data, tconts, calibs):
        x = (wave - wave.mean()) / (0.5 * (wave[-1] - wave[0]))
        parts = []
        for t0 in range(0, tflux.shape[0], chunk):
            m = _model(xp, twave, tflux[t0:t0 + chunk],
                       None if tcont is None else tcont[t0:t0 + chunk], wave, z, rdata,
                       calib=cal, dw=dw)
            parts.append(_poly_chi2(xp, d, w, m, x))
        total = total + xp.concatenate(parts, axis=1)
    return total


def redshift_grid_size(z_max, z_res) -> float:
    """Points of the redshift scan: ±z_max at max(z_res, 1e-4), then ±that step at z_res.

    NaN or a step ≤ 0 gives ``inf`` (refused by the caller).

    Backends: host only.
    """
    z_max, z_res = float(z_max), float(z_res)
    if not (z_res > 0 and z_max >= 0):
        return float("inf")
    coarse = max(z_res, 1e-4)
    return 2 * z_max / coarse + 2 * coarse / z_res + 2


def _calibrations(xp, data, raw, twave, tbest, z, width=320.0):
    """desispec's second-pass calibration: per camera, the data over the best model.

    ``raw`` is each camera's un-normalised flux (S, n); ``tbest`` (S, ntwave) the best
    template of every star. The ratio ``flux / (R · T_best(λ/(1+z)))`` is smoothed by a
    ``width`` Å running median (desispec: 400 pixels) and clipped at 0. Multiplying the
    templates by it before their normalisation puts the instrument throughput into the
    models, so that its imprint on the running-median continuum of the data (which a
    steep throughput leaves, biasing the fit toward cooler templates) is the same in
    data and models. Returns a list of (S, n).
    """
    out = []
    for (wave, _, w, rdata, dw), f in zip(data, raw):
        j = xp.arange(tbest.shape[0])   # star s: template s at its own redshift (diagonal)
        m = _interp_templates(xp, twave, tbest, wave[None, :] / (1.0 + z[:, None]))[j, j]
        m = resolution.apply(rdata, m)
        ratio = xp.where((w > 0) & (m > 0), f / (m + (m == 0)), 0.0)
        out.append(xp.clip(_continuum(xp, ratio, wave, dw, width=width), 0.0, None))
    return out


def _fit_redshift(xp, data, twave, tcanon, z_max, z_res):
    """Redshift scan on one template, coarse (1e-4) then fine (``z_res``) steps."""
    nstar = data[0][1].shape[0]
    tc = _template_continua(xp, data, twave, tcanon)
    coarse = max(float(z_res), 1e-4)
    zc = np.arange(-z_max, z_max + 0.5 * coarse, coarse)
    chi = xp.stack([_chi2_templates(xp, data, twave, tcanon, tc, xp.full(nstar, z))[:, 0]
                    for z in zc], axis=1)                              # (S, nz)
    zbest = to_device(zc, xp)[xp.argmin(chi, axis=1)]
    offs = np.arange(-coarse, coarse + 0.5 * z_res, z_res)
    chi = xp.stack([_chi2_templates(xp, data, twave, tcanon, tc, zbest + o)[:, 0]
                    for o in offs], axis=1)
    return zbest + to_device(offs, xp)[xp.argmin(chi, axis=1)]


def _colour_box(lib, model_gr, data_gr, delta):
    """desispec's colour preselection, widened to the smallest parameter box: (S, T)."""
    sel = np.abs(model_gr[None, :] - data_gr[:, None]) < delta
    out = np.zeros_like(sel)
    for name in ("teff", "logg", "feh"):
        p = getattr(lib, name)
        lo = np.where(sel, p[None, :], np.inf).min(axis=1)
        hi = np.where(sel, p[None, :], -np.inf).max(axis=1)
        box = (p[None, :] >= lo[:, None]) & (p[None, :] <= hi[:, None])
        out = box if name == "teff" else out & box
    return out & sel.any(axis=1, keepdims=True)


@nvtx_range("fit_stdstars")
def fit_stdstars(frames: dict, skies: dict, fiberflats: dict, templates=None,
                 delta_color=0.2, min_blue_snr=4.0, color="G-R", z_max=0.008, z_res=0.00002,
                 template_error=0.1, maxstdstars=30, std_targetids=None,
                 apply_sky_throughput_correction=False, backend="auto") -> StdStarModels:
    """Fit the standard stars of one exposure and spectrograph (see the module docstring).

    Parameters
    ----------
    frames, skies : dict
        camera -> Frame / SkyModel (or lists of them, one per exposure, same order).
    fiberflats : dict
        camera -> FiberFlat.
    templates : TemplateLibrary or path, optional
        Default: gpuspec's synthetic library.
    delta_color, min_blue_snr, color, z_max, z_res, template_error, maxstdstars,
    std_targetids, apply_sky_throughput_correction :
        desispec's options (``color`` only 'G-R').
    backend : {"auto", "numpy", "cupy"}

    Returns
    -------
    StdStarModels

    Raises
    ------
    BadDataError
        No standard star on the spectrograph, none with enough blue S/N, none within
        the colour range; frames of different spectrographs or fibermaps.

    Backends: numpy, cupy.
    """
    if color != "G-R":
        raise NotImplementedError("only color='G-R' (Legacy Survey photometry) is supported")
    xp = get_xp(backend)
    check_size(redshift_grid_size(z_max, z_res), MAX_ZGRID, "redshifts",
               f"z_max={float(z_max):g}, z_res={float(z_res):g}")
    frames, skies = _camdict(frames), _camdict(skies)
    if not frames:
        raise InputError("fit_stdstars needs at least one frame")
    lib = templates if isinstance(templates, TemplateLibrary) else load_templates(templates)
    first = next(iter(frames.values()))[0]
    fm = np.asarray(first.fibermap)
    for cam, fl in frames.items():
        for fr in fl:
            if fr.fibermap is None or not np.array_equal(np.asarray(fr.fibermap["FIBER"]),
                                                         fm["FIBER"]):
                raise BadDataError(f"frames of {cam} have a different fibermap (FIBER)")
    spectro = sorted({str(c)[1:] for c in frames})
    if len(spectro) != 1:
        raise BadDataError(f"frames of several spectrographs {spectro}")
    rows = select_stars(fm, std_targetids)
    if rows.size == 0:
        raise BadDataError(f"no standard star on spectrograph {spectro[0]} (fibermap "
                           "DESI_TARGET/FA_TYPE with valid FLUX_G/R/Z)", hdu="FIBERMAP")
    status = np.zeros(rows.size, np.int64)
    for fl in frames.values():
        for fr in fl:
            status |= np.asarray(fr.fibermap["FIBERSTATUS"])[rows].astype(np.int64)
    cams = _prepare(xp, frames, skies, fiberflats, rows, status, apply_sky_throughput_correction)
    return _fit(xp, cams, fm, rows, lib, delta_color, min_blue_snr, z_max, z_res,
                template_error, maxstdstars, frames)


def _snr(xp, cams, nrow):
    snr = {b: np.zeros(nrow) for b in "brz"}
    for cam, fr in cams.items():
        g = xp.sqrt(xp.gradient(to_device(fr.wave, xp, np.float64)))
        m = to_host(xp.median(fr.flux * xp.sqrt(fr.ivar) / g[None, :], axis=1))
        snr[cam[0]] = np.sqrt(snr[cam[0]] ** 2 + np.clip(m, 0, None) ** 2)
    return snr


def _fit(xp, cams, fm, rows, lib, delta_color, min_blue_snr, z_max, z_res, template_error,
         maxstdstars, frames):
    snr = _snr(xp, cams, rows.size)
    order = np.argsort(snr["b"])[::-1][:maxstdstars]
    keep = order[snr["b"][order] > min_blue_snr]
    if keep.size == 0:
        raise BadDataError(f"no standard star with blue S/N > {min_blue_snr} per sqrt(A)")
    kd = to_device(keep, xp)
    data, raw = [], []
    for cam in sorted(cams):
        fr = cams[cam]
        sub = replace(fr, flux=fr.flux[kd], ivar=fr.ivar[kd],
                      resolution_data=to_device(fr.resolution_data, xp, np.float64)[kd])
        wave, d, w, dw = _star_data(xp, sub, template_error)
        data.append((wave, d, w, sub.resolution_data, dw))
        raw.append(sub.flux)
    srow = rows[keep]
    gflux = np.asarray(fm["FLUX_G"], np.float64)[srow]
    rflux = np.asarray(fm["FLUX_R"], np.float64)[srow]
    data_gr = -2.5 * np.log10(gflux / rflux)
    model_gr = synthetic_mag(lib.wave, lib.flux, "G") - synthetic_mag(lib.wave, lib.flux, "R")
    allowed = _colour_box(lib, model_gr, data_gr, delta_color)
    if not allowed.any():
        raise BadDataError("no template within the colour range of any standard star")
    twave = to_device(lib.wave, xp, np.float64)
    tnorm = to_device(lib.flux, xp, np.float64)
    canon = int(np.argmin((lib.teff - 6000.0) ** 2 + (lib.logg - 4.0) ** 2 +
                          (lib.feh + 1.5) ** 2))
    z = _fit_redshift(xp, data, twave, tnorm[canon:canon + 1], float(z_max), float(z_res))
    tconts = _template_continua(xp, data, twave, tnorm)
    chi2 = _chi2_templates(xp, data, twave, tnorm, tconts, z)
    chi2 = xp.where(to_device(allowed, xp), chi2, xp.inf)
    best = xp.argmin(chi2, axis=1)
    # desispec's second pass: templates times the smoothed data/best-model ratio, refit
    calibs = _calibrations(xp, data, raw, twave, tnorm[best], z)
    chi2 = _chi2_templates(xp, data, twave, tnorm, [None] * len(data), z, calibs=calibs)
    chi2 = xp.where(to_device(allowed, xp), chi2, xp.inf)
    best = to_host(xp.argmin(chi2, axis=1))
    ndata = sum((w > 0).sum(axis=1) for _, _, w, _, _ in data)
    chi2dof = to_host(chi2[xp.arange(best.size), to_device(best, xp)] /
                      xp.maximum(ndata, 1))
    fitted = allowed.any(axis=1)
    return _models(lib, fm, srow[fitted], best[fitted], to_host(z)[fitted],
                   chi2dof[fitted], data_gr[fitted], {b: s[keep][fitted] for b, s in
                                                      snr.items()}, frames)


def _models(lib, fm, srow, best, z, chi2dof, data_gr, snr, frames):
    """Redshifted best templates scaled to the stars' r magnitudes; the output container."""
    w = lib.wave
    xq = np.clip(w[None, :] / (1.0 + z[:, None]), w[0], w[-1])
    j = np.clip(np.searchsorted(w, xq, side="right") - 1, 0, w.size - 2)
    t = (xq - w[j]) / (w[j + 1] - w[j])
    fb = lib.flux[best]
    model = np.take_along_axis(fb, j, 1) * (1 - t) + np.take_along_axis(fb, j + 1, 1) * t
    mag_r = 22.5 - 2.5 * np.log10(np.asarray(fm["FLUX_R"], np.float64)[srow])
    mm_r = synthetic_mag(lib.wave, model, "R")
    flux = model * (10 ** ((mm_r - mag_r) / 2.5))[:, None]
    model_gr = synthetic_mag(lib.wave, flux, "G") - synthetic_mag(lib.wave, flux, "R")
    meta = np.zeros(srow.size, dtype=[("TARGETID", "i8"), ("FIBER", "i4"), ("LOGG", "f8"),
                                      ("TEFF", "f8"), ("FEH", "f8"), ("CHI2DOF", "f8"),
                                      ("REDSHIFT", "f8"), ("DATA_G-R", "f8"),
                                      ("MODEL_G-R", "f8"), ("BLUE_SNR", "f8"),
                                      ("RED_SNR", "f8"), ("NIR_SNR", "f8")])
    meta["TARGETID"] = np.asarray(fm["TARGETID"])[srow]
    meta["FIBER"] = np.asarray(fm["FIBER"])[srow]
    meta["TEFF"], meta["LOGG"], meta["FEH"] = lib.teff[best], lib.logg[best], lib.feh[best]
    meta["CHI2DOF"], meta["REDSHIFT"] = chi2dof, z
    meta["DATA_G-R"], meta["MODEL_G-R"] = data_gr, model_gr
    meta["BLUE_SNR"], meta["RED_SNR"], meta["NIR_SNR"] = snr["b"], snr["r"], snr["z"]
    coeff = np.zeros((srow.size, lib.flux.shape[0]))
    coeff[np.arange(srow.size), best] = 1.0
    inp = np.array([(int(f.meta.get("NIGHT", 0)), int(f.meta.get("EXPID", 0)), cam)
                    for cam, fl in sorted(frames.items()) for f in fl],
                   dtype=[("NIGHT", "i4"), ("EXPID", "i4"), ("CAMERA", "S3")])
    drop = {"DELTA_X", "DELTA_Y", "EXPTIME", "NUM_ITER", "FIBER_RA", "FIBER_DEC", "FIBER_X",
            "FIBER_Y"}
    names = [n for n in fm.dtype.names if n not in drop]
    sfm = np.asarray(fm)[srow][names].copy() if srow.size else None
    first = next(iter(frames.values()))[0]
    m = {k: first.meta[k] for k in ("NIGHT", "EXPID", "TILEID") if k in (first.meta or {})}
    return StdStarModels(wave=lib.wave, flux=flux, fibers=np.asarray(fm["FIBER"])[srow],
                         metadata=meta, coeff=coeff, fibermap=sfm, input_frames=inp, meta=m)
