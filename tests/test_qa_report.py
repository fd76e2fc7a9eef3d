"""``gpuspec report``: the HTML report of a production (issue 14).

A toy production (``gpuspec-run`` with the toy registry, one failure on purpose)
and a synthetic state database with several ranks, an idle rank, a straggler and
a running task. Checks: the page's images exist, are linked and are not blank;
log links resolve; the failed task shows its log tail; stragglers and devices are
reported; and the page renders in a real headless Chromium (skipped without it)
with every image loaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from gpuspec.cli import main as gpuspec_main  # noqa: E402

FAIL = "extract-b1-00000002-b00-01"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.hrefs, self.h2 = [], [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "a":
            self.hrefs.append(a.get("href"))
        elif tag == "h2":
            self._in_h2 = True
            self.h2.append("")

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2[-1] += data


def _parse(path):
    p = _Links()
    with open(path, encoding="utf-8") as f:
        p.feed(f.read())
    return p


def _png_ok(path):
    import matplotlib.image as mpimg

    im = mpimg.imread(path)[..., :3]
    assert np.mean(np.any(im < 0.9, axis=-1)) > 0.02 and im.std() > 0.05, path


@pytest.fixture(scope="module")
def toy_prod(tmp_path_factory):
    from gpuspec.launch import cli as run_cli
    from gpuspec.launch.toy import make_toy_inputs, toy_manifest_text

    d = tmp_path_factory.mktemp("toyreport")
    inputs = make_toy_inputs(str(d / "in"))
    m = d / "m.yaml"
    m.write_text(toy_manifest_text(inputs, str(d / "prod"), fail_tasks=[FAIL], sleep=0.01))
    assert run_cli.main([str(m), "--no-mpi", "-q"]) == 1  # one task fails on purpose
    return str(d / "prod")


@pytest.mark.slow
def test_report_images_exist_and_are_linked(toy_prod, tmp_path):
    from gpuspec.qa.report import write_report

    out = str(tmp_path / "rep" / "report.html")
    assert write_report(toy_prod, out) == out
    page = _parse(out)
    srcs = [i["src"] for i in page.imgs]
    assert srcs == ["report-states.png", "report-timeline.png", "report-throughput.png"]
    for i in page.imgs:
        assert i.get("alt")
        path = os.path.join(os.path.dirname(out), i["src"])
        assert os.path.isfile(path)
        _png_ok(path)
    assert page.h2[:4] == ["Task states per step", "Timeline of the tasks per rank",
                           "Throughput", "Ranks and devices"]
    logs = [h for h in page.hrefs if h and h.endswith(".log")]
    assert logs and all(os.path.isfile(os.path.join(os.path.dirname(out), h)) for h in logs)
    text = open(out, encoding="utf-8").read()
    assert FAIL in text and "InjectedFailure" in text  # the failed task and its log tail
    assert "Traceback (most recent call last)" in text
    assert "because a dependency failed" in text
    assert "frames per hour" in text
    assert "<script" not in text.lower()  # static page
    # no temporary file left beside the outputs
    assert sorted(os.listdir(tmp_path / "rep")) == sorted(["report.html", *srcs])


def test_report_cli_default_output_and_missing_db(toy_prod, tmp_path, capsys):
    assert gpuspec_main(["report", toy_prod]) == 0
    assert capsys.readouterr().out.strip() == os.path.join(toy_prod, "report.html")
    assert os.path.isfile(os.path.join(toy_prod, "report-timeline.png"))
    r = subprocess.run([sys.executable, "-m", "gpuspec.cli", "report", str(tmp_path / "none")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("gpuspec report: error: file ")
    assert "no state database" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _synthetic_db(prod):
    """A production of 3 ranks: rank 2 mostly idle, one straggler, one task still running."""
    from gpuspec.launch.db import StateDB, db_path

    t0 = 1_700_000_000.0
    tasks, runs = [], []
    for i in range(12):  # extract tasks of 10 s on ranks 0 and 1
        tasks.append(SimpleNamespace(name=f"extract-{i:02d}", step="extract", order=i,
                                     deps=[], outputs=[], command=f"run extract-{i:02d}"))
        r = i % 2
        runs.append((f"extract-{i:02d}", "done", r, t0 + 10 * (i // 2), 10.0))
    runs[5] = ("extract-05", "done", 1, t0 + 20, 60.0)  # the straggler
    tasks.append(SimpleNamespace(name="frame-00", step="frame", order=20, deps=[],
                                 outputs=[], command="run frame-00"))
    runs.append(("frame-00", "done", 2, t0 + 5, 3.0))
    tasks.append(SimpleNamespace(name="frame-01", step="frame", order=21, deps=[],
                                 outputs=[], command="run frame-01"))
    runs.append(("frame-01", "running", 2, t0 + 70, None))
    states = {t.name: "waiting" for t in tasks}
    with StateDB(db_path(prod)) as db:
        db.sync_tasks(tasks, states)
        for name, state, rank, start, dur in runs:
            db.update(name, state, rank=rank, host=f"node{rank // 2}",
                      device=f"NVIDIA H200 (device {rank % 2})", start=start,
                      end=None if dur is None else start + dur)
    return t0


def test_synthetic_production_stragglers_ranks_devices(tmp_path):
    from gpuspec.qa.mpl import data_axes
    from gpuspec.qa.proddb import load_production, stragglers
    from gpuspec.qa.prodplots import plot_timeline
    from gpuspec.qa.report import write_report

    prod = str(tmp_path / "prod")
    t0 = _synthetic_db(prod)
    p = load_production(prod)
    assert [t["name"] for t in stragglers(p)] == ["extract-05"]
    fig = plot_timeline(p, now=t0 + 80)
    ax = data_axes(fig)[0]
    busy = [t.get_text() for t in ax.texts if t.get_text().endswith("% busy")]
    assert len(busy) == 3
    assert busy[2] == f"{100 * (3 + 10) / 80:.0f}% busy"  # rank 2: 3 s + 10 s running of 80 s
    out = write_report(prod, str(tmp_path / "r.html"))
    text = open(out, encoding="utf-8").read()
    assert "NVIDIA H200 (device 1)" in text and "node1" in text
    straggler_section = text.split("<h2>Stragglers</h2>")[1].split("<h2>")[0]
    assert "extract-05" in straggler_section and "extract-04" not in straggler_section
    assert "running" in text


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


_HARNESS = """<!DOCTYPE html><html><body><div id="result">pending</div>
<iframe id="f" src="{page}" width="1300" height="900"></iframe>
<script>
document.getElementById("f").addEventListener("load", function () {{
  var d = this.contentDocument, imgs = d.images, bad = [], ok = 0;
  for (var i = 0; i < imgs.length; i++) {{
    if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; else bad.push(imgs[i].getAttribute("src"));
  }}
  document.getElementById("result").textContent = "images-ok=" + ok + " images-bad=" +
      bad.length + ":" + bad.join(",") + " h2=" + d.querySelectorAll("h2").length;
}});
</script></body></html>
"""


def _run_chromium(exe, profile, *args, timeout=90):
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(toy_prod, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium not installed (Debian: apt-get install -y chromium); the report "
                    "was not rendered in a browser")
    from gpuspec.qa.report import write_report

    out = write_report(toy_prod, str(tmp_path / "report.html"))
    url = "file://" + out
    # 1. the page loads and its DOM is the report
    r = _run_chromium(exe, tmp_path / "p1", "--dump-dom", url)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Production report" in r.stdout and r.stdout.count("<img") == 3
    # 2. every image of the page decodes in the browser (a harness page reads the report's
    #    DOM through an iframe; file URLs share an origin with --allow-file-access-from-files)
    (tmp_path / "harness.html").write_text(_HARNESS.format(page="report.html"))
    r = _run_chromium(exe, tmp_path / "p2", "--allow-file-access-from-files",
                      "--virtual-time-budget=10000", "--dump-dom",
                      "file://" + str(tmp_path / "harness.html"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "images-ok=3 images-bad=0:" in r.stdout, r.stdout[:500]
    assert "h2=7" in r.stdout
    # 3. a screenshot that is not blank
    shot = tmp_path / "shot.png"
    r = _run_chromium(exe, tmp_path / "p3", "--window-size=1300,2400", f"--screenshot={shot}",
                      url)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    _png_ok(str(shot))
