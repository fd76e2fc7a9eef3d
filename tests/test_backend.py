import sys

import numpy as np
import pytest

from gpuspec import backend, profiling


def test_numpy_backend_always_available():
    assert backend.get_xp("numpy") is np
    assert backend.resolve("numpy") == "numpy"
    assert backend.resolve(np) == "numpy"


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        backend.resolve("tpu")


def test_no_gpu_env(monkeypatch):
    monkeypatch.setenv("GPUSPEC_NO_GPU", "1")
    assert backend.gpu_disabled()
    assert backend.resolve("auto") == "numpy"
    with pytest.raises(backend.BackendUnavailable, match="GPUSPEC_NO_GPU"):
        backend.resolve("cupy")
    monkeypatch.setenv("GPUSPEC_NO_GPU", "0")
    assert not backend.gpu_disabled()


def test_works_without_cupy(monkeypatch):
    """Simulate a machine without cupy: auto -> numpy, explicit cupy -> clear error."""
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    monkeypatch.setattr(backend, "_cupy_checked", False)
    monkeypatch.setattr(backend, "_cupy_module", None)
    monkeypatch.delenv("GPUSPEC_NO_GPU", raising=False)
    assert not backend.cupy_available()
    assert backend.get_xp("auto") is np
    with pytest.raises(backend.BackendUnavailable, match="not installed"):
        backend.get_xp("cupy")
    a = np.arange(3.0)
    assert backend.get_array_module(a) is np
    backend.synchronize()
    backend.free_memory()
    assert backend.bind_device() is None
    with profiling.nvtx_range("x"):
        pass
    monkeypatch.setattr(backend, "_cupy_checked", False)


def test_native_byte_order():
    big = np.arange(5, dtype=">f8")
    out = backend.to_device(big, "numpy")
    assert out.dtype.isnative and np.array_equal(out, np.arange(5.0))
    rec = np.zeros(2, dtype=[("a", ">i4"), ("b", ">f8")])
    assert backend.native(rec).dtype.isnative
    same = np.arange(3.0)
    assert backend.native(same) is same


def test_to_device_dtype():
    out = backend.to_device(np.arange(3, dtype=">i2"), np, dtype=np.float64)
    assert out.dtype == np.float64


@pytest.mark.parametrize("env,expected", [
    ({"SLURM_LOCALID": "3"}, 3),
    ({"OMPI_COMM_WORLD_LOCAL_RANK": "2"}, 2),
    ({"MPI_LOCALRANKID": "1"}, 1),
    ({"PALS_LOCAL_RANKID": "5"}, 5),
    ({}, 0),
    ({"SLURM_LOCALID": "x", "LOCAL_RANK": "4"}, 4),
])
def test_local_rank_from_launcher(env, expected):
    assert backend.local_rank(environ=env) == expected


@pytest.mark.parametrize("lrank,ndev,dev", [(0, 4, 0), (5, 4, 1), (3, 1, 0), (7, 8, 7), (2, 2, 0)])
def test_select_device(lrank, ndev, dev):
    assert backend.select_device(lrank, ndev) == dev


def test_select_device_none():
    with pytest.raises(backend.BackendUnavailable):
        backend.select_device(0, 0)


def test_nvtx_never_fails():
    @profiling.nvtx_range("deco")
    def f(x):
        return x + 1

    assert f(1) == 2
    with profiling.nvtx_range("ctx"):
        pass
    with pytest.raises(ZeroDivisionError):
        with profiling.nvtx_range("err"):
            1 / 0


def test_timer_syncs_the_device_around_the_clock(monkeypatch):
    """Timer synchronises the device before each clock reading (so queued GPU work is
    counted) and measures exactly the interval between them; a fake clock keeps it
    deterministic."""
    events = []
    ticks = iter([10.0, 12.5])

    def fake_clock():
        events.append("clock")
        return next(ticks)

    monkeypatch.setattr(profiling.backend, "synchronize", lambda xp: events.append(("sync", xp)))
    monkeypatch.setattr(profiling.time, "perf_counter", fake_clock)
    marker = object()
    with profiling.Timer(marker, name="t") as t:
        events.append("work")
    assert events == [("sync", marker), "clock", "work", ("sync", marker), "clock"]
    assert t.elapsed == 2.5 and t.start == 10.0


@pytest.mark.gpu
def test_cupy_roundtrip():
    cp = backend.get_xp("cupy")
    a = backend.to_device(np.arange(4, dtype=">f4"), cp)
    assert backend.get_array_module(a) is cp
    assert np.array_equal(backend.to_host(a), np.arange(4, dtype=np.float32))
    backend.synchronize(cp)
    backend.free_memory(cp)


def test_nvtx_decorator_reentrant_and_threaded(monkeypatch):
    """One decorator instance serves recursive and concurrent calls: each exit closes its own range."""
    import threading

    opened = []

    class FakeRange:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            opened.append(self)

        def __exit__(self, *exc):
            opened.remove(self)

    class FakeNvtx:
        @staticmethod
        def annotate(name, color=None):
            return FakeRange(name)

    monkeypatch.setattr(profiling, "_impl", ("nvtx", FakeNvtx))
    monkeypatch.setattr(profiling, "_impl_checked", True)

    @profiling.nvtx_range("rec")
    def rec(n):
        return 0 if n == 0 else 1 + rec(n - 1)

    assert rec(5) == 5
    threads = [threading.Thread(target=rec, args=(20,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert opened == []
