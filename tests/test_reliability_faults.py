"""Fault injection (docs/reliability.md): processes killed, a corrupt database, a full disk.

Marked ``slow`` (CI runs them: ``.ci/run``); the MPI ones are marked ``mpi`` too and
run under ``mpiexec -n 3``. Every scenario ends with a resume whose products are
byte-identical to those of an uninterrupted production, and without leftovers.
Only processes of the session each test starts are ever signalled.
"""

from __future__ import annotations

import glob
import hashlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import reliability_world as W

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from gpuspec.launch.toy import make_toy_inputs

    return make_toy_inputs(str(tmp_path_factory.mktemp("faultin")))


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory):
    t = tmp_path_factory.mktemp("faultref")
    m = _manifest(toy, t)
    rc, _, err = W.run_gpuspec([m, "-q"], prog="gpuspec-run")
    assert rc == 0, err
    return _digests(str(t / "prod"))


def _manifest(toy, t, **kw):
    from gpuspec.launch.toy import toy_manifest_text

    p = t / "m.yaml"
    p.write_text(toy_manifest_text(toy, str(t / "prod"), **kw))
    return str(p)


def _digests(prod):
    out = {}
    for p in glob.glob(os.path.join(prod, "**", "*"), recursive=True):
        rel = os.path.relpath(p, prod)
        if os.path.isfile(p) and not rel.startswith("run" + os.sep):
            out[rel] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def _states(prod):
    db = os.path.join(prod, "run", "state.sqlite3")
    if not os.path.exists(db):
        return {}
    con = sqlite3.connect(db, timeout=30)
    try:
        return {n: (s, e) for n, s, e in con.execute("SELECT name, state, error FROM tasks")}
    except sqlite3.Error:
        return {}
    finally:
        con.close()


def _session(sid):
    """pid -> command line of the processes of session ``sid`` (ours only)."""
    out = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                pid = int(stat.split("/")[2])
                out[pid] = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return out


def _descendants(pid):
    """pid -> command line of every process below ``pid`` (ours only: its own tree)."""
    parent = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
            parent[int(stat.split("/")[2])] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p and c not in out:
                try:
                    out[c] = open(f"/proc/{c}/cmdline", "rb").read().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                todo.append(c)
    return out


def _start(args, mpi=False):
    cmd = (["mpiexec", "-n", "3"] if mpi else []) + [sys.executable, "-m", "gpuspec.launch.cli",
                                                     *map(str, args)]
    return subprocess.Popen(cmd, env=W.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_done(proc, prod, n, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if sum(s == "done" for s, _ in _states(prod).values()) >= n:
            return True
        time.sleep(0.05)
    return False


def _kill_session(proc, sig=signal.SIGKILL):
    tree = set(_descendants(proc.pid))
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    def alive():
        return [p for p in tree | set(_session(proc.pid)) if os.path.exists(f"/proc/{p}")
                and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]

    deadline = time.time() + 15
    while alive() and time.time() < deadline:  # ranks and task processes go too
        time.sleep(0.1)
    assert not alive(), alive()


def _resume(m, prod, reference, mpi=False):
    r = subprocess.run((["mpiexec", "-n", "3"] if mpi else []) +
                       [sys.executable, "-m", "gpuspec.launch.cli", m, "-q"], env=W.env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert {s for s, _ in _states(prod).values()} == {"done"}
    assert _digests(prod) == reference
    assert not W.leftovers(prod)
    return r


# --------------------------------------------------------------------------- task processes

@pytest.mark.mpi
def test_task_deaths_under_mpi(toy, tmp_path, reference):
    """mpiexec -n 3: tasks killed by SIGKILL and SIGSEGV fail alone with the cause; the
    production resumes to the reference once the faults are gone."""
    crash = {"preproc-z1-00000002": "SIGKILL", "extract-b0-00000001-b00-01": "SIGSEGV",
             "frame-r1-00000001": "SIGABRT"}
    m = _manifest(toy, tmp_path, crash_tasks=crash)
    prod = str(tmp_path / "prod")
    r = subprocess.run(["mpiexec", "-n", "3", sys.executable, "-m", "gpuspec.launch.cli", m,
                        "-q"], env=W.env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    st = _states(prod)
    for name, sig in crash.items():
        assert st[name][0] == "failed" and sig in st[name][1], (name, st[name])
    real = {n for n, (s, e) in st.items() if s == "failed" and not e.startswith("dependency")}
    assert real == set(crash)
    m = _manifest(toy, tmp_path)
    _resume(m, prod, reference, mpi=True)


def test_task_process_killed_from_outside(toy, tmp_path, reference):
    """kill -9 of the process running a task (what the OOM killer does): that task
    fails with SIGKILL, the run goes on to the end, a resume completes."""
    m = _manifest(toy, tmp_path, sleep=0.4)
    prod = str(tmp_path / "prod")
    p = _start([m, "-q"])
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and p.poll() is None:
        kids = [pid for pid, cmd in _session(p.pid).items() if "gpuspec.launch.isolate" in cmd]
        running = [n for n, (s, _) in _states(prod).items() if s == "running"]
        if kids and running and sum(s == "done" for s, _ in _states(prod).values()) >= 3:
            os.kill(kids[0], signal.SIGKILL)
            killed = running[0]
        time.sleep(0.05)
    assert killed is not None
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1, out + err
    assert "Traceback" not in err
    st = _states(prod)
    assert st[killed][0] == "failed" and "SIGKILL" in st[killed][1], st[killed]
    assert sum(s == "done" for s, _ in st.values()) >= len(st) - 12  # the others went on
    _resume(m, prod, reference)


# --------------------------------------------------------------------------- kills and resume

@pytest.mark.mpi
@pytest.mark.parametrize("after", [1, 12, 30, 50])
def test_mpi_killed_at_several_points_resumes_identical(toy, tmp_path, reference, after):
    """SIGKILL of the whole mpiexec -n 3 job after ``after`` tasks are done (during
    preproc, extraction, frames, the healpix steps); the same command resumes it to the
    reference, byte for byte, without leftovers of the interrupted writes."""
    m = _manifest(toy, tmp_path, sleep=0.15)
    prod = str(tmp_path / "prod")
    p = _start([m, "-q"], mpi=True)
    assert _wait_done(p, prod, after), p.communicate()
    _kill_session(p)
    st = _states(prod)
    assert st and set(s for s, _ in st.values()) != {"done"}
    r = _resume(m, prod, reference, mpi=True)


@pytest.mark.mpi
def test_mpi_one_rank_killed(toy, tmp_path, reference):
    """SIGKILL of one worker rank: the job ends (mpiexec stops the others), nothing is
    left running, and a resume completes to the reference."""
    m = _manifest(toy, tmp_path, sleep=0.15)
    prod = str(tmp_path / "prod")
    p = _start([m, "-q"], mpi=True)
    assert _wait_done(p, prod, 8), p.communicate()
    ranks = sorted(pid for pid, cmd in _descendants(p.pid).items()
                   if "gpuspec.launch.cli" in cmd and "mpiexec" not in cmd)
    assert len(ranks) >= 3, _descendants(p.pid)
    os.kill(ranks[-1], signal.SIGKILL)
    try:
        p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the job hung after one rank was killed")
    _kill_session(p)
    _resume(m, prod, reference, mpi=True)


@pytest.mark.mpi
def test_mpi_sigterm_records_interrupted_tasks(toy, tmp_path, reference):
    """SIGTERM (a batch system's time limit) to the job: running tasks are recorded as
    interrupted, not left running; a resume completes."""
    m = _manifest(toy, tmp_path, sleep=0.3)
    prod = str(tmp_path / "prod")
    p = _start([m, "-q"], mpi=True)
    assert _wait_done(p, prod, 10), p.communicate()
    os.killpg(p.pid, signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert "Traceback" not in err, err
    _kill_session(p)
    _resume(m, prod, reference, mpi=True)


# --------------------------------------------------------------------------- the database

@pytest.mark.mpi
def test_corrupt_database_mid_production_under_mpi(toy, tmp_path, reference):
    """The job killed, then the first page of its database overwritten with garbage: the
    resume says so, moves the file aside, rebuilds the state from the products."""
    m = _manifest(toy, tmp_path, sleep=0.1)
    prod = str(tmp_path / "prod")
    p = _start([m, "-q"], mpi=True)
    assert _wait_done(p, prod, 20), p.communicate()
    _kill_session(p)
    db = os.path.join(prod, "run", "state.sqlite3")
    # a kill during a commit leaves a hot journal, whose rollback on the next open would
    # restore page 1 and undo the damage below: let SQLite roll it back first
    con = sqlite3.connect(db, timeout=30)
    con.execute("PRAGMA quick_check").fetchall()
    con.close()
    assert not os.path.exists(db + "-journal")
    with open(db, "r+b") as f:
        f.seek(0)
        f.write(os.urandom(4096))
    r = _resume(m, prod, reference, mpi=True)
    assert "corrupt" in r.stderr and "rebuilt" in r.stderr
    assert glob.glob(db + ".corrupt-*")


def test_database_on_a_full_disk(toy, tmp_path, reference):
    """The production on a file system that fills up during the run: one line naming the
    state database or the task outputs, never a traceback; after space is freed, the
    same command completes to the reference."""
    disk = W.small_disk(tmp_path / "disk", "8m")
    if disk is None:
        pytest.skip("cannot mount a tmpfs here (test_database_file_size_limit covers it)")
    try:
        m = _manifest(toy, tmp_path, sleep=0.05)
        text = open(m).read().replace(str(tmp_path / "prod"), os.path.join(disk, "prod"))
        open(m, "w").write(text)
        prod = os.path.join(disk, "prod")
        blocker = os.path.join(disk, "blocker")
        with open(blocker, "wb") as f:  # leave ~150 kB free: the run stops part way
            st = os.statvfs(disk)
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 150_000))
        r = subprocess.run([sys.executable, "-m", "gpuspec.launch.cli", m, "-q"], env=W.env(),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode in (1, 2), r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        if r.returncode == 2:
            line = [ln for ln in r.stderr.splitlines() if "error:" in ln][-1]
            assert "state database" in line and "full" in line, line
        else:
            errors = [e for s, e in _states(prod).values() if s == "failed"]
            assert any("space" in (e or "") for e in errors), errors
        os.remove(blocker)
        _resume(m, prod, reference)
    finally:
        W.release(tmp_path / "disk")


def test_database_file_size_limit(toy, tmp_path, reference):
    """``ulimit -f`` smaller than the state database: exit 2, one line naming it."""
    m = _manifest(toy, tmp_path)
    prod = str(tmp_path / "prod")

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    r = subprocess.run([sys.executable, "-m", "gpuspec.launch.cli", m, "-q"], env=W.env(),
                       capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    line = [ln for ln in r.stderr.splitlines() if "error:" in ln][-1]
    assert "state.sqlite3" in line, line
    _resume(m, prod, reference)
