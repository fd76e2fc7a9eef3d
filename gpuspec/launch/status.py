"""``gpuspec status``, ``gpuspec tasks`` and ``gpuspec retry``: read and act on a production's state.

- ``gpuspec status PROD [--once] [--interval S]``: table of task counts per step
  and state, read from ``PROD/run/state.sqlite3``; without ``--once`` it redraws
  every ``S`` seconds until interrupted (like ``desi_pipe top``).
- ``gpuspec tasks PROD [--state S] [--step S] [--long]``: one line per task.
- ``gpuspec retry PROD TASK [--force]``: run one task alone, in this process,
  with its log on the terminal (the manifest recorded by the last run is read
  again, so a fixed manifest takes effect); the database records the attempt.

All read commands open the database read-only; they never scan files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .db import STATES, StateDB, db_path

__all__ = ["add_parser", "format_counts", "format_tasks", "cmd_status", "cmd_tasks", "cmd_retry"]


def _db(prod: str) -> StateDB:
    path = prod if prod.endswith(".sqlite3") else db_path(prod)
    return StateDB(path, readonly=True)


def format_counts(counts: dict) -> str:
    """Table ``step x state`` with totals, from :meth:`StateDB.counts`."""
    cols = list(STATES) + ["total"]
    w = max([len("step")] + [len(s) for s in counts] + [len("total")])
    head = f"{'step':<{w}}" + "".join(f"{c:>9}" for c in cols)
    lines = [head, "-" * len(head)]
    tot = {c: 0 for c in cols}
    for step, c in counts.items():
        row = dict(c)
        row["total"] = sum(c.values())
        for k in cols:
            tot[k] += row.get(k, 0)
        lines.append(f"{step:<{w}}" + "".join(f"{row.get(k, 0):>9}" for k in cols))
    lines.append("-" * len(head))
    lines.append(f"{'total':<{w}}" + "".join(f"{tot[k]:>9}" for k in cols))
    return "\n".join(lines)


def _fmt_time(t):
    return "-" if t is None else time.strftime("%H:%M:%S", time.localtime(t))


def format_tasks(rows: list, long: bool = False) -> str:
    """One line per task: name, state, rank@host, duration, error; ``long`` adds log and command."""
    if not rows:
        return "(no tasks)"
    w = max(len(r["name"]) for r in rows)
    out = []
    for r in rows:
        dur = (f"{r['end'] - r['start']:.1f}s" if r.get("start") is not None
               and r.get("end") is not None else "-")
        where = f"rank {r['rank']}@{r['host']}" if r.get("host") else "-"
        line = f"{r['name']:<{w}}  {r['state']:<7}  {where:<16} {dur:>8}"
        if r.get("error"):
            line += f"  {r['error']}"
        out.append(line)
        if long:
            out.append(f"    device {r.get('device') or '-'}; start {_fmt_time(r.get('start'))}; "
                       f"end {_fmt_time(r.get('end'))}; attempts {r.get('attempts', 0)}")
            out.append(f"    log: {r.get('log') or '-'}")
            out.append(f"    re-run: {r.get('command') or '-'}")
    return "\n".join(out)


def cmd_status(args) -> int:
    """``gpuspec status``."""
    try:
        db = _db(args.production)
    except FileNotFoundError as exc:
        print(f"gpuspec status: {exc}", file=sys.stderr)
        return 2
    try:
        while True:
            counts = db.counts()
            text = (f"production {os.path.abspath(args.production)}   "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n" + format_counts(counts))
            if args.once:
                print(text)
                return 0
            sys.stdout.write("\033[H\033[2J" + text + "\n(Ctrl-C to quit)\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        db.close()


def cmd_tasks(args) -> int:
    """``gpuspec tasks``."""
    try:
        with _db(args.production) as db:
            rows = db.rows(state=args.state, step=args.step)
    except FileNotFoundError as exc:
        print(f"gpuspec tasks: {exc}", file=sys.stderr)
        return 2
    if args.names:
        for r in rows:
            print(r["name"])
    else:
        print(format_tasks(rows, long=args.long))
    return 0


def cmd_retry(args) -> int:
    """``gpuspec retry``: run one task alone with its log on the terminal."""
    from .manifest import load_manifest
    from .runner import run_one

    try:
        with _db(args.production) as db:
            mpath = args.manifest or db.get_meta("manifest_path")
    except FileNotFoundError as exc:
        print(f"gpuspec retry: {exc}", file=sys.stderr)
        return 2
    if not mpath:
        print("gpuspec retry: the database records no manifest; give --manifest", file=sys.stderr)
        return 2
    m = load_manifest(mpath)
    if os.path.abspath(m.production) != os.path.abspath(args.production):
        print(f"gpuspec retry: manifest {mpath} is for production {m.production}, not "
              f"{args.production}", file=sys.stderr)
        return 2
    return run_one(m, args.task, force=args.force)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``status``, ``tasks`` and ``retry`` to the ``gpuspec`` command."""
    p = subparsers.add_parser("status", help="task counts per step and state of a production",
                              description="Table of task counts per step and state, read from "
                                          "the production's state database.")
    p.add_argument("production", help="production folder (or its state.sqlite3)")
    p.add_argument("--once", action="store_true", help="print once and exit (default: live)")
    p.add_argument("--interval", type=float, default=5.0, help="live refresh period, seconds")
    p.set_defaults(func=cmd_status)

    t = subparsers.add_parser("tasks", help="list the tasks of a production",
                              description="List tasks with state, where they ran, duration "
                                          "and error.")
    t.add_argument("production")
    t.add_argument("--state", choices=STATES, help="only tasks in this state")
    t.add_argument("--step", help="only tasks of this step")
    t.add_argument("--long", "-l", action="store_true",
                   help="also device, times, log file and re-run command")
    t.add_argument("--names", action="store_true", help="task names only")
    t.set_defaults(func=cmd_tasks)

    r = subparsers.add_parser("retry", help="re-run one task alone, log on the terminal",
                              description="Run one task of a production alone in this process "
                                          "(after fixing its cause); the state database records "
                                          "the attempt. Then re-run gpuspec-run for its "
                                          "dependents.")
    r.add_argument("production")
    r.add_argument("task", help="task name (see 'gpuspec tasks PROD')")
    r.add_argument("--manifest", help="manifest to use (default: the one of the last run)")
    r.add_argument("--force", action="store_true", help="run even if dependencies are not done")
    r.set_defaults(func=cmd_retry)
    return p
