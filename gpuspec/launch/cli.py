"""``gpuspec-run``: run a production manifest (see docs/launch.md).

Usage::

    gpuspec-run manifest.yaml                    # one process (CPU or one GPU)
    mpiexec -n 4 gpuspec-run manifest.yaml       # one rank per GPU, dynamic scheduling
    srun -n 4 --gpus-per-task=1 gpuspec-run manifest.yaml
    gpuspec-run manifest.yaml --dry-run          # tasks, states and re-run commands
    gpuspec-run manifest.yaml --task NAME        # one task alone, log on the terminal
    gpuspec-run manifest.yaml --check            # validate the manifest only

Exit status: 0 only when every task is done; 1 when some task failed; 2 for a
production that cannot start or go on (bad manifest, an unavailable step, a GPU
that cannot be bound, a production or state database that cannot be written, a
bad command line); 3 for an internal error (a bug); 130 when interrupted
(Ctrl-C), 143 when terminated (SIGTERM). Every error is one line.

Validation and planning are :func:`gpuspec.launch.plan.load_plan` (the same for
every mode); this module only parses arguments and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from ..cli import threads_type

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``gpuspec-run`` argument parser.

    Backends: host only.
    """
    p = argparse.ArgumentParser(
        prog="gpuspec-run",
        description="Run a gpuspec production: YAML manifest -> task graph -> one process or "
                    "MPI ranks (one per GPU), with a SQLite state database in the production.",
        epilog="Follow a run with 'gpuspec status PROD'; list failures with "
               "'gpuspec tasks PROD --state failed'; re-run one with 'gpuspec retry PROD TASK'.")
    p.add_argument("manifest", nargs="?", help="production manifest (YAML), see docs/launch.md")
    p.add_argument("--dry-run", action="store_true",
                   help="print the tasks, their states and the command re-running each; run nothing")
    p.add_argument("--check", action="store_true", help="validate the manifest and exit")
    p.add_argument("--task", metavar="NAME",
                   help="run this one task alone in this process, log on the terminal")
    p.add_argument("--force", action="store_true",
                   help="with --task: run even if its dependencies are not done; always: take "
                        "over the production from a run recorded on another host")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mpi", action="store_true",
                   help="use MPI (default: when started by mpiexec/srun with more than one rank)")
    g.add_argument("--no-mpi", action="store_true", help="never use MPI")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument("--schema", action="store_true",
                   help="print every manifest key with its type and meaning, then exit")
    p.add_argument("--threads", type=threads_type, default=None, metavar="N",
                   help="CPU threads (BLAS/OpenMP/numba) per rank (default: run.threads of the "
                        "manifest, else GPUSPEC_THREADS, else 1; see docs/launch.md)")
    return p


def _err(msg: str) -> None:
    for line in str(msg).splitlines() or [""]:
        print(f"gpuspec-run: error: {line}", file=sys.stderr, flush=True)


def _comm(args):
    """COMM_WORLD when MPI is asked for or detected and has more than one rank, else None."""
    from ..backend import launcher_size

    if not (args.mpi or (not args.no_mpi and launcher_size() > 1)):
        return None
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def _dispatch(args) -> int:
    """Run what the arguments ask for; errors propagate to :func:`main`."""
    from .plan import load_plan
    from .runner import dry_run_lines, run_one, run_serial

    if args.check:
        p = load_plan(args.manifest, write_db=False)
        print(f"{p.manifest.path}: valid; {len(p.tasks)} tasks")
        for note in p.notes:
            print(f"note: {note}")
        return 0
    if args.task:
        return run_one(load_plan(args.manifest, write_db=False), args.task, force=args.force)
    comm = None if args.dry_run else _comm(args)
    if args.dry_run:
        if _comm(args) is not None and _comm(args).Get_rank() != 0:
            return 0
        p = load_plan(args.manifest, write_db=False, check_backend=False, require_steps=False)
        for step, why in p.missing.items():
            _err(f"step {step!r} cannot run: {why}")
        print("\n".join(dry_run_lines(p)))
        for note in p.notes:
            print(f"note: {note}")
        return 0

    def load():
        p = load_plan(args.manifest, force=args.force)
        for note in p.notes:
            print(f"gpuspec-run: warning: {note}", file=sys.stderr, flush=True)
        return p

    if comm is None:
        return run_serial(load(), verbose=not args.quiet)
    from .mpi import run_mpi

    return run_mpi(comm, load, verbose=not args.quiet)


def main(argv=None) -> int:
    """Entry point of ``gpuspec-run``: parse the arguments, map errors to exit codes.

    Exit codes: 0 every task done; 1 some task failed; 2 a production that
    cannot start or go on (bad manifest, step or backend unavailable, another run
    writing it, a production or database that cannot be written, bad command
    line); 3 internal error; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).

    Backends: host only (the tasks run on the manifest's ``backend``).
    """
    from ..errors import (EXIT_FAILED, EXIT_INTERNAL, EXIT_USAGE, Terminated, describe,
                          handle_sigterm)
    from ..heap import configure_heap
    from ..threads import configure_threads
    from .mpi import BindError, PlanFailedOnRoot

    handle_sigterm()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.schema:
        from .manifest import describe_schema

        describe_schema(emit=print)
        return 0
    if not args.manifest:
        parser.print_usage(sys.stderr)
        _err("a manifest is required")
        return 2
    configure_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        configure_heap()
        return _dispatch(args)
    except PlanFailedOnRoot:
        return 2  # rank 0 printed why
    except BindError as exc:
        _err(exc)
        return 2
    except (KeyboardInterrupt, Terminated) as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"gpuspec-run: {what}; the running task is recorded as interrupted; run "
              "the same command again to resume", file=sys.stderr, flush=True)
        return describe(exc)[1]
    except Exception as exc:  # noqa: BLE001 - every error is one line with its status
        msg, code = describe(exc)
        if os.environ.get("GPUSPEC_DEBUG", "").strip() not in ("", "0"):
            traceback.print_exc(file=sys.stderr)
        _err(msg)
        # the production cannot start or go on (a task failing is reported as 1)
        return EXIT_USAGE if code == EXIT_FAILED else (EXIT_INTERNAL if code == EXIT_INTERNAL
                                                        else code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
