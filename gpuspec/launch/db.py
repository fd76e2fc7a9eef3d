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

Broken state: a file that is not a gpuspec state database (garbage, truncated,
text, another program's SQLite file, failing ``PRAGMA quick_check``) raises
:class:`CorruptDatabase`; :func:`open_rebuilding` moves it aside
(``state.sqlite3.corrupt-YYYYmmdd-HHMMSS``) and starts an empty one, which the
plan fills from the products on disk (desispec's ``sync`` idea). A database that
cannot be written (disk full, read-only) raises :class:`gpuspec.errors.StateError`
naming the file and SQLite's reason, never a bare sqlite3 traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from typing import Iterable

from ..errors import GpuspecError, StateError

__all__ = ["STATES", "StateDB", "db_path", "run_dir", "RunActive", "CorruptDatabase",
           "open_rebuilding", "move_aside", "manifest_pointer"]


class CorruptDatabase(StateError):
    """The state database is not a readable gpuspec database (``reason`` says why)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"state database {path} is corrupt ({reason})")
        self.path, self.reason = path, reason


#: SQLite messages that mean the file itself is broken (not locked, not unwritable).
_CORRUPT = ("file is not a database", "malformed", "file is encrypted", "not a database",
            "no such table", "no such column", "unsupported file format")


def _connect_reader(path: str) -> sqlite3.Connection:
    """A read-only connection; a hot journal (a writer killed inside a commit) is first
    rolled back through a read-write connection, as any SQLite reader would do.

    A journal is hot only while no process holds a write lock on the database, so the
    rollback cannot race a live writer; without it a read-only connection fails with
    "attempt to write a readonly database".
    """
    uri = "file:" + os.path.abspath(path)
    if os.path.exists(path + "-journal") and os.path.getsize(path + "-journal") > 0:
        with contextlib.suppress(sqlite3.OperationalError):  # read-only file system: below
            rw = sqlite3.connect(uri + "?mode=rw", uri=True, timeout=30.0)
            try:
                rw.execute("SELECT count(*) FROM sqlite_master").fetchall()
            finally:
                rw.close()
    conn = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=30.0)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except sqlite3.OperationalError as exc:
        conn.close()
        if "readonly" in str(exc):
            raise sqlite3.OperationalError(
                f"{exc}: its journal {path}-journal holds an interrupted write that "
                "only a writable connection can roll back (run gpuspec-run on the "
                "production, or read it where the file is writable)") from None
        raise
    return conn


def _corrupt(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(w in str(exc).lower()
                                                           for w in _CORRUPT)


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
    """``PROD/run``: state database and logs.

    Backends: host only.
    """
    return os.path.join(production, "run")


def db_path(production: str) -> str:
    """Path of the state database of a production.

    Backends: host only.
    """
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
        if path != ":memory:" and os.path.isdir(path):
            raise StateError(f"state database {path} is a directory, not a file")
        if readonly:
            if not os.path.exists(path):
                raise FileNotFoundError(f"no state database at {path} (has gpuspec-run been "
                                        "run on this production?)")
            with self._guard("open"):
                self.conn = _connect_reader(path)
                self._check_integrity()
                self._check_tables()
                self._check_content()
        else:
            if path != ":memory:":
                try:
                    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                except OSError as exc:
                    raise StateError(f"cannot create the folder of the state database {path}: "
                                     f"{exc.strerror}") from None
            with self._guard("open"):
                self.conn = sqlite3.connect(path, timeout=60.0)
                if path != ":memory:" and os.path.getsize(path) > 0:
                    self._check_integrity()
                    have = self._tables()
                    if have and not {"tasks", "meta"} <= have:  # never adopt a foreign file
                        raise CorruptDatabase(self.path, "not a gpuspec state database: "
                                              f"tables {', '.join(sorted(have))}")
                with self.conn:
                    self.conn.executescript(_SCHEMA)
                    cols = {r[1] for r in self.conn.execute("PRAGMA table_info(tasks)")}
                    if "warning" not in cols:  # a database of an earlier gpuspec
                        self.conn.execute("ALTER TABLE tasks ADD COLUMN warning TEXT")
                self._check_tables()
                self._check_content()
        self.conn.row_factory = sqlite3.Row

    @contextlib.contextmanager
    def _guard(self, what: str):
        """sqlite3 errors as CorruptDatabase (a broken file) or StateError (cannot write)."""
        try:
            yield
        except sqlite3.Error as exc:
            if getattr(self, "conn", None) is not None and what == "open":
                with contextlib.suppress(sqlite3.Error):
                    self.conn.close()
            if _corrupt(exc):
                raise CorruptDatabase(self.path, str(exc)) from None
            hint = ""
            if "full" in str(exc).lower():
                hint = " (free some space, then run the same command again)"
            raise StateError(f"cannot {what} the state database {self.path}: {exc}{hint}") \
                from None

    def _check_integrity(self) -> None:
        rows = self.conn.execute("PRAGMA quick_check").fetchall()
        if [tuple(r) for r in rows] != [("ok",)]:
            raise CorruptDatabase(self.path, "integrity check failed: "
                                  + "; ".join(str(r[0]) for r in rows[:3]))

    def _check_content(self) -> None:
        """Raise CorruptDatabase for unknown states or values that are not JSON."""
        bad = [r[0] for r in self.conn.execute("SELECT DISTINCT state FROM tasks")
               if r[0] not in STATES]
        if bad:
            raise CorruptDatabase(self.path, f"unknown task state {bad[0]!r}")
        for key, value in self.conn.execute("SELECT key, value FROM meta"):
            try:
                json.loads(value)
            except (TypeError, ValueError):
                raise CorruptDatabase(self.path, f"meta value {key!r} is not JSON") from None
        for name, deps, outputs in self.conn.execute("SELECT name, deps, outputs FROM tasks"):
            try:
                json.loads(deps), json.loads(outputs)
            except (TypeError, ValueError):
                raise CorruptDatabase(self.path, f"row of task {name!r} is not "
                                      "readable") from None

    def _tables(self) -> set:
        return {r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _check_tables(self) -> None:
        """Raise CorruptDatabase unless the file holds gpuspec's tasks and meta tables."""
        have = self._tables()
        if not {"tasks", "meta"} <= have:
            raise CorruptDatabase(self.path, "not a gpuspec state database: tables "
                                  f"{', '.join(sorted(have)) or 'none'}")
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(tasks)")}
        need = {"name", "step", "ord", "state", "deps", "outputs", "command", "attempts"}
        if not need <= cols:
            raise CorruptDatabase(self.path, "not a gpuspec state database: table tasks lacks "
                                  f"{', '.join(sorted(need - cols))}")

    def close(self) -> None:
        """Commit (unless read-only) and close the connection.

        Backends: host only.
        """
        try:
            if not self.readonly:
                self.commit()
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---------------------------------------------------------------- meta
    def set_meta(self, **values) -> None:
        """Store ``key=value`` pairs (JSON) in the ``meta`` table.

        Backends: host only.
        """
        with self._guard("write"), self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                  [(k, json.dumps(v)) for k, v in values.items()])

    def get_meta(self, key: str, default=None):
        """The JSON value stored under ``key``, or ``default``.

        Backends: host only.
        """
        with self._guard("read"):
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except (TypeError, ValueError):
            raise CorruptDatabase(self.path, f"meta value {key!r} is not JSON") from None

    # ---------------------------------------------------------------- run claim
    def active_run(self) -> dict | None:
        """The run recorded as writing this database, if it may still be alive.

        A claim by a process of this host that no longer exists (killed, crashed)
        is stale and ignored; a claim from another host cannot be checked and is
        returned.

        Backends: host only.
        """
        import socket

        run = self.get_meta("active_run")
        if not run:
            return None
        if not isinstance(run, dict):
            raise CorruptDatabase(self.path, "meta value 'active_run' is not a record")
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

        Backends: host only.
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
        """Remove this process's claim.

        Backends: host only.
        """
        run = self.get_meta("active_run")
        if isinstance(run, dict) and str(run.get("pid", -1)) == str(os.getpid()):
            self.commit()
            with self._guard("write"), self.conn:
                self.conn.execute("DELETE FROM meta WHERE key = 'active_run'")

    # ---------------------------------------------------------------- tasks
    def sync_tasks(self, tasks: Iterable, states: dict[str, str]) -> None:
        """Make the table hold exactly ``tasks`` with the given states.

        Static columns (step, order, deps, outputs, command) are refreshed; the
        run records (host, rank, ...) of tasks that keep their state are kept.
        Tasks no longer in the graph are deleted.

        Backends: host only.
        """
        tasks = list(tasks)
        names = {t.name for t in tasks}
        with self._guard("write"), self.conn:
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
        """Set the state and/or run columns of one task.

        Backends: host only.
        """
        self.update_many([name], state, **cols)

    def update_many(self, names: Iterable[str], state: str | None = None, **cols) -> None:
        """Set ``state`` and/or columns of the tasks ``names`` in one write.

        Backends: host only.
        """
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
        """Add one to the attempt count of task ``name``.

        Backends: host only.
        """
        self._write("UPDATE tasks SET attempts = attempts + 1 WHERE name = ?", [(name,)])

    def _write(self, sql: str, rows: list) -> None:
        with self._guard("write"):
            if self.autocommit:
                with self.conn:
                    self.conn.executemany(sql, rows)
            else:
                self.conn.executemany(sql, rows)
                self.dirty = True

    def commit(self) -> None:
        """Commit the writes made with ``autocommit = False``.

        Backends: host only.
        """
        if self.dirty:
            with self._guard("write"):
                self.conn.commit()
            self.dirty = False

    def get(self, name: str) -> dict | None:
        """The row of task ``name`` as a dict, or None.

        Backends: host only.
        """
        with self._guard("read"):
            r = self.conn.execute("SELECT * FROM tasks WHERE name = ?", (name,)).fetchone()
        return None if r is None else _row(r, self.path)

    def rows(self, state: str | None = None, step: str | None = None) -> list[dict]:
        """Tasks (as dicts) in graph order, optionally filtered by state and step.

        Backends: host only.
        """
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
        with self._guard("read"):
            return [_row(r, self.path) for r in self.conn.execute(sql, args)]

    def states(self) -> dict[str, dict]:
        """Every task row, keyed by task name.

        Backends: host only.
        """
        return {r["name"]: r for r in self.rows()}

    def counts(self) -> dict[str, dict[str, int]]:
        """``{step: {state: count}}`` for the steps present, every state listed.

        Each step also has ``warning``: how many of its ``done`` tasks carry a
        warning (made from incomplete inputs); it is not a state of its own.

        Backends: host only.
        """
        out: dict[str, dict[str, int]] = {}
        order: dict[str, int] = {}
        with self._guard("read"):
            rows = list(self.conn.execute("SELECT step, state, COUNT(*) AS n, MIN(ord) AS o "
                                          "FROM tasks GROUP BY step, state"))
        for r in rows:
            if r["state"] not in STATES:
                raise CorruptDatabase(self.path, f"unknown task state {r['state']!r}")
            out.setdefault(r["step"], {s: 0 for s in STATES})[r["state"]] = r["n"]
            order[r["step"]] = min(order.get(r["step"], r["o"]), r["o"])
        for c in out.values():
            c["warning"] = 0
        if self.has_column("warning"):
            with self._guard("read"):
                rows = list(self.conn.execute("SELECT step, COUNT(*) AS n FROM tasks WHERE "
                                              "state = 'done' AND warning IS NOT NULL GROUP BY "
                                              "step"))
            for r in rows:
                out[r["step"]]["warning"] = r["n"]
        return {s: out[s] for s in sorted(out, key=lambda s: order[s])}

    def has_column(self, name: str) -> bool:
        """True when the task table has this column (older databases lack ``warning``).

        Backends: host only.
        """
        with self._guard("read"):
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


def _row(r: sqlite3.Row, path: str = "") -> dict:
    d = dict(r)
    try:
        d["deps"] = json.loads(d["deps"])
        d["outputs"] = json.loads(d["outputs"])
    except (TypeError, ValueError):
        raise CorruptDatabase(path, f"row of task {d.get('name')!r} is not readable") from None
    return d


def move_aside(path: str) -> str:
    """Rename a broken database (and its journal) to ``PATH.corrupt-YYYYmmdd-HHMMSS``.

    Backends: host only.
    """
    dest = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while os.path.exists(dest):
        n += 1
        dest = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    try:
        os.replace(path, dest)
        for ext in ("-journal", "-wal", "-shm"):
            if os.path.exists(path + ext):
                os.replace(path + ext, dest + ext)
    except OSError as exc:
        raise StateError(f"state database {path} is corrupt and cannot be moved aside: "
                         f"{exc.strerror}") from None
    return dest


def open_rebuilding(path: str) -> tuple["StateDB", str | None]:
    """Open the database for writing; a corrupt one is moved aside and started afresh.

    Returns
    -------
    (StateDB, str or None)
        The database, and a note saying what was done (None when nothing was wrong).
        The caller fills a fresh database from the plan (states from the files).

    Backends: host only.
    """
    try:
        return StateDB(path), None
    except CorruptDatabase as exc:
        dest = move_aside(path)
        db = StateDB(path)
        note = (f"{exc}; moved it to {dest} and rebuilt the state from the products on disk "
                "(done tasks are recognised by their outputs; failures are tried again)")
        db.set_meta(rebuilt=dict(time=time.time(), reason=exc.reason, moved_to=dest))
        return db, note


def manifest_pointer(production: str) -> str:
    """``PROD/run/manifest-path``: the manifest of the last run (used to rebuild a state).

    Backends: host only.
    """
    return os.path.join(run_dir(production), "manifest-path")


def now() -> float:
    """Wall-clock time (s) stamped into the state database.

    Backends: host only.
    """
    return time.time()
