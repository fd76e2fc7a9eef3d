"""Pictures of the performance history: ratios against the references over commits.

Used by ``perf/report.py`` (which regenerates ``docs/performance.md``). Input:
the records of ``perf/results/*.jsonl`` (``perf.protocol.load``: dicts with
``benchmark``, ``case``, ``backend``, ``threads``, ``device``, ``git_commit``,
``date_utc``, ``reference`` {``ratio``, ``seconds``}, ``extra``). Commits are
placed in the order of their first record; every record is a point (several
runs of one commit show their spread). GPU (cupy) results are drawn with stars.
"""

from __future__ import annotations

from .mpl import new_figure, note, pyplot

__all__ = ["plot_perf_history", "commit_order"]


def _commit(r) -> str:
    c = r.get("git_commit") or "unknown"
    return c[:8] + ("+" if c.endswith("+dirty") else "")


def commit_order(records) -> list:
    """Short commit labels in the order of their first record (records sorted by date).

    Backends: host only (plain values).
    """
    seen: dict = {}
    for r in sorted(records, key=lambda r: r.get("date_utc", "")):
        seen.setdefault(_commit(r), r.get("date_utc", "")[:10])
    return list(seen.items())


def _series(ax, recs, key, xpos, value):
    pyplot()
    from matplotlib import colormaps

    groups: dict = {}
    for r in recs:
        groups.setdefault(key(r), []).append(r)
    cmap = colormaps["tab20"]
    for i, (k, rs) in enumerate(sorted(groups.items())):
        gpu = any(r["backend"] == "cupy" for r in rs)
        xs = [xpos[_commit(r)] for r in rs]
        ys = [value(r) for r in rs]
        ax.plot(xs, ys, marker="*" if gpu else "o", ms=9 if gpu else 4, lw=1.6 if gpu else 0.9,
                color=cmap(i % 20), label=k)
    return len(groups)


def _plain_log_labels(ax) -> None:
    """Tick labels of a log axis as plain numbers (0.5, 2, 10) instead of 2×10⁰."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_locator(LogLocator(subs=(2, 5)))
    ax.yaxis.set_minor_formatter(fmt)


def plot_perf_history(records, title: str = "gpuspec performance history"):
    """Two panels over commits: reference ratio per case, and end-to-end frames per device-hour.

    Parameters
    ----------
    records : list of dict
        Perf records (``perf.protocol.load``).

    Returns
    -------
    matplotlib.figure.Figure
        Data axes: ratio vs reference, end-to-end throughput.

    Backends: host only (matplotlib).
    """
    commits = commit_order(records)
    xpos = {c: i for i, (c, _) in enumerate(commits)}
    fig = new_figure(13, 9.5, title)
    ax_r = fig.add_subplot(2, 1, 1)
    ax_e = fig.add_subplot(2, 1, 2, sharex=ax_r)
    # the fair comparison: numpy on 1 thread (the references' setting), and every GPU result
    ref = [r for r in records if (r.get("reference") or {}).get("seconds")
           and (r.get("reference") or {}).get("ratio")
           and (r["backend"] == "cupy" or str(r.get("threads")) == "1")]
    if ref:
        n = _series(ax_r, ref, lambda r: f"{r['case']}" + (" GPU" if r["backend"] == "cupy"
                                                            else ""), xpos,
                    lambda r: r["reference"]["ratio"])
        ax_r.set_yscale("log")
        ax_r.axhline(1.0, color="k", lw=0.8, ls="--", label="= reference speed")
        ax_r.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7,
                    ncol=1 if n < 18 else 2)
        ax_r.set_ylabel("reference time / gpuspec time\n(> 1: gpuspec faster; log scale)")
    else:
        note(ax_r, "no record with a reference timing yet")
    gpu = any(r["backend"] == "cupy" for r in records)
    ax_r.set_title("gpuspec vs specter / desispec on the reference cases: numpy on 1 thread "
                   "(the references' setting)" + (", GPU: stars" if gpu else
                                                  "; no GPU result yet"), loc="left")
    ax_r.tick_params(labelbottom=False)
    _plain_log_labels(ax_r)
    e2e = [r for r in records if r.get("benchmark") == "e2e" and
           (r.get("extra") or {}).get("frames500_per_device_hour")]
    if e2e:
        _series(ax_e, e2e, lambda r: f"e2e {r['size']} {r['backend']} t={r['threads']} "
                                     f"on {r['device']}", xpos,
                lambda r: r["extra"]["frames500_per_device_hour"])
        # the published anchor travels in the records (perf/protocol.py is its home)
        gs = next((r["reference"]["frames_per_gpu_hour"] for r in reversed(e2e)
                   if (r.get("reference") or {}).get("frames_per_gpu_hour")), None)
        if gs:
            ax_e.axhline(gs, color="#c0392b", lw=1, ls="--",
                         label=f"gpu_specter: {gs:.0f} per A100-hour (published)")
        ax_e.set_yscale("log")
        ax_e.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7)
        ax_e.set_ylabel("500-fiber frames per device-hour\n(log scale)")
        _plain_log_labels(ax_e)
    else:
        note(ax_e, "no end-to-end record yet")
    ax_e.set_title("end to end (preproc + extraction), files to files", loc="left")
    ax_e.set_xticks(range(len(commits)), [f"{c}\n{d}" for c, d in commits], fontsize=7)
    ax_e.set_xlim(-0.5, max(len(commits) - 0.5, 0.5))
    ax_e.set_xlabel("commit (+: uncommitted changes) and date")
    return fig
