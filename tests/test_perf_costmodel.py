"""The measurement meter (CPU time, faults, peak RSS), the GPU cost model and the goals
table of issue 16. No timing assertions: only the arithmetic and the bookkeeping."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from perf import costmodel as C  # noqa: E402
from perf import goals, report  # noqa: E402
from perf import protocol as P  # noqa: E402


# ---------------------------------------------------------------- meter
def test_meter_sees_the_peak_of_the_block():
    import mmap

    with P.Meter() as m:
        # fresh anonymous pages: a NumPy array could reuse pages the heap already holds
        buf = mmap.mmap(-1, 40 * 2 ** 20)      # 40 MB touched
        a = np.frombuffer(buf, dtype=np.uint8)
        a[::4096] = 1
        del a
        buf.close()
    r = m.result
    assert set(r) >= {"wall_s", "cpu_s", "sys_s", "minflt", "peak_rss_mb", "rss_before_mb",
                      "peak_scope", "children_peak_rss_mb"}
    assert r["cpu_s"] >= 0 and r["wall_s"] > 0
    if r["peak_scope"] == "call":                # Linux: the high-water mark was reset
        assert r["peak_rss_mb"] - r["rss_before_mb"] >= 35
        with P.Meter() as m2:
            pass
        assert m2.result["peak_rss_mb"] < r["peak_rss_mb"] - 30   # reset between blocks
    else:
        assert r["peak_rss_mb"] > 0


def test_meter_counts_finished_children():
    import subprocess

    with P.Meter() as m:
        subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"],
                       check=True)
    r = m.result
    assert r["children_cpu_s"] > 0.05
    assert r["cpu_s"] >= r["children_cpu_s"]


def test_measure_and_single_carry_the_meter_keys():
    t = P.measure(lambda: np.ones(1000).sum(), None, warmup=0, repeat=3)
    for k in P.METER_KEYS:
        assert k in t, k
    assert len(t["cpu_s"]) == 3 and t["peak_rss_mb"] >= t["rss_before_mb"] * 0.5
    with P.Meter() as m:
        pass
    s = P.single(0.5, warmup=1, meter=m.result)
    assert s["peak_rss_mb"] == m.result["peak_rss_mb"] and s["repeat"] == 1
    assert "peak_rss_mb" not in P.single(0.5)


# ---------------------------------------------------------------- cost model
def test_roofline_arithmetic():
    g = C.GPUS["H100-SXM"]
    ops = [C.Op("s", "gemm", 2e12, 1e9, tensor=True), C.Op("s", "stream", 1e6, 3.35e12),
           C.Op("s", "copy", 0, 0, host=64e9)]
    b = C.roofline(ops, "H100-SXM")
    assert b["compute_s"] == pytest.approx(2e12 / g["fp64_tc"] + 1e6 / g["fp64"])
    assert b["device_s"] == pytest.approx(2e12 / g["fp64_tc"] + 1.0)
    assert b["host_s"] == pytest.approx(1.0)
    assert b["bound_s"] == pytest.approx(b["device_s"] + 1.0)
    assert b["dominant"] == "stream"
    nt = C.roofline(ops, "H100-SXM", tensor=False)
    assert nt["bound_s"] > b["bound_s"]


def test_patch_ops_counts_from_shapes():
    s = C.PatchShape(F=3, NW=4, WY=5, WX=3, NT=2, T=2, RT=3, ND=2, NE=3, nys=3, nxs=3, NK=2)
    ops = {o.name: o for o in C.patch_ops(s)}
    n, m, k = 12, 8, 4                      # kept fibers last: m = NK·NW trailing unknowns
    assert ops["cholesky"].flops == pytest.approx(n ** 3 / 3)
    assert ops["inv(L22), inv(L11) (LU inverses)"].flops == pytest.approx(8 * (m ** 3 + k ** 3) / 3)
    assert ops["Mb = (own·W)^T At (batched GEMM)"].flops == \
        pytest.approx(2 * 3 * 2 * 2 * 3 * 3 * (2 * 3 * 2))
    assert ops["Mb = (own·W)^T At (batched GEMM)"].tensor
    assert ops["eigh of the fiber blocks"].flops == pytest.approx(9 * 2 * 4 ** 3)  # kept only
    # block s of the kept covariance: Z22[s·NW:, s]ᵀ Z22[s·NW:, s], (m − s·NW) × NW
    assert ops["kept covariance blocks Z22^T Z22"].flops == \
        pytest.approx(sum(2 * (m - b * 4) * 4 * 4 for b in range(2)))
    twice = {o.name: o for o in C.patch_ops(C.PatchShape(**{**s.__dict__, "count": 2}))}
    assert twice["cholesky"].bytes == pytest.approx(2 * ops["cholesky"].bytes)
    cpu = {o.name: o for o in C.patch_ops(s, "cpu")}
    assert C.BLOCK_SOLVE in cpu and "tiled gather At" not in cpu
    # the block solve of this shape, counted by hand: F = 3 fibers, NK = 2 kept (fibers 1
    # and 2: slot order [0, 1, 2]), DS = 2 (every pair coupled), blocks of nw = 4, every
    # product a dgemm (2nw³). Factor: per slot potrf + trtri (2nw³/3), its k = 2, 1, 0
    # blocks below times Zᵀ (k products), the k(k+1)/2 updates among them, 4(k+1)nw² for
    # the substitutions. Selected inverse of slots 1 and 2 (k = 1, 0): G (k products),
    # C_uv·G_v (k² products), ZᵀZ and G_uᵀC_ui (1 + k products)
    assert (s.F, s.NK, s.DS, s.NLO) == (3, 2, 2, 1)
    n3, n2 = 4.0 ** 3, 4.0 ** 2
    fac = sum(2 * n3 / 3 + 2 * k * n3 + k * (k + 1) * n3 + 4 * (k + 1) * n2 for k in (2, 1, 0))
    sel = 2 * n3 * (1 + 1 + 1 + 1) + 2 * n3
    assert cpu[C.BLOCK_SOLVE].flops == pytest.approx(fac + sel)


def test_decorrelation_blocks_match_the_code():
    from gpuspec.coadd.decorrelate import block_layout

    for nout, wavebin in ((7781, 0.8), (2326, 0.8), (1000, 2.0), (375, 0.8)):
        m, starts, *_ = block_layout(nout, wavebin)
        ops = C.decorrelate_ops(3, nout, wavebin, method="eigh")
        eig = [o for o in ops if o.name.startswith("eigh")][0]
        chw = max(10, int(50 / wavebin))
        mm = 2 * chw + 1 + 2 * max(2, int(10 / wavebin))
        assert mm == m or m == nout              # a short spectrum has one clipped block
        assert eig.flops == pytest.approx(9.0 * 3 * starts.size * mm ** 3)


def test_decorrelation_counts_the_default_method():
    """The stage counts the code's default (Zolotarev, banded), not desispec's eigh."""
    from gpuspec.coadd.decorrelate import _resolve_method, block_layout
    from gpuspec.coadd.sqrtm_band import NPOLES

    assert _resolve_method("auto", np)[0] == "zolotarev"
    nout, wavebin, ndiag = 7781, 0.8, 11
    m, starts, *_ = block_layout(nout, wavebin)
    ops = C.decorrelate_ops(500, nout, wavebin, ndiag)
    zol = [o for o in ops if o.name.startswith("Zolotarev")][0]
    nblk, b = 500 * starts.size, ndiag + 1
    # per block: NPOLES shifts of (LDLᵀ + Takahashi + 2 solves) and the qualifying LDLᵀ
    fma = NPOLES * (m * b * (b + 1) / 2 + m * (b * b + b) + 4 * m * b) + m * b * (b + 1) / 2
    assert zol.flops == pytest.approx(2 * fma * nblk)
    eigh = sum(o.flops for o in C.decorrelate_ops(500, nout, wavebin, ndiag, method="eigh"))
    assert 5 < eigh / sum(o.flops for o in ops) < 20        # ~11x fewer flops than eigh
    with pytest.raises(ValueError):
        C.decorrelate_ops(5, nout, method="svd")


def test_patch_geometry_from_a_psf(ref_psf_path):
    from gpuspec.psf import read_psf

    psf = read_psf(ref_psf_path)
    wave = np.arange(5800.0, 5800.0 + 0.8 * 160, 0.8)
    shapes = C.plan_frame(psf, wave, nspec=25, bundles=[0])
    assert sum(s.count for s in shapes) == pytest.approx(5 * math.ceil(160 / 50))
    # every fiber of the bundle is kept once per wavelength patch (the planner's keep mask)
    assert sum(s.NK * s.count for s in shapes) == pytest.approx(25 * math.ceil(160 / 50))
    for s in shapes:
        assert s.F in (6, 7) and s.NW == s.NT * s.T and s.NW >= 10 + 2 * s.ndiag
        assert 1 <= s.NK < s.F
        assert s.nxs == 2 * psf.hsizex + 1 and s.WX >= s.nxs and s.RT <= s.WY
        assert 2 <= s.ND <= s.F and s.NE % 2 == 1


def test_frame_model_without_psf_and_limits(tmp_path):
    m = C.frame_model(None)
    assert m["frame"]["npatch"] == 4700
    for st in ("preproc", "extraction", "calibration", "decorrelation", "coadd plain",
               "coadd spectroperf"):
        b = m["bounds"][st]
        assert b["A100-40GB"]["bound_s"] > b["H200-SXM"]["bound_s"] > 0, st
    assert m["per_exposure"]["A100-40GB"] == pytest.approx(30 * m["per_frame"]["A100-40GB"])
    rates = {"dgemm_1024": 50.0, "dgemm_2048": 60.0, "batched_gemm_cff": 20.0,
             "dpotrf_dtrtri": 10.0, "eigh_batched": 5.0, "lapack_nw": 4.0, "gemm_nw": 40.0}
    lim = C.cpu_limit(m, rates)
    fl = m["cpu_extraction"]["flops_by_op"]
    # the block solve: its dpotrf + dtrtri part (2nw³/3 per fiber block of each patch, the
    # model's default shape: 7 blocks of 75) at lapack_nw, the products at gemm_nw
    lap = m["cpu_extraction"]["block_solve_lapack_flops"]
    assert lap == pytest.approx(m["frame"]["npatch"] * 7 * 2 * 75 ** 3 / 3)
    assert lim["seconds_by_op"][C.BLOCK_SOLVE] == pytest.approx(
        lap / 4e9 + (fl[C.BLOCK_SOLVE] - lap) / 40e9)
    old = C.cpu_limit(m, {**{k: v for k, v in rates.items() if k not in ("lapack_nw",
                                                                           "gemm_nw")},
                          "blocks_nw": 8.0})               # records before the split
    assert old["seconds_by_op"][C.BLOCK_SOLVE] == pytest.approx(fl[C.BLOCK_SOLVE] / 8e9)
    # the host twin's band products at the dgemm rate; a model made before them
    # charged the array path's Q at the batched small-GEMM rate
    assert lim["seconds_by_op"][C.HOST_BANDS] == pytest.approx(fl[C.HOST_BANDS] / 60e9)
    key = "Q = V L^-1/2 V^T, R, flux"
    assert key not in fl
    older = {"cpu_extraction": {"flops_by_op": {key: 4e9}}}
    assert C.cpu_limit(older, rates)["seconds_by_op"][key] == pytest.approx(4e9 / 20e9)
    assert lim["seconds_at_dgemm_peak"] == pytest.approx(lim["flops"] / 60e9)
    assert lim["seconds"] > lim["seconds_at_dgemm_peak"]


# ---------------------------------------------------------------- goals table
def _rec(bench, case, median, threads="1", reference=None, sizes=None, timing_extra=None,
         backend="numpy", device=None):
    t = P.stats([median, median]) | {"warmup": 1, "repeat": 2} | (timing_extra or {})
    r = P.record(bench, case, size="full", backend_name="numpy", timing=t,
                 reference=reference, sizes=sizes or {})
    r.update(threads=threads, backend=backend, _file="x.jsonl")
    if device:
        r["device"] = device
    return r


def test_goals_table_states_met_and_open(tmp_path):
    pre = _rec("preproc", "fullccd_vs_desispec", 3.0, reference={
        "name": "desispec", "seconds": 12.0, "ratio": 4.0, "ratio_per_round": [3.8, 4.2],
        "peak_rss_mb": 2000.0, "minflt_median": 30000},
        timing_extra={"cpu_median_s": 3.0, "peak_rss_mb": 1400.0, "rss_before_mb": 700.0,
                      "minflt_median": 6000})
    fr = _rec("extract", "frame500", 150.0, sizes={"nspec": 500, "nwave": 2326},
              timing_extra={"cpu_median_s": 140.0, "peak_rss_mb": 3000.0})
    sp = _rec("coadd", "healpix_spectroperf", 3.0)
    pl = _rec("coadd", "healpix_plain", 1.0)
    gpu = _rec("extract", "frame500", 2.0, backend="cupy", sizes={"nspec": 500, "nwave": 2326},
               device="NVIDIA H200 (device 0)")
    C_json = C.frame_model(None)
    import json

    (tmp_path / "costmodel.json").write_text(json.dumps(C_json, default=float))
    text = "\n".join(goals.section([pre, fr, sp, pl, gpu], str(tmp_path)))
    line3 = next(x for x in text.splitlines() if x.startswith("| 3 preproc"))
    assert "4.00×" in line3 and "**met**" in line3 and "3.8" in line3
    line2b = next(x for x in text.splitlines() if x.startswith("| 2b"))
    assert "140 CPU-s" in line2b and "open" in line2b
    line1 = next(x for x in text.splitlines() if x.startswith("| 1a"))
    assert "3.0×" in line1 and "**met**" in line1
    line5c = next(x for x in text.splitlines() if x.startswith("| 5c"))
    assert "2.93 GB" in line5c and "**met**" in line5c
    line5b = next(x for x in text.splitlines() if x.startswith("| 5b"))
    assert "1400 MB vs 2000 MB" in line5b and "**met**" in line5b
    assert "GPU cost model (roofline lower bounds)" in text
    # the GPU record is set against the bound of its size
    b = C_json["bounds"]["extraction"]["H200-SXM"]["bound_s"]
    assert f"{b / 2.0:.1%}" in text and "NVIDIA H200" in text
    # without records or model: every goal open, nothing breaks
    empty = "\n".join(goals.section([], str(tmp_path / "none")))
    assert "no record" in empty and "No GPU measurement exists yet" in empty
    # the page carries the section
    page = report.render([pre], str(tmp_path), 1)
    assert "Goals of issue 16" in page


def test_goal1a_interleaved_rounds_lead():
    """Goal 1a: with the pair interleaved in one run, the median of the per-round ratios
    is the ratio (not the ratio of the two medians); without, the medians' ratio."""
    sp = _rec("coadd", "healpix_spectroperf", 5.2)
    pl = _rec("coadd", "healpix_plain", 1.0)
    row = goals._goal1([sp, pl])[0]
    assert "5.2×" in row and "1.0× too slow" in row and "open" in row
    for r in (sp, pl):
        r["extra"] = {"ratio_rounds": [4.1, 4.4, 4.6, 4.3, 6.0]}
    row = goals._goal1([sp, pl])[0]
    assert "4.4×" in row and "5 rounds: 4.10–6.00×" in row and "**met**" in row
    pl["_file"] = "other.jsonl"                     # not one run: the medians again
    assert "5.2×" in goals._goal1([sp, pl])[0]
    # one pair per suite size: the least favourable leads, the other is quoted
    pl["_file"] = "x.jsonl"
    ssp, spl = _rec("coadd", "healpix_spectroperf", 0.3), _rec("coadd", "healpix_plain", 0.1)
    for r in (ssp, spl):
        r["size"] = "small"
    row = goals._goal1([sp, pl, ssp, spl])[0]
    assert row.split(" | ")[3] == "4.4×" and "3.0×" not in row.split(" | ")[3]
    spl["timing"]["median_s"] = 0.05                 # small pair now 6×: it leads, not met
    row = goals._goal1([sp, pl, ssp, spl])[0]
    assert row.split(" | ")[3] == "6.0×" and "open" in row and ": 4.4×" in row


def test_goal3_counts_only_single_thread_runs_and_every_run(tmp_path):
    def pre(ratio, threads, date):
        r = _rec("preproc", "fullccd_vs_desispec", 3.0, threads=threads, reference={
            "name": "desispec", "seconds": 3.0 * ratio, "ratio": ratio,
            "ratio_per_round": [ratio - 0.1, ratio + 0.1], "wall_median_s": 10.0,
            "ratio_wall": 1.5}, timing_extra={"cpu_median_s": 3.0})
        r["date_utc"] = date
        return r

    rows = goals._goal3([pre(4.0, "1", "2026-01-01"), pre(2.0, "2", "2026-01-03")])
    # the newest run is the 2-thread one, but the goal's row is the 1-thread run
    assert "| 4.00× |" in rows[0] and "12.00 CPU-s" in rows[0] and "**met**" in rows[0]
    assert "threads = 2" in rows[1] and "not the goal's setting" in rows[1]
    # a slower 1-thread run (older) keeps the goal open: every run must reach it
    rows = goals._goal3([pre(2.5, "1", "2026-01-01"), pre(4.0, "1", "2026-01-02")])
    assert "open" in rows[0] and "2.50–4.00×" in rows[0] and "1.20× short" in rows[0]
    assert len(rows) == 1


def test_cost_model_is_labelled_a_model(tmp_path):
    import json

    cm = C.frame_model(None)
    cm.update(kind="model", machine={"host": "cpuhost"})
    (tmp_path / "costmodel.json").write_text(json.dumps(cm, default=float))
    text = "\n".join(goals.section([], str(tmp_path)))
    line4 = next(x for x in text.splitlines() if x.startswith("| 4 "))
    assert "*modelled*" in line4 and "not measured" in line4
    assert "model, computed on cpuhost" in line4
    assert "**A model, not a measurement**" in text and "No GPU measurement exists yet" in text


def test_goal5a_every_record_since_the_meter(tmp_path):
    old = _rec("extract", "frame500", 50.0, threads="2")
    old["date_utc"] = "2026-01-01T00:00:00Z"
    new = _rec("preproc", "fullccd", 3.0, timing_extra={"peak_rss_mb": 1000.0})
    new["date_utc"] = "2026-02-01T00:00:00Z"
    row = goals._goal5a([old, new])
    assert "**met**" in row and "1 of 1 records since the meter" in row
    assert "extract/frame500 (full, threads 2)" in row          # the stale key is named
    bad = _rec("coadd", "healpix_plain", 1.0)
    bad["date_utc"] = "2026-03-01T00:00:00Z"
    row = goals._goal5a([old, new, bad])
    assert "open" in row and "1 of 2 records since the meter" in row


def test_interleave_alternates_variants_round_by_round():
    order = []
    ticks = iter(range(1000))
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    tim = P.interleave(fns, rounds=3, clock=lambda: float(next(ticks)))
    assert order == ["a", "b"] * 3                       # side by side, not a then b
    for k in fns:
        assert tim[k]["repeat"] == 3 and tim[k]["warmup"] == 0
        assert tim[k]["median_s"] == pytest.approx(1.0)
        assert "cpu_median_s" in tim[k] and "peak_rss_mb" in tim[k]
    with pytest.raises(ValueError):
        P.interleave(fns, rounds=0)


def test_goal2c_prefers_the_interleaved_pair(tmp_path):
    one = _rec("extract", "frame100_nproc1", 14.0, sizes={"nspec": 100})
    two = _rec("extract", "frame100_nproc2", 7.5, sizes={"nspec": 100})
    two["extra"] = {"speedup_2_vs_1": 14.0 / 7.5}
    old1 = _rec("extract", "frame50", 9.0, threads="1")
    old2 = _rec("extract", "frame50", 6.0, threads="2")
    row = goals._goal2c([old1, old2, one, two])
    assert "100 fibers" in row and "1.87×" in row and "**met**" in row
    row = goals._goal2c([old1, old2])                   # older records: the frame50 pair
    assert "frame50" in row and "1.50×" in row and "0.30 short" in row
    assert "no record" in goals._goal2c([])


def test_profile_fold_maps_functions_to_model_ops():
    from perf import profile_extract as PE

    class _Stats:            # pstats.Stats.stats: (file, line, name) -> (cc, nc, tt, ct, callers)
        stats = {("/x/gpuspec/extract/solve.py", 1, "_solve_tail_host"): (1, 1, 0.1, 1.4, {}),
                 ("/x/gpuspec/extract/blocksolve.py", 5, "solve_tail_blocks"): (1, 1, 0.4, 0.5,
                                                                                {}),
                 ("/x/numpy/linalg/_linalg.py", 2, "eigh"): (1, 1, 0.8, 0.8, {}),
                 ("/x/gpuspec/extract/core.py", 3, "_bundle_spots"): (1, 1, 0.1, 0.4, {}),
                 ("/x/gpuspec/extract/core.py", 4, "__init__"): (1, 1, 0.1, 0.1, {})}

    out = PE.fold(_Stats(), 3.0)
    # the block solve with its callees, and the dense fallback's own time (LAPACK inside)
    assert out[C.BLOCK_SOLVE] == pytest.approx(0.5 + 0.1)
    assert out["eigh of the fiber blocks"] == pytest.approx(0.8)
    assert out["spots"] == pytest.approx(0.4)
    assert out[PE.OTHER] == pytest.approx(3.0 - 0.6 - 0.8 - 0.4 - 0.1)
    with pytest.raises(RuntimeError, match="regularize_normal"):    # not in this profile
        PE.fold(_Stats(), 3.0, strict=True)
    prof = {"seconds_by_op": out, "patches": 100}
    fr = PE.per_frame(prof, 1000)
    assert fr["spots"] == pytest.approx(4.0) and fr[PE.ONCE] == pytest.approx(0.1)


def test_goal2d_scales_the_limit_to_the_record_and_shows_the_profile(tmp_path):
    import json

    from perf import profile_extract as PE

    cm = C.frame_model(None)
    rates = {"dgemm_1024": 50.0, "dgemm_2048": 60.0, "batched_gemm_cff": 20.0,
             "dpotrf_dtrtri": 10.0, "eigh_batched": 5.0, "lapack_nw": 4.0, "gemm_nw": 40.0,
             "shapes": {"n": 500, "nw": 73}}
    cm["cpu_rates"] = rates
    cm["cpu_limit"] = C.cpu_limit(cm, rates)
    ops = {op: 1.0 for op in PE.OPS} | {PE.OTHER: 0.5, PE.ONCE: 0.1}
    cm["cpu_profile"] = {"seconds_by_op": ops, "per_frame": ops, "patches": 265,
                         "frame_patches": 4700, "nwave": 2606, "cpu_s": 9.6, "bundle": 0}
    (tmp_path / "costmodel.json").write_text(json.dumps(cm, default=float))
    lim = cm["cpu_limit"]["seconds"]
    nw = cm["frame"]["nwave"]
    fr = _rec("extract", "frame500", 150.0, sizes={"nspec": 500, "nwave": 2 * nw},
              timing_extra={"cpu_median_s": 4 * lim})
    text = "\n".join(goals.section([fr], str(tmp_path)))
    row = next(x for x in text.splitlines() if x.startswith("| 2d"))
    assert "2.0× the limit" in row                      # 4·lim CPU-s against 2·lim
    assert f"{2 * lim:.0f} s for the record's {2 * nw} bins" in row
    assert "Where the CPU extraction's time goes" in text
    assert "| eigh of the fiber blocks |" in text and "| **total** |" in text
    assert "another CPU" not in row                     # same machine() on both sides
    # a limit measured on another CPU than the frame record is said to be so
    cm["cpu_machine"] = dict(fr["machine"], cpu={"model": "other", "cache": "1 KB",
                                                 "flags_sha": "0"})
    (tmp_path / "costmodel.json").write_text(json.dumps(cm, default=float))
    row = next(x for x in goals.section([fr], str(tmp_path)) if x.startswith("| 2d"))
    assert "measured on another CPU than the frame" in row


def test_same_cpu_compares_the_fingerprints():
    a = {"host": "vm", "cpu": {"model": "X", "cache": "1 KB", "flags_sha": "ab"}}
    assert P.same_cpu(a, dict(a)) is True
    assert P.same_cpu(a, {"host": "vm", "cpu": {"model": "X", "cache": "2 KB",
                                                "flags_sha": "ab"}}) is False
    assert P.same_cpu(a, {"host": "vm"}) is None        # records made before the fingerprint
    m = P.machine()
    assert set(m) >= {"host", "cpu_count", "cpu"}


def test_profile_ops_name_functions_that_exist():
    """Every gpuspec function the profile folding looks for exists (a rename fails here)."""
    import importlib

    from perf import profile_extract as PE

    for funcs in list(PE.OPS.values()) + [PE._ONCE_FUNCS]:
        for suffix, name, _kind in funcs:
            if not suffix.startswith("extract/"):
                continue
            mod = importlib.import_module("gpuspec." + suffix[:-3].replace("/", "."))
            where = mod._Context if name == "__init__" else mod
            assert callable(getattr(where, name, None)), f"{suffix}:{name}"


def test_goal2a_gpu_specter_derived_from_the_recorded_timings(tmp_path):
    """Without a side-by-side record the gpu_specter line scales gpuspec's measured ratio
    to specter by the recorded gpu_specter / specter times, the least favourable ends
    deciding; a side-by-side record, when one exists, wins."""
    t = P.GPU_SPECTER_CPU_RECORDED["caseB (50 x 375)"]
    (s_lo, s_hi), (g_lo, g_hi) = t["specter_s"], t["gpu_specter_s"]
    clean = _rec("extract", "caseB_clean", 1.0, reference={"name": "specter", "seconds": 12.0},
                 timing_extra={"cpu_median_s": 1.0})
    masked = _rec("extract", "caseB_masked", 1.0, reference={"name": "specter",
                                                             "seconds": 10.0},
                  timing_extra={"cpu_median_s": 1.0})
    line = next(x for x in goals.section([clean, masked], str(tmp_path))
                if "gpu_specter's CPU path" in x)
    low = 10.0 * g_lo / s_hi                 # the lesser ratio (masked), least favourable
    assert f"{low:.1f}× (least favourable" in line and "derived" in line
    assert ("**met**" in line) == (low >= 5)
    slow = _rec("extract", "caseB_masked", 3.0, reference={"name": "specter", "seconds": 10.0},
                timing_extra={"cpu_median_s": 3.0})
    line = next(x for x in goals.section([clean, slow], str(tmp_path))
                if "gpu_specter's CPU path" in x)
    assert "open" in line and f"{10.0 / 3.0 * g_lo / s_hi:.1f}×" in line
    side = _rec("extract", "bundle_vs_gpu_specter", 1.0,
                reference={"name": "gpu_specter", "ratio": 6.0})
    line = next(x for x in goals.section([clean, masked, side], str(tmp_path))
                if "gpu_specter's CPU path" in x)
    assert "side by side" in line and "6.0×" in line and "**met**" in line


def test_goal2d_side_by_side_rounds_pick_the_median_and_lead_the_row(tmp_path, monkeypatch):
    """costmodel --cpu alternates the rates and the profiled bundle; the 2d row then leads
    with the median ratio of those rounds, and the tables use that round's rates."""
    import json

    from perf import profile_extract as PE

    cm = C.frame_model(None)
    speeds = iter([1.0, 0.5, 2.0])           # the machine's speed in rounds 1..3
    state = {}

    def rates(n_lapack, nw):
        state["s"] = next(speeds)
        return {k: v * state["s"] for k, v in {"dgemm_1024": 50.0, "dgemm_2048": 60.0,
                                                "batched_gemm_cff": 20.0, "dpotrf_dtrtri": 10.0,
                                                "eigh_batched": 5.0, "lapack_nw": 4.0,
                                                "gemm_nw": 40.0}.items()}

    lim1 = C.cpu_limit(cm, rates(1, 1))["seconds"]
    speeds = iter([1.0, 0.5, 2.0])
    work = iter([1.2, 1.5, 1.1])             # measured / limit in each round

    k = cm["frame"]["npatch"] / 265
    ops = {op: 0.01 for op in PE.OPS} | {PE.ONCE: 0.1}

    def timed(inp):                          # plain CPU-s of the bundle in this round
        return 0.1 + (next(work) * lim1 / state["s"] - 0.1) / k

    def profile(inp):                        # cProfile's view: only its table is used
        return {"seconds_by_op": ops, "cpu_s": 9.9, "wall_s": 9.9,
                "patches": inp["patches"], "nwave": 2606, "bundle": 0}

    monkeypatch.setattr(C, "cpu_rates", rates)
    monkeypatch.setattr(PE, "prepare_bundle", lambda path, bundle=0: {"patches": 265,
                                                                      "bundle": 0})
    monkeypatch.setattr(PE, "time_prepared", timed)
    monkeypatch.setattr(PE, "profile_prepared", profile)
    out = C.side_by_side(cm, "psf.fits", 500, 73, rounds=3)
    sbs = out["cpu_side_by_side"]
    assert [round(r["ratio"], 6) for r in sbs["rounds"]] == [1.2, 1.5, 1.1]
    assert sbs["ratio_median"] == pytest.approx(1.2)
    assert (sbs["ratio_min"], sbs["ratio_max"]) == (pytest.approx(1.1), pytest.approx(1.5))
    assert out["cpu_limit"]["seconds"] == pytest.approx(lim1)       # round 1's own rates
    assert out["cpu_rates"]["dgemm_2048"] == pytest.approx(60.0)

    cm.update(out)
    (tmp_path / "costmodel.json").write_text(json.dumps(cm, default=float))
    nw = cm["frame"]["nwave"]
    fr = _rec("extract", "frame500", 150.0, sizes={"nspec": 500, "nwave": nw},
              timing_extra={"cpu_median_s": 3 * lim1})
    text = "\n".join(goals.section([fr], str(tmp_path)))
    row = next(x for x in text.splitlines() if x.startswith("| 2d"))
    assert "1.20× the limit measured side by side (3 rounds" in row
    assert "timed bundle 0" in row
    assert "1.10–1.50×" in row and "the frame record, timed in another run: 3.0×" in row
    assert "the median of 3 rounds" in text
    assert f"median round {1.2 * lim1:.0f} CPU-s per frame" in row


def test_frame_seconds_scales_all_but_the_once_per_call_part():
    from perf import profile_extract as PE

    prof = {"seconds_by_op": {PE.ONCE: 0.2, PE.OTHER: 1.0}, "patches": 100}
    assert PE.frame_seconds(1.2, prof, 1000) == pytest.approx(0.2 + 1.0 * 10)


def _desispec_resample_json(path, median_s, rows, date="2026-12-02T02:33:00Z"):
    import json

    path.write_text(json.dumps({"benchmark": "coadd_spectroperf", "date_utc": date,
                                "workload": {"resample_rows": rows},
                                "cpu_s": {"desispec_resample": {"median_s": median_s}}}))


def test_goal1b_sets_the_gpu_pixel_against_desispec_per_row(tmp_path):
    """1b: desispec's recorded CPU-s per row × the GPU pixel's rows over the GPU time; met
    only at >= 100x on a pixel of 500+ targets; without a GPU record the row says what
    the GPU must reach."""
    _desispec_resample_json(tmp_path / "coadd-spectroperf-vm-1.json", 6.0, 6)   # 1 s/row
    _desispec_resample_json(tmp_path / "coadd-spectroperf-vm-0.json", 60.0, 6,
                            date="2026-11-01T00:00:00Z")                          # older
    assert goals.desispec_resample_row(str(tmp_path)) == (1.0, "coadd-spectroperf-vm-1.json")

    def row(recs):
        return next(x for x in goals.section(recs, str(tmp_path)) if x.startswith("| 1b"))

    from perf.suite import SIZES

    ne = SIZES["full"]["nexp"]
    none = row([])
    assert "no GPU record" in none and f"{500 * ne} s for 500 targets" in none
    assert f"≤ {500 * ne / 100:.1f} s" in none and "| open |" in none
    big = {"ntarget": P.GOAL1B_NTARGET, "nexp": 4}
    fast = _rec("coadd", P.GOAL1B_CASE, 2.0, backend="cupy", sizes=big,
                device="NVIDIA H200 (device 0)")
    r = row([fast])
    assert "| 1000× |" in r and "**met**" in r and "2000 rows" in r
    slow = _rec("coadd", P.GOAL1B_CASE, 40.0, backend="cupy", sizes=big, device="H200")
    r = row([slow])
    assert "| 50× |" in r and "2.0× too slow" in r and "| open |" in r
    small = _rec("coadd", "healpix_spectroperf", 0.1, backend="cupy",
                 sizes={"ntarget": 200, "nexp": 4}, device="H200")
    r = row([small])
    assert "| 8000× |" in r and "pixel of 200 targets" in r and "| open |" in r
    assert "| 50× |" in row([small, slow])          # the 500-target pixel decides
    # and the GPU record is set against the model's bound for its size
    import json

    cm = C.frame_model(None)
    (tmp_path / "costmodel.json").write_text(json.dumps(cm, default=float))
    text = "\n".join(goals.section([fast], str(tmp_path)))
    px = cm["healpix_pixel"]
    b = cm["bounds"]["coadd spectroperf"]["H200-SXM"]["bound_s"] * 500 * 4 / (
        px["ntarget"] * px["nexp"])
    assert f"| coadd/{P.GOAL1B_CASE} | NVIDIA H200 (device 0) | 2 s | {b:.3g} s |" in text


@pytest.mark.slow
def test_cupy_coadd_suite_adds_the_goal1b_pixel(emulate_cupy, monkeypatch):
    """On cupy the coadd suite adds goal 1b's pixel (a smaller one here, on the emulation)
    with its own sizes; the numpy suite does not."""
    from perf import suite

    monkeypatch.setattr(P, "GOAL1B_NTARGET", 3)
    monkeypatch.setattr(P, "GOAL1B_CASE", "healpix3_spectroperf")
    monkeypatch.setitem(suite.SIZES, "small", dict(suite.SIZES["small"], ntarget=2,
                                                   repeat=1))
    monkeypatch.setattr(suite, "_ref_dir", lambda *a: "/nonexistent")     # no Case C
    recs = suite.bench_coadd("small", "cupy")
    by = {r["case"]: r for r in recs}
    assert set(by) == {"healpix_plain", "healpix_spectroperf", "healpix3_spectroperf"}
    assert by["healpix3_spectroperf"]["sizes"]["ntarget"] == 3
    assert by["healpix_spectroperf"]["sizes"]["ntarget"] == 2
    assert by["healpix3_spectroperf"]["backend"] == "cupy"
    # goal 1a's pair is interleaved: one CPU-time ratio per round, in both records
    rr = by["healpix_spectroperf"]["extra"]["ratio_rounds"]
    assert len(rr) == 5 and all(r > 0 for r in rr)
    assert by["healpix_plain"]["extra"]["ratio_rounds"] == rr
    assert by["healpix_plain"]["extra"]["interleaved_with"] == "healpix_spectroperf"


def test_device_linalg_bench_scales_the_batched_calls_to_a_frame(emulate_cupy, monkeypatch):
    """cupy's extraction suite times the batched eigh and Cholesky alone (here on the
    emulation, with a small patch shape) and scales each to the frame's blocks/patches."""
    import cupy

    from perf import costmodel, suite

    shapes = [costmodel.PatchShape(F=3, NW=8, NK=2, count=30.0),
              costmodel.PatchShape(F=2, NW=8, NK=1, count=10.0)]
    monkeypatch.setattr(costmodel, "plan_frame", lambda *a, **k: shapes)
    monkeypatch.setattr(suite, "DEVICE_CHUNK_PATCHES", 2)
    recs = suite.bench_device_linalg(None, None, "small", cupy, chunks=(1, 3))
    by = {r["case"]: r for r in recs}
    assert set(by) == {"eigh_blocks_x1", "cholesky_normal_x1", "eigh_blocks_x3",
                       "cholesky_normal_x3"}
    e, c = by["eigh_blocks_x3"], by["cholesky_normal_x1"]
    assert e["sizes"] == {"n": 8, "batch": 12, "patches_per_call": 6}     # 6 patches x NK 2
    assert c["sizes"] == {"n": 24, "batch": 2, "patches_per_call": 2}     # F·NW of the common shape
    assert e["extra"]["frame_blocks"] == 70 and c["extra"]["frame_patches"] == 40
    assert e["extra"]["per_frame_s"] == pytest.approx(e["timing"]["median_s"] * 70 / 12)
    assert c["extra"]["per_frame_s"] == pytest.approx(c["timing"]["median_s"] * 40 / 2)
    assert all(r["backend"] == "cupy" for r in recs)


def test_record_sources_name_the_cpu_kind():
    """One host name covers VMs of different CPU kinds: the goals table names the CPU."""
    assert goals.machine_label({"host": "vm", "cpu": {"model": "Intel(R) Xeon(R) Processor"}}) \
        == "vm: Intel Xeon"
    assert goals.machine_label({"host": "vm", "cpu": {"model": "AMD EPYC"}}) == "vm: AMD EPYC"
    assert goals.machine_label({"host": "old"}) == "old"        # records before the fingerprint
    r = _rec("coadd", "healpix_plain", 1.0)
    r["machine"] = {"host": "vm", "cpu": {"model": "AMD EPYC"}}
    assert "(vm: AMD EPYC, " in goals._src(r)
