"""Pictures of a production's run: task states, timeline per rank, throughput.

Inputs are :class:`gpuspec.qa.proddb.Production` (read-only from the state
database). Times are seconds since the first task started; the timeline shows
the last attempt of each task (the database keeps one start/end per task).
"""

from __future__ import annotations

import time

import numpy as np

from ..launch.db import STATES
from .mpl import STATE_COLORS, integer_ticks, new_figure, note
from .proddb import stragglers, task_duration

__all__ = ["plot_states", "plot_timeline", "plot_throughput", "step_colors"]


# step colours: tab10 without its red, which marks failures
_STEP_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22",
                 "#e377c2", "#7f7f7f")


def step_colors(steps) -> dict:
    """A colour per step, in order (never the red of failed tasks).

    Backends: host only (matplotlib).
    """
    return {s: _STEP_PALETTE[i % len(_STEP_PALETTE)] for i, s in enumerate(steps)}


def _fmt_dur(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _time_axis(span: float):
    """(divisor, unit) for a time axis of ``span`` seconds."""
    if span > 3 * 3600:
        return 3600.0, "h"
    if span > 300:
        return 60.0, "min"
    return 1.0, "s"


def plot_states(prod):
    """Stacked horizontal bars: tasks per step and state (counts written on the bars).

    Backends: host only (matplotlib).
    """
    steps = prod.steps()
    fig = new_figure(11, 1.6 + 0.55 * max(len(steps), 1), "task states per step")
    ax = fig.add_subplot()
    if not steps:
        note(ax, "no task in the database")
        return fig
    y = np.arange(len(steps))[::-1]
    left = np.zeros(len(steps))
    for state in STATES:
        n = np.array([prod.counts[s].get(state, 0) for s in steps], dtype=float)
        ax.barh(y, n, left=left, color=STATE_COLORS[state], label=state, height=0.6,
                edgecolor="white", lw=0.5)
        for yi, l0, ni in zip(y, left, n):
            if ni:
                ax.text(l0 + ni / 2, yi, f"{int(ni)}", ha="center", va="center", fontsize=8,
                        color="white" if state in ("done", "failed", "ready") else "black")
        left += n
    ax.set_yticks(y, steps)
    ax.set_xlabel("tasks")
    ax.set_xlim(0, max(left.max(), 1) * 1.02)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(STATES), frameon=False)
    return fig


def plot_timeline(prod, now: float | None = None):
    """Gantt chart of the tasks on each rank, coloured by step.

    Failed tasks are hatched with a red edge, stragglers (see
    :func:`gpuspec.qa.proddb.stragglers`) outlined in black, tasks still running
    drawn up to ``now``; the right margin gives each rank's busy fraction of the
    run, so idle ranks stand out.

    Backends: host only (matplotlib).
    """
    now = time.time() if now is None else now
    ran = prod.ran
    ranks = sorted({int(t["rank"]) for t in ran})
    nr = max(len(ranks), 1)
    fig = new_figure(13, min(2.4 + 0.34 * nr, 22), "timeline of the tasks per rank "
                     "(last attempt of each task)")
    ax = fig.add_subplot()
    if not ran:
        note(ax, "no task has run yet")
        return fig
    t0 = prod.t0
    ends = [task_duration(t, now) for t in ran]
    t1 = max(t["start"] + d for t, d in zip(ran, ends) if d is not None)
    div, unit = _time_axis(t1 - t0)
    colors = step_colors(prod.steps())
    slow = {t["name"] for t in stragglers(prod)}
    row = {r: i for i, r in enumerate(ranks)}
    busy = {r: 0.0 for r in ranks}
    groups: dict = {}  # (step, style, straggler, row) -> [(x, width)]
    for t, d in zip(ran, ends):
        if d is None:
            continue
        style = t["state"] if t["state"] in ("failed", "running") else "done"
        key = (t["step"], style, t["name"] in slow, row[int(t["rank"])])
        groups.setdefault(key, []).append(((t["start"] - t0) / div, max(d / div, 1e-9)))
        busy[int(t["rank"])] += d
    for (step, style, is_slow, ri), xr in groups.items():
        ec = "#c0392b" if style == "failed" else "black" if is_slow else "white"
        ax.broken_barh(xr, (ri - 0.4, 0.8), facecolors=colors.get(step, "0.5"), edgecolors=ec,
                       linewidth=0.6 if ec == "white" else 1.4,
                       hatch={"failed": "///", "running": ".."}.get(style))
    span = t1 - t0
    for r in ranks:
        frac = busy[r] / span if span > 0 else 1.0
        ax.text(1.005, row[r], f"{100 * frac:.0f}% busy", transform=ax.get_yaxis_transform(),
                va="center", fontsize=7, color="#c0392b" if frac < 0.5 else "0.3")
    planned = prod.meta.get("planned")
    if isinstance(planned, (int, float)) and t0 < planned < t1:
        ax.axvline((planned - t0) / div, color="0.3", ls="--", lw=0.8)
        ax.text((planned - t0) / div, nr - 0.4, " last gpuspec-run started", fontsize=7,
                va="bottom", color="0.3")
    from matplotlib.patches import Patch

    handles = [Patch(color=colors[s], label=s) for s in prod.steps()]
    handles += [Patch(fc="white", ec="#c0392b", hatch="///", label="failed"),
                Patch(fc="white", ec="black", label="straggler (≫ median of its step)")]
    if any(t["state"] == "running" for t in ran):
        handles.append(Patch(fc="white", ec="0.3", hatch="..", label="still running"))
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              ncol=min(len(handles), 8), frameon=False)
    ax.set_yticks(range(nr), [str(r) for r in ranks] if nr <= 64 else None)
    if nr > 64:
        integer_ticks(ax, "y")
    ax.set_ylim(-0.6, nr - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, span / div * 1.01 if span > 0 else 1)
    ax.set_xlabel(f"time since the first task started [{unit}]  (start "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t0))})")
    ax.set_ylabel("MPI rank")
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    return fig


def plot_throughput(prod, now: float | None = None):
    """Two panels: ranks busy over time, and tasks completed per step over time.

    Backends: host only (matplotlib).
    """
    now = time.time() if now is None else now
    fig = new_figure(13, 6.5, "throughput")
    ax_b = fig.add_subplot(2, 1, 1)
    ax_c = fig.add_subplot(2, 1, 2, sharex=ax_b)
    ran = prod.ran
    if not ran:
        note(ax_b, "no task has run yet")
        note(ax_c, "no task has run yet")
        return fig
    t0 = prod.t0
    spans = [(t["start"], t["start"] + d, t) for t in ran
             if (d := task_duration(t, now)) is not None]
    t1 = max(e for _, e, _ in spans)
    div, unit = _time_axis(t1 - t0)
    ev = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])
    x = np.array([(e[0] - t0) / div for e in ev])
    level = np.cumsum([e[1] for e in ev])
    nranks = len({int(t["rank"]) for t in ran})
    ax_b.fill_between(np.concatenate([[0], x]), np.concatenate([[0], level]), step="post",
                      color="#3b7dd8", alpha=0.6, lw=0)
    ax_b.axhline(nranks, color="0.4", ls="--", lw=0.8, label=f"{nranks} rank{'s' if nranks > 1 else ''}")
    ax_b.set_ylim(0, nranks * 1.15 + 0.5)
    ax_b.set_ylabel("tasks running")
    ax_b.set_title("ranks busy over time (gaps below the dashed line are idle ranks)", loc="left")
    ax_b.legend(loc="lower right")
    integer_ticks(ax_b, "y")
    colors = step_colors(prod.steps())
    for step in prod.steps():
        e = sorted((en - t0) / div for _, en, t in spans if t["step"] == step and
                   t["state"] == "done")
        if e:
            ax_c.step([0] + e, np.arange(len(e) + 1), where="post", color=colors[step],
                      label=f"{step} ({len(e)} done)")
    ax_c.set_ylabel("tasks done (cumulative)")
    ax_c.set_xlabel(f"time since the first task started [{unit}]")
    ax_c.set_title("tasks completed per step", loc="left")
    ax_c.legend(loc="upper left")
    ax_c.set_xlim(0, (t1 - t0) / div * 1.01 if t1 > t0 else 1)
    return fig
