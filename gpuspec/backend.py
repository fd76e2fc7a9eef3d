"""Array backend: one ``xp`` namespace for NumPy (CPU) and CuPy (CUDA GPU).

Every algorithm in gpuspec is written once against ``xp`` and receives it from
this module. Nothing here imports cupy at module import time: cupy is loaded
lazily and only when it is installed, usable (``cupy.is_available()``) and not
vetoed by the environment variable ``GPUSPEC_NO_GPU``.

Backends
--------
``"numpy"``
    Always available.
``"cupy"``
    Needs cupy and a visible CUDA device. Asking for it explicitly when it is
    not usable raises :class:`BackendUnavailable`.
``"auto"``
    cupy when it is usable and ``GPUSPEC_NO_GPU`` is unset (or ``0``), else numpy.

Emulated CuPy (tests only)
--------------------------
With ``GPUSPEC_EMULATE_CUPY=1`` the name ``cupy`` means the strict NumPy-backed emulation
:mod:`gpuspec.testing.fakecupy` (installed in ``sys.modules`` on first use): the test suite
and CI run the whole CuPy code path with it, also in the subprocesses of ``gpuspec-run``.
It is never selected otherwise, so a real GPU run does not go through it;
:func:`device_name` says "Emulated CuPy device (NumPy)" whenever it is in use.

Examples
--------
>>> from gpuspec import backend
>>> xp = backend.get_xp("numpy")
>>> a = backend.to_device(np.arange(3, dtype=">f8"), xp)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
import types
from typing import Any

import numpy as np

__all__ = [
    "BackendUnavailable",
    "gpu_disabled",
    "cupy_emulated",
    "EMULATE_ENV",
    "cupy_available",
    "resolve",
    "get_xp",
    "get_array_module",
    "is_cupy",
    "to_device",
    "to_host",
    "native",
    "synchronize",
    "free_memory",
    "launcher_size",
    "local_rank",
    "select_device",
    "bind_device",
    "device_name",
    "scipy_module",
]

_BACKENDS = ("auto", "numpy", "cupy")
_cupy_module: Any = None
_cupy_checked = False
_emulation_announced = False


class BackendUnavailable(RuntimeError):
    """The requested array backend cannot be used on this machine."""


def gpu_disabled() -> bool:
    """True when ``GPUSPEC_NO_GPU`` is set to anything but ``""``/``0``/``false``.

    Backends: host only (reads the environment).
    """
    v = os.environ.get("GPUSPEC_NO_GPU", "")
    return v.strip().lower() not in ("", "0", "false", "no")


#: environment variable that selects the CuPy emulation (tests only)
EMULATE_ENV = "GPUSPEC_EMULATE_CUPY"


def cupy_emulated() -> bool:
    """True when ``GPUSPEC_EMULATE_CUPY`` asks for the NumPy-backed CuPy emulation (tests).

    Backends: host only (reads the environment).
    """
    v = os.environ.get(EMULATE_ENV, "")
    return v.strip().lower() not in ("", "0", "false", "no")


def _import_cupy():
    """Import cupy once; return the module or None. Never raises.

    Under ``GPUSPEC_EMULATE_CUPY`` this is the emulation (never cached, so unsetting the
    variable brings the real cupy back).
    """
    global _cupy_module, _cupy_checked, _emulation_announced
    if cupy_emulated():
        from .testing import fakecupy  # noqa: WPS433 (tests only)

        if not _emulation_announced:
            _emulation_announced = True
            import logging

            logging.getLogger(__name__).warning(
                "%s is set: 'cupy' is the NumPy-backed CuPy emulation of the tests "
                "(gpuspec.testing.fakecupy), not a GPU", EMULATE_ENV)
        return fakecupy.install()
    if not _cupy_checked:
        _cupy_checked = True
        try:  # pragma: no cover - depends on the machine
            import cupy  # noqa: WPS433 (guarded import)

            if getattr(cupy, "__emulated__", False):  # an emulation left in sys.modules
                _cupy_checked = False
                return None
            _cupy_module = cupy
        except Exception:  # ImportError, or a broken CUDA install
            _cupy_module = None
    return _cupy_module


def numba_twins_enabled(variable: str) -> bool:
    """True when numba imports and the switch ``variable`` (e.g. ``GPUSPEC_COADD_NUMBA``)
    is not 0/false/no: whether a module's Numba CPU twins run on the numpy backend.

    Backends: host.
    """
    if os.environ.get(variable, "1").strip().lower() in ("0", "false", "no"):
        return False
    try:
        importlib.import_module("numba")                   # availability probe
    except Exception:  # pragma: no cover - numba is a dependency
        return False
    return True


def cupy_available() -> bool:
    """True when cupy imports and reports a usable CUDA device.

    Ignores ``GPUSPEC_NO_GPU``; see :func:`resolve` for the policy.

    Backends: host only (probes cupy and the CUDA runtime).
    """
    cp = _import_cupy()
    if cp is None:
        return False
    try:  # pragma: no cover - depends on the machine
        return bool(cp.is_available())
    except Exception:
        return False


def resolve(backend: str | types.ModuleType | None = "auto") -> str:
    """Turn a backend request into ``"numpy"`` or ``"cupy"``.

    Parameters
    ----------
    backend : {"auto", "numpy", "cupy"}, module or None
        None means ``"auto"``. A module (numpy or cupy) is accepted as well.

    Returns
    -------
    str
        ``"numpy"`` or ``"cupy"``.

    Raises
    ------
    ValueError
        Unknown backend name.
    BackendUnavailable
        ``"cupy"`` requested but cupy is missing, has no device, or
        ``GPUSPEC_NO_GPU`` is set.

    Backends: host only (backend names).
    """
    if backend is None:
        backend = "auto"
    if isinstance(backend, types.ModuleType):
        backend = "cupy" if backend.__name__.startswith("cupy") else "numpy"
    backend = str(backend).lower()
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {_BACKENDS}")
    if backend == "numpy":
        return "numpy"
    if backend == "cupy":
        if gpu_disabled():
            raise BackendUnavailable("backend 'cupy' requested but GPUSPEC_NO_GPU is set")
        if not cupy_available():
            raise BackendUnavailable(
                "backend 'cupy' requested but cupy is not installed or no CUDA device is usable"
            )
        return "cupy"
    # auto
    if not gpu_disabled() and cupy_available():
        return "cupy"
    return "numpy"


def get_xp(backend: str | types.ModuleType | None = "auto") -> types.ModuleType:
    """Return the array namespace (``numpy`` or ``cupy``) for a backend request.

    Backends: numpy, cupy (returns the namespace).
    """
    if resolve(backend) == "cupy":
        return _import_cupy()
    return np


def is_cupy(a: Any) -> bool:
    """True if ``a`` is a cupy array (without importing cupy when it is absent).

    Backends: numpy, cupy (any array).
    """
    return type(a).__module__.startswith("cupy")


def get_array_module(*arrays: Any) -> types.ModuleType:
    """Return ``cupy`` if any argument is a cupy array, else ``numpy``.

    Works when cupy is not installed (returns numpy).

    Backends: numpy, cupy (any arrays).
    """
    for a in arrays:
        if is_cupy(a):
            return _import_cupy()
    return np


def native(a: np.ndarray) -> np.ndarray:
    """Return ``a`` in native byte order (FITS data are big-endian); no copy if already native.

    Backends: numpy (host arrays).
    """
    a = np.asarray(a)
    if not a.dtype.isnative:
        return a.astype(a.dtype.newbyteorder("="))
    return a


def to_device(a: Any, xp: types.ModuleType | str | None = None, dtype: Any = None):
    """Move ``a`` to the backend ``xp`` (module or backend name), in native byte order.

    Parameters
    ----------
    a : array_like
        NumPy array (any byte order), cupy array, or scalar/sequence.
    xp : module or str, optional
        Target namespace; default ``"auto"``.
    dtype : dtype, optional
        Cast to this dtype on the way.

    Returns
    -------
    array
        A numpy or cupy array. No copy is made when nothing changes.

    Backends: numpy, cupy.
    """
    if xp is None or isinstance(xp, str):
        xp = get_xp(xp)
    if xp is np:
        out = native(to_host(a))
        return out if dtype is None else out.astype(dtype, copy=False)
    if is_cupy(a):
        return a if dtype is None else a.astype(dtype, copy=False)
    host = native(np.asarray(a))
    if dtype is not None:
        host = host.astype(dtype, copy=False)
    return xp.asarray(host)


def to_host(a: Any) -> np.ndarray:
    """Return ``a`` as a NumPy array (copies from the GPU when needed).

    Backends: numpy, cupy (always returns a NumPy array).
    """
    if is_cupy(a):
        return a.get()
    return np.asarray(a)


def _current_cupy(xp):
    if xp is not None:
        return None if xp is np else xp
    return _import_cupy() if cupy_emulated() else _cupy_module


def synchronize(xp: types.ModuleType | None = None) -> None:
    """Wait for all queued work on the current device (no-op for numpy).

    Asynchronous CUDA errors (an illegal address in a kernel, a failed launch) surface
    here: they propagate, they are never swallowed.

    Backends: numpy (no-op), cupy.
    """
    cp = _current_cupy(xp)
    if cp is None:
        return
    cp.cuda.get_current_stream().synchronize()


def free_memory(xp: types.ModuleType | None = None) -> None:
    """Release cupy's cached device and pinned memory blocks (no-op for numpy).

    Errors (including asynchronous CUDA errors reported by the driver) propagate.

    Backends: numpy (no-op), cupy.
    """
    cp = _current_cupy(xp)
    if cp is None:
        return
    cp.get_default_memory_pool().free_all_blocks()
    cp.get_default_pinned_memory_pool().free_all_blocks()


_LOCAL_RANK_VARS = (
    "SLURM_LOCALID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",  # MPICH/Hydra
    "PMI_LOCAL_RANK",
    "PALS_LOCAL_RANKID",  # Cray PALS
    "LOCAL_RANK",
)


#: Variables in which MPI launchers give the number of ranks of the job (MPICH/Hydra and
#: Cray, Open MPI, PMIx, Cray PALS, MPICH local, srun).
_WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PALS_SIZE",
                    "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS")


def launcher_size(environ: dict | None = None) -> int:
    """Number of ranks an MPI launcher started this process with (1 when not launched).

    Reads the first of :data:`_WORLD_SIZE_VARS` that holds an integer above 1.

    Backends: host only (reads the environment).
    """
    env = os.environ if environ is None else environ
    for var in _WORLD_SIZE_VARS:
        try:
            n = int(env.get(var) or 0)
        except ValueError:
            continue
        if n > 1:
            return n
    return 1


def local_rank(comm: Any = None, environ: dict | None = None) -> int:
    """Rank of this process among the ranks on the same node.

    Parameters
    ----------
    comm : mpi4py communicator, optional
        When given, the node-local rank comes from
        ``comm.Split_type(MPI.COMM_TYPE_SHARED)``.
    environ : dict, optional
        Environment to read launcher variables from (default ``os.environ``);
        tests pass fake environments.

    Returns
    -------
    int
        The local rank, 0 when nothing tells otherwise.

    Backends: host only (MPI communicator or environment).
    """
    if comm is not None:
        try:
            from mpi4py import MPI  # noqa: WPS433

            node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
            r = node.Get_rank()
            node.Free()
            return int(r)
        except Exception:
            pass
    env = os.environ if environ is None else environ
    for var in _LOCAL_RANK_VARS:
        v = env.get(var)
        if v not in (None, ""):
            try:
                return int(v)
            except ValueError:
                continue
    return 0


def select_device(lrank: int, ndevices: int) -> int:
    """Device index for node-local rank ``lrank`` with ``ndevices`` visible devices.

    One rank per GPU: ``lrank % ndevices``. With exactly one visible device
    (e.g. Slurm's ``--gpu-bind=single:1`` or per-rank ``CUDA_VISIBLE_DEVICES``)
    every rank uses device 0.

    Backends: host only (integers).
    """
    if ndevices <= 0:
        raise BackendUnavailable("no CUDA device is visible")
    if ndevices == 1:
        return 0
    return int(lrank) % int(ndevices)


def bind_device(comm: Any = None, environ: dict | None = None) -> int | None:
    """Bind this process to its GPU (local rank modulo visible devices).

    Returns the device index used, or None when running on numpy.

    Backends: cupy (selects the CUDA device); numpy: no-op.
    """
    if resolve("auto") != "cupy":
        return None
    cp = _import_cupy()  # pragma: no cover - GPU only
    n = cp.cuda.runtime.getDeviceCount()
    dev = select_device(local_rank(comm, environ), n)
    cp.cuda.Device(dev).use()
    return dev


def device_name(xp: types.ModuleType | None = None) -> str:
    """Human-readable name of the current compute device ("cpu" for numpy).

    Backends: numpy, cupy.
    """
    if xp is None:
        xp = get_xp("auto")
    if xp is np:
        import platform

        return f"cpu ({platform.processor() or platform.machine()})"
    try:  # pragma: no cover - GPU only
        dev = xp.cuda.Device()
        props = xp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        return f"{name} (device {dev.id})"
    except Exception:
        return "cuda"


def scipy_module(xp: types.ModuleType, name: str) -> types.ModuleType:
    """``scipy.<name>`` for numpy, ``cupyx.scipy.<name>`` for cupy (e.g. ``special``, ``ndimage``).

    The two expose the same functions, so code stays on one path:
    ``special = scipy_module(xp, "special"); special.erf(u)``.

    Backends: numpy, cupy.
    """
    import importlib

    if xp is np:
        return importlib.import_module(f"scipy.{name}")
    return importlib.import_module(f"cupyx.scipy.{name}")  # pragma: no cover - GPU only
