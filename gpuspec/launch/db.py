"""SQLite state database of a production (``PROD/run/state.sqlite3``).

One row per task: its step, state (``waiting``, ``ready``, ``running``, ``done``,
``failed``), dependencies, where and when it last ran (host, rank, device,
start, end), the error, a warning (a ``done`` task made from incomplete inputs,
see ``steps.group.allow_missing``), the log file and the command that re-runs it
alone.
A ``meta`` table keeps the manifest path and text of the last run.

During a run rank 0 is the only writer; readers (``gpuspec status``/``tasks``)
open the file read-only. The default rollback journal is used (no WAL), which is
safe on network file systems.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Iterable

from ..errors import GpuspecError

__all__ = ["STATES", "StateDB", "db_path", "run_dir", "RunActive"]


class RunActive(GpuspecError, RuntimeError):
    """Another gpuspec-run (or retry) seems to be writing this production's database."""


STATES = ("waiting", "ready", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    name TEXT PRIMARY KEY,
    step TEXT NOT NULL,
    ord INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'waiting',
    deps TEXT NOT NULL DEFAULT '[]',
    outputs TEXT NOT NULL DEFAULT '[]',
    command TEXT,
    log TEXT,
    host TEXT,
    rank INTEGER,
    device TEXT,
    start REAL,
    end REAL,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    warning TEXT
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

_RUN_COLS = ("host", "rank", "device", "start", "end", "error", "log", "attempts", "warning")


def run_dir(production: str) -> str:
    """``PROD/run``: state database and logs."""
    return os.path.join(production, "run")


def db_path(production: str) -> str:
    """Path of the state database of a production."""
    return os.path.join(run_dir(production), "state.sqlite3")


class StateDB:
    """The task table of one production.

    Parameters
    ----------
    path : str
        Database file (see :func:`db_path`).
    readonly : bool
        Open read-only (status commands); the file must exist.
    """

    def __init__(self, path: str, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        #: when False, writes of update()/update_many() wait for commit() (one transaction
        #: for many changes: the scheduler of a big run commits a few times a second)
        self.autocommit = True
        self.dirty = False
        if readonly:
            if not os.path.exists(path):
                raise FileNotFoundError(f"no state database at {path} (has gpuspec-run been "
                                        "run on this production?)")
            uri = "file:" + os.path.abspath(path) + "?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, timeout=30.0)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.conn = sqlite3.connect(path, timeout=60.0)
            with self.conn:
                self.conn.executescript(_SCHEMA)
                cols = {r[1] for r in self.conn.execute("PRAGMA table_info(tasks)")}
                if "warning" not in cols:  # a database of an earlier gpuspec
                    self.conn.execute("ALTER TABLE tasks ADD COLUMN warning TEXT")
        self.conn.row_factory = sqlite3.Row

    def close(self) -> None:
        if not self.readonly:
            self.commit()
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---------------------------------------------------------------- meta
    def set_meta(self, **values) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                  [(k, json.dumps(v)) for k, v in values.items()])

    def get_meta(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # ---------------------------------------------------------------- run claim
    def active_run(self) -> dict | None:
        """The run recorded as writing this database, if it may still be alive.

        A claim by a process of this host that no longer exists (killed, crashed)
        is stale and ignored; a claim from another host cannot be checked and is
        returned.
        """
        import socket

        run = self.get_meta("active_run")
        if not run:
            return None
        if run.get("host") == socket.gethostname():
            try:
                pid = int(run["pid"])
            except (KeyError, TypeError, ValueError):
                return run
            if pid == os.getpid() or not _pid_alive(pid):
                return None
        return run

    def claim_run(self, what: str, force: bool = False) -> None:
        """Record this process as the writer; raise RunActive if another one is.

        Parameters
        ----------
        what : str
            Description (command) stored with the claim.
        force : bool
            Take over a claim that cannot be checked (another host).
        """
        import socket

        other = self.active_run()
        if other and not force:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(other.get("start", 0)))
            raise RunActive(f"{self.path} is being written by {other.get('what')!r} (pid "
                            f"{other.get('pid')} on {other.get('host')}, started {started}); "
                            "wait for it to finish, or use --force if it is dead")
        self.set_meta(active_run=dict(host=socket.gethostname(), pid=os.getpid(),
                                      start=time.time(), what=what))

    def release_run(self) -> None:
        """Remove this process's claim."""
        run = self.get_meta("active_run")
        if run and int(run.get("pid", -1)) == os.getpid():
            self.commit()
            with self.conn:
                self.conn.execute("DELETE FROM meta WHERE key = 'active_run'")

    # ---------------------------------------------------------------- tasks
    def sync_tasks(self, tasks: Iterable, states: dict[str, str]) -> None:
        """Make the table hold exactly ``tasks`` with the given states.

        Static columns (step, order, deps, outputs, command) are refreshed; the
        run records (host, rank, ...) of tasks that keep their state are kept.
        Tasks no longer in the graph are deleted.
        """
        tasks = list(tasks)
        names = {t.name for t in tasks}
        with self.conn:
            old = {r["name"]: r["state"] for r in
                   self.conn.execute("SELECT name, state FROM tasks")}
            gone = [(n,) for n in old if n not in names]
            self.conn.executemany("DELETE FROM tasks WHERE name = ?", gone)
            self.conn.executemany(
                "INSERT INTO tasks(name, step, ord, state, deps, outputs, command) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "step = excluded.step, ord = excluded.ord, state = excluded.state, "
                "deps = excluded.deps, outputs = excluded.outputs, command = excluded.command",
                [(t.name, t.step, t.order, states[t.name], json.dumps(t.deps),
                  json.dumps(t.outputs), t.command) for t in tasks])
            # a task whose state changed from failed keeps its error only if still failed
            self.conn.execute("UPDATE tasks SET error = NULL WHERE state IN ('waiting', 'ready', "
                              "'done') AND error LIKE 'dependency % failed%'")

    def update(self, name: str, state: str | None = None, **cols) -> None:
        """Set the state and/or run columns of one task."""
        self.update_many([name], state, **cols)

    def update_many(self, names: Iterable[str], state: str | None = None, **cols) -> None:
        sets, vals = [], []
        if state is not None:
            if state not in STATES:
                raise ValueError(f"unknown state {state!r}")
            sets.append("state = ?")
            vals.append(state)
        for k, v in cols.items():
            if k not in _RUN_COLS:
                raise ValueError(f"unknown column {k!r}")
            sets.append(f"{k} = ?")
            vals.append(v)
        if not sets:
            return
        sql = f"UPDATE tasks SET {', '.join(sets)} WHERE name = ?"
        self._write(sql, [(*vals, n) for n in names])

    def bump_attempts(self, name: str) -> None:
        self._write("UPDATE tasks SET attempts = attempts + 1 WHERE name = ?", [(name,)])

    def _write(self, sql: str, rows: list) -> None:
        if self.autocommit:
            with self.conn:
                self.conn.executemany(sql, rows)
        else:
            self.conn.executemany(sql, rows)
            self.dirty = True

    def commit(self) -> None:
        """Commit the writes made with ``autocommit = False``."""
        if self.dirty:
            self.conn.commit()
            self.dirty = False

    def get(self, name: str) -> dict | None:
        r = self.conn.execute("SELECT * FROM tasks WHERE name = ?", (name,)).fetchone()
        return None if r is None else _row(r)

    def rows(self, state: str | None = None, step: str | None = None) -> list[dict]:
        """Tasks (as dicts) in graph order, optionally filtered by state and step."""
        sql, args = "SELECT * FROM tasks", []
        where = []
        if state is not None:
            where.append("state = ?")
            args.append(state)
        if step is not None:
            where.append("step = ?")
            args.append(step)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ord, name"
        return [_row(r) for r in self.conn.execute(sql, args)]

    def states(self) -> dict[str, dict]:
        return {r["name"]: r for r in self.rows()}

    def counts(self) -> dict[str, dict[str, int]]:
        """``{step: {state: count}}`` for the steps present, every state listed.

        Each step also has ``warning``: how many of its ``done`` tasks carry a
        warning (made from incomplete inputs); it is not a state of its own.
        """
        out: dict[str, dict[str, int]] = {}
        order: dict[str, int] = {}
        for r in self.conn.execute("SELECT step, state, COUNT(*) AS n, MIN(ord) AS o "
                                   "FROM tasks GROUP BY step, state"):
            out.setdefault(r["step"], {s: 0 for s in STATES})[r["state"]] = r["n"]
            order[r["step"]] = min(order.get(r["step"], r["o"]), r["o"])
        for c in out.values():
            c["warning"] = 0
        if self.has_column("warning"):
            for r in self.conn.execute("SELECT step, COUNT(*) AS n FROM tasks WHERE state = "
                                       "'done' AND warning IS NOT NULL GROUP BY step"):
                out[r["step"]]["warning"] = r["n"]
        return {s: out[s] for s in sorted(out, key=lambda s: order[s])}

    def has_column(self, name: str) -> bool:
        """True when the task table has this column (older databases lack ``warning``)."""
        return any(r[1] == name for r in self.conn.execute("PRAGMA table_info(tasks)"))


def _pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (a killed process not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _row(r: sqlite3.Row) -> dict:
    d = dict(r)
    d["deps"] = json.loads(d["deps"])
    d["outputs"] = json.loads(d["outputs"])
    return d


def now() -> float:
    return time.time()
