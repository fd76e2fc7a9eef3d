"""Host heap policy of gpuspec's processes: keep freed memory for reuse (glibc).

The CPU extraction allocates and frees the same large arrays chunk after chunk (the
normal matrices, ~28 MB; the weighted stamps; their temporaries). With glibc's defaults
an array above the dynamic mmap threshold (at most 32 MB), and the freed top of the heap
above the trim threshold, go back to the kernel on ``free``, so the next chunk faults
them in again: zeroed pages, and for numpy's arrays of 4 MB or more (``madvise`` of huge
pages) the kernel's synchronous compaction. The figures (system time and page faults
per frame, with and without this policy, in one and two processes) are in
docs/extract.md, "Host heap".

:func:`configure_heap` raises both thresholds to :data:`KEEP_BYTES` through
``mallopt``: the freed memory stays in the process and is reused. The peak RSS stays
about the same (the memory kept is memory the process already used); it is just not
returned before the process ends, which for a task process or a CLI run is what one
wants. Every entry point (``gpuspec``, ``gpuspec-run``, each launcher task process)
calls it next to :func:`gpuspec.threads.configure_threads`. Forked extraction workers
inherit it, after :func:`release_kept_memory` (otherwise they would copy the parent's
kept free heap page by page: measured worse than glibc's defaults). ``import gpuspec``
alone never changes the process's allocator; Python API users call
:func:`configure_heap` themselves if they want it.

``GPUSPEC_HEAP=system`` keeps glibc's defaults. Other C libraries (musl, macOS): no
effect. Host only (the GPU's memory is CuPy's pool).
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["configure_heap", "current", "release_kept_memory", "supported", "KEEP_BYTES",
           "HEAP_VARIABLE"]

#: Both glibc thresholds are raised to this: allocations below it come from the heap,
#: and up to this much freed memory at the heap's top is kept.
KEEP_BYTES = 1 << 30
#: Environment variable choosing the policy: ``keep`` (default) or ``system``.
HEAP_VARIABLE = "GPUSPEC_HEAP"

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_state = {"policy": None}


def configure_heap(policy: str | None = None) -> str:
    """Set this process's heap policy; return the one in effect.

    Parameters
    ----------
    policy : {"keep", "system"}, optional
        ``keep``: raise glibc's mmap and trim thresholds to :data:`KEEP_BYTES`;
        ``system``: leave the C library's defaults. Default: ``GPUSPEC_HEAP``, else
        ``keep``.

    Returns
    -------
    str
        ``"keep"``, ``"system"``, or ``"unsupported"`` where the C library is not glibc
        (or ``mallopt`` refused a value).

    Raises
    ------
    gpuspec.errors.UsageError
        For a policy other than ``keep`` or ``system`` (naming ``GPUSPEC_HEAP`` when it
        came from there).

    Once ``keep`` is set it stays for the process (glibc cannot go back to its dynamic
    thresholds). Backends: host only.
    """
    source = "policy"
    if policy is None:
        policy, source = (os.environ.get(HEAP_VARIABLE) or "keep"), HEAP_VARIABLE
    policy = policy.strip().lower()
    if policy not in ("keep", "system"):
        from .errors import UsageError

        raise UsageError(f"{source}={policy!r}: choose 'keep' or 'system'")
    if _state["policy"] == "keep":                      # cannot be undone
        return "keep"
    if policy == "system":
        _state["policy"] = "system"
        return "system"
    libc = _glibc()
    ok = libc is not None and all(
        libc.mallopt(param, KEEP_BYTES) == 1
        for param in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD))
    _state["policy"] = "keep" if ok else "unsupported"
    return _state["policy"]


def current() -> str | None:
    """The policy :func:`configure_heap` set in this process, or None if it never ran.

    Backends: host only.
    """
    return _state["policy"]


def release_kept_memory() -> None:
    """Give the freed memory kept by the ``keep`` policy back to the kernel.

    Called before a fork (below), and by ``perf.protocol`` before a benchmark's first
    run, so that each record's peak RSS is its own case's, not memory kept from the one
    before.

    Forked workers share the parent's pages copy-on-write, its free heap included, and
    their allocations reuse that free heap: every page they write there is a copy. Once
    released (glibc ``malloc_trim``), the same addresses are fresh zero pages in the
    workers, which then keep their own freed memory (they inherit the policy). Measured
    on a 500-fiber frame in 2 processes: see docs/extract.md. No effect unless
    :func:`configure_heap` set ``keep``.

    Backends: host only.
    """
    if _state["policy"] != "keep":
        return
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def supported() -> bool:
    """Whether this process's C library is glibc (the policy's ``mallopt``).

    Backends: host only.
    """
    return _glibc() is not None


def _glibc():
    """The process's glibc through ctypes, or None on another C library."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
        libc.malloc_trim.restype = ctypes.c_int
        return libc
    except (AttributeError, OSError, ValueError):  # not glibc, or no confstr name
        return None
