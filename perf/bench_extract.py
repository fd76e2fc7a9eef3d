#!/usr/bin/env python
"""Benchmark of gpuspec extraction: Case B against specter, and a full simulated frame.

Timed:

- ``caseB``: ``extract_frame`` on the reference Case B (50 fibers × 375 bins, clean
  run, desispec defaults), median of ``--repeat`` runs after one warm-up, beside
  specter's recorded time in ``shared/reference/timings.json`` (ratio = specter /
  gpuspec). Run once per thread setting (``--threads 1,0``; 0 = library default)
  in a subprocess, because BLAS thread counts are fixed at import.
- ``full_frame`` (``--full``): a 500-fiber × ~2300-bin frame on the full CCD of
  the reference r-camera PSF: spectra are projected through the PSF
  (``gpuspec.psf.project.render_spectra``), Gaussian noise is added, then the frame
  is extracted (time of the extraction only; the rendering is reported apart).

The checks are also recorded: Case B flux pull against specter, and for the full
frame the scatter of (flux − R·truth)·√ivar.

Writes ``perf/results/extract-<host>-<backend>.json`` (device named inside).

Usage::

    python perf/bench_extract.py [--backend numpy|cupy] [--threads 1,0] [--repeat 3] [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED = os.environ.get("GPUSPEC_SHARED", os.path.join(REPO, "..", "shared"))
REF = os.path.join(SHARED, "reference")
CASEB = os.path.join(REF, "public", "caseB_extract")
PSF = os.path.join(REF, "psf", "psf-r0-00051060.fits")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS")


def _sync(xp):
    from gpuspec import backend

    backend.synchronize(xp)


def run_caseB(backend_name: str, repeat: int, nproc: int = 1) -> dict:
    """Time Case B in this process (thread settings already in the environment)."""
    sys.path.insert(0, REPO)
    import fitsio
    import numpy as np

    from gpuspec import backend
    from gpuspec.extract import extract_frame
    from gpuspec.psf import read_psf

    xp = backend.get_xp(backend_name)
    inp = os.path.join(CASEB, "input.fits")
    h = fitsio.read_header(inp, 0)
    img = backend.native(fitsio.read(inp, "IMAGE"))
    iv = backend.native(fitsio.read(inp, "IVAR"))
    wave = backend.native(fitsio.read(inp, "WAVE"))
    t0 = time.perf_counter()
    psf = read_psf(PSF)
    t_psf = time.perf_counter() - t0
    xyr = [h["XMIN"], h["XMAX"], h["YMIN"], h["YMAX"]]
    kw = dict(xyrange=xyr, backend=backend_name, model=nproc == 1, nproc=nproc)
    extract_frame(img, iv, psf, wave, 0, 50, **kw)  # warm-up (caches, GPU kernels)
    times, cpu = [], []
    for _ in range(repeat):
        _sync(xp)
        t = time.perf_counter()
        c = time.process_time()
        fr = extract_frame(img, iv, psf, wave, 0, 50, **kw)
        _sync(xp)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    ref = {k: fitsio.read(os.path.join(CASEB, "ex2d_clean.fits"), k) for k in ("FLUX", "IVAR")}
    ok = (fr.ivar > 0) & (ref["IVAR"] > 0)
    pull = np.abs(fr.flux - ref["FLUX"])[ok] / np.sqrt(1 / fr.ivar[ok] + 1 / ref["IVAR"][ok])
    with open(os.path.join(REF, "timings.json")) as f:
        specter_s = json.load(f)["public/caseB_extract/ex2d_clean"]["seconds"]
    best = min(times)
    med = sorted(times)[len(times) // 2]
    return {
        "threads": {k: os.environ.get(k, "") for k in THREAD_VARS},
        "nproc": nproc,
        "blas_threads_during_extraction": os.environ.get("GPUSPEC_BLAS_THREADS", "1"),
        "psf_read_s": t_psf,
        "times_s": times,
        "process_cpu_s": cpu,
        "median_s": med,
        "min_s": best,
        "specter_s": specter_s,
        "speedup_vs_specter_median": specter_s / med,
        "speedup_vs_specter_min": specter_s / best,
        "max_abs_pull_vs_specter": float(pull.max()),
        "shape": [50, int(wave.size)],
        "loadavg_after": list(os.getloadavg()),
    }


def run_full(backend_name: str, nspec: int, seed: int = 7) -> dict:
    """Render and extract a full simulated frame (500 fibers × ~2300 bins)."""
    sys.path.insert(0, REPO)
    import numpy as np

    from gpuspec import backend
    from gpuspec.extract import extract_frame
    from gpuspec.psf import read_psf
    from gpuspec.resolution import apply as rapply
    from perf.suite import make_frame  # the same synthetic frame as the suite

    xp = backend.get_xp(backend_name)
    psf = read_psf(PSF)
    dw = 0.8
    t = time.perf_counter()
    img, ivar, wave, wtrue, phot = make_frame(psf, nspec, seed=seed, xp=xp, truth=True)
    t_render = time.perf_counter() - t  # render + noise
    wmin = float(wave[0])
    _sync(xp)
    t = time.perf_counter()
    c = time.process_time()
    fr = extract_frame(img, ivar, psf, wave, 0, nspec, backend=backend_name)
    _sync(xp)
    t_extract = time.perf_counter() - t
    c_extract = time.process_time() - c
    i0 = int(np.argmin(np.abs(wtrue - wave[0])))
    truth = phot[:, i0:i0 + wave.size] / dw
    chi = ((fr.flux - rapply(fr.resolution_data, truth)) * np.sqrt(fr.ivar))[:, 10:-10]
    good = fr.ivar[:, 10:-10] > 0
    return {
        "nspec": nspec, "nwave": int(wave.size), "wave_range": [wmin, float(wave[-1])],
        "render_s": t_render, "extract_s": t_extract, "extract_process_cpu_s": c_extract,
        "chi_std_vs_truth": float(np.std(chi[good])),
        "chi_mean_vs_truth": float(np.mean(chi[good])),
        "loadavg_after": list(os.getloadavg()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    ap.add_argument("--threads", default="1,0",
                    help="comma list of thread counts for Case B (0 = library default)")
    ap.add_argument("--nprocs", default="",
                    help="comma list of process counts for Case B (threads=1 each), e.g. 2")
    ap.add_argument("--update", action="store_true",
                    help="add to the existing output JSON instead of replacing it")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="also the full simulated frame")
    ap.add_argument("--full-nspec", type=int, default=500)
    ap.add_argument("--full-threads", type=int, default=0,
                    help="threads for the full frame (0 = library default)")
    ap.add_argument("--out", default=None, help="output JSON (default perf/results/...)")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child:  # run one measurement and print its JSON
        kind = args._child
        if kind.startswith("caseB"):
            res = run_caseB(args.backend, args.repeat, int(kind[5:] or 1))
        else:
            res = run_full(args.backend, args.full_nspec)
        print("RESULT " + json.dumps(res))
        return 0

    def child(kind, threads):
        env = dict(os.environ)
        for k in THREAD_VARS:
            if threads > 0:
                env[k] = str(threads)
            else:
                env.pop(k, None)
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", kind, "--backend",
               args.backend, "--repeat", str(args.repeat), "--full-nspec", str(args.full_nspec)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
        return json.loads(line[7:])

    sys.path.insert(0, REPO)
    from gpuspec import __version__, backend

    import protocol as P  # perf/protocol.py: machine info, git commit

    xp = backend.get_xp(args.backend)
    result = {
        "benchmark": "extract",
        "backend": args.backend,
        "device": backend.device_name(xp),
        "machine": P.machine(),
        "git_commit": P.git_commit(),
        "gpuspec": __version__,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_before": list(os.getloadavg()),
        "settings": {"nsubbundles": 5, "nwavestep": 50, "wavepad_frac": 0.2,
                     "pixpad_frac": 0.8, "bundlesize": 25},
        "caseB": {},
    }
    out = args.out or os.path.join(
        HERE, "results", f"extract-{result['machine']['host']}-{args.backend}.json")
    if args.update and os.path.exists(out):
        with open(out) as f:
            old = json.load(f)
        old.setdefault("caseB", {})
        old["date_utc_update"] = result["date_utc"]
        result = old
    for npr in [int(t) for t in args.nprocs.split(",") if t.strip()]:
        key = f"threads=1,nproc={npr}"
        result["caseB"][key] = child(f"caseB{npr}", 1)
        r = result["caseB"][key]
        print(f"case B {key}: median {r['median_s']:.2f} s -> x"
              f"{r['speedup_vs_specter_median']:.1f}", flush=True)
    for th in [int(t) for t in args.threads.split(",") if t.strip()]:
        key = f"threads={th}" if th > 0 else "threads=default"
        result["caseB"][key] = child("caseB", th)
        r = result["caseB"][key]
        print(f"case B {key}: median {r['median_s']:.2f} s, min {r['min_s']:.2f} s, specter "
              f"{r['specter_s']:.1f} s -> x{r['speedup_vs_specter_median']:.1f} "
              f"(max |pull| {r['max_abs_pull_vs_specter']:.1e})", flush=True)
    if args.full:
        r = child("full", args.full_threads)
        result["full_frame"] = r
        print(f"full frame {r['nspec']} x {r['nwave']}: extract {r['extract_s']:.1f} s "
              f"(render {r['render_s']:.1f} s), chi std {r['chi_std_vs_truth']:.3f}", flush=True)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
