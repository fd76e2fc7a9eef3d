"""Tasks in a child process, so that a task whose process dies fails only that task.

A crash in native code (SIGSEGV in compiled code, an abort in a library), the
out-of-memory killer (SIGKILL), ``os._exit`` in a task: each kills the process
that runs the task. With ``run.isolate: true`` (the default) every rank (or the
one process) keeps one long-lived **task process**, a fresh interpreter
(``python -m gpuspec.launch.isolate FD``: fork + exec, safe with MPI, threads and
CUDA in the parent, whatever the parent's ``__main__``) talking to the rank over
a socket pair, reused from task to task, so the interpreter, the imports and a
GPU's memory pool are paid for once. The rank sends it one task at a time and waits for the
result or for its death. A death is recorded as the task's failure with its
cause, e.g. ``TaskProcessDied: killed by signal 11 (SIGSEGV: a crash in native
code)``, a line is appended to the task's log, the task's temporary files are
removed, and the next task gets a new task process: the other tasks go on.

The task process dies with its rank (``PR_SET_PDEATHSIG`` and a watchdog on the
parent pid), so a killed rank never leaves a task running. Ctrl-C reaches it
too (same process group); the rank waits a moment for it, then stops it.

Host side; the task process binds the rank's GPU (same device index) before
its first task.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

__all__ = ["TaskProcess", "TaskProcessDied", "death_cause"]

#: What a signal usually means when it kills a task process.
_SIGNAL_HINTS = {
    "SIGSEGV": "a crash in native code",
    "SIGBUS": "a crash in native code (bus error)",
    "SIGILL": "a crash in native code (illegal instruction)",
    "SIGFPE": "a crash in native code (arithmetic fault)",
    "SIGABRT": "aborted by a library",
    "SIGKILL": "the out-of-memory killer, a time limit or kill -9",
    "SIGTERM": "terminated",
    "SIGINT": "interrupted",
    "SIGXCPU": "CPU time limit",
    "SIGXFSZ": "file-size limit",
}


class TaskProcessDied(RuntimeError):
    """The process running a task died before reporting a result."""


def death_cause(exitcode: int | None) -> str:
    """Words for the exit code of a dead task process (negative: killed by a signal).

    Backends: host only.
    """
    if exitcode is None:
        return "vanished (no exit status)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = _SIGNAL_HINTS.get(name)
        return f"killed by signal {-exitcode} ({name}{': ' + hint if hint else ''})"
    return f"exited with status {exitcode} before reporting a result"


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux prctl; a watchdog thread elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the watchdog does it
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="gpuspec-parent-watch", daemon=True).start()


def _bind(gpu: int | None, backend: str) -> None:
    if gpu is None:
        return
    from .. import backend as _backend

    if _backend.resolve(backend) != "cupy":
        return
    xp = _backend.get_xp("cupy")
    xp.cuda.Device(int(gpu)).use()


def _child_main(fd: int) -> None:
    """``python -m gpuspec.launch.isolate FD``: a task process talking over socket ``fd``.

    Ctrl-C or SIGTERM end it quietly (after telling the rank when it can).
    """
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        kind, init = conn.recv()
        sys.path[:] = init["path"]  # the rank's (a registry given as module:attribute)
        _child_loop(conn, *init["args"], init["parent"])
    except BaseException:  # noqa: BLE001 - stopped while idle or sending: no traceback
        os._exit(1)
    os._exit(0)


def _child_loop(conn, manifest, registry_name, rank, device, gpu, threads, parent) -> None:
    _die_with_parent(parent)
    from ..errors import handle_sigterm
    from ..heap import configure_heap
    from ..threads import configure_threads
    from .execute import Worker
    from .registry import get_registry

    handle_sigterm()
    try:
        configure_threads(threads)
        configure_heap()
        _bind(gpu, manifest.data["backend"])
        worker = Worker(manifest, get_registry(registry_name), rank, device, isolate=False)
    except Exception as exc:  # noqa: BLE001 - reported to the rank, which fails the task
        conn.send(("broken", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] != "run":
            return
        _, task, tee = msg
        try:
            res = worker.run(task, tee=tee)
        except BaseException as exc:  # Ctrl-C / SIGTERM: report, then stop
            try:
                conn.send(("interrupted", type(exc).__name__))
            except BaseException:  # noqa: BLE001
                pass
            return
        conn.send(("result", res))


class TaskProcess:
    """One long-lived child process that runs tasks for this rank.

    Parameters
    ----------
    manifest : Manifest
    registry_name : str
        The manifest's ``registry`` (resolved again in the task process).
    rank : int
    device : str
        Device description recorded with each task.
    gpu : int or None
        GPU index the rank is bound to (the task process binds the same one).
    threads : int or None
        CPU threads of the task process.
    """

    #: Seconds a task process gets to report an interruption before it is stopped.
    GRACE = 3.0

    def __init__(self, manifest, registry_name: str, rank: int, device: str, gpu=None,
                 threads=None):
        self.args = (manifest, registry_name, rank, device, gpu, threads)
        self.proc = None
        self.conn = None
        self.pidfd = None

    def _start(self) -> None:
        import socket
        import subprocess
        from multiprocessing.connection import Connection

        mine, theirs = socket.socketpair()
        try:
            fd = theirs.fileno()
            self.proc = subprocess.Popen([sys.executable, "-m", "gpuspec.launch.isolate",
                                          str(fd)], pass_fds=(fd,), close_fds=True)
        finally:
            theirs.close()
        self.conn = Connection(mine.detach())
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: polled instead
            self.pidfd = None
        self.conn.send(("init", dict(path=list(sys.path), args=self.args,
                                     parent=os.getpid())))
        kind, why = self._receive(None)
        if kind != "ready":
            self._reap()
            raise TaskProcessDied(f"the task process could not start: {why}")

    def _receive(self, timeout):
        """(kind, payload) from the task process, or ("died", cause) when it dies."""
        from multiprocessing.connection import wait

        deadline = None if timeout is None else time.time() + timeout
        while True:
            step = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.time()))
            watch = [self.conn] + ([self.pidfd] if self.pidfd is not None else [])
            ready = wait(watch, step)
            if self.conn in ready:
                try:
                    return self.conn.recv()
                except (EOFError, OSError):
                    break
            if ready or self.proc.poll() is not None:
                # dead (or its socket closed): a last message may still be in the socket
                if self.conn.poll(0):
                    try:
                        return self.conn.recv()
                    except (EOFError, OSError):
                        pass
                break
            if deadline is not None and time.time() >= deadline:
                return "timeout", None
        try:
            code = self.proc.wait(5.0)
        except Exception:  # noqa: BLE001 - still alive with a closed socket
            self.proc.kill()
            code = self.proc.wait(5.0)
        return "died", death_cause(code)

    def _reap(self) -> None:
        """Forget the current process (stopping it if still alive)."""
        import subprocess

        proc, self.proc = self.proc, None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)

    def run(self, task, tee: bool = False) -> dict:
        """Run ``task`` in the task process; its result dict, or a failure if it died.

        Raises
        ------
        KeyboardInterrupt, gpuspec.errors.Terminated
            Passed on after the task process was given :attr:`GRACE` seconds and stopped.

        Backends: host only.
        """
        start = time.time()
        try:
            if self.proc is None or self.proc.poll() is not None:
                self._reap()
                self._start()
            self.conn.send(("run", task, tee))
            kind, payload = self._receive(None)
        except TaskProcessDied as exc:
            return _failure(task, self.args, start, str(exc))
        except BaseException:
            self._interrupted()
            raise
        if kind == "result":
            return payload
        if kind == "interrupted":
            self._reap()
            raise KeyboardInterrupt
        cause = payload if kind == "died" else f"sent {kind!r}"
        self._reap()
        return _failure(task, self.args, start, f"the task's process died: {cause}")

    def _interrupted(self) -> None:
        """Ctrl-C or SIGTERM in this process: let the task process report, then stop it."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._receive(self.GRACE)
            except BaseException:  # noqa: BLE001 - a second Ctrl-C: stop at once
                pass
        self._reap()

    def close(self) -> None:
        """Stop the task process (at the end of a run).

        Backends: host only.
        """
        if self.proc is not None and self.proc.poll() is None and self.conn is not None:
            try:
                self.conn.send(("stop",))
                self.proc.wait(self.GRACE)
            except Exception:  # noqa: BLE001 - stopped below
                pass
        self._reap()


def _failure(task, args, start: float, why: str) -> dict:
    """The result dict of a task whose process died; the cause goes into its log too."""
    import socket

    from .graph import cleanup_temporaries
    from .tasklog import log_path

    manifest, _, rank, device, _, _ = args
    log = log_path(manifest.production, task.step, task.name)
    end = time.time()
    error = f"TaskProcessDied: {why}"
    try:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\nFAILED after {end - start:.2f} s: {error}\n")
    except OSError:
        pass
    try:
        cleanup_temporaries(task)
    except OSError:
        pass
    return dict(name=task.name, ok=False, error=error, host=socket.gethostname(), rank=rank,
                device=device, start=start, end=end, log=log)


if __name__ == "__main__":  # pragma: no cover - the task process itself
    _child_main(int(sys.argv[1]))
