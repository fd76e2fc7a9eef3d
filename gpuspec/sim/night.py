"""Orchestration: simulate a DESI-like night and write it in the documented layout.

::

    D/raw/{NIGHT}/{EXPID:08d}/desi-{EXPID:08d}.fits.fz       raw, one HDU per camera
    D/raw/{NIGHT}/{EXPID:08d}/fibermap-{EXPID:08d}.fits      fibermap
                                                              (science and flat-lamp exposures)
    D/calib/{bias,dark,pixflat,mask}-{camera}.fits           calibration images
    D/psf/psf-{camera}.fits                                   Gauss–Hermite PSF per camera
    D/truth/truth-{EXPID:08d}.fits                            true spectra per camera
    D/simulation.json                                         parameters and files

See ``docs/simulator.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from typing import Iterable, Mapping

import numpy as np

from .. import __version__, backend
from ..camword import cameras_to_camword
from ..errors import InputError
from ..io.calib import write_bias, write_dark, write_mask, write_pixflat
from ..io.fibermap import write_fibermap
from ..io.raw import write_raw
from ..io.util import atomic_output
from ..psf import read_psf, write_psf
from ..profiling import nvtx_range
from .camera import setup_camera, simulate_exposure
from .cameras import PRODUCTION_WAVE, WAVE_STEP, parse_cameras
from .fibermap import make_fibermap, make_flat_fibermap
from .instrument import AIRMASS
from .geometry import AMPS
from .psfs import camera_psf, default_template_path, load_template
from .spectra import exposure_conditions, make_sky
from .targets import Targets, Tile, make_targets
from .truth import write_truth

__all__ = ["simulate_night", "DEFAULT_NIGHT", "DEFAULT_EXPID0", "layout"]

log = logging.getLogger(__name__)

from .defaults import (DEFAULT_EXPID0, DEFAULT_NFLAT, DEFAULT_NIGHT,  # noqa: E402
                       FLAT_EXPTIME)
_OVERHEAD_S = 180.0  # seconds between exposures (readout, slew)
_FLAT_OVERHEAD_S = 60.0  # seconds between flat-lamp exposures


def layout(outdir: str, night: int, expid: int | None = None, camera: str | None = None) -> dict:
    """Paths of a simulated night (see the module docstring).

    Backends: host only (NumPy).
    """
    d = {"simulation": os.path.join(outdir, "simulation.json")}
    if expid is not None:
        e = f"{expid:08d}"
        rawdir = os.path.join(outdir, "raw", str(night), e)
        d["raw"] = os.path.join(rawdir, f"desi-{e}.fits.fz")
        d["fibermap"] = os.path.join(rawdir, f"fibermap-{e}.fits")
        d["truth"] = os.path.join(outdir, "truth", f"truth-{e}.fits")
    if camera is not None:
        for k in ("bias", "dark", "pixflat", "mask"):
            d[k] = os.path.join(outdir, "calib", f"{k}-{camera}.fits")
        d["psf"] = os.path.join(outdir, "psf", f"psf-{camera}.fits")
    return d


def _dateobs(night: int, index: int, exptime: float, flat: bool = False) -> tuple[str, float]:
    """DATE-OBS (UTC, ISO) and MJD-OBS of exposure ``index`` of ``night``.

    Science exposures from 03:00 UTC after the night's date (20:00 MST), flat-lamp
    exposures in the afternoon before, from 00:00 UTC (17:00 MST).
    """
    try:
        d = _dt.datetime.strptime(str(int(night)), "%Y%m%d")
    except ValueError:
        raise InputError(f"night must be YYYYMMDD, got {night!r}") from None
    start, gap = (0, _FLAT_OVERHEAD_S) if flat else (3, _OVERHEAD_S)
    t = d + _dt.timedelta(days=1, hours=start) + _dt.timedelta(seconds=index * (exptime + gap))
    mjd = (t - _dt.datetime(1858, 11, 17)).total_seconds() / 86400.0
    return t.strftime("%Y-%m-%dT%H:%M:%S.000"), mjd


def _wave_ranges(cameras, wave_ranges, psfs) -> dict:
    out = {}
    given = {}
    if wave_ranges is not None:
        if isinstance(wave_ranges, Mapping):
            given = {str(k).lower(): v for k, v in wave_ranges.items()}
        else:
            lo, hi = wave_ranges
            given = {b: (lo, hi) for b in "brz"}
    for cam in cameras:
        band = cam[0]
        rng = given.get(cam, given.get(band, PRODUCTION_WAVE[band]))
        try:
            lo, hi = float(rng[0]), float(rng[1])
        except Exception:
            raise InputError(f"wavelength range for {cam} must be (wmin, wmax), got {rng!r}") \
                from None
        psf = psfs[band]
        if not (psf.wmin <= lo < hi <= psf.wmax):
            raise InputError(f"wavelength range {lo}-{hi} for camera {cam} must satisfy "
                             f"{psf.wmin:.1f} <= wmin < wmax <= {psf.wmax:.1f} (PSF domain)")
        out[cam] = (lo, hi)
    return out


def _targets_table(targets: dict[int, Targets], tile: Tile) -> np.ndarray:
    """The TARGETS table of the truth files (one row per simulated fiber)."""
    from .stars import star_library

    lib = star_library()
    rows = []
    for p in sorted(targets):
        t = targets[p]
        a = np.zeros(t.nspec, dtype=[("FIBER", "i4"), ("PETAL_LOC", "i2"), ("TARGETID", "i8"),
                                     ("TRUETYPE", "S3"), ("OBJTYPE", "S3"), ("TRUEZ", "f8"),
                                     ("MAG_R", "f4"), ("FLUX_G", "f4"), ("FLUX_R", "f4"),
                                     ("FLUX_Z", "f4"), ("FIBER_THRU", "f8"),
                                     ("TEMPLATEID", "i4"), ("TEFF", "f4"), ("LOGG", "f4"),
                                     ("FEH", "f4"), ("VRAD", "f4")])
        a["FIBER"] = t.fiber
        a["PETAL_LOC"] = p
        a["TARGETID"] = t.targetid(tile.tileid)
        a["TRUETYPE"] = t.kind
        a["OBJTYPE"] = np.where(t.kind == "SKY", "SKY", "TGT")
        a["TRUEZ"] = t.z
        a["MAG_R"] = t.mag_r
        a["FLUX_G"], a["FLUX_R"], a["FLUX_Z"] = t.flux_g, t.flux_r, t.flux_z
        a["FIBER_THRU"] = t.fiber_thru
        a["TEMPLATEID"] = t.template
        std = t.template >= 0
        a["TEFF"] = t.teff
        a["LOGG"] = np.where(std, lib.logg[np.maximum(t.template, 0)], 0.0)
        a["FEH"] = np.where(std, lib.feh[np.maximum(t.template, 0)], 0.0)
        a["VRAD"] = t.vrad
        rows.append(a)
    return np.concatenate(rows)


def _check(nspec, nexp, exptime, seed, expid0, night, nflat=0, nsky=None, nstd=None):
    if not isinstance(nspec, (int, np.integer)) or nspec < 25 or nspec > 500 or nspec % 25:
        raise InputError(f"nspec must be a multiple of 25 between 25 and 500, got {nspec!r}")
    if int(nexp) < 1:
        raise InputError(f"nexp must be >= 1, got {nexp!r}")
    if int(nflat) < 0:
        raise InputError(f"the number of flat exposures must be >= 0, got {nflat!r}")
    if int(expid0) - int(nflat) < 0:
        raise InputError(f"flat exposures take the EXPIDs before the first science one: "
                         f"expid {expid0} leaves no room for {nflat} flats")
    for name, v in (("nsky", nsky), ("nstd", nstd)):
        if v is not None and not 0 <= int(v) <= nspec:
            raise InputError(f"{name} must be between 0 and nspec={nspec}, got {v!r}")
    if (nsky or 0) + (nstd or 0) > nspec:
        raise InputError(f"nsky + nstd = {(nsky or 0) + (nstd or 0)} exceeds nspec={nspec}")
    if not float(exptime) > 0:
        raise InputError(f"exptime must be > 0 s, got {exptime!r}")
    if int(seed) < 0:
        raise InputError(f"seed must be >= 0, got {seed!r}")
    if int(expid0) < 0:
        raise InputError(f"expid must be >= 0, got {expid0!r}")
    _dateobs(night, 0, float(exptime))  # NIGHT must be a valid YYYYMMDD date


def _write_psfs(outdir, night, cams, band_psf_model, template_path, files, rel) -> dict:
    """Write each camera's PSF; return the PSFs read back per camera.

    Rendering uses what was written (read back), so the simulation is exactly the files.
    """
    psfs = {}
    for cam in cams:
        p = layout(outdir, night, camera=cam)["psf"]
        write_psf(p, band_psf_model[cam[0]], extra_meta={"CAMERA": cam, "SIMTMPL":
                                                          os.path.basename(template_path)})
        files.append(rel(p))
        psfs[cam] = read_psf(p)
    return psfs


def _write_calibrations(outdir, night, cam, setup, files, rel) -> None:
    """The bias, dark, pixflat and mask of one camera, as simulated."""
    lay = layout(outdir, night, camera=cam)
    calhdr = {"CAMERA": cam, "NIGHT": night, "DETECTOR": f"SIM-{cam}"}
    write_bias(lay["bias"], setup.calib.bias, calhdr)
    write_dark(lay["dark"], setup.calib.dark, calhdr)
    write_pixflat(lay["pixflat"], setup.calib.pixflat, calhdr)
    write_mask(lay["mask"], setup.calib.mask, calhdr)
    files += [rel(lay[k]) for k in ("bias", "dark", "pixflat", "mask")]


def _camera_header(cam, setup, night, expid, exptime, date, tile, flat=False) -> dict:
    """Raw camera-HDU header of one exposure (exposure keywords, geometry, electronics).

    Flat-lamp exposures have OBSTYPE FLAT, FLAVOR flat and no tile keywords.
    """
    dateobs, mjd = date
    hdr = {"CAMERA": cam, "DETECTOR": f"SIM-{cam}", "FEEVER": "SIM",
           "SPECGRPH": int(cam[1]), "NIGHT": night, "EXPID": expid, "EXPTIME": exptime,
           "DATE-OBS": dateobs, "MJD-OBS": round(mjd, 8)}
    if flat:
        hdr.update({"OBSTYPE": "FLAT", "FLAVOR": "flat"})
    else:
        hdr.update({"OBSTYPE": "SCIENCE", "FLAVOR": "science", "TILEID": tile.tileid,
                    "TILERA": tile.ra, "TILEDEC": tile.dec})
    hdr.update(setup.geom.header())
    hdr.update(setup.elec.header())
    return hdr


def _camera_info(setup, wave_range, psf) -> dict:
    """The ``camera_info`` entry of ``simulation.json`` for one camera."""
    g = setup.geom
    return {
        "wave_range": list(wave_range),
        "truth_wave": [float(setup.wave[0]), float(setup.wave[-1]), int(setup.wave.size)],
        "psf_domain": [float(psf.wmin), float(psf.wmax)],
        "ccd_shape": [g.ny, g.nx], "raw_shape": list(g.raw_shape),
        "npre": g.npre, "nover": g.nover, "norow": g.norow,
        "gain": setup.elec.gain, "rdnoise": setup.elec.rdnoise,
        "bias_level": setup.elec.offset,
        "n_hot": int(len(setup.calib.defects["hot_rate"])),
        "n_dead": int(len(setup.calib.defects["dead_pixels"])),
        "bad_column": [int(v) for v in setup.calib.defects["bad_column"]],
    }


def _simulate_camera(cam, p: dict, night_inputs: dict, raws, truths, files, rel):
    """Calibrations, then every exposure of one camera; returns (camera_info, timing)."""
    t0 = time.perf_counter()
    psf = night_inputs["psfs"][cam]
    setup = setup_camera(p["seed"], cam, psf, night_inputs["targets"][int(cam[1])],
                         night_inputs["sky"], night_inputs["ranges"][cam], p["full_size"],
                         p["exptime"], xp=p["xp"], flats=bool(night_inputs["flat_expids"]))
    _write_calibrations(p["outdir"], p["night"], cam, setup, files, rel)
    for e in night_inputs["flat_expids"] + night_inputs["expids"]:
        cond = night_inputs["conds"][e]
        flat = cond.get("obstype") == "FLAT"
        raw, truth = simulate_exposure(setup, p["seed"], e, cond)
        hdr = _camera_header(cam, setup, p["night"], e, cond.get("exptime", p["exptime"]),
                             night_inputs["dates"][e], p["tile"], flat=flat)
        raws[e][cam] = (raw.astype(np.uint16), hdr)
        t = {"wave": setup.wave, "dw": setup.dw, "fibermin": 500 * setup.petal,
             "phot": truth["phot"], "thru": setup.thru, "cosmics": truth["cosmics"],
             "saturated": truth["saturated"]}
        if flat:
            t["lamp"] = setup.lamp * cond["lamp_scale"]
        else:
            t.update(skyphot=truth["skyphot"], calib=setup.calibvec, objflux=setup.objflux,
                     skyflux=setup.skyflux * cond["sky_scale"])
        truths[e][cam] = t
    info = _camera_info(setup, night_inputs["ranges"][cam], psf)
    timing = dict(setup.timing, total_s=round(time.perf_counter() - t0, 3))
    log.info("simulated %s: %dx%d CCD, %d fibers x %d wavelengths, %.1f s", cam, setup.geom.ny,
             setup.geom.nx, p["nspec"], setup.wave.size, time.perf_counter() - t0)
    return info, timing


def _primary_header(p: dict, e: int, night_inputs: dict, raw_cams) -> dict:
    """Raw primary (SPEC) header of one exposure: science, or flat lamp (no tile)."""
    night, tile, seed = p["night"], p["tile"], p["seed"]
    dateobs, mjd = night_inputs["dates"][e]
    cond = night_inputs["conds"][e]
    hdr = {"EXPID": e, "NIGHT": night, "EXPTIME": cond.get("exptime", p["exptime"]),
           "DATE-OBS": dateobs, "MJD-OBS": round(mjd, 8)}
    if cond.get("obstype") == "FLAT":
        hdr.update({"OBSTYPE": "FLAT", "FLAVOR": "flat", "PROGRAM": "calib",
                    "SURVEY": "calib"})
    else:
        hdr.update({"OBSTYPE": "SCIENCE", "FLAVOR": "science", "PROGRAM": "dark",
                    "SURVEY": "main", "TILEID": tile.tileid, "TILERA": tile.ra,
                    "TILEDEC": tile.dec, "SKYRA": tile.ra, "SKYDEC": tile.dec,
                    "AIRMASS": AIRMASS})
    hdr.update({"INSTRUME": "DESI", "OBSERVAT": "KPNO", "DOSVER": "SIM", "SIMSEED": seed,
                "CAMWORD": cameras_to_camword(raw_cams.keys())})
    return hdr


def _write_exposure(p: dict, e: int, night_inputs: dict, raw_cams: dict, truth_cams: dict,
                    ttable, files, rel) -> None:
    """Raw file, fibermap and truth of one exposure (science or flat lamp)."""
    outdir, night, tile, seed = p["outdir"], p["night"], p["tile"], p["seed"]
    lay = layout(outdir, night, expid=e)
    _, mjd = night_inputs["dates"][e]
    cond = night_inputs["conds"][e]
    flat = cond.get("obstype") == "FLAT"
    primary = _primary_header(p, e, night_inputs, raw_cams)
    exptime = primary["EXPTIME"]
    write_raw(lay["raw"], raw_cams, primary)
    fmhdr = {"EXPID": e, "NIGHT": night, "EXPTIME": exptime,
             "SURVEY": primary["SURVEY"], "PROGRAM": primary["PROGRAM"]}
    if flat:
        fm = make_flat_fibermap(night_inputs["targets"], exptime)
    else:
        fm = make_fibermap(night_inputs["targets"], tile, seed, night, e, mjd, exptime)
        fmhdr.update({"TILEID": tile.tileid, "TILERA": tile.ra, "TILEDEC": tile.dec})
    write_fibermap(lay["fibermap"], fm, fmhdr)
    tmeta = {"NIGHT": night, "EXPID": e, "EXPTIME": exptime, "OBSTYPE": primary["OBSTYPE"],
             "SEED": seed, "DW": WAVE_STEP}
    if flat:
        tmeta["LAMPSCAL"] = cond["lamp_scale"]
    else:
        tmeta.update({"TILEID": tile.tileid, "SKYSCALE": cond["sky_scale"],
                      "TRANSP": cond["transparency"], "AIRMASS": AIRMASS})
    write_truth(lay["truth"], tmeta, ttable, truth_cams)
    files += [rel(lay["raw"]), rel(lay["fibermap"]), rel(lay["truth"])]


def _flat_conditions(seed: int, expid: int) -> dict:
    """Lamp brightness (1 ± 1 %, uniform) and exposure time of one flat-lamp exposure."""
    from .streams import stream

    return {"obstype": "FLAT", "exptime": FLAT_EXPTIME,
            "lamp_scale": float(stream(seed, "lamp", expid).uniform(0.99, 1.01))}


def _night_inputs(p: dict, cams, psfs, ranges) -> dict:
    """Targets per petal, sky, and per exposure: EXPIDs, conditions and dates."""
    expids = [p["expid0"] + i for i in range(p["nexp"])]
    flat_expids = [p["expid0"] - p["nflat"] + i for i in range(p["nflat"])]
    conds = {e: exposure_conditions(p["seed"], e) for e in expids}
    conds.update({e: _flat_conditions(p["seed"], e) for e in flat_expids})
    dates = {e: _dateobs(p["night"], i, p["exptime"]) for i, e in enumerate(expids)}
    dates.update({e: _dateobs(p["night"], i, FLAT_EXPTIME, flat=True)
                  for i, e in enumerate(flat_expids)})
    return {"psfs": psfs, "ranges": ranges,
            "targets": {pt: make_targets(p["seed"], pt, p["nspec"], p["tile"], nsky=p["nsky"],
                                         nstd=p["nstd"])
                        for pt in sorted({int(c[1]) for c in cams})},
            "sky": make_sky(p["seed"]), "expids": expids, "flat_expids": flat_expids,
            "conds": conds, "dates": dates}


def _write_simulation_json(p: dict, cams, night_inputs, ranges, template_path, caminfo,
                           files, timing, backend_name) -> dict:
    """``simulation.json``: parameters, per-camera geometry, relative file paths, timings."""
    expids, conds, tile = night_inputs["expids"], night_inputs["conds"], p["tile"]
    info = {
        "gpuspec_version": __version__,
        "seed": p["seed"], "night": p["night"], "expids": expids, "cameras": cams,
        "nspec": p["nspec"], "nexp": p["nexp"], "exptime": p["exptime"],
        "flat_expids": night_inputs["flat_expids"], "nflat": p["nflat"],
        "flat_exptime": FLAT_EXPTIME, "nsky": p["nsky"], "nstd": p["nstd"],
        "airmass": AIRMASS,
        "full_size": bool(p["full_size"]),
        "wave_step": WAVE_STEP, "backend": backend.resolve(backend_name),
        "wave_ranges": {c: [ranges[c][0], ranges[c][1], WAVE_STEP] for c in cams},
        "tile": {"tileid": tile.tileid, "ra": tile.ra, "dec": tile.dec},
        "template_psf": os.path.abspath(template_path),
        "conditions": {str(e): {k: conds[e][k] for k in ("sky_scale", "transparency")}
                       for e in expids},
        "flat_conditions": {str(e): {"lamp_scale": conds[e]["lamp_scale"]}
                            for e in night_inputs["flat_expids"]},
        "camera_info": caminfo, "amps": list(AMPS),
        "files": files, "timing": timing,
    }
    sim_path = layout(p["outdir"], p["night"])["simulation"]
    with atomic_output(sim_path) as tmp:
        with open(tmp, "w") as fh:
            json.dump(info, fh, indent=1)
    return info


@nvtx_range("simulate_night")
def simulate_night(outdir: str, cameras: str | Iterable[str] = "b0,r0,z0", nspec: int = 50,
                   nexp: int = 1, seed: int = 1, night: int = DEFAULT_NIGHT,
                   expid0: int = DEFAULT_EXPID0, full_size: bool = False,
                   wave_ranges=None, exptime: float = 900.0, backend_name: str = "auto",
                   tile: Tile | None = None, template: str | None = None,
                   nflat: int = DEFAULT_NFLAT, nsky: int | None = None,
                   nstd: int | None = None) -> dict:
    """Simulate a night of DESI-like exposures and write them under ``outdir``.

    Parameters
    ----------
    outdir : str
        Output folder (created); see :func:`layout` for the files.
    cameras : str or list of str
        Camword (``"a0"``) or camera list (``"b0,r0,z0"``, ``["b0", "r0"]``).
    nspec : int
        Fibers 0..nspec-1 of each petal are lit (a multiple of 25, ≤ 500).
    nexp : int
        Number of exposures (EXPIDs ``expid0 … expid0+nexp-1``), same tile and targets.
    seed : int
        Random seed; outputs are identical for identical arguments and backend.
    night : int
        NIGHT (YYYYMMDD).
    expid0 : int
        First EXPID.
    full_size : bool
        Full 4128 × 4114 trimmed CCDs; otherwise a crop anchored at pixel (0, 0)
        covering the lit fibers and the wavelength range (+16 px margin).
    wave_ranges : (wmin, wmax) or {band or camera: (wmin, wmax)}, optional
        Wavelength range per band, default the production grids b 3600–5800,
        r 5760–7620, z 7520–9824 Å. Sets the cropped image rows; light of all
        wavelengths that reach the image is rendered.
    exptime : float
        Exposure time in seconds.
    backend_name : {"auto", "numpy", "cupy"}
        Where the PSF rendering runs (random draws are always on the host).
    tile : Tile, optional
        Tile pointing (default TILEID 1000 at RA 150.1, Dec 2.2).
    template : str, optional
        Template PSF file (default: the real r0 PSF of shared/reference).
    nflat : int
        Flat-lamp exposures (OBSTYPE FLAT, 120 s) of the night, EXPIDs
        ``expid0-nflat … expid0-1``, taken before the science exposures.
    nsky, nstd : int, optional
        Sky fibers and standard stars per petal among the ``nspec`` lit fibers
        (default 2 and 1 per 25-fiber bundle: 40 and 20 per 500 fibers).

    Returns
    -------
    dict
        The content of ``simulation.json`` (parameters, per-camera geometry,
        relative file paths, timings) plus ``outdir``.

    Notes
    -----
    Backends: numpy, cupy for the PSF rendering (``backend_name``); the rest is host
    NumPy and file I/O.
    """
    t_start = time.perf_counter()
    _check(nspec, nexp, exptime, seed, expid0, night, nflat, nsky, nstd)
    outdir = os.fspath(outdir)
    p = {"outdir": outdir, "nspec": int(nspec), "nexp": int(nexp), "seed": int(seed),
         "night": int(night), "expid0": int(expid0), "exptime": float(exptime),
         "nflat": int(nflat), "nsky": None if nsky is None else int(nsky),
         "nstd": None if nstd is None else int(nstd),
         "full_size": full_size, "tile": tile or Tile(), "xp": backend.get_xp(backend_name)}
    cams = parse_cameras(cameras, order="petal")
    os.makedirs(outdir, exist_ok=True)
    files: list[str] = []
    timing: dict = {}

    def rel(path):
        return os.path.relpath(path, outdir)

    template_path = template or default_template_path()
    tmpl = load_template(template_path)
    band_psf_model = {b: camera_psf(b + "0", tmpl) for b in sorted({c[0] for c in cams})}
    ranges = _wave_ranges(cams, wave_ranges, band_psf_model)   # checked before any write
    psfs = _write_psfs(outdir, p["night"], cams, band_psf_model, template_path, files, rel)
    night_inputs = _night_inputs(p, cams, psfs, ranges)
    expids = night_inputs["flat_expids"] + night_inputs["expids"]
    raws: dict = {e: {} for e in expids}
    truths: dict = {e: {} for e in expids}
    caminfo: dict = {}
    for cam in cams:
        caminfo[cam], timing[cam] = _simulate_camera(cam, p, night_inputs, raws, truths, files,
                                                     rel)

    t0 = time.perf_counter()
    ttable = _targets_table(night_inputs["targets"], p["tile"])
    for e in expids:
        _write_exposure(p, e, night_inputs, raws[e], truths[e], ttable, files, rel)
        raws[e] = truths[e] = None
    timing["write_exposures_s"] = round(time.perf_counter() - t0, 3)
    timing["total_s"] = round(time.perf_counter() - t_start, 3)
    info = _write_simulation_json(p, cams, night_inputs, ranges, template_path, caminfo, files,
                                  timing, backend_name)
    out = dict(info)
    out["outdir"] = os.path.abspath(outdir)
    return out
