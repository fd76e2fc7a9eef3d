"""``gpuspec simulate``: write a simulated DESI-like night.

Examples
--------
Three cameras of petal 0, 50 fibers, cropped CCDs (a few seconds)::

    gpuspec simulate --out D --cameras b0,r0,z0 --nspec 50 --seed 1

Two exposures of a full-size r0 CCD with all 500 fibers::

    gpuspec simulate --out D --cameras r0 --nspec 500 --nexp 2 --full-size

A narrow wavelength range (smaller crop) per band::

    gpuspec simulate --out D --cameras r0 --nspec 25 --wave-range r:6000:6300

A flat-lamp exposure (EXPID 99) and two science exposures for the calibration chain,
12 sky fibers and 6 standard stars among 50 fibers::

    gpuspec simulate --out D --nspec 50 --nexp 2 --flats 1 --nsky 12 --nstd 6

See docs/simulator.md for the layout, units and what is simulated.
"""

from __future__ import annotations

import argparse
import json
import logging

from ..errors import InputError

__all__ = ["add_parser", "main"]

log = logging.getLogger(__name__)


def _wave_range(text: str):
    """``BAND:WMIN:WMAX`` (or ``CAMERA:WMIN:WMAX``, or ``WMIN:WMAX`` for every band)."""
    parts = text.split(":")
    try:
        if len(parts) == 2:
            return ("*", (float(parts[0]), float(parts[1])))
        if len(parts) == 3:
            return (parts[0].lower(), (float(parts[1]), float(parts[2])))
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected BAND:WMIN:WMAX or WMIN:WMAX, got {text!r}")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``simulate`` subcommand to ``subparsers``.

    Backends: host only (argument parsing; the step chooses its own backend).
    """
    from .defaults import DEFAULT_EXPID0, DEFAULT_NFLAT, DEFAULT_NIGHT

    p = subparsers.add_parser(
        "simulate", help="write a simulated DESI-like night (raw, calibrations, PSFs, "
                         "fibermaps, truth)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cameras", default="b0,r0,z0",
                   help="camword (a0, a01b2) or comma list (b0,r0,z0); default b0,r0,z0")
    p.add_argument("--nspec", type=int, default=50,
                   help="fibers 0..nspec-1 of each petal (multiple of 25, <= 500; default 50)")
    p.add_argument("--nexp", type=int, default=1, help="number of exposures (default 1)")
    p.add_argument("--flats", type=int, default=DEFAULT_NFLAT, metavar="N",
                   help="flat-lamp exposures of the night (OBSTYPE FLAT, 120 s), EXPIDs "
                        f"EXPID-N ... EXPID-1 (default {DEFAULT_NFLAT})")
    p.add_argument("--nsky", type=int, default=None,
                   help="sky fibers per petal among the NSPEC fibers (default 2 per "
                        "25-fiber bundle)")
    p.add_argument("--nstd", type=int, default=None,
                   help="standard stars per petal among the NSPEC fibers (default 1 per "
                        "25-fiber bundle)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--night", type=int, default=DEFAULT_NIGHT,
                   help=f"NIGHT, YYYYMMDD (default {DEFAULT_NIGHT})")
    p.add_argument("--expid", type=int, default=DEFAULT_EXPID0,
                   help=f"first EXPID (default {DEFAULT_EXPID0})")
    p.add_argument("--exptime", type=float, default=900.0, help="seconds (default 900)")
    p.add_argument("--full-size", action="store_true",
                   help="full 4128x4114 CCDs (default: crop anchored at pixel 0,0 covering "
                        "the fibers and the wavelength range)")
    p.add_argument("--wave-range", type=_wave_range, action="append", default=None,
                   metavar="BAND:WMIN:WMAX",
                   help="wavelength range of a band (b, r, z) or camera, repeatable; "
                        "WMIN:WMAX sets all bands (default: production grids)")
    p.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto",
                   help="array backend of the PSF rendering (default auto)")
    p.add_argument("--template-psf", default=None,
                   help="template PSF (default: shared/reference/psf/psf-r0-00051060.fits)")
    p.set_defaults(func=main)
    return p


def main(args) -> int:
    """Run ``gpuspec simulate``.

    Backends: host only (argument parsing; the step chooses its own backend).
    """
    from .night import simulate_night

    ranges = None
    if args.wave_range:
        ranges = {}
        for key, rng in args.wave_range:
            if key == "*":
                ranges.update({b: rng for b in "brz"})
            elif key in ("b", "r", "z") or (len(key) == 2 and key[0] in "brz"
                                             and key[1].isdigit()):
                ranges[key] = rng
            else:
                raise InputError(f"--wave-range: unknown band or camera {key!r}")
    info = simulate_night(args.out, cameras=args.cameras, nspec=args.nspec, nexp=args.nexp,
                          seed=args.seed, night=args.night, expid0=args.expid,
                          full_size=args.full_size, wave_ranges=ranges, exptime=args.exptime,
                          backend_name=args.backend, template=args.template_psf,
                          nflat=args.flats, nsky=args.nsky, nstd=args.nstd)
    log.info("wrote %d files under %s in %.1f s", len(info["files"]), info["outdir"],
             info["timing"]["total_s"])
    print(json.dumps({"outdir": info["outdir"], "night": info["night"],
                      "expids": info["expids"], "flat_expids": info["flat_expids"],
                      "cameras": info["cameras"],
                      "nfiles": len(info["files"]), "total_s": info["timing"]["total_s"]}))
    return 0
