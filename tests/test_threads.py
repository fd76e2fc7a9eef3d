"""gpuspec chooses its CPU threads itself (issue 13, bug 5): no thread variable needed.

Before, a user running the README's commands got the libraries' defaults (one
BLAS/OpenMP thread per core), measured 3.5x (here up to 11x in CPU) slower on a
loaded machine. The checks below look at the thread pools the program really has,
with every thread variable removed from the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gpuspec.threads import THREAD_VARIABLES

from test_heap import KEPT_FAULTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = r"""
import json, multiprocessing as mp, os, sys
import numpy, scipy.linalg  # the BLAS pools exist before the entry point runs
from threadpoolctl import threadpool_info
from gpuspec.cli import main
main(sys.argv[1:])
def counts():
    return [d["num_threads"] for d in threadpool_info()]
def child(q):
    q.put(counts())
q = mp.get_context("fork").Queue()
p = mp.get_context("fork").Process(target=child, args=(q,))
p.start(); forked = q.get(); p.join()
print(json.dumps({"main": counts(), "forked": forked,
                  "env": {k: os.environ.get(k) for k in %r}}))
""" % (THREAD_VARIABLES,)


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in THREAD_VARIABLES and not k.startswith("GPUSPEC_")}
    env.update(PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GPUSPEC_NO_GPU="1", **extra)
    return env


def _probe(args, **env):
    r = subprocess.run([sys.executable, "-c", PROBE, *args], env=_clean_env(**env),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_gpuspec_entry_point_sets_one_thread_without_any_variable(tmp_path):
    got = _probe(["status", str(tmp_path)])  # any subcommand: the entry point configures first
    assert got["main"] and set(got["main"]) == {1}
    assert set(got["forked"]) == {1}  # forked workers inherit it
    assert set(got["env"].values()) == {"1"}  # and child processes / later libraries too


@pytest.mark.slow
def test_threads_option_and_environment_override(tmp_path):
    assert set(_probe(["--threads", "3", "status", str(tmp_path)])["main"]) == {3}
    assert set(_probe(["status", str(tmp_path)], GPUSPEC_THREADS="2")["main"]) == {2}
    got = _probe(["status", str(tmp_path)], OMP_NUM_THREADS="7", OPENBLAS_NUM_THREADS="7")
    assert set(got["main"]) == {1}  # gpuspec's choice, not what happened to be exported


def _toy_manifest(tmp_path, threads=None):
    from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text

    inp = make_toy_inputs(str(tmp_path / "in"), nights_expids=((20250101, 1),), petals=(0,),
                          nfibers=25)
    text = toy_manifest_text(inp, str(tmp_path / "prod"), bundles=(0,), nbundles=1)
    text = text.replace("registry: toy", "registry: tests.launch_gated:THREADS")
    if threads:
        text = text.replace("run:\n", f"run:\n  threads: {threads}\n")
    (tmp_path / "m.yaml").write_text(text)
    return str(tmp_path / "m.yaml")


@pytest.mark.parametrize("manifest_threads,option,want", [(None, None, 1), (2, None, 2),
                                                         (2, "3", 3)])
@pytest.mark.slow
def test_gpuspec_run_tasks_run_with_the_chosen_threads(tmp_path, manifest_threads, option, want):
    path = _toy_manifest(tmp_path, manifest_threads)
    cmd = [sys.executable, "-m", "gpuspec.launch.cli", path, "-q"] + \
        (["--threads", option] if option else [])
    r = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = os.path.join(tmp_path, "prod", "preproc", "20250101", "00000001",
                       "preproc-b0-00000001.json.threads.json")
    with open(rec) as f:
        assert set(json.load(f)) == {want}
    with open(rec.replace(".threads.json", ".heap.json")) as f:
        assert json.load(f) <= KEPT_FAULTS         # the task process keeps freed memory


LATE_PROBE = r"""
import json, os
import numpy                      # numpy's BLAS at its default: one thread per core
from threadpoolctl import threadpool_info
from gpuspec import threads
assert "scipy.linalg" not in __import__("sys").modules
with threads.blas_threads(1):
    from scipy.linalg import lapack   # SciPy's own BLAS, first loaded inside the block
    inside = [(d["filepath"], d["num_threads"]) for d in threadpool_info()
              if d["user_api"] == "blas"]
print(json.dumps({"inside": inside}))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2,
                    reason="one core: every BLAS defaults to one thread, nothing to limit")
def test_blas_limit_covers_scipys_blas_first_loaded_in_the_block():
    """The API path without an entry point (a user's ``extract_frame``): a library first
    loaded inside ``blas_threads`` was not limited, and forked bundle workers spun."""
    r = subprocess.run([sys.executable, "-c", LATE_PROBE], env=_clean_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    inside = json.loads(r.stdout.strip().splitlines()[-1])["inside"]
    assert len(inside) >= 1 and {n for _, n in inside} == {1}, inside
