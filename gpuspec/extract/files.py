"""File-level extraction: preproc file + PSF file → frame file, and merging of
per-bundle partial frames.

Before any work :func:`extract_file` checks its options
(:func:`check_extract_options`, also used by ``gpuspec-run --check``), that the
outputs can be written, that the preproc image and the PSF are of the same
camera, that the wavelength grid is within :data:`gpuspec.limits.MAX_NWAVE`
bins and inside what the PSF covers for the fibers asked (desispec's rule), and
that the preproc FIBERMAP has a row for every fiber extracted. The frame and the
optional model image are written together: both or neither.
:func:`merge_frames` refuses parts of different cameras, exposures or grids.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..errors import BadDataError, InputError
from ..frame import Frame
from ..limits import MAX_NWAVE, MAX_PROCESSES, check_size
from ..maskbits import ccdmask, specmask
from ..profiling import nvtx_range
from ..grids import linear_grid
from .core import extract_frame
from .defaults import SPECTER

__all__ = ["extract_file", "merge_frames", "wave_grid", "HEADER_KEYS", "EXTRACT_MASK",
           "BAD2DFIT_FACTOR", "bad2dfit", "check_extract_options", "grid_size"]

log = logging.getLogger(__name__)

#: Exposure keywords a frame header has when the preproc header has them. Like desispec,
#: the frame header carries the whole preproc header (these and the per-amp keywords).
HEADER_KEYS = ("CAMERA", "NIGHT", "EXPID", "EXPTIME", "MJD-OBS", "DATE-OBS", "TILEID",
               "FLAVOR", "PROGRAM", "OBSTYPE", "SPECGRPH", "DETECTOR", "TELRA", "TELDEC",
               "AIRMASS", "INSTRUME")

#: Preproc MASK bits that set a pixel's ivar to 0 for extraction: desispec's
#: ``extractmaskval``, every ccdmask bit except BADREADNOISE (= 767), so an
#: amplifier flagged BADREADNOISE by preproc is still extracted.
EXTRACT_MASK = (ccdmask.BAD | ccdmask.HOT | ccdmask.DEAD | ccdmask.SATURATED | ccdmask.COSMIC
                | ccdmask.PIXFLATZERO | ccdmask.PIXFLATLOW | ccdmask.HIGHVAR | ccdmask.BADAMP)

#: BAD2DFIT where chi2pix exceeds this many times its median along the fiber axis
#: and along the wavelength axis (desispec's extraction script).
BAD2DFIT_FACTOR = 5.0


def bad2dfit(chi2pix, factor: float = BAD2DFIT_FACTOR) -> np.ndarray:
    """Bins with a bad 2-D fit: chi2pix > factor × its median over the frame's fibers
    (at that wavelength) and > factor × its median over the fiber's wavelengths.

    Parameters
    ----------
    chi2pix : (nspec, nwave) array (host)
    factor : float

    Returns
    -------
    (nspec, nwave) bool

    Backends: host only (NumPy).
    """
    c = np.asarray(chi2pix, dtype=np.float64)
    over_fibers = np.median(c, axis=0)[None, :]
    over_waves = np.median(c, axis=1)[:, None]
    return (c > factor * over_fibers) & (c > factor * over_waves)


def _set_bad2dfit(frame) -> None:
    """Replace the BAD2DFIT bits of ``frame.mask`` by the frame-wide median rule."""
    if frame.chi2pix is None:
        return
    bit = specmask.BAD2DFIT
    mask = np.asarray(frame.mask).astype(np.int64) & ~bit
    frame.mask = (mask | np.where(bad2dfit(frame.chi2pix), bit, 0)).astype(np.int32)


def grid_size(wmin: float, wmax: float, dw: float) -> float:
    """Number of bins of ``arange(wmin, wmax + dw/2, dw)`` (a float: may be huge or NaN).

    Backends: host only (plain floats)."""
    return math.floor((wmax - wmin) / dw + 0.5) + 1.0 if dw > 0 else float("nan")


def wave_grid(wave) -> np.ndarray:
    """The extraction wavelength grid.

    Parameters
    ----------
    wave : (wmin, wmax, dw) or array
        A triple as in desispec (:func:`gpuspec.grids.linear_grid`,
        ``np.arange(wmin, wmax + dw/2, dw)``: wmax included when it falls on the grid) or
        an explicit 1-D grid.

    Raises
    ------
    InputError
        Not a grid, non-finite values; LimitError: more than
        :data:`gpuspec.limits.MAX_NWAVE` bins (checked before allocating).

    Backends: host only (NumPy; the grid is small).
    """
    w = np.asarray(wave, dtype=np.float64)
    if w.ndim == 1 and w.size and not np.isfinite(w).all():
        raise InputError(f"wavelength grid has non-finite values: {wave!r}")
    if w.ndim == 1 and w.size == 3 and w[2] > 0 and w[1] > w[0] and w[2] < (w[1] - w[0]):
        wmin, wmax, dw = (float(v) for v in w)
        check_size(grid_size(wmin, wmax, dw), MAX_NWAVE, "wavelengths",
                   f"wavelength grid {wmin:g},{wmax:g},{dw:g}")
        return linear_grid(wmin, wmax, dw)
    if w.ndim != 1 or w.size < 2:
        raise InputError(f"wavelength must be (wmin, wmax, dw) or a 1-D grid, got {wave!r}")
    check_size(w.size, MAX_NWAVE, "wavelengths", "wavelength grid")
    return w


def check_extract_options(*, specmin=0, nspec=None, bundles=None, bundlesize=25,
                          nsubbundles=5, nwavestep=50, wavepad_frac=0.2, pixpad_frac=0.8,
                          regularize=0.0, psferr=None, nproc=1, **_ignored) -> None:
    """Raise :class:`InputError` naming the option whose value cannot work.

    The rules of :func:`extract_file` before it reads anything (used as well by
    ``gpuspec-run --check`` on ``steps.extract.options``).

    Backends: host only (option values).
    """
    def need(ok, name, value, rule):
        if not ok:
            raise InputError(f"option {name}={value!r}: must be {rule}")

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
            and math.isfinite(float(v))

    need(is_int(specmin) and specmin >= 0, "specmin", specmin, "an integer >= 0")
    need(nspec is None or (is_int(nspec) and nspec >= 1), "nspec", nspec, "an integer >= 1")
    need(is_int(bundlesize) and 1 <= bundlesize <= 10_000, "bundlesize", bundlesize,
         "an integer in 1..10000")
    need(is_int(nsubbundles) and nsubbundles >= 1, "nsubbundles", nsubbundles,
         "an integer >= 1")
    need(is_int(nwavestep) and 1 <= nwavestep <= MAX_NWAVE, "nwavestep", nwavestep,
         f"an integer in 1..{MAX_NWAVE}")
    for name, v in (("wavepad_frac", wavepad_frac), ("pixpad_frac", pixpad_frac),
                    ("regularize", regularize)):
        need(is_num(v) and 0 <= v <= 1e6, name, v, "a finite number >= 0")
    need(psferr is None or (is_num(psferr) and psferr >= 0), "psferr", psferr,
         "a finite number >= 0 (or None: the PSF's)")
    need(is_int(nproc) and 1 <= nproc <= MAX_PROCESSES, "nproc", nproc,
         f"an integer in 1..{MAX_PROCESSES}")
    if bundles is not None:
        b = list(np.atleast_1d(bundles))
        need(b and all(is_int(x) and x >= 0 for x in b), "bundles", bundles,
             "a non-empty list of integers >= 0")


def _camera_name(value) -> str:
    """A CAMERA keyword value normalised (``"'r0      '"`` -> ``r0``)."""
    return str(value).strip().strip("'\"").strip().lower()


def _check_same_camera(image, psf, preprocfile, psffile) -> None:
    """Refuse a PSF whose CAMERA differs from the preproc image's (both files named)."""
    icam = _camera_name(image.meta.get("CAMERA", image.camera or ""))
    pcam = _camera_name(psf.meta.get("CAMERA", ""))
    if icam and pcam and icam != pcam:
        raise InputError(f"camera mismatch: the preproc image {preprocfile} is camera {icam} "
                         f"but the PSF {psffile} is camera {pcam}", path=preprocfile,
                         keyword="CAMERA")


def _check_coverage(psf, w, specmin, nspec, psffile) -> None:
    """desispec's rule: the grid lies within the wavelengths the PSF puts on the CCD
    (rows -0.5 .. NPIX_Y-0.5) for every fiber extracted."""
    fibers = np.arange(specmin, specmin + nspec)
    lo = psf.wavelength(fibers, y=np.array([-0.5]))
    hi = psf.wavelength(fibers, y=np.array([psf.npix_y - 0.5]))
    wlo, whi = float(np.max(lo)), float(np.min(hi))
    if not (np.isfinite(wlo) and np.isfinite(whi)) or w[0] < wlo - 1e-6 or w[-1] > whi + 1e-6:
        raise InputError(f"wavelengths {w[0]:.2f}..{w[-1]:.2f} A are not covered by the PSF "
                         f"for fibers {specmin}..{specmin + nspec - 1}: it puts "
                         f"{wlo:.2f}..{whi:.2f} A on the CCD (wrong arm or camera?)",
                         path=os.fspath(psffile), hdu="XTRACE")


def _check_fibermap_rows(image, specmin, nspec, preprocfile) -> None:
    if image.fibermap is not None and len(image.fibermap) < specmin + nspec:
        raise InputError(f"FIBERMAP has {len(image.fibermap)} rows but fibers "
                         f"{specmin}..{specmin + nspec - 1} are extracted (every spectrum "
                         "needs its fibermap row)", path=os.fspath(preprocfile),
                         hdu="FIBERMAP")


def _wave_keywords(wave, grid) -> dict:
    """WAVEMIN/WAVEMAX/WAVESTEP: the (wmin, wmax, dw) asked for, as desispec, else the grid's."""
    a = np.asarray(wave, dtype=np.float64)
    if a.ndim == 1 and a.size == 3 and np.array_equal(grid, wave_grid(a)) and a.size != grid.size:
        lo, hi, dw = (float(v) for v in a)
    else:
        lo, hi = float(grid[0]), float(grid[-1])
        dw = float(np.round(grid[1] - grid[0], 10)) if grid.size > 1 else 0.0
    return {"WAVEMIN": lo, "WAVEMAX": hi, "WAVESTEP": dw}


def _fiber_range(psf, specmin, nspec, bundles, bundlesize):
    if bundles is not None:
        b = sorted(int(x) for x in np.atleast_1d(bundles))
        if any(y != x + 1 for x, y in zip(b, b[1:])):
            raise InputError(f"bundles {b} must be contiguous (extract them separately and "
                             "use merge_frames)")
        lo = b[0] * bundlesize
        hi = min((b[-1] + 1) * bundlesize, psf.nspec)
        if lo < 0 or lo >= psf.nspec:
            raise InputError(f"bundles {b} outside the PSF's {psf.nspec} fibers")
        return lo, hi - lo
    if nspec is None:
        nspec = psf.nspec - specmin
    if specmin < 0 or nspec < 1 or specmin + nspec > psf.nspec:
        raise InputError(f"fibers specmin={specmin}, nspec={nspec} (fibers {specmin}.."
                         f"{specmin + nspec - 1}) are not among the PSF's {psf.nspec} fibers "
                         f"0..{psf.nspec - 1}", keyword="nspec" if nspec < 1 else "specmin")
    return int(specmin), int(nspec)


@nvtx_range("extract:file")
def extract_file(preprocfile, psffile, outfile, wave, *, specmin=0, nspec=None, bundles=None,
                 bundlesize=SPECTER.bundlesize, nsubbundles=SPECTER.nsubbundles,
                 nwavestep=SPECTER.nwavestep, wavepad_frac=SPECTER.wavepad_frac,
                 pixpad_frac=SPECTER.pixpad_frac, regularize=SPECTER.regularize, psferr=None,
                 model=None,
                 backend="auto", nproc=1, model_ivar=False) -> str:
    """Extract a preproc file into a frame file (desispec layout).

    Parameters
    ----------
    preprocfile, psffile, outfile : str
        Inputs and output (written atomically).
    wave : (wmin, wmax, dw) or array
        Wavelength grid, see :func:`wave_grid`.
    specmin, nspec : int
        Fibers ``[specmin, specmin + nspec)``; ignored when ``bundles`` is given.
        ``nspec=None``: up to the number of FIBERMAP rows of the preproc file when it
        has one, else to the last fiber of the PSF.
    bundles : int or list of int, optional
        Contiguous bundle indices (fibers ``b·bundlesize …``) for a partial frame.
    bundlesize, nsubbundles, nwavestep, wavepad_frac, pixpad_frac, regularize, psferr
        See :func:`gpuspec.extract.extract_frame`.
    model : str, optional
        Also write the model image to this FITS file (HDU ``MODEL``).
    backend : {"auto", "numpy", "cupy"}
    nproc : int
        CPU only: bundles extracted in this many processes.
    model_ivar : bool
        Extract twice: the second pass weights pixels with the variance of the model
        of the first pass plus the read noise instead of preproc's data-based IVAR,
        which removes the low bias of data weighting (see
        :mod:`gpuspec.extract.variance`). Default False (specter's single pass).

    Returns
    -------
    str
        ``outfile``.

    Pixels with a preproc MASK bit of :data:`EXTRACT_MASK` get ivar 0 (desispec:
    BADREADNOISE pixels are kept). BAD2DFIT follows :func:`bad2dfit` over the
    extracted fibers. The FIBERMAP of the preproc file, when present, is propagated
    (its rows ``specmin … specmin+nspec-1``). The frame header carries the preproc
    header (CAMERA, NIGHT, EXPID, TILEID, the per-amp keywords, ...) plus, as
    desispec, WAVEMIN/WAVEMAX/WAVESTEP, IN_PSF, IN_IMG, FIBERMIN, SPECMIN, NSPEC and
    the extraction settings.

    Backends: numpy, cupy.
    """
    from .. import io as gio
    from ..io.util import check_writable
    from ..psf import read_psf

    check_extract_options(specmin=specmin, nspec=nspec, bundles=bundles, bundlesize=bundlesize,
                          nsubbundles=nsubbundles, nwavestep=nwavestep,
                          wavepad_frac=wavepad_frac, pixpad_frac=pixpad_frac,
                          regularize=regularize, psferr=psferr, nproc=nproc)
    w = wave_grid(wave)
    for out in (outfile, model):
        if out is not None:
            check_writable(out)
    full_shape = gio.image_shape(preprocfile)
    psf = read_psf(psffile)
    x0, image = 0, None
    if nspec is None and bundles is None:
        # the whole frame: the fibers the exposure has (500 per petal in production;
        # fewer in simulations) come from the fibermap
        image = gio.read_image(preprocfile, readnoise=bool(model_ivar))
        if image.fibermap is not None:
            nspec = max(1, min(len(image.fibermap), psf.nspec) - int(specmin))
    specmin, nspec = _fiber_range(psf, specmin, nspec, bundles, bundlesize)
    if image is None:
        # a partial frame reads only the columns its patches reach (CROP_COLUMNS)
        cols = (_needed_columns(psf, w, specmin, nspec)
                if CROP_COLUMNS and model is None and not model_ivar else None)
        # READNOISE only enters the model ivar (one CCD-sized array less otherwise)
        image = gio.read_image(preprocfile, columns=cols, readnoise=bool(model_ivar))
        x0 = 0 if cols is None else min(cols[0], full_shape[1])
    _check_same_camera(image, psf, os.fspath(preprocfile), os.fspath(psffile))
    _check_fibermap_rows(image, specmin, nspec, preprocfile)
    _check_coverage(psf, w, specmin, nspec, psffile)
    if full_shape != (psf.npix_y, psf.npix_x):
        log.info("preproc image shape %s differs from the PSF's CCD (%d, %d); its pixel (0, 0) "
                 "is taken as CCD pixel (0, 0)", full_shape, psf.npix_y, psf.npix_x)
    ivar = np.asarray(image.ivar, dtype=np.float64)
    if image.mask is not None:
        ivar = ivar * ((np.asarray(image.mask) & EXTRACT_MASK) == 0)
    meta = _frame_meta(image, wave, w, preprocfile, psffile, specmin,
                       dict(NSUBBUN=int(nsubbundles), NWAVESTP=int(nwavestep),
                            BUNDLSZ=int(bundlesize)))
    opts = dict(bundlesize=bundlesize, nsubbundles=nsubbundles, nwavestep=nwavestep,
                wavepad_frac=wavepad_frac, pixpad_frac=pixpad_frac, regularize=regularize,
                psferr=psferr, backend=backend, nproc=nproc)
    pix = image.pix
    if model_ivar:
        pix, ivar = _model_ivar_pass(image, ivar, psf, w, specmin, nspec, meta, opts)
    frame = extract_frame(pix, ivar, psf, w, specmin, nspec, model=model is not None,
                          meta=meta, xyorigin=(x0, 0), **opts)
    if image.fibermap is not None:
        frame.fibermap = image.fibermap[specmin:specmin + nspec]
    _set_bad2dfit(frame)
    modelimage = frame.modelimage
    frame.modelimage = None
    _write_outputs(outfile, frame, model, modelimage)
    return os.fspath(outfile)


#: A partial frame (``bundles`` or ``nspec`` given, no model image) reads only the CCD
#: columns its patches can reach: a per-bundle task then reads, converts and cleans about
#: a twentieth of the CCD instead of all of it (the results are the same: every patch box
#: lies inside those columns). ``False`` reads the whole image.
CROP_COLUMNS = True
#: Columns kept on each side of the fibers' spot footprints (psf.xyrange): the patch boxes
#: come from the same traces sampled at other wavelengths, one column apart at most.
CROP_MARGIN = 4


def _needed_columns(psf, grid, specmin: int, nspec: int) -> tuple[int, int]:
    """CCD columns ``[x0, x1)`` that the patches of fibers ``[specmin, specmin + nspec)``
    on the wavelength grid can reach, with :data:`CROP_MARGIN` on each side."""
    xmin, xmax, _, _ = psf.xyrange((specmin, specmin + nspec), (grid[0], grid[-1]))
    return max(0, xmin - CROP_MARGIN), xmax + CROP_MARGIN


def _frame_meta(image, wave, grid, preprocfile, psffile, specmin, settings) -> dict:
    """The frame header: the preproc header (but BUNIT), CAMERA, WAVEMIN/WAVEMAX/WAVESTEP,
    IN_PSF/IN_IMG, FIBERMIN (500 per petal), PSFFILE/INFILE and the settings."""
    meta = {k: v for k, v in image.meta.items() if k != "BUNIT"}
    if image.camera and "CAMERA" not in meta:
        meta["CAMERA"] = image.camera
    cam = str(meta.get("CAMERA", "")).strip()
    petal = int(cam[1]) if len(cam) == 2 and cam[1].isdigit() else 0
    meta.update(_wave_keywords(wave, grid))
    meta.update({"IN_PSF": os.path.basename(os.fspath(psffile)),
                 "IN_IMG": os.path.basename(os.fspath(preprocfile)),
                 "FIBERMIN": 500 * petal + int(specmin)})
    meta.update({"PSFFILE": os.path.basename(os.fspath(psffile)),
                 "INFILE": os.path.basename(os.fspath(preprocfile))})
    meta.update(settings)
    return meta


def _model_ivar_pass(image, ivar, psf, w, specmin, nspec, meta, opts):
    """First pass of ``model_ivar``: extract, then pixel ivar from the projected model of
    the smoothed spectra (:mod:`gpuspec.extract.variance`). Returns the device image and
    the model ivar and sets IVARMODL in ``meta``."""
    from .. import backend as _backend
    from .variance import model_ivar as _model_ivar

    # image and ivar go to the device once and the model ivar stays there: no
    # full-image device -> host -> device round trip between the two passes
    xp = _backend.get_xp(opts["backend"])
    pix = _backend.to_device(image.pix, xp, dtype=np.float64)
    ivar = _backend.to_device(ivar, xp, dtype=np.float64)
    first = extract_frame(pix, ivar, psf, w, specmin, nspec, meta=dict(meta), **opts)
    ivar = _model_ivar(psf, np.arange(specmin, specmin + nspec), w, first.flux, ivar,
                       readnoise=image.readnoise, image=pix, xp=xp, flux_ivar=first.ivar)
    meta["IVARMODL"] = True  # pixel ivar from the model of a first pass
    return pix, ivar


def _write_outputs(outfile, frame, model, modelimage) -> None:
    """The frame and (optionally) the model image: both written, or neither.

    Both go to temporary names first; the model is renamed, then the frame. A
    failure while writing either removes both temporaries.
    """
    from .. import io as gio
    from ..io.util import atomic_output

    with atomic_output(outfile) as ftmp:
        gio.write_frame(ftmp, frame)
        if model is not None:
            _write_model(model, modelimage, frame.meta)


def _write_model(path, modelimage, meta):
    import fitsio

    from ..io.util import atomic_output, header_records, write_checksums

    hdr = {k: meta[k] for k in ("CAMERA", "NIGHT", "EXPID", "SPECMIN", "NSPEC") if k in meta}
    with atomic_output(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as fx:
            fx.write(np.asarray(modelimage, dtype=np.float32), extname="MODEL",
                     header=header_records(hdr))


        write_checksums(tmp)
def _specmin(frame, path) -> int:
    v = frame.meta.get("SPECMIN", 0)
    try:
        if isinstance(v, bool) or int(v) != float(v) or int(v) < 0:
            raise ValueError
        return int(v)
    except (TypeError, ValueError):
        raise InputError(f"SPECMIN={v!r} is not a fiber index", path=path,
                         keyword="SPECMIN") from None


@nvtx_range("extract:merge")
def merge_frames(partfiles, outfile) -> str:
    """Merge partial frames (e.g. one per bundle) into one frame file.

    Parameters
    ----------
    partfiles : list of str
        Frame files whose fibers (``SPECMIN`` … ``SPECMIN+NSPEC-1``) tile a contiguous
        range without overlap, on the same wavelength grid.
    outfile : str
        Output frame (atomic).

    Returns
    -------
    str
        ``outfile``.

    Raises
    ------
    InputError
        No inputs, different wavelength grids, gaps/overlaps in the fibers, or some
        parts with and some without an optional HDU.

    Backends: host only (file I/O, NumPy).
    """
    from .. import io as gio

    if not partfiles:
        raise InputError("merge_frames: no input frames")
    frames = [(gio.read_frame(p), os.fspath(p)) for p in partfiles]
    from ..io.util import check_same_source

    for fr, p in frames[1:]:
        check_same_source(fr.meta, p, frames[0][0].meta, frames[0][1],
                          ("CAMERA", "EXPID", "NIGHT"), "partial frame")
    frames.sort(key=lambda t: _specmin(t[0], t[1]))
    first, fpath = frames[0]
    nxt, prev = _specmin(first, fpath), None
    for fr, p in frames:
        s = _specmin(fr, p)
        if s < nxt:
            raise InputError(f"its fibers {s}..{s + fr.nspec - 1} overlap those of {prev} "
                             "(the same part twice?)", path=p, keyword="SPECMIN")
        if s > nxt:
            raise InputError(f"fibers {nxt}..{s - 1} are missing between {prev} and this "
                             f"part (SPECMIN={s})", path=p, keyword="SPECMIN")
        nxt, prev = s + fr.nspec, p
        if fr.wave.shape != first.wave.shape or not np.allclose(fr.wave, first.wave):
            raise InputError(f"wavelength grid differs from {fpath}", path=p, hdu="WAVELENGTH")

    def cat(name):
        vals = [getattr(fr, name) for fr, _ in frames]
        have = [v is not None for v in vals]
        if not any(have):
            return None
        if not all(have):
            raise InputError(f"{name.upper()} present in some parts only",
                             path=frames[have.index(False)][1])
        return np.concatenate(vals)

    ndiag = {fr.resolution_data.shape[1] for fr, _ in frames if fr.resolution_data is not None}
    if len(ndiag) > 1:
        raise BadDataError(f"parts have different numbers of resolution diagonals {ndiag}")
    meta = dict(first.meta)
    meta["SPECMIN"] = _specmin(first, fpath)
    meta["NSPEC"] = nxt - meta["SPECMIN"]
    merged = Frame(wave=first.wave, flux=cat("flux"), ivar=cat("ivar"), mask=cat("mask"),
                   resolution_data=cat("resolution_data"), chi2pix=cat("chi2pix"),
                   fibermap=cat("fibermap"), meta=meta,
                   pixmask_fraction=cat("pixmask_fraction"))
    _set_bad2dfit(merged)  # the rule is frame-wide: recompute it over all fibers
    return gio.write_frame(outfile, merged)
