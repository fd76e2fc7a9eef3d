#!/usr/bin/env python
"""Benchmark of ``gpuspec simulate``: one full-size camera (4128 x 4114, 500 fibers).

Runs :func:`gpuspec.sim.simulate_night` for camera r0 (default) with all 500
fibers on a full-size CCD, once per backend, and records the wall time, the
process CPU time, the per-camera render/total times reported by the simulator
and the load average (the CPU machine is shared, so wall times vary). Writes
``perf/results/simulate-<host>-<backends>.json``.

Usage::

    python perf/bench_simulate.py [--backends numpy,cupy] [--camera r0] [--nspec 500]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import tempfile
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="numpy")
    p.add_argument("--camera", default="r0")
    p.add_argument("--nspec", type=int, default=500)
    p.add_argument("--nexp", type=int, default=1)
    p.add_argument("--out", default=None, help="result JSON (default perf/results/...)")
    args = p.parse_args(argv)

    from gpuspec import backend
    from gpuspec.sim import simulate_night

    results = []
    for name in args.backends.split(","):
        try:
            backend.resolve(name)
        except Exception as exc:  # backend unavailable here
            results.append({"backend": name, "skipped": str(exc)})
            continue
        tmp = tempfile.mkdtemp(prefix="gpuspec-bench-sim-")
        try:
            load0 = os.getloadavg()
            t0, c0 = time.perf_counter(), time.process_time()
            info = simulate_night(tmp, args.camera, nspec=args.nspec, nexp=args.nexp, seed=1,
                                  full_size=True, backend_name=name)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            size = sum(os.path.getsize(os.path.join(tmp, f)) for f in info["files"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        results.append({"backend": name, "device": backend.device_name(backend.get_xp(name)),
                        "wall_s": round(wall, 3), "process_cpu_s": round(cpu, 3),
                        "timing": info["timing"], "ccd_shape": info["camera_info"][args.camera]
                        ["ccd_shape"], "nwave": info["camera_info"][args.camera]["truth_wave"][2],
                        "bytes_written": size, "loadavg_before": load0,
                        "loadavg_after": os.getloadavg()})
        print(json.dumps(results[-1]))
    out = {"benchmark": "simulate full-size single camera", "camera": args.camera,
           "nspec": args.nspec, "nexp": args.nexp, "host": socket.gethostname(),
           "cpu_count": os.cpu_count(), "python": platform.python_version(),
           "results": results}
    path = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                    f"simulate-{socket.gethostname()}-"
                                    f"{args.backends.replace(',', '-')}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
