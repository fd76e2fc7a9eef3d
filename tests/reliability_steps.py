"""A step registry whose tasks crash for real (tests of gpuspec-run's task processes).

Not a test module. ``registry: reliability_steps:CRASHY`` is the toy registry
(:mod:`gpuspec.launch.toy`) in which the tasks named in the environment variable
``GPUSPEC_TEST_CRASH`` (``name=kind,name=kind``) die in native code or leave
their process: ``segv`` (a real segmentation fault, ``faulthandler._sigsegv``),
``abort`` (``abort()`` in C), ``exit`` (``os._exit(3)``), ``badptr`` (a read
of a kernel-space address through ctypes: a fault on every machine, unlike NULL
where page 0 may be mapped).
"""

from __future__ import annotations

import ctypes
import faulthandler
import os

from gpuspec.launch.registry import Registry, StepSpec
from gpuspec.launch.toy import TOY


def _crash(task) -> None:
    spec = dict(item.split("=", 1) for item in
                filter(None, os.environ.get("GPUSPEC_TEST_CRASH", "").split(",")))
    kind = spec.get(task.name)
    if kind == "segv":
        faulthandler.disable()
        faulthandler._sigsegv()
    elif kind == "abort":
        ctypes.CDLL(None).abort()
    elif kind == "exit":
        os._exit(3)
    elif kind == "badptr":
        faulthandler.disable()
        ctypes.string_at(0xFFFF800000000000, 16)


def _wrap(step: str):
    inner = TOY.steps[step].func

    def run(task, ctx):
        _crash(task)
        return inner(task, ctx)

    run.__name__ = f"crashy_{step}"
    return run


crashy_preproc = _wrap("preproc")
crashy_extract = _wrap("extract")
crashy_frame = _wrap("frame")
crashy_group = _wrap("group")
crashy_coadd = _wrap("coadd")

CRASHY = Registry("crashy", {
    s: StepSpec(f"reliability_steps:crashy_{s}", doc=f"toy {s} that may crash")
    for s in ("preproc", "extract", "frame", "group", "coadd")}, ext="json")
