"""CPU thread settings chosen by gpuspec itself (BLAS, OpenMP, numba).

Extraction and the coadd decorrelation are thousands of small factorisations and
products. Several BLAS threads gain little on them, and on a loaded machine
OpenBLAS's spinning threads are disastrous (measured: Case B extraction 70–80 s with 2
threads at load average 6 against 3–4 s with one; a 25-fiber extraction used 26 s of
CPU for 14 s wall by default against 7 s pinned). CPU parallelism comes instead from
processes (bundles, launcher ranks).

So every entry point (``gpuspec``, ``gpuspec-run``, each launcher rank) calls
:func:`configure_threads` first: it picks the thread count (the ``--threads``
option, else ``run.threads`` of a manifest, else ``GPUSPEC_THREADS``, else 1),
limits the BLAS and OpenMP pools already loaded through ``threadpoolctl``, sets
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``,
``NUMBA_NUM_THREADS`` (and friends) for the libraries loaded later and for child
processes (gpuspec's numba kernels are not parallel: numba's pool is never
started). Forked workers inherit all of it. Users need not export anything; the variables exported before
the start are overridden (use ``--threads`` / ``GPUSPEC_THREADS`` to choose).

:func:`blas_threads` (a block with ``n`` BLAS threads, restored after) and
:func:`limit_blas` (a decorator) wrap ``threadpoolctl.threadpool_limits`` for the
code that wants its own setting. Host only (no effect on GPU work).
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["blas_threads", "default_blas_threads", "limit_blas", "configure_threads",
           "default_threads", "THREAD_VARIABLES"]

#: Environment variables of the thread pools gpuspec sets (OpenMP, OpenBLAS, MKL, BLIS,
#: Apple Accelerate, numexpr, numba).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "NUMBA_NUM_THREADS")

_state = {"n": None, "explicit": False, "limiter": None}


def default_threads() -> int:
    """``GPUSPEC_THREADS`` (or the older ``GPUSPEC_BLAS_THREADS``) when set, else 1.

    Backends: host only (reads the environment).
    """
    for var in ("GPUSPEC_THREADS", "GPUSPEC_BLAS_THREADS"):
        try:
            v = int(os.environ.get(var, "") or 0)
        except ValueError:
            continue
        if v > 0:
            return v
    return 1


def configure_threads(n: int | None = None, explicit: bool | None = None) -> int:
    """Set this process's CPU thread counts (and its children's); return the count used.

    Parameters
    ----------
    n : int, optional
        Threads; None or ≤ 0: :func:`default_threads`.
    explicit : bool, optional
        The count was asked for by the user (``--threads``); default: ``n`` given.
        A later call without an explicit count (``run.threads`` of a manifest)
        then leaves it alone.

    Never fails: without threadpoolctl or numba, only the environment is set.

    Backends: host only (threadpoolctl; NumPy/Numba CPU threads).
    """
    explicit = (n is not None and n > 0) if explicit is None else explicit
    if _state["explicit"] and not explicit:
        return _state["n"]
    n = int(n) if n is not None and n > 0 else default_threads()
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        _state["limiter"] = threadpool_limits(limits=n)  # kept: not restored
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass
    _state.update(n=n, explicit=_state["explicit"] or explicit)
    return n


def default_blas_threads() -> int:
    """BLAS threads of the CPU kernels: the configured count, else :func:`default_threads`.

    Backends: host only (reads the environment).
    """
    return _state["n"] or default_threads()


@contextlib.contextmanager
def blas_threads(n: int | None):
    """Run the block with ``n`` BLAS threads, restoring the previous count after.

    ``n`` None or ≤ 0 leaves the thread counts alone. Never fails: without
    threadpoolctl, or with no BLAS it can control, the block just runs.

    Backends: host only (threadpoolctl).
    """
    if n is None or n <= 0:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    _load_blas_libraries()
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield


def _load_blas_libraries() -> None:
    """Load the BLAS libraries gpuspec's CPU kernels call, so that a limit covers them.

    ``threadpoolctl`` limits the libraries loaded when the limit is set. SciPy ships its
    own OpenBLAS, loaded with ``scipy.linalg`` (the extraction's LAPACK calls); first
    loaded inside a :func:`blas_threads` block it kept its default of one thread per
    core, and in forked bundle workers on 2 cores those threads spun: Case B with
    ``nproc=2`` took 5.6 s and 10 CPU-s on its first call in a process, 0.47 s after.
    """
    import importlib

    try:
        importlib.import_module("scipy.linalg")          # loads SciPy's BLAS/LAPACK
    except ImportError:  # pragma: no cover - scipy is a dependency
        pass


def limit_blas(fn):
    """Decorator: run ``fn`` under :func:`blas_threads` (``default_blas_threads()``).

    Harmless on the GPU path (it only affects host BLAS).

    Backends: host only (threadpoolctl).
    """
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blas_threads(default_blas_threads()):
            return fn(*args, **kwargs)

    return wrapper
