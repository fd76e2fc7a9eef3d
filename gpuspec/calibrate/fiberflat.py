"""Fiber flat field from a continuum-lamp frame (desispec.fiberflat), batched over fibers.

:func:`compute_fiberflat` follows desispec's ``compute_fiberflat`` pass by pass, with the
same defaults and the same iteration and rejection rules:

0. mask pixels below ``minval`` or above ``maxval`` times the median spectrum;
1. median spectrum, smooth (spline) fiber flats, at most ``max_rej_it`` outliers per
   fiber and iteration, a fiber dropped after ``max_bad`` bad pixels;
2. deconvolved mean spectrum ``M`` solving ``sum_f R_f^T W_f F_f^2 R_f M = sum_f R_f^T
   W_f F_f D_f`` (banded, :mod:`gpuspec.calibrate.banded`), smooth flats
   ``D_f / (R_f M)``, median normalisation, until the flat changes by < ``accuracy``;
3. unsmoothed flat ``D_f / (R_f M)``, one outlier per fiber per iteration against a
   spline, masked pixels replaced by a coarse spline, median normalisation, and a
   0.0035 systematic error added to the variance.

Every fiber loop of desispec is a batched array operation here (splines:
:mod:`gpuspec.calibrate.spline`); the only host reads are one scalar per iteration to
test convergence. :func:`apply_fiberflat`, :func:`average_fiberflat` and
:func:`autocalib_fiberflat` are desispec's functions of the same names.

Backends: numpy, cupy (``backend=`` or the arrays' own module).
"""

from __future__ import annotations

import logging

import numpy as np

from .. import resolution
from ..backend import get_array_module, get_xp, to_device, to_host
from ..errors import BadDataError, InputError
from ..limits import MAX_NWAVE, check_size
from ..maskbits import specmask
from ..profiling import nvtx_range
from .banded import normal_band, rt_dot, solve_band
from .containers import FiberFlat
from .fibers import fiberbitmasked
from .spline import spline_fit
from .util import masked_interp, masked_median, max_run_length, top_k_mask

__all__ = ["compute_fiberflat", "apply_fiberflat", "average_fiberflat", "autocalib_fiberflat",
           "check_lamp_signal"]

log = logging.getLogger(__name__)

SYSTEMATIC_ERROR = 0.0035  # desispec: added in quadrature to the fiber flat error


def _band(meta) -> str:
    cam = str((meta or {}).get("CAMERA", "brz")).strip().lower()
    return cam[0] if cam else "brz"


def check_lamp_signal(flux, ivar, min_snr: float = 5.0, path=None):
    """Raise :class:`BadDataError` when a flat frame has no usable lamp signal.

    The median S/N per pixel over pixels with ivar > 0 must reach ``min_snr``
    (a DESI continuum flat has S/N of hundreds).

    Backends: numpy, cupy (whatever ``flux`` is; two scalar reads).
    """
    xp = get_array_module(flux, ivar)
    good = ivar > 0
    if not bool(xp.any(good)):
        raise BadDataError("flat frame has no pixel with ivar > 0 (no lamp signal)", path=path)
    snr = masked_median((flux * xp.sqrt(ivar)).ravel(), good.ravel(), axis=0)
    if not float(snr) >= min_snr:
        raise BadDataError(f"flat frame has no lamp signal: median S/N per pixel "
                           f"{float(snr):.3g} < {min_snr}", path=path)


def _median_over_fibers(a, valid, default):
    return masked_median(a, valid, axis=0, default=default)


def _pass0(xp, flux, ivar, minval, maxval, max_bad, max_iterations):
    nf = flux.shape[0]
    mean = xp.zeros(flux.shape[1])
    nbad = xp.zeros(nf, dtype=np.int64)
    for _ in range(max_iterations):
        mean = _median_over_fibers(flux, ivar > 0, mean)
        w = ((flux < minval * mean) | (flux > maxval * mean)) & (ivar > 0)
        nb = w.sum(axis=1)
        nbad += nb
        ivar = xp.where(w, 0.0, ivar)
        ivar = xp.where((nbad >= max_bad)[:, None], 0.0, ivar)
        if int(nb.sum()) == 0:
            break
    return ivar, nbad


def _pass1(xp, wave, flux, ivar, nbad, smooth, p):
    nsig2 = p["nsig_clipping"] ** 2
    for it in range(p["max_iterations"]):
        mean = _median_over_fibers(flux, ivar > 0, 0.0)
        active = xp.any(ivar > 0, axis=1)
        w = (mean != 0) & (ivar > 0)
        F = xp.where(w, flux / xp.where(mean != 0, mean, 1.0), 0.0)
        fit, failed = spline_fit(wave, wave, F, xp.where(w, ivar * mean ** 2, 0.0),
                                 p["smoothing_res"], max_resolution=1.5 * p["smoothing_res"])
        fail = active & failed
        smooth = xp.where((active & ~fail)[:, None], fit, smooth)
        ivar = xp.where(fail[:, None], 0.0, ivar)
        chi2 = ivar * (flux - mean * smooth) ** 2
        bad = top_k_mask(chi2, active[:, None] & (chi2 > nsig2), p["max_rej_it"])
        ivar = xp.where(bad, 0.0, ivar)
        nb = bad.sum(axis=1)
        nbad += nb
        ivar = xp.where((active & (nb > 0) & (nbad >= p["max_bad"]))[:, None], 0.0, ivar)
        if int(nb.sum()) == 0:
            break
    return ivar, smooth


def _pass2(xp, wave, flux, ivar, rdata, smooth, p):
    nf, nw = flux.shape
    prev = xp.zeros_like(smooth)
    prev_max_diff = 0.0
    chi2pdf = 0.0
    mean_spectrum = xp.zeros(nw)
    for it in range(p["max_iterations"]):
        ab = normal_band(rdata, ivar * smooth ** 2)
        b = rt_dot(rdata, ivar * smooth * flux)
        mean_spectrum = solve_band(ab, b)
        M = resolution.apply(rdata, xp.broadcast_to(mean_spectrum, (nf, nw)))
        active = xp.any(ivar > 0, axis=1)
        ok = (M != 0) & (ivar > 0)
        act = active & xp.any(ok, axis=1)
        wgt = xp.where(ok, ivar * M ** 2, 0.0)
        fit, failed = spline_fit(wave, wave, xp.where(ok, flux / xp.where(M != 0, M, 1.0), 0.0),
                                 wgt, p["smoothing_res"],
                                 max_resolution=1.5 * p["smoothing_res"])
        fail = act & failed
        new = fit * (ivar * M ** 2 > 0)
        smooth = xp.where((act & ~fail)[:, None], new, smooth)
        ivar = xp.where(fail[:, None], 0.0, ivar)
        chi2 = xp.where(act[:, None], ivar * (flux - smooth * M) ** 2, 0.0)
        sum_chi2 = chi2.sum()
        nan = act & xp.any(xp.isnan(smooth), axis=1)
        ivar = xp.where(nan[:, None], 0.0, ivar)
        smooth = xp.where(nan[:, None], 1.0, smooth)
        norm = _median_over_fibers(smooth, ivar > 0, 1.0)
        smooth = smooth / xp.where(norm != 0, norm, 1.0)
        max_diff = float(xp.max(xp.abs(smooth - prev) * (ivar > 0)))
        prev = smooth.copy()
        ndf = int(float((ivar > 0).sum()) - nw - nf * (nw / p["smoothing_res"]))
        chi2pdf = float(sum_chi2) / ndf if ndf > 0 else 0.0
        log.debug("fiberflat 2nd pass iter %d chi2pdf=%.4g max_diff=%.3g", it, chi2pdf, max_diff)
        if max_diff < p["accuracy"]:
            break
        if abs(max_diff - prev_max_diff) < p["accuracy"] * 0.1:
            break
        prev_max_diff = max_diff
    return mean_spectrum, chi2pdf


def _pass3_reject(xp, wave, ff, ffivar, mask, active, p):
    """One worst > nsig outlier per fiber per iteration against a spline (desispec)."""
    nsig2 = p["nsig_clipping"] ** 2
    running = active.copy()
    for _ in range(500):
        running = running & ((ffivar > 0).sum(axis=1) >= 100)
        if not bool(xp.any(running)):
            break
        fit, failed = spline_fit(wave, wave, ff, ffivar, p["smoothing_res"])
        fail = running & failed
        mask = xp.where(fail[:, None], mask | specmask.BADFIBERFLAT, mask)
        ffivar = xp.where(fail[:, None], 0.0, ffivar)
        running = running & ~fail
        chi2 = ffivar * (ff - fit) ** 2
        bad = top_k_mask(chi2, running[:, None] & (chi2 > nsig2), 1)
        mask = xp.where(bad, mask | specmask.BADFIBERFLAT, mask)
        ffivar = xp.where(bad, 0.0, ffivar)
        running = running & xp.any(bad, axis=1)
    return ffivar, mask


def _normalise(xp, ff, mask, ivar):
    norm = _median_over_fibers(ff, (mask == 0) & (ivar > 0), 1.0)
    return ff / xp.where(norm != 0, norm, 1.0)


def _interpolate_bad(xp, ff, ffivar, mask, active, p):
    """Replace masked/out-of-range flat values by a spline on pixel index (desispec)."""
    nf, nw = ff.shape
    bad = active[:, None] & ((mask > 0) | (ffivar == 0) | (ff < p["minval"]) |
                             (ff > p["maxval"]))
    ffivar = xp.where(bad, 0.0, ffivar)
    length = max_run_length(bad)
    res = xp.maximum(100.0, length.astype(np.float64))
    x = xp.arange(nw, dtype=np.float64)
    fit, failed = spline_fit(x, x, ff, ffivar, res, res_min=100.0)
    has_bad = xp.any(bad, axis=1)
    has_ok = xp.any(ffivar > 0, axis=1)
    use = (active & has_bad & has_ok)[:, None] & bad
    fail = (failed[:, None] & use)
    ff = xp.where(use & ~fail, fit, ff)
    ff = xp.where(fail, 1.0, ff)
    ffivar = xp.where(fail, 0.0, ffivar)
    return ff, ffivar


def _check_knots(wave, smoothing_res) -> None:
    """Bound the spline knots (wavelength span / ``smoothing_res``) before allocating.

    A ``--smoothing-resolution`` of 1e-9 Å would ask for ~10¹² knots; the limit is
    :data:`gpuspec.limits.MAX_NWAVE`. Host only (one read of the grid's ends).
    """
    w = np.asarray(to_host(wave), dtype=np.float64)
    span = float(w.max() - w.min()) if w.size else 0.0
    res = float(smoothing_res)
    if not res > 0:
        raise InputError(f"smoothing_res must be > 0, got {res:g}")
    check_size(span / res, MAX_NWAVE, "spline knots",
               f"smoothing_res={res:g} Å over {span:.0f} Å")


@nvtx_range("compute_fiberflat")
def compute_fiberflat(frame, nsig_clipping=10.0, accuracy=5.0e-4, minval=0.1, maxval=10.0,
                      max_iterations=15, smoothing_res=5.0, max_bad=100, max_rej_it=5,
                      min_sn=0, diag_epsilon=1e-3, min_lamp_snr=5.0,
                      backend="auto") -> FiberFlat:
    """Fiber flat of a continuum-lamp frame (desispec ``compute_fiberflat``).

    Parameters
    ----------
    frame : gpuspec.Frame
        Extracted flat-lamp frame with ``resolution_data`` (electron/Å).
    nsig_clipping, accuracy, minval, maxval, max_iterations, smoothing_res, max_bad,
    max_rej_it, min_sn :
        desispec's options, same defaults and meaning.
    diag_epsilon : float
        Accepted for desispec compatibility; unused there too.
    min_lamp_snr : float
        Median S/N per pixel below which the frame is rejected as having no lamp
        signal (gpuspec's check; desispec has none).
    backend : {"auto", "numpy", "cupy"}

    Returns
    -------
    FiberFlat
        On the backend's arrays; ``meta`` and ``fibermap`` from the frame.

    Raises
    ------
    InputError
        No resolution data.
    BadDataError
        No lamp signal.

    Backends: numpy, cupy.
    """
    xp = get_xp(backend)
    if frame.resolution_data is None:
        raise InputError("compute_fiberflat needs the frame's resolution matrices")
    _check_knots(frame.wave, smoothing_res)
    wave = to_device(frame.wave, xp, np.float64)
    flux = to_device(frame.flux, xp, np.float64)
    ivar0 = to_device(frame.ivar, xp, np.float64)
    fmask = to_device(frame.mask if frame.mask is not None else np.zeros(frame.flux.shape,
                                                                        np.int32), xp)
    rdata = to_device(frame.resolution_data, xp, np.float64)
    ivar0, fmask = fiberbitmasked(ivar0, fmask, frame.fibermap, "flat", _band(frame.meta))
    check_lamp_signal(flux, ivar0, min_lamp_snr)
    p = dict(nsig_clipping=float(nsig_clipping), accuracy=float(accuracy), minval=minval,
             maxval=maxval, max_iterations=int(max_iterations),
             smoothing_res=float(smoothing_res), max_bad=max_bad, max_rej_it=int(max_rej_it))
    ivar = xp.where(flux * xp.sqrt(ivar0) < min_sn, 0.0, ivar0)
    ivar, nbad = _pass0(xp, flux, ivar, minval, maxval, max_bad, p["max_iterations"])
    smooth = xp.ones_like(flux)
    ivar, smooth = _pass1(xp, wave, flux, ivar, nbad, smooth, p)
    smooth = smooth / _median_over_fibers(smooth, ivar > 0, 1.0)
    mean_spectrum, chi2pdf = _pass2(xp, wave, flux, ivar, rdata, smooth, p)

    # 3rd pass: unsmoothed flat, from the original (fiber-masked) ivar
    nf, nw = flux.shape
    active = xp.any(ivar0 > 0, axis=1)
    M = resolution.apply(rdata, xp.broadcast_to(mean_spectrum, (nf, nw)))
    ff = xp.where(M != 0, flux / xp.where(M != 0, M, 1.0), 1.0)
    ff = xp.where(active[:, None], ff, 1.0)
    ffivar = xp.where(active[:, None], ivar0 * M ** 2, 0.0)
    mask = xp.zeros((nf, nw), dtype=np.uint32)
    ffivar, mask = _pass3_reject(xp, wave, ff, ffivar, mask, active, p)
    ff = _normalise(xp, ff, mask, ivar0)
    ff, ffivar = _interpolate_bad(xp, ff, ffivar, mask, active, p)
    ff = _normalise(xp, ff, mask, ivar0)
    ffivar = (ffivar > 0) / (1.0 / (ffivar + (ffivar == 0)) + SYSTEMATIC_ERROR ** 2)
    mask = xp.where(ffivar == 0, mask | specmask.BADFIBERFLAT, mask).astype(np.uint32)
    meta = dict(frame.meta or {})
    return FiberFlat(wave=wave, fiberflat=ff, ivar=ffivar, mask=mask, meanspec=mean_spectrum,
                     chi2pdf=chi2pdf, meta=meta, fibermap=frame.fibermap)


def check_same_wave(wave1, wave2, what: str, rtol=1e-5, atol=1e-8):
    """Raise :class:`BadDataError` unless two wavelength grids match (np.allclose).

    Backends: host only (NumPy; CuPy grids are copied to the host).
    """
    from ..backend import to_host

    w1, w2 = to_host(wave1), to_host(wave2)
    if w1.shape != w2.shape or not np.allclose(w1, w2, rtol=rtol, atol=atol):
        raise BadDataError(f"{what} do not have the same wavelength arrays "
                           f"({w1.size} bins {w1[:1]}…{w1[-1:]} vs {w2.size} bins "
                           f"{w2[:1]}…{w2[-1:]})")


def apply_fiberflat(frame, fiberflat, backend="auto"):
    """Divide a frame by a fiber flat (desispec ``apply_fiberflat``); returns a new Frame.

    ``ivar`` propagates the flat's variance; where the flat is 0 the flux is left
    unchanged and ivar is 0; ``mask |= BADFIBERFLAT`` where the flat is 0, its ivar 0
    or its mask set. A ``HELIOCOR`` header value in the frame shifts the flat's
    wavelengths by that factor first (interpolating each fiber over its good bins).

    Raises
    ------
    BadDataError
        Different wavelength grids or numbers of fibers.

    Backends: numpy, cupy.
    """
    from dataclasses import replace

    xp = get_xp(backend)
    check_same_wave(frame.wave, fiberflat.wave, "frame and fiberflat")
    if frame.flux.shape != fiberflat.fiberflat.shape:
        raise BadDataError(f"frame has {frame.flux.shape} spectra×bins, fiberflat "
                           f"{fiberflat.fiberflat.shape}")
    flux = to_device(frame.flux, xp, np.float64)
    ivar = to_device(frame.ivar, xp, np.float64)
    mask = to_device(frame.mask, xp) if frame.mask is not None else \
        xp.zeros(flux.shape, np.int32)
    ff = to_device(fiberflat.fiberflat, xp, np.float64)
    ffivar = to_device(fiberflat.ivar, xp, np.float64)
    ffmask = to_device(fiberflat.mask, xp)
    heliocor = (frame.meta or {}).get("HELIOCOR")
    if heliocor is not None:
        fw = to_device(fiberflat.wave, xp, np.float64) * float(heliocor)
        good = ffivar > 0
        moved = masked_interp(to_device(frame.wave, xp, np.float64), fw, ff, good)
        ff = xp.where(xp.any(good, axis=1)[:, None], moved, ff)
    new_ivar = (ivar > 0) * (ffivar > 0) * (ff > 0) / (
        1.0 / ((ivar + (ivar == 0)) * (ff ** 2 + (ff == 0)))
        + flux ** 2 / (ffivar * ff ** 4 + (ffivar * ff == 0)))
    new_flux = xp.where(ff > 0, flux / xp.where(ff > 0, ff, 1.0), flux)
    badff = (ff == 0.0) | (ffivar == 0) | (ffmask != 0)
    new_mask = xp.where(badff, mask | specmask.BADFIBERFLAT, mask)
    return replace(frame, flux=new_flux, ivar=new_ivar, mask=new_mask)


def average_fiberflat(fiberflats, backend="auto") -> FiberFlat:
    """Average fiber flats of one camera (desispec ``average_fiberflat``).

    Two flats: ivar-weighted mean (masked values weight 0). More: masked median
    (median of the unmasked values; of all values where all are masked), ivar the sum
    times 2/π. The mask keeps a bit only where every input has it; ``meanspec`` is
    averaged with desispec's weights.

    Raises
    ------
    InputError
        Empty list. BadDataError: different wavelength grids.

    Backends: numpy, cupy.
    """
    xp = get_xp(backend)
    if len(fiberflats) == 0:
        raise InputError("input fiberflat list is empty")
    if len(fiberflats) == 1:
        return fiberflats[0]
    for f in fiberflats[1:]:
        check_same_wave(fiberflats[0].wave, f.wave, "fiberflats")
    F = xp.stack([to_device(f.fiberflat, xp, np.float64) for f in fiberflats])
    V = xp.stack([to_device(f.ivar, xp, np.float64) for f in fiberflats])
    K = xp.stack([to_device(f.mask, xp).astype(np.int64) for f in fiberflats])
    if len(fiberflats) > 2:
        good = K == 0
        allbad = ~xp.any(good, axis=0)
        med_good = masked_median(F, good, axis=0)
        med_all = masked_median(F, xp.ones_like(good), axis=0)
        fflat = xp.where(allbad, med_all, med_good)
        ivar = V.sum(axis=0) * (2.0 / np.pi)
    else:
        w = V * (K == 0)
        sw = w.sum(axis=0)
        fflat = (w * F).sum(axis=0) / (sw + (sw == 0))
        ivar = sw
    mask = K[0].copy()
    for k in K[1:]:
        both = (mask > 0) & (k > 0)
        mask = xp.where(both, mask | k, mask)
        mask = xp.where(k == 0, 0, mask)
    # desispec combines the masks in the first flat's own mask array, so the meanspec
    # weights of the first flat use the combined mask: reproduced
    Ks = [mask] + list(K[1:])
    if len(fiberflats) > 2:
        wms = [((v > 0) & (k == 0)).sum(axis=0) * 1.0 for v, k in zip(V, Ks)]
    else:
        wms = [(v * (k == 0)).sum(axis=0) for v, k in zip(V, Ks)]
    meanspec = None
    if fiberflats[0].meanspec is not None:
        ms = [to_device(f.meanspec, xp, np.float64) for f in fiberflats]
        sw = sum(wms)
        swf = sum(w * m for w, m in zip(wms, ms))
        meanspec = xp.where(sw > 0, swf / xp.where(sw > 0, sw, 1.0), 0.0)
    f0 = fiberflats[0]
    return FiberFlat(wave=to_device(f0.wave, xp, np.float64), fiberflat=fflat, ivar=ivar,
                     mask=mask.astype(np.uint32), meanspec=meanspec, chi2pdf=None,
                     meta=dict(f0.meta), fibermap=f0.fibermap)


def autocalib_fiberflat(fiberflats, backend="auto") -> dict:
    """Combine flats of several spectrographs and lamps (desispec ``autocalib_fiberflat``).

    Per exposure: rescale each petal's flat to the exposure's mean lamp spectrum, fit
    ``a + b x + c y + d (x² + y²)`` of the flat versus focal-plane position
    (FIBERASSIGN_X/Y) at each wavelength over fibers with more than half of their
    bins good and FIBERSTATUS 0, and divide by the centre value ``a``. Per
    spectrograph: average these corrected flats over exposures, normalise by the
    median over spectrographs, and smooth single-bin spikes as desispec's
    ``filter_fiberflat`` does.

    Returns
    -------
    dict
        ``{spectrograph: FiberFlat}``.

    Backends: numpy (host-side least squares; the arrays are small).
    """
    from .autocalib import autocalib

    return autocalib(fiberflats, backend=backend)
