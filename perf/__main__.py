"""``python -m perf``: run the gpuspec performance suite and regenerate docs/performance.md.

Every (backend, thread setting, benchmark) runs in its own child process whose
OMP/OPENBLAS/MKL/NUMBA thread counts are set before numpy is imported. The records
of one invocation go to one JSON-lines file ``<out>/<host>-<UTC stamp>-<size>.jsonl``;
then ``docs/performance.md`` is regenerated from every ``<out>/*.jsonl``.

Thread settings (``--threads``, comma list): ``1`` is the single-threaded run
compared with the reference timings (measured single-threaded); ``N`` > 1 pins N
threads and extracts with N bundle processes; ``0`` leaves the libraries' defaults.
The cupy backend runs once, with the first thread setting.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ALL = ("preproc", "extract", "coadd", "e2e")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m perf", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("small", "full"), default="small",
                    help="small: reference cases + small synthetic inputs (< 10 min on "
                         "2 CPU cores); full: full-size CCDs, 500-fiber frames")
    ap.add_argument("--backend", default="numpy",
                    help="numpy | cupy | auto (the default device) | all (numpy and cupy "
                         "when usable); a comma list is accepted")
    ap.add_argument("--only", default=",".join(ALL),
                    help=f"comma list of benchmarks among {','.join(ALL)}")
    ap.add_argument("--threads", default=None,
                    help="comma list of thread settings (default: 1,<cpu count>; 1 alone "
                         "on a 1-core machine)")
    ap.add_argument("--cameras", default=None,
                    help="e2e cameras (camword or list; default r0,b0 small / b0,r0,z0 full; "
                         "a0123456789 = the whole exposure)")
    ap.add_argument("--nspec", type=int, default=None, help="e2e fibers per camera")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="results folder (default perf/results)")
    ap.add_argument("--timeout", type=float, default=1800.0,
                    help="seconds allowed per child benchmark process")
    ap.add_argument("--no-report", action="store_true",
                    help="do not regenerate docs/performance.md")
    ap.add_argument("--report-out", default=os.path.join(REPO, "docs", "performance.md"))
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_file", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def backends(spec: str) -> list[str]:
    """Backends to run for ``--backend`` (cupy dropped with a message when unusable)."""
    from gpuspec import backend

    names = []
    for s in spec.split(","):
        s = s.strip()
        if s == "all":
            names += ["numpy", "cupy"]
        elif s == "auto":
            names.append(backend.resolve("auto"))
        elif s:
            names.append(s)
    out = []
    for n in dict.fromkeys(names):
        if n == "cupy" and not (backend.cupy_available() and not backend.gpu_disabled()):
            print("perf: cupy backend skipped: no usable CUDA GPU/cupy here", flush=True)
            continue
        if n not in ("numpy", "cupy"):
            raise SystemExit(f"perf: unknown backend {n!r}")
        out.append(n)
    return out


def child(args) -> int:
    """Run one benchmark in this process and append its records to ``--_file``.

    The process is set up as gpuspec's entry points set theirs: threads pinned by the
    parent's environment, the heap policy of :func:`gpuspec.heap.configure_heap`.
    """
    from gpuspec.heap import configure_heap

    from . import protocol as P

    configure_heap()

    bench = args._child
    name = args.backend
    if bench == "e2e":
        from .e2e import bench_e2e

        recs = bench_e2e(args.size, name, args.cameras, args.nspec)
    else:
        from .suite import BENCHMARKS

        recs = BENCHMARKS[bench](args.size, name)
    P.append(args._file, recs)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._child:
        return child(args)
    from . import protocol as P

    only = [b.strip() for b in args.only.split(",") if b.strip()]
    bad = [b for b in only if b not in ALL]
    if bad:
        raise SystemExit(f"perf: unknown benchmark(s) {bad}; choose among {ALL}")
    ncpu = os.cpu_count() or 1
    threads = ([int(t) for t in args.threads.split(",")] if args.threads
               else ([1, ncpu] if ncpu > 1 else [1]))
    names = backends(args.backend)
    if not names:
        print(f"perf: nothing to run: no usable backend among {args.backend!r} (skipped)",
              flush=True)
        return 0
    host = socket.gethostname().split(".")[0] or "host"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    os.makedirs(args.out, exist_ok=True)
    fn = os.path.join(args.out, f"{host}-{stamp}-{args.size}.jsonl")
    t_all = time.perf_counter()
    failures = []
    for name in names:
        for thr in (threads if name == "numpy" else threads[:1]):
            env = P.thread_env(thr)
            env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
            for bench in only:
                print(f"perf: {bench} size={args.size} backend={name} threads="
                      f"{thr if thr > 0 else 'default'}", flush=True)
                cmd = [sys.executable, "-m", "perf", "--_child", bench, "--_file", fn,
                       "--size", args.size, "--backend", name]
                if args.cameras:
                    cmd += ["--cameras", args.cameras]
                if args.nspec:
                    cmd += ["--nspec", str(args.nspec)]
                t0 = time.perf_counter()
                try:
                    rc = subprocess.run(cmd, env=env, cwd=REPO, timeout=args.timeout).returncode
                except subprocess.TimeoutExpired:
                    rc = "timeout"
                dt = time.perf_counter() - t0
                if rc != 0:
                    failures.append(f"{bench}/{name}/threads={thr}: {rc}")
                    print(f"perf: FAILED {bench} ({rc})", flush=True)
                print(f"perf:   ({dt:.1f} s)", flush=True)
    total = time.perf_counter() - t_all
    print(f"perf: wrote {fn} in {total:.1f} s", flush=True)
    if not args.no_report:
        from .report import write_report

        write_report(args.out, args.report_out)
        print(f"perf: regenerated {args.report_out}", flush=True)
    if failures:
        print("perf: failures: " + "; ".join(failures), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
