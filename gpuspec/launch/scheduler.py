"""Task states during a run (:class:`Scheduler`) and the progress lines (:class:`Progress`).

The scheduler hands out ready tasks in graph order and, when a task ends,
makes its dependents ready or fails them. A task whose step allows missing
inputs (``steps.group.allow_missing``) is not failed with its failed
dependencies: once every dependency has finished and at least one is done, it
becomes ready and runs on the inputs that exist, with the others listed in
``params["missing"]``; it then ends ``done`` with a warning (also given to the
tasks that use its output).

Host only; one instance lives in one thread (the MPI scheduler thread, or the
one process).
"""

from __future__ import annotations

import dataclasses
import heapq
import sys
import time

from .db import StateDB
from .graph import Task

__all__ = ["Scheduler", "Progress", "summary_line", "final_lines", "exit_code",
           "interrupt_reason"]


def interrupt_reason(exc: BaseException) -> str:
    """The error recorded for tasks running when the run was stopped by ``exc``.

    Backends: host only.
    """
    from ..errors import Terminated

    if isinstance(exc, Terminated):
        return "interrupted (SIGTERM)"
    return "interrupted (KeyboardInterrupt)"


class Scheduler:
    """Task states during a run; the only writer of the database.

    Parameters
    ----------
    plan : gpuspec.launch.plan.Plan
    db : StateDB or None
        Database to update (None: in memory only).
    """

    def __init__(self, plan, db: StateDB | None = None):
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
        self.running: dict[str, float] = {}  # name -> start time
        self.warning: dict[str, str] = {}
        self.durations: dict[str, list[float]] = {}  # step -> durations in this run
        self.initially_done = sum(s == "done" for s in self.state.values())

    # ---------------------------------------------------------------- queries
    def tolerant(self, name: str) -> bool:
        """True when the task may run without some of its inputs.

        Backends: host only.
        """
        return bool(self.tasks[name].params.get("allow_missing"))

    def _deps_finished(self, name: str) -> bool:
        return all(self.state[d] in ("done", "failed") for d in self.tasks[name].deps)

    def has_ready(self) -> bool:
        """True when a task is ready to run.

        Backends: host only.
        """
        # drop entries of tasks that stopped being ready (failed upstream) from the top
        while self.heap and self.state[self.heap[0][1]] != "ready":
            heapq.heappop(self.heap)
        return bool(self.heap)

    def all_finished(self) -> bool:
        """True when nothing runs and nothing is ready.

        Backends: host only.
        """
        return not self.running and not self.has_ready()

    def counts(self) -> dict:
        """Number of tasks per state.

        Backends: host only.
        """
        out: dict[str, int] = {}
        for s in self.state.values():
            out[s] = out.get(s, 0) + 1
        return out

    # ---------------------------------------------------------------- transitions
    def pop_ready(self) -> Task | None:
        """The next ready task (with ``params["missing"]`` when it runs on partial inputs).

        Backends: host only.
        """
        while self.heap:
            _, name = heapq.heappop(self.heap)
            if self.state[name] == "ready":
                t = self.tasks[name]
                failed = [d for d in t.deps if self.state[d] == "failed"]
                if not failed:
                    return t
                missing = [o for d in failed for o in self.tasks[d].outputs if o in t.inputs]
                return dataclasses.replace(t, params=dict(t.params, missing=missing))
        return None

    def started(self, task: Task, rank: int, host: str, device: str, log: str) -> None:
        """Record that ``task`` started on ``rank``.

        Backends: host only.
        """
        now = time.time()
        self.state[task.name] = "running"
        self.running[task.name] = now
        if self.db is not None:
            self.db.update(task.name, "running", rank=rank, host=host, device=device, log=log,
                           start=now, end=None, error=None, warning=None)
            self.db.bump_attempts(task.name)

    def _make_ready(self, name: str) -> None:
        self.state[name] = "ready"
        heapq.heappush(self.heap, (self.tasks[name].order, name))
        if self.db is not None:
            self.db.update(name, "ready")

    def finished(self, name: str, result: dict) -> list[str]:
        """Record a result; return the names of tasks that failed because of it.

        Backends: host only.
        """
        start = self.running.pop(name, None)
        cols = {k: result.get(k) for k in ("host", "rank", "device", "start", "end", "error",
                                           "log")}
        if result.get("start") is not None and result.get("end") is not None:
            self.durations.setdefault(self.tasks[name].step, []).append(
                result["end"] - result["start"])
        elif start is not None:
            self.durations.setdefault(self.tasks[name].step, []).append(time.time() - start)
        if result["ok"]:
            self._done(name, result, cols)
            return []
        self.state[name] = "failed"
        if self.db is not None:
            self.db.update(name, "failed", **cols)
        return self._fail_downstream(name)

    def _done(self, name: str, result: dict, cols: dict) -> None:
        self.state[name] = "done"
        warn = self._warning_of(name, result)
        if warn:
            self.warning[name] = warn
        if self.db is not None:
            self.db.update(name, "done", warning=warn, **cols)
        for u in self.users[name]:
            if self.state[u] != "waiting":
                continue
            if all(self.state[d] == "done" for d in self.tasks[u].deps) or (
                    self.tolerant(u) and self._deps_finished(u)):
                self._make_ready(u)

    def _warning_of(self, name: str, result: dict) -> str | None:
        t = self.tasks[name]
        failed = [d for d in t.deps if self.state[d] == "failed"]
        if failed:
            return (f"{len(failed)} input(s) missing (failed upstream): "
                    + ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""))
        warned = [d for d in t.deps if d in self.warning]
        if warned:
            return f"made from incomplete {', '.join(warned[:5])}"
        return result.get("warning")

    def _fail_downstream(self, name: str) -> list[str]:
        failed, stack = [], [(u, name) for u in self.users[name]]
        why: dict[str, str] = {}
        while stack:
            u, cause = stack.pop()
            if self.state[u] not in ("waiting", "ready"):
                continue
            if self.tolerant(u):
                if not self._deps_finished(u):
                    continue  # decided when its last input finishes
                if any(self.state[d] == "done" for d in self.tasks[u].deps):
                    if self.state[u] == "waiting":
                        self._make_ready(u)
                    continue
            self.state[u] = "failed"
            failed.append(u)
            why[u] = cause
            stack.extend((v, u if self.tolerant(u) else cause) for v in self.users[u])
        if failed and self.db is not None:
            for u in failed:
                self.db.update(u, "failed", error=f"dependency {why[u]} failed", start=None,
                               end=None)
        return failed

    def interrupted(self, names, why: str = "interrupted (KeyboardInterrupt)") -> None:
        """Record running tasks as failed by an interruption (their dependents stay waiting).

        Backends: host only.
        """
        for name in list(names):
            self.running.pop(name, None)
            self.state[name] = "failed"
            if self.db is not None:
                self.db.update(name, "failed", error=why, end=time.time())

    # ---------------------------------------------------------------- ETA
    def eta(self, nworkers: int) -> float | None:
        """Seconds left, from the mean duration per step of the tasks finished in this run.

        A step none of whose tasks has finished yet counts as the cheapest step seen
        (in the DESI chain the later steps are the light ones), so the ETA is a
        lower estimate until every step has been seen.

        Backends: host only.
        """
        if not self.durations:
            return None
        mean = {s: sum(v) / len(v) for s, v in self.durations.items()}
        allmean = min(mean.values())
        now, work = time.time(), 0.0
        for name, t in self.tasks.items():
            st = self.state[name]
            if st in ("waiting", "ready"):
                work += mean.get(t.step, allmean)
            elif st == "running":
                work += max(0.0, mean.get(t.step, allmean) - (now - self.running[name]))
        return work / max(1, nworkers)


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def summary_line(sched: Scheduler, nworkers: int = 1) -> str:
    """``N/M done, R running, F failed [per step]`` plus the ETA while work remains.

    Backends: host only.
    """
    c = sched.counts()
    n = len(sched.state)
    per_step: dict[str, list[int]] = {}
    for name, t in sched.tasks.items():
        v = per_step.setdefault(t.step, [0, 0])
        v[1] += 1
        v[0] += sched.state[name] == "done"
    steps = ", ".join(f"{s} {d}/{tot}" for s, (d, tot) in per_step.items())
    text = (f"{c.get('done', 0)}/{n} done, {c.get('running', 0)} running, "
            f"{c.get('failed', 0)} failed")
    if sched.warning:
        text += f", {len(sched.warning)} with warnings"
    text += f" [{steps}]"
    if c.get("waiting", 0) + c.get("ready", 0) + c.get("running", 0):
        eta = sched.eta(nworkers)
        text += f"; ETA {'-' if eta is None else _fmt_seconds(eta)}"
    return text


class Progress:
    """Progress lines of rank 0 (``gpuspec-run [  12.3s] ...``).

    The lines go to the stream that was ``sys.stdout`` when this object was
    made, never to a task's log: a task redirects ``sys.stdout`` while it runs,
    and under MPI the scheduler thread prints while rank 0's main thread runs a
    task.
    """

    def __init__(self, sched: Scheduler, interval: float, enabled: bool = True,
                 nworkers: int = 1, stream=None):
        self.sched, self.interval, self.enabled = sched, interval, enabled
        self.nworkers = nworkers
        self.stream = stream if stream is not None else sys.stdout
        self.last = 0.0
        self.last_text = ""
        self.t0 = time.time()

    def line(self, text: str) -> None:
        """Print one progress line (when progress is enabled).

        Backends: host only.
        """
        if self.enabled:
            print(f"gpuspec-run [{time.time() - self.t0:7.1f}s] {text}", file=self.stream,
                  flush=True)

    def tick(self, force: bool = False) -> None:
        """Print the summary line if the interval has passed and it changed.

        Backends: host only.
        """
        now = time.time()
        if force or (self.interval > 0 and now - self.last >= self.interval):
            self.last = now
            text = summary_line(self.sched, self.nworkers)
            if text != self.last_text:  # nothing new: stay quiet
                self.last_text = text
                self.line(text)

    def failed(self, name: str, result: dict, downstream: list) -> None:
        """Print the failure of task ``name`` and of its dependents.

        Backends: host only.
        """
        more = f"; {len(downstream)} dependent task(s) failed too" if downstream else ""
        self.line(f"FAILED {name}: {result.get('error')} (log {result.get('log')}){more}")


def exit_code(sched: Scheduler) -> int:
    """0 when every task is done, else 1.

    Backends: host only.
    """
    return 0 if all(s == "done" for s in sched.state.values()) else 1


def final_lines(progress: Progress, sched: Scheduler, manifest) -> None:
    """The last progress lines: the summary, failures, where the outputs and the state are.

    Backends: host only.
    """
    progress.tick(force=True)
    prod = manifest.production
    c = sched.counts()
    if c.get("failed"):
        progress.line(f"{c['failed']} task(s) failed: gpuspec tasks {prod} --state failed")
    if sched.warning:
        progress.line(f"{len(sched.warning)} task(s) done with warnings (incomplete inputs): "
                      f"gpuspec tasks {prod} --warnings")
    progress.line(f"outputs in {prod}; state: gpuspec status {prod} --once")
