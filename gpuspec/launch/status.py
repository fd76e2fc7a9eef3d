"""``gpuspec status``, ``gpuspec tasks`` and ``gpuspec retry``: read and act on a production's state.

- ``gpuspec status PROD [--once] [--interval S]``: table of task counts per step
  and state, read from ``PROD/run/state.sqlite3``, and the running tasks with
  their elapsed time. Without ``--once`` it redraws every ``S`` seconds while a
  run is writing the production (like ``desi_pipe top``) and exits when none is
  (at once on a finished production). On a terminal each redraw clears the
  screen; into a pipe or a file the tables follow each other.
- ``gpuspec tasks PROD [--state S] [--step S] [--warnings] [--long]``: one line per task.
- ``gpuspec retry PROD TASK [--force]``: run one task alone, in this process,
  with its log on the terminal (the manifest recorded by the last run is read
  again, so a fixed manifest takes effect); the database records the attempt.

``PROD`` is the production folder, its ``run/state.sqlite3``, or the manifest.
All read commands open the database read-only; they never scan files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..cli import float_range
from ..errors import GpuspecError
from .db import STATES, CorruptDatabase, StateDB, db_path, manifest_pointer

__all__ = ["add_parser", "format_counts", "format_tasks", "format_running", "cmd_status",
           "cmd_tasks", "cmd_retry", "production_db"]


class NoProduction(GpuspecError, FileNotFoundError):
    """The argument names no production, state database or manifest."""


def production_db(arg: str) -> str:
    """State database of ``arg``: a production folder, its state.sqlite3, or a manifest.

    Backends: host only.
    """
    if arg.endswith(".sqlite3"):
        return arg
    if os.path.isfile(arg):
        from .manifest import load_manifest

        return db_path(load_manifest(arg, check_files=False).production)
    return db_path(arg)


def _db(arg: str) -> StateDB:
    """The production's database, read-only; when it is corrupt, an in-memory one
    derived from the products on disk (with a note on stderr)."""
    path = production_db(arg)
    try:
        return StateDB(path, readonly=True)
    except FileNotFoundError as exc:
        raise NoProduction(str(exc)) from None
    except CorruptDatabase as exc:
        return _derived_db(arg, path, exc)


def _derived_db(arg: str, path: str, exc: CorruptDatabase) -> StateDB:
    """States re-derived from the files (like a run's start), never written to disk."""
    from .plan import load_plan

    manifest = None
    if os.path.isfile(arg) and not arg.endswith(".sqlite3"):
        manifest = arg
    else:
        pointer = manifest_pointer(os.path.dirname(os.path.dirname(os.path.abspath(path))))
        try:
            with open(pointer, encoding="utf-8") as f:
                manifest = f.read().strip() or None
        except OSError:
            pass
    if not manifest or not os.path.isfile(manifest):
        raise GpuspecError(f"{exc}; give the production's manifest instead (gpuspec status "
                           "MANIFEST) to see the state derived from the files, or run "
                           "gpuspec-run MANIFEST to rebuild it")
    p = load_plan(manifest, write_db=False, check_backend=False, require_steps=False)
    db = StateDB(":memory:")
    db.sync_tasks(p.tasks, p.states)
    print(f"note: {exc}; the states below are derived from the products on disk (failures "
          f"are not known); 'gpuspec-run {manifest}' rebuilds the database", file=sys.stderr,
          flush=True)
    return db


def format_counts(counts: dict) -> str:
    """Table ``step x state`` with totals, from :meth:`StateDB.counts`.

    The last column, ``warned``, counts the done tasks with a warning (made from
    incomplete inputs); they are among ``done``.

    Backends: host only.
    """
    cols = list(STATES) + ["total", "warned"]
    w = max([len("step")] + [len(s) for s in counts] + [len("total")])
    head = f"{'step':<{w}}" + "".join(f"{c:>9}" for c in cols)
    lines = [head, "-" * len(head)]
    tot = {c: 0 for c in cols}
    for step, c in counts.items():
        row = dict(c)
        row["total"] = sum(c.get(k, 0) for k in STATES)
        row["warned"] = c.get("warning", 0)
        for k in cols:
            tot[k] += row.get(k, 0)
        lines.append(f"{step:<{w}}" + "".join(f"{row.get(k, 0):>9}" for k in cols))
    lines.append("-" * len(head))
    lines.append(f"{'total':<{w}}" + "".join(f"{tot[k]:>9}" for k in cols))
    return "\n".join(lines)


def _fmt_time(t):
    return "-" if t is None else time.strftime("%H:%M:%S", time.localtime(t))


def _duration(r: dict, now: float | None = None) -> str:
    if r.get("start") is None:
        return "-"
    if r.get("end") is not None:
        return f"{r['end'] - r['start']:.1f}s"
    if r.get("state") == "running":
        return f"{(now or time.time()) - r['start']:.1f}s+"
    return "-"


def format_tasks(rows: list, long: bool = False) -> str:
    """One line per task: name, state, rank@host, duration (running: elapsed, ``+``), error
    or warning; ``long`` adds log and command.

    Backends: host only.
    """
    if not rows:
        return "(no tasks)"
    w = max(len(r["name"]) for r in rows)
    out = []
    for r in rows:
        where = f"rank {r['rank']}@{r['host']}" if r.get("host") else "-"
        line = f"{r['name']:<{w}}  {r['state']:<7}  {where:<16} {_duration(r):>8}"
        if r.get("error"):
            line += f"  {r['error']}"
        elif r.get("warning") and r["state"] == "done":
            line += f"  warning: {r['warning']}"
        out.append(line)
        if long:
            out.append(f"    device {r.get('device') or '-'}; start {_fmt_time(r.get('start'))}; "
                       f"end {_fmt_time(r.get('end'))}; attempts {r.get('attempts', 0)}")
            out.append(f"    log: {r.get('log') or '-'}")
            out.append(f"    re-run: {r.get('command') or '-'}")
    return "\n".join(out)


def format_running(rows: list, now: float | None = None) -> str:
    """The running tasks with where they run and for how long (empty when none).

    Backends: host only.
    """
    if not rows:
        return ""
    now = time.time() if now is None else now
    w = max(len(r["name"]) for r in rows)
    lines = [f"running ({len(rows)}):"]
    for r in rows:
        where = f"rank {r['rank']}@{r['host']}" if r.get("host") else "-"
        el = f"{now - r['start']:.1f} s" if r.get("start") is not None else "-"
        lines.append(f"  {r['name']:<{w}}  {where:<16} {el:>10}")
    return "\n".join(lines)


def _status_text(db: StateDB, production: str) -> tuple[str, bool]:
    """The status report, and whether a run is still writing the production."""
    # ask first whether a run is writing, then read the counts: a run that ends between
    # the two reads is then seen as still active for one more round, never as ended
    # with stale counts
    active = db.active_run() is not None
    counts = db.counts()
    running = db.rows(state="running")
    text = (f"production {os.path.abspath(production)}   "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n" + format_counts(counts))
    if running:
        text += "\n" + format_running(running)
    todo = sum(c.get(s, 0) for c in counts.values() for s in ("waiting", "ready", "running"))
    return text, active and todo > 0


def _with_db(arg: str, fn):
    """``fn(db)`` on the production's database; if it turns out corrupt while being read,
    again on the state derived from the files."""
    try:
        with _db(arg) as db:
            return fn(db)
    except CorruptDatabase as exc:
        with _derived_db(arg, production_db(arg), exc) as db:
            return fn(db)


def cmd_status(args) -> int:
    """``gpuspec status``.

    Backends: host only.
    """
    return _with_db(args.production, lambda db: _status_loop(db, args))


def _status_loop(db, args) -> int:
    tty = sys.stdout.isatty()
    try:
        while True:
            text, live = _status_text(db, args.production)
            if args.once or not live:
                print(text, flush=True)
                if not args.once:
                    print("(no run is writing this production)", flush=True)
                return 0
            if tty:
                sys.stdout.write("\033[H\033[2J" + text + "\n(Ctrl-C to quit)\n")
            else:
                sys.stdout.write(text + "\n\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def cmd_tasks(args) -> int:
    """``gpuspec tasks``.

    Backends: host only.
    """
    from .manifest import STEPS

    def query(db):
        present = list(db.counts())
        if args.step is not None and args.step not in present and args.step not in STEPS:
            raise GpuspecError(f"unknown step {args.step!r} (steps of this production: "
                               f"{', '.join(present) or 'none'})")
        return db.rows(state=args.state, step=args.step)

    rows = _with_db(args.production, query)
    if args.warnings:
        rows = [r for r in rows if r.get("warning") and r["state"] == "done"]
    if args.names:
        for r in rows:
            print(r["name"])
    else:
        print(format_tasks(rows, long=args.long))
    return 0


def cmd_retry(args) -> int:
    """``gpuspec retry``: run one task alone with its log on the terminal.

    Backends: host only.
    """
    from .plan import load_plan
    from .runner import run_one

    mpath = args.manifest or _with_db(args.production,
                                      lambda db: db.get_meta("manifest_path")) \
        or _pointer(args.production)
    if not mpath:
        raise GpuspecError("the database records no manifest; give --manifest")
    p = load_plan(mpath, write_db=False)
    if os.path.abspath(p.manifest.production) != os.path.abspath(_production_dir(args.production)):
        raise GpuspecError(f"manifest {mpath} is for production {p.manifest.production}, not "
                           f"{args.production}")
    return run_one(p, args.task, force=args.force, what=f"gpuspec retry {args.task}")


def _pointer(arg: str) -> str | None:
    try:
        with open(manifest_pointer(_production_dir(arg)), encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _production_dir(arg: str) -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(production_db(arg))))


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``status``, ``tasks`` and ``retry`` to the ``gpuspec`` command.

    Backends: host only.
    """
    p = subparsers.add_parser("status", help="task counts per step and state of a production",
                              description="Table of task counts per step and state, read from "
                                          "the production's state database.")
    p.add_argument("production", help="production folder, its run/state.sqlite3, or its manifest")
    p.add_argument("--once", action="store_true",
                   help="print once and exit (default: redraw while a run writes the production)")
    p.add_argument("--interval", type=float_range(0.1, 3600), default=5.0,
                   help="live refresh period, seconds")
    p.set_defaults(func=cmd_status)

    t = subparsers.add_parser("tasks", help="list the tasks of a production",
                              description="List tasks with state, where they ran, duration "
                                          "and error.")
    t.add_argument("production", help="production folder, its run/state.sqlite3, or its manifest")
    t.add_argument("--state", choices=STATES, help="only tasks in this state")
    t.add_argument("--step", help="only tasks of this step")
    t.add_argument("--warnings", action="store_true",
                   help="only the done tasks with a warning (made from incomplete inputs)")
    t.add_argument("--long", "-l", action="store_true",
                   help="also device, times, log file and re-run command")
    t.add_argument("--names", action="store_true", help="task names only")
    t.set_defaults(func=cmd_tasks)

    r = subparsers.add_parser("retry", help="re-run one task alone, log on the terminal",
                              description="Run one task of a production alone in this process "
                                          "(after fixing its cause); the state database records "
                                          "the attempt. Then re-run gpuspec-run for its "
                                          "dependents.")
    r.add_argument("production", help="production folder, its run/state.sqlite3, or its manifest")
    r.add_argument("task", help="task name (see 'gpuspec tasks PROD')")
    r.add_argument("--manifest", help="manifest to use (default: the one of the last run)")
    r.add_argument("--force", action="store_true", help="run even if dependencies are not done")
    r.set_defaults(func=cmd_retry)
    return p
