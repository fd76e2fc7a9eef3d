"""Limit the OpenBLAS threads of numpy/scipy during a CPU extraction.

Extraction on the CPU is made of many small matrix products and factorisations.
Several BLAS threads gain little on them, and when the machine is oversubscribed
(more busy threads than cores) OpenBLAS's spinning threads are disastrous: Case B
took 70-80 s with the default 2 threads at load average 6, against 3-4 s with one.
CPU parallelism should come from extracting bundles in separate processes (the
launcher does that).

:func:`blas_threads` is a context manager that sets the thread count of every
OpenBLAS library loaded in the process (numpy's and scipy's builds export
``scipy_openblas_set_num_threads*``; a system OpenBLAS exports
``openblas_set_num_threads``) and restores it afterwards. Libraries it cannot find
are left alone, so it never fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

__all__ = ["blas_threads", "openblas_libraries"]

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads_64_",
            "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads_64_",
            "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
            "openblas_get_num_threads")
_LIBS: list | None = None


def openblas_libraries() -> list:
    """``(path, get, set)`` for each OpenBLAS library mapped in this process."""
    global _LIBS
    if _LIBS is not None:
        return _LIBS
    libs = []
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1] if line.strip() else ""
                name = os.path.basename(p).lower()
                if "openblas" in name and ".so" in name and p not in paths:
                    paths.append(p)
    except OSError:
        paths = []
    for p in paths:
        try:
            lib = ctypes.CDLL(p)
        except OSError:
            continue
        get = next((getattr(lib, n) for n in _GETTERS if hasattr(lib, n)), None)
        set_ = next((getattr(lib, n) for n in _SETTERS if hasattr(lib, n)), None)
        if get is not None and set_ is not None:
            get.restype = ctypes.c_int
            set_.argtypes = [ctypes.c_int]
            libs.append((p, get, set_))
    _LIBS = libs
    return libs


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Run the block with ``n`` OpenBLAS threads (None: leave them unchanged)."""
    if n is None or n <= 0:
        yield
        return
    import numpy  # noqa: F401  (make sure numpy's BLAS is loaded)
    import scipy.linalg  # noqa: F401

    global _LIBS
    _LIBS = None  # libraries may have been loaded since the last call
    libs = openblas_libraries()
    saved = []
    for _, get, set_ in libs:
        try:
            saved.append((set_, int(get())))
            set_(int(n))
        except Exception:
            pass
    try:
        yield
    finally:
        for set_, old in saved:
            try:
                set_(old)
            except Exception:
                pass
