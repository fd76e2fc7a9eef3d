"""Tests of the performance suite's machinery (perf/): protocol statistics, record schema,
report generation, gpu-check skipping without a GPU, the CLI. No timing assertions."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from perf import protocol as P  # noqa: E402
from perf import report  # noqa: E402


class FakeClock:
    """Clock advancing by scripted durations: each timed run lasts the next duration."""

    def __init__(self, durations):
        self.durations = list(durations)
        self.t = 100.0
        self.calls = 0

    def __call__(self):
        # measure() reads the clock twice per run: start, then stop
        if self.calls % 2 == 1:
            self.t += self.durations[self.calls // 2]
        self.calls += 1
        return self.t


def test_measure_statistics_on_fake_function():
    calls = []
    durations = [3.0, 1.0, 2.0, 10.0, 4.0]
    clock = FakeClock(durations)
    t = P.measure(lambda: calls.append(1), None, warmup=2, repeat=5, clock=clock)
    assert len(calls) == 7  # 2 warm-up + 5 timed
    assert t["runs_s"] == pytest.approx(durations)
    assert t["median_s"] == pytest.approx(3.0)
    assert t["min_s"] == pytest.approx(1.0) and t["max_s"] == pytest.approx(10.0)
    # inclusive quartiles of [1, 2, 3, 4, 10] are 2 and 4 -> half IQR 1
    assert t["iqr_half_s"] == pytest.approx(1.0)
    # |d - 3| = [0, 2, 1, 7, 1] -> median 1 -> 1/3
    assert t["mad_rel"] == pytest.approx(1.0 / 3.0)
    assert (t["warmup"], t["repeat"]) == (2, 5)


def test_measure_starts_without_the_memory_kept_from_the_case_before(monkeypatch):
    """Under gpuspec.heap's keep policy a record's peak RSS would include memory kept
    from the benchmark before it: measure() releases it before the warm-up."""
    from gpuspec import heap

    events = []
    monkeypatch.setattr(heap, "release_kept_memory", lambda: events.append("release"))
    P.measure(lambda: events.append("run"), None, warmup=1, repeat=2)
    assert events == ["release", "run", "run", "run"]


def test_stats_single_and_errors():
    s = P.stats([0.5])
    assert s["median_s"] == 0.5 and s["iqr_half_s"] == 0.0 and s["mad_rel"] == 0.0
    with pytest.raises(ValueError):
        P.stats([])
    with pytest.raises(ValueError):
        P.measure(lambda: None, repeat=0)
    runs = [0.3, 0.1, 0.2, 0.4]
    assert P.stats(runs)["median_s"] == pytest.approx(statistics.median(runs))


def test_thread_env_pins_and_unpins():
    env = P.thread_env(1, {"OMP_NUM_THREADS": "8", "X": "y"})
    assert all(env[k] == "1" for k in P.THREAD_VARS) and env["X"] == "y"
    env = P.thread_env(0, env)
    assert not any(k in env for k in P.THREAD_VARS)


def _rec(bench="extract", case="caseB_clean", backend="numpy", median=2.0, threads="1",
         reference=None, extra=None, sizes=None, date="2026-01-01T00:00:00Z", device=None):
    r = P.record(bench, case, size="small", backend_name="numpy",
                 timing=P.stats([median, median]) | {"warmup": 1, "repeat": 2},
                 reference=reference, extra=extra, sizes=sizes or {"nspec": 50})
    r.update(backend=backend, threads=threads, date_utc=date)
    if device:
        r["device"] = device
    return r


def test_record_schema_and_jsonl_roundtrip(tmp_path):
    ref = P.with_reference("public/caseB_extract/ex2d_clean", 2.0)
    r = _rec(reference=ref)
    assert P.validate(r) == []
    assert set(P.RECORD_KEYS) <= set(r)
    assert r["device"].startswith("cpu") and r["machine"]["cpu_count"] >= 1
    assert r["versions"]["numpy"] and "gpuspec" in r["versions"]
    if ref is not None:  # reference data present: ratio = reference / gpuspec
        tj = P.reference_timings()["public/caseB_extract/ex2d_clean"]["seconds"]
        assert ref["ratio"] == pytest.approx(tj / 2.0)
    fn = tmp_path / "x.jsonl"
    P.append(str(fn), [r, r])
    (tmp_path / "bad.jsonl").write_text('{"schema": "other"}\nnot json\n')
    got = P.load(str(tmp_path))
    assert len(got) == 2 and got[0]["case"] == "caseB_clean"
    bad = dict(r)
    del bad["device"]
    bad["timing"] = {"median_s": 1.0, "repeat": 3, "runs_s": [1.0]}
    errs = P.validate(bad)
    assert "missing key device" in errs and "timing repeat != len(runs_s)" in errs


def test_report_from_fixture_results(tmp_path):
    res = tmp_path / "results"
    ref = {"name": "public/caseB_extract/ex2d_clean", "call": "specter.extract.ex2d",
           "seconds": 14.0, "key": "seconds", "ratio": 14.0 / 2.0}
    old = _rec(median=9.0, reference=dict(ref, ratio=14.0 / 9.0), date="2025-01-01T00:00:00Z")
    new = _rec(median=2.0, reference=ref)
    gpu = _rec(backend="cupy", median=0.25, device="NVIDIA H100 80GB HBM3 (device 0)",
               reference=dict(ref, ratio=56.0))
    e2e = _rec(bench="e2e", case="exposure", median=36.0,
               sizes={"cameras": ["b0", "r0"], "nspec": 50, "full_size": False},
               reference={"name": "gpu_specter", "ratio": 20.0 / 144.0},
               extra={"frames_per_device_hour": 200.0, "frames500_per_device_hour": 20.0,
                      "per_device": "CPU-hour at 1 thread(s)", "preproc_s": 1.0,
                      "extract_s": 35.0})
    P.append(str(res / "a.jsonl"), [old, new, gpu, e2e])
    (res / "gpu-check-h-1.md").write_text("# gpu-check PASS: NVIDIA H100 80GB HBM3\n")
    out = tmp_path / "performance.md"
    report.write_report(str(res), str(out))
    text = out.read_text()
    assert "GENERATED by perf/report.py" in text
    assert "**7.00**" in text            # newest numpy record: 14 / 2
    assert "**1.56**" not in text        # the older record is superseded
    assert "**56.00**" in text and "NVIDIA H100" in text
    assert "**8.0x**" in text            # speed-up 2.0 / 0.25
    assert "200.0" in text and "0.139x" in text
    assert "[`gpu-check-h-1.md`]" in text and "gpu-check PASS: NVIDIA H100" in text
    # an empty results folder still gives a page
    empty = report.render([], "nowhere", 0)
    assert "No results yet" in empty


def test_gpu_check_skips_cleanly_without_gpu(tmp_path):
    env = dict(os.environ, GPUSPEC_NO_GPU="1")
    out = tmp_path / "res"
    r = subprocess.run([os.path.join(REPO, "perf", "gpu-check"), "--out", str(out)], env=env,
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "SKIPPED" in r.stdout and "no usable CUDA GPU" in r.stdout
    assert not out.exists()  # nothing installed, run or written


def test_perf_cli_help_and_bad_benchmark():
    r = subprocess.run([sys.executable, "-m", "perf", "--help"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0 and "--size" in r.stdout and "--backend" in r.stdout
    r = subprocess.run([sys.executable, "-m", "perf", "--only", "nosuch", "--no-report"],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode != 0 and "unknown benchmark" in r.stderr


def test_e2e_cache_key_depends_on_parameters():
    from perf.e2e import cache_key

    k = cache_key(50, False)
    assert k == cache_key(50, False)
    assert len({k, cache_key(500, False), cache_key(50, True), cache_key(50, False, 2)}) == 4
    assert json.dumps(k)  # a plain folder name


def _burn(seconds):
    """Spend ``seconds`` of CPU time (a fake benchmark body)."""
    import time

    t = time.process_time() + seconds
    while time.process_time() < t:
        pass


def test_bundle_solve_bench_interleaves_the_two_solves(monkeypatch):
    """perf.suite._bench_bundle_solve: warm-up of each, then rounds alternating the block
    and the dense solve (core.USE_BLOCKSOLVE set for each run and restored), and the CPU
    speed-up of the blocks from the interleaved rounds."""
    import gpuspec.extract as ex
    from gpuspec.extract import core
    from perf import suite

    seen = []

    def fake_extract(*a, **k):
        seen.append(core.USE_BLOCKSOLVE)
        _burn(0.002 if core.USE_BLOCKSOLVE else 0.006)

    monkeypatch.setattr(ex, "extract_frame", fake_extract)
    monkeypatch.setattr(suite, "_say", lambda *a: None)
    recs = suite._bench_bundle_solve(None, [[0.0]], [[1.0]], [1.0, 2.0], "small", None,
                                     rounds=3)
    assert seen == [True, False] * 4
    assert core.USE_BLOCKSOLVE is True
    assert [r["case"] for r in recs] == ["bundle_solve_blocks", "bundle_solve_dense"]
    sp = recs[0]["extra"]["cpu_speedup_blocks_vs_dense"]
    assert 1.5 < sp < 6 and len(recs[0]["extra"]["cpu_ratio_rounds"]) == 3


def test_bundle_task_bench_interleaves_column_and_whole_reads(monkeypatch):
    """perf.suite._bench_bundle_task: writes a preproc file of the image, then extract_file
    of bundle 1 from it with files.CROP_COLUMNS on and off, a warm-up of each, then
    rounds alternating (the setting restored), and the CPU speed-up of the column reads."""
    import numpy as np

    import gpuspec.extract as ex
    from gpuspec.extract import files
    from perf import suite

    seen = []

    def fake_extract_file(pre, psf, out, wave, bundles=None, backend=None):
        assert os.path.exists(pre) and bundles == [1]
        seen.append(files.CROP_COLUMNS)
        _burn(0.002 if files.CROP_COLUMNS else 0.005)

    monkeypatch.setattr(ex, "extract_file", fake_extract_file)
    monkeypatch.setattr(suite, "_say", lambda *a: None)
    img = np.ones((8, 6))
    recs = suite._bench_bundle_task("psf.fits", img, img, [1.0, 2.0], "small", "numpy", None)
    assert seen == [True, False] * 4 and files.CROP_COLUMNS is True
    assert [r["case"] for r in recs] == ["bundle_task_columns", "bundle_task_whole_image"]
    assert 1.5 < recs[0]["extra"]["cpu_speedup_columns_vs_whole"] < 5
