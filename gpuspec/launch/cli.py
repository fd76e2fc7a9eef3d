"""``gpuspec-run``: run a production manifest (see docs/launch.md).

Usage::

    gpuspec-run manifest.yaml                    # one process (CPU or one GPU)
    mpiexec -n 4 gpuspec-run manifest.yaml       # one rank per GPU, dynamic scheduling
    srun -n 4 --gpus-per-task=1 gpuspec-run manifest.yaml
    gpuspec-run manifest.yaml --dry-run          # tasks, states and re-run commands
    gpuspec-run manifest.yaml --task NAME        # one task alone, log on the terminal
    gpuspec-run manifest.yaml --check            # validate the manifest only

Exit status: 0 only when every task is done; 1 when some task failed; 2 for a
bad manifest, an unavailable step or a bad command line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import GpuspecError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
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
    return p


def _err(msg: str) -> None:
    print(f"gpuspec-run: error: {msg}", file=sys.stderr, flush=True)


def _load(args):
    """Rank-0 loader: (Plan, None) or (None, exit code)."""
    from .manifest import load_manifest
    from .runner import plan
    from .steps import StepUnavailable, get_registry

    try:
        m = load_manifest(args.manifest)
        reg = get_registry(m.data["registry"])
    except (GpuspecError, StepUnavailable) as exc:
        _err(str(exc))
        return None, 2
    if not args.dry_run:
        from .. import backend as _backend

        try:
            _backend.resolve(m.data["backend"])
        except _backend.BackendUnavailable as exc:
            _err(f"{m.path} line {m.line('backend')}: backend: {exc}")
            return None, 2
    missing = reg.unavailable(m.steps)
    try:
        _check_options(m, reg, missing)
    except GpuspecError as exc:
        _err(str(exc))
        return None, 2
    if missing:
        for step, why in missing.items():
            _err(f"step {step!r} cannot run: {why}")
        _err(f"remove the step(s) from 'steps' in {m.path} (line {m.line('steps')}) or install "
             "their implementation")
        if not args.dry_run:
            return None, 2
    from .db import RunActive

    try:
        p = plan(m, reg, write_db=not args.dry_run, force=args.force)
    except (GpuspecError, RunActive) as exc:
        _err(str(exc))
        return None, 2
    return p, None


def _check_options(m, reg, missing) -> None:
    """Raise ManifestError for a step option the step's function does not take."""
    for step in m.steps:
        if step in missing:
            continue
        for name in reg.unknown_options(step, m.step(step).get("options", {})):
            raise m.error(f"steps.{step}.options.{name}",
                          f"unknown option of step {step} (not an argument of "
                          f"{reg.steps[step].needs[0] if reg.steps[step].needs else step})")


def _dry_run(p) -> int:
    width = max((len(t.name) for t in p.tasks), default=10)
    print(f"# production {p.manifest.production}: {len(p.tasks)} tasks (registry "
          f"{p.registry.name})")
    for t in p.tasks:
        deps = f" <- {len(t.deps)} dep(s)" if t.deps else ""
        print(f"{t.name:<{width}}  {p.states[t.name]:<7}  {t.command}{deps}")
    return 0


def main(argv=None) -> int:
    """Entry point of ``gpuspec-run``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.schema:
        from .manifest import describe_schema

        describe_schema(emit=print)
        return 0
    if not args.manifest:
        parser.print_usage(sys.stderr)
        _err("a manifest is required")
        return 2
    if args.check or args.task:
        from .manifest import load_manifest

        try:
            m = load_manifest(args.manifest)
        except GpuspecError as exc:
            _err(str(exc))
            return 2
        if args.check:
            from .graph import build_graph
            from .steps import get_registry

            try:
                reg = get_registry(m.data["registry"])
                n = len(build_graph(m, ext=reg.ext))
            except Exception as exc:
                _err(str(exc))
                return 2
            missing = reg.unavailable(m.steps)
            for step, why in missing.items():
                _err(f"step {step!r} cannot run: {why}")
                return 2
            try:
                _check_options(m, reg, missing)
            except GpuspecError as exc:
                _err(str(exc))
                return 2
            print(f"{m.path}: valid; {n} tasks")
            return 0
        from .runner import run_one

        return run_one(m, args.task, force=args.force)

    from .runner import mpi_environment, run_mpi, run_serial

    use_mpi = args.mpi or (not args.no_mpi and mpi_environment() > 1)
    comm = None
    if use_mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        if comm.Get_size() == 1:
            comm = None
    if args.dry_run:
        if comm is not None and comm.Get_rank() != 0:
            return 0
        p, code = _load(args)
        return code if p is None else _dry_run(p)
    if comm is None:
        p, code = _load(args)
        if p is None:
            return code
        return run_serial(p, verbose=not args.quiet)
    return run_mpi(comm, args.manifest, lambda path: _load(args), verbose=not args.quiet)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
