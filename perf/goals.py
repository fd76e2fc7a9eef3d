"""The goals table of issue 16 (speed and memory) for docs/performance.md.

Each goal line shows the target, the latest measurement that answers it (with its record
file), the measured ratio and the gap to the goal, and whether it is met or open. A
goal without a measurement yet shows "no record" and is open. The GPU cost model
(``perf/results/costmodel.json``, written by ``python -m perf.costmodel``) gives the
bounds, the CPU extraction limit and, for every GPU record, the fraction of the bound
reached.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from perf import costmodel as C  # noqa: E402
from perf import protocol as P  # noqa: E402

#: ranks per Perlmutter GPU node that share its host memory (perf/costmodel.py PERLMUTTER)
RANKS = (4, 20)


def _latest(records, bench, case, threads=None, size=None, backend="numpy"):
    """Newest record of (benchmark, case[, threads, size, backend])."""
    best = None
    for r in records:
        if r["benchmark"] != bench or r["case"] != case:
            continue
        if threads is not None and str(r["threads"]) != str(threads):
            continue
        if size is not None and r["size"] != size:
            continue
        if backend is not None and r["backend"] != backend:
            continue
        if best is None or r["date_utc"] >= best["date_utc"]:
            best = r
    return best


def _cpu(r):
    """CPU seconds of a record (process time when metered, else wall)."""
    t = r["timing"]
    return t.get("cpu_median_s") or t["median_s"]


def _load(r):
    la = (r.get("loadavg") or {}).get("before")
    return f"{la[0]:.1f}" if la else "?"


def _la1(la):
    """1-minute load average of a ``loadavg()`` list, or ``?``."""
    return f"{la[0]:.1f}" if la else "?"


def _same_run_pair(records, bench, case):
    """(threads=1, threads=2) records of one ``python -m perf`` invocation (one results
    file: side by side, same commit), the newest such pair; (None, None) if none.
    Two records from different runs would compare different loads and code."""
    by_file = {}
    for r in records:
        if r["benchmark"] == bench and r["case"] == case and r.get("backend") == "numpy":
            by_file.setdefault(r.get("_file"), {})[str(r["threads"])] = r
    pairs = [(d["1"], d["2"]) for d in by_file.values() if "1" in d and "2" in d]
    if not pairs:
        return None, None
    return max(pairs, key=lambda p: str(p[0].get("date_utc", "")))


def machine_label(machine) -> str:
    """Host and CPU model of a record's ``machine``, e.g. ``vm: AMD EPYC``: one host name
    can stand for VMs of different CPU kinds, whose speeds differ (goal 1a: 4.4× on an
    Intel Xeon VM, 6.0× on an AMD EPYC one, 2026-12-03)."""
    m = machine or {}
    host = m.get("host", "?")
    model = (m.get("cpu") or {}).get("model") or ""
    for w in ("(R)", "(TM)", " CPU", " Processor"):
        model = model.replace(w, "")
    model = " ".join(model.split())
    return f"{host}: {model}" if model else host


def _src(*recs):
    """The record files of ``recs``, each with the machine (host and CPU) and commit that
    wrote it."""
    files = sorted({(r.get("_file", "?"), machine_label(r.get("machine")),
                     str(r.get("git_commit") or "unknown")[:7]) for r in recs if r})
    return ", ".join(f"`{f}` ({h}, {c})" for f, h, c in files) if files else "–"


def _cm_src(cm):
    """The cost model file with the machine it was computed on (a CPU: it is a model)."""
    host = machine_label(cm.get("machine") or cm.get("cpu_machine"))
    return f"`costmodel.json` (model, computed on {host})"


def _row(goal, target, measured, ratio, gap, met, src):
    status = "**met**" if met is True else ("open" if met is False else met)
    return f"| {goal} | {target} | {measured} | {ratio} | {gap} | {status} | {src} |"


def load_costmodel(results_dir):
    fn = os.path.join(results_dir, "costmodel.json")
    if not os.path.exists(fn):
        return None
    with open(fn) as f:
        return json.load(f)


def _goal1a_pair(records, size):
    """(ratio, measured text, records) of the newest plain/spectroperf pair of one suite
    size, or None. Interleaved in one run: the median of the per-round ratios."""
    sp = _latest(records, "coadd", "healpix_spectroperf", threads=1, size=size)
    pl = _latest(records, "coadd", "healpix_plain", threads=1, size=size)
    if not (sp and pl):
        return None
    k = _cpu(sp) / _cpu(pl)
    meas = f"{_cpu(sp):.3g} s vs {_cpu(pl):.3g} s ({sp['sizes'].get('ntarget')} targets)"
    rr = (sp.get("extra") or {}).get("ratio_rounds")
    if rr and sp.get("_file") == pl.get("_file"):
        k = float(statistics.median(rr))
        meas += (f", interleaved, {len(rr)} rounds: {min(rr):.2f}–{max(rr):.2f}× "
                 f"(load {_load(sp)})")
    return k, meas, (sp, pl)


def _goal1(records, results_dir=None):
    """Goal 1a from the newest pair of each suite size; the least favourable leads."""
    pairs = [p for p in (_goal1a_pair(records, z) for z in ("small", "full")) if p]
    if not pairs:
        pairs = [p for p in [_goal1a_pair(records, None)] if p]
    rows = []
    if pairs:
        pairs.sort(key=lambda p: -p[0])
        k, meas, recs = pairs[0]
        for k2, m2, _ in pairs[1:]:
            meas += f"; {m2}: {k2:.1f}×"
        rows.append(_row("1a spectroperf coadd cost / plain coadd (CPU, 1 thread)", "≤ 5×",
                         meas, f"{k:.1f}×", f"{k / 5:.1f}× too slow" if k > 5 else "–",
                         k <= 5, _src(*[r for _, _, rs in pairs for r in rs])))
    else:
        rows.append(_row("1a spectroperf coadd cost / plain coadd (CPU)", "≤ 5×", "no record",
                         "–", "–", False, "–"))
    rows.append(_goal1b(records, results_dir))
    return rows


def desispec_resample_row(results_dir):
    """desispec's single-core spectroperfectionism resample, CPU-s per row (one target ×
    exposure, b/r/z on the full grids), from the newest ``coadd-spectroperf-*.json`` of
    ``perf/bench_coadd.py`` that measured it: ``(seconds, file name)`` or ``(None, None)``."""
    best = None
    for fn in glob.glob(os.path.join(results_dir, "coadd-spectroperf-*.json")):
        with open(fn) as f:
            d = json.load(f)
        t = (d.get("cpu_s") or {}).get("desispec_resample")
        nrow = (d.get("workload") or {}).get("resample_rows")
        if t and nrow and (best is None or d.get("date_utc", "") >= best[2]):
            best = (t["median_s"] / nrow, os.path.basename(fn), d.get("date_utc", ""))
    return (best[0], best[1]) if best else (None, None)


def _goal1b(records, results_dir):
    """Goal 1b: the GPU spectroperf coadd of a pixel of P.GOAL1B_NTARGET+ targets against
    desispec's single-core time for the same rows (its recorded CPU-s per row × targets ×
    exposures; desispec decorrelates each row on its own, so its time is linear in them)."""
    goal = (f"1b spectroperf coadd on a GPU vs desispec single core "
            f"({P.GOAL1B_NTARGET}+ targets)")
    target = f"≥ {P.GOAL1B_MIN_RATIO:.0f}×"
    row_s, row_file = desispec_resample_row(results_dir) if results_dir else (None, None)
    gpu = [r for r in records if r["benchmark"] == "coadd" and r["backend"] == "cupy"
           and r["case"] in (P.GOAL1B_CASE, "healpix_spectroperf")]
    gpu.sort(key=lambda r: ((r.get("sizes") or {}).get("ntarget", 0), r["date_utc"]))
    if not gpu:
        need = ""
        if row_s:
            from perf.suite import SIZES

            ne = SIZES["full"]["nexp"]               # the pixel gpu-check's suite runs
            ds = row_s * P.GOAL1B_NTARGET * ne
            need = (f"; desispec single core: {row_s:.2f} CPU-s per row (`{row_file}`), "
                    f"{ds:.0f} s for {P.GOAL1B_NTARGET} targets × {ne} exposures, so the GPU "
                    f"needs ≤ {ds / P.GOAL1B_MIN_RATIO:.1f} s")
        return _row(goal, target, "no GPU record" + need, "–", "–", False,
                    f"`{row_file}` (desispec, recorded)" if row_s else "–")
    g = gpu[-1]
    nt, ne = g["sizes"].get("ntarget", 0), g["sizes"].get("nexp", 0)
    t = g["timing"]["median_s"]
    if not row_s:
        return _row(goal, target, f"{t:.3g} s on {g['device']} ({nt} targets × {ne} "
                    "exposures); no desispec resample record (run perf/bench_coadd.py)",
                    "–", "–", False, _src(g))
    src = _src(g) + f", `{row_file}` (desispec, recorded)"
    ds = row_s * nt * ne
    k = ds / t
    if nt < P.GOAL1B_NTARGET:
        gap = f"pixel of {nt} targets, the goal's has {P.GOAL1B_NTARGET}+"
    else:
        gap = f"{P.GOAL1B_MIN_RATIO / k:.1f}× too slow" if k < P.GOAL1B_MIN_RATIO else "–"
    return _row(goal, target,
                f"{t:.3g} s on {g['device']} for {nt} targets × {ne} exposures × brz; desispec "
                f"single core {ds:.0f} s ({row_s:.2f} CPU-s per row × {nt * ne} rows, "
                f"recorded: `{row_file}`)", f"{k:.0f}×", gap,
                k >= P.GOAL1B_MIN_RATIO and nt >= P.GOAL1B_NTARGET, src)


def _goal2a_gpu_specter(records):
    """gpuspec vs gpu_specter's CPU path: side by side when a record has it; otherwise
    derived from the recorded timings (gpu_specter is not installable here): gpuspec's
    measured ratio to specter on Case B times gpu_specter's recorded time over specter's
    on the same case (``perf/protocol.py``, ``GPU_SPECTER_CPU_RECORDED``)."""
    goal, target = "2a extraction vs gpu_specter's CPU path (1 thread)", "≥ 5×"
    gs = [r for r in records if r["benchmark"] == "extract" and r.get("reference")
          and "gpu_specter" in str(r["reference"].get("name", ""))]
    if gs:
        k = gs[-1]["reference"]["ratio"]
        return _row(goal, target, "side by side", f"{k:.1f}×",
                    f"{5 / k:.1f}× short" if k < 5 else "–", k >= 5, _src(*gs[-1:]))
    recs = [r for r in (_latest(records, "extract", c, threads=1)
                        for c in ("caseB_clean", "caseB_masked")) if r and r.get("reference")]
    if not recs:
        return _row(goal, target, "no record (gpu_specter is not installed here)", "–", "–",
                    False, "–")
    k = min(r["reference"]["seconds"] / _cpu(r) for r in recs)
    t = P.GPU_SPECTER_CPU_RECORDED["caseB (50 x 375)"]
    (s_lo, s_hi), (g_lo, g_hi) = t["specter_s"], t["gpu_specter_s"]
    low, mid = k * g_lo / s_hi, k * (g_lo + g_hi) / (s_lo + s_hi)
    return _row(goal, target,
                f"derived (gpu_specter is not installable here): {k:.1f}× specter on Case B "
                f"(measured, the lesser of clean and masked) × gpu_specter's {g_lo:g}–{g_hi:g} "
                f"s over specter's {s_lo:g}–{s_hi:g} s on Case B ({P.GPU_SPECTER_CPU_SOURCE})",
                f"{low:.1f}× (least favourable ends), {mid:.1f}× (mid-range)",
                f"{5 / low:.1f}× short" if low < 5 else "–", low >= 5,
                _src(*recs) + ", `perf/protocol.py` (recorded timings)")


def _goal2(records, cm):
    rows = []
    for case in ("caseB_clean", "caseB_masked"):
        r = _latest(records, "extract", case, threads=1)
        if r and r.get("reference"):
            # the reference ran alone on an idle machine (wall ≈ CPU): compare CPU time
            c = _cpu(r)
            k = r["reference"]["seconds"] / c
            rows.append(_row(f"2a extraction {case} vs specter (1 thread, CPU time)", "≥ 10×",
                             f"{c:.3g} CPU-s ({r['timing']['median_s']:.3g} s wall, load "
                             f"{_load(r)}) vs {r['reference']['seconds']:.3g} s",
                             f"{k:.1f}×", f"{10 / k:.1f}× short" if k < 10 else "–", k >= 10,
                             _src(r)))
    rows.append(_goal2a_gpu_specter(records))
    fr = _latest(records, "extract", "frame500", threads=1)
    if fr:
        c = _cpu(fr)
        rows.append(_row("2b 500-fiber frame, CPU seconds (1 process)", "≤ 100 CPU-s",
                         f"{c:.0f} CPU-s ({fr['timing']['median_s']:.0f} s wall)",
                         f"{c / 100:.2f}× the goal", f"{c - 100:.0f} s over" if c > 100 else "–",
                         c <= 100, _src(fr)))
    else:
        rows.append(_row("2b 500-fiber frame, CPU seconds", "≤ 100 CPU-s", "no 1-thread record",
                         "–", "–", False, "–"))
    rows.append(_goal2c(records))
    if cm and cm.get("cpu_limit"):
        lim = cm["cpu_limit"]
        meas = f"limit {lim['seconds']:.0f} s/frame at the measured kernel rates " \
               f"({lim['seconds_at_dgemm_peak']:.0f} s at the dgemm rate " \
               f"{lim['dgemm_gflops']:.0f} GFLOP/s), {lim['flops']:.3g} flops"
        if fr:
            # the limit is for the model's frame (production grid); scale it to the
            # record's wavelength bins (patches grow with them)
            nw_rec = (fr.get("sizes") or {}).get("nwave")
            nw_mod = (cm.get("frame") or {}).get("nwave")
            scale = nw_rec / nw_mod if nw_rec and nw_mod else 1.0
            lim_s = lim["seconds"] * scale
            k = _cpu(fr) / lim_s
            prof = cm.get("cpu_profile")
            sbs = cm.get("cpu_side_by_side")
            extra = ""
            if prof and not sbs:
                pm = sum(prof["per_frame"].values())
                extra = (f"; profile of one bundle scaled to the model's frame: {pm:.0f} CPU-s, "
                         f"{pm / lim['seconds']:.2f}× (table below)")
            if P.same_cpu(cm.get("cpu_machine"), fr.get("machine")) is False:
                extra += ("; the limit was measured on another CPU than the frame (rerun "
                          "python -m perf.costmodel --cpu beside it)")
            ratio = f"{k:.1f}× the limit{extra}"
            gap = f"{_cpu(fr) - lim_s:.0f} s above"
            if sbs:
                # the side-by-side ratio leads: rates and bundle measured alternately
                pm = sbs["measured_s_median"]
                ratio = (f"{sbs['ratio_median']:.2f}× the limit measured side by side "
                         f"({len(sbs['rounds'])} rounds alternating the rates and a timed "
                         f"bundle {sbs['bundle']}, scaled to the model's frame; "
                         f"{sbs['ratio_min']:.2f}–{sbs['ratio_max']:.2f}×; median round "
                         f"{pm:.0f} CPU-s per frame, its profile below); the frame record, "
                         f"timed in another "
                         f"run: {k:.1f}×{extra}")
                gap = f"{pm - lim['seconds']:.0f} s above"
            rows.append(_row("2d CPU extraction vs its floating-point limit", "near the limit",
                             meas + (f"; {lim_s:.0f} s for the record's {nw_rec} bins"
                                     if scale != 1.0 else ""),
                             ratio, gap, "open", _cm_src(cm) + ", " + _src(fr)))
        else:
            rows.append(_row("2d CPU extraction vs its floating-point limit", "near the limit",
                             meas, "–", "–", "open", _cm_src(cm)))
    return rows


def _goal2c(records):
    """Goal 2c: the newest interleaved 1- vs 2-process pair (``frameN_nproc1/2``, one
    run), else the older frame50 pair of the threads = 1 / 2 children of one run."""
    pairs = [r for r in records if r["benchmark"] == "extract"
             and str(r["case"]).endswith("_nproc2") and r.get("backend") == "numpy"]
    if pairs:
        two = max(pairs, key=lambda r: str(r.get("date_utc", "")))
        case1 = two["case"][:-1] + "1"
        one = next((r for r in records if r.get("_file") == two.get("_file")
                    and r["case"] == case1), None)
        k = two["extra"]["speedup_2_vs_1"]
        t1 = f"{one['timing']['median_s']:.3g} s" if one else "?"
        n = two["sizes"].get("nspec", "?")
        return _row(f"2c speed-up of 2 processes on 2 cores ({n} fibers, wall, interleaved)",
                    "≥ 1.8×", f"{t1} → {two['timing']['median_s']:.3g} s (load {_load(two)}), "
                    f"{two['timing']['repeat']} rounds", f"{k:.2f}×",
                    f"{1.8 - k:.2f} short" if k < 1.8 else "–", k >= 1.8, _src(one, two))
    one, two = _same_run_pair(records, "extract", "frame50")
    if not (one and two):
        return _row("2c speed-up of 2 processes on 2 cores", "≥ 1.8×", "no record", "–", "–",
                    False, "–")
    k = one["timing"]["median_s"] / two["timing"]["median_s"]
    return _row("2c speed-up of 2 processes on 2 cores (frame50, wall)", "≥ 1.8×",
                f"{one['timing']['median_s']:.3g} s → {two['timing']['median_s']:.3g} s "
                f"(load {_load(one)} / {_load(two)})",
                f"{k:.2f}×", f"{1.8 - k:.2f} short" if k < 1.8 else "–", k >= 1.8,
                _src(one, two))


def _goal3(records):
    """Goal 3 at the issue's setting (1 thread): the newest run, the spread of every 1-thread
    run (median ratios and single rounds); met when every 1-thread run's median is ≥ 3×.
    Runs at other thread counts get an information row (CPU time there counts idle
    spinning of the BLAS/numba threads of both codes)."""
    r = _latest(records, "preproc", "fullccd_vs_desispec", threads=1)
    if not r:
        return [_row("3 preproc full camera with cosmics vs desispec (CPU)", "≥ 3×",
                     "no 1-thread record", "–", "–", False, "–")]
    ref = r["reference"]
    k = ref["ratio"]
    runs = [x for x in records if x["benchmark"] == "preproc"
            and x["case"] == "fullccd_vs_desispec" and str(x["threads"]) == "1"]
    meds = [x["reference"]["ratio"] for x in runs]
    rounds = [v for x in runs for v in x["reference"].get("ratio_per_round") or []]
    spread = f"; {len(runs)} runs: medians {min(meds):.2f}–{max(meds):.2f}×"
    if rounds:
        spread += f", single rounds {min(rounds):.2f}–{max(rounds):.2f}×"
    met = min(meds) >= 3
    rows = [_row("3 preproc full camera with cosmics vs desispec (CPU time, 1 thread)", "≥ 3×",
                 f"{_cpu(r):.2f} CPU-s vs {ref['seconds']:.2f} CPU-s (newest, load "
                 f"{_load(r)}){spread}", f"{k:.2f}×",
                 f"{3 / min(meds):.2f}× short (slowest run)" if not met else "–", met,
                 _src(*runs))]
    other = [x for x in records if x["benchmark"] == "preproc"
             and x["case"] == "fullccd_vs_desispec" and str(x["threads"]) != "1"]
    if other:
        o = max(other, key=lambda x: x["date_utc"])
        rows.append(_row(f"3 (information) same at threads = {o['threads']}", "–",
                         f"{_cpu(o):.2f} CPU-s vs {o['reference']['seconds']:.2f} CPU-s; wall "
                         f"{o['timing']['median_s']:.1f} s vs "
                         f"{o['reference'].get('wall_median_s', float('nan')):.1f} s (load "
                         f"{_load(o)})", f"{o['reference']['ratio']:.2f}× CPU, "
                         f"{o['reference'].get('ratio_wall', float('nan')):.2f}× wall", "–",
                         "not the goal's setting", _src(o)))
    return rows


def _goal4(records, cm):
    if not cm:
        return [_row("4 GPU cost model", "bounds per stage", "no costmodel.json", "–", "–",
                     False, "–")]
    pf = cm["per_frame"]
    a = cm["anchors"]
    gs = a["gpu_specter"]["gpu_s_per_frame"]
    dp = a["desi_production"]["gpu_s_per_frame"]
    b = pf.get("A100-40GB")
    gpu = [r for r in records if r["backend"] == "cupy"]
    meas = ("*modelled* lower bound per frame (not measured): "
            + ", ".join(f"{g} {v:.2f} s" for g, v in pf.items())
            + f"; published anchors on A100 (not measured here): gpu_specter {gs:.1f} "
            f"GPU-s/frame (reaches {b / gs:.1%} of the bound), DESI production {dp:.1f} "
            f"GPU-s/frame ({b / dp:.1%})")
    return [_row("4 GPU cost model: roofline bound, fraction reached", "each GPU run vs its bound",
                  meas, "–", "no GPU measurement yet" if not gpu else f"{len(gpu)} GPU records",
                  "model done; GPU runs open" if not gpu else "model done",
                  _cm_src(cm) + (", " + _src(*gpu) if gpu else ""))]


def _goal5a(records):
    """Peak RSS in every record: every record written since the first one that carries it
    (the Meter of perf/protocol.py) must have it; keys whose newest record is older are
    listed (they need a rerun, records are never edited)."""
    with_rss = [r["date_utc"] for r in records if "peak_rss_mb" in r["timing"]]
    if not with_rss:
        return _row("5a peak RSS in every benchmark record", "all records", "no record with it",
                    "–", "–", False, "–")
    first = min(with_rss)
    since = [r for r in records if r["date_utc"] >= first]
    have = sum("peak_rss_mb" in r["timing"] for r in since)
    latest = {}
    for r in records:
        k = (r["benchmark"], r["case"], r["size"], r["backend"], str(r["threads"]))
        if k not in latest or r["date_utc"] >= latest[k]["date_utc"]:
            latest[k] = r
    stale = sorted(f"{k[0]}/{k[1]} ({k[2]}, threads {k[4]})" for k, r in latest.items()
                   if "peak_rss_mb" not in r["timing"])
    gap = "–" if not stale else (f"{len(stale)} keys last measured before the meter: "
                                 + ", ".join(stale) + " (rerun them)")
    files = sorted({r.get("_file", "?") for r in since})
    return _row("5a peak RSS in every benchmark record", "all records",
                f"{have} of {len(since)} records since the meter ({first[:16]}, "
                f"{len(files)} files); {len(latest) - len(stale)} of {len(latest)} newest "
                "records per key", "–", gap, have == len(since),
                f"{len(files)} files since {first[:10]}")


def _goal5(records):
    rows = [_goal5a(records)]
    r = _latest(records, "preproc", "fullccd_vs_desispec", threads=None)
    if r and "peak_rss_mb" in r["timing"]:
        g, d = r["timing"]["peak_rss_mb"], r["reference"]["peak_rss_mb"]
        base = r["timing"].get("rss_before_mb") or 0
        rows.append(_row("5b preproc peak RSS vs desispec (same process, same inputs)",
                         "below desispec",
                         f"{g:.0f} MB vs {d:.0f} MB (inputs held: {base:.0f} MB); faults "
                         f"{r['timing']['minflt_median']:.0f} vs "
                         f"{r['reference']['minflt_median']:.0f}",
                         f"{g / d:.2f}", "–" if g < d else f"{g - d:.0f} MB over", g < d, _src(r)))
    else:
        rows.append(_row("5b preproc peak RSS vs desispec", "below desispec", "no record", "–",
                         "–", False, "–"))
    fr = _latest(records, "extract", "frame500", threads=1) or \
        _latest(records, "extract", "frame500", threads=None)
    e2e = [r for r in records if r["benchmark"] == "e2e" and r["case"].startswith("camera_")
           and r["sizes"].get("full_size") and "extract_peak_rss_mb" in r.get("extra", {})]
    e2e = max(e2e, key=lambda r: r["date_utc"]) if e2e else None
    if fr and "peak_rss_mb" in fr["timing"]:
        pk = fr["timing"]["peak_rss_mb"] / 1024.0
        what = f"{pk:.2f} GB per rank (extract_frame, image in memory, threads {fr['threads']})"
        if e2e:
            pe = e2e["extra"]["extract_peak_rss_mb"] / 1024.0
            what += f"; {pe:.2f} GB (extract_file of a preproc file, e2e {e2e['case']})"
            pk = max(pk, pe)
        per = {n: C.PERLMUTTER['host_memory_gb'] / n for n in RANKS}
        fits = all(pk < v for v in per.values())
        rows.append(_row("5c full-frame extraction peak RSS per rank vs Perlmutter host memory",
                         f"< {per[RANKS[-1]]:.1f} GB ({C.PERLMUTTER['host_memory_gb']} GB / "
                         f"{RANKS[-1]} ranks)", what,
                         f"{pk / per[RANKS[-1]]:.2f} of {per[RANKS[-1]]:.1f} GB, "
                         f"{pk / per[RANKS[0]]:.2f} of {per[RANKS[0]]:.0f} GB",
                         "–", fits, _src(fr, e2e)))
    else:
        rows.append(_row("5c full-frame extraction peak RSS per rank",
                         f"< {C.PERLMUTTER['host_memory_gb'] / RANKS[-1]:.1f} GB", "no record",
                         "–", "–", False, "–"))
    return rows


def gpu_fractions(records, cm):
    """Rows: each GPU record with a modelled stage, its bound and the fraction reached."""
    if not cm:
        return []
    out = []
    names = {"A100": "A100-40GB", "H100": "H100-SXM", "H200": "H200-SXM"}
    for r in records:
        if r["backend"] != "cupy":
            continue
        gpu = next((v for k, v in names.items() if k in r["device"]), None)
        if gpu is None:
            continue
        b = _stage_bound(r, cm, gpu)
        if not b:
            continue
        t = r["timing"]["median_s"]
        out.append(f"| {r['benchmark']}/{r['case']} | {r['device']} | {t:.3g} s | {b:.3g} s | "
                   f"{b / t:.1%} | `{r.get('_file')}` |")
    return out


def _stage_bound(r, cm, gpu):
    """The model's bound for a GPU record, scaled to its size (None when not modelled)."""
    bd = cm["bounds"]
    nf = cm["frame"]["nspec"] * cm["frame"]["nwave"]
    s = r["sizes"]
    if r["benchmark"] == "extract" and r["case"].startswith(("frame", "bundle", "caseB")):
        return bd["extraction"][gpu]["bound_s"] * s.get("nspec", 0) * s.get("nwave", 0) / nf
    if r["benchmark"] == "preproc" and r["case"].startswith("fullccd"):
        return bd["preproc"][gpu]["bound_s"]
    if r["benchmark"] == "coadd" and r["case"] in ("healpix_plain", "healpix_spectroperf",
                                                   P.GOAL1B_CASE):
        px = cm["healpix_pixel"]
        k = s.get("ntarget", 0) * s.get("nexp", 0) / (px["ntarget"] * px["nexp"])
        key = "coadd plain" if r["case"] == "healpix_plain" else "coadd spectroperf"
        return bd[key][gpu]["bound_s"] * k
    if r["benchmark"] == "e2e" and r["case"] == "exposure":
        per = bd["preproc"][gpu]["bound_s"] + bd["extraction"][gpu]["bound_s"]
        return per * s.get("ncameras", 1) * s.get("nspec", 500) / 500.0
    return None


def section(records, results_dir) -> list:
    """Markdown lines of the goals section (table, cost model, GPU fractions)."""
    cm = load_costmodel(results_dir)
    lines = ["## Goals of issue 16 (speed, memory)\n",
             "Latest measurement per goal; ratios are reference / gpuspec (> 1: gpuspec "
             "faster) unless stated; CPU seconds are process time (the machine is shared). "
             "Goal 2's CPU limit and goal 4's bounds come from the cost model "
             "(`perf/costmodel.py`, section below).\n",
             "| goal | target | measured | ratio | gap | status | record |",
             "|---|---|---|---|---|---|---|"]
    lines += (_goal1(records, results_dir) + _goal2(records, cm) + _goal3(records)
              + _goal4(records, cm) + _goal5(records))
    lines.append("")
    if cm:
        lines += costmodel_lines(cm)
    fr = gpu_fractions(records, cm)
    lines.append("### GPU runs against the bound\n")
    if fr:
        lines += ["| record | device | measured | bound | fraction of the bound | file |",
                  "|---|---|---|---|---|---|"] + fr + [""]
    else:
        lines.append("No GPU measurement exists yet (no GPU was available to these runs): "
                     "once `perf/gpu-check` records cupy results, each appears here with the "
                     "model's bound for its size and the fraction of it reached.\n")
    return lines


def _extraction_note(cm) -> str:
    """Which operation bounds the modelled GPU extraction, and what the LU inverses cost."""
    ops = cm.get("ops", {}).get("extraction") or []
    b = cm["bounds"]["extraction"]
    g0 = next(iter(b))
    inv = next((o for o in ops if o["name"].startswith("inv(")), None)
    tot = sum(o["flops"] for o in ops) or 1.0
    txt = (f"The modelled GPU extraction is bound by {b[g0]['dominant']} on {g0} "
           f"(memory {b[g0]['memory_s']:.2f} s against compute {b[g0]['compute_s']:.2f} s "
           "summed over the operations).")
    if inv:
        txt += (f" The LU-based inverses of the triangular factors are {inv['flops'] / 1e12:.2f} "
                f"TFLOP per frame ({inv['flops'] / tot:.0%} of the flops); a triangular "
                f"inverse (p³/3 instead of 8p³/3) would remove {7 / 8 * inv['flops'] / 1e12:.2f} "
                "TFLOP of them.")
    return txt


def costmodel_lines(cm) -> list:
    """Tables of the model: bounds per stage and GPU, per frame, per exposure."""
    gpus = list(cm["gpus"])
    host = (cm.get("machine") or cm.get("cpu_machine") or {}).get("host", "?")
    lines = ["### GPU cost model (roofline lower bounds)\n",
             "**A model, not a measurement**: no GPU ran. Every figure of this section is "
             f"computed on a CPU machine ({host}) from the array shapes of the code and the "
             "published peak figures below; a measured GPU time only ever comes from a cupy "
             "benchmark record (next section).\n",
             f"`perf/costmodel.py` ({cm.get('date_utc', '')}, commit "
             f"{str(cm.get('git_commit', 'unknown'))[:10]}, `perf/results/costmodel.json`): "
             "frame of "
             f"{cm['frame']['nspec']} fibers × {cm['frame']['nwave']} bins "
             f"({cm['frame']['band']} camera, {cm['frame']['npatch']:.0f} patches, shapes from "
             f"`{cm['frame'].get('psf')}`); HEALPix pixel of {cm['healpix_pixel']['ntarget']} "
             f"targets × {cm['healpix_pixel']['nexp']} exposures × brz. Bound = Σ over the "
             "batched operations of max(flops / peak, bytes / bandwidth) + PCIe transfers; "
             "FP64 Tensor Core peak for dense GEMMs, FP64 vector peak otherwise.\n",
             "| stage | " + " | ".join(gpus) + " | dominant operation | GFLOP | GB moved |",
             "|---|" + "---|" * len(gpus) + "---|---|---|"]
    for st, b in cm["bounds"].items():
        one = b[gpus[0]]
        lines.append(f"| {st} | " + " | ".join(f"{b[g]['bound_s'] * 1e3:.1f} ms" for g in gpus)
                     + f" | {one['dominant']} | {one['flops'] / 1e9:.0f} | "
                     f"{one['bytes'] / 1e9:.1f} |")
    lines.append("| **frame** (preproc + extraction + calibration), modelled | " + " | ".join(
        f"**{cm['per_frame'][g]:.2f} s**" for g in gpus) + " | | | |")
    lines.append("| **exposure** (30 frames, one GPU), modelled | " + " | ".join(
        f"**{cm['per_exposure'][g]:.1f} s**" for g in gpus) + " | | | |")
    lines.append("")
    a = cm["anchors"]
    lines.append("Published anchors (A100, GPU-seconds per 500-fiber frame): "
                 f"gpu_specter {a['gpu_specter']['gpu_s_per_frame']:.1f} "
                 f"(575 frames per node-hour, 4 GPUs), DESI production "
                 f"{a['desi_production']['gpu_s_per_frame']:.1f} (253.5 s per 30-frame exposure "
                 "on 4 GPUs), published figures, not measured here. The modelled A100 bound "
                 "per frame is "
                 f"{cm['per_frame']['A100-40GB'] / a['gpu_specter']['gpu_s_per_frame']:.1%} and "
                 f"{cm['per_frame']['A100-40GB'] / a['desi_production']['gpu_s_per_frame']:.1%} "
                 "of these times: the fraction of the bound those codes reach.\n")
    lines.append("Peak figures: " + "; ".join(
        f"{g} FP64 {v['fp64'] / 1e12:.1f} / tensor {v['fp64_tc'] / 1e12:.1f} TFLOP/s, "
        f"{v['bw'] / 1e12:.2f} TB/s, host link {v['host'] / 1e9:.0f} GB/s"
        for g, v in cm["gpus"].items()) + ". " + cm["gpu_source"] + "\n")
    lines.append(
        "How the counts are made (from the array shapes of the code; each function's "
        "docstring in `perf/costmodel.py` has the details): *preproc* — bytes of every "
        "array pass per pixel (raw int32 and float32 calibrations in, 28 B/pixel of planes "
        "out over PCIe, ~26 calibration passes, 8 radix sorts of the clipped-noise sets, the "
        "cosmic selection and prefilter, 7 × 22 shifted bool passes of the repair). "
        "*Extraction*, per patch with F fibers × NW wavelengths (n = F·NW unknowns, the NK "
        "kept fibers solved last: m = NK·NW, k = n − m), Q = WY·WX window pixels per fiber "
        "and K = ND·NE·T tiled columns, all measured on the PSF's patch layout: the tiled "
        "GEMM `(own·W)ᵀ·At` 2·F·NT·T·RT·WX·K flops (tensor cores), `cholesky` n³/3, the "
        "LU-based `inv(L22)` and `inv(L11)` 8(m³ + k³)/3, the kept covariance blocks "
        "NW³·NK(NK + 1), `eigh` of the NK kept blocks 9·NW³ each (nominal), the χ² products "
        "8·F·Q·NW; bytes of A0 (F·Q·NW), At (F·NT·RT·WX·K), M (n²) and their index arrays "
        "(the CPU twin: `dpotrf` + `dpotrs` and the block substitution of the kept blocks "
        "instead of the tiled GEMM and the inverses). "
        "*Decorrelation*: blocks of m = 2chw + 1 + 2skin (149 at 0.8 Å) with hb = ndiag + 1 "
        "superdiagonals; the code's default (numpy and cupy) is the Zolotarev rational "
        "approximation of C^-1/2 (`coadd/sqrtm_band.py`: 32 shifted banded LDLᵀ, "
        "Takahashi's selected inverse and two banded solves per block, "
        "`decorrelate_flops`), ~11× fewer flops than desispec's dense eigh (9m³ per block, "
        "the row marked eigh) but as many bytes, so memory-bound either way. It is "
        "sequential along the block: ~4m dependent column steps of a few small kernels per "
        "batch of up to 4096 blocks, ~24k launches per pixel, whose latency (a few µs each) "
        "is not in the roofline and is of the order of the bound. *Plain coadd*: one read of flux, "
        "ivar, mask and the resolution diagonals per input bin. *Spectroperfectionism "
        "coadd*: per input row the banded Cinv accumulation (L ≈ ndiag + 2 columns per bin, "
        "~3·m·L²/2 flops, a scatter-add per value) then the decorrelation. *Calibration*: "
        "the banded normal matrix Σ_f R_fᵀW_fR_f (2·b·(2b−1) flops per fiber and bin, b = 11 "
        "diagonals) per iteration (10 assumed for each step), banded solves, the variance "
        "band. " + _extraction_note(cm) + "\n")
    if cm.get("cpu_rates"):
        r = cm["cpu_rates"]
        lim = cm["cpu_limit"]
        lines.append(
            f"CPU rates (measured on {(cm.get('cpu_machine') or {}).get('host', '?')}, "
            f"{cm.get('cpu_date_utc') or cm.get('date_utc', '')}, load "
            f"{_la1(cm.get('cpu_loadavg'))}; one core, FP64, CPU time): dgemm "
            f"{r['dgemm_2048']:.0f} GFLOP/s (2048²), batched small GEMM (64 × "
            f"{r['shapes']['nw']}×n·n×{r['shapes']['nw']}; the array path's Q, R) "
            f"{r['batched_gemm_cff']:.0f}, "
            + (f"the block solve's kernels on {r['shapes']['nw']}² blocks, from Numba "
               f"(dpotrf + dtrtri {r['lapack_nw']:.1f}, products {r['gemm_nw']:.0f}: the "
               f"rates used for the block solve's two parts), " if "lapack_nw" in r else "")
            + f"LAPACK dpotrf + dtrtri (n = {r['shapes']['n']}) {r['dpotrf_dtrtri']:.1f}, batched "
            f"eigh ({r['shapes']['nw']}²) {r['eigh_batched']:.1f} GFLOP/s (nominal 9n³). The CPU "
            f"extraction does {lim['flops']:.3g} flops per frame; at these rates that is "
            f"**{lim['seconds']:.0f} s per frame** (the CPU limit; "
            f"{lim['seconds_at_dgemm_peak']:.0f} s if every flop ran at the dgemm rate).\n")
    if cm.get("cpu_profile") and cm.get("cpu_limit"):
        lines += _cpu_profile_table(cm)
    return lines


#: cost-model operations folded into one profile row (the Numba kernel does both)
_MODEL_ROWS = {"normal matrices from spot pairs (Numba)": (
    "normal matrices from spot pairs (Numba)", "AW, b, fw", "projection A0 (zero + scatter)",
    "image/ivar windows (gathers)")}


def _median_round(cm) -> str:
    sbs = cm.get("cpu_side_by_side")
    if not sbs:
        return ""
    return (f"; the median of {len(sbs['rounds'])} rounds, each right after its own rates, "
            f"which the limit column uses")


#: what each operation of the goal-2d profile is, for the sentence above its table
_OP_NOTES = {
    "normal matrices from spot pairs (Numba)": "overlap sums of ~54 pixels per spot pair, "
    "3.4M pairs per bundle, which the model charges at the dgemm rate",
    "block solve (Numba): Cholesky, substitutions, kept covariance blocks": "about 14 "
    "LAPACK and 60 BLAS calls on 73 × 73 blocks per patch",
    "spots": "the Numba twin (`psf/spots_cpu.py`): erf and exp at 30 pixel edges and 2.1k "
    "multiply-adds per spot, the erf not in the flop model's reach",
    "Q = V L^-1/2 V^T, R, flux": "batched products (Q, its band and Q·x) and the Python "
    "around them",
    "R's band, R·x and Q·1 from the eigenvectors (Numba)": "dot products of eigenvector "
    "rows (`extract/decorrelate_cpu.py`), the eigenvalue floor's array passes and the "
    "Python around them",
    "chi2: model and 3 weighted A0^T products": "the Numba diagnostics kernel",
    "regularise": "a few array passes per chunk",
}
#: an operation within this factor of its limit counts as "at its limit" in that sentence
AT_LIMIT = 1.25


def _cpu_profile_table(cm) -> list:
    """Goal 2d: measured seconds per operation (profile of one bundle, scaled to the
    model's frame) beside the limit of each operation at the measured rates."""
    prof, lim = cm["cpu_profile"], cm["cpu_limit"]["seconds_by_op"]
    meas = prof["per_frame"]
    rows = ["| operation | limit s/frame | measured s/frame | measured / limit |",
            "|---|---|---|---|"]
    tl = tm = 0.0
    at, above = [], []
    for op, t in sorted(meas.items(), key=lambda kv: -kv[1]):
        names = _MODEL_ROWS.get(op, (op,))
        lo = sum(lim.get(n, 0.0) for n in names) if any(n in lim for n in names) else None
        tl += lo or 0.0
        tm += t
        rows.append(f"| {op} | {'–' if lo is None else f'{lo:.2f}'} | {t:.2f} | "
                    f"{'–' if not lo else f'{t / lo:.1f}×'} |")
        if lo:
            (at if t <= AT_LIMIT * lo else above).append((op, t, lo))
    rows.append(f"| **total** | **{tl:.1f}** | **{tm:.1f}** | **{tm / tl:.2f}×** |")
    at_s = ", ".join(f"{op} ({t / lo:.1f}×)" for op, t, lo in at) or "none"
    above_s = "; ".join(f"{op} ({t / lo:.1f}×, {t - lo:.1f} s above: {_OP_NOTES.get(op, '')})"
                        for op, t, lo in sorted(above, key=lambda a: a[2] - a[1]))
    head = (f"Where the CPU extraction's time goes (goal 2d): `perf/profile_extract.py` "
            f"profiled bundle {prof['bundle']} ({prof['patches']} patches, {prof['nwave']} "
            f"bins, {prof['cpu_s']:.2f} CPU-s under cProfile{_median_round(cm)}) and scaled "
            f"it to the model's "
            f"frame of {prof['frame_patches']:.0f} patches; the limit column is each operation's "
            f"flops at the measured rate of its kind of kernel (above). Within "
            f"{AT_LIMIT}× of their limit: {at_s}. Above it: {above_s or 'none'}; and the "
            f"operations without a limit (planning, layout, stores, the Python between "
            f"them).\n")
    return [head] + rows + [""]
