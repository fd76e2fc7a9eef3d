"""Profiling helpers: NVTX ranges for Nsight Systems and a device-synchronising timer.

``nvtx_range`` works as a decorator and as a context manager. It uses the
``nvtx`` package when installed, else cupy's NVTX bindings, else it does
nothing. It never raises: profiling must not break a production run.

Range names are prefixed ``gpuspec:`` so they are easy to find in ``nsys``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from typing import Any, Callable

from . import backend

__all__ = ["nvtx_range", "Timer", "PREFIX"]

PREFIX = "gpuspec:"
_impl: Any = None
_impl_checked = False


def _nvtx_impl():
    global _impl, _impl_checked
    if not _impl_checked:
        _impl_checked = True
        try:
            import nvtx  # noqa: WPS433

            _impl = ("nvtx", nvtx)
        except Exception:
            _impl = None
            cp = backend._import_cupy() if backend.cupy_available() else None
            if cp is not None:  # pragma: no cover - GPU only
                try:
                    from cupyx.profiler import time_range  # noqa: F401

                    _impl = ("cupy", time_range)
                except Exception:
                    _impl = None
    return _impl


class nvtx_range(contextlib.ContextDecorator):
    """NVTX range, usable as ``with nvtx_range("extract"):`` or ``@nvtx_range("extract")``.

    Parameters
    ----------
    name : str
        Range name; ``gpuspec:`` is prepended unless already present.
    color : str, optional
        Colour hint for the nsys timeline.
    """

    def __init__(self, name: str, color: str | None = None):
        self.name = name if name.startswith(PREFIX) else PREFIX + name
        self.color = color
        # Open ranges are kept per thread, as a stack, so one instance can serve as a
        # decorator for recursive and concurrent (multi-threaded) calls.
        self._local = threading.local()

    def _stack(self) -> list:
        st = getattr(self._local, "stack", None)
        if st is None:
            st = self._local.stack = []
        return st

    def __enter__(self):
        impl = _nvtx_impl()
        ctx = None
        if impl is not None:
            try:
                kind, mod = impl
                if kind == "nvtx":
                    ctx = mod.annotate(self.name, color=self.color)
                else:  # pragma: no cover - GPU only
                    ctx = mod(self.name)
                ctx.__enter__()
            except Exception:
                ctx = None
        self._stack().append(ctx)
        return self

    def __exit__(self, *exc):
        st = self._stack()
        ctx = st.pop() if st else None
        if ctx is not None:
            try:
                ctx.__exit__(*exc)
            except Exception:
                pass
        return False


def annotate(name: str | None = None) -> Callable:
    """Decorator form that names the range after the function when no name is given.

    Backends: numpy, cupy (no arrays; NVTX is a host API).
    """

    def deco(fn):
        rng_name = name or fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with nvtx_range(rng_name):
                return fn(*args, **kwargs)

        return wrapper

    return deco


class Timer:
    """Wall-clock timer that synchronises the device before reading the clock.

    Examples
    --------
    >>> with Timer(xp) as t:          # doctest: +SKIP
    ...     run()
    >>> t.elapsed                      # doctest: +SKIP
    0.0123
    """

    def __init__(self, xp: Any = None, name: str | None = None):
        self.xp = xp
        self.name = name
        self.start = None
        self.elapsed = None
        self._rng = nvtx_range(name) if name else None

    def __enter__(self):
        backend.synchronize(self.xp)
        if self._rng is not None:
            self._rng.__enter__()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        backend.synchronize(self.xp)
        self.elapsed = time.perf_counter() - self.start
        if self._rng is not None:
            self._rng.__exit__(*exc)
        return False
