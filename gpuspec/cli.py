"""``gpuspec`` command line: one subcommand per step.

Each subcommand lives next to its code, in a module exposing
``add_parser(subparsers) -> argparse.ArgumentParser`` whose parser sets
``func(args) -> int``. Every module of :data:`_COMMAND_MODULES` is imported: a
missing or broken one is an error, never a silently absent subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__

# (module providing add_parser) in the order of the data flow.
_COMMAND_MODULES = (
    "gpuspec.sim.cli",        # simulate
    "gpuspec.preproc.cli",    # preproc
    "gpuspec.extract.cli",    # extract
    "gpuspec.calibrate.cli",  # compute-fiberflat, compute-sky, fit-stdstars, ..., process-exposure
    "gpuspec.coadd.cli",      # group, coadd
    "gpuspec.launch.status",  # status, tasks, retry
    "gpuspec.launch.proc",    # proc (desi_proc-style: night, exposures, cameras -> production)
    "gpuspec.io.cli",         # info
    "gpuspec.qa.cli",         # qa, report (matplotlib imported only when they run)
    "gpuspec.demo",           # demo
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand. Host only."""
    p = argparse.ArgumentParser(
        prog="gpuspec",
        description="GPU-first DESI spectroscopic reduction (preproc, extraction, coadds).",
    )
    p.add_argument("--version", action="version", version=f"gpuspec {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads (BLAS/OpenMP/numba; default GPUSPEC_THREADS, else 1: "
                        "gpuspec sets them itself, see gpuspec.threads)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for modname in _COMMAND_MODULES:
        importlib.import_module(modname).add_parser(sub)
    return p


def main(argv=None) -> int:
    """Entry point of the ``gpuspec`` command. Host only (steps choose their backend)."""
    from .threads import configure_threads

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from .errors import GpuspecError

    try:
        return int(args.func(args) or 0)
    except GpuspecError as exc:
        print(f"gpuspec {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gpuspec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
