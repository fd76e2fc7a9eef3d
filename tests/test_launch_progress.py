"""Progress lines: on the launcher's stdout (never in task logs), with an ETA, counting the running task.

Issue 13 bugs 2 and 3: under MPI the scheduler thread's lines went into the
task logs (the per-task stdout redirect captured them); one process always
reported ``0 running``.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys

import pytest

from gpuspec.launch import cli as run_cli
from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(r"^gpuspec-run \[\s*[\d.]+s\] (\d+)/(\d+) done, (\d+) running, (\d+) failed")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_toy_inputs(str(tmp_path_factory.mktemp("toyin")))


def _manifest(tmp_path, inputs, **kw):
    path = tmp_path / "m.yaml"
    path.write_text(toy_manifest_text(inputs, str(tmp_path / "prod"), **kw))
    return str(path), str(tmp_path / "prod")


def _logs_text(prod):
    out = ""
    for p in glob.glob(os.path.join(prod, "run", "logs", "*", "*.log")):
        with open(p) as f:
            out += f.read()
    return out


@pytest.mark.slow
def test_one_process_counts_the_running_task_and_gives_an_eta(inputs, tmp_path, capsys):
    path, prod = _manifest(tmp_path, inputs, progress_interval=1e-9)
    assert run_cli.main([path]) == 0
    lines = [m.groups() for m in map(LINE.match, capsys.readouterr().out.splitlines()) if m]
    assert lines
    # a line is printed as each task starts: exactly one task is running then
    assert any(int(r) == 1 for _, _, r, _ in lines)
    assert all(int(r) <= 1 for _, _, r, _ in lines)
    assert "gpuspec-run [" not in _logs_text(prod)


@pytest.mark.slow
def test_eta_in_progress_lines(inputs, tmp_path, capsys):
    path, prod = _manifest(tmp_path, inputs, progress_interval=1e-9)
    assert run_cli.main([path]) == 0
    text = capsys.readouterr().out
    body = [ln for ln in text.splitlines() if LINE.match(ln)]
    mid = [ln for ln in body if not ln.split("] ")[1].startswith(("58/58", "0/58"))]
    assert mid and all(re.search(r"; ETA (\d+s|\d+m\d\ds|\d+h\d\dm|-)$", ln) for ln in mid)
    assert body[-1].split("] ")[1].startswith("58/58") and "ETA" not in body[-1]  # finished


@pytest.mark.mpi
@pytest.mark.slow
def test_mpi_progress_on_stdout_with_eta_not_in_task_logs(inputs, tmp_path):
    path, prod = _manifest(tmp_path, inputs, progress_interval=0.2, sleep=0.1)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GPUSPEC_NO_GPU="1")
    r = subprocess.run(["mpiexec", "-n", "3", sys.executable, "-m", "gpuspec.launch.cli", path],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    body = [ln for ln in r.stdout.splitlines() if LINE.match(ln)]
    # 58 tasks x 0.1 s on 3 ranks: at least ~2 s of run, lines every 0.2 s in between
    mid = [ln for ln in body if "; ETA " in ln]
    assert len(mid) >= 3, r.stdout
    assert any(int(LINE.match(ln).group(3)) >= 2 for ln in mid)  # tasks running on 2+ ranks
    assert "3 MPI ranks" in r.stdout
    assert "gpuspec-run [" not in _logs_text(prod)
