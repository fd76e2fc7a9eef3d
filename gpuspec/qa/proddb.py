"""Read-only queries of a production's state database, for the report.

Everything goes through the public :class:`gpuspec.launch.db.StateDB` opened
read-only (the launcher owns the schema: one row per task with ``step``,
``state``, ``host``, ``rank``, ``device``, ``start``, ``end``, ``error``, ``log``,
``attempts``; ``start``/``end`` are those of the last attempt). Nothing here
writes to the database or scans the production's files, except the log tails
of failed tasks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, MissingFileError

__all__ = ["Production", "load_production", "log_tail", "task_duration"]


@dataclass
class Production:
    """The state of one production, as read from its database."""

    path: str
    db: str
    tasks: list                      # dicts in graph order (StateDB.rows())
    counts: dict                     # {step: {state: n}} (StateDB.counts())
    meta: dict = field(default_factory=dict)  # manifest_path, registry, planned, active_run

    @property
    def ran(self) -> list:
        """Tasks with a start time (they ran, or are running).

        Backends: host only (plain values).
        """
        return [t for t in self.tasks if t.get("start") is not None and t.get("rank") is not None]

    @property
    def t0(self) -> float | None:
        """Earliest task start time, or None.

        Backends: host only (plain values).
        """
        s = [t["start"] for t in self.ran]
        return min(s) if s else None

    @property
    def t1(self) -> float | None:
        """Latest task end time, or None.

        Backends: host only (plain values).
        """
        e = [t["end"] for t in self.ran if t.get("end") is not None]
        return max(e) if e else None

    def steps(self) -> list:
        """Step names, in the order of ``counts``.

        Backends: host only (plain values).
        """
        return list(self.counts)


def load_production(prod: str) -> Production:
    """Read the task table of production ``prod`` (folder, or its ``state.sqlite3``).

    Raises
    ------
    MissingFileError
        No state database (gpuspec-run has not run there).
    InputError
        The file is not a readable state database.

    Backends: host only (file I/O).
    """
    import sqlite3

    from ..launch.db import StateDB, db_path

    path = prod if str(prod).endswith(".sqlite3") else db_path(prod)
    root = os.path.dirname(os.path.dirname(os.path.abspath(path))) if path != prod else prod
    if not os.path.exists(path):
        raise MissingFileError("no state database (has gpuspec-run been run on this "
                               "production?)", path=path)
    try:
        with StateDB(path, readonly=True) as db:
            tasks = db.rows()
            counts = db.counts()
            meta = {k: db.get_meta(k) for k in ("manifest_path", "registry", "planned",
                                                 "active_run")}
    except sqlite3.DatabaseError as exc:
        raise InputError(f"not a readable state database ({exc})", path=path) from exc
    return Production(path=os.path.abspath(root), db=os.path.abspath(path), tasks=tasks,
                      counts=counts, meta=meta)


def task_duration(t: dict, now: float | None = None) -> float | None:
    """Seconds of the task's last attempt (to ``now`` while it runs), or None.

    Backends: host only (plain values).
    """
    if t.get("start") is None:
        return None
    end = t.get("end")
    if end is None:
        if t.get("state") != "running" or now is None:
            return None
        end = now
    return float(end) - float(t["start"])


def log_tail(path: str | None, nlines: int = 25, max_bytes: int = 64_000) -> str:
    """The last ``nlines`` lines of a log file ('' when it is missing).

    Backends: host only (file I/O).
    """
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-nlines:])


def stragglers(prod: Production, factor: float = 2.0, nmad: float = 5.0,
               min_excess: float = 1.0, min_fraction: float = 0.02) -> list:
    """Done tasks much slower than the others of their step.

    A task is a straggler when its duration exceeds ``factor`` × the median of
    its step, the median + ``nmad`` × 1.4826·MAD, and the median by more than
    ``min_excess`` seconds and ``min_fraction`` of the run's span (so that a
    0.3-s task among 0.1-s ones is not news); steps with at least 4 tasks.

    Backends: host only (NumPy).
    """
    t0, t1 = prod.t0, prod.t1
    floor = max(min_excess, min_fraction * (t1 - t0)) if t0 is not None and t1 else min_excess
    by: dict = {}
    for t in prod.ran:
        d = task_duration(t)
        if d is not None and t["state"] == "done":
            by.setdefault(t["step"], []).append((d, t))
    out = []
    for step, items in by.items():
        if len(items) < 4:
            continue
        d = np.array([i[0] for i in items])
        med = float(np.median(d))
        mad = 1.4826 * float(np.median(np.abs(d - med)))
        cut = max(factor * med, med + nmad * mad, med + floor)
        out += [t for dd, t in items if dd > cut]
    return sorted(out, key=lambda t: -task_duration(t))
