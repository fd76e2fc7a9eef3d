"""launch/perlmutter-gpu.sbatch rendered for 1 and 4 nodes, with and without MPS (dry run).

The numbers of the srun line (-n, --ntasks-per-node, -c) and OMP_NUM_THREADS must
agree with each other and with the node (4 GPUs, 64 cores, 128 hardware threads);
MPS must start inside the srun step that runs gpuspec, on SLURM_LOCALID 0.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "launch", "perlmutter-gpu.sbatch")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _render(nodes, mps, ranks_per_gpu=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MPS"))}
    env.update(GPUSPEC_DRYRUN="1", SLURM_JOB_NUM_NODES=str(nodes), SLURM_JOB_ID="42")
    if mps:
        env["MPS"] = "1"
        if ranks_per_gpu:
            env["RANKS_PER_GPU_MPS"] = str(ranks_per_gpu)
    r = subprocess.run(["bash", SCRIPT, "m.yaml"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _opt(words, name):
    for i, w in enumerate(words):
        if w == name:
            return words[i + 1]
        if w.startswith(name + "="):
            return w.split("=", 1)[1]
    return None


@pytest.mark.parametrize("nodes", [1, 4])
@pytest.mark.parametrize("mps,ranks_per_gpu", [(False, 1), (True, 2), (True, 4)])
def test_rendered_numbers_agree(nodes, mps, ranks_per_gpu):
    out = _render(nodes, mps, ranks_per_gpu if mps else None)
    lines = out.splitlines()
    env = dict(re.findall(r"(\w+)=(\d+)", next(ln for ln in lines if ln.startswith("export "))))
    sruns = [ln for ln in lines if ln.startswith("srun ")]
    assert len(sruns) == 1, out  # one srun step (MPS is not a separate step)
    words = shlex.split(sruns[0])
    n = int(_opt(words, "-n"))
    per_node = int(_opt(words, "--ntasks-per-node"))
    c = int(_opt(words, "-c"))
    omp = int(env["OMP_NUM_THREADS"])
    assert per_node == 4 * ranks_per_gpu
    assert n == nodes * per_node
    assert c * per_node == 128 and omp * per_node == 64 and c == 2 * omp
    assert int(env["GPUSPEC_THREADS"]) == omp
    assert _opt(words, "--cpu-bind") == "cores"
    assert any(ln.startswith("gpuspec-run m.yaml --check") for ln in lines)
    if not mps:
        assert _opt(words, "--gpus-per-task") == "1" and _opt(words, "--gpu-bind") == "single:1"
        assert words[-2:] == ["gpuspec-run", "m.yaml"] and "mps" not in out
    else:
        assert _opt(words, "--gpus-per-node") == "4" and _opt(words, "--gpus-per-task") is None
        body = words[words.index("-c", words.index("bash")) + 1]
        # the daemon starts on local rank 0 before gpuspec-run, inside the same step
        start = body.index("nvidia-cuda-mps-control -d")
        assert 'if [[ "$SLURM_LOCALID" == 0 ]]' in body[:start]
        assert body.index("gpuspec-run") > start and "echo quit | nvidia-cuda-mps-control" in body
        assert words[-1] == "m.yaml"


def test_script_has_an_account_line_and_build_notes():
    text = open(SCRIPT).read()
    assert re.search(r"^#SBATCH --account=\S+", text, re.M)
    assert "cray-mpich" in text and "--no-binary=mpi4py" in text
