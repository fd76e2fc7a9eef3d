"""Fixed measurement protocol and result records of the gpuspec performance suite.

Protocol
--------
Every timing is taken by :func:`measure`: ``warmup`` untimed calls (JIT, caches,
CUDA kernel compilation, memory pools), then ``repeat`` timed calls, each bracketed by
a device synchronisation (:func:`gpuspec.backend.synchronize`) so queued GPU work is
counted. The record keeps every run, the median, min, max and the spread (half the
inter-quartile range and the relative median absolute deviation).

Memory and CPU time
-------------------
Every timed run is also metered (:class:`Meter`): process CPU time (user + system,
``time.process_time``), system time, minor/major page faults, and the peak resident
set size of the run. On Linux the peak is the run's own: the kernel's high-water mark
(``VmHWM``) is reset before the run by writing ``5`` to ``/proc/self/clear_refs``, so
``peak_rss_mb`` is the largest RSS of the process *during* that run (inputs already in
memory included; ``rss_before_mb`` is the RSS just before it). Where the reset is not
possible the peak is the process's lifetime maximum (``peak_scope: "process"``).
Forked workers are reported apart (``children_peak_rss_mb``: the largest RSS of any
finished child so far). On a GPU these are host figures.

Records
-------
One JSON object per line (JSON lines), appended to one file per suite run
``perf/results/<host>-<YYYYmmddTHHMMSSZ>-<size>.jsonl``. Every record has the keys
of :data:`RECORD_KEYS`; see ``perf/README.md`` for their meaning.

This module does not import numpy at import time (thread pinning must come first).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import socket
import statistics
import subprocess
import time
from typing import Any, Callable, Iterable

SCHEMA = "gpuspec-perf/1"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS")
RECORD_KEYS = ("schema", "benchmark", "case", "size", "backend", "device", "threads",
               "timing", "sizes", "machine", "versions", "git_commit", "date_utc",
               "loadavg", "reference", "extra")
TIMING_KEYS = ("median_s", "min_s", "max_s", "iqr_half_s", "mad_rel", "runs_s", "warmup",
               "repeat")
#: Memory/CPU keys that :func:`measure` adds to a timing (records made before they
#: existed lack them; :func:`validate` does not require them).
METER_KEYS = ("cpu_s", "cpu_median_s", "sys_median_s", "minflt_median", "peak_rss_mb",
              "rss_before_mb", "peak_scope")
#: gpu_specter's published throughput: 575 frames per node-hour on 4 x A100 (Perlmutter)
GPU_SPECTER_FRAMES_PER_NODE_HOUR = 575.0
GPU_SPECTER_GPUS_PER_NODE = 4
#: gpu_specter's CPU path against specter, recorded side by side in one process,
#: single-threaded, at equal work, on a machine of this kind (issue 16's table; gpu_specter
#: is not installable here): case -> (specter seconds, gpu_specter seconds), (lo, hi) each.
#: perf/goals.py scales gpuspec's measured ratio to specter by these (goal 2a).
GPU_SPECTER_CPU_RECORDED = {
    "caseB (50 x 375)": {"specter_s": (21.5, 25.5), "gpu_specter_s": (9.7, 10.9)},
    "100 fibers x 1000 bins": {"specter_s": (102.0, 106.0), "gpu_specter_s": (50.0, 51.0)},
    "one bundle 25 x 2326": {"specter_s": (61.0, 64.0), "gpu_specter_s": (29.0, 29.0)},
}
#: goal 1b: the spectroperfectionism coadd of a HEALPix pixel of this many targets on a
#: GPU, at least GOAL1B_MIN_RATIO x desispec's single-core throughput. The cupy coadd
#: benchmark adds this pixel (perf/suite.py, case GOAL1B_CASE); perf/goals.py sets it
#: against desispec's resample per row recorded by perf/bench_coadd.py.
GOAL1B_NTARGET = 500
GOAL1B_CASE = f"healpix{GOAL1B_NTARGET}_spectroperf"
GOAL1B_MIN_RATIO = 100.0
GPU_SPECTER_CPU_SOURCE = ("issue 16: specter and gpu_specter's CPU path interleaved in one "
                          "process, 1 thread, on this machine kind")


def shared_dir() -> str:
    """The shared folder (``GPUSPEC_SHARED`` or ``../shared`` beside the checkout)."""
    return os.environ.get("GPUSPEC_SHARED", os.path.join(REPO, "..", "shared"))


def reference_timings() -> dict:
    """``shared/reference/timings.json`` as a dict (empty when absent)."""
    fn = os.path.join(shared_dir(), "reference", "timings.json")
    if not os.path.exists(fn):
        return {}
    with open(fn) as f:
        return json.load(f)


def thread_env(threads: int, environ: dict | None = None) -> dict:
    """Environment with the BLAS/OpenMP/numba thread counts pinned to ``threads``.

    ``threads <= 0`` removes the variables (library defaults).
    """
    env = dict(os.environ if environ is None else environ)
    for k in THREAD_VARS:
        if threads > 0:
            env[k] = str(threads)
        else:
            env.pop(k, None)
    return env


def stats(runs: Iterable[float]) -> dict:
    """Median, min, max and spread of run times (seconds).

    ``iqr_half_s`` is half the inter-quartile range (0 for fewer than 2 runs);
    ``mad_rel`` the median absolute deviation over the median.
    """
    r = [float(t) for t in runs]
    if not r:
        raise ValueError("no runs to summarise")
    med = statistics.median(r)
    if len(r) >= 2:
        q = statistics.quantiles(r, n=4, method="inclusive")
        iqr_half = 0.5 * (q[2] - q[0])
    else:
        iqr_half = 0.0
    mad = statistics.median(abs(t - med) for t in r)
    return {"median_s": med, "min_s": min(r), "max_s": max(r), "iqr_half_s": iqr_half,
            "mad_rel": (mad / med) if med > 0 else 0.0, "runs_s": r}


def _status_kb(field: str) -> float | None:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float | None:
    """Current resident set size of this process (MB = 2**20 bytes), or None."""
    kb = _status_kb("VmRSS")
    return kb / 1024.0 if kb is not None else None


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark of this process (Linux); True when done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak RSS of this process since the last :func:`reset_peak_rss` (else lifetime), MB."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux
    return kb / 1024.0


def children_peak_rss_mb() -> float:
    """Largest peak RSS of any finished child process so far (MB; 0 when none)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


class Meter:
    """Context manager: wall time, CPU time, page faults and peak RSS of a block.

    ``with Meter() as m: work()`` then ``m.result``: ``wall_s``, ``cpu_s`` (user +
    system of this process and of the child processes that ended during the block, e.g.
    forked bundle workers), ``children_cpu_s`` (that part), ``sys_s`` (this process), ``minflt``, ``majflt``, ``rss_before_mb``,
    ``peak_rss_mb``, ``peak_scope`` (``"call"`` when the high-water mark could be reset
    before the block, else ``"process"``), ``children_peak_rss_mb``.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.result: dict = {}

    def __enter__(self):
        import resource

        self._scope = "call" if reset_peak_rss() else "process"
        self._rss0 = rss_mb()
        self._ru0 = resource.getrusage(resource.RUSAGE_SELF)
        self._ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._c0 = time.process_time()
        self._t0 = self.clock()
        return self

    def __exit__(self, *exc):
        import resource

        t1 = self.clock()
        c1 = time.process_time()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        children = (ch1.ru_utime + ch1.ru_stime) - (self._ch0.ru_utime + self._ch0.ru_stime)
        self.result = {
            "wall_s": t1 - self._t0, "cpu_s": c1 - self._c0 + children,
            "children_cpu_s": children,
            "sys_s": ru1.ru_stime - self._ru0.ru_stime,
            "minflt": ru1.ru_minflt - self._ru0.ru_minflt,
            "majflt": ru1.ru_majflt - self._ru0.ru_majflt,
            "rss_before_mb": self._rss0, "peak_rss_mb": peak_rss_mb(),
            "peak_scope": self._scope, "children_peak_rss_mb": children_peak_rss_mb()}
        return False


def meter_summary(meters: list[dict]) -> dict:
    """The :data:`METER_KEYS` summary of the :class:`Meter` results of several runs.

    CPU, system time and faults: medians (and every run's CPU time); peak RSS: the
    largest over the runs; RSS before: the first run's.
    """
    if not meters:
        return {}
    med = statistics.median
    out = {"cpu_s": [m["cpu_s"] for m in meters],
           "cpu_median_s": med(m["cpu_s"] for m in meters),
           "sys_median_s": med(m["sys_s"] for m in meters),
           "minflt_median": med(m["minflt"] for m in meters),
           "peak_rss_mb": max(m["peak_rss_mb"] for m in meters),
           "rss_before_mb": meters[0]["rss_before_mb"],
           "peak_scope": meters[0]["peak_scope"],
           "children_peak_rss_mb": max(m["children_peak_rss_mb"] for m in meters)}
    return out


def measure(fn: Callable[[], Any], xp: Any = None, *, warmup: int = 1, repeat: int = 3,
            clock: Callable[[], float] = time.perf_counter) -> dict:
    """Time ``fn()`` with the protocol: warm-up, synchronised timed runs, statistics.

    Parameters
    ----------
    fn : callable
        The work (no arguments). Its result is discarded after synchronisation.
    xp : module, optional
        Array module whose device is synchronised before and after each run.
    warmup, repeat : int
        Untimed and timed calls.
    clock : callable
        Clock (tests pass a fake one).

    Returns
    -------
    dict
        :func:`stats` plus ``warmup`` and ``repeat``, and the :data:`METER_KEYS`
        (CPU time, page faults, peak RSS of the runs, see :class:`Meter`).
    """
    from gpuspec import backend

    if repeat < 1:
        raise ValueError("repeat must be >= 1")
    _release_kept_memory()
    for _ in range(warmup):
        fn()
        backend.synchronize(xp)
    runs = [_timed_run(fn, xp, clock) for _ in range(repeat)]
    return _timing(runs, warmup, repeat)


def _release_kept_memory():
    """Start a benchmark without the memory the heap policy kept from the one before
    (``gpuspec.heap``): its warm-up faults its own memory in, its peak RSS is its own."""
    from gpuspec import heap

    heap.release_kept_memory()


def _timed_run(fn, xp, clock):
    """One synchronised, metered call of ``fn``: ``(seconds, Meter result)``."""
    from gpuspec import backend

    backend.synchronize(xp)
    with Meter() as m:
        t0 = clock()
        fn()
        backend.synchronize(xp)
        dt = clock() - t0
    return dt, m.result


def _timing(runs, warmup, repeat) -> dict:
    """The timing dict of :func:`measure` from ``(seconds, meter)`` runs."""
    out = stats([t for t, _ in runs])
    out.update(warmup=int(warmup), repeat=int(repeat))
    out.update(meter_summary([m for _, m in runs]))
    return out


def interleave(fns: dict, xp: Any = None, *, rounds: int = 2,
               clock: Callable[[], float] = time.perf_counter) -> dict:
    """Time several variants of one piece of work side by side, interleaved.

    Round r runs every ``fns[name]()`` once, in order; on a shared machine a load change
    then hits every variant alike, which a ratio of two separate :func:`measure` calls
    would not guarantee. No warm-up here: warm the code before.

    Parameters
    ----------
    fns : dict of name -> callable
    xp : module, optional
        Array module synchronised around each run.
    rounds : int
        Timed runs of each variant.
    clock : callable
        Clock (tests pass a fake one).

    Returns
    -------
    dict of name -> timing
        :func:`measure`'s timing dict of each variant (``warmup`` 0, ``repeat`` = rounds).
    """
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    runs = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            runs[k].append(_timed_run(fn, xp, clock))
    return {k: _timing(runs[k], 0, rounds) for k in fns}


def single(seconds: float, warmup: int = 0, meter: dict | None = None) -> dict:
    """Timing dict of one measured run (for long runs timed once).

    ``meter``: the :class:`Meter` result of that run (adds CPU time and peak RSS).
    """
    out = stats([seconds])
    out.update(warmup=int(warmup), repeat=1)
    if meter:
        out.update(meter_summary([meter]))
    return out


def git_commit() -> str:
    """HEAD of the checkout (``+dirty`` when tracked files differ), or ``unknown``."""
    try:
        c = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                           text=True, timeout=10).stdout.strip()
        if not c:
            return "unknown"
        d = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "gpuspec"],
                           cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        return c + ("+dirty" if d else "")
    except Exception:
        return "unknown"


def machine() -> dict:
    """Host, platform, processor, CPU count and the CPU's fingerprint (:func:`cpu_id`)."""
    return {"host": socket.gethostname().split(".")[0] or "host",
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "cpu": cpu_id()}


def cpu_id() -> dict | None:
    """Model name, cache size and a short hash of the feature flags (Linux ``/proc/cpuinfo``).

    Virtual machines under one host name can run on different CPUs between sessions; two
    records compare CPU speed only when these agree. None where ``/proc/cpuinfo`` is not.
    Read once per process (every record asks for it).
    """
    c = _cpu_id()
    return dict(c) if c else None


@functools.lru_cache(maxsize=1)
def _cpu_id() -> dict | None:
    import hashlib

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            first = f.read().split("\n\n", 1)[0]
    except OSError:
        return None
    kv = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in first.splitlines())}
    flags = " ".join(sorted(kv.get("flags", "").split()))
    return {"model": kv.get("model name"), "cache": kv.get("cache size"),
            "flags_sha": hashlib.sha256(flags.encode()).hexdigest()[:12] if flags else None}


def same_cpu(a: dict | None, b: dict | None) -> bool | None:
    """Whether two :func:`machine` dicts ran on the same kind of CPU (None: unknown)."""
    ca, cb = (a or {}).get("cpu"), (b or {}).get("cpu")
    if not ca or not cb:
        return None
    return ca == cb


def versions(xp: Any = None) -> dict:
    """Versions of python, numpy, scipy, fitsio, numba, gpuspec (and cupy/CUDA on GPU)."""
    import numpy as np

    v = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("scipy", "fitsio", "numba", "gpuspec"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:
            v[mod] = None
    if xp is not None and xp is not np:
        v["cupy"] = getattr(xp, "__version__", None)
        try:  # pragma: no cover - GPU only
            v["cuda_runtime"] = xp.cuda.runtime.runtimeGetVersion()
            v["cuda_driver"] = xp.cuda.runtime.driverGetVersion()
        except Exception:
            pass
    return v


def threads_label() -> str:
    """``"1"``, ``"N"`` or ``"default"`` from the pinned environment variables."""
    v = os.environ.get("OMP_NUM_THREADS") or os.environ.get("OPENBLAS_NUM_THREADS")
    return v if v else "default"


def heap_label() -> str:
    """The heap policy of this process (``gpuspec.heap``): ``keep``, ``system``,
    ``unsupported``, or ``unset`` where nothing configured it (records made before
    2026-12-02 19:00 have no ``heap`` key: glibc's defaults)."""
    from gpuspec import heap

    return heap.current() or "unset"


def record(benchmark: str, case: str, *, size: str, backend_name: str, timing: dict,
           xp: Any = None, sizes: dict | None = None, reference: dict | None = None,
           extra: dict | None = None, loadavg_before=None) -> dict:
    """A result record (see :data:`RECORD_KEYS`).

    ``reference``: ``{"name": ..., "seconds": ..., "ratio": ref / gpuspec median}`` when a
    reference timing exists for this case.
    """
    from gpuspec import backend

    if xp is None:
        xp = backend.get_xp(backend_name)
    try:
        la_after = list(os.getloadavg())
    except OSError:
        la_after = None
    return {
        "schema": SCHEMA, "benchmark": benchmark, "case": case, "size": size,
        "backend": backend_name, "device": backend.device_name(xp),
        "threads": threads_label(), "heap": heap_label(), "timing": timing,
        "sizes": sizes or {}, "machine": machine(), "versions": versions(xp),
        "git_commit": git_commit(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg": {"before": loadavg_before, "after": la_after},
        "reference": reference, "extra": extra or {},
    }


def with_reference(name: str, median_s: float, key: str = "seconds") -> dict | None:
    """Reference entry for ``timings.json[name][key]`` with ratio reference / gpuspec."""
    ref = reference_timings().get(name)
    if not ref or key not in ref:
        return None
    s = float(ref[key])
    return {"name": name, "call": ref.get("call"), "seconds": s, "key": key,
            "ratio": s / median_s if median_s > 0 else None,
            "measured_on": "reference machine: 2-core x86_64, 1 thread (timings.json)"}


def validate(rec: dict) -> list[str]:
    """Problems with a record (empty list: valid)."""
    errs = [f"missing key {k}" for k in RECORD_KEYS if k not in rec]
    if rec.get("schema") != SCHEMA:
        errs.append(f"schema {rec.get('schema')!r} != {SCHEMA!r}")
    t = rec.get("timing") or {}
    errs += [f"timing missing {k}" for k in TIMING_KEYS if k not in t]
    if t and t.get("repeat") != len(t.get("runs_s", [])):
        errs.append("timing repeat != len(runs_s)")
    return errs


def append(path: str, records: Iterable[dict]) -> None:
    """Append records to a JSON-lines file (one line each, flushed)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
            f.flush()


def load(folder: str) -> list[dict]:
    """All valid records of ``folder/*.jsonl`` (sorted by date)."""
    out = []
    if not os.path.isdir(folder):
        return out
    for fn in sorted(os.listdir(folder)):
        if not fn.endswith(".jsonl"):
            continue
        with open(os.path.join(folder, fn)) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if isinstance(r, dict) and not validate(r):
                    r["_file"] = fn
                    out.append(r)
    out.sort(key=lambda r: r["date_utc"])
    return out


def loadavg():
    """os.getloadavg() as a list (None where unsupported)."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None
