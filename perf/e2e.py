"""End-to-end exposure benchmark: preproc + extraction of every camera of an exposure.

The exposure comes from the simulator (:func:`gpuspec.sim.simulate_night`): 500 fibers
per camera on full 4128 x 4114 CCDs for ``--size full``; ``--size small`` uses cropped
CCDs and 50 fibers. Each camera is simulated once, alone, into
``perf/cache/e2e-<key>/<camera>/`` (gitignored; the key holds every simulation
parameter), so repeated runs reuse it; only the cameras that are timed are simulated
(a full-size camera is ~275 MB of calibration + raw data and ~30 s of CPU).

Timed per camera, from files to files as in production: ``preproc_file`` (raw +
calibrations -> preproc file) and ``extract_file`` (preproc + PSF -> frame file; the
production wavelength grid of the band, 0.8 Å). Before the timed cameras one warm-up
pass (preproc of the first camera + extraction of its first bundle) fills the caches,
JIT and CUDA kernel caches. The result: seconds per camera, for the exposure, and
frames per device-hour (``3600 * ncameras / total``), with the 500-fiber equivalent
for cropped runs, next to gpu_specter's published ~144 frames per GPU-hour
(575 frames per node-hour on 4 x A100).

Usage::

    python -m perf --only e2e --size full --backend cupy --cameras a0123456789
    python -m perf.e2e --size small --backend numpy      # one process, no thread pinning
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time

from . import protocol as P

NIGHT, EXPID = 20250115, 100
DEFAULTS = {"small": {"cameras": "b0,r0", "nspec": 50, "full_size": False},
            "full": {"cameras": "b0,r0,z0", "nspec": 500, "full_size": True}}
CACHE = os.path.join(P.HERE, "cache")


def cache_key(nspec: int, full_size: bool, seed: int = 1) -> str:
    """Cache folder name for the simulation parameters (one sub-folder per camera)."""
    params = {"nspec": nspec, "full_size": bool(full_size), "seed": seed, "night": NIGHT,
              "expid0": EXPID, "nexp": 1, "exptime": 900.0, "v": 1}
    h = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return f"e2e-n{nspec}-{'full' if full_size else 'crop'}-s{seed}-{h}"


def simulated_camera(camera: str, nspec: int, full_size: bool, seed: int = 1,
                     cache: str = CACHE, backend_name: str = "auto") -> tuple[str, dict, float]:
    """Folder of the cached simulation of one camera; simulates it when absent.

    Returns ``(folder, simulation info, seconds spent simulating (0 when cached))``.
    """
    from gpuspec.sim import simulate_night

    folder = os.path.join(cache, cache_key(nspec, full_size, seed), camera)
    done = os.path.join(folder, "simulation.json")
    if os.path.exists(done):
        with open(done) as f:
            return folder, json.load(f), 0.0
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    info = simulate_night(tmp, camera, nspec=nspec, nexp=1, seed=seed, night=NIGHT,
                          expid0=EXPID, full_size=full_size, backend_name=backend_name)
    dt = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)  # the cache entry appears whole or not at all
    with open(done) as f:
        return folder, json.load(f), dt
    return folder, info, dt  # pragma: no cover


def _paths(folder: str, camera: str) -> dict:
    from gpuspec.sim.night import layout

    return layout(folder, NIGHT, EXPID, camera)


def run_camera(folder: str, camera: str, nspec: int, outdir: str, backend_name: str,
               nproc: int = 1, bundles=None) -> dict:
    """preproc_file + extract_file of one cached camera; seconds of each."""
    from gpuspec import backend
    from gpuspec.extract import extract_file
    from gpuspec.preproc import preproc_file
    from gpuspec.grids import desi_wavelength

    xp = backend.get_xp(backend_name)
    p = _paths(folder, camera)
    pre = os.path.join(outdir, f"preproc-{camera}.fits")
    frm = os.path.join(outdir, f"frame-{camera}.fits")
    cal = {k: p[k] for k in ("bias", "dark", "pixflat", "mask") if os.path.exists(p[k])}
    fm = p["fibermap"] if os.path.exists(p["fibermap"]) else None
    backend.synchronize(xp)
    with P.Meter() as mp:
        preproc_file(p["raw"], camera, pre, fibermap=fm, backend=backend_name, **cal)
        backend.synchronize(xp)
    wmin, wmax, dw = desi_wavelength(camera)
    kw = {"bundles": bundles} if bundles is not None else {"nspec": nspec}
    with P.Meter() as me:
        extract_file(pre, p["psf"], frm, (wmin, wmax, dw), backend=backend_name, nproc=nproc,
                     **kw)
        backend.synchronize(xp)
    a, b = mp.result, me.result
    whole = {"wall_s": a["wall_s"] + b["wall_s"], "cpu_s": a["cpu_s"] + b["cpu_s"],
             "sys_s": a["sys_s"] + b["sys_s"], "minflt": a["minflt"] + b["minflt"],
             "majflt": a["majflt"] + b["majflt"], "rss_before_mb": a["rss_before_mb"],
             "peak_rss_mb": max(a["peak_rss_mb"], b["peak_rss_mb"]),
             "peak_scope": a["peak_scope"],
             "children_peak_rss_mb": max(a["children_peak_rss_mb"], b["children_peak_rss_mb"])}
    return {"preproc_s": a["wall_s"], "extract_s": b["wall_s"], "total_s": whole["wall_s"],
            "meter": whole, "preproc_meter": a, "extract_meter": b}


def bench_e2e(size: str, backend_name: str, cameras: str | None = None,
              nspec: int | None = None) -> list[dict]:
    """Time preproc + extraction of each camera; one record per camera and one for all."""
    from gpuspec import backend
    from gpuspec.sim.cameras import parse_cameras

    cfg = dict(DEFAULTS[size])
    cams = parse_cameras(cameras or cfg["cameras"])
    nspec = int(nspec or cfg["nspec"])
    full_size = cfg["full_size"]
    xp = backend.get_xp(backend_name)
    thr = P.threads_label()
    nproc = int(thr) if (backend_name == "numpy" and thr.isdigit()) else 1
    sim_s = {}
    folders = {}
    for cam in cams:
        folders[cam], _, sim_s[cam] = simulated_camera(cam, nspec, full_size)
        print(f"  e2e: {cam} {'simulated in %.1f s' % sim_s[cam] if sim_s[cam] else 'cached'}"
              f" ({folders[cam]})", flush=True)
    recs = []
    out = tempfile.mkdtemp(prefix="gpuspec-e2e-", dir=CACHE if os.path.isdir(CACHE) else None)
    try:
        t0 = time.perf_counter()
        run_camera(folders[cams[0]], cams[0], nspec, out, backend_name, nproc, bundles=[0])
        warm_s = time.perf_counter() - t0
        per = {}
        la0 = P.loadavg()
        for cam in cams:
            la = P.loadavg()
            r = run_camera(folders[cam], cam, nspec, out, backend_name, nproc)
            per[cam] = r
            rec = P.record("e2e", f"camera_{cam}", size=size, backend_name=backend_name,
                           timing=P.single(r["total_s"], warmup=1, meter=r["meter"]), xp=xp,
                           loadavg_before=la, sizes={"nspec": nspec, "full_size": full_size},
                           extra={"preproc_s": r["preproc_s"], "extract_s": r["extract_s"],
                                  "nproc": nproc, "simulate_s": sim_s[cam],
                                  "preproc_peak_rss_mb": r["preproc_meter"]["peak_rss_mb"],
                                  "extract_peak_rss_mb": r["extract_meter"]["peak_rss_mb"],
                                  "extract_children_peak_rss_mb":
                                      r["extract_meter"]["children_peak_rss_mb"]})
            recs.append(rec)
            print(f"  e2e {cam}: preproc {r['preproc_s']:.2f} s + extract {r['extract_s']:.2f} s"
                  f" = {r['total_s']:.2f} s", flush=True)
        total = sum(r["total_s"] for r in per.values())
        ms = [r["meter"] for r in per.values()]
        whole = dict(ms[0], wall_s=total, cpu_s=sum(m["cpu_s"] for m in ms),
                     sys_s=sum(m["sys_s"] for m in ms), minflt=sum(m["minflt"] for m in ms),
                     peak_rss_mb=max(m["peak_rss_mb"] for m in ms),
                     children_peak_rss_mb=max(m["children_peak_rss_mb"] for m in ms))
        fph = 3600.0 * len(cams) / total
        eq = fph * nspec / 500.0
        gs = P.GPU_SPECTER_FRAMES_PER_NODE_HOUR / P.GPU_SPECTER_GPUS_PER_NODE
        rec = P.record("e2e", "exposure", size=size, backend_name=backend_name,
                       timing=P.single(total, warmup=1, meter=whole), xp=xp,
                       loadavg_before=la0,
                       sizes={"ncameras": len(cams), "cameras": cams, "nspec": nspec,
                              "full_size": full_size},
                       reference={"name": "gpu_specter", "frames_per_gpu_hour": gs,
                                  "frames_per_node_hour": P.GPU_SPECTER_FRAMES_PER_NODE_HOUR,
                                  "measured_on": "4 x NVIDIA A100 per node (published)",
                                  "ratio": eq / gs},
                       extra={"frames_per_device_hour": fph,
                              "frames500_per_device_hour": eq,
                              "per_device": "GPU-hour" if backend_name == "cupy" else
                              f"CPU-hour at {thr} thread(s)",
                              "preproc_s": sum(r["preproc_s"] for r in per.values()),
                              "extract_s": sum(r["extract_s"] for r in per.values()),
                              "warmup_s": warm_s, "nproc": nproc,
                              "whole_exposure_30_cameras_s_extrapolated":
                                  total / len(cams) * 30.0 * 500.0 / nspec,
                              "note": "frames500: scaled to 500 fibers per frame "
                                      "(cropped small runs are only indicative)"})
        recs.append(rec)
        print(f"  e2e exposure ({len(cams)} cameras): {total:.2f} s -> {fph:.1f} frames/h "
              f"({eq:.1f} 500-fiber frames/h; gpu_specter ~{gs:.0f}/GPU-h)", flush=True)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return recs


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="end-to-end exposure benchmark (one process)")
    ap.add_argument("--size", choices=("small", "full"), default="small")
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--cameras", default=None)
    ap.add_argument("--nspec", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON-lines file to append to")
    a = ap.parse_args(argv)
    recs = bench_e2e(a.size, a.backend, a.cameras, a.nspec)
    if a.out:
        P.append(a.out, recs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
