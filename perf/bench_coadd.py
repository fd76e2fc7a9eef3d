#!/usr/bin/env python
"""Benchmark of the gpuspec coadds: targets per second, numpy and (when available) cupy.

Two workloads:

1. **caseC** (shared/reference/public/caseC_coadd, 5 targets x 3 exposures, one
   camera, 375 bins): plain coadd (default and no-normalisation), desispec
   ``spectroperf_resample_spectra`` single- and two-band runs, the per-target
   decorrelation, and the spectroperfectionism coadd. Compared with desispec's
   wall times in shared/reference/timings.json (same machine class, 1 thread).
2. **healpix**: a synthetic HEALPix pixel (``--ntarget`` targets x ``--nexp``
   exposures x 3 cameras on the DESI b/r/z 0.8 A grids, ~2300-2900 bins per
   camera): plain coadd + cross-camera coadd, and the spectroperfectionism coadd
   (one decorrelated spectrum per target on the 7781-bin brz grid).

BLAS/OpenMP are pinned to ``--threads`` (default 1, as the desispec timings) before
numpy is imported. Each timing is the median of ``--repeat`` runs after one warm-up
(the device is synchronised before each clock read). Writes
``perf/results/coadd-<host>-<backends>.json``.

Usage::

    python perf/bench_coadd.py [--backends numpy,cupy] [--ntarget 200] [--nexp 4]
"""

from __future__ import annotations

import argparse
import os
import sys


def _pin_threads(n: int):
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[v] = str(n)


if __name__ == "__main__":
    _pre = argparse.ArgumentParser(add_help=False)
    _pre.add_argument("--threads", type=int, default=1)
    _pin_threads(_pre.parse_known_args()[0].threads)

import json  # noqa: E402
import time  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import protocol as P  # noqa: E402  (perf/protocol.py)
from gpuspec import backend  # noqa: E402
from gpuspec.coadd import (coadd, coadd_cameras, coadd_spectroperf, decorrelate,  # noqa: E402
                           spectroperf_resample)
from gpuspec.coadd.synth import make_spectra  # noqa: E402
from gpuspec.io.spectra import read_spectra  # noqa: E402

SHARED = os.environ.get("GPUSPEC_SHARED", os.path.join(REPO, "..", "shared"))
CASEC = os.path.join(SHARED, "reference", "public", "caseC_coadd")
TIMINGS = os.path.join(SHARED, "reference", "timings.json")


def timeit(fn, xp, repeat=3, warmup=1):
    """perf/protocol.py's measure (warm-up, synchronised runs, median and spread)."""
    return P.measure(fn, xp, warmup=warmup, repeat=repeat)


def bench_casec(name, repeat):
    import fitsio

    xp = backend.get_xp(name)
    ref = json.load(open(TIMINGS))
    inp = read_spectra(os.path.join(CASEC, "input_spectra.fits"))
    two = read_spectra(os.path.join(CASEC, "resample_twoband_input.fits"))
    w1 = read_spectra(os.path.join(CASEC, "resample_single.fits")).wave["r"]
    w2 = read_spectra(os.path.join(CASEC, "resample_twoband.fits")).wave["br"]
    with fitsio.FITS(os.path.join(CASEC, "decorrelate.fits")) as fx:
        wavebin = fx[0].read_header()["WAVEBIN"]
        cb, cf = fx["CINV_BAND"].read(), fx["CINVF"].read()
    runs = {
        "coadd_default": (lambda: coadd(inp, onetile=True, backend=name), 5,
                          ref["public/caseC_coadd/coadd_default"]["seconds"]),
        "coadd_nonorm": (lambda: coadd(inp, onetile=True, no_normalize=True, backend=name), 5,
                         ref["public/caseC_coadd/coadd_nonorm"]["seconds"]),
        "resample_single": (lambda: spectroperf_resample(inp, w1, backend=name), 15,
                            ref["public/caseC_coadd/resample_single"]["seconds"]),
        "resample_twoband": (lambda: spectroperf_resample(two, w2, backend=name), 5,
                             ref["public/caseC_coadd/resample_twoband"]["seconds"]),
        "decorrelate": (lambda: decorrelate(cb, cf, wavebin, backend=name), 5,
                        ref["public/caseC_coadd/decorrelate"]["seconds_total"]),
        "coadd_spectroperf": (lambda: coadd_spectroperf(inp, inp.wave["r"], backend=name), 5,
                              None),
    }
    out = {}
    for k, (fn, n, tref) in runs.items():
        t = timeit(fn, xp, repeat)
        t["n_spectra_out"] = n
        t["per_s"] = n / t["median_s"]
        if tref is not None:
            t["desispec_s"] = tref
            t["speedup_vs_desispec"] = tref / t["median_s"]
        out[k] = t
        print(f"[{name}] caseC {k:18s} {t['median_s']*1e3:9.2f} ms  {t['per_s']:8.1f}/s"
              + (f"  x{t['speedup_vs_desispec']:.2f} vs desispec" if tref else ""), flush=True)
    return out


def bench_healpix(name, ntarget, nexp, repeat, max_blocks):
    xp = backend.get_xp(name)
    sp, _ = make_spectra(ntarget=ntarget, nexp=nexp, seed=11)
    shape = {b: list(sp.flux[b].shape) for b in sp.bands}
    out = {"ntarget": ntarget, "nexp": nexp, "cameras": sp.bands, "shapes": shape}

    def plain():
        c = coadd(sp, onetile=True, backend=name)
        return coadd_cameras(c, backend=name)

    t = timeit(plain, xp, repeat)
    t["targets_per_s"] = ntarget / t["median_s"]
    out["plain_coadd_plus_cameras"] = t
    print(f"[{name}] healpix plain+cameras {t['median_s']:8.3f} s  {t['targets_per_s']:8.1f} "
          "targets/s", flush=True)
    t = timeit(lambda: coadd_spectroperf(sp, backend=name, max_blocks=max_blocks), xp,
               max(1, repeat - 1))
    t["targets_per_s"] = ntarget / t["median_s"]
    out["spectroperf_coadd"] = t
    print(f"[{name}] healpix spectroperf   {t['median_s']:8.3f} s  {t['targets_per_s']:8.1f} "
          "targets/s", flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default=None, help="comma list (default: numpy[,cupy])")
    p.add_argument("--ntarget", type=int, default=200)
    p.add_argument("--nexp", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-blocks", type=int, default=None,
                   help="eigh batch size (default 1024 numpy, 8192 cupy)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    names = args.backends.split(",") if args.backends else \
        ["numpy"] + (["cupy"] if backend.resolve("auto") == "cupy" else [])
    res = {"benchmark": "coadd", "machine": P.machine(), "versions": P.versions(),
           "threads": args.threads, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "loadavg_start": list(os.getloadavg()), "backends": {}}
    res["git_commit"] = P.git_commit()
    for name in names:
        xp = backend.get_xp(name)
        mb = args.max_blocks or (8192 if name == "cupy" else 1024)
        r = {"device": backend.device_name(xp), "max_blocks": mb}
        if os.path.isdir(CASEC):
            r["caseC"] = bench_casec(name, args.repeat)
        r["healpix"] = bench_healpix(name, args.ntarget, args.nexp, args.repeat, mb)
        res["backends"][name] = r
    if "numpy" in res["backends"] and "cupy" in res["backends"]:
        cpu, gpu = res["backends"]["numpy"], res["backends"]["cupy"]
        res["gpu_speedup"] = {
            k: cpu["healpix"][k]["median_s"] / gpu["healpix"][k]["median_s"]
            for k in ("plain_coadd_plus_cameras", "spectroperf_coadd")}
    res["loadavg_end"] = list(os.getloadavg())
    res["note"] = ("shared 2-core VM: other processes compete for the cores (see loadavg); "
                   "timings are medians of --repeat runs")
    host = P.machine()["host"]
    out = args.out or os.path.join(HERE, "results", f"coadd-{host}-{'-'.join(names)}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
