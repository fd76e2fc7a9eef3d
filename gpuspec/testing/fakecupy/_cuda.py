"""``cupy.cuda`` of the emulation: one device, no-op streams, events and memory pools,
and RawKernel/RawModule that run a registered CPU twin or raise "not emulated"."""

from __future__ import annotations

import types

import numpy as np

from ._ledger import LEDGER

DEVICE_NAME = "Emulated CuPy device (NumPy)"
_TWINS: dict = {}


def register_kernel_twin(name: str, fn):
    """Run ``fn(*args)`` (device arrays as NumPy arrays, written in place) whenever a
    RawKernel/RawModule function called ``name`` is launched on the emulation."""
    _TWINS[name] = fn


def unregister_kernel_twin(name: str):
    _TWINS.pop(name, None)


class Device:
    def __init__(self, device=None):
        device = 0 if device is None else int(device)
        if device != 0:
            raise RuntimeError(f"cudaErrorInvalidDevice: emulated device {device} does not "
                               "exist (the emulation has one device, 0)")
        self.id = device

    def use(self):
        return None

    def synchronize(self):
        LEDGER.sync("Device.synchronize")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    compute_capability = "90"
    pci_bus_id = "0000:00:00.0"

    @property
    def mem_info(self):
        return (64 * 2 ** 30 - LEDGER.live_bytes, 64 * 2 ** 30)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.done = True

    def record(self, stream=None):
        return None

    def synchronize(self):
        LEDGER.sync("Event.synchronize")


class Stream:
    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.ptr = 0
        self.done = True

    def synchronize(self):
        LEDGER.sync("Stream.synchronize")

    def use(self):
        return self

    def record(self, event=None):
        return event or Event()

    def wait_event(self, event):
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


Stream.null = Stream(null=True)
_CURRENT = Stream.null


def get_current_stream(device_id=-1):
    return _CURRENT


def get_device_id():
    return 0


class MemoryPool:
    def used_bytes(self):
        return LEDGER.live_bytes

    def total_bytes(self):
        return LEDGER.live_bytes

    def free_bytes(self):
        return 0

    def n_free_blocks(self):
        return 0

    def free_all_blocks(self, stream=None):
        return None

    def free_all_free(self):
        return None

    def set_limit(self, size=None, fraction=None):
        return None

    def get_limit(self):
        return 0


class PinnedMemoryPool:
    def free_all_blocks(self):
        return None

    def n_free_blocks(self):
        return 0


_POOL = MemoryPool()
_PINNED = PinnedMemoryPool()


def get_default_memory_pool():
    return _POOL


def get_default_pinned_memory_pool():
    return _PINNED


def _props(device=0):
    Device(device)
    return {"name": DEVICE_NAME.encode(), "totalGlobalMem": 64 * 2 ** 30, "major": 9,
            "minor": 0, "multiProcessorCount": 1, "warpSize": 32}


def make_runtime():
    rt = types.SimpleNamespace()
    rt.getDeviceCount = lambda: 1
    rt.getDeviceProperties = _props
    rt.runtimeGetVersion = lambda: 12080
    rt.driverGetVersion = lambda: 12080
    rt.getDevice = lambda: 0
    rt.setDevice = lambda d: Device(d) and None
    rt.deviceSynchronize = lambda: LEDGER.sync("runtime.deviceSynchronize")
    rt.memGetInfo = lambda: Device(0).mem_info
    rt.is_hip = False
    rt.CUDARuntimeError = RuntimeError
    return rt


class _Launch:
    def __init__(self, name):
        self.name = name

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None, enable_cooperative_groups=False):
        from ._core import ndarray
        fn = _TWINS.get(self.name)
        if fn is None:
            raise NotImplementedError(
                f"RawKernel {self.name!r} is not emulated: register its CPU twin with "
                "gpuspec.testing.fakecupy.register_kernel_twin(name, fn)")
        fn(*[a._a if isinstance(a, ndarray) else a for a in args])


class RawKernel(_Launch):
    def __init__(self, code, name, options=(), backend="nvrtc", translate_cucomplex=False,
                 *, enable_cooperative_groups=False, jitify=False):
        super().__init__(name)
        self.code = code
        self.options = options


class RawModule:
    def __init__(self, *, code=None, path=None, options=(), backend="nvrtc",
                 translate_cucomplex=False, enable_cooperative_groups=False,
                 name_expressions=None, jitify=False):
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
        self.code, self.options = code, options

    def get_function(self, name):
        return RawKernel(self.code, name, self.options)

    def compile(self, log_stream=None):
        return None


class _NotEmulatedKernel:
    def __init__(self, *args, **kwargs):
        self._args = args

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} is not emulated")


class ElementwiseKernel(_NotEmulatedKernel):
    pass


class ReductionKernel(_NotEmulatedKernel):
    pass


def is_available():
    return True


def empty_pinned(shape, dtype=float, order="C"):
    return np.empty(shape, dtype, order)


def zeros_pinned(shape, dtype=float, order="C"):
    return np.zeros(shape, dtype, order)
