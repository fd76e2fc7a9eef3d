"""File-to-file calibration steps (what the CLIs and a launcher call).

Each reads its inputs, runs the step and writes one output atomically (nothing is
written when a step fails). Names, options and headers follow desispec's scripts:
``desi_compute_fiberflat``, ``desi_average_fiberflat``, ``desi_autocalib_fiberflat``,
``desi_compute_sky``, ``desi_fit_stdstars``, ``desi_compute_fluxcalibration`` and
``desi_process_exposure``.

File names: :func:`calib_filename` (``fiberflat-b0-00000099.fits`` …).
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import BadDataError, InputError
from ..profiling import nvtx_range

__all__ = ["calib_filename", "compute_fiberflat_file", "average_fiberflat_file",
           "autocalib_fiberflat_file", "compute_sky_file", "fit_stdstars_file",
           "compute_fluxcalib_file", "process_exposure_file"]

log = logging.getLogger(__name__)

_PATTERNS = {
    "frame": "frame-{camera}-{expid:08d}.fits",
    "fiberflat": "fiberflat-{camera}-{expid:08d}.fits",
    "fiberflatnight": "fiberflatnight-{camera}-{night}.fits",
    "sky": "sky-{camera}-{expid:08d}.fits",
    "stdstars": "stdstars-{spectrograph}-{expid:08d}.fits",
    "fluxcalib": "fluxcalib-{camera}-{expid:08d}.fits",
    "cframe": "cframe-{camera}-{expid:08d}.fits",
}


def calib_filename(kind: str, camera: str | None = None, expid: int | None = None,
                   night: int | None = None, spectrograph: int | None = None) -> str:
    """desispec's base name of a calibration product (``kind`` in :data:`_PATTERNS`).

    Backends: host only (plain values).
    """
    try:
        pat = _PATTERNS[kind]
    except KeyError:
        raise InputError(f"unknown product kind {kind!r}; expected one of "
                         f"{sorted(_PATTERNS)}") from None
    return pat.format(camera=(camera or "").lower(), expid=int(expid or 0), night=night,
                      spectrograph=spectrograph)


def _short(path) -> str:
    return os.path.basename(os.fspath(path)) if path is not None else "None"


class _named:
    """Context manager: give a gpuspec error raised inside the name of ``path`` (and of
    the other inputs ``others``, ``kind=path``, so that a mismatch names both files)."""

    def __init__(self, path, **others):
        self.path = path
        self.others = {k: v for k, v in others.items() if v is not None}

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if isinstance(exc, InputError) and exc.path is None and self.path is not None:
            more = "; ".join(f"{k} {os.fspath(v)}" for k, v in self.others.items())
            raise type(exc)(str(exc) + (f" ({more})" if more else ""),
                            path=os.fspath(self.path)) from exc
        return False


def _same_source(frame, infile, **others) -> None:
    """Every calibration input of a frame is of its camera (sky, flux calibration: and
    of its exposure); both files are named otherwise."""
    from ..io.util import check_same_source

    for kind, (obj, path) in others.items():
        if obj is not None:
            keys = ("CAMERA",) if kind == "fiberflat" else ("CAMERA", "EXPID", "NIGHT")
            check_same_source(frame.meta, infile, obj.meta, path, keys, kind)


def _int_keyword(meta, key, path, default):
    """An integer header keyword (``default`` when absent); InputError naming it otherwise."""
    v = (meta or {}).get(key)
    if v is None:
        return default
    try:
        if isinstance(v, bool) or float(v) != int(float(v)):
            raise ValueError
        return int(float(v))
    except (TypeError, ValueError):
        raise InputError(f"{key}={v!r} is not an integer", path=os.fspath(path),
                         keyword=key) from None


def _camera(meta, path):
    cam = (meta or {}).get("CAMERA")
    if not cam:
        raise InputError("header has no CAMERA", path=path, keyword="CAMERA")
    return str(cam).strip().lower()


@nvtx_range("compute_fiberflat_file")
def compute_fiberflat_file(infile, outfile, nsig=10.0, acc=5.0e-4, smoothing_resolution=5.0,
                           cosmics_nsig=0.0, backend="auto") -> str:
    """``desi_compute_fiberflat -i FRAME -o FIBERFLAT`` (options ``--nsig --acc
    --smoothing-resolution``).

    Backends: numpy, cupy (``backend``); file I/O on the host.
    """
    from ..io.fiberflat import write_fiberflat
    from ..io.frame import read_frame
    from .fiberflat import compute_fiberflat

    if cosmics_nsig and cosmics_nsig > 0:
        raise InputError("1-D cosmic-ray rejection (--cosmics-nsig) is not implemented")
    frame = read_frame(infile)
    with _named(infile):
        ff = compute_fiberflat(frame, nsig_clipping=nsig, accuracy=acc,
                               smoothing_res=smoothing_resolution, backend=backend)
    return write_fiberflat(outfile, ff, header=frame.meta)


def average_fiberflat_file(infiles, outfile, program=None, backend="auto") -> str:
    """``desi_average_fiberflat -i FF1 FF2 ... -o OUT [--program P]``.

    Backends: numpy, cupy (``backend``); file I/O on the host.
    """
    from ..io.fiberflat import read_fiberflat, write_fiberflat
    from .fiberflat import average_fiberflat

    flats = [read_fiberflat(f) for f in infiles]
    if program is not None:
        flats = [f for f in flats if f.meta.get("PROGRAM") == program]
    return write_fiberflat(outfile, average_fiberflat(flats, backend=backend))


def autocalib_fiberflat_file(infiles, prefix=None, night=None, arm=None, outdir=".",
                             backend="auto") -> list[str]:
    """``desi_autocalib_fiberflat -i FF... [--prefix P | --night N --arm A]``.

    Writes ``{prefix}{spectrograph}-autocal.fits`` per spectrograph, or
    ``fiberflatnight-{arm}{spectrograph}-{night}.fits`` in ``outdir``.

    Backends: numpy, cupy (``backend``); file I/O on the host.
    """
    from ..io.fiberflat import read_fiberflat, write_fiberflat
    from .fiberflat import autocalib_fiberflat

    if prefix is None and (night is None or arm is None):
        raise InputError("need --prefix, or --night and --arm, for the output file names")
    flats = [read_fiberflat(f) for f in infiles]
    cams = np.array([_camera(f.meta, p) for f, p in zip(flats, infiles)])
    expid = np.array([_int_keyword(f.meta, "EXPID", p, -1) for f, p in zip(flats, infiles)])
    common = None
    for c in np.unique(cams):
        e = expid[cams == c]
        common = e if common is None else np.intersect1d(common, e)
    flats = [f for f, e in zip(flats, expid) if e in set(common.tolist())]
    out = []
    for sp, ff in sorted(autocalib_fiberflat(flats, backend=backend).items()):
        name = f"{prefix}{sp}-autocal.fits" if prefix is not None else os.path.join(
            outdir, calib_filename("fiberflatnight", f"{arm}{sp}", night=night))
        out.append(write_fiberflat(name, ff))
    return out


@nvtx_range("compute_sky_file")
def compute_sky_file(infile, fiberflat, outfile, cosmics_nsig=0.0, no_extra_variance=False,
                     exclude_sky_targetids=None, override_sky_targetids=None,
                     backend="auto", *, adjust_wavelength=False, adjust_lsf=False,
                     adjust_with_more_fibers=False, fit_offsets=False, save_adjustments=None,
                     pca_corr=None, skygradpca=None, tpcorrparam=None) -> str:
    """``desi_compute_sky -i FRAME --fiberflat FF -o SKY`` (default method).

    desispec's ``--adjust-wavelength --adjust-lsf --adjust-with-more-fibers --fit-offsets
    --save-adjustments --pca-corr --skygradpca --tpcorrparam`` are named (so that a
    launcher checks option names against this signature) and refused when given.

    Backends: numpy, cupy (``backend``); file I/O on the host.
    """
    unsupported = dict(adjust_wavelength=adjust_wavelength, adjust_lsf=adjust_lsf,
                       adjust_with_more_fibers=adjust_with_more_fibers, fit_offsets=fit_offsets,
                       save_adjustments=save_adjustments, pca_corr=pca_corr,
                       skygradpca=skygradpca, tpcorrparam=tpcorrparam)
    from ..io.fiberflat import read_fiberflat
    from ..io.frame import read_frame
    from ..io.sky import write_sky
    from .fiberflat import apply_fiberflat
    from .sky import compute_sky

    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise InputError(f"options not implemented: {', '.join(bad)}")
    if cosmics_nsig and cosmics_nsig > 0:
        raise InputError("1-D cosmic-ray rejection (--cosmics-nsig) is not implemented")
    frame = read_frame(infile)
    ff = read_fiberflat(fiberflat)
    _same_source(frame, infile, fiberflat=(ff, fiberflat))
    with _named(infile, fiberflat=fiberflat):
        fr = apply_fiberflat(frame, ff, backend=backend)
        sky = compute_sky(fr, add_variance=not no_extra_variance,
                          exclude_sky_targetids=exclude_sky_targetids,
                          override_sky_targetids=override_sky_targetids, backend=backend)
    meta = dict(frame.meta, IN_FRAME=_short(infile), FIBERFLT=_short(fiberflat))
    return write_sky(outfile, sky, header=meta)


def _kw(meta, key):
    v = (meta or {}).get(key)
    v = None if v is None else str(v).strip().strip("'\"").strip().lower()
    return v or None


def _exposure(meta, path):
    """(camera, NIGHT, EXPID) of a frame or sky header (NIGHT/EXPID None when absent)."""
    return _camera(meta, path), _kw(meta, "NIGHT"), _kw(meta, "EXPID")


def _matches(a, b) -> bool:
    return a[0] == b[0] and all(x is None or y is None or x == y for x, y in zip(a[1:], b[1:]))


def _pair_inputs(frames, frame_files, skies, sky_files, flats, flat_files):
    """Frames, skies and fiber flats of fit-stdstars, checked against each other.

    Each frame gets the sky of its camera and exposure (not the n-th sky given) and a
    fiber flat of its camera; a frame given twice, a frame without its sky or flat, or a
    sky that belongs to no frame is an :class:`InputError` naming the files. Returns
    ``({camera: [frames]}, {camera: [skies]}, {camera: fiberflat})``, skies aligned with
    frames. Host only.
    """
    keys = [_exposure(fr.meta, p) for fr, p in zip(frames, frame_files)]
    for i, k in enumerate(keys):
        for j in range(i):
            if keys[j] == k:
                raise InputError(f"frame of camera {k[0]}, exposure {k[2]} given twice "
                                 f"(also {os.fspath(frame_files[j])})",
                                 path=os.fspath(frame_files[i]))
    sky_keys = [_exposure(sk.meta, p) for sk, p in zip(skies, sky_files)]
    used, fr, sk = set(), {}, {}
    for frame, path, k in zip(frames, frame_files, keys):
        hits = [j for j, sk_k in enumerate(sky_keys) if j not in used and _matches(k, sk_k)]
        if not hits:
            raise InputError(f"no sky model of camera {k[0]}, exposure {k[2]} among "
                             f"--skymodels ({', '.join(map(_short, sky_files))})",
                             path=os.fspath(path), keyword="CAMERA")
        used.add(hits[0])
        fr.setdefault(k[0], []).append(frame)
        sk.setdefault(k[0], []).append(skies[hits[0]])
    for j, p in enumerate(sky_files):
        if j not in used:
            raise InputError(f"sky model of camera {sky_keys[j][0]}, exposure "
                             f"{sky_keys[j][2]} belongs to none of the --frames "
                             f"({', '.join(map(_short, frame_files))})", path=os.fspath(p))
    ffs = {}
    for ff, p in zip(flats, flat_files):
        ffs.setdefault(_camera(ff.meta, p), ff)  # desispec: the first flat of a camera
    for cam in fr:
        if cam not in ffs:
            raise InputError(f"no fiber flat of camera {cam} among --fiberflats "
                             f"({', '.join(map(_short, flat_files))})",
                             path=os.fspath(frame_files[keys.index(next(
                                 k for k in keys if k[0] == cam))]), keyword="CAMERA")
    return fr, sk, ffs


def _txt(v) -> str:
    return (v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)).strip().lower()


def _check_models(models, path, frame, infile) -> None:
    """The standard-star models are of the frame's exposure and fibers (both files named).

    The exposure is looked up in the models' INPUT_FRAMES (NIGHT, EXPID, CAMERA), or in
    their header without it; every model FIBER must be a fiber of the frame's fibermap.
    Host only.
    """
    inp = models.input_frames
    names = () if inp is None else (inp.dtype.names or ())
    cam, night, expid = _exposure(frame.meta, infile)
    if "EXPID" in names and expid is not None:
        rows = [(_txt(r["EXPID"]), _txt(r["NIGHT"]) if "NIGHT" in names else None,
                 _txt(r["CAMERA"]) if "CAMERA" in names else None) for r in inp]
        if not any(e == expid and (n is None or night is None or n == night) for e, n, _ in rows):
            raise InputError(f"exposure {expid} is not among the INPUT_FRAMES of the "
                             f"stdstars file {os.fspath(path)} (exposures "
                             f"{sorted({e for e, _, _ in rows})}): they do not belong "
                             "together", path=os.fspath(infile), keyword="EXPID")
        spectro = {c[1:] for _, _, c in rows if c}
        if spectro and cam[1:] not in spectro:
            raise InputError(f"camera {cam} is of another spectrograph than the stdstars "
                             f"file {os.fspath(path)} (cameras "
                             f"{sorted({c for _, _, c in rows})})", path=os.fspath(infile),
                             keyword="CAMERA")
    else:
        from ..io.util import check_same_source

        check_same_source(frame.meta, infile, models.meta, path, ("EXPID", "NIGHT"),
                          "stdstars file")
    fm = frame.fibermap
    if fm is not None and "FIBER" in (fm.dtype.names or ()):
        extra = sorted(set(np.asarray(models.fibers).tolist())
                       - set(np.asarray(fm["FIBER"]).tolist()))
        if extra:
            raise InputError(f"the stdstars file {os.fspath(path)} has models of fibers "
                             f"{extra[:5]}{' ...' if len(extra) > 5 else ''} that are not in "
                             "this frame's FIBERMAP", path=os.fspath(infile), hdu="FIBERMAP")


@nvtx_range("fit_stdstars_file")
def fit_stdstars_file(frames, skymodels, fiberflats, outfile, starmodels=None,
                      delta_color=0.2, min_blue_snr=4.0, color=None, z_max=0.008,
                      z_res=0.00002, template_error=0.1, maxstdstars=30, std_targetids=None,
                      apply_sky_throughput_correction=False, backend="auto") -> str:
    """``desi_fit_stdstars --frames ... --skymodels ... --fiberflats ... -o STDSTARS``.

    Backends: numpy, cupy (``backend``); file I/O on the host.
    """
    from ..io.fiberflat import read_fiberflat
    from ..io.fluxcalib import write_stdstar_models
    from ..io.frame import read_frame
    from ..io.sky import read_sky
    from .stdstars import fit_stdstars

    fr, sk, ffs = _pair_inputs([read_frame(f) for f in frames], frames,
                               [read_sky(f) for f in skymodels], skymodels,
                               [read_fiberflat(f) for f in fiberflats], fiberflats)
    with _named(frames[0] if len(frames) == 1 else None):
        models = fit_stdstars(fr, sk, ffs, templates=starmodels, delta_color=delta_color,
                              min_blue_snr=min_blue_snr, color=color or "G-R", z_max=z_max,
                              z_res=z_res, template_error=template_error,
                              maxstdstars=maxstdstars, std_targetids=std_targetids,
                              apply_sky_throughput_correction=apply_sky_throughput_correction,
                              backend=backend)
    return write_stdstar_models(outfile, models)


def _select_models(models, frame, chi2cut, chi2cut_nsig, delta_color_cut, min_color, color,
                   path):
    """desispec's cuts on the star models (χ², colour vs photometry); returns a row mask."""
    meta = models.metadata
    names = meta.dtype.names
    ok = np.ones(len(meta), bool)
    if chi2cut > 0:
        ok &= np.asarray(meta["CHI2DOF"]) < chi2cut
    color = color or ("G-R" if "MODEL_G-R" in names else None)
    if color is None or f"MODEL_{color}" not in names:
        raise BadDataError("star models have no MODEL_G-R column", path=path, hdu="METADATA")
    if delta_color_cut > 0:
        fm = frame.fibermap
        ebv = np.asarray(fm["EBV"], np.float64)[np.asarray(models.fibers) % 500] \
            if "EBV" in fm.dtype.names else np.zeros(len(meta))
        ok &= np.abs(np.asarray(meta[f"MODEL_{color}"]) - np.asarray(meta[f"DATA_{color}"])) \
            < delta_color_cut + 0.2 * ebv
    if min_color is not None:
        ok &= np.asarray(meta[f"DATA_{color}"]) > min_color
    if chi2cut_nsig > 0:
        c = np.asarray(meta["CHI2DOF"])
        ok &= c <= np.median(c) + chi2cut_nsig * np.std(c)
    if not ok.any():
        raise BadDataError("selection cuts discarded all standard stars", path=path)
    return ok


@nvtx_range("compute_fluxcalib_file")
def compute_fluxcalib_file(infile, fiberflat, sky, models, outfile, chi2cut=0.0,
                           chi2cut_nsig=0.0, color=None, min_color=None, delta_color_cut=0.2,
                           nostdcheck=False, highest_throughput=0, seeing_fwhm=1.1,
                           nsig_flux_scale=3.0, apply_sky_throughput_correction=False,
                           selected_calibration_stars=None, backend="auto") -> str:
    """``desi_compute_fluxcalibration -i FRAME --fiberflat FF --sky SKY --models STD -o OUT``.

    Backends: numpy, cupy (``backend``); file I/O on the host.
    """
    from dataclasses import replace

    from ..io.fiberflat import read_fiberflat
    from ..io.fluxcalib import read_stdstar_models, write_flux_calibration
    from ..io.frame import read_frame
    from ..io.sky import read_sky
    from .fiberflat import apply_fiberflat
    from .fibers import fiberbitmasked, is_std_star
    from .fluxcalib import compute_flux_calibration
    from .sky import subtract_sky

    frame = read_frame(infile)
    cam = _camera(frame.meta, infile)
    ivar, mask = fiberbitmasked(frame.ivar, frame.mask, frame.fibermap, "flux", cam[0])
    frame = replace(frame, ivar=ivar, mask=mask)
    ffo, skyo = read_fiberflat(fiberflat), read_sky(sky)
    _same_source(frame, infile, fiberflat=(ffo, fiberflat), sky=(skyo, sky))
    with _named(infile, fiberflat=fiberflat, sky=sky):
        frame = apply_fiberflat(frame, ffo, backend=backend)
        frame = subtract_sky(frame, skyo,
                             apply_throughput_correction=apply_sky_throughput_correction,
                             backend=backend)
    m = read_stdstar_models(models)
    _check_models(m, models, frame, infile)
    ok = np.ones(len(m.metadata), bool)
    nsig_fs = nsig_flux_scale
    if selected_calibration_stars is not None:
        from ..io.util import open_fits, read_table_hdu

        with open_fits(selected_calibration_stars) as fx:
            tab = read_table_hdu(fx, 1, selected_calibration_stars)
        ok &= np.isin(m.fibers, np.asarray(tab["FIBER"])[np.asarray(tab["VALID"]) == 1])
        delta_color_cut, min_color, chi2cut_nsig, nsig_fs = 0, None, 0, 0.0
    ok &= _select_models(m, frame, chi2cut, chi2cut_nsig, delta_color_cut, min_color, color,
                         models)
    fibers = np.asarray(m.fibers)[ok] % 500
    if not nostdcheck:
        std = np.flatnonzero(is_std_star(frame.fibermap))
        if not np.isin(fibers, std).all():
            raise BadDataError(f"model fibers {sorted(set(fibers) - set(std))} are not "
                               "standard stars in the frame's fibermap", path=infile,
                               hdu="FIBERMAP")
    with _named(infile):
        fc = compute_flux_calibration(frame, m.wave, m.flux[ok], fibers,
                                      highest_throughput_nstars=highest_throughput,
                                      exposure_seeing_fwhm=seeing_fwhm,
                                      stdcheck=not nostdcheck, nsig_flux_scale=nsig_fs,
                                      backend=backend)
    meta = dict(frame.meta, IN_FRAME=_short(infile), IN_SKY=_short(sky),
                FIBERFLT=_short(fiberflat), STDMODEL=_short(models))
    return write_flux_calibration(outfile, fc, header=meta)


@nvtx_range("process_exposure_file")
def process_exposure_file(infile, outfile, fiberflat=None, sky=None, calib=None,
                          cosmics_nsig=0.0, apply_sky_throughput_correction=False,
                          no_sky_line_throughput_correction=False, no_zero_ivar=False,
                          backend="auto") -> str:
    """``desi_process_exposure -i FRAME [--fiberflat FF] [--sky SKY] [--calib CAL] -o OUT``.

    With ``calib`` the output is a cframe (10⁻¹⁷ erg/s/cm²/Å); without, a frame in
    electron/Å (desispec labels both with the calibrated unit).

    Backends: numpy, cupy (``backend``); file I/O on the host.
    """
    from ..io.cframe import write_cframe
    from ..io.fiberflat import read_fiberflat
    from ..io.fluxcalib import read_flux_calibration
    from ..io.frame import read_frame, write_frame
    from ..io.sky import read_sky
    from .cframe import process_exposure

    frame = read_frame(infile)
    ffo = None if fiberflat is None else read_fiberflat(fiberflat)
    skyo = None if sky is None else read_sky(sky)
    calo = None if calib is None else read_flux_calibration(calib)
    _same_source(frame, infile, fiberflat=(ffo, fiberflat), sky=(skyo, sky),
                 calib=(calo, calib))
    with _named(infile, fiberflat=fiberflat, sky=sky, calib=calib):
        out = process_exposure(frame, fiberflat=ffo, sky=skyo, calib=calo,
                               cosmics_nsig=cosmics_nsig,
                               apply_sky_throughput_correction=apply_sky_throughput_correction,
                               no_sky_line_throughput_correction=(
                                   no_sky_line_throughput_correction),
                               no_zero_ivar=no_zero_ivar, backend=backend)
    meta = dict(out.meta, IN_FRAME=_short(infile), FIBERFLT=_short(fiberflat),
                IN_SKY=_short(sky), IN_CALIB=_short(calib))
    if calib is not None:
        return write_cframe(outfile, out, meta=meta)
    return write_frame(outfile, out, meta=meta)
