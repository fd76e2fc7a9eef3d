"""A production on MPI ranks: one rank per GPU, rank 0 schedules.

Every rank binds its GPU (:func:`gpuspec.backend.bind_device`); a rank that
cannot is an error on every rank (ranks must never silently share GPU 0).
Rank 0 keeps the scheduler and is the only writer of the database; a rank asks
rank 0 for work whenever it is free and gets the next ready task. When the MPI
library allows calls from a second thread (``THREAD_SERIALIZED`` or better)
rank 0 schedules in a helper thread and runs tasks in its main thread too, so
no GPU idles; otherwise (or with ``run.rank0_works: false``) it only schedules.
Progress lines go to rank 0's stdout (never into a task log).

Host side (the tasks run on the manifest's backend).
"""

from __future__ import annotations

import queue
import socket
import sys
import threading
import time
import traceback

from .. import backend as _backend
from ..errors import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, GpuspecError,
                      Terminated, describe)
from .db import StateDB, db_path
from .execute import Worker, device_label
from .registry import get_registry
from .scheduler import Progress, Scheduler, exit_code, final_lines, interrupt_reason
from .tasklog import log_path

__all__ = ["run_mpi", "PlanFailedOnRoot", "BindError"]

TAG_REQ = 11
TAG_WORK = 12


class PlanFailedOnRoot(RuntimeError):
    """Rank 0 could not plan the production (it reports why); raised on the other ranks."""


class BindError(RuntimeError):
    """Some rank could not bind its GPU; the message lists every such rank."""


def _share_plan(comm, load):
    """Rank 0 plans (``load()``); every rank gets the manifest or an exception."""
    rank = comm.Get_rank()
    p, exc = None, None
    if rank == 0:
        try:
            p = load()
        except BaseException as e:  # broadcast first: the other ranks must not hang
            exc = e
    manifest = comm.bcast(None if p is None else p.manifest, root=0)
    if manifest is None:
        if rank == 0:
            raise exc
        raise PlanFailedOnRoot("rank 0 could not plan the production")
    return p, manifest


def _bind(comm, manifest) -> int | None:
    """Bind every rank to its GPU; raise BindError on every rank if one fails.

    Returns the GPU index of this rank (None on numpy), given to its task process.
    """
    err, dev = None, None
    if manifest.data["backend"] != "numpy":
        try:
            dev = _backend.bind_device(comm)
        except Exception as exc:
            err = f"rank {comm.Get_rank()} on {socket.gethostname()}: {type(exc).__name__}: {exc}"
    else:
        _backend.local_rank(comm)  # keep the collective Split_type symmetric
    errors = [e for e in comm.allgather(err) if e]
    if errors:
        raise BindError("cannot bind a GPU: " + "; ".join(errors))
    return dev


def _worker_loop(comm, worker: Worker, host: str, device: str) -> None:
    """A rank other than 0: ask for work, run it, report, until told to stop."""
    from mpi4py import MPI

    rank = comm.Get_rank()
    comm.send(("ready", rank, host, device, None), dest=0, tag=TAG_REQ)
    status = MPI.Status()
    while True:
        # poll rather than block in recv: an idle rank must not spin a core
        while not comm.Iprobe(source=0, tag=TAG_WORK, status=status):
            time.sleep(0.001)
        kind, task = comm.recv(source=0, tag=TAG_WORK)
        if kind == "stop":
            return
        res = worker.run(task)
        comm.send(("ready", rank, host, device, res), dest=0, tag=TAG_REQ)


class _Coordinator:
    """Rank 0's scheduler loop: answers requests, hands out ready tasks, writes the database."""

    def __init__(self, comm, plan, device: str, threaded: bool, verbose: bool, stream):
        self.comm, self.plan, self.device, self.threaded = comm, plan, device, threaded
        self.verbose, self.stream = verbose, stream
        self.size = comm.Get_size()
        self.to_local: queue.Queue = queue.Queue()
        self.from_local: queue.Queue = queue.Queue()
        self.nworkers = self.size - 1 + (1 if threaded else 0)
        self.idle: list[int] = []
        self.info: dict[int, tuple] = {}
        self.sched: Scheduler | None = None
        self.error: BaseException | None = None
        self.interrupt = threading.Event()
        self.stop_reason: BaseException | None = None
        from mpi4py import MPI

        self.any_source = MPI.ANY_SOURCE

    def _handle(self, msg, progress: Progress) -> None:
        _, r, h, d, res = msg
        self.info[r] = (h, d)
        if res is not None:
            down = self.sched.finished(res["name"], res)
            if not res["ok"]:
                progress.failed(res["name"], res, down)
        self.idle.append(r)

    def _dispatch(self) -> None:
        prod = self.plan.manifest.production
        while self.idle:
            t = self.sched.pop_ready()
            if t is None:
                return
            r = self.idle.pop(0)
            h, d = self.info[r]
            self.sched.started(t, r, h, d, log_path(prod, t.step, t.name))
            if r == 0:
                self.to_local.put(t)
            else:
                self.comm.send(("run", t), dest=r, tag=TAG_WORK)

    def _stop_idle(self) -> int:
        """Tell the idle workers to stop; return how many were stopped."""
        n = 0
        while self.idle:
            r = self.idle.pop(0)
            if r == 0:
                self.to_local.put(None)
            else:
                self.comm.send(("stop", None), dest=r, tag=TAG_WORK)
            n += 1
        return n

    def _poll(self, progress: Progress, status) -> bool:
        """Handle at most one message from each source; True when there was one."""
        busy = False
        if self.threaded:
            try:
                self._handle(self.from_local.get_nowait(), progress)
                busy = True
            except queue.Empty:
                pass
        if self.size > 1 and self.comm.Iprobe(source=self.any_source, tag=TAG_REQ, status=status):
            self._handle(self.comm.recv(source=status.Get_source(), tag=TAG_REQ), progress)
            busy = True
        return busy

    def run(self) -> None:
        """The loop (in the helper thread, or in rank 0's main thread)."""
        from mpi4py import MPI

        m = self.plan.manifest
        db = StateDB(db_path(m.production))  # created in this thread: sole writer
        db.autocommit = False  # commit when idle, or at least every 0.2 s when busy
        try:
            self.sched = Scheduler(self.plan, db)
            progress = Progress(self.sched, m.data["run"]["progress_interval"], self.verbose,
                                nworkers=self.nworkers, stream=self.stream)
            progress.line(f"{len(self.plan.tasks)} tasks, {self.sched.initially_done} already "
                          f"done; {self.size} MPI ranks ({self.nworkers} running tasks), rank 0 "
                          f"on {self.device}")
            self._loop(db, progress, MPI.Status())
            db.commit()
            db.release_run()
            final_lines(progress, self.sched, m)
        except BaseException as exc:  # a bug or Ctrl-C: record it, do not leave ranks hanging
            self.error = exc
            if self.sched is not None:
                try:
                    self.sched.interrupted(self.sched.running, why=_why(exc))
                    db.commit()
                    db.release_run()
                except Exception:  # noqa: BLE001 - the database itself may be what failed
                    pass
            if not isinstance(exc, (KeyboardInterrupt, Terminated, GpuspecError)):
                traceback.print_exc(file=self.stream)
            self.to_local.put(None)
        finally:
            db.close()

    def _loop(self, db: StateDB, progress: Progress, status) -> None:
        active, last_commit = self.nworkers, time.time()
        while active > 0:
            if self.interrupt.is_set():
                raise self.stop_reason or KeyboardInterrupt()
            busy = self._poll(progress, status)
            self._dispatch()
            if self.sched.all_finished():
                active -= self._stop_idle()
            progress.tick()
            if db.dirty and (not busy or time.time() - last_commit > 0.2):
                db.commit()
                last_commit = time.time()
            if not busy:
                time.sleep(0.002)


def _why(exc: BaseException) -> str:
    if isinstance(exc, (KeyboardInterrupt, Terminated)):
        return interrupt_reason(exc)
    return f"run stopped by a scheduler error: {type(exc).__name__}: {exc}"


def _rank0(comm, p, device: str, host: str, verbose: bool, gpu=None) -> _Coordinator:
    from mpi4py import MPI

    m = p.manifest
    threaded = bool(m.data["run"]["rank0_works"]) and MPI.Query_thread() >= MPI.THREAD_SERIALIZED
    co = _Coordinator(comm, p, device, threaded, verbose, stream=sys.stdout)
    if not threaded:
        co.run()
        return co
    th = threading.Thread(target=co.run, name="gpuspec-scheduler", daemon=True)
    th.start()
    worker = Worker(m, p.registry, 0, device, gpu=gpu)
    co.from_local.put(("ready", 0, host, device, None))
    try:
        while True:
            t = co.to_local.get()
            if t is None:
                break
            co.from_local.put(("ready", 0, host, device, worker.run(t)))
    except (KeyboardInterrupt, Terminated) as exc:
        co.stop_reason = exc
        co.interrupt.set()
    finally:
        worker.close()
    th.join()
    return co


def run_mpi(comm, load, verbose: bool = True) -> int:
    """Run a production on every rank of ``comm``; returns the same exit code on every rank.

    Parameters
    ----------
    comm : mpi4py communicator
    load : callable
        ``load() -> Plan``, called on rank 0 only (e.g. :func:`gpuspec.launch.plan.load_plan`).
    verbose : bool
        Progress lines on rank 0's stdout.

    Raises
    ------
    Whatever ``load`` raises (on rank 0); PlanFailedOnRoot (other ranks); BindError
    (every rank); KeyboardInterrupt (rank 0, after recording the running tasks as
    interrupted; the other ranks are then aborted).

    Backends: host only.
    """
    rank = comm.Get_rank()
    p, manifest = _share_plan(comm, load)
    gpu = _bind(comm, manifest)
    device = device_label(manifest)
    host = socket.gethostname()
    if rank != 0:
        worker = Worker(manifest, get_registry(manifest.data["registry"]), rank, device,
                        gpu=gpu)
        try:
            _worker_loop(comm, worker, host, device)
        finally:
            worker.close()
        return comm.bcast(None, root=0)
    co = _rank0(comm, p, device, host, verbose, gpu=gpu)
    if isinstance(co.error, (KeyboardInterrupt, Terminated)):
        code = EXIT_TERMINATED if isinstance(co.error, Terminated) else EXIT_INTERRUPTED
        print("gpuspec-run: interrupted; the running tasks are recorded as interrupted; run "
              "the same command again to resume", file=sys.stderr, flush=True)
        comm.Abort(code)
    if co.error is not None:  # the state database failed, or a scheduler bug
        msg, code = describe(co.error)
        print(f"gpuspec-run: error: {msg}", file=sys.stderr, flush=True)
        comm.Abort(code if code != EXIT_FAILED else EXIT_USAGE)
    return comm.bcast(exit_code(co.sched), root=0)
