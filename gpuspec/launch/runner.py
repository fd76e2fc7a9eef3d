"""Execution of a production in one process, one task alone, and the Python entry point.

- :func:`run_manifest`: the Python equivalent of ``gpuspec-run MANIFEST``;
- :func:`run_serial`: every ready task of a plan, in graph order, in this process;
- :func:`run_one`: one task alone, log on the terminal (``--task``, ``gpuspec retry``).

Planning is :mod:`gpuspec.launch.plan`; the scheduler :mod:`gpuspec.launch.scheduler`;
running one task :mod:`gpuspec.launch.execute`; MPI :mod:`gpuspec.launch.mpi`.
Ctrl-C (KeyboardInterrupt) records the running task as failed with the error
``interrupted (KeyboardInterrupt)``, releases the database and is passed on.

Host side (the tasks run on the manifest's backend).
"""

from __future__ import annotations

import logging
import socket
import sys
import time

from ..errors import GpuspecError, Terminated
from .db import StateDB, db_path, open_rebuilding
from .execute import Worker, device_label
from .plan import Plan, PlanError, compute_states, load_plan
from .scheduler import Progress, Scheduler, exit_code, final_lines, interrupt_reason
from .tasklog import log_path

__all__ = ["run_manifest", "run_serial", "run_one", "dry_run_lines", "UnknownTask",
           "DependenciesNotDone"]

log = logging.getLogger(__name__)


class UnknownTask(GpuspecError, KeyError):
    """No task of that name in the production."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class DependenciesNotDone(GpuspecError, RuntimeError):
    """``--task`` on a task whose dependencies are not done (without ``--force``)."""


def dry_run_lines(p: Plan) -> list[str]:
    """What ``--dry-run`` prints: a header, then name, initial state and re-run command per task.

    Backends: host only.
    """
    width = max((len(t.name) for t in p.tasks), default=10)
    out = [f"# production {p.manifest.production}: {len(p.tasks)} tasks (registry "
           f"{p.registry.name})"]
    for t in p.tasks:
        deps = f" <- {len(t.deps)} dep(s)" if t.deps else ""
        out.append(f"{t.name:<{width}}  {p.states[t.name]:<7}  {t.command}{deps}")
    return out


def run_manifest(manifest_path: str, *, quiet: bool = False, dry_run: bool = False,
                 force: bool = False, mpi: bool = False) -> int:
    """Python equivalent of ``gpuspec-run MANIFEST`` (one process unless ``mpi``).

    Changes no logging configuration. A production that cannot start is logged
    (logger ``gpuspec.launch.runner``) and gives 2.

    Returns
    -------
    int
        0 only when every task is done, 1 when some task failed, 2 for a bad
        manifest, a missing step implementation or a production being written.

    Backends: host only.
    """
    def load():
        return load_plan(manifest_path, write_db=not dry_run, force=force,
                         check_backend=not dry_run, require_steps=not dry_run)

    try:
        if mpi and not dry_run:
            from mpi4py import MPI

            from .mpi import run_mpi

            return run_mpi(MPI.COMM_WORLD, load, verbose=not quiet)
        p = load()
    except PlanError as exc:
        log.error("%s", exc)
        return 2
    if dry_run:
        for line in dry_run_lines(p):
            print(line)
        return 0
    return run_serial(p, verbose=not quiet)


def run_serial(p: Plan, verbose: bool = True) -> int:
    """Run every ready task in this process; return 0 when every task is done.

    Raises
    ------
    KeyboardInterrupt
        After recording the running task as interrupted and releasing the database.

    Backends: host only.
    """
    m = p.manifest
    with StateDB(db_path(m.production)) as db:
        sched = Scheduler(p, db)
        progress = Progress(sched, m.data["run"]["progress_interval"], verbose)
        device = device_label(m)
        worker = Worker(m, p.registry, 0, device)
        host = socket.gethostname()
        progress.line(f"{len(p.tasks)} tasks, {sched.initially_done} already done; "
                      f"1 process on {device}")
        db.autocommit = False  # one commit per task: its result and the next start
        try:
            while True:
                t = sched.pop_ready()
                if t is None:
                    break
                sched.started(t, 0, host, device, log_path(m.production, t.step, t.name))
                db.commit()
                progress.tick()  # counts the task starting now as running
                res = worker.run(t)
                down = sched.finished(t.name, res)
                if not res["ok"]:
                    progress.failed(t.name, res, down)
        except (KeyboardInterrupt, Terminated) as exc:
            worker.close()
            sched.interrupted(sched.running, why=interrupt_reason(exc))
            db.commit()
            db.release_run()
            raise
        finally:
            worker.close()
        db.commit()
        db.release_run()
        final_lines(progress, sched, m)
        return exit_code(sched)


def run_one(p: Plan, name: str, force: bool = False, what: str | None = None) -> int:
    """Run one task alone, in this process, with its log on the terminal.

    The dependencies must be done (their outputs present) unless ``force``.
    The database records the attempt; when the task succeeds, its dependents
    that had failed because of it go back to waiting/ready. Returns 0 on success,
    1 when the task failed.

    Raises
    ------
    UnknownTask, DependenciesNotDone, gpuspec.launch.db.RunActive
    KeyboardInterrupt
        After recording the task as interrupted.

    Backends: host only.
    """
    by = p.by_name
    if name not in by:
        near = [n for n in by if name in n][:5]
        raise UnknownTask(f"no task {name!r} in this production"
                          + (f" (did you mean {', '.join(near)}?)" if near else ""))
    task = by[name]
    missing = [d for d in task.deps if p.states[d] != "done"]
    if missing and not force:
        raise DependenciesNotDone(f"task {name} needs {', '.join(missing[:5])} done first "
                                  "(use --force to run anyway)")
    device = device_label(p.manifest)
    db, note = open_rebuilding(db_path(p.manifest.production))
    if note:
        print(f"gpuspec: warning: {note}", file=sys.stderr, flush=True)
    with db:
        db.claim_run(what or f"gpuspec-run {p.manifest.path} --task {name}", force=force)
        try:
            return _run_one_claimed(db, p, task, device)
        finally:
            db.release_run()


def _run_one_claimed(db: StateDB, p: Plan, task, device: str) -> int:
    m, name = p.manifest, task.name
    if db.get(name) is None:
        db.sync_tasks(p.tasks, p.states)
        db.set_meta(manifest_path=m.path, manifest_text=m.text, registry=p.registry.name)
    db.update(name, "running", host=socket.gethostname(), rank=0, device=device,
              start=time.time(), end=None, error=None, warning=None,
              log=log_path(m.production, task.step, name))
    db.bump_attempts(name)
    worker = Worker(m, p.registry, 0, device)
    try:
        res = worker.run(task, tee=True)
    except (KeyboardInterrupt, Terminated) as exc:
        db.update(name, "failed", error=interrupt_reason(exc), end=time.time())
        raise
    finally:
        worker.close()
    cols = {k: res[k] for k in ("host", "rank", "device", "start", "end", "error", "log")}
    db.update(name, "done" if res["ok"] else "failed", **cols)
    if res["ok"]:
        _reset_dependents(db, p.tasks)
    print(f"gpuspec: task {name} {'done' if res['ok'] else 'FAILED: ' + str(res['error'])} "
          f"(log {res['log']})", file=sys.stdout, flush=True)
    return 0 if res["ok"] else 1


def _reset_dependents(db: StateDB, tasks: list) -> None:
    """Tasks failed only because of tasks now done can run again; the others name their cause."""
    new = compute_states(tasks)
    rows = db.states()
    real = {n for n, r in rows.items() if r["state"] == "failed"
            and not (r.get("error") or "").startswith("dependency ")}
    blocker: dict[str, str | None] = {}
    for t in tasks:  # graph order
        blocker[t.name] = next((d if d in real else blocker.get(d)
                                for d in t.deps if d in real or blocker.get(d)), None)
    for t in tasks:
        r = rows.get(t.name)
        if r is None or r["state"] != "failed" or t.name in real:
            continue
        if blocker[t.name] is None:
            db.update(t.name, new[t.name], error=None)
        else:
            db.update(t.name, error=f"dependency {blocker[t.name]} failed")
