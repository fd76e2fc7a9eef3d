"""``gpuspec group`` and ``gpuspec coadd`` subcommands."""

from __future__ import annotations

import argparse

from ..cli import float_range
from ..errors import UsageError

__all__ = ["add_parser"]


def _nside(text):
    """``--nside``: a power of 2 in 1 … 2**29 (healpy's rule)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 1 <= v <= 2 ** 29 or v & (v - 1):
        raise argparse.ArgumentTypeError(f"must be a power of 2 between 1 and 2**29, got {v}")
    return v


def _group(args) -> int:
    from .group import group_frames

    files = group_frames(args.infiles, args.outdir, nside=args.nside, survey=args.survey,
                         program=args.program)
    for f in files:
        print(f)
    return 0


def _coadd(args) -> int:
    from .group import coadd_file

    backend = "numpy" if args.no_gpu else "auto"
    if (args.wave_min is not None or args.wave_max is not None) and args.lin_step is None:
        raise UsageError("--wave-min/--wave-max need --lin-step")
    if args.wave_min is not None and args.wave_max is not None and \
            not args.wave_min < args.wave_max:
        raise UsageError(f"--wave-min {args.wave_min:g} must be smaller than --wave-max "
                         f"{args.wave_max:g}")
    coadd_file(args.infile, args.outfile, spectroperf=args.spectroperf, lin_step=args.lin_step,
               wave_min=args.wave_min, wave_max=args.wave_max,
               coadd_cameras=args.coadd_cameras, cosmics_nsig=args.nsig,
               no_normalize=args.no_normalize, norm_chi2_threshold=args.norm_chi2_threshold,
               backend=backend)
    print(args.outfile)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``group`` and ``coadd`` to the ``gpuspec`` command.

    Backends: host (argument parsing; the commands choose numpy or cupy).
    """
    from .group import DEFAULT_NSIDE, DEFAULT_PROGRAM, DEFAULT_SURVEY

    g = subparsers.add_parser("group", help="regroup frames into per-HEALPix spectra files",
                              description="Regroup frames into spectra-SURVEY-PROGRAM-PIXEL.fits "
                                          "files (HEALPix NESTED on TARGET_RA/DEC).")
    g.add_argument("-i", "--infiles", nargs="+", required=True, metavar="FRAME",
                   help="frame files")
    g.add_argument("-o", "--outdir", required=True, help="output folder")
    g.add_argument("--nside", type=_nside, default=DEFAULT_NSIDE,
                   help=f"HEALPix nside (default {DEFAULT_NSIDE})")
    g.add_argument("--survey", default=DEFAULT_SURVEY, help=f"default {DEFAULT_SURVEY}")
    g.add_argument("--program", default=DEFAULT_PROGRAM, help=f"default {DEFAULT_PROGRAM}")
    g.set_defaults(func=_group)

    c = subparsers.add_parser("coadd", help="coadd a spectra file",
                              description="Coadd the exposures of each target (plain ivar-"
                                          "weighted, or spectroperfectionism with --spectroperf).")
    c.add_argument("-i", "--infile", required=True, metavar="SPECTRA")
    c.add_argument("-o", "--outfile", required=True, metavar="COADD")
    c.add_argument("--spectroperf", action="store_true",
                   help="decorrelated spectroperfectionism coadd (one spectrum per target)")
    c.add_argument("--lin-step", type=float_range(0, lo_open=True), default=None, metavar="DW",
                   help="linear output grid step in Angstrom")
    c.add_argument("--wave-min", type=float_range(0), default=None, metavar="W")
    c.add_argument("--wave-max", type=float_range(0), default=None, metavar="W")
    c.add_argument("--coadd-cameras", action="store_true", help="also combine b,r,z into brz")
    c.add_argument("--nsig", type=float_range(0, lo_open=True), default=None, help="cosmic rejection nsigma (default 4)")
    c.add_argument("--no-normalize", action="store_true",
                   help="no per-exposure normalisation")
    c.add_argument("--norm-chi2-threshold", type=float_range(0), default=None, metavar="CHI2",
                   help="reduced chi2 between the crude and the rescaled crude coadd at or "
                        "above which a target is VARIABLE and keeps its per-exposure "
                        "normalisation (desispec default 0.1)")
    c.add_argument("--no-gpu", action="store_true", help="run on the CPU (numpy)")
    c.set_defaults(func=_coadd)
    return c
