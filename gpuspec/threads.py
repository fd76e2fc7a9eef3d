"""Limit BLAS threads during CPU work made of many small matrix operations.

Extraction and the coadd decorrelation are thousands of small factorisations and
products. Several BLAS threads gain little on them, and on an oversubscribed machine
OpenBLAS's spinning threads are disastrous (measured: Case B extraction 70–80 s with 2
threads at load average 6 against 3–4 s with one; Case C resampling 6× slower with 2
threads). CPU parallelism comes instead from processes (bundles, launcher ranks).

:func:`blas_threads` wraps ``threadpoolctl.threadpool_limits`` (the library scikit-learn
maintains for exactly this: it finds every BLAS/OpenMP runtime loaded in the process and
sets and restores its thread count).
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["blas_threads", "default_blas_threads", "limit_blas"]


def default_blas_threads() -> int:
    """``GPUSPEC_BLAS_THREADS`` when set, else 1."""
    try:
        return max(1, int(os.environ.get("GPUSPEC_BLAS_THREADS", "1") or 1))
    except ValueError:
        return 1


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Run the block with ``n`` BLAS threads, restoring the previous count after.

    ``n`` None or ≤ 0 leaves the thread counts alone. Never fails: without
    threadpoolctl, or with no BLAS it can control, the block just runs.
    """
    if n is None or n <= 0:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


def limit_blas(fn):
    """Decorator: run ``fn`` under :func:`blas_threads` (``default_blas_threads()``).

    Harmless on the GPU path (it only affects host BLAS).
    """
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blas_threads(default_blas_threads()):
            return fn(*args, **kwargs)

    return wrapper
