"""``gpuspec`` command line: one subcommand per step.

Each subcommand lives next to its code, in a module exposing
``add_parser(subparsers) -> argparse.ArgumentParser`` whose parser sets
``func(args) -> int``. A subcommand appears in ``gpuspec --help`` only once its
module exists, so the CLI never lists a step that does not work.
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
    "gpuspec.coadd.cli",      # group, coadd
    "gpuspec.launch.status",  # status, tasks, retry
    "gpuspec.io.cli",         # info
    "gpuspec.qa.cli",         # qa, report (matplotlib imported only when they run)
    "gpuspec.demo",           # demo
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    p = argparse.ArgumentParser(
        prog="gpuspec",
        description="GPU-first DESI spectroscopic reduction (preproc, extraction, coadds).",
    )
    p.add_argument("--version", action="version", version=f"gpuspec {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for modname in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue  # step not built yet
            raise
        mod.add_parser(sub)
    return p


def main(argv=None) -> int:
    """Entry point of the ``gpuspec`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
