"""preproc: raw camera image → preprocessed :class:`gpuspec.Image` (desispec behaviour).

One code path through ``xp``: the raw image and the calibrations are moved to
the device once, every per-pixel step runs there, and only per-amplifier scalars
(levels, noises, OSTEP) come back to the host for the header.

Steps (see ``docs/preproc.md`` and desispec ``preproc.preproc``):

1. subtract the bias (raw shape, ADU);
2. per amplifier: overscan level and read noise (clipped), OSTEP and the
   AVERAGE/PER_ROW choice, the master-bias noise correction, the optional
   overscan-row (ORSEC) offset, gain, SATURATED where the bias-subtracted raw ADU
   ≥ SATURLEV, the bias "Poisson" term of the read noise;
3. Poisson variance = max(image, 0) before the dark;
4. dark: rate (e⁻/s, or ADU/s for a raw-shaped dark) × EXPTIME, subtracted in
   electrons; its clipped noise per amplifier joins the read noise;
5. pixflat (PIXFLATZERO ≤ 0.001, PIXFLATLOW < 0.1); ivar = 1/(poisson + rdnoise²);
6. the bad-pixel mask, BADREADNOISE where read noise > 15 e⁻;
7. cosmic rays (:mod:`.cosmics`).
"""

from __future__ import annotations

import logging
from typing import Mapping

import numpy as np

from .. import __version__
from ..backend import get_xp, is_cupy, to_device
from ..errors import BadDataError, InputError, MissingKeywordError
from ..image import Image
from ..io.util import parse_sec
from ..maskbits import ccdmask
from ..profiling import nvtx_range
from .calib import check_shape, load_calibration
from .cosmics import C2FUDGE, CFUDGE, NITER, NSIG, cosmic_mask
from .header import add_missing_keys, amp_ids, require, require_number, set_dependency, to_dict
from .overscan import OSTEP_BADREADNOISE, amp_overscan
from .stats import clipped_stats

__all__ = ["preproc", "BADREADNOISE_LIMIT", "PIXFLAT_ZERO", "PIXFLAT_LOW"]

log = logging.getLogger(__name__)

#: Read noise (e⁻) above which a pixel gets BADREADNOISE.
BADREADNOISE_LIMIT = 15.0
#: pixflat values ≤ this are treated as zero (PIXFLATZERO, not divided).
PIXFLAT_ZERO = 0.001
#: pixflat values below this (and > 0) get PIXFLATLOW.
PIXFLAT_LOW = 0.1
#: Default saturation level (ADU) when SATURLEVx is absent.
DEFAULT_SATURLEV = 2 ** 16 - 1


def _sections(header: Mapping, amps: list[str], raw_shape: tuple, path=None, hdu=None):
    """Parsed sections per amp and the trimmed image shape (errors name the keyword)."""
    secs = {}
    ny = nx = 0
    for amp in ("A", "B", "C", "D", "1", "2", "3", "4"):
        if amp not in amps and ("DATASEC" + amp in header or "CCDSEC" + amp in header):
            raise MissingKeywordError(f"amplifier {amp} has DATASEC/CCDSEC but no BIASSEC",
                                      path=path, hdu=hdu, keyword="BIASSEC" + amp)
    for amp in amps:
        s = {}
        for key in ("BIASSEC", "DATASEC", "CCDSEC"):
            kw = key + amp
            val = require(header, kw, path=path, hdu=hdu)
            s[key] = parse_sec(val, keyword=kw, shape=raw_shape if key != "CCDSEC" else None,
                               path=path, hdu=hdu)
        if "ORSEC" + amp in header:
            s["ORSEC"] = parse_sec(header["ORSEC" + amp], keyword="ORSEC" + amp,
                                   shape=raw_shape, path=path, hdu=hdu)
        dy, dx = s["DATASEC"]
        cy, cx = s["CCDSEC"]
        if (dy.stop - dy.start, dx.stop - dx.start) != (cy.stop - cy.start, cx.stop - cx.start):
            raise InputError(f"DATASEC{amp} {header['DATASEC' + amp]} and CCDSEC{amp} "
                             f"{header['CCDSEC' + amp]} have different sizes", path=path,
                             hdu=hdu, keyword="CCDSEC" + amp)
        by, _ = s["BIASSEC"]
        if by.stop - by.start != dy.stop - dy.start:
            raise InputError(f"BIASSEC{amp} and DATASEC{amp} have a different number of rows",
                             path=path, hdu=hdu, keyword="BIASSEC" + amp)
        ny, nx = max(ny, cy.stop), max(nx, cx.stop)
        secs[amp] = s
    return secs, (ny, nx)


def _exptime(header: Mapping, primary: Mapping, required: bool, path=None):
    """EXPTIME (primary header first, else the camera header); negative anywhere is an error."""
    values = []
    for where, src in (("PRIMARY", primary), (None, header)):
        if "EXPTIME" not in src:
            continue
        try:
            t = float(src["EXPTIME"])
        except (TypeError, ValueError):
            raise BadDataError(f"EXPTIME={src['EXPTIME']!r} is not a number", path=path,
                               hdu=where, keyword="EXPTIME") from None
        if not np.isfinite(t) or t < 0:
            raise BadDataError(f"EXPTIME={t} must be a finite number >= 0", path=path,
                               hdu=where, keyword="EXPTIME")
        values.append(t)
    if not values:
        if required:
            raise InputError("EXPTIME is needed to scale the dark", path=path, keyword="EXPTIME")
        return None
    return values[0]


def preproc(raw, header, primary_header=None, *, bias=None, dark=None, pixflat=None, mask=None,
            cosmics: bool = True, use_overscan_row: bool = False, backend: str = "auto",
            cosmics_nsig: float = NSIG, cosmics_cfudge: float = CFUDGE,
            cosmics_c2fudge: float = C2FUDGE, cosmics_niter: int = NITER,
            nogain: bool = False, camera: str | None = None,
            path: str | None = None) -> Image:
    """Preprocess one raw camera image into electrons, ivar, mask and read noise.

    Parameters
    ----------
    raw : array (ny_raw, nx_raw)
        Raw image in ADU (any int/float dtype, any byte order; numpy or cupy). Not modified.
    header : mapping
        Camera header (dict, astropy Header or fitsio FITSHDR): CAMERA, and per amp x
        BIASSECx, DATASECx, CCDSECx, GAINx; optional ORSECx, SATURLEVx, RDNOISEx.
        Keys are case-insensitive.
    primary_header : mapping, optional
        Primary header (EXPTIME, NIGHT, EXPID, ...); its keywords missing from
        ``header`` are appended to the output meta.
    bias : array or str, optional
        Master bias, raw shape, ADU, overscan-subtracted (≈0 level).
    dark : array or str, optional
        Dark current **rate**: trimmed shape in e⁻/s, or raw shape in ADU/s; it is
        multiplied by EXPTIME (a file as well as an array).
    pixflat : array or str, optional
        Pixel flat, trimmed shape.
    mask : array or str, optional
        Bad-pixel mask (ccdmask bits), trimmed shape; OR-ed into the output mask.
    cosmics : bool
        Run cosmic-ray rejection.
    use_overscan_row : bool
        Subtract the clipped level of the overscan rows (ORSECx, after removing the
        mean overscan-column level) and allow the per-row overscan (PER_ROW) on
        amps whose OSTEP ≥ 2 ADU.
    backend : {"auto", "numpy", "cupy"}
        Array backend.
    cosmics_nsig, cosmics_cfudge, cosmics_c2fudge, cosmics_niter :
        Cosmic-ray rejection parameters (desispec defaults 6, 3, 0.5, 100).
    nogain : bool
        Keep ADU (gain 1).
    camera : str, optional
        Camera name if the header has no CAMERA.
    path : str, optional
        Raw file name, only used in error messages.

    Returns
    -------
    Image
        Arrays on the device of the backend: ``pix`` (e⁻, float64), ``ivar``,
        ``mask`` (int32), ``readnoise``; ``meta`` holds the header with GAINx,
        SATULEVx, OSTEPx, OMETHx, RMETHx, OVERSCNx (ADU), OBSRDNx (e⁻), SATUELEx and
        DEPNAMnn/DEPVERnn provenance of the calibrations.

    Raises
    ------
    MissingKeywordError
        Header without CAMERA, sections or GAINx.
    BadDataError
        NaN/inf raw pixels, negative EXPTIME, calibration of the wrong shape.

    Backends: numpy and cupy (same results).
    """
    xp = get_xp(backend)
    hdr = to_dict(header)
    prim = to_dict(primary_header)
    where = dict(path=path, hdu=None)

    if camera is None:
        camera = require(hdr, "CAMERA", **where)
    camera = str(camera).strip().lower()
    if getattr(raw, "ndim", None) != 2:
        raise BadDataError(f"raw image must be 2-D, got shape {getattr(raw, 'shape', None)}",
                           **where)
    raw_shape = tuple(raw.shape)
    amps = amp_ids(hdr)
    secs, out_shape = _sections(hdr, amps, raw_shape, **where)
    gains = {}
    for amp in amps:
        gains[amp] = 1.0 if nogain else require_number(hdr, "GAIN" + amp, **where)
        if not np.isfinite(gains[amp]) or gains[amp] <= 0:
            raise BadDataError(f"GAIN{amp}={gains[amp]} must be > 0", keyword="GAIN" + amp,
                               **where)
    exptime = _exptime(hdr, prim, required=dark is not None and dark is not False, path=path)

    with nvtx_range("preproc:upload"):
        # upload in the file's dtype (int32: half the bytes), convert on the device;
        # astype copies, so the caller's array is never touched
        rawimg = to_device(raw, xp).astype(xp.float64)
    if not bool(xp.isfinite(rawimg).all()):
        nbad = int((~xp.isfinite(rawimg)).sum())
        raise BadDataError(f"raw image has {nbad} NaN or infinite pixel(s)", **where)

    meta = dict(hdr)
    # --- calibrations (loaded and checked before any work) -------------------
    cal_bias = load_calibration(bias, "bias", xp)
    if cal_bias is not None:
        check_shape(cal_bias, raw_shape, "raw image")
        set_dependency(meta, "CCD_CALIB_BIAS", cal_bias.provenance)
    elif bias is not None:
        set_dependency(meta, "CCD_CALIB_BIAS", "None")
    # the dark keeps its own float dtype until it is scaled by EXPTIME (as in desispec,
    # where a float32 dark file times EXPTIME stays float32)
    cal_dark = load_calibration(dark, "dark", xp, dtype=None)
    if cal_dark is not None:
        if cal_dark.shape not in (out_shape, raw_shape):
            raise BadDataError(f"dark calibration has shape {cal_dark.shape} but must have the "
                               f"preproc shape {out_shape} or the raw shape {raw_shape}",
                               path=cal_dark.path)
        set_dependency(meta, "CCD_CALIB_DARK", cal_dark.provenance)
    cal_mask = load_calibration(mask, "mask", xp, dtype=np.int32)
    if cal_mask is not None:
        check_shape(cal_mask, out_shape, "preproc image")
        set_dependency(meta, "CCD_CALIB_MASK", cal_mask.provenance)
    elif mask is not None:
        set_dependency(meta, "CCD_CALIB_MASK", "None")
    cal_pixflat = load_calibration(pixflat, "pixflat", xp)
    if cal_pixflat is not None:
        check_shape(cal_pixflat, out_shape, "preproc image")
    if cal_pixflat is not None or pixflat is not None:
        set_dependency(meta, "CCD_CALIB_PIXFLAT",
                       cal_pixflat.provenance if cal_pixflat is not None else "None")

    with nvtx_range("preproc:amps"):
        if cal_bias is not None:
            rawimg = rawimg - cal_bias.data
        image = xp.zeros(out_shape, dtype=xp.float64)
        readnoise = xp.zeros(out_shape, dtype=xp.float64)
        outmask = (cal_mask.data.copy() if cal_mask is not None
                   else xp.zeros(out_shape, dtype=xp.int32))
        dark_e = None
        dark_scaled = None
        if cal_dark is not None:
            dd = cal_dark.data
            if dd.dtype.kind != "f":
                dd = dd.astype(xp.float64)
            dark_scaled = (dd * dd.dtype.type(exptime)).astype(xp.float64)
            if bool(xp.all(dark_scaled == 0.0)):
                log.info("camera %s: dark model is all zeros (EXPTIME=%s); not applied",
                         camera, exptime)
                dark_scaled = None
            elif cal_dark.shape == out_shape:
                dark_e = dark_scaled
            else:
                dark_e = xp.zeros(out_shape, dtype=xp.float64)

        use_orsec = bool(use_overscan_row)
        if use_orsec:
            missing = [a for a in amps if "ORSEC" not in secs[a]]
            if missing:
                log.error("camera %s: no ORSEC%s keyword; not using the overscan rows",
                          camera, missing[0])
                use_orsec = False

        for amp in amps:
            s = secs[amp]
            gain = gains[amp]
            ov_sec, data_sec, ccd_sec = s["BIASSEC"], s["DATASEC"], s["CCDSEC"]
            meta["GAIN" + amp] = gain
            if "SATURLEV" + amp in hdr:
                saturlev = require_number(hdr, "SATURLEV" + amp, **where)
            else:
                saturlev = float(DEFAULT_SATURLEV)
                log.warning("camera %s: no SATURLEV%s; using %d ADU", camera, amp, saturlev)
            meta["SATULEV" + amp] = saturlev

            ov = amp_overscan(rawimg, ov_sec, per_row_allowed=use_orsec)
            meta["OSTEP" + amp] = ov.ostep
            meta["OMETH" + amp] = ov.method
            meta["RMETH" + amp] = "AVERAGE"
            if ov.badrows:
                log.warning("camera %s amp %s: %d overscan rows replaced (charge trail)",
                            camera, amp, ov.badrows)
            if ov.method == "PER_ROW" and ov.ostep > OSTEP_BADREADNOISE:
                outmask[ccd_sec] |= np.int32(ccdmask.BADREADNOISE)
                log.warning("camera %s amp %s: OSTEP=%.2f, BADREADNOISE set", camera, amp,
                            ov.ostep)
            rdnoise = ov.rdnoise
            if cal_bias is not None:
                # the master bias noise is in the raw data already: add the difference
                # between its noise in the active area and in the overscan
                _, bn_data = clipped_stats(cal_bias.data[data_sec])
                _, bn_ov = clipped_stats(cal_bias.data[ov_sec])
                rdnoise = float(np.sqrt(rdnoise ** 2 + float(bn_data) ** 2 - float(bn_ov) ** 2))
            row_offset = 0.0
            if use_orsec:
                col_level, _ = clipped_stats(rawimg[ov_sec])
                row_offset, _ = clipped_stats(rawimg[s["ORSEC"]] - col_level)
                row_offset = float(row_offset)
            rdnoise_e = rdnoise * gain
            level = ov.level
            meta["OVERSCN" + amp] = float(xp.median(level))
            meta["OBSRDN" + amp] = rdnoise_e
            mean_level = float(xp.mean(level))
            meta["SATUELE" + amp] = gain * (saturlev - mean_level)
            if "RDNOISE" + amp in hdr:
                try:
                    expected = float(hdr["RDNOISE" + amp])
                    if not 0.5 * expected <= rdnoise_e <= 2.0 * expected:
                        log.warning("camera %s amp %s: measured read noise %.2f e- vs "
                                    "expected %.2f", camera, amp, rdnoise_e, expected)
                except (TypeError, ValueError):
                    pass

            data = rawimg[data_sec] - level[:, None]
            if use_orsec:
                data = data - row_offset
            saturated = rawimg[data_sec] >= saturlev
            sub = outmask[ccd_sec]
            outmask[ccd_sec] = xp.where(saturated, sub | np.int32(ccdmask.SATURATED), sub)
            image[ccd_sec] = data * gain
            rn = xp.full(data.shape, rdnoise_e, dtype=xp.float64)
            if cal_bias is not None:
                tb = cal_bias.data[data_sec] * gain
                rn = xp.sqrt(rn * rn + tb * (tb > 0))
            readnoise[ccd_sec] = rn
            if dark_scaled is not None and cal_dark.shape != out_shape:
                dark_e[ccd_sec] = dark_scaled[data_sec] * gain

    with nvtx_range("preproc:calib"):
        poisson_var = xp.clip(image, 0, None)
        if dark_e is not None:
            image = image - dark_e
            for amp in amps:
                ccd_sec = secs[amp]["CCDSEC"]
                _, darknoise = clipped_stats(dark_e[ccd_sec])
                readnoise[ccd_sec] = xp.sqrt(readnoise[ccd_sec] ** 2 + darknoise ** 2)
        if cal_pixflat is not None:
            pf = cal_pixflat.data
            good = pf > PIXFLAT_ZERO
            safe = xp.where(good, pf, 1.0)
            image = image / safe
            readnoise = readnoise / safe
            poisson_var = poisson_var / safe ** 2
            outmask = xp.where(good, outmask, outmask | np.int32(ccdmask.PIXFLATZERO))
            low = (pf > 0) & (pf < PIXFLAT_LOW)
            outmask = xp.where(low, outmask | np.int32(ccdmask.PIXFLATLOW), outmask)
        var = poisson_var + readnoise ** 2
        ivar = xp.where(var > 0, 1.0 / xp.where(var > 0, var, 1.0), 0.0)
        outmask = xp.where(readnoise > BADREADNOISE_LIMIT,
                           outmask | np.int32(ccdmask.BADREADNOISE), outmask)
    outmask = outmask.astype(xp.int32, copy=False)

    img = Image(pix=image, ivar=ivar, mask=outmask, readnoise=readnoise, camera=camera,
                meta=meta)
    if cosmics:
        with nvtx_range("preproc:cosmics"):
            cosmic_mask(img, nsig=cosmics_nsig, cfudge=cosmics_cfudge,
                        c2fudge=cosmics_c2fudge, niter=cosmics_niter)
    if not is_cupy(img.mask) and bool(np.all(img.mask > 0)):
        log.error("camera %s is entirely masked", camera)

    set_dependency(meta, "GPUSPEC", __version__)
    add_missing_keys(meta, prim)
    meta["CAMERA"] = camera
    return img
