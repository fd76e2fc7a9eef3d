"""``gpuspec status`` / ``tasks`` / ``retry`` and Ctrl-C, without any dependence on timing.

A run is held in the middle by the ``GATED`` registry (tests/launch_gated.py):
one task waits for a file the test creates, so the test looks at a production
whose state is known exactly (the waits below are generous deadlines, never
timing assertions).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from gpuspec import cli as gpuspec_cli
from gpuspec.launch import cli as run_cli
from gpuspec.launch.db import StateDB, db_path
from gpuspec.launch.graph import build_graph
from gpuspec.launch.manifest import load_manifest
from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text
from test_launch_run import _parse_status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATE = "extract-b0-00000001-b00-01"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_toy_inputs(str(tmp_path_factory.mktemp("toyin")))


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                GPUSPEC_NO_GPU="1")


def _manifest(tmp_path, inputs, registry="tests.launch_gated:GATED", **kw):
    path = tmp_path / "m.yaml"
    text = toy_manifest_text(inputs, str(tmp_path / "prod"), **kw)
    path.write_text(text.replace("registry: toy", f"registry: {registry}"))
    return str(path), str(tmp_path / "prod")


def _state(prod, name):
    if not os.path.exists(db_path(prod)):
        return None
    con = sqlite3.connect(db_path(prod))
    try:
        r = con.execute("SELECT state FROM tasks WHERE name = ?", (name,)).fetchone()
        return None if r is None else r[0]
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()


def _gpuspec(*args):
    return subprocess.run([sys.executable, "-m", "gpuspec.cli", *args], env=_env(),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_status_during_a_held_run(inputs, tmp_path):
    path, prod = _manifest(tmp_path, inputs)
    with open(prod + ".gate", "w") as f:
        f.write(GATE)
    ntasks = len(build_graph(load_manifest(path), "json"))
    npre = sum(t.step == "preproc" for t in build_graph(load_manifest(path), "json"))
    run = subprocess.Popen([sys.executable, "-m", "gpuspec.launch.cli", path, "-q"],
                           env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    live = None
    try:
        deadline = time.time() + 120
        while _state(prod, GATE) != "running":
            assert run.poll() is None and time.time() < deadline, run.communicate()[0]
            time.sleep(0.05)
        # the run is held inside GATE: the state is exactly known
        r = _gpuspec("status", prod, "--once")
        assert r.returncode == 0, r.stderr
        c = _parse_status(r.stdout)["total"]
        assert (c["total"], c["running"], c["done"], c["failed"]) == (ntasks, 1, npre, 0)
        assert "running (1):" in r.stdout and GATE in r.stdout.split("running (1):")[1]
        # the manifest path names the production too
        r2 = _gpuspec("status", path, "--once")
        assert r2.returncode == 0 and _parse_status(r2.stdout)["total"]["running"] == 1
        # a second writer is refused while the run is alive
        r = subprocess.run([sys.executable, "-m", "gpuspec.launch.cli", path], env=_env(),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "is being written by" in r.stderr, r.stderr
        r = _gpuspec("retry", prod, "preproc-b0-00000001")
        assert r.returncode != 0 and "is being written by" in r.stderr, r.stderr
        # live status into a pipe: no screen codes; it ends by itself when the run ends
        live = subprocess.Popen([sys.executable, "-m", "gpuspec.cli", "status", prod,
                                 "--interval", "0.2"], env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        open(prod + ".go", "w").close()
        assert run.wait(timeout=120) == 0
        out, err = live.communicate(timeout=120)
        assert live.returncode == 0, err
    finally:
        for p in (run, live):
            if p is not None and p.poll() is None:
                p.kill()
    assert "\033[" not in out
    assert out.count("step ") >= 1 and _parse_status(out)["total"]["done"] == ntasks


@pytest.mark.slow
def test_status_exits_on_a_finished_production_and_no_screen_codes_in_a_pipe(
        inputs, tmp_path, capsys, monkeypatch):
    import gpuspec.launch.status as st

    path, prod = _manifest(tmp_path, inputs, registry="toy")
    assert run_cli.main([path, "-q"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(st.time, "sleep", lambda s: pytest.fail("status waited on a "
                                                                  "finished production"))
    assert gpuspec_cli.main(["status", prod]) == 0  # no --once: exits at once
    out = capsys.readouterr().out
    assert "\033[" not in out and _parse_status(out)["total"]["done"] > 0
    assert "no run is writing this production" in out


def test_status_live_redraws_while_a_run_is_active(inputs, tmp_path, capsys, monkeypatch):
    import gpuspec.launch.status as st

    path, prod = _manifest(tmp_path, inputs, registry="toy")
    assert run_cli.main([path, "--dry-run"]) == 0
    from gpuspec.launch.plan import load_plan

    load_plan(path)  # planned: every task waiting or ready
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with StateDB(db_path(prod)) as db:  # a live writer (another process of this host)
            db.set_meta(active_run=dict(host=os.uname().nodename, pid=other.pid, start=0,
                                        what="gpuspec-run m"))
        calls = []

        def fake_sleep(s):
            calls.append(s)
            if len(calls) == 2:
                raise KeyboardInterrupt

        monkeypatch.setattr(st.time, "sleep", fake_sleep)
        capsys.readouterr()
        monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
        assert gpuspec_cli.main(["status", prod, "--interval", "0.5"]) == 0
        tty = capsys.readouterr().out
        monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
        calls.clear()
        assert gpuspec_cli.main(["status", prod, "--interval", "0.5"]) == 0
        pipe = capsys.readouterr().out
    finally:
        other.kill()
        other.wait()
    assert tty.count("\033[H\033[2J") == 2
    assert "\033[" not in pipe and pipe.count("step ") == 2 and calls == [0.5, 0.5]


@pytest.mark.slow
def test_tasks_unknown_step_is_an_error(inputs, tmp_path, capsys):
    path, prod = _manifest(tmp_path, inputs, registry="toy")
    assert run_cli.main([path, "-q"]) == 0
    capsys.readouterr()
    assert gpuspec_cli.main(["tasks", prod, "--step", "extrct"]) != 0
    err = capsys.readouterr().err
    assert "unknown step 'extrct'" in err and "extract" in err
    assert gpuspec_cli.main(["tasks", path, "--step", "extract", "--names"]) == 0
    names = capsys.readouterr().out.split()
    assert names and all(n.startswith("extract-") for n in names)


def test_ctrl_c_no_traceback_and_task_not_left_running(inputs, tmp_path, capsys):
    path, prod = _manifest(tmp_path, inputs, registry="tests.launch_gated:INTERRUPTING")
    sys.path.insert(0, REPO)
    try:
        assert run_cli.main([path, "-q"]) == 130
    finally:
        sys.path.remove(REPO)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted" in err
    con = sqlite3.connect(db_path(prod))
    row = con.execute("SELECT state, error FROM tasks WHERE name = 'preproc-b0-00000001'"
                      ).fetchone()
    nrunning = con.execute("SELECT COUNT(*) FROM tasks WHERE state = 'running'").fetchone()[0]
    con.close()
    assert row[0] == "failed" and "interrupted" in row[1] and nrunning == 0
    with StateDB(db_path(prod), readonly=True) as db:
        assert db.get_meta("active_run") is None  # the claim is released
    with open(os.path.join(prod, "run", "logs", "preproc", "preproc-b0-00000001.log")) as f:
        assert "interrupted (KeyboardInterrupt)" in f.read()


def test_ctrl_c_of_retry(inputs, tmp_path, capsys):
    path, prod = _manifest(tmp_path, inputs, registry="tests.launch_gated:INTERRUPTING")
    sys.path.insert(0, REPO)
    try:
        assert run_cli.main([path, "-q"]) == 130
        capsys.readouterr()
        assert gpuspec_cli.main(["retry", prod, "preproc-b0-00000001"]) == 130
    finally:
        sys.path.remove(REPO)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted" in err
    con = sqlite3.connect(db_path(prod))
    state = con.execute("SELECT state FROM tasks WHERE name = 'preproc-b0-00000001'").fetchone()
    con.close()
    assert state[0] == "failed"
