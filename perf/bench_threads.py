"""Do the README's commands run as fast as with pinned threads? (issue 13, bug 5)

Runs, as separate processes, the README's

* ``gpuspec extract -i pre/preproc-r0-00000100.fits -p sim/psf/psf-r0.fits -o frame.fits
  -w 5760,7620,0.8`` (on ``gpuspec simulate --cameras b0,r0,z0 --nspec 50 --seed 1``), and
* ``gpuspec-run manifest.yaml`` (preproc -> extract -> frame -> group -> coadd of r0,
  bundles 0 and 1, written by ``gpuspec.launch.demo.make_demo_manifest``),

each in three environments, interleaved (``--repeat`` times; the slow
library-default ``--repeat-library`` times):

``as-written``
    no thread variable exported (OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS and GPUSPEC_THREADS
    removed): what a user typing the README gets; gpuspec chooses (``gpuspec.threads``);
``pinned``
    the four variables at 1, as ``.ci/run`` exports them;
``library-default``
    ``--threads <cpu count>``: what the libraries choose by themselves (the behaviour
    before gpuspec chose), for comparison.

Optionally with ``--load N`` busy processes running meanwhile (the slowdown the issue
reports was on a loaded machine). Wall time and CPU time (user + system of the child)
are recorded; the medians are compared. On a shared machine the wall time is noisy (other
users' load); the CPU time of the command is the steadier measure. Writes
``perf/results/threads-<host>-<UTC stamp>.json``. A benchmark record, not a test.

    python perf/bench_threads.py [--repeat 5] [--load 0,2] [--only extract,run]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
from perf.protocol import THREAD_VARS  # noqa: E402

WORK = os.path.join(HERE, "cache", "threads")
ENV_DROP = THREAD_VARS + ("GPUSPEC_THREADS", "GPUSPEC_BLAS_THREADS")


def _env(kind: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    env["GPUSPEC_NO_GPU"] = "1"
    if kind == "pinned":
        env.update({k: "1" for k in THREAD_VARS})
    return env


def _tool(name: str) -> str:
    exe = os.path.join(os.path.dirname(sys.executable), name)
    return exe if os.path.exists(exe) else name


def prepare(work: str) -> dict:
    """The README's simulation, preproc of r0, and a manifest; cached in ``work``."""
    sim, pre = os.path.join(work, "sim"), os.path.join(work, "pre")
    env = _env("pinned")
    if not os.path.exists(os.path.join(sim, "simulation.json")):
        subprocess.run([_tool("gpuspec"), "simulate", "--out", sim, "--cameras", "b0,r0,z0",
                        "--nspec", "50", "--seed", "1"], check=True, env=env)
    prefile = os.path.join(pre, "preproc-r0-00000100.fits")
    if not os.path.exists(prefile):
        subprocess.run([_tool("gpuspec"), "preproc", "-i",
                        os.path.join(sim, "raw", "20250115", "00000100", "desi-00000100.fits.fz"),
                        "--cameras", "a0", "--calib-dir", os.path.join(sim, "calib"),
                        "-o", pre + os.sep], check=True, env=env)
    from gpuspec.launch.demo import make_demo_manifest

    manifest = make_demo_manifest(sim, os.path.join(work, "prod"), cameras=["r0"],
                                  bundles=[0, 1], backend="numpy",
                                  manifest=os.path.join(work, "manifest.yaml"))
    return dict(sim=sim, preproc=prefile, manifest=manifest)


def commands(inp: dict, work: str) -> dict:
    return {
        "extract": [_tool("gpuspec"), "extract", "-i", inp["preproc"], "-p",
                    os.path.join(inp["sim"], "psf", "psf-r0.fits"), "-o",
                    os.path.join(work, "frame-r0-00000100.fits"), "-w", "5760,7620,0.8"],
        "run": [_tool("gpuspec-run"), inp["manifest"], "-q"],
    }


def _busy(stop):
    x = 0
    while not stop.is_set():
        x = (x * 1103515245 + 12345) % 2147483648


def run_once(cmd: list, kind: str, work: str, what: str) -> dict:
    if what == "run":  # a fresh production each time (the manifest is beside it)
        shutil.rmtree(os.path.join(work, "prod"), ignore_errors=True)
    if kind == "library-default":
        cmd = cmd[:1] + ["--threads", str(os.cpu_count() or 1)] + cmd[1:]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=_env(kind), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def bench(what: str, cmd: list, load: int, repeat: int, work: str,
          repeat_library: int = 1) -> dict:
    kinds = ("as-written", "pinned", "library-default")
    runs = {k: [] for k in kinds}
    nrep = {"as-written": repeat, "pinned": repeat, "library-default": repeat_library}
    stop = mp.Event()
    procs = [mp.Process(target=_busy, args=(stop,), daemon=True) for _ in range(load)]
    for p in procs:
        p.start()
    try:
        load_before = os.getloadavg()
        for i in range(repeat):
            for k in (kinds if i % 2 == 0 else kinds[::-1]):  # interleaved, alternating
                if i >= nrep[k]:
                    continue
                runs[k].append(run_once(cmd, k, work, what))
                print(f"  {what} load={load} {k:16s} run {i + 1}: "
                      f"{runs[k][-1]['wall_s']:.1f} s wall, {runs[k][-1]['cpu_s']:.1f} s CPU",
                      flush=True)
    finally:
        stop.set()
        for p in procs:
            p.join()
    out = {"command": " ".join(os.path.basename(c) if i == 0 else c
                               for i, c in enumerate(cmd)),
           "load_processes": load, "loadavg_before": load_before,
           "loadavg_after": os.getloadavg(), "repeat": nrep}
    for k, rs in runs.items():
        out[k] = {"wall_median_s": statistics.median(r["wall_s"] for r in rs),
                  "cpu_median_s": statistics.median(r["cpu_s"] for r in rs), "runs": rs}
    pin, pincpu = out["pinned"]["wall_median_s"], out["pinned"]["cpu_median_s"]
    out["as_written_over_pinned"] = out["as-written"]["wall_median_s"] / pin
    out["as_written_over_pinned_cpu"] = out["as-written"]["cpu_median_s"] / pincpu
    out["library_default_over_pinned"] = out["library-default"]["wall_median_s"] / pin
    out["library_default_over_pinned_cpu"] = out["library-default"]["cpu_median_s"] / pincpu
    out["within_10_percent"] = out["as_written_over_pinned"] <= 1.10
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs of as-written and pinned")
    ap.add_argument("--repeat-library", type=int, default=1,
                    help="runs of library-default (slow: many times the others)")
    ap.add_argument("--load", default="0", help="busy processes meanwhile, comma list")
    ap.add_argument("--only", default="extract,run")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)
    os.makedirs(WORK, exist_ok=True)
    inp = prepare(WORK)
    cmds = commands(inp, WORK)
    import gpuspec

    rec = {"benchmark": "threads", "host": socket.gethostname(), "cpu_count": os.cpu_count(),
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "gpuspec": gpuspec.__version__, "git_commit": _git_commit(), "results": []}
    for load in [int(x) for x in a.load.split(",")]:
        for what in a.only.split(","):
            rec["results"].append(bench(what, cmds[what], load, a.repeat, WORK,
                                        a.repeat_library))
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"threads-{rec['host']}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as f:
        json.dump(rec, f, indent=1)
    print(f"\n{'command':44s} load  as-written  pinned  lib-default  (medians: wall s / CPU s)")
    for r in rec["results"]:
        cells = "  ".join(f"{r[k]['wall_median_s']:6.1f}/{r[k]['cpu_median_s']:5.1f}"
                          for k in ("as-written", "pinned", "library-default"))
        print(f"{r['command'].split(' -i ')[0][:44]:44s} {r['load_processes']:4d}  {cells}  "
              f"as-written/pinned wall {r['as_written_over_pinned']:.3f} "
              f"CPU {r['as_written_over_pinned_cpu']:.3f}")
    print(f"wrote {path}")
    return 0


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
