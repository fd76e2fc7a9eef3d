"""``gpuspec report``: one static HTML page about a production, with its PNGs beside it.

:func:`write_report` reads the state database read-only (:mod:`gpuspec.qa.proddb`)
and writes ``OUT.html`` plus ``{OUT stem}-states.png``, ``-timeline.png`` and
``-throughput.png`` in the same folder. Sections: task states per step; the
timeline of the tasks per rank (idle ranks and stragglers visible); throughput
(frames per hour, tasks per hour per step); ranks with their host and device;
the slowest tasks; stragglers; failed tasks with the tail of their logs. The page
has no script and no external resource; every file is written atomically.
"""

from __future__ import annotations

import html
import os
import time

from ..launch.db import STATES
from .mpl import STATE_COLORS, save_figure
from .proddb import load_production, log_tail, stragglers, task_duration

__all__ = ["write_report", "render_html"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto;
       max-width: 1300px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.6em; overflow-x: auto;
      font-size: 0.8em; max-height: 28em; }
.meta { color: #555; font-size: 0.9em; } .bad { color: #c0392b; font-weight: bold; }
.ok { color: #2e8b57; font-weight: bold; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace, monospace; }
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _when(t) -> str:
    return "–" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _dur(s) -> str:
    if s is None:
        return "–"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def _link(path, base) -> str:
    if not path:
        return "–"
    try:
        rel = os.path.relpath(path, base)
    except ValueError:
        rel = path
    return f'<a href="{_e(rel)}">{_e(os.path.basename(path))}</a>'


def _states_table(prod) -> str:
    cols = list(STATES) + ["total"]
    head = "".join(f"<th>{c}</th>" for c in ["step"] + cols)
    rows, tot = [], {c: 0 for c in cols}
    for step, c in prod.counts.items():
        r = dict(c, total=sum(c.values()))
        for k in cols:
            tot[k] += r.get(k, 0)
        rows.append(f"<tr><td>{_e(step)}</td>" + "".join(
            f'<td class="num"{_color(k, r.get(k, 0))}>{r.get(k, 0)}</td>' for k in cols)
            + "</tr>")
    rows.append("<tr><th>total</th>" + "".join(f'<th class="num">{tot[k]}</th>' for k in cols)
                + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _color(state, n) -> str:
    if state in STATE_COLORS and n and state in ("failed", "running"):
        return f' style="color:{STATE_COLORS[state]};font-weight:bold"'
    return ""


def _rank_table(prod) -> str:
    t0, t1 = prod.t0, prod.t1
    span = (t1 - t0) if t0 is not None and t1 is not None and t1 > t0 else None
    by: dict = {}
    for t in prod.ran:
        r = by.setdefault(int(t["rank"]), {"hosts": set(), "devices": set(), "n": 0,
                                            "busy": 0.0, "failed": 0})
        r["hosts"].add(t.get("host") or "–")
        r["devices"].add(t.get("device") or "not recorded")
        r["n"] += 1
        r["failed"] += t["state"] == "failed"
        r["busy"] += task_duration(t) or 0.0
    if not by:
        return "<p>No task has run yet.</p>"
    out = ["<table><tr><th>rank</th><th>host</th><th>device</th><th>tasks run</th>"
           "<th>failed</th><th>busy</th><th>busy fraction of the run</th></tr>"]
    for rank in sorted(by):
        r = by[rank]
        frac = r["busy"] / span if span else None
        cls = ' class="num bad"' if frac is not None and frac < 0.5 else ' class="num"'
        out.append(f"<tr><td class=\"num\">{rank}</td><td>{_e(', '.join(sorted(r['hosts'])))}"
                   f"</td><td>{_e('; '.join(sorted(r['devices'])))}</td>"
                   f"<td class=\"num\">{r['n']}</td><td class=\"num\">{r['failed']}</td>"
                   f"<td class=\"num\">{_dur(r['busy'])}</td>"
                   f"<td{cls}>{'–' if frac is None else f'{100 * frac:.0f}%'}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _throughput(prod) -> str:
    t0, t1 = prod.t0, prod.t1
    if t0 is None or t1 is None or t1 <= t0:
        return "<p>No finished task yet.</p>"
    hours = (t1 - t0) / 3600.0
    done = {s: sum(1 for t in prod.ran if t["step"] == s and t["state"] == "done")
            for s in prod.steps()}
    nranks = len({int(t["rank"]) for t in prod.ran})
    frames = done.get("frame", 0)
    lines = [f"<p>Run span {_dur(t1 - t0)} (first start {_when(t0)}, last end {_when(t1)}), "
             f"{nranks} rank(s). <b>{frames / hours:.1f} frames per hour</b> ({frames} frame "
             f"tasks done; {frames / hours / max(nranks, 1):.1f} per rank-hour).</p>",
             "<table><tr><th>step</th><th>tasks done</th><th>per hour</th>"
             "<th>median duration</th><th>total task time</th></tr>"]
    for s, n in done.items():
        ds = sorted(d for t in prod.ran if t["step"] == s and t["state"] == "done"
                    and (d := task_duration(t)) is not None)
        med = ds[len(ds) // 2] if ds else None
        lines.append(f"<tr><td>{_e(s)}</td><td class=\"num\">{n}</td>"
                     f"<td class=\"num\">{n / hours:.1f}</td><td class=\"num\">{_dur(med)}</td>"
                     f"<td class=\"num\">{_dur(sum(ds))}</td></tr>")
    lines.append("</table>")
    return "".join(lines)


def _task_table(tasks, base, extra=None) -> str:
    if not tasks:
        return "<p>None.</p>"
    out = ["<table><tr><th>task</th><th>step</th><th>state</th><th>duration</th><th>rank</th>"
           "<th>host</th><th>device</th><th>start</th><th>log</th>"
           + (f"<th>{_e(extra[0])}</th>" if extra else "") + "</tr>"]
    for t in tasks:
        out.append(f"<tr><td><code>{_e(t['name'])}</code></td><td>{_e(t['step'])}</td>"
                   f"<td>{_e(t['state'])}</td><td class=\"num\">{_dur(task_duration(t))}</td>"
                   f"<td class=\"num\">{_e(t.get('rank'))}</td><td>{_e(t.get('host'))}</td>"
                   f"<td>{_e(t.get('device') or 'not recorded')}</td><td>{_when(t.get('start'))}"
                   f"</td><td>{_link(t.get('log'), base)}</td>"
                   + (f"<td>{_e(extra[1](t))}</td>" if extra else "") + "</tr>")
    out.append("</table>")
    return "".join(out)


def _failed(prod, base, ntail) -> str:
    failed = [t for t in prod.tasks if t["state"] == "failed"]
    if not failed:
        return '<p class="ok">No failed task.</p>'
    own = [t for t in failed if not (t.get("error") or "").startswith("dependency ")]
    deps = [t for t in failed if t not in own]
    out = [f'<p class="bad">{len(failed)} failed task(s): {len(own)} failed themselves, '
           f'{len(deps)} because a dependency failed.</p>']
    for t in own:
        tail = log_tail(t.get("log"), ntail)
        out.append(f"<h3><code>{_e(t['name'])}</code></h3><p>{_e(t.get('error'))}<br>"
                   f"rank {_e(t.get('rank'))} on {_e(t.get('host'))}, device "
                   f"{_e(t.get('device') or 'not recorded')}, attempts {_e(t.get('attempts'))}; "
                   f"log {_link(t.get('log'), base)}; re-run alone: "
                   f"<code>{_e(t.get('command'))}</code></p>"
                   + (f"<pre>{_e(tail)}</pre>" if tail else "<p>(log file not found)</p>"))
    if deps:
        items = "".join(f"<li><code>{_e(t['name'])}</code>: {_e(t.get('error'))}</li>"
                        for t in deps)
        out.append(f"<details><summary>{len(deps)} task(s) failed because of a dependency"
                   f"</summary><ul>{items}</ul></details>")
    return "".join(out)


def render_html(prod, images: dict, base: str, nslow: int = 15, ntail: int = 30) -> str:
    """The page (a string) for ``prod``; ``images`` maps a section to its PNG file name.

    Backends: host only (plain values).
    """
    ntask = len(prod.tasks)
    ran = [t for t in prod.ran if task_duration(t) is not None]
    slowest = sorted(ran, key=lambda t: -task_duration(t))[:nslow]
    slow = stragglers(prod)
    active = prod.meta.get("active_run")
    recorded = any(t.get("device") for t in prod.ran)

    def img(key, alt):
        return (f'<p><img src="{_e(images[key])}" alt="{_e(alt)}"></p>' if key in images
                else "")

    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>gpuspec report: {_e(os.path.basename(prod.path.rstrip(os.sep)))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Production report: <code>{_e(prod.path)}</code></h1>",
        f'<p class="meta">Generated {_when(time.time())} by <code>gpuspec report</code> from '
        f"<code>{_e(prod.db)}</code> (read-only). {ntask} tasks; manifest "
        f"<code>{_e(prod.meta.get('manifest_path') or '–')}</code>; registry "
        f"<code>{_e(prod.meta.get('registry') or '–')}</code>; last plan "
        f"{_when(prod.meta.get('planned'))}."
        + (f' <span class="bad">A run is writing this production now ({_e(active.get("what"))}, '
           f'pid {_e(active.get("pid"))} on {_e(active.get("host"))}).</span>' if active else "")
        + "</p>",
        "<h2>Task states per step</h2>", img("states", "task states per step"),
        _states_table(prod),
        "<h2>Timeline of the tasks per rank</h2>",
        "<p>One bar per task (its last attempt), coloured by step; hatched red: failed; "
        "outlined black: stragglers. The right margin gives each rank's busy fraction.</p>",
        img("timeline", "timeline of the tasks per rank"),
        "<h2>Throughput</h2>", _throughput(prod), img("throughput", "throughput over time"),
        "<h2>Ranks and devices</h2>", _rank_table(prod)
        + ("" if recorded else "<p>No device is recorded for these tasks.</p>"),
        f"<h2>Slowest tasks (top {nslow})</h2>", _task_table(slowest, base),
        "<h2>Stragglers</h2>",
        "<p>Done tasks slower than twice the median of their step, than the median + 5 "
        "robust σ, and than the median + max(1 s, 2% of the run) (steps with at least 4 "
        "tasks).</p>",
        _task_table(slow, base),
        "<h2>Failed tasks</h2>", _failed(prod, base, ntail),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_report(prod: str, out: str) -> str:
    """Write the HTML report of production ``prod`` to ``out``, its PNGs beside it.

    Parameters
    ----------
    prod : str
        Production folder (with ``run/state.sqlite3``), or the database file.
    out : str
        HTML file to write (e.g. ``PROD/report.html``); the pictures are
        ``{stem}-states.png``, ``{stem}-timeline.png`` and ``{stem}-throughput.png``
        in the same folder.

    Returns
    -------
    str
        ``out``.

    Raises
    ------
    gpuspec.errors.MissingFileError
        No state database.
    gpuspec.qa.mpl.MissingDependencyError
        matplotlib is not installed (``pip install 'gpuspec[qa]'``).

    Backends: host only (matplotlib; file I/O).
    """
    from ..io.util import atomic_output
    from .prodplots import plot_states, plot_throughput, plot_timeline

    p = load_production(prod)
    out = os.path.abspath(os.fspath(out))
    base = os.path.dirname(out)
    stem = os.path.splitext(os.path.basename(out))[0]
    now = time.time()
    images = {}
    for key, fn in (("states", plot_states), ("timeline", lambda q: plot_timeline(q, now)),
                    ("throughput", lambda q: plot_throughput(q, now))):
        name = f"{stem}-{key}.png"
        save_figure(fn(p), os.path.join(base, name))
        images[key] = name
    text = render_html(p, images, base)
    with atomic_output(out) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return out
