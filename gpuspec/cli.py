"""``gpuspec`` command line: one subcommand per step.

Each subcommand lives next to its code, in a module exposing
``add_parser(subparsers) -> argparse.ArgumentParser`` whose parser sets
``func(args) -> int``. Every module of :data:`_COMMAND_MODULES` is imported: a
missing or broken one is an error, never a silently absent subcommand.

Errors: :func:`guarded` runs a command and turns any exception into one line
``gpuspec CMD: error: ...`` and the exit status of :func:`gpuspec.errors.describe`
(0 success, 1 bad input or output, 2 bad command line, 3 internal error, 130
Ctrl-C, 143 SIGTERM; docs/reliability.md). ``-v`` (or ``GPUSPEC_DEBUG=1``) adds
the traceback. The argparse types here (:func:`int_range`, :func:`float_range`)
refuse out-of-range option values on the command line, naming the option.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sys
import traceback

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


# --------------------------------------------------------------------------- option types

def int_range(lo: int | None = None, hi: int | None = None):
    """An argparse ``type``: an integer in ``[lo, hi]`` (either end open when None).

    Backends: host only (argparse).
    """
    def parse(text):
        try:
            v = int(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {_range_words(lo, hi)}, got {v}")
        return v

    parse.__name__ = "integer"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False):
    """An argparse ``type``: a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``).

    Backends: host only (argparse).
    """
    def parse(text):
        try:
            v = float(str(text).strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not math.isfinite(v) or (hi is not None and v > hi)
        if lo is not None:
            bad = bad or (v <= lo if lo_open else v < lo)
        if bad:
            raise argparse.ArgumentTypeError(
                f"must be a finite number {_range_words(lo, hi, lo_open)}, got {text!r}")
        return v

    parse.__name__ = "number"
    return parse


def _range_words(lo, hi, lo_open=False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"<= {hi:g}"
    return ""


def positive_int(text):
    """An argparse ``type``: an integer >= 1.

    Backends: host only (argparse).
    """
    return int_range(1)(text)


def threads_type(text):
    """``--threads``: 1 … :data:`gpuspec.limits.MAX_THREADS`.

    Backends: host only (argparse).
    """
    from .limits import MAX_THREADS

    return int_range(1, MAX_THREADS)(text)


def guarded(prog, func, verbose: bool = False) -> int:
    """Run ``func()`` and map any exception to one line on stderr and an exit status.

    ``prog`` (a string, or a callable giving it when an error is printed) starts the line.

    Messages and statuses come from :func:`gpuspec.errors.describe`; SIGTERM is
    turned into :class:`gpuspec.errors.Terminated` first (so temporary files go and
    the status is 143). With ``verbose`` (``-v``) or ``GPUSPEC_DEBUG=1`` the
    traceback is printed too.

    Backends: host only.
    """
    from .errors import EXIT_INTERRUPTED, EXIT_TERMINATED, describe, handle_sigterm

    handle_sigterm()
    try:
        return int(func() or 0)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the one place every error ends up
        msg, code = describe(exc)
        prog = prog() if callable(prog) else prog
        if verbose or os.environ.get("GPUSPEC_DEBUG", "").strip() not in ("", "0"):
            traceback.print_exc(file=sys.stderr)
        if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
            print(f"{prog}: {msg}", file=sys.stderr, flush=True)
        else:
            print(f"{prog}: error: {msg}", file=sys.stderr, flush=True)
        return code


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand.

    Backends: host only.
    """
    p = argparse.ArgumentParser(
        prog="gpuspec",
        description="GPU-first DESI spectroscopic reduction (preproc, extraction, coadds).",
    )
    p.add_argument("--version", action="version", version=f"gpuspec {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--threads", type=threads_type, default=None, metavar="N",
                   help="CPU threads (BLAS/OpenMP/numba; default GPUSPEC_THREADS, else 1: "
                        "gpuspec sets them itself, see gpuspec.threads)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for modname in _COMMAND_MODULES:
        importlib.import_module(modname).add_parser(sub)
    return p


def main(argv=None) -> int:
    """Entry point of the ``gpuspec`` command.

    Exit status (:func:`gpuspec.errors.describe`): 0 success, 1 bad input or an
    output that cannot be written, 2 bad command line, 3 internal error, 130
    interrupted, 143 terminated; every error is one line naming the file or option.

    Backends: host only (steps choose their backend).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = any(a in ("-v", "--verbose") for a in argv)
    prog = "gpuspec"
    state = {"prog": prog}

    def run():
        from .heap import configure_heap
        from .threads import configure_threads

        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command:
            state["prog"] = f"gpuspec {args.command}"
        configure_threads(args.threads)
        configure_heap()
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
        if not getattr(args, "func", None):
            parser.print_help()
            return 0 if args.command is None else 2
        return args.func(args)

    return guarded(lambda: state["prog"], run, verbose)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
