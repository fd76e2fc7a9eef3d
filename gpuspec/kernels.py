"""Loader for the hand-written CUDA kernels in ``kernels/`` (package ``gpuspec.cuda``).

Each ``.cu`` file is compiled by CuPy (NVRTC) as a ``RawModule`` with a small
``#define`` type preamble, and cached per (file, preamble, device). Kernel names
are prefixed ``gpuspec_`` so that they are recognisable in ``nsys``.

Only call these from the cupy backend; every kernel has a NumPy/Numba twin used
on the CPU and in parity tests.
"""

from __future__ import annotations

import functools
import os
from importlib import resources

__all__ = ["kernel_dir", "kernel_source", "get_module", "get_kernel"]


def kernel_dir() -> str:
    """Folder holding the ``.cu`` sources (installed package or source checkout)."""
    try:
        d = resources.files("gpuspec.cuda")
        p = os.fspath(d)
        if os.path.isdir(p):
            return p
    except Exception:  # pragma: no cover
        pass
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")


def kernel_source(name: str) -> str:
    """Text of ``kernels/<name>`` (``name`` with or without ``.cu``)."""
    fn = name if name.endswith(".cu") else name + ".cu"
    path = os.path.join(kernel_dir(), fn)
    with open(path) as f:
        return f.read()


def _preamble(defines: dict | None) -> str:
    if not defines:
        return ""
    return "".join(f"#define {k} {v}\n" for k, v in sorted(defines.items()))


@functools.lru_cache(maxsize=None)
def _module(name: str, preamble: str, device_id: int, options: tuple):  # pragma: no cover - GPU
    import cupy as cp

    src = preamble + kernel_source(name)
    with cp.cuda.Device(device_id):
        return cp.RawModule(code=src, options=options)


def get_module(name: str, defines: dict | None = None,
               options: tuple = ("--std=c++14",)):  # pragma: no cover - GPU
    """Compiled ``cupy.RawModule`` for ``kernels/<name>.cu`` on the current device."""
    import cupy as cp

    return _module(name, _preamble(defines), cp.cuda.Device().id, tuple(options))


def get_kernel(name: str, func: str, defines: dict | None = None):  # pragma: no cover - GPU
    """A ``cupy.RawKernel``-like function ``func`` from ``kernels/<name>.cu``."""
    return get_module(name, defines).get_function(func)
