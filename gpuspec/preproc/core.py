"""preproc: raw camera image → preprocessed :class:`gpuspec.Image` (desispec behaviour).

One code path through ``xp``: the raw image and the calibrations are moved to
the device once, every per-pixel step runs there, and only per-amplifier scalars
(levels, noises, OSTEP) come back to the host for the header.

Steps (see ``docs/preproc.md`` and desispec ``preproc.preproc``), each a function here:

1. validate the header (:func:`gpuspec.io.raw.raw_layout`), upload the raw image,
   load the calibrations (:func:`_load_calibrations`);
2. subtract the bias (raw shape, ADU); per amplifier (:func:`_preproc_amp`):
   overscan level and read noise (clipped), OSTEP and the AVERAGE/PER_ROW choice,
   the master-bias noise correction, the optional overscan-row (ORSEC) offset,
   gain, SATURATED where the bias-subtracted raw ADU ≥ SATURLEV, the bias
   "Poisson" term of the read noise;
3. Poisson variance = max(image, 0) before the dark;
4. dark (:func:`_scaled_dark`, :func:`_add_dark_noise`, :func:`_calibrate_rows`):
   rate (e⁻/s, or ADU/s for a raw-shaped dark) × EXPTIME, subtracted in electrons;
   its clipped noise per amplifier joins the read noise;
5. pixflat (PIXFLATZERO ≤ 0.001, PIXFLATLOW < 0.1); ivar = 1/(poisson + rdnoise²);
6. the bad-pixel mask, BADREADNOISE where read noise > 15 e⁻;
7. cosmic rays (:mod:`.cosmics`).

Memory: the raw image stays in its own dtype (bias-subtracted float64 sections are
made on demand, :class:`_BiasSubtracted`), float32 calibrations stay float32, and the
per-pixel steps write in place into the output planes by blocks of rows
(:mod:`.blocks`): the only image-sized arrays are the inputs and the outputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import __version__
from ..backend import get_xp, is_cupy, to_device
from ..errors import BadDataError
from ..image import Image
from ..io.calib import calib_camera
from ..io.raw import RawLayout, raw_layout
from ..io.util import header_dict, require_keyword
from ..maskbits import ccdmask
from ..profiling import nvtx_range
from .blocks import row_blocks
from .calib import CalibInput, check_shape, load_calibration
from .cosmics import C2FUDGE, CFUDGE, NITER, NSIG, cosmic_mask
from .header import add_missing_keys, set_dependency
from .overscan import OSTEP_BADREADNOISE, OverscanResult, amp_overscan
from .stats import clipped_stats

__all__ = ["preproc", "BADREADNOISE_LIMIT", "PIXFLAT_ZERO", "PIXFLAT_LOW", "DEFAULT_SATURLEV"]

log = logging.getLogger(__name__)

#: Read noise (e⁻) above which a pixel gets BADREADNOISE.
BADREADNOISE_LIMIT = 15.0
#: pixflat values ≤ this are treated as zero (PIXFLATZERO, not divided).
PIXFLAT_ZERO = 0.001
#: pixflat values below this (and > 0) get PIXFLATLOW.
PIXFLAT_LOW = 0.1
#: Default saturation level (ADU) when SATURLEVx is absent.
DEFAULT_SATURLEV = 2 ** 16 - 1


@dataclass
class _Planes:
    """The trimmed output planes, filled amplifier by amplifier (device arrays)."""

    image: Any
    readnoise: Any
    mask: Any
    dark_e: Any = None        # dark in electrons (trimmed shape, the dark's dtype), or None


class _BiasSubtracted:
    """The raw image minus the bias, in float64, made section by section on demand.

    ``r[sec]`` is ``float64(raw[sec]) - bias[sec]`` (a new array), which is what a full
    float64 copy of the bias-subtracted image would hold there; no image-sized float64
    plane is ever made (the raw stays in its own dtype on the device, int32 for DESI).
    Backends: numpy and cupy (whatever ``raw`` and ``bias`` are).
    """

    def __init__(self, raw, bias):
        self.raw = raw
        self.bias = bias
        self.shape = raw.shape

    def __getitem__(self, sec):
        out = self.raw[sec].astype(np.float64)
        if self.bias is not None:
            out -= self.bias[sec]
        return out


def _upload_raw(raw, xp, path, hdu=None):
    """The raw image on the device in its own dtype (the caller's array is never touched).

    Float images are checked for NaN/inf; integers are always finite.
    """
    with nvtx_range("preproc:upload"):
        # upload in the file's dtype (int32: half the bytes of float64)
        rawdev = to_device(raw, xp)
    if np.dtype(raw.dtype).kind in "iub":
        return rawdev
    if not bool(xp.isfinite(rawdev).all()):
        nbad = int((~xp.isfinite(rawdev)).sum())
        raise BadDataError(f"raw image has {nbad} NaN or infinite pixel(s)", path=path,
                           hdu=hdu)
    return rawdev


def _record(meta: dict, key: str, cal: CalibInput | None, given) -> None:
    """DEPNAM/DEPVER provenance of one calibration (file name, ``Unknown image`` or None).

    ``given`` is what the caller passed: ``False`` (skipped on purpose, e.g. ``--nodark``)
    records ``None``, as desispec does for a skipped bias, pixflat or mask (desispec 0.70
    writes nothing for a skipped dark; gpuspec records it the same way as the others);
    ``None`` (not asked for) records nothing.
    """
    if cal is not None:
        set_dependency(meta, key, cal.provenance)
    elif given is not None:
        set_dependency(meta, key, "None")


def _load_calibrations(xp, meta: dict, raw_shape, out_shape, bias, dark, pixflat, mask) -> dict:
    """Load and shape-check the four calibrations (before any work); record their provenance."""
    # bias, dark and pixflat keep their stored float dtype (float32 files: half the
    # memory, as in desispec); every operation on them promotes to float64 (exact), and
    # the dark times EXPTIME stays float32 like desispec's
    cal = {"bias": load_calibration(bias, "bias", xp, dtype=None),
           "dark": load_calibration(dark, "dark", xp, dtype=None),
           "mask": load_calibration(mask, "mask", xp, dtype=np.int32),
           "pixflat": load_calibration(pixflat, "pixflat", xp, dtype=None)}
    for name in ("bias", "pixflat"):
        c = cal[name]
        if c is not None and c.data.dtype.kind != "f":
            c.data = c.data.astype(xp.float64)
    if cal["bias"] is not None:
        check_shape(cal["bias"], raw_shape, "raw image")
    _record(meta, "CCD_CALIB_BIAS", cal["bias"], bias)
    d = cal["dark"]
    if d is not None:
        if d.shape not in (out_shape, raw_shape):
            raise BadDataError(f"dark calibration has shape {d.shape} but must have the "
                               f"preproc shape {out_shape} or the raw shape {raw_shape}",
                               path=d.path)
    _record(meta, "CCD_CALIB_DARK", d, dark)
    for name in ("mask", "pixflat"):
        if cal[name] is not None:
            check_shape(cal[name], out_shape, "preproc image")
    _record(meta, "CCD_CALIB_MASK", cal["mask"], mask)
    _record(meta, "CCD_CALIB_PIXFLAT", cal["pixflat"], pixflat)
    return cal


def _scaled_dark(cal_dark: CalibInput | None, exptime, xp, camera: str):
    """Dark rate × EXPTIME in the dark's float dtype and shape, or None when absent or all zero.

    Scaled in place (the loaded calibration is a private copy); a float32 dark stays
    float32, rounded exactly like desispec's ``exptime * dark``.
    """
    if cal_dark is None:
        return None
    dd = cal_dark.data
    if dd.dtype.kind != "f":
        dd = dd.astype(xp.float64)
    dd *= dd.dtype.type(exptime)
    dark_scaled = dd
    if int(xp.count_nonzero(dark_scaled)) == 0:
        log.info("camera %s: dark model is all zeros (EXPTIME=%s); not applied", camera,
                 exptime)
        return None
    return dark_scaled


def _use_overscan_rows(requested: bool, layout: RawLayout, camera: str) -> bool:
    """``use_overscan_row``, switched off (with an error logged) when an amp has no ORSEC."""
    if not requested:
        return False
    missing = [a for a in layout.amps if "ORSEC" not in layout.sections[a]]
    if missing:
        log.error("camera %s: no ORSEC%s keyword; not using the overscan rows", camera,
                  missing[0])
        return False
    return True


def _saturation_level(layout: RawLayout, amp: str, camera: str) -> float:
    sat = layout.saturlev[amp]
    if sat is None:
        log.warning("camera %s: no SATURLEV%s; using %d ADU", camera, amp, DEFAULT_SATURLEV)
        return float(DEFAULT_SATURLEV)
    return sat


def _amp_read_noise(ov: OverscanResult, bias, secs: dict) -> float:
    """Read noise (ADU) of one amp, with the master-bias noise correction.

    The master bias noise is in the raw data already: add the difference between its
    noise in the active area and in the overscan.
    """
    rdnoise = ov.rdnoise
    if bias is not None:
        _, bn_data = clipped_stats(bias[secs["DATASEC"]])
        _, bn_ov = clipped_stats(bias[secs["BIASSEC"]])
        rdnoise = float(np.sqrt(rdnoise ** 2 + bn_data ** 2 - bn_ov ** 2))
    return rdnoise


def _overscan_row_offset(rawimg, secs: dict) -> float:
    """Clipped level of the overscan rows (ORSEC) after removing the overscan-column level."""
    col_level, _ = clipped_stats(rawimg[secs["BIASSEC"]])
    row_offset, _ = clipped_stats(rawimg[secs["ORSEC"]] - col_level)
    return row_offset


def _check_expected_read_noise(hdr: dict, amp: str, rdnoise_e: float, camera: str) -> None:
    """Warn when the measured read noise is off by more than 2× from RDNOISEx."""
    if "RDNOISE" + amp not in hdr:
        return
    try:
        expected = float(hdr["RDNOISE" + amp])
    except (TypeError, ValueError):
        return
    if not 0.5 * expected <= rdnoise_e <= 2.0 * expected:
        log.warning("camera %s amp %s: measured read noise %.2f e- vs expected %.2f", camera,
                    amp, rdnoise_e, expected)


def _amp_overscan(rawimg, secs, meta, amp, per_row_allowed, planes, camera):
    """Overscan of one amp; OSTEP/OMETH/RMETH keywords; BADREADNOISE for a stepped PER_ROW amp."""
    ov = amp_overscan(rawimg, secs["BIASSEC"], secs["DATASEC"], per_row_allowed=per_row_allowed)
    meta["OSTEP" + amp] = ov.ostep
    meta["OMETH" + amp] = ov.method
    meta["RMETH" + amp] = "AVERAGE"
    if ov.badrows:
        log.warning("camera %s amp %s: %d overscan rows replaced (charge trail)", camera, amp,
                    ov.badrows)
    if ov.method == "PER_ROW" and ov.ostep > OSTEP_BADREADNOISE:
        planes.mask[secs["CCDSEC"]] |= np.int32(ccdmask.BADREADNOISE)
        log.warning("camera %s amp %s: OSTEP=%.2f, BADREADNOISE set", camera, amp, ov.ostep)
    return ov


def _sub_rows(sec, rows: slice):
    """Rows ``rows`` (relative) of the 2-D section ``sec`` = (yslice, xslice). Host only."""
    ys, xs = sec
    return slice(ys.start + rows.start, ys.start + rows.stop), xs


def _fill_amp(planes: _Planes, rawimg, secs, level, row_offset, gain, saturlev, rdnoise_e,
              bias, dark_scaled, xp) -> None:
    """Electrons, SATURATED bits, read noise (and a raw-shaped dark) of one amp's CCDSEC.

    Written in place into the planes, block of rows by block of rows (no amplifier- or
    image-sized temporary); the arithmetic is in float64 (float32 calibrations are
    promoted before any operation).
    """
    data_sec, ccd_sec = secs["DATASEC"], secs["CCDSEC"]
    nrows = data_sec[0].stop - data_sec[0].start
    for rows in row_blocks(0, nrows, xp):
        dsec, csec = _sub_rows(data_sec, rows), _sub_rows(ccd_sec, rows)
        raw = rawimg[dsec]
        img = planes.image[csec]
        xp.subtract(raw, level[rows, None], out=img)
        if row_offset is not None:
            img -= row_offset
        img *= gain
        planes.mask[csec] |= xp.where(raw >= saturlev, np.int32(ccdmask.SATURATED),
                                      np.int32(0))
        rn = planes.readnoise[csec]
        if bias is not None:
            tb = bias[dsec].astype(xp.float64)
            tb *= gain
            xp.maximum(tb, 0.0, out=tb)             # = tb·(tb > 0) once added
            tb += rdnoise_e * rdnoise_e
            xp.sqrt(tb, out=rn)
        else:
            rn[...] = rdnoise_e
        if dark_scaled is not None and dark_scaled.shape != planes.image.shape:
            d = planes.dark_e[csec]
            d[...] = dark_scaled[dsec]
            d *= gain


def _preproc_amp(rawimg, layout: RawLayout, amp: str, planes: _Planes, meta: dict, hdr: dict,
                 bias, dark_scaled, use_orsec: bool, camera: str, xp) -> None:
    """One amplifier: overscan, read noise, gain, saturation; header keywords (in place)."""
    secs = layout.sections[amp]
    gain = layout.gains[amp]
    meta["GAIN" + amp] = gain
    saturlev = _saturation_level(layout, amp, camera)
    meta["SATULEV" + amp] = saturlev
    ov = _amp_overscan(rawimg, secs, meta, amp, use_orsec, planes, camera)
    rdnoise_e = _amp_read_noise(ov, bias, secs) * gain
    row_offset = _overscan_row_offset(rawimg, secs) if use_orsec else None
    meta["OVERSCN" + amp] = float(xp.median(ov.level))
    meta["OBSRDN" + amp] = rdnoise_e
    meta["SATUELE" + amp] = gain * (saturlev - float(xp.mean(ov.level)))
    _check_expected_read_noise(hdr, amp, rdnoise_e, camera)
    _fill_amp(planes, rawimg, secs, ov.level, row_offset, gain, saturlev, rdnoise_e, bias,
              dark_scaled, xp)


def _add_dark_noise(planes: _Planes, layout: RawLayout, xp) -> None:
    """Per amp, the clipped noise of the dark (e⁻) joins the read noise (in place)."""
    for amp in layout.amps:
        ccd_sec = layout.sections[amp]["CCDSEC"]
        _, darknoise = clipped_stats(planes.dark_e[ccd_sec])
        rn = planes.readnoise[ccd_sec]
        xp.multiply(rn, rn, out=rn)
        rn += darknoise * darknoise
        xp.sqrt(rn, out=rn)


def _bits_where(cond, bit: int, xp):
    """int32 array: ``bit`` where ``cond``, else 0."""
    return xp.where(cond, np.int32(bit), np.int32(0))


def _calibrate_rows(img, rn, mask, ivar, dark, pixflat, xp) -> None:
    """Dark, pixflat, ivar and BADREADNOISE on one block of rows (all arguments are views).

    Poisson variance = max(image, 0) before the dark; pixflat > PIXFLAT_ZERO divides the
    image and read noise (and the variance by its square), PIXFLATZERO elsewhere,
    PIXFLATLOW where 0 < pixflat < PIXFLAT_LOW; ivar = 1/(poisson + rdnoise²) where > 0.
    """
    xp.maximum(img, 0.0, out=ivar)              # Poisson variance, before the dark
    if dark is not None:
        img -= dark
    if pixflat is not None:
        pf = pixflat.astype(xp.float64)
        good = pf > PIXFLAT_ZERO
        safe = xp.where(good, pf, 1.0)
        img /= safe
        rn /= safe
        xp.multiply(safe, safe, out=safe)
        ivar /= safe
        mask |= _bits_where(~good, ccdmask.PIXFLATZERO, xp)
        mask |= _bits_where((pf > 0) & (pf < PIXFLAT_LOW), ccdmask.PIXFLATLOW, xp)
    ivar += rn * rn                             # variance
    pos = ivar > 0
    xp.divide(1.0, xp.where(pos, ivar, 1.0), out=ivar)
    ivar *= pos
    mask |= _bits_where(rn > BADREADNOISE_LIMIT, ccdmask.BADREADNOISE, xp)


def _calibrated_planes(planes: _Planes, layout: RawLayout, pixflat, xp):
    """Dark, pixflat, ivar and BADREADNOISE: the (pix, ivar, mask, readnoise) of the Image.

    The image, read noise and mask planes are updated in place, block of rows by block
    of rows (:mod:`.blocks`), and ivar is the only new plane.
    """
    with nvtx_range("preproc:calib"):
        image, readnoise, mask, dark = planes.image, planes.readnoise, planes.mask, \
            planes.dark_e
        if dark is not None:
            _add_dark_noise(planes, layout, xp)
        pf = pixflat.data if pixflat is not None else None
        ivar = xp.empty_like(image)
        for rows in row_blocks(0, image.shape[0], xp):
            _calibrate_rows(image[rows], readnoise[rows], mask[rows], ivar[rows],
                            None if dark is None else dark[rows],
                            None if pf is None else pf[rows], xp)
    return image, ivar, mask, readnoise


def _amplifier_planes(rawimg, layout: RawLayout, cal: dict, meta: dict, hdr: dict,
                      exptime, use_overscan_row: bool, camera: str, xp) -> _Planes:
    """Bias subtraction and every amp (:func:`_preproc_amp`): the trimmed planes in e⁻."""
    out_shape = layout.trimmed_shape
    with nvtx_range("preproc:amps"):
        bias = cal["bias"].data if cal["bias"] is not None else None
        rawimg = _BiasSubtracted(rawimg, bias)
        planes = _Planes(image=xp.zeros(out_shape, dtype=xp.float64),
                         readnoise=xp.zeros(out_shape, dtype=xp.float64),
                         # the loaded mask is a private copy: it becomes the output plane
                         mask=(cal["mask"].data if cal["mask"] is not None
                               else xp.zeros(out_shape, dtype=xp.int32)))
        dark_scaled = _scaled_dark(cal["dark"], exptime, xp, camera)
        if dark_scaled is not None:
            planes.dark_e = (dark_scaled if dark_scaled.shape == out_shape
                             else xp.zeros(out_shape, dtype=xp.float64))
        use_orsec = _use_overscan_rows(use_overscan_row, layout, camera)
        for amp in layout.amps:
            _preproc_amp(rawimg, layout, amp, planes, meta, hdr, bias, dark_scaled, use_orsec,
                         camera, xp)
    return planes


def _check_calib_cameras(cal: dict, camera: str, path) -> None:
    """Refuse a calibration file of another camera (BadDataError naming both). Host only."""
    for c in cal.values():
        other = calib_camera(c.path, c.name) if c is not None and c.path else None
        if other not in (None, camera):
            raise BadDataError(f"{c.name} file {c.path} is for camera {other}, not {camera}",
                               path=path, hdu=camera.upper())


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
        Keys are case-insensitive. Validated by :func:`gpuspec.io.raw.raw_layout`.
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
        Bad-pixel mask (ccdmask bits: integral, ≥ 0), trimmed shape; OR-ed into the
        output mask.
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
        NaN/inf raw pixels, negative EXPTIME, calibration of the wrong shape or with
        bad values.

    Backends: numpy and cupy (same results).
    """
    xp = get_xp(backend)
    hdr = header_dict(header)
    prim = header_dict(primary_header)
    camera = str(camera if camera is not None else
                 require_keyword(hdr, "CAMERA", path=path)).strip().lower()
    if getattr(raw, "ndim", None) != 2:
        raise BadDataError(f"raw image must be 2-D, got shape {getattr(raw, 'shape', None)}",
                           path=path)
    layout = raw_layout(hdr, raw.shape, path=path, primary_header=prim, nogain=nogain,
                        require_exptime=dark is not None and dark is not False)
    rawimg = _upload_raw(raw, xp, path, camera.upper())
    meta = dict(hdr)
    cal = _load_calibrations(xp, meta, tuple(raw.shape), layout.trimmed_shape, bias, dark,
                             pixflat, mask)
    _check_calib_cameras(cal, camera, path)
    planes = _amplifier_planes(rawimg, layout, cal, meta, hdr, layout.exptime,
                               use_overscan_row, camera, xp)
    del rawimg                         # free the raw upload and the bias before ivar
    cal["bias"] = cal["dark"] = None
    pix, ivar, outmask, readnoise = _calibrated_planes(planes, layout, cal["pixflat"], xp)
    cal["pixflat"] = None
    planes.dark_e = None
    img = Image(pix=pix, ivar=ivar, mask=outmask, readnoise=readnoise, camera=camera, meta=meta)
    if cosmics:
        with nvtx_range("preproc:cosmics"):
            cosmic_mask(img, nsig=cosmics_nsig, cfudge=cosmics_cfudge,
                        c2fudge=cosmics_c2fudge, niter=cosmics_niter)
    if not is_cupy(img.mask) and int(np.count_nonzero(img.mask)) == img.mask.size:
        log.error("camera %s is entirely masked", camera)
    set_dependency(meta, "GPUSPEC", __version__)
    add_missing_keys(meta, prim)
    meta["CAMERA"] = camera
    return img
