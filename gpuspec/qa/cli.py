"""``gpuspec qa`` and ``gpuspec report``: QA pictures of products and the report of a production.

- ``gpuspec qa FILE... -o OUT.png [--fibers F,..] [--targetid T] [--truth SIMDIR | --no-truth]``
  draws one picture per file, of the kind detected from the file (preproc,
  frame, cframe, spectra, coadd, fiberflat, sky, fluxcalib). One file: ``OUT.png``;
  several: ``OUT-{file stem}.png`` (or ``DIR/{file stem}.png`` when ``-o`` is a folder).
- ``gpuspec report PROD [-o PROD/report.html]`` writes one static HTML page with
  its PNGs beside it: task states per step, the timeline of the tasks per rank,
  the slowest and the failed tasks with their log tails, throughput and devices.

Both need matplotlib (``pip install 'gpuspec[qa]'``), imported only when they run.
A bad file gets one line naming it and the exit status 1.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "cmd_qa", "cmd_report"]


def _ints(text: str) -> list:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def cmd_qa(args) -> int:
    """``gpuspec qa``: one picture per file; 1 when a file could not be drawn.

    Backends: host only (argparse; matplotlib).
    """
    from ..errors import GpuspecError
    from .draw import draw_file, output_paths
    from .kinds import detect_product
    from .mpl import MissingDependencyError, pyplot

    try:
        pyplot()
    except MissingDependencyError as exc:
        print(f"gpuspec qa: error: {exc}", file=sys.stderr)
        return 1
    status = 0
    infos = []
    for path in args.files:  # detect every kind first: sky pictures pair with frames
        try:
            infos.append(detect_product(path))
        except GpuspecError:
            pass
    truth = None if args.no_truth else (args.truth or "auto")
    for path, out in zip(args.files, output_paths(args.files, args.output)):
        try:
            written = draw_file(path, out, infos=infos, fibers=args.fibers,
                                targetid=args.targetid, truth=truth)
            print(written)
        except GpuspecError as exc:
            print(f"gpuspec qa: error: {exc}", file=sys.stderr)
            status = 1
    return status


def cmd_report(args) -> int:
    """``gpuspec report``: the HTML report of a production.

    Backends: host only (argparse; matplotlib).
    """
    import os

    from .report import write_report

    out = args.output or os.path.join(args.production, "report.html")
    print(write_report(args.production, out))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``qa`` and ``report`` to the ``gpuspec`` command.

    Backends: host only (argparse).
    """
    p = subparsers.add_parser(
        "qa", help="QA pictures (PNG) of preproc, frame, spectra, coadd and calibration files",
        description="Draw a QA picture of each file, of the kind detected from the file: "
                    "preproc (image, mask bits, overscan, read noise), frame/cframe (fiber "
                    "spectra, chi2pix, masked fraction, flux image), spectra/coadd (a target's "
                    "b/r/z spectra, ivar, truth and chi for simulated data), fiberflat, sky "
                    "(residuals of the sky fibers, with the frame) and fluxcalib (throughput).")
    p.add_argument("files", nargs="+", metavar="FILE", help="product file(s)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png",
                   help="PNG to write (several files: OUT-{file}.png; a folder: DIR/{file}.png)")
    p.add_argument("--fibers", type=_ints, help="frames: FIBER numbers to plot (default: the "
                                                "brightest target, a median one, a sky fiber)")
    p.add_argument("--targetid", type=int, help="spectra/coadd: target to plot (default: the "
                                                "highest S/N target)")
    p.add_argument("--truth", metavar="SIMDIR", help="simulation folder of simulated data "
                                                     "(default: searched above the file)")
    p.add_argument("--no-truth", action="store_true", help="do not overlay the simulated truth")
    p.set_defaults(func=cmd_qa)

    r = subparsers.add_parser(
        "report", help="HTML report of a production (states, timeline per rank, failures)",
        description="Write one static HTML page with PNGs beside it from the production's "
                    "state database: task states per step, a timeline of the tasks per rank, "
                    "the slowest and the failed tasks with their log tails, throughput and "
                    "the device of each rank.")
    r.add_argument("production", help="production folder (with run/state.sqlite3)")
    r.add_argument("-o", "--output", metavar="report.html",
                   help="HTML file to write (default PROD/report.html)")
    r.set_defaults(func=cmd_report)
    return p
