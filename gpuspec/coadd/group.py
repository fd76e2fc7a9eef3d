"""HEALPix regrouping of frames into spectra files, and the file-level coadd step.

:func:`group_frames` reads frames or calibrated frames (cframes; any cameras, any
exposures), assigns every fiber to the HEALPix pixel of its TARGET_RA/TARGET_DEC
(healpy, NESTED, default nside 64, as desispec) and writes one
``spectra-{SURVEY}-{PROGRAM}-{HPXPIXEL}.fits`` per pixel in the desispec spectra
layout: one row per (exposure, fiber) and one band per camera arm. As desispec's
``desi_group_spectra`` (``frames2spectra``): the fibermap row of a fiber is its first
camera's, with FIBERSTATUS OR-ed over the cameras of the exposure, and the flux unit
(BUNIT of the FLUX HDUs: electron/Angstrom for frames, 10**-17 erg/(s cm2 Angstrom) for
cframes) is carried to the spectra; frames of different units are refused.

:func:`coadd_file` reads a spectra file, coadds it (plain or
spectroperfectionism) and writes the coadd file.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import InputError, OutputError
from ..limits import MAX_NSIDE, MAX_NWAVE, check_size
from ..profiling import nvtx_range
from ..spectra import Spectra
from .scores import spectra_scores

__all__ = ["group_frames", "coadd_file", "healpix_pixels", "healpix_filename", "healpix_path",
           "check_nside",
           "DEFAULT_SURVEY", "DEFAULT_PROGRAM", "DEFAULT_NSIDE"]

log = logging.getLogger(__name__)

# desispec appends NIGHT, EXPID, MJD, TILEID (in this order) from the frame header
_EXPCOLS = (("NIGHT", "i4"), ("EXPID", "i4"), ("MJD", "f8"), ("TILEID", "i4"),
            ("EXPTIME", "f8"))


#: Defaults of the spectra/coadd names and headers (SURVEY, PROGRAM) and of the HEALPix nside.
DEFAULT_SURVEY = "main"
DEFAULT_PROGRAM = "dark"
DEFAULT_NSIDE = 64


def healpix_pixels(ra, dec, nside: int = DEFAULT_NSIDE):
    """NESTED HEALPix pixel of each (RA, Dec) in degrees (host arrays; returns int64 numpy).

    Backends: host (healpy).
    """
    import healpy

    return healpy.ang2pix(int(nside), np.asarray(ra, float), np.asarray(dec, float),
                          nest=True, lonlat=True)


def healpix_filename(kind: str, survey: str, program: str, pixel: int, ext: str = "fits") -> str:
    """DESI file name of a HEALPix product: ``{kind}-{survey}-{program}-{pixel}.{ext}``.

    ``kind`` is ``spectra`` or ``coadd`` (desispec ``findfile``). The same survey
    and program go into the SURVEY/PROGRAM header keywords (:func:`group_frames`).

    Backends: host.
    """
    return f"{kind}-{survey}-{program}-{int(pixel)}.{ext}"


def healpix_path(kind: str, survey: str, program: str, pixel: int, ext: str = "fits") -> str:
    """Path of a HEALPix product below a production's ``healpix/`` folder (desispec layout).

    ``{survey}/{program}/{pixel//100}/{pixel}/`` + :func:`healpix_filename`.

    Backends: host.
    """
    pixel = int(pixel)
    return os.path.join(survey, program, str(pixel // 100), str(pixel),
                        healpix_filename(kind, survey, program, pixel, ext))


def _with_exposure_columns(fm, meta):
    """Fibermap with NIGHT/EXPID/TILEID/MJD/EXPTIME filled from the frame header when absent."""
    names = fm.dtype.names
    add = [(c, t) for c, t in _EXPCOLS if c not in names]
    if not add:
        return fm
    out = np.zeros(len(fm), dtype=fm.dtype.descr + list(add))
    for c in names:
        out[c] = fm[c]
    for c, _ in add:
        key = "MJD-OBS" if c == "MJD" and "MJD" not in meta else c
        out[c] = meta.get(key, -1)
    return out


def _band_scores_table(frames, band, nrow):
    """Zero-filled per-row SCORES of one band, with the columns of its first frame's SCORES."""
    for _, b, fr in frames:
        if b == band and fr.scores is not None and fr.scores.dtype.names:
            cols = [c for c in fr.scores.dtype.names if c != "TARGETID"]
            if cols:
                return np.zeros(nrow, dtype=[(c, fr.scores.dtype[c]) for c in cols])
    return None


def _flux_unit(frames):
    """The common BUNIT of the frames' FLUX (None when none has one); mixed units refused."""
    units = {}
    for f, _, fr in frames:
        units.setdefault(str(fr.meta.get("BUNIT", "") or "").strip(), f)
    if len(units) > 1:
        desc = ", ".join(f"{u or 'none'!r} ({os.path.basename(f)})" for u, f in units.items())
        raise InputError(f"frames of different flux units cannot be grouped: {desc}; group "
                         "either frames or calibrated frames (cframes)",
                         path=list(units.values())[-1], hdu="FLUX", keyword="BUNIT")
    unit = next(iter(units), "")
    return unit or None


def group_frames(framefiles, outdir, nside: int = DEFAULT_NSIDE, survey: str = DEFAULT_SURVEY,
                 program: str = DEFAULT_PROGRAM, healpix=None) -> list[str]:
    """Regroup frames into per-HEALPix spectra files.

    Parameters
    ----------
    framefiles : list of str
        Frame or cframe files (``gpuspec.io.read_frame``), any mix of cameras and
        exposures, all of one flux unit. All frames of one camera arm must share a
        wavelength grid.
    outdir : str
        Output folder (created).
    nside : int
        HEALPix nside (NESTED).
    survey, program : str
        Used in the file names (:func:`healpix_filename`) and the SURVEY/PROGRAM
        header keywords.
    healpix : list of int, optional
        Write only these pixels (default: every pixel with a fiber).

    Returns
    -------
    list of str
        Written files, sorted by pixel.

    Raises
    ------
    InputError
        A frame without CAMERA or FIBERMAP, inconsistent grids of one arm, or frames of
        different flux units (frames mixed with cframes).

    Backends: host (file I/O and table work; no array backend).
    """
    nside = check_nside(nside)
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise OutputError("it is a file, not a folder", outdir)
    frames = _read_frames(framefiles)
    bands, waves = _bands_and_grids(frames)
    keys, fmap = _row_table(frames)
    arrays = _fill_rows(frames, keys, bands, waves, fmap["TARGETID"])
    ok = np.isfinite(fmap["TARGET_RA"]) & np.isfinite(fmap["TARGET_DEC"])
    pix = np.full(len(keys), -1)
    pix[ok] = healpix_pixels(fmap["TARGET_RA"][ok], fmap["TARGET_DEC"][ok], nside)
    os.makedirs(outdir, exist_ok=True)
    wanted = np.unique(pix[pix >= 0])
    if healpix is not None:
        wanted = wanted[np.isin(wanted, np.asarray(list(healpix), dtype=int))]
    with nvtx_range("group.write"):
        written = [_write_pixel(outdir, p, np.nonzero(pix == p)[0], bands, waves, fmap, arrays,
                                nside, survey, program) for p in wanted]
    log.info("wrote %d spectra files from %d frames", len(written), len(frames))
    return written


def _frame_key(fm, i):
    """Row identity of fiber ``i`` of a frame fibermap: (EXPID, NIGHT, FIBER or index)."""
    return (int(fm["EXPID"][i]), int(fm["NIGHT"][i]),
            int(fm["FIBER"][i]) if "FIBER" in fm.dtype.names else i)


def _read_frames(framefiles):
    """``[(path, arm, frame)]``; a frame without CAMERA or FIBERMAP, or two frames holding
    the same fibers of one exposure and camera, is an InputError."""
    from ..io import read_frame

    frames = []
    seen: dict = {}
    with nvtx_range("group.read"):
        for f in framefiles:
            fr = read_frame(f)
            cam = str(fr.meta.get("CAMERA", "")).strip().lower()
            if not cam:
                raise InputError("frame has no CAMERA keyword", path=f, hdu="FLUX",
                                 keyword="CAMERA")
            if fr.fibermap is None:
                raise InputError("frame has no FIBERMAP", path=f, hdu="FIBERMAP")
            frames.append((f, cam[0], fr))
    for f, b, fr in frames:
        _check_overlap(seen, f, str(fr.meta.get("CAMERA")).strip().lower(), fr)
    return frames


def _bands_and_grids(frames):
    """Bands (b, r, z first) and the one wavelength grid of each arm."""
    bands = [b for b in "brz" if any(x[1] == b for x in frames)] + \
        sorted({x[1] for x in frames} - set("brz"))
    waves = {}
    for f, b, fr in frames:
        if b not in waves:
            waves[b] = fr.wave
        elif fr.wave.shape != waves[b].shape or np.any(np.abs(fr.wave - waves[b]) > 1e-4):
            raise InputError(f"wavelength grid differs from other {b!r} frames", path=f,
                             hdu="WAVELENGTH")
    return bands, waves


def _row_table(frames):
    """Output rows (unique (EXPID, NIGHT, FIBER)) and their fibermap, first-seen order.

    The fibermap row is the first camera's; FIBERSTATUS is OR-ed over the cameras
    (desispec ``frames2spectra``).
    """
    keys = {}
    fmrows = []
    status: dict = {}
    for f, b, fr in frames:
        fm = _with_exposure_columns(fr.fibermap, fr.meta)
        for i in range(len(fm)):
            k = _frame_key(fm, i)
            if k not in keys:
                keys[k] = len(keys)
                fmrows.append(fm[i:i + 1])
            if "FIBERSTATUS" in fm.dtype.names:
                status[keys[k]] = status.get(keys[k], 0) | int(fm["FIBERSTATUS"][i])
    base = max((r.dtype for r in fmrows), key=lambda d: len(d.names))
    fmap = np.zeros(len(keys), dtype=base)
    for j, r in enumerate(fmrows):
        for c in r.dtype.names:
            if c in base.names:
                fmap[c][j] = r[c][0]
    if "FIBERSTATUS" in base.names:
        for j, v in status.items():
            fmap["FIBERSTATUS"][j] = v
    return keys, fmap


def _fill_rows(frames, keys, bands, waves, tids):
    """Per-band flux, ivar, mask (NODATA where no frame), resolution and SCORES of every row."""
    from ..maskbits import specmask

    nrow = len(keys)
    flux = {b: np.zeros((nrow, waves[b].size)) for b in bands}
    ivar = {b: np.zeros((nrow, waves[b].size)) for b in bands}
    mask = {b: np.full((nrow, waves[b].size), specmask.NODATA, np.int32) for b in bands}
    ndiag = {b: max((fr.resolution_data.shape[1] for _, bb, fr in frames
                     if bb == b and fr.resolution_data is not None), default=1) for b in bands}
    res = {b: np.zeros((nrow, ndiag[b], waves[b].size)) for b in bands}
    scores = {b: _band_scores_table(frames, b, nrow) for b in bands}
    for f, b, fr in frames:
        fm = _with_exposure_columns(fr.fibermap, fr.meta)
        idx = np.array([keys[_frame_key(fm, i)] for i in range(len(fm))])
        flux[b][idx] = fr.flux
        ivar[b][idx] = fr.ivar
        mask[b][idx] = fr.mask
        if scores[b] is not None and fr.scores is not None:
            for c in scores[b].dtype.names:
                if c in fr.scores.dtype.names:
                    scores[b][c][idx] = fr.scores[c]
        if fr.resolution_data is not None:
            nd = fr.resolution_data.shape[1]
            off = (ndiag[b] - nd) // 2
            res[b][idx, off:off + nd] = fr.resolution_data
    flux_unit = _flux_unit(frames)
    allscores = spectra_scores(scores, tids) if any(v is not None for v in scores.values()) \
        else None
    return {"flux": flux, "ivar": ivar, "mask": mask, "res": res, "scores": allscores,
            "flux_unit": flux_unit}


def _write_pixel(outdir, p, rows, bands, waves, fmap, arrays, nside, survey, program):
    """One ``spectra-SURVEY-PROGRAM-PIXEL.fits`` with the rows of pixel ``p``."""
    from ..io.spectra import write_spectra

    allscores = arrays["scores"]
    meta = {"SPGRP": "healpix", "SPGRPVAL": int(p), "HPXPIXEL": int(p),
            "HPXNSIDE": int(nside), "HPXNEST": True, "SURVEY": survey, "PROGRAM": program}
    sp = Spectra(bands=list(bands), wave={b: waves[b] for b in bands},
                 flux={b: arrays["flux"][b][rows] for b in bands},
                 ivar={b: arrays["ivar"][b][rows] for b in bands},
                 mask={b: arrays["mask"][b][rows] for b in bands},
                 resolution_data={b: arrays["res"][b][rows] for b in bands},
                 fibermap=fmap[rows], meta=meta, flux_unit=arrays["flux_unit"],
                 scores=None if allscores is None else allscores[rows])
    path = os.path.join(outdir, healpix_filename("spectra", survey, program, p))
    return write_spectra(path, sp)


def _check_grid_options(lin_step, wave_min, wave_max) -> None:
    """Finite numbers; lin_step > 0; wave_min < wave_max (InputError naming the option)."""
    import math

    for name, v in (("lin_step", lin_step), ("wave_min", wave_min), ("wave_max", wave_max)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))
                              or not math.isfinite(float(v))):
            raise InputError(f"option {name}={v!r}: must be a finite number")
    if lin_step is not None and not lin_step > 0:
        raise InputError(f"option lin_step={lin_step!r}: must be > 0")
    if wave_min is not None and wave_max is not None and not wave_min < wave_max:
        raise InputError(f"options wave_min={wave_min!r} and wave_max={wave_max!r}: wave_min "
                         "must be smaller")


def check_coadd_options(*, lin_step=None, wave_min=None, wave_max=None, cosmics_nsig=None,
                        norm_chi2_threshold=None, **_ignored) -> None:
    """Raise :class:`InputError` for an option value :func:`coadd_file` cannot use
    (``gpuspec-run --check`` calls it on ``steps.coadd.options``).

    Backends: host (option values only).
    """
    _check_grid_options(lin_step, wave_min, wave_max)
    if (wave_min is not None or wave_max is not None) and lin_step is None:
        raise InputError("options wave_min/wave_max need lin_step")
    for name, v in (("cosmics_nsig", cosmics_nsig), ("norm_chi2_threshold",
                                                      norm_chi2_threshold)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not v >= 0 or v == float("inf")):
            raise InputError(f"option {name}={v!r}: must be a finite number >= 0")


def check_nside(nside) -> int:
    """A valid HEALPix nside (a power of 2 up to :data:`gpuspec.limits.MAX_NSIDE`), else an
    :class:`InputError` naming the keyword.

    Backends: host.
    """
    ok = isinstance(nside, (int, np.integer)) and not isinstance(nside, bool) \
        and 1 <= nside <= MAX_NSIDE and (int(nside) & (int(nside) - 1)) == 0
    if not ok:
        raise InputError(f"nside={nside!r}: HEALPix nside must be a power of 2 between 1 and "
                         f"2**29", keyword="nside")
    return int(nside)


def _check_overlap(seen: dict, path: str, cam: str, fr) -> None:
    """Refuse two frames holding the same fibers of one exposure and camera: the rows of
    the second would silently replace the first's (both files named)."""
    key = (cam, str(fr.meta.get("NIGHT")), str(fr.meta.get("EXPID")))
    names = fr.fibermap.dtype.names or ()
    fibers = set(np.asarray(fr.fibermap["FIBER"]).tolist()) if "FIBER" in names else \
        set(range(len(fr.fibermap)))
    for other, ofibers in seen.get(key, []):
        common = fibers & ofibers
        if common:
            raise InputError(f"{other} and {path} both hold fibers of CAMERA {cam}, NIGHT "
                             f"{key[1]}, EXPID {key[2]} ({len(common)} in common, e.g. "
                             f"{min(common)}): the same frame given twice?", path=path)
    seen.setdefault(key, []).append((path, fibers))


def coadd_file(spectrafile, outfile, *, spectroperf: bool = False, lin_step: float | None = None,
               wave_min: float | None = None, wave_max: float | None = None,
               coadd_cameras: bool = False, cosmics_nsig: float | None = None,
               no_normalize: bool = False, norm_chi2_threshold: float | None = None,
               backend="auto") -> str:
    """Coadd a spectra file and write the coadd (desispec layout).

    Parameters
    ----------
    spectrafile, outfile : str
    spectroperf : bool
        Spectroperfectionism coadd (one decorrelated spectrum per target on a
        common grid) instead of the plain per-band coadd.
    lin_step : float, optional
        Output grid step (Å) of a linear grid from ``wave_min`` to ``wave_max``
        (defaults: the input range). With the plain coadd the per-band coadds are
        then spectroperf-resampled onto that grid.
    coadd_cameras : bool
        Plain coadd only: also combine the bands (b, r, z → brz).
    cosmics_nsig, no_normalize, norm_chi2_threshold : see :func:`gpuspec.coadd.coadd`
        (None, an option not given: desispec's defaults, ``cosmics_nsig`` 4 and
        ``norm_chi2_threshold`` 0.1; ``cosmics_nsig=0`` switches the rejection off).
    backend : {"auto", "numpy", "cupy"}

    Returns
    -------
    str
        ``outfile``.

    Backends: numpy, cupy (``backend``); file I/O on the host.
    """
    from ..io.spectra import read_spectra, write_spectra
    from ..io.util import check_writable
    from .cameras import coadd_cameras as _cameras
    from .cosmics import COSMICS_NSIG
    from .plain import coadd
    from .spectroperf import coadd_spectroperf, spectroperf_resample

    _check_grid_options(lin_step, wave_min, wave_max)
    check_writable(outfile)
    sp = read_spectra(spectrafile)
    if sp.fibermap is None:
        raise InputError("spectra file has no FIBERMAP (one row per spectrum is needed)",
                         path=spectrafile, hdu="FIBERMAP")
    onetile = "TILEID" in sp.fibermap.dtype.names and len(np.unique(sp.fibermap["TILEID"])) == 1
    wave_out = None
    if lin_step is not None:
        lo = min(float(np.min(sp.wave[b])) for b in sp.bands) if wave_min is None else wave_min
        hi = max(float(np.max(sp.wave[b])) for b in sp.bands) if wave_max is None else wave_max
        if not hi > lo:
            raise InputError(f"output grid {lo:g}..{hi:g} A is empty (wave-min must be below "
                             "wave-max and the input range)", path=spectrafile)
        n = check_size(np.floor((hi - lo) / lin_step + 1e-6) + 1, MAX_NWAVE, "wavelengths",
                       f"output grid {lo:g}..{hi:g} A with lin-step {lin_step:g}")
        # desispec's --lin-step grid (resample_spectra_lin_or_log): wmin + k·step, the last
        # point not beyond wave-max. Not grids.linear_grid: its np.arange values differ
        # from these by up to 1.4e-9 A over a brz grid, and its last point may pass wmax.
        wave_out = lo + lin_step * np.arange(n)
    elif wave_min is not None or wave_max is not None:
        raise InputError("--wave-min/--wave-max need --lin-step", path=spectrafile)
    if spectroperf:
        out = coadd_spectroperf(sp, wave_out, onetile=onetile, backend=backend)
    else:
        extra = {} if norm_chi2_threshold is None else \
            {"norm_chi2_threshold": float(norm_chi2_threshold)}
        nsig = COSMICS_NSIG if cosmics_nsig is None else cosmics_nsig
        out = coadd(sp, cosmics_nsig=nsig, onetile=onetile, no_normalize=no_normalize,
                    backend=backend, **extra)
        if wave_out is not None:
            r = spectroperf_resample(out, wave_out, backend=backend)
            r.fibermap, r.exp_fibermap, r.scores = out.fibermap, out.exp_fibermap, out.scores
            out = r
        elif coadd_cameras:
            out = _cameras(out, backend=backend)
    out.meta = dict(sp.meta)
    out.flux_unit = sp.flux_unit
    out.meta["COADDTYP"] = "spectroperf" if spectroperf else "plain"
    return write_spectra(outfile, out)
