"""gpuspec-run end to end with the toy steps: one process, MPI, failures, kill/resume, status, retry.

The toy steps (gpuspec.launch.toy) are deterministic functions of their input
contents, so productions made in different ways must be byte-identical; the
expected graph (which tasks depend on which) is computed here independently
from the fibermaps with healpy.
"""

from __future__ import annotations

import glob
import json
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import fitsio
import healpy
import numpy as np
import pytest

from gpuspec.launch import cli as run_cli
from gpuspec.launch.db import db_path
from gpuspec.launch.graph import build_graph
from gpuspec.launch.manifest import load_manifest
from gpuspec.launch.plan import load_plan
from gpuspec.launch.runner import run_serial
from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text
from gpuspec import cli as gpuspec_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAIL = "extract-b1-00000002-b00-01"  # one extraction task of petal 1, exposure 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_toy_inputs(str(tmp_path_factory.mktemp("toyin")))


def _manifest(tmp_path, inputs, name="prod", **kw):
    path = tmp_path / f"{name}.yaml"
    path.write_text(toy_manifest_text(inputs, str(tmp_path / name), **kw))
    return str(path)


def _digests(prod):
    """relative path -> sha256 of every product (not the run/ folder)."""
    out = {}
    for p in glob.glob(os.path.join(prod, "**", "*"), recursive=True):
        rel = os.path.relpath(p, prod)
        if os.path.isfile(p) and not rel.startswith("run" + os.sep):
            with open(p, "rb") as f:
                out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def _states(prod):
    con = sqlite3.connect(db_path(prod))
    try:
        return dict(con.execute("SELECT name, state FROM tasks"))
    finally:
        con.close()


def _expected_pixels(inputs, nside=16, bundles=(0, 1, 2)):
    """{pixel: set of (expid, petal)} from the fibermaps, computed independently."""
    out = {}
    for e in inputs["exposures"]:
        fm = fitsio.read(os.path.join(inputs["rawdir"], str(e["night"]), f"{e['expid']:08d}",
                                      f"fibermap-{e['expid']:08d}.fits"), ext="FIBERMAP")
        bundle = (fm["FIBER"] % 500) // 25
        keep = np.isin(bundle, bundles)
        pix = healpy.ang2pix(nside, fm["TARGET_RA"][keep], fm["TARGET_DEC"][keep], nest=True,
                             lonlat=True)
        for p, petal in zip(pix, fm["FIBER"][keep] // 500):
            out.setdefault(int(p), set()).add((e["expid"], int(petal)))
    return out


def _run_cli(args, timeout=120, **kw):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GPUSPEC_NO_GPU="1")
    return subprocess.run([sys.executable, "-m", "gpuspec.launch.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)


def _mpiexec_cmd(n, manifest):
    return ["mpiexec", "-n", str(n), sys.executable, "-m", "gpuspec.launch.cli", manifest]


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                GPUSPEC_NO_GPU="1")


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """An uninterrupted one-process production without failures."""
    tmp = tmp_path_factory.mktemp("ref")
    m = load_manifest(_manifest(tmp, inputs))
    assert run_serial(load_plan(m), verbose=False) == 0
    return m.production


# --------------------------------------------------------------------------- graph

def test_graph_matches_independent_expectation(inputs, tmp_path):
    m = load_manifest(_manifest(tmp_path, inputs))
    tasks = {t.name: t for t in build_graph(m, ext="json")}
    cams = inputs["cameras"]
    nexp = len(inputs["exposures"])
    by_step = {}
    for t in tasks.values():
        by_step.setdefault(t.step, []).append(t)
    # bundles [0, 1, 2] in tasks of 2 bundles -> 2 extract tasks per camera and exposure
    assert len(by_step["preproc"]) == len(cams) * nexp
    assert len(by_step["extract"]) == 2 * len(cams) * nexp
    assert len(by_step["frame"]) == len(cams) * nexp
    expect = _expected_pixels(inputs)
    assert sorted(int(t.name.split("-")[1]) for t in by_step["group"]) == sorted(expect)
    for p, members in expect.items():
        g = tasks[f"group-{p}"]
        want = sorted(f"frame-{arm}{petal}-{expid:08d}" for expid, petal in members
                      for arm in "brz")
        assert g.deps == want
        assert tasks[f"coadd-{p}"].deps == [f"group-{p}"]
    t = tasks["extract-r1-00000002-b00-01"]
    assert t.deps == ["preproc-r1-00000002"]
    assert t.outputs == [os.path.join(m.production, "exposures", "20250101", "00000002",
                                      "bundles", "frame-r1-00000002-b00-01.json")]
    assert tasks["preproc-z0-00000001"].outputs == [os.path.join(
        m.production, "preproc", "20250101", "00000001", "preproc-z0-00000001.json")]
    assert tasks["frame-b0-00000001"].deps == ["extract-b0-00000001-b00-01",
                                               "extract-b0-00000001-b02-02"]
    p = next(iter(expect))
    # desispec findfile: healpix/{survey}/{program}/{pixel//100}/{pixel}/coadd-{survey}-{program}-{pixel}
    assert tasks[f"coadd-{p}"].outputs[0] == os.path.join(
        m.production, "healpix", "main", "dark", str(p // 100), str(p),
        f"coadd-main-dark-{p}.json")
    # every task comes after its dependencies
    pos = {n: i for i, n in enumerate(tasks)}
    assert all(pos[d] < pos[n] for n, t in tasks.items() for d in t.deps)


def test_after_barrier(inputs, tmp_path):
    text = toy_manifest_text(inputs, str(tmp_path / "prod")).replace(
        "  group:\n", "  group:\n    after: [extract]\n")
    (tmp_path / "m.yaml").write_text(text)
    tasks = {t.name: t for t in build_graph(load_manifest(str(tmp_path / "m.yaml")), "json")}
    nextract = sum(t.step == "extract" for t in tasks.values())
    g = next(t for t in tasks.values() if t.step == "group")
    assert sum(d.startswith("extract-") for d in g.deps) == nextract


# --------------------------------------------------------------------------- one process

@pytest.mark.slow
def test_serial_run_done_and_up_to_date(reference, inputs, tmp_path):
    states = _states(reference)
    assert set(states.values()) == {"done"}
    m = load_manifest(_manifest(tmp_path, inputs))
    tasks = build_graph(m, "json")
    assert len(states) == len(tasks)
    # every output exists: compare the listing with the graph
    ref = _digests(reference)
    want = {os.path.relpath(o, m.production) for t in tasks for o in t.outputs}
    assert set(ref) == want
    # re-planning the finished production finds everything done (outputs newer than inputs)
    m2 = load_manifest(os.path.join(os.path.dirname(reference), "prod.yaml"))
    p = load_plan(m2, write_db=False)
    assert set(p.states.values()) == {"done"}
    # touching one input makes exactly that task and everything downstream not done
    pre = [t for t in p.tasks if t.name == "frame-z1-00000001"][0]
    part = pre.inputs[0]
    os.utime(part, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    p = load_plan(m2, write_db=False)
    notdone = {n for n, s in p.states.items() if s != "done"}
    assert "frame-z1-00000001" in notdone and all(not n.startswith(("preproc", "extract"))
                                                 for n in notdone)
    assert p.states["frame-z1-00000001"] == "ready"
    os.utime(part, ns=(os.stat(pre.outputs[0]).st_mtime_ns - 10**9,) * 2)


@pytest.mark.slow
def test_failure_fails_only_dependents_serial(inputs, tmp_path, reference, capfd):
    capsys = capfd  # the task runs in a task process: its log reaches the terminal's fd
    path = _manifest(tmp_path, inputs, fail_tasks=[FAIL])
    assert run_cli.main([path, "--no-mpi"]) == 1
    out = capsys.readouterr().out
    assert f"FAILED {FAIL}" in out
    prod = str(tmp_path / "prod")
    states = _states(prod)
    failed = {n for n, s in states.items() if s == "failed"}
    expect = _expected_failures(inputs)
    assert failed == expect
    assert {s for n, s in states.items() if n not in failed} == {"done"}
    # retry after fixing the manifest: the task runs alone, then its dependents can run
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace(f"- {FAIL}", "[]").replace("fail_tasks:\n", "fail_tasks: "))
    assert load_manifest(path).data["run"]["fail_tasks"] == []
    assert gpuspec_cli.main(["retry", prod, FAIL]) == 0
    out = capsys.readouterr().out
    assert f"task {FAIL} done" in out and "command: gpuspec-run" in out  # log on terminal
    states = _states(prod)
    assert states[FAIL] == "done"
    assert states["frame-b1-00000002"] == "ready"
    assert not any(s == "failed" for s in states.values())
    assert run_cli.main([path, "--no-mpi", "-q"]) == 0
    assert _digests(prod) == _digests(reference)


def _expected_failures(inputs):
    """The failed extraction, its frame, and group/coadd of the pixels that frame feeds."""
    out = {FAIL, "frame-b1-00000002"}
    for p, members in _expected_pixels(inputs).items():
        if (2, 1) in members:
            out |= {f"group-{p}", f"coadd-{p}"}
    return out


def test_dry_run_prints_tasks_and_commands(inputs, tmp_path, capsys):
    path = _manifest(tmp_path, inputs)
    assert run_cli.main([path, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    notes = [x for x in out if x.startswith("note: ")]
    out = [x for x in out if not x.startswith("note: ")]
    assert any("UNCALIBRATED production" in x for x in notes)   # toy: no calibration steps
    m = load_manifest(path)
    tasks = build_graph(m, "json")
    assert len(out) == len(tasks) + 1
    for t, line in zip(tasks, out[1:]):
        assert line.split()[0] == t.name
        assert f"gpuspec-run {path} --task {t.name}" in line
    assert not os.path.exists(db_path(m.production))  # nothing written


def test_task_option_runs_one_task(inputs, tmp_path, capsys):
    path = _manifest(tmp_path, inputs)
    assert run_cli.main([path, "--task", "extract-b0-00000001-b00-01"]) == 2  # deps not done
    assert run_cli.main([path, "--task", "preproc-b0-00000001"]) == 0
    prod = str(tmp_path / "prod")
    assert _states(prod)["preproc-b0-00000001"] == "done"
    assert os.path.exists(os.path.join(prod, "run", "logs", "preproc", "preproc-b0-00000001.log"))


def test_unavailable_step_is_reported(inputs, tmp_path, capsys):
    path = _manifest(tmp_path, inputs)
    text = open(path).read().replace("registry: toy", "registry: gpuspec.launch.steps:DESI")
    (tmp_path / "desi.yaml").write_text(text)
    from gpuspec.launch.registry import Registry, StepSpec
    from gpuspec.launch.steps import DESI

    reg = Registry("x", dict(DESI.steps, coadd=StepSpec("gpuspec.nonexistent_mod:coadd_file")))
    missing = reg.unavailable(["coadd"])
    assert "gpuspec.nonexistent_mod" in missing["coadd"]


# --------------------------------------------------------------------------- status

@pytest.mark.slow
def test_status_counts(inputs, tmp_path, capsys):
    path = _manifest(tmp_path, inputs, fail_tasks=[FAIL])
    prod = str(tmp_path / "prod")
    assert run_cli.main([path, "-q"]) == 1
    capsys.readouterr()
    assert gpuspec_cli.main(["status", prod, "--once"]) == 0
    table = capsys.readouterr().out
    counts = _parse_status(table)
    tasks = build_graph(load_manifest(path), "json")
    nfail = len(_expected_failures(inputs))
    assert counts["total"]["total"] == len(tasks)
    assert counts["total"]["failed"] == nfail
    assert counts["total"]["done"] == len(tasks) - nfail
    assert counts["extract"]["failed"] == 1 and counts["frame"]["failed"] == 1
    assert counts["preproc"]["done"] == sum(t.step == "preproc" for t in tasks)
    assert gpuspec_cli.main(["tasks", prod, "--state", "failed", "--names"]) == 0
    names = set(capsys.readouterr().out.split())
    assert names == _expected_failures(inputs)
    assert gpuspec_cli.main(["tasks", prod, "--state", "failed", "--long"]) == 0
    out = capsys.readouterr().out
    assert f"re-run: gpuspec-run {path} --task {FAIL}" in out
    assert "InjectedFailure" in out and f"dependency {FAIL} failed" in out


def _parse_status(text):
    """{step: {column: count}} of the last status table in ``text``."""
    lines = text.splitlines()
    i = max(k for k, ln in enumerate(lines) if ln.startswith("step "))
    head = lines[i].split()
    out = {}
    for ln in lines[i + 1:]:
        if ln.startswith("-"):
            continue
        out[ln.split()[0]] = dict(zip(head[1:], map(int, ln.split()[1:])))
        if ln.startswith("total"):
            break
    return out


# --------------------------------------------------------------------------- MPI

@pytest.mark.mpi
@pytest.mark.slow
def test_mpi_failure_and_outputs_equal_serial(inputs, tmp_path, reference):
    path = _manifest(tmp_path, inputs, fail_tasks=[FAIL])
    r = subprocess.run(_mpiexec_cmd(3, path), env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "3 MPI ranks" in r.stdout, r.stdout + r.stderr
    prod = str(tmp_path / "prod")
    states = _states(prod)
    failed = {n for n, s in states.items() if s == "failed"}
    assert failed == _expected_failures(inputs)
    assert {s for n, s in states.items() if n not in failed} == {"done"}
    # every rank ran tasks; host/rank/device/times recorded
    con = sqlite3.connect(db_path(prod))
    ranks = {r for (r,) in con.execute("SELECT rank FROM tasks WHERE state='done'")}
    rows = con.execute("SELECT host, rank, device, start, end FROM tasks WHERE state='done'")
    assert all(h and d and s and e and e >= s for h, _, d, s, e in rows)
    con.close()
    assert ranks <= {0, 1, 2} and len(ranks) >= 2
    # outputs of the done tasks equal the one-process run
    ref = _digests(reference)
    got = _digests(prod)
    assert got and all(ref[k] == v for k, v in got.items())
    # after removing the failure, a re-run completes and matches the reference exactly
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace(f"- {FAIL}", "[]").replace("fail_tasks:\n", "fail_tasks: "))
    r = subprocess.run(_mpiexec_cmd(3, path), env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _digests(prod) == ref


@pytest.mark.mpi
@pytest.mark.slow
def test_sigkill_then_resume(inputs, tmp_path, reference):
    path = _manifest(tmp_path, inputs, sleep=0.1)
    prod = str(tmp_path / "prod")
    proc = subprocess.Popen(_mpiexec_cmd(3, path), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 100
        ndone = 0
        while time.time() < deadline and proc.poll() is None:
            if os.path.exists(db_path(prod)):
                try:
                    ndone = sum(s == "done" for s in _states(prod).values())
                except sqlite3.OperationalError:
                    ndone = 0
                if ndone >= 15:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(0.5)  # let orphaned ranks (if any) die
    states = _states(prod)
    assert "running" in states.values() and set(states.values()) != {"done"}, states
    # what an interrupted atomic write leaves behind (beside the output of an unfinished task)
    todo = [t for t in build_graph(load_manifest(path), "json") if states[t.name] != "done"]
    out = todo[-1].outputs[0]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    stale = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.abc123.tmp.json")
    with open(stale, "w") as f:
        f.write("{partial")
    r = subprocess.run(_mpiexec_cmd(3, path), env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "already done" in r.stdout
    assert set(_states(prod).values()) == {"done"}
    assert _digests(prod) == _digests(reference)
    assert not [p for p in glob.glob(os.path.join(prod, "**", ".*"), recursive=True)
                if ".tmp" in p]


def test_nvtx_range_per_task_and_pool_freed_between_steps(inputs, tmp_path, monkeypatch):
    from gpuspec.launch import execute

    ranges, frees = [], []

    class Rec:
        def __init__(self, name):
            ranges.append(name)

        def __enter__(self):
            frees.append(("enter", ranges[-1]))
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(execute, "nvtx_range", Rec)
    monkeypatch.setattr(execute._backend, "free_memory", lambda xp=None: frees.append("free"))
    # in this process (the patches above): a task process runs the same Worker code
    m = load_manifest(_manifest(tmp_path, inputs, isolate=False))
    p = load_plan(m)
    assert run_serial(p, verbose=False) == 0
    assert ranges == [t.name for t in p.tasks]  # one range per task, named after it
    steps = [t.step for t in p.tasks]
    nchanges = sum(a != b for a, b in zip(steps, steps[1:]))
    assert frees.count("free") == nchanges == 4
    # the pool is freed right before the first task of each new step
    for i, ev in enumerate(frees):
        if ev == "free":
            nxt = frees[i + 1][1]
            prev = [e for e in frees[:i] if e != "free"][-1][1]
            assert nxt.split("-")[0] != prev.split("-")[0]


@pytest.mark.slow
def test_retry_keeps_failures_caused_by_another_task(inputs, tmp_path, capsys):
    other = "preproc-z0-00000001"
    path = _manifest(tmp_path, inputs, fail_tasks=[FAIL, other])
    prod = str(tmp_path / "prod")
    assert run_cli.main([path, "-q"]) == 1
    before = _states(prod)
    text = open(path).read()
    with open(path, "w") as f:
        f.write(text.replace(f"- {FAIL}\n", ""))
    assert gpuspec_cli.main(["retry", prod, FAIL]) == 0
    capsys.readouterr()
    con = sqlite3.connect(db_path(prod))
    errors = dict(con.execute("SELECT name, error FROM tasks WHERE state='failed'"))
    con.close()
    # everything still failed is failed because of `other` (or is `other`)
    assert other in errors
    assert all(n == other or e == f"dependency {other} failed" for n, e in errors.items())
    assert {n for n, s in before.items() if s == "failed" and n != FAIL} >= set(errors)
    assert "frame-z0-00000001" in errors and "frame-b1-00000002" not in errors


def test_run_claim(tmp_path):
    from gpuspec.launch.db import RunActive, StateDB

    with StateDB(str(tmp_path / "s.sqlite3")) as db:
        assert db.active_run() is None
        db.claim_run("me")
        assert db.active_run() is None  # our own claim does not block us
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        db.set_meta(active_run=dict(host=os.uname().nodename, pid=dead.pid, start=0, what="x"))
        assert db.active_run() is None  # killed run on this host: stale
        db.set_meta(active_run=dict(host="elsewhere", pid=1, start=0, what="gpuspec-run m"))
        with pytest.raises(RunActive, match="elsewhere"):
            db.claim_run("me")
        db.claim_run("me", force=True)
        db.release_run()
        assert db.get_meta("active_run") is None


def test_registry_by_module_attribute(inputs, tmp_path, capsys):
    path = _manifest(tmp_path, inputs)
    text = open(path).read()
    with open(path, "w") as f:
        f.write(text.replace("registry: toy", "registry: gpuspec.launch.toy:TOY"))
    assert run_cli.main([path, "--dry-run"]) == 0
    assert "(registry toy)" in capsys.readouterr().out
    with open(path, "w") as f:
        f.write(text.replace("registry: toy", "registry: gpuspec.no_such_module:REG"))
    assert run_cli.main([path]) == 2
    assert "gpuspec.no_such_module" in capsys.readouterr().err
    # a registry whose step module is missing: clear error, nothing runs
    with open(path, "w") as f:
        f.write(text.replace("registry: toy", "registry: tests.test_launch_run:BROKEN"))
    sys.path.insert(0, REPO)
    try:
        assert run_cli.main([path]) == 2
    finally:
        sys.path.remove(REPO)
    err = capsys.readouterr().err
    assert "step 'coadd' cannot run" in err and "gpuspec.coadd_not_built_yet" in err
    assert not os.path.exists(db_path(str(tmp_path / "prod")))


def _broken_registry():
    from gpuspec.launch.registry import Registry, StepSpec
    from gpuspec.launch.toy import TOY

    steps = dict(TOY.steps)
    steps["coadd"] = StepSpec("gpuspec.coadd_not_built_yet:coadd_task")
    return Registry("broken", steps, ext="json")


BROKEN = _broken_registry()


@pytest.mark.slow
def test_allow_missing_groups_what_is_available(inputs, tmp_path, capsys):
    """Coadd what is available: the pixels fed by a failed frame are made from the others."""
    path = _manifest(tmp_path, inputs, fail_tasks=[FAIL], allow_missing=True)
    prod = str(tmp_path / "prod")
    assert run_cli.main([path, "-q"]) == 1  # the failed extraction and its frame remain
    states = _states(prod)
    assert {n for n, s in states.items() if s == "failed"} == {FAIL, "frame-b1-00000002"}
    fed = sorted(p for p, members in _expected_pixels(inputs).items() if (2, 1) in members)
    assert fed
    m = load_manifest(path)
    tasks = {t.name: t for t in build_graph(m, "json")}
    for p in fed:
        with open(tasks[f"group-{p}"].outputs[0]) as f:
            sp = json.load(f)
        assert sp["missing"] == ["frame-b1-00000002.json"]
        assert not any(r[1] == 2 and r[2] == "b1" for r in sp["rows"])
        assert any(r[1] == 2 and r[2] == "r1" for r in sp["rows"])
    con = sqlite3.connect(db_path(prod))
    warned = dict(con.execute("SELECT name, warning FROM tasks WHERE warning IS NOT NULL "
                              "AND state = 'done'"))
    con.close()
    assert set(warned) == {f"{s}-{p}" for p in fed for s in ("group", "coadd")}
    assert all("frame-b1-00000002" in warned[f"group-{p}"] for p in fed)
    assert all(f"group-{p}" in warned[f"coadd-{p}"] for p in fed)
    capsys.readouterr()
    assert gpuspec_cli.main(["status", prod, "--once"]) == 0
    c = _parse_status(capsys.readouterr().out)
    assert c["group"]["warned"] == c["coadd"]["warned"] == len(fed)
    assert gpuspec_cli.main(["tasks", prod, "--warnings", "--names"]) == 0
    assert set(capsys.readouterr().out.split()) == set(warned)
    # strict is the default: the same failure fails those pixels
    strict = _manifest(tmp_path, inputs, name="strict", fail_tasks=[FAIL])
    assert run_cli.main([strict, "-q"]) == 1
    st = _states(str(tmp_path / "strict"))
    assert all(st[f"group-{p}"] == "failed" for p in fed)


def test_unknown_options_does_not_swallow_errors():
    """Issue 15: an exception in the option check used to switch the check off."""
    from gpuspec.launch.registry import Registry, StepSpec
    from gpuspec.launch.toy import TOY

    reg = Registry("x", {"coadd": StepSpec(TOY.steps["coadd"].func,
                                           ("gpuspec.no_such_module:coadd_file",))})
    with pytest.raises(ModuleNotFoundError):
        reg.unknown_options("coadd", {"spectroperf": True})
    ok = Registry("y", {"coadd": StepSpec(TOY.steps["coadd"].func,
                                          ("gpuspec.coadd:coadd_file",))})
    assert ok.unknown_options("coadd", {"spectroperf": True, "spectroperff": 1}) == ["spectroperff"]
    # a function taking **kwargs passes its options on to the next of `needs`
    pre = Registry("z", {"preproc": StepSpec(TOY.steps["preproc"].func,
                                             ("gpuspec.preproc:preproc_file",
                                              "gpuspec.preproc:preproc"))})
    assert pre.unknown_options("preproc", {"cosmics_nsig": 5, "nogain": True, "cosmic": 1}) == \
        ["cosmic"]
