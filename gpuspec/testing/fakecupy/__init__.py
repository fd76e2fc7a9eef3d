"""A strict CuPy emulation on NumPy, for running gpuspec's GPU path without a GPU (tests only).

``install()`` puts emulated ``cupy`` and ``cupyx`` module trees in ``sys.modules`` (saving
any real ones, which ``uninstall()`` restores). gpuspec selects it only through
``gpuspec.backend`` when ``GPUSPEC_EMULATE_CUPY=1`` is set (tests and CI set it; see
``tests/conftest.py``); the real GPU path never goes through it.

The emulation is strict in the ways CuPy is strict (see :mod:`._core` for the list, each
checked against CuPy's documentation or source): device arrays are not NumPy arrays, NumPy
arrays are not accepted as operands, only the names of the real CuPy 14 exist (the list,
``cupy_names.json``, is generated from the real ``cupy-cuda12x`` wheel by ``gen_names.py``),
keyword arguments CuPy does not accept raise, batched Cholesky/inverse do not raise on
failure (cuSOLVER/cuBLAS semantics) unless ``cupyx.errstate(linalg="raise")``.

It counts what costs time on a real GPU (:data:`LEDGER`, :func:`counting`): every
device→host synchronisation with its call site (``float()``, ``int()``, ``bool()``,
``.item()``, ``.tolist()``, ``.get()``, ``cupy.asnumpy``, boolean-mask indexing,
``nonzero``/``where(cond)``/``unique``/``bincount``… and the syncs inside cupyx functions),
host→device uploads, bytes each way, and peak live device memory.

``cupy.cuda.Device``, streams, events and memory pools are no-ops; ``RawKernel`` /
``RawModule`` functions raise "not emulated" unless a CPU twin is registered with
:func:`register_kernel_twin`.
"""

from __future__ import annotations

import sys

from ._cuda import register_kernel_twin, unregister_kernel_twin
from ._ledger import LEDGER, DeviceSynchronized, Record, counting, forbid_sync

__all__ = ["install", "uninstall", "installed", "cupy_module", "LEDGER", "counting",
           "forbid_sync", "Record", "DeviceSynchronized", "register_kernel_twin",
           "unregister_kernel_twin", "is_emulated"]

_SAVED: dict | None = None
_TREE: dict | None = None


def _build_tree() -> dict:
    global _TREE
    if _TREE is None:
        from . import _modules
        cp = _modules.module("cupy")
        _modules.cuda_module()
        cp.cuda = _modules.MODULES["cupy.cuda"]
        cp.__version__ = _modules._names.cupy_version()
        cp.__emulated__ = True
        cp.ndarray = _modules.OVERRIDES[("cupy", "ndarray")]
        _modules._ufuncs_ready()
        cpx = _modules.module("cupyx")
        cpx.__emulated__ = True
        names = ["cupy", "cupy.linalg", "cupy.fft", "cupy.random", "cupy.testing", "cupy.cuda",
                 "cupyx", "cupyx.profiler", "cupyx.lapack", "cupyx.linalg", "cupyx.scipy",
                 "cupyx.scipy.ndimage", "cupyx.scipy.special", "cupyx.scipy.linalg",
                 "cupyx.scipy.sparse", "cupyx.scipy.fft", "cupyx.scipy.signal",
                 "cupyx.scipy.interpolate", "cupyx.scipy.stats", "cupyx.scipy.spatial"]
        tree = {}
        for n in names:
            tree[n] = _modules.module(n)
            parent, _, leaf = n.rpartition(".")
            if parent:
                setattr(_modules.module(parent), leaf, tree[n])
        _TREE = tree
    return _TREE


def cupy_module():
    """The emulated ``cupy`` module (without installing it in ``sys.modules``)."""
    return _build_tree()["cupy"]


def installed() -> bool:
    return _SAVED is not None


def install():
    """Put the emulated ``cupy``/``cupyx`` in ``sys.modules``; returns the ``cupy`` module."""
    global _SAVED
    tree = _build_tree()
    if _SAVED is None:
        _SAVED = {k: v for k, v in sys.modules.items()
                  if k in ("cupy", "cupyx") or k.startswith(("cupy.", "cupyx."))}
        for k in _SAVED:
            del sys.modules[k]
        sys.modules.update(tree)
    return tree["cupy"]


def uninstall():
    """Remove the emulation from ``sys.modules`` and restore what was there."""
    global _SAVED
    if _SAVED is None:
        return
    for k in list(sys.modules):
        if k in ("cupy", "cupyx") or k.startswith(("cupy.", "cupyx.")):
            del sys.modules[k]
    sys.modules.update(_SAVED)
    _SAVED = None


def is_emulated(mod) -> bool:
    """True for the emulated ``cupy`` module."""
    return bool(getattr(mod, "__emulated__", False))
