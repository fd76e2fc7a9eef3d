"""Running one task in this process: its log, its NVTX range, the GPU memory pool.

Each task runs under an NVTX range named after it, with its own log file
(:mod:`gpuspec.launch.tasklog`); the GPU memory pool is freed whenever a rank
moves to a task of another step. An exception fails the task (error = type and
first line, traceback in the log); Ctrl-C (KeyboardInterrupt) is written to the
log and passed on, so that the caller records the task as interrupted.

With ``run.isolate`` (the default) :class:`Worker` runs its tasks in a task
process (:mod:`gpuspec.launch.isolate`): a task whose process dies (a signal, a
crash in native code, the out-of-memory killer) fails alone, with the cause.
``run.crash_tasks`` makes chosen tasks kill their own process (drills, tests).

Host side; the task functions run on the manifest's backend.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback

from .. import backend as _backend
from ..profiling import nvtx_range
from .graph import Task, cleanup_temporaries
from .manifest import Manifest
from .registry import Registry, TaskContext
from .tasklog import log_path, task_log

__all__ = ["execute_task", "Worker", "InjectedFailure", "device_label"]


class InjectedFailure(RuntimeError):
    """Raised for tasks listed in ``run.fail_tasks``."""


def _run_task_body(task: Task, manifest: Manifest, registry: Registry, rank: int,
                   device: str) -> None:
    run = manifest.data["run"]
    if run.get("sleep"):
        time.sleep(run["sleep"])
    if task.name in run.get("fail_tasks", []):
        raise InjectedFailure(f"task {task.name} failed on purpose (run.fail_tasks)")
    crash = (run.get("crash_tasks") or {}).get(task.name)
    if crash:
        import signal

        sys.stdout.flush()
        os.kill(os.getpid(), getattr(signal, str(crash).upper()))  # run.crash_tasks
        time.sleep(5.0)  # a signal that does not kill at once (e.g. SIGTERM handled)
    cleanup_temporaries(task)
    fn = registry.func(task.step)
    fn(task, TaskContext(backend=manifest.data["backend"], production=manifest.production,
                         rank=rank, device=device))
    missing = [o for o in task.outputs if not os.path.exists(o)]
    if missing:
        raise RuntimeError(f"step {task.step} did not write {', '.join(missing)}")


def execute_task(task: Task, manifest: Manifest, registry: Registry, *, rank: int = 0,
                 device: str = "cpu", tee: bool = False) -> dict:
    """Run one task in this process, with its own log and NVTX range.

    Returns
    -------
    dict
        ``name``, ``ok``, ``error`` (one line, or None), ``host``, ``rank``,
        ``device``, ``start``, ``end``, ``log``.

    Raises
    ------
    KeyboardInterrupt
        Passed on (after a line in the task's log).

    Backends: host only.
    """
    log = log_path(manifest.production, task.step, task.name)
    host = socket.gethostname()
    start = time.time()
    error = None
    with task_log(log, header=f"rank {rank} device {device} task {task.name}", tee=tee) as f:
        print(f"command: {task.command}")
        print(f"inputs: {task.inputs}")
        print(f"outputs: {task.outputs}")
        if task.params.get("missing"):
            print(f"missing inputs (failed upstream): {task.params['missing']}")
        try:
            with nvtx_range(task.name):
                _run_task_body(task, manifest, registry, rank, device)
        except KeyboardInterrupt:
            print(f"interrupted (KeyboardInterrupt) after {time.time() - start:.2f} s")
            raise
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


class Worker:
    """Runs tasks on this rank: sets the CPU threads, frees the GPU pool when the step changes.

    Parameters
    ----------
    manifest, registry, rank, device
        As for :func:`execute_task`.
    isolate : bool, optional
        Run the tasks in a task process (default: ``run.isolate`` of the manifest).
    gpu : int, optional
        GPU index this rank is bound to (given to the task process).
    """

    def __init__(self, manifest: Manifest, registry: Registry, rank: int, device: str,
                 isolate: bool | None = None, gpu: int | None = None):
        from .. import threads as _threads

        self.manifest, self.registry, self.rank, self.device = manifest, registry, rank, device
        self.last_step = None
        # run.threads of the manifest, unless --threads was given (gpuspec.threads); the
        # entry points (gpuspec, gpuspec-run) have already set gpuspec's default
        if manifest.data["run"].get("threads"):
            _threads.configure_threads(manifest.data["run"]["threads"], explicit=False)
        if isolate is None:
            isolate = bool(manifest.data["run"].get("isolate", True))
        self.proc = None
        if isolate:
            from .isolate import TaskProcess

            self.proc = TaskProcess(manifest, manifest.data["registry"], rank, device, gpu=gpu,
                                    threads=_threads_now())

    def run(self, task: Task, tee: bool = False) -> dict:
        """Run ``task`` (in the isolating subprocess when there is one); its result record.

        Backends: host only.
        """
        if self.proc is not None:
            return self.proc.run(task, tee=tee)
        if self.last_step is not None and task.step != self.last_step:
            _backend.free_memory()
        self.last_step = task.step
        return execute_task(task, self.manifest, self.registry, rank=self.rank,
                            device=self.device, tee=tee)

    def close(self) -> None:
        """Stop the task process, if any.

        Backends: host only.
        """
        if self.proc is not None:
            self.proc.close()


def _threads_now() -> int | None:
    """The thread count this process has configured (passed on to a task process)."""
    from .. import threads as _threads

    return _threads._state.get("n")


def device_label(manifest: Manifest) -> str:
    """Description of this process's compute device for the manifest's backend.

    Backends: host only (asks :mod:`gpuspec.backend` which device ``backend`` selects).
    """
    try:
        xp = _backend.get_xp(manifest.data["backend"])
        return _backend.device_name(xp)
    except _backend.BackendUnavailable as exc:  # reported per task
        return f"unavailable ({exc})"
