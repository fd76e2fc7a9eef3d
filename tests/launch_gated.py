"""Registries for launcher tests that must not depend on timing.

``GATED``: the toy steps, except that the task named in the file
``{production}.gate`` (beside the production folder) waits until the file
``{production}.go`` exists. A test starts a run, waits (with a generous
deadline) until the gated task is ``running`` in the database, looks at the
production, then creates the ``.go`` file to let the run finish.

``INTERRUPTING``: the toy steps, except that ``preproc-b0-00000001`` raises
KeyboardInterrupt (what Ctrl-C does in the middle of a task).

``THREADS``: the toy steps; preproc also writes ``{outfile}.threads.json``, the BLAS
and OpenMP thread counts (threadpoolctl) the task ran with, and ``{outfile}.heap.json``,
the page faults of :func:`refaults` in the task's process (gpuspec.heap's policy).
"""

from __future__ import annotations

import os
import time

from gpuspec.launch.registry import Registry, StepSpec
from gpuspec.launch.toy import TOY


def _gated(fn):
    def run(task, ctx):
        prod = os.path.abspath(ctx.production)
        gate = prod + ".gate"
        if os.path.exists(gate) and open(gate).read().strip() == task.name:
            deadline = time.time() + 300
            while not os.path.exists(prod + ".go") and time.time() < deadline:
                time.sleep(0.02)
        return fn(task, ctx)

    return run


def _interrupting(fn):
    def run(task, ctx):
        if task.name == "preproc-b0-00000001":
            raise KeyboardInterrupt
        return fn(task, ctx)

    return run


GATED = Registry("gated", {s: StepSpec(_gated(spec.func), doc=spec.doc)
                           for s, spec in TOY.steps.items()}, ext="json")
INTERRUPTING = Registry("interrupting", {s: StepSpec(_interrupting(spec.func), doc=spec.doc)
                                         for s, spec in TOY.steps.items()}, ext="json")


def refaults(nbytes: int = 64 << 20, times: int = 4) -> int:
    """Minor page faults of allocating and freeing an ``nbytes`` array ``times`` times
    after a first one: ~0 when freed memory is kept for reuse (``gpuspec.heap``), some
    thousands with glibc's defaults (the array is above its largest mmap threshold)."""
    import resource

    import numpy as np

    a = np.ones(nbytes // 8)
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(times):
        a = np.ones(nbytes // 8)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _recording(fn):
    def run(task, ctx):
        import json

        from threadpoolctl import threadpool_info

        fn(task, ctx)
        if task.step == "preproc":
            with open(task.params["outfile"] + ".threads.json", "w") as f:
                json.dump([d["num_threads"] for d in threadpool_info()], f)
            with open(task.params["outfile"] + ".heap.json", "w") as f:
                json.dump(refaults(), f)

    return run


THREADS = Registry("threads", {s: StepSpec(_recording(spec.func), doc=spec.doc)
                               for s, spec in TOY.steps.items()}, ext="json")
