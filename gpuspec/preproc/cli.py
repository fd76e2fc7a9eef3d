"""``gpuspec preproc``: preprocess one or several cameras of a raw exposure.

Examples
--------
One camera, explicit output file::

    gpuspec preproc -i desi-00000123.fits.fz --camera b0 -o preproc-b0-00000123.fits \\
        --bias calib/bias-b0.fits --dark calib/dark-b0.fits

Several cameras of one exposure in one call (comma list or camword, ``a`` = b, r, z).
``-o`` is then a directory (files named ``preproc-{camera}-{EXPID:08d}.fits``) or a
pattern with ``{camera}`` (and optionally ``{expid}``); calibration arguments may be
patterns with ``{camera}`` too::

    gpuspec preproc -i desi-00000123.fits.fz --cameras a0 -o out/ --calib-dir calib/

Calibrations, as desi_preproc: each of bias, dark, pixflat and mask is applied.
It is the file given (``--bias FILE``), else the one of a production manifest
(``--manifest M``: its ``inputs.calib``, with per-night and per-exposure
overrides), else the one found in the calibration folder (``--calib-dir``, else
``$DESI_SPECTRO_CALIB``; see :mod:`gpuspec.preproc.calibfinder` for the layouts).
A calibration that cannot be found is an error; ``--nobias``, ``--nodark``,
``--nopixflat``, ``--nomask`` skip one on purpose. The output header records each
(DEPNAMnn/DEPVERnn ``CCD_CALIB_BIAS`` ... = the file, or ``None`` when skipped),
and the log says what was applied::

    gpuspec preproc -i desi-00000123.fits.fz --camera b0 -o p.fits --nodark --nopixflat \\
        --bias calib/bias-b0.fits --mask calib/mask-b0.fits
"""

from __future__ import annotations

import argparse
import logging
import os

from ..errors import GpuspecError, InputError, UsageError

__all__ = ["add_parser", "main"]

log = logging.getLogger(__name__)

_CALIBS = ("bias", "dark", "pixflat", "mask")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``preproc`` subcommand to ``subparsers``.

    Backends: host only (argparse).
    """
    p = subparsers.add_parser(
        "preproc", help="raw exposure -> preproc image(s) (overscan, bias, gain, dark, "
                        "pixflat, masks, cosmics)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--infile", required=True, help="raw exposure file")
    cam = p.add_mutually_exclusive_group(required=True)
    cam.add_argument("--camera", help="one camera, e.g. b0")
    cam.add_argument("--cameras", help="several cameras: comma list (b0,r0) or camword (a0b1)")
    p.add_argument("-o", "--outfile", required=True,
                   help="output file (one camera), or a directory / pattern with {camera} "
                        "(several cameras)")
    for c in _CALIBS:
        g = p.add_mutually_exclusive_group()
        g.add_argument(f"--{c}", default=None,
                       help=f"{c} calibration file (may contain {{camera}})"
                            + (" -- a dark-current rate in e-/s, scaled by EXPTIME"
                               if c == "dark" else ""))
        g.add_argument(f"--no{c}", action="store_true",
                       help=f"do not apply a {c} (default: apply it, found as described above)")
    p.add_argument("--calib-dir", default=None,
                   help="calibration folder (default $DESI_SPECTRO_CALIB): desispec's "
                        "spec/sp{N}/{camera}.yaml, or {kind}-{camera}.fits, or "
                        "{kind}/{kind}-{camera}.fits; used for the calibrations not given "
                        "explicitly; one that is not found is an error")
    p.add_argument("--manifest", default=None,
                   help="production manifest whose inputs.calib gives the calibrations (for "
                        "this exposure and night) not given explicitly")
    p.add_argument("--fibermap", default=None,
                   help="fibermap file to attach (FIBERMAP HDU); default: fibermap-EXPID.fits "
                        "beside the raw file when it exists (as desi_preproc does)")
    p.add_argument("--no-fibermap", action="store_true",
                   help="do not attach a fibermap even if one is found beside the raw file")
    p.add_argument("--nocosmic", action="store_true", help="skip cosmic-ray rejection")
    p.add_argument("--use-overscan-row", action="store_true",
                   help="use the overscan rows (ORSEC) and allow per-row overscan")
    p.add_argument("--no-gpu", action="store_true", help="run on the CPU (numpy)")
    p.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto",
                   help="array backend (default auto; --no-gpu forces numpy)")
    p.add_argument("--cosmics-nsig", type=float, default=None,
                   help="cosmic-ray detection threshold (default 6)")
    p.add_argument("--cosmics-cfudge", type=float, default=None, help="default 3")
    p.add_argument("--cosmics-c2fudge", type=float, default=None, help="default 0.5")
    p.set_defaults(func=main)
    return p


def _cameras(args) -> list[str]:
    from ..camword import parse_cameras

    try:
        if args.camera:
            cams = parse_cameras(args.camera)
            if len(cams) != 1:
                raise ValueError(f"--camera takes one camera, got {args.camera!r}; "
                                 "use --cameras for several")
            return cams
        return parse_cameras(args.cameras)
    except ValueError as exc:
        raise UsageError(f"{'--camera' if args.camera else '--cameras'}: {exc}") from None


def _expid(rawfile: str) -> int:
    from ..io.util import open_fits

    with open_fits(rawfile) as fx:
        h = fx[0].read_header()
        if "EXPID" in h:
            return int(h["EXPID"])
        for i in range(1, len(fx)):
            h = fx[i].read_header()
            if "EXPID" in h:
                return int(h["EXPID"])
    raise InputError("no EXPID keyword to name the output", path=rawfile, keyword="EXPID")


def _outfile(args, camera: str, ncam: int, expid_cache: dict) -> str:
    from .fileio import preproc_filename

    out = args.outfile
    if "{" in out:
        fields = {"camera": camera}
        if "{expid" in out:
            fields["expid"] = expid_cache.setdefault("e", _expid(args.infile))
        try:
            return out.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise UsageError(f"-o: bad output pattern {out!r} ({exc}); use {{camera}} and "
                             "{expid}") from None
    if ncam > 1 or os.path.isdir(out) or out.endswith(os.sep):
        return os.path.join(out, preproc_filename(camera, expid_cache.setdefault(
            "e", _expid(args.infile))))
    return out


def _fibermap_beside(rawfile: str):
    """``fibermap-EXPID.fits`` in the raw file's folder, if it exists."""
    try:
        expid = _expid(rawfile)
    except Exception:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(rawfile)), f"fibermap-{int(expid):08d}.fits")
    if os.path.exists(path):
        log.info("attaching fibermap %s", path)
        return path
    return None


def _manifest_calib(m, name: str, camera: str, hdr: dict):
    """The manifest's calibration of this camera (and exposure, when listed), or None."""
    expo = next((e for e in m.exposures() if "EXPID" in hdr and e["expid"] == int(hdr["EXPID"])),
                None)
    return m.camera_file(name, camera, expo)


def _calib(args, name: str, camera: str, hdr: dict, manifest=None):
    """The file of one calibration, or False when skipped; InputError when not found."""
    from .calibfinder import calib_root, find_calibration

    if getattr(args, f"no{name}"):
        return False
    value = getattr(args, name)
    if value is not None:
        return value.format(camera=camera) if "{camera" in value else value
    if manifest is not None:
        path = _manifest_calib(manifest, name, camera, hdr)
        if path is not None:
            return path
    root = calib_root(args.calib_dir)
    skip = f"give --{name} FILE, or --no{name} to preprocess without it"
    if root is None:
        raise InputError(f"no {name} calibration for camera {camera}: no calibration folder "
                         f"(--calib-dir, or set DESI_SPECTRO_CALIB); {skip}",
                         keyword=f"--{name}")
    night = int(hdr["NIGHT"]) if str(hdr.get("NIGHT", "")).strip().isdigit() else None
    path, looked = find_calibration(name, camera, root, night, hdr)
    if path is None:
        raise InputError(f"no {name} calibration for camera {camera} in {root} (looked for "
                         f"{'; '.join(looked)}); {skip}", keyword=f"--{name}")
    return path


def _all_calibrations(args, cameras) -> dict:
    """``{camera: {kind: path or False}}``, all found before anything is written."""
    from .calibfinder import raw_headers

    manifest = None
    if args.manifest:
        from ..launch.manifest import load_manifest

        manifest = load_manifest(args.manifest, check_files=False)
    out = {}
    for camera in cameras:
        try:
            hdr = raw_headers(args.infile, camera)
        except GpuspecError:
            hdr = {}
        out[camera] = {c: _calib(args, c, camera, hdr, manifest) for c in _CALIBS}
        log.info("camera %s: %s", camera, "; ".join(
            f"{k} {os.path.basename(v) if v else 'skipped (--no' + k + ')'}"
            for k, v in out[camera].items()))
    return out


def main(args) -> int:
    """Run ``gpuspec preproc``; returns 0 when every camera succeeded, else 1.

    Backends: host only (argparse; the step chooses its own backend).
    """
    from .fileio import preproc_file

    backend = "numpy" if args.no_gpu else args.backend
    cameras = _cameras(args)
    calibs = _all_calibrations(args, cameras)
    expid_cache: dict = {}
    failures = 0
    fibermap = None if args.no_fibermap else args.fibermap
    if fibermap is None and not args.no_fibermap:
        fibermap = _fibermap_beside(args.infile)
    outs = {c: _outfile(args, c, len(cameras), expid_cache) for c in cameras}  # -o checked
    for camera in cameras:
        try:
            out = outs[camera]
            extra = {k: getattr(args, k) for k in ("cosmics_nsig", "cosmics_cfudge",
                                                   "cosmics_c2fudge")
                     if getattr(args, k) is not None}
            preproc_file(args.infile, camera, out, fibermap=fibermap,
                         cosmics=not args.nocosmic, use_overscan_row=args.use_overscan_row,
                         backend=backend, **calibs[camera], **extra)
            print(out)
        except GpuspecError as exc:
            if len(cameras) == 1:
                raise
            failures += 1
            log.error("camera %s failed: %s", camera, exc)
    return 1 if failures else 0
