"""Rank -> GPU binding with fake launcher environments (no GPU needed).

CUDA numbers the devices a process can see from 0; with ``CUDA_VISIBLE_DEVICES``
set, ``cudaGetDeviceCount`` returns the number of listed devices. The fake cupy
below follows that rule, so the tests cover: srun local ids, Open MPI / MPICH /
Cray variables, several GPUs per node, one GPU per rank (Slurm ``--gpu-bind`` or
per-rank ``CUDA_VISIBLE_DEVICES``), and no GPU at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from gpuspec import backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeCupy(types.ModuleType):
    """Just enough of cupy for bind_device: device count from CUDA_VISIBLE_DEVICES."""

    def __init__(self, environ, physical=4):
        super().__init__("cupy")
        self.used = []
        cvd = environ.get("CUDA_VISIBLE_DEVICES")
        count = physical if cvd is None else len([c for c in cvd.split(",") if c.strip()])
        outer = self

        class Device:
            def __init__(self, i=0):
                if not 0 <= i < count:
                    raise RuntimeError(f"invalid device ordinal {i}")
                self.id = i

            def use(self):
                outer.used.append(self.id)

        self.cuda = types.SimpleNamespace(
            Device=Device, runtime=types.SimpleNamespace(getDeviceCount=lambda: count))


def _bind(monkeypatch, environ, physical=4):
    fake = FakeCupy(environ, physical)
    monkeypatch.setattr(backend, "resolve", lambda b="auto": "cupy")
    monkeypatch.setattr(backend, "_import_cupy", lambda: fake)
    dev = backend.bind_device(None, environ=environ)
    assert fake.used == [dev]
    return dev


@pytest.mark.parametrize("var", ["SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK",
                                 "MPI_LOCALRANKID", "PALS_LOCAL_RANKID"])
def test_local_rank_from_launcher_variables(var):
    assert backend.local_rank(environ={var: "3"}) == 3
    assert backend.local_rank(environ={}) == 0


def test_srun_four_gpus_per_node_one_rank_each(monkeypatch):
    # srun -n 8 -N 2 --ntasks-per-node=4, all 4 GPUs visible to every rank
    for node in range(2):
        devs = [_bind(monkeypatch, {"SLURM_LOCALID": str(lr), "SLURM_PROCID": str(4 * node + lr)})
                for lr in range(4)]
        assert devs == [0, 1, 2, 3]


def test_gpu_bind_single_visible_device(monkeypatch):
    # srun --gpus-per-task=1 / --gpu-bind=single:1: each rank sees only its GPU as device 0
    for lr in range(4):
        env = {"SLURM_LOCALID": str(lr), "CUDA_VISIBLE_DEVICES": str(lr)}
        assert _bind(monkeypatch, env) == 0


def test_cuda_visible_devices_subset(monkeypatch):
    # two GPUs listed, four ranks on the node: ranks share them round robin
    devs = [_bind(monkeypatch, {"MPI_LOCALRANKID": str(lr), "CUDA_VISIBLE_DEVICES": "2,3"})
            for lr in range(4)]
    assert devs == [0, 1, 0, 1]


def test_more_ranks_than_gpus(monkeypatch):
    # MPS-style oversubscription: 8 ranks on 4 GPUs -> 2 ranks per GPU
    devs = [_bind(monkeypatch, {"OMPI_COMM_WORLD_LOCAL_RANK": str(lr)}) for lr in range(8)]
    assert devs == [0, 1, 2, 3, 0, 1, 2, 3]


def test_no_visible_device(monkeypatch):
    with pytest.raises(backend.BackendUnavailable):
        _bind(monkeypatch, {"SLURM_LOCALID": "0", "CUDA_VISIBLE_DEVICES": ""})


def test_select_device_rule():
    assert backend.select_device(5, 4) == 1
    assert backend.select_device(3, 1) == 0
    with pytest.raises(backend.BackendUnavailable):
        backend.select_device(0, 0)


def test_bind_device_on_numpy_is_none(monkeypatch):
    monkeypatch.setenv("GPUSPEC_NO_GPU", "1")
    assert backend.bind_device(None, environ={"SLURM_LOCALID": "2"}) is None


def test_mpi_environment_detection():
    assert backend.launcher_size({}) == 1
    assert backend.launcher_size({"PMI_SIZE": "3"}) == 3
    assert backend.launcher_size({"OMPI_COMM_WORLD_SIZE": "8"}) == 8
    assert backend.launcher_size({"SLURM_STEP_NUM_TASKS": "4"}) == 4
    assert backend.launcher_size({"PMI_SIZE": "1"}) == 1
    assert backend.launcher_size({"PMI_SIZE": "x", "PALS_SIZE": "2"}) == 2


@pytest.mark.mpi
def test_local_rank_from_communicator():
    # the launcher passes its communicator: node-local ranks via MPI_COMM_TYPE_SHARED
    code = ("from mpi4py import MPI; from gpuspec import backend; c = MPI.COMM_WORLD; "
            "r = c.gather((c.Get_rank(), backend.local_rank(c, environ={'SLURM_LOCALID': '0'}))); "
            "c.Get_rank() == 0 and print('\\n'.join(f'{a} {b}' for a, b in r), flush=True)")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(["mpiexec", "-n", "3", sys.executable, "-c", code], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pairs = sorted(tuple(map(int, ln.split())) for ln in r.stdout.splitlines() if ln.strip())
    assert pairs == [(0, 0), (1, 1), (2, 2)]  # one node: local rank == world rank


class _FakeComm:
    """Two ranks seen from rank 0: collectives return what the test sets."""

    def __init__(self, others):
        self.others = others

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1 + len(self.others)

    def bcast(self, obj, root=0):
        return obj

    def allgather(self, obj):
        return [obj] + list(self.others)

    def Split_type(self, *a, **k):  # pragma: no cover - not reached with a fake MPI
        raise RuntimeError


def test_failed_gpu_bind_is_an_error_on_every_rank(monkeypatch, tmp_path):
    """Issue 12: a failed bind was only printed and the ranks could share GPU 0."""
    from types import SimpleNamespace

    from gpuspec.launch import mpi

    def boom(comm=None, environ=None):
        raise RuntimeError("cudaErrorInvalidDevice")

    monkeypatch.setattr(mpi._backend, "bind_device", boom)
    manifest = SimpleNamespace(data={"backend": "cupy"})
    with pytest.raises(mpi.BindError, match="rank 0 .*cudaErrorInvalidDevice"):
        mpi._bind(_FakeComm([None]), manifest)
    # a rank that binds fine still stops when another could not
    monkeypatch.setattr(mpi._backend, "bind_device", lambda comm=None, environ=None: 0)
    with pytest.raises(mpi.BindError, match="rank 1 on nodeX: RuntimeError: no device"):
        mpi._bind(_FakeComm(["rank 1 on nodeX: RuntimeError: no device"]), manifest)
    mpi._bind(_FakeComm([None]), manifest)  # all bound: no error


def test_gpuspec_run_exits_2_when_a_bind_fails(monkeypatch, tmp_path, capsys):
    from gpuspec.launch import cli as run_cli
    from gpuspec.launch import mpi
    from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text

    inputs = make_toy_inputs(str(tmp_path / "in"), nights_expids=((20250101, 1),), petals=(0,))
    path = tmp_path / "m.yaml"
    path.write_text(toy_manifest_text(inputs, str(tmp_path / "prod")).replace(
        "backend: numpy", "backend: auto"))
    monkeypatch.setattr(run_cli, "_comm", lambda args: _FakeComm(["rank 1 on n2: no GPU"]))
    monkeypatch.setattr(mpi._backend, "bind_device", lambda comm=None, environ=None: None)
    assert run_cli.main([str(path), "--mpi"]) == 2
    assert "cannot bind a GPU: rank 1 on n2: no GPU" in capsys.readouterr().err
