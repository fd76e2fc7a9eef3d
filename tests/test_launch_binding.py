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
