"""``gpuspec proc``: reduce exposures of a night, desi_proc style (no YAML by hand).

::

    gpuspec proc -n 20250115 -e 100,101 --cameras a0123 \\
        --rawdir $DESI_SPECTRO_DATA --calib-dir $DESI_SPECTRO_CALIB --prod $SCRATCH/prod
    srun -n 8 gpuspec proc -n 20250115 --cameras a0123456789 --prod $SCRATCH/prod

builds a production manifest for the exposures (all exposures of the night when
``-e`` is not given), writes it to ``PROD/manifests/proc-{NIGHT}-{EXPIDS}.yaml``
and runs it exactly as ``gpuspec-run MANIFEST`` would (``--no-run``: only write
it and print the command). Defaults follow desi_proc's environment: raw data in
``$DESI_SPECTRO_DATA/{NIGHT}/{EXPID:08d}/``, calibrations in ``$DESI_SPECTRO_CALIB``,
the production in ``$DESI_SPECTRO_REDUX/$SPECPROD``.

Calibrations are found per camera and night by :mod:`gpuspec.preproc.calibfinder`
(the same lookup as ``gpuspec preproc``) and written into the manifest as
explicit files; one that cannot be found is an error unless ``--nobias`` (etc.)
says to skip it. The PSF: ``--psf TEMPLATE`` (``{camera}``, ``{night}``,
``{expid}``), else the production's nightly PSF
``calibnight/{NIGHT}/psfnight-{camera}-{NIGHT}.fits``, else ``psf-{camera}.fits``
or ``psf/psf-{camera}.fits`` in the calibration folder. Bundles: those holding
fibers of the fibermap (``--bundles`` to choose).

Flat-lamp and science exposures are handled the same way (the graph tells them
apart by the OBSTYPE of the raw header, :mod:`gpuspec.launch.calibgraph`). The
default steps are the calibrated chain (preproc … fiberflat, fiberflatnight, sky,
stdstars, fluxcalib, cframe, group, coadd; DESI's) when a fiber flat is available
for the night: a flat exposure among those reduced, ``--fiberflat TEMPLATE``, or
the production's ``calibnight/{NIGHT}/fiberflatnight-{camera}-{NIGHT}.fits`` of
every camera; otherwise the uncalibrated chain (group and coadd on frames), and
the command says so.

Host only (it writes a manifest; the run is gpuspec-run's).
"""

from __future__ import annotations

import argparse
import glob
import os
import re

import yaml

from ..cli import int_range
from ..errors import GpuspecError, InputError, UsageError

__all__ = ["add_parser", "build_proc_manifest", "find_night_exposures"]

_KINDS = ("bias", "dark", "pixflat", "mask")


def find_night_exposures(rawdir: str, night: int) -> list[int]:
    """Exposure ids with a ``desi-{EXPID:08d}.fits.fz`` (or ``.fits``) under ``rawdir/NIGHT``.

    Backends: host only.
    """
    out = []
    for path in glob.glob(os.path.join(rawdir, str(night), "*", "desi-*.fits*")):
        mt = re.search(r"(\d{8})/desi-(\d{8})\.fits(\.fz)?$", path.replace(os.sep, "/"))
        if mt and mt.group(1) == mt.group(2):
            out.append(int(mt.group(1)))
    return sorted(set(out))


def _raw_file(rawdir, night, expid):
    d = os.path.join(rawdir, str(night), f"{expid:08d}")
    for name in (f"desi-{expid:08d}.fits.fz", f"desi-{expid:08d}.fits"):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    raise InputError(f"no raw exposure {expid} of night {night}", path=os.path.join(
        d, f"desi-{expid:08d}.fits.fz"))


def _raw_cameras(rawfile: str) -> list[str]:
    from ..camword import is_camera
    from ..io.util import open_fits

    with open_fits(rawfile) as fx:
        names = [h.get_extname().strip().lower() for h in fx]
    return sorted(n for n in names if is_camera(n))


def _psf_template(args, prod, calib_dir) -> str:
    if args.psf:
        return os.path.abspath(args.psf)
    tries = [os.path.join(prod, "calibnight", "{night}", "psfnight-{camera}-{night}.fits")]
    if calib_dir:
        tries += [os.path.join(calib_dir, "psf-{camera}.fits"),
                  os.path.join(calib_dir, "psf", "psf-{camera}.fits")]
    return tries


def _pick_psf(tries, camera, night, expid):
    if isinstance(tries, str):
        return tries.format(camera=camera, night=night, expid=expid)
    for t in tries:
        p = t.format(camera=camera, night=night, expid=expid)
        if os.path.exists(p):
            return p
    raise InputError(f"no PSF for camera {camera} of night {night} (looked for "
                     f"{'; '.join(t.format(camera=camera, night=night, expid=expid) for t in tries)}); "
                     "give --psf TEMPLATE", keyword="--psf")


def _calibrations(args, calib_dir, camera, night, raw) -> dict:
    from ..preproc.calibfinder import find_calibration, raw_headers

    hdr = raw_headers(raw, camera)

    out = {}
    for kind in _KINDS:
        if getattr(args, f"no{kind}"):
            continue
        if calib_dir is None:
            raise InputError(f"no {kind} for camera {camera}: no calibration folder "
                             f"(--calib-dir or DESI_SPECTRO_CALIB); or --no{kind}",
                             keyword="--calib-dir")
        path, looked = find_calibration(kind, camera, calib_dir, night, hdr)
        if path is None:
            raise InputError(f"no {kind} calibration for camera {camera} night {night} in "
                             f"{calib_dir} (looked for {'; '.join(looked)}); give --no{kind} "
                             "to reduce without it", keyword="--calib-dir")
        out[kind] = path
    return out


def _bundles_with_fibers(fibermap: str, cameras) -> list[int]:
    """The bundles (of the manifest's default geometry) that hold fibers of the fibermap."""
    from .fibers import petal_rows
    from .manifest import SCHEMA

    geo = SCHEMA["steps"].schema["extract"].schema
    fpb, nbundles = geo["fibers_per_bundle"].default, geo["nbundles"].default
    n = max(petal_rows(fibermap, c).size for c in cameras)
    return list(range(min(nbundles, -(-n // fpb))))


_UNCALIBRATED = ["preproc", "extract", "frame", "group", "coadd"]


def _default_steps(args, prod, exposures) -> list[str]:
    """The calibrated chain when the night has a fiber flat (see the module doc), else not."""
    from .calibgraph import calib_path, exposure_obstype
    from .manifest import STEPS

    if args.fiberflat or any(exposure_obstype(e["raw"]) == "FLAT" for e in exposures):
        return list(STEPS)
    cams = {c for e in exposures for c in e["cameras"]}
    if all(os.path.exists(calib_path(prod, "fiberflatnight", args.night, camera=c))
           for c in cams):
        return list(STEPS)
    return list(_UNCALIBRATED)


def build_proc_manifest(args) -> str:
    """Write the manifest for the arguments of ``gpuspec proc``; return its path.

    Backends: host only.
    """
    from ..camword import cameras_to_camword, parse_cameras
    from .manifest import load_manifest

    rawdir = os.path.abspath(args.rawdir or os.environ.get("DESI_SPECTRO_DATA", "") or ".")
    calib_dir = args.calib_dir or os.environ.get("DESI_SPECTRO_CALIB")
    calib_dir = os.path.abspath(calib_dir) if calib_dir else None
    prod = args.prod or (os.path.join(os.environ["DESI_SPECTRO_REDUX"], os.environ["SPECPROD"])
                         if os.environ.get("DESI_SPECTRO_REDUX") and os.environ.get("SPECPROD")
                         else None)
    if prod is None:
        raise GpuspecError("no production folder: give --prod, or set DESI_SPECTRO_REDUX and "
                           "SPECPROD")
    prod = os.path.abspath(prod)
    wavelength = _wavelength(args)  # the options first: a usage error before any lookup
    expids = (_int_list(args.expid, "-e/--expid") if args.expid
              else find_night_exposures(rawdir, args.night))
    user_bundles = _int_list(args.bundles, "--bundles") if args.bundles else None
    if not expids:
        raise InputError(f"no exposure of night {args.night} under {rawdir}/{args.night}/")
    psf_tries = _psf_template(args, prod, calib_dir)
    exposures = []
    for expid in expids:
        raw = _raw_file(rawdir, args.night, expid)
        cams = parse_cameras(args.cameras) if args.cameras else _raw_cameras(raw)
        exposures.append(_exposure_entry(args, raw, expid, cams, calib_dir, psf_tries))
    steps = args.steps.split(",") if args.steps else _default_steps(args, prod, exposures)
    doc = {"production": prod, "registry": "desi", "backend": args.backend,
           "inputs": {"rawdir": rawdir, "cameras": cameras_to_camword(
               sorted({c for e in exposures for c in e["cameras"]})), "exposures": exposures},
           "steps": {s: {} for s in steps}, "run": {"progress_interval": 30.0}}
    if args.fiberflat:
        doc["inputs"]["fiberflat"] = os.path.abspath(args.fiberflat)
    if "extract" in steps:
        fm = exposures[0].get("fibermap") or os.path.join(
            os.path.dirname(exposures[0]["raw"]), f"fibermap-{expids[0]:08d}.fits")
        bundles = (user_bundles if user_bundles is not None else
                   _bundles_with_fibers(fm, exposures[0]["cameras"])
                   if os.path.exists(fm) else None)
        doc["steps"]["extract"] = {"bundles_per_task": args.bundles_per_task,
                                   "wavelength": wavelength}
        if bundles is not None:
            doc["steps"]["extract"]["bundles"] = bundles
    name = f"proc-{args.night}-{expids[0]:08d}" + (f"-{expids[-1]:08d}" if len(expids) > 1 else "")
    path = os.path.join(prod, "manifests", name + ".yaml")
    from ..io.util import atomic_output

    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"# written by: gpuspec proc -n {args.night} -e "
                    f"{','.join(map(str, expids))}\n" + yaml.safe_dump(doc, sort_keys=False))
        load_manifest(tmp)  # validate what was written (relative paths: same folder)
    return path


def _int_list(text, option: str) -> list[int]:
    try:
        return [int(e) for e in str(text).split(",") if e.strip()]
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated integers, got {text!r}") \
            from None


def _wavelength(args):
    """``default``, ``psf`` or {arm: [min, max, step]} from ``--wavelength``."""
    if not args.wavelength:
        return "default"
    if args.wavelength in (["default"], ["psf"]):
        return args.wavelength[0]
    out = {}
    for w in args.wavelength:
        try:
            arm, lo, hi, step = w.split(":")
            out[arm] = [float(lo), float(hi), float(step)]
        except ValueError:
            raise UsageError(f"--wavelength {w!r}: expected ARM:MIN:MAX:STEP, 'default' or "
                             "'psf'") from None
    return out


def _exposure_entry(args, raw, expid, cams, calib_dir, psf_tries) -> dict:
    e = {"night": int(args.night), "expid": int(expid), "cameras": list(cams)}
    steps = (args.steps or "preproc,extract").split(",")
    if "preproc" in steps:
        cal = {c: _calibrations(args, calib_dir, c, args.night, raw) for c in cams}
        e["calib"] = {k: {c: cal[c][k] for c in cams} for k in _KINDS if k in cal[cams[0]]}
    if "extract" in steps:
        e["psf"] = {c: _pick_psf(psf_tries, c, args.night, expid) for c in cams}
    e["raw"] = raw
    return e


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``gpuspec proc``.

    Backends: host only.
    """
    p = subparsers.add_parser("proc", help="reduce exposures of a night (desi_proc style): "
                                           "builds the manifest and runs it",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--night", type=int, required=True, help="YEARMMDD")
    p.add_argument("-e", "--expid", help="exposure id(s), comma list (default: all of the night)")
    p.add_argument("--cameras", help="camword or list (default: the cameras of the raw file)")
    p.add_argument("--rawdir", help="raw data root (default $DESI_SPECTRO_DATA)")
    p.add_argument("--calib-dir", help="calibration folder (default $DESI_SPECTRO_CALIB)")
    p.add_argument("--prod", help="production folder (default $DESI_SPECTRO_REDUX/$SPECPROD)")
    p.add_argument("--psf", help="PSF template with {camera} (and {night}, {expid}); default: "
                                 "the production's psfnight, else the calibration folder's")
    p.add_argument("--fiberflat", help="nightly fiber flat template with {camera} (and {night}); "
                                       "default: made from the night's flat exposures, else the "
                                       "production's calibnight fiberflatnight")
    for k in _KINDS:
        p.add_argument(f"--no{k}", action="store_true", help=f"do not apply a {k}")
    p.add_argument("--steps", help="comma list (default: the calibrated chain preproc,extract,"
                                   "frame,fiberflat,fiberflatnight,sky,stdstars,fluxcalib,"
                                   "cframe,group,coadd when the night has a fiber flat, else "
                                   "preproc,extract,frame,group,coadd)")
    p.add_argument("--bundles", help="bundles to extract (default: those with fibers)")
    p.add_argument("--bundles-per-task", type=int_range(1, 500), default=1)
    p.add_argument("--wavelength", action="append", metavar="ARM:MIN:MAX:STEP",
                   help="extraction grid of an arm (repeat for several), or 'psf' (the PSF's "
                        "range); default: the DESI grids")
    p.add_argument("--backend", default="auto", choices=("auto", "numpy", "cupy"))
    p.add_argument("--no-run", action="store_true", help="write the manifest only")
    p.add_argument("--dry-run", action="store_true", help="write it and list the tasks")
    p.set_defaults(func=_cli)
    return p


def _cli(args) -> int:
    from . import cli as run_cli

    comm_rank = _rank()
    path = build_proc_manifest(args) if comm_rank == 0 else None
    path = _share(path)
    if args.no_run:
        print(path)
        print(f"run: gpuspec-run {path}")
        if comm_rank == 0:
            _print_notes(path)
        return 0
    if comm_rank == 0 and not args.dry_run:  # a dry run prints them itself
        _print_notes(path)
    return run_cli.main([path] + (["--dry-run"] if args.dry_run else []))


def _print_notes(path: str) -> None:
    """Say whether the production is calibrated (and which exposures are flats)."""
    from .calibgraph import calibration_notes
    from .manifest import load_manifest

    for note in calibration_notes(load_manifest(path)):
        print(f"gpuspec proc: {note}", flush=True)


def _rank() -> int:
    from ..backend import launcher_size

    if launcher_size() <= 1:
        return 0
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


def _share(path):
    """Rank 0's manifest path on every rank (under MPI)."""
    from ..backend import launcher_size

    if launcher_size() <= 1:
        return path
    from mpi4py import MPI

    return MPI.COMM_WORLD.bcast(path, root=0)
