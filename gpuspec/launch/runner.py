"""Execution of a production: one process, or MPI with dynamic scheduling.

Planning (:func:`plan`)
    Builds the task graph, derives each task's state from the files and the
    dependencies (a task is ``done`` when its dependencies are done and its
    outputs exist and are not older than its inputs; otherwise ``ready`` when
    its dependencies are done, else ``waiting``), removes temporary files left
    by killed writers, and writes the states to the SQLite database. Hence a
    re-run after a crash resumes: stale ``running`` tasks become ready again and
    done tasks are not redone. Failed tasks are retried.

One process (:func:`run_serial`)
    Ready tasks run in graph order, in-process.

MPI (:func:`run_mpi`)
    Every rank binds its GPU (:func:`gpuspec.backend.bind_device`). Rank 0 keeps
    the scheduler and is the only writer of the database; a rank asks rank 0 for
    work whenever it is free and gets the next ready task. When the MPI library
    allows calls from a second thread (``THREAD_SERIALIZED`` or better) rank 0
    schedules in a helper thread and runs tasks in its main thread too, so no
    GPU idles; otherwise (or with ``run.rank0_works: false``) it only schedules.

Tasks
    Each task runs under an NVTX range named after it, with its own log file
    (:mod:`gpuspec.launch.tasklog`); the GPU memory pool is freed whenever a
    rank moves to a task of another step. A failed task fails only the tasks
    that depend on it.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import queue
import socket
import sys
import threading
import time
import traceback

from .. import backend as _backend
from ..profiling import nvtx_range
from .db import RunActive, StateDB, db_path
from .graph import Task, build_graph, outputs_current
from .manifest import Manifest
from .steps import Registry, TaskContext, get_registry
from .tasklog import log_path, task_log

__all__ = ["run_manifest", "Plan", "plan", "Scheduler", "execute_task", "run_serial", "run_mpi", "run_one",
           "mpi_environment", "InjectedFailure", "summary_line"]

TAG_REQ = 11
TAG_WORK = 12


class InjectedFailure(RuntimeError):
    """Raised for tasks listed in ``run.fail_tasks``."""


@dataclasses.dataclass
class Plan:
    """A planned production: manifest, registry, tasks and their initial states."""

    manifest: Manifest
    registry: Registry
    tasks: list
    states: dict

    @property
    def by_name(self) -> dict:
        return {t.name: t for t in self.tasks}


def _cleanup_temporaries(task: Task) -> None:
    """Remove ``.{name}.*.tmp*`` leftovers of interrupted atomic writes of the task's outputs."""
    import shutil

    for out in task.outputs:
        d, base = os.path.split(out)
        if not os.path.isdir(d):
            continue
        prefix = f".{base}."
        for name in os.listdir(d):
            if name.startswith(prefix) and ".tmp" in name[len(prefix):]:
                p = os.path.join(d, name)
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    try:
                        os.remove(p)
                    except OSError:
                        pass


def compute_states(tasks: list) -> dict:
    """Initial state of every task from files and dependencies (tasks in graph order)."""
    states: dict[str, str] = {}
    for t in tasks:
        deps_done = all(states[d] == "done" for d in t.deps)
        if deps_done and outputs_current(t):
            states[t.name] = "done"
        elif deps_done:
            states[t.name] = "ready"
        else:
            states[t.name] = "waiting"
    return states


def plan(manifest: Manifest, registry: Registry | None = None, write_db: bool = True,
         force: bool = False) -> Plan:
    """Build the graph and the initial states; record them in the database.

    Parameters
    ----------
    manifest : Manifest
    registry : Registry, optional
        Default: the manifest's ``registry``.
    write_db : bool
        False for ``--dry-run``. Otherwise this process claims the database
        (:meth:`StateDB.claim_run`) before touching anything.
    force : bool
        Take over a claim by a run that cannot be checked (another host).

    Raises
    ------
    gpuspec.launch.db.RunActive
        Another run is writing this production.
    """
    registry = registry or get_registry(manifest.data["registry"])
    tasks = build_graph(manifest, ext=registry.ext)
    states = compute_states(tasks)
    if write_db:
        os.makedirs(manifest.production, exist_ok=True)
        with StateDB(db_path(manifest.production)) as db:
            db.claim_run(f"gpuspec-run {manifest.path}", force=force)
            for t in tasks:
                if states[t.name] != "done":
                    _cleanup_temporaries(t)
            db.sync_tasks(tasks, states)
            db.update_many([t.name for t in tasks if states[t.name] != "done"], error=None)
            db.set_meta(manifest_path=manifest.path, manifest_text=manifest.text,
                        registry=registry.name, planned=time.time())
    return Plan(manifest, registry, tasks, states)


def run_manifest(manifest_path: str, *, quiet: bool = False, dry_run: bool = False,
                 force: bool = False, mpi: bool = False) -> int:
    """Python equivalent of ``gpuspec-run MANIFEST`` (one process unless ``mpi``).

    Returns the exit status: 0 only when every task is done, 1 when some task
    failed, 2 for a bad manifest or a missing step implementation.
    """
    from .cli import main

    argv = [manifest_path, "--mpi" if mpi else "--no-mpi"]
    argv += ["-q"] * quiet + ["--dry-run"] * dry_run + ["--force"] * force
    return main(argv)


# --------------------------------------------------------------------------- scheduler

class Scheduler:
    """Task states during a run; the only writer of the database.

    Parameters
    ----------
    plan : Plan
    db : StateDB or None
        Database to update (None: in memory only).
    """

    def __init__(self, plan: Plan, db: StateDB | None = None):
        self.tasks = plan.by_name
        self.state = dict(plan.states)
        self.db = db
        self.users: dict[str, list[str]] = {n: [] for n in self.tasks}
        for t in self.tasks.values():
            for d in t.deps:
                self.users[d].append(t.name)
        self.heap = [(t.order, t.name) for t in self.tasks.values()
                     if self.state[t.name] == "ready"]
        heapq.heapify(self.heap)
        self.running: set[str] = set()

    def pop_ready(self) -> Task | None:
        while self.heap:
            _, name = heapq.heappop(self.heap)
            if self.state[name] == "ready":
                return self.tasks[name]
        return None

    def started(self, task: Task, rank: int, host: str, device: str, log: str) -> None:
        self.state[task.name] = "running"
        self.running.add(task.name)
        if self.db is not None:
            self.db.update(task.name, "running", rank=rank, host=host, device=device, log=log,
                           start=time.time(), end=None, error=None)
            self.db.bump_attempts(task.name)

    def finished(self, name: str, result: dict) -> list[str]:
        """Record a result; return the names of tasks that failed because of it."""
        self.running.discard(name)
        cols = {k: result.get(k) for k in ("host", "rank", "device", "start", "end", "error",
                                           "log")}
        if result["ok"]:
            self.state[name] = "done"
            if self.db is not None:
                self.db.update(name, "done", **cols)
            for u in self.users[name]:
                if self.state[u] == "waiting" and all(self.state[d] == "done"
                                                      for d in self.tasks[u].deps):
                    self.state[u] = "ready"
                    heapq.heappush(self.heap, (self.tasks[u].order, u))
                    if self.db is not None:
                        self.db.update(u, "ready")
            return []
        self.state[name] = "failed"
        if self.db is not None:
            self.db.update(name, "failed", **cols)
        # fail every task downstream
        failed, stack = [], list(self.users[name])
        while stack:
            u = stack.pop()
            if self.state[u] in ("waiting", "ready"):
                self.state[u] = "failed"
                failed.append(u)
                stack.extend(self.users[u])
        if failed and self.db is not None:
            self.db.update_many(failed, "failed", error=f"dependency {name} failed",
                                start=None, end=None)
        return failed

    def has_ready(self) -> bool:
        # drop entries of tasks that stopped being ready (failed upstream) from the top
        while self.heap and self.state[self.heap[0][1]] != "ready":
            heapq.heappop(self.heap)
        return bool(self.heap)

    def all_finished(self) -> bool:
        return not self.running and not self.has_ready()

    def counts(self) -> dict:
        out: dict[str, int] = {}
        for s in self.state.values():
            out[s] = out.get(s, 0) + 1
        return out


def summary_line(sched: Scheduler) -> str:
    c = sched.counts()
    n = len(sched.state)
    per_step: dict[str, list[int]] = {}
    for name, t in sched.tasks.items():
        v = per_step.setdefault(t.step, [0, 0])
        v[1] += 1
        v[0] += sched.state[name] == "done"
    steps = ", ".join(f"{s} {d}/{tot}" for s, (d, tot) in per_step.items())
    return (f"{c.get('done', 0)}/{n} done, {c.get('running', 0)} running, "
            f"{c.get('failed', 0)} failed [{steps}]")


class _Progress:
    def __init__(self, sched: Scheduler, interval: float, enabled: bool = True):
        self.sched, self.interval, self.enabled = sched, interval, enabled
        self.last = 0.0
        self.last_text = ""
        self.t0 = time.time()

    def line(self, text: str) -> None:
        if self.enabled:
            print(f"gpuspec-run [{time.time() - self.t0:7.1f}s] {text}", flush=True)

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if force or (self.interval > 0 and now - self.last >= self.interval):
            self.last = now
            text = summary_line(self.sched)
            if text != self.last_text:  # nothing new: stay quiet
                self.last_text = text
                self.line(text)

    def failed(self, name: str, result: dict, downstream: list) -> None:
        more = f"; {len(downstream)} dependent task(s) failed too" if downstream else ""
        self.line(f"FAILED {name}: {result.get('error')} (log {result.get('log')}){more}")


# --------------------------------------------------------------------------- tasks

def execute_task(task: Task, manifest: Manifest, registry: Registry, *, rank: int = 0,
                 device: str = "cpu", tee: bool = False) -> dict:
    """Run one task in this process, with its own log and NVTX range.

    Returns
    -------
    dict
        ``ok``, ``error`` (one line, or None), ``host``, ``rank``, ``device``,
        ``start``, ``end``, ``log``.
    """
    prod = manifest.production
    log = log_path(prod, task.step, task.name)
    run = manifest.data["run"]
    host = socket.gethostname()
    start = time.time()
    error = None
    with task_log(log, header=f"rank {rank} device {device} task {task.name}", tee=tee) as f:
        print(f"command: {task.command}")
        print(f"inputs: {task.inputs}")
        print(f"outputs: {task.outputs}")
        try:
            with nvtx_range(task.name):
                if run.get("sleep"):
                    time.sleep(run["sleep"])
                if task.name in run.get("fail_tasks", []):
                    raise InjectedFailure(f"task {task.name} failed on purpose (run.fail_tasks)")
                _cleanup_temporaries(task)
                fn = registry.func(task.step)
                ctx = TaskContext(backend=manifest.data["backend"], production=prod, rank=rank,
                                  device=device)
                fn(task, ctx)
                missing = [o for o in task.outputs if not os.path.exists(o)]
                if missing:
                    raise RuntimeError(f"step {task.step} did not write {', '.join(missing)}")
        except Exception as exc:
            traceback.print_exc(file=f)
            if tee:
                traceback.print_exc(file=sys.__stderr__)
            msg = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {msg[0] if msg else ''}"
        end = time.time()
        print(f"{'done' if error is None else 'FAILED'} in {end - start:.2f} s"
              + (f": {error}" if error else ""))
    return dict(name=task.name, ok=error is None, error=error, host=host, rank=rank,
                device=device, start=start, end=end, log=log)


class _Worker:
    """Runs tasks on this rank: frees the GPU pool when the step changes."""

    def __init__(self, manifest: Manifest, registry: Registry, rank: int, device: str):
        self.manifest, self.registry, self.rank, self.device = manifest, registry, rank, device
        self.last_step = None

    def run(self, task: Task, tee: bool = False) -> dict:
        if self.last_step is not None and task.step != self.last_step:
            _backend.free_memory()
        self.last_step = task.step
        return execute_task(task, self.manifest, self.registry, rank=self.rank,
                            device=self.device, tee=tee)


def _device_label(manifest: Manifest) -> str:
    try:
        xp = _backend.get_xp(manifest.data["backend"])
        return _backend.device_name(xp)
    except Exception as exc:  # pragma: no cover - backend problems are reported per task
        return f"unavailable ({exc})"


def _exit_code(sched: Scheduler) -> int:
    return 0 if all(s == "done" for s in sched.state.values()) else 1


def _final(progress: _Progress, sched: Scheduler, manifest: Manifest) -> None:
    progress.tick(force=True)
    prod = manifest.production
    c = sched.counts()
    if c.get("failed"):
        progress.line(f"{c['failed']} task(s) failed: gpuspec tasks {prod} --state failed")
    progress.line(f"outputs in {prod}; state: gpuspec status {prod} --once")


def run_serial(p: Plan, verbose: bool = True) -> int:
    """Run every ready task in this process; return 0 when every task is done."""
    m = p.manifest
    with StateDB(db_path(m.production)) as db:
        sched = Scheduler(p, db)
        progress = _Progress(sched, m.data["run"]["progress_interval"], verbose)
        device = _device_label(m)
        worker = _Worker(m, p.registry, 0, device)
        host = socket.gethostname()
        progress.line(f"{len(p.tasks)} tasks, {sched.counts().get('done', 0)} already done; "
                      f"1 process on {device}")
        db.autocommit = False  # one commit per task: its result and the next start
        while True:
            t = sched.pop_ready()
            if t is None:
                break
            sched.started(t, 0, host, device, log_path(m.production, t.step, t.name))
            db.commit()
            res = worker.run(t)
            down = sched.finished(t.name, res)
            if not res["ok"]:
                progress.failed(t.name, res, down)
            progress.tick()
        db.commit()
        db.release_run()
        _final(progress, sched, m)
        return _exit_code(sched)


def run_one(manifest: Manifest, name: str, registry: Registry | None = None,
            force: bool = False) -> int:
    """Run one task alone, in this process, with its log on the terminal.

    The dependencies must be done (their outputs present) unless ``force``.
    The database records the attempt; when the task succeeds, its dependents
    that had failed because of it go back to waiting/ready. Returns 0 on success.
    """
    registry = registry or get_registry(manifest.data["registry"])
    tasks = build_graph(manifest, ext=registry.ext)
    by = {t.name: t for t in tasks}
    if name not in by:
        near = [n for n in by if name in n][:5]
        print(f"gpuspec: no task {name!r} in this production"
              + (f" (did you mean {', '.join(near)}?)" if near else ""), file=sys.stderr)
        return 2
    task = by[name]
    states = compute_states(tasks)
    missing = [d for d in task.deps if states[d] != "done"]
    if missing and not force:
        print(f"gpuspec: task {name} needs {', '.join(missing[:5])} done first "
              "(use --force to run anyway)", file=sys.stderr)
        return 2
    device = _device_label(manifest)
    with StateDB(db_path(manifest.production)) as db:
        try:
            db.claim_run(f"gpuspec retry {name}", force=force)
        except RunActive as exc:
            print(f"gpuspec: {exc}", file=sys.stderr)
            return 2
        try:
            return _run_one_claimed(db, manifest, registry, tasks, task, states, device)
        finally:
            db.release_run()


def _run_one_claimed(db, manifest, registry, tasks, task, states, device) -> int:
    name = task.name
    if db.get(name) is None:
        db.sync_tasks(tasks, states)
        db.set_meta(manifest_path=manifest.path, manifest_text=manifest.text,
                    registry=registry.name)
    db.update(name, "running", host=socket.gethostname(), rank=0, device=device,
              start=time.time(), end=None, error=None,
              log=log_path(manifest.production, task.step, name))
    db.bump_attempts(name)
    res = _Worker(manifest, registry, 0, device).run(task, tee=True)
    cols = {k: res[k] for k in ("host", "rank", "device", "start", "end", "error", "log")}
    db.update(name, "done" if res["ok"] else "failed", **cols)
    if res["ok"]:
        # tasks failed only because of this one can run again; those still
        # downstream of another failed task stay failed (and name it)
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
    print(f"gpuspec: task {name} {'done' if res['ok'] else 'FAILED: ' + str(res['error'])} "
          f"(log {res['log']})")
    return 0 if res["ok"] else 1


# --------------------------------------------------------------------------- MPI

_MPI_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PALS_SIZE", "MPI_LOCALNRANKS",
            "SLURM_STEP_NUM_TASKS")


def mpi_environment(environ: dict | None = None) -> int:
    """Number of ranks an MPI launcher started this process with (1 when not launched).

    Reads ``PMI_SIZE`` (MPICH/Hydra, Cray), ``OMPI_COMM_WORLD_SIZE`` (Open MPI),
    ``PMIX_SIZE``, ``PALS_SIZE``, ``MPI_LOCALNRANKS`` and ``SLURM_STEP_NUM_TASKS`` (srun).
    """
    env = os.environ if environ is None else environ
    for var in _MPI_ENV:
        v = env.get(var)
        if v:
            try:
                n = int(v)
            except ValueError:
                continue
            if n > 1:
                return n
    return 1


def run_mpi(comm, manifest_path: str | None, load, verbose: bool = True) -> int:
    """Run a production on every rank of ``comm``; returns the same exit code on every rank.

    Parameters
    ----------
    comm : mpi4py communicator
    manifest_path : str
        Manifest file (read by rank 0 only).
    load : callable
        ``load(path) -> (Plan, None)`` or ``(None, exit_code)``; called on rank 0.
    """
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    p, code = (load(manifest_path) if rank == 0 else (None, None))
    code = comm.bcast(code if p is None else None, root=0)
    if code is not None:
        return code
    manifest = comm.bcast(p.manifest if rank == 0 else None, root=0)
    registry = p.registry if rank == 0 else get_registry(manifest.data["registry"])
    if manifest.data["backend"] != "numpy":
        try:
            _backend.bind_device(comm)
        except Exception as exc:  # pragma: no cover - GPU only
            print(f"gpuspec-run rank {rank}: cannot bind a GPU: {exc}", file=sys.stderr)
    else:
        _backend.local_rank(comm)  # keep the collective Split_type symmetric
    device = _device_label(manifest)
    host = socket.gethostname()
    if rank != 0:
        worker = _Worker(manifest, registry, rank, device)
        comm.send(("ready", rank, host, device, None), dest=0, tag=TAG_REQ)
        status = MPI.Status()
        while True:
            # poll rather than block in recv: an idle rank must not spin a core
            while not comm.Iprobe(source=0, tag=TAG_WORK, status=status):
                time.sleep(0.001)
            kind, task = comm.recv(source=0, tag=TAG_WORK)
            if kind == "stop":
                break
            res = worker.run(task)
            comm.send(("ready", rank, host, device, res), dest=0, tag=TAG_REQ)
        return comm.bcast(None, root=0)

    # rank 0
    rank0_works = bool(manifest.data["run"]["rank0_works"])
    threaded = rank0_works and MPI.Query_thread() >= MPI.THREAD_SERIALIZED
    sched_box: dict = {}
    errors: list = []
    to_local: queue.Queue = queue.Queue()
    from_local: queue.Queue = queue.Queue()

    def coordinator():
        db = StateDB(db_path(manifest.production))  # created in this thread: sole writer
        db.autocommit = False  # commit when idle, or at least every 0.2 s when busy
        last_commit = time.time()
        try:
            sched = Scheduler(p, db)
            sched_box["s"] = sched
            progress = _Progress(sched, manifest.data["run"]["progress_interval"], verbose)
            nworkers = size - 1 + (1 if threaded else 0)
            progress.line(f"{len(p.tasks)} tasks, {sched.counts().get('done', 0)} already done; "
                          f"{size} MPI ranks ({nworkers} running tasks), rank 0 on {device}")
            idle: list[int] = []
            info: dict[int, tuple] = {}
            active = nworkers
            status = MPI.Status()

            def handle(msg):
                _, r, h, d, res = msg
                info[r] = (h, d)
                if res is not None:
                    down = sched.finished(res["name"], res)
                    if not res["ok"]:
                        progress.failed(res["name"], res, down)
                idle.append(r)

            while active > 0:
                busy = False
                if threaded:
                    try:
                        handle(from_local.get_nowait())
                        busy = True
                    except queue.Empty:
                        pass
                if size > 1 and comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_REQ, status=status):
                    handle(comm.recv(source=status.Get_source(), tag=TAG_REQ))
                    busy = True
                while idle:
                    t = sched.pop_ready()
                    if t is None:
                        break
                    r = idle.pop(0)
                    h, d = info[r]
                    sched.started(t, r, h, d, log_path(manifest.production, t.step, t.name))
                    if r == 0:
                        to_local.put(t)
                    else:
                        comm.send(("run", t), dest=r, tag=TAG_WORK)
                if sched.all_finished():
                    while idle:
                        r = idle.pop(0)
                        if r == 0:
                            to_local.put(None)
                        else:
                            comm.send(("stop", None), dest=r, tag=TAG_WORK)
                        active -= 1
                progress.tick()
                if db.dirty and (not busy or time.time() - last_commit > 0.2):
                    db.commit()
                    last_commit = time.time()
                if not busy:
                    time.sleep(0.002)
            db.commit()
            db.release_run()
            _final(progress, sched, manifest)
        except BaseException as exc:  # pragma: no cover - a bug; do not leave ranks hanging
            errors.append(exc)
            traceback.print_exc()
            to_local.put(None)
        finally:
            db.close()

    if threaded:
        th = threading.Thread(target=coordinator, name="gpuspec-scheduler", daemon=True)
        th.start()
        worker = _Worker(manifest, p.registry, 0, device)
        from_local.put(("ready", 0, host, device, None))
        while True:
            t = to_local.get()
            if t is None:
                break
            from_local.put(("ready", 0, host, device, worker.run(t)))
        th.join()
    else:
        coordinator()
    if errors:  # pragma: no cover
        comm.Abort(3)
    code = _exit_code(sched_box["s"])
    return comm.bcast(code, root=0)
