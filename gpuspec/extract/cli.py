"""``gpuspec extract``: spectroperfectionism extraction of a preproc image.

The option names are those of desispec's ``desi_extract_spectra``::

    gpuspec extract -i preproc-r0-00000123.fits -p psf-r0.fits -o frame-r0-00000123.fits \\
        -w 5760,7620,0.8 [--specmin 0 --nspec 500] [--nsubbundles 5] [--nwavestep 50] \\
        [--psferr 0.01] [--model model-r0.fits] [--no-gpu]

``--bundles 3,4`` writes a partial frame of bundles 3-4; ``--merge a.fits b.fits ...``
merges partial frames into ``-o`` instead of extracting.
"""

from __future__ import annotations

import argparse
import logging
import math
import time

from ..cli import float_range, int_range
from ..errors import UsageError
from ..limits import MAX_NWAVE, MAX_PROCESSES
from .defaults import SPECTER

__all__ = ["add_parser", "main"]

log = logging.getLogger(__name__)


def _wave(text: str):
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WMIN,WMAX,DW, got {text!r}") from None
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals) or not vals[2] > 0 \
            or not vals[1] > vals[0]:
        raise argparse.ArgumentTypeError(f"expected WMIN,WMAX,DW with WMAX > WMIN and DW > 0, "
                                         f"got {text!r}")
    from .files import grid_size

    n = grid_size(*vals)
    if n > MAX_NWAVE:
        raise argparse.ArgumentTypeError(f"{text!r} asks for {n:.4g} wavelengths; the limit is "
                                         f"{MAX_NWAVE:,} (docs/reliability.md)")
    return tuple(vals)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``extract`` subcommand to ``subparsers``.

    Backends: host only (argparse).
    """
    p = subparsers.add_parser(
        "extract", help="preproc image + PSF -> frame (spectroperfectionism extraction)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--input", help="preproc image file")
    p.add_argument("-p", "--psf", help="Gauss-Hermite PSF file")
    p.add_argument("-o", "--output", required=True, help="output frame file")
    p.add_argument("-w", "--wavelength", type=_wave, help="WMIN,WMAX,DW in Angstrom")
    p.add_argument("-s", "--specmin", type=int_range(0), default=0, help="first fiber (default 0)")
    p.add_argument("-n", "--nspec", type=int_range(1), default=None,
                   help="number of fibers (default: all of the PSF from specmin)")
    p.add_argument("--bundles", default=None,
                   help="comma list of contiguous bundle indices (partial frame)")
    d = SPECTER
    p.add_argument("--bundlesize", type=int_range(1, 10_000), default=d.bundlesize,
                   help=f"fibers per bundle ({d.bundlesize})")
    p.add_argument("--nsubbundles", type=int_range(1), default=d.nsubbundles,
                   help=f"subbundles per bundle ({d.nsubbundles})")
    p.add_argument("--nwavestep", type=int_range(1, MAX_NWAVE), default=d.nwavestep,
                   help=f"core bins per patch ({d.nwavestep})")
    p.add_argument("--wavepad-frac", type=float_range(0, 1e6), default=d.wavepad_frac,
                   help=f"extra wavelength padding, fraction of the spot height ({d.wavepad_frac})")
    p.add_argument("--pixpad-frac", type=float_range(0, 1e6), default=d.pixpad_frac,
                   help=f"extra pixel rows, fraction of the spot height ({d.pixpad_frac})")
    p.add_argument("--regularize", type=float_range(0, 1e6), default=d.regularize,
                   help=f"Tikhonov term ({d.regularize:g})")
    p.add_argument("--psferr", type=float_range(0), default=None,
                   help="fractional PSF error for chi2pix (default: the PSF's, else 0.01)")
    p.add_argument("-m", "--model", default=None, help="also write the model image here")
    p.add_argument("--no-gpu", action="store_true", help="run on the CPU (numpy)")
    p.add_argument("--backend", choices=("auto", "numpy", "cupy"), default="auto",
                   help="array backend (default auto; --no-gpu forces numpy)")
    p.add_argument("--model-ivar", action="store_true",
                   help="second pass weighting pixels by the variance of the first pass's "
                        "model + read noise (removes the low bias of data-based IVAR)")
    p.add_argument("--nproc", type=int_range(1, MAX_PROCESSES), default=1,
                   help="CPU: extract bundles in this many processes (default 1)")
    p.add_argument("--merge", nargs="+", default=None, metavar="PART",
                   help="merge these partial frames into --output instead of extracting")
    p.set_defaults(func=main)
    return p


def main(args) -> int:
    """Run the ``extract`` subcommand.

    Backends: numpy, cupy (``--backend``/``--no-gpu``).
    """
    from .files import extract_file, merge_frames

    t0 = time.perf_counter()
    if args.merge:
        out = merge_frames(args.merge, args.output)
        log.info("merged %d partial frames into %s", len(args.merge), out)
        return 0
    missing = [o for o, v in (("-i/--input", args.input), ("-p/--psf", args.psf),
                              ("-w/--wavelength", args.wavelength)) if v is None]
    if missing:
        raise UsageError(f"missing required option(s) {', '.join(missing)}")
    bundles = None
    if args.bundles:
        try:
            bundles = [int(b) for b in args.bundles.split(",")]
        except ValueError:
            raise UsageError(f"--bundles expects integers, got {args.bundles!r}") from None
        if any(b < 0 for b in bundles):
            raise UsageError(f"--bundles expects integers >= 0, got {args.bundles!r}")
    backend = "numpy" if args.no_gpu else args.backend
    out = extract_file(args.input, args.psf, args.output, args.wavelength,
                       specmin=args.specmin, nspec=args.nspec, bundles=bundles,
                       bundlesize=args.bundlesize, nsubbundles=args.nsubbundles,
                       nwavestep=args.nwavestep, wavepad_frac=args.wavepad_frac,
                       pixpad_frac=args.pixpad_frac, regularize=args.regularize,
                       psferr=args.psferr, model=args.model, backend=backend,
                       nproc=args.nproc, model_ivar=args.model_ivar)
    log.info("wrote %s in %.1f s", out, time.perf_counter() - t0)
    return 0
