"""matplotlib, imported lazily with the Agg backend, and the drawing helpers every QA picture uses.

The core of gpuspec never imports matplotlib: it is the optional ``qa`` extra
(``pip install 'gpuspec[qa]'``). :func:`pyplot` imports it on first use, forces
the non-interactive Agg backend (no display is needed; Slurm nodes have none)
and raises :class:`MissingDependencyError` with the install command when it is
absent.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import GpuspecError

__all__ = ["MissingDependencyError", "pyplot", "new_figure", "save_figure", "robust_range",
           "asinh_norm", "asinh_ticks", "data_axes", "integer_ticks", "BAND_COLORS", "STATE_COLORS", "note"]

#: line colours of the spectrograph arms (blue, red, near-infrared)
BAND_COLORS = {"b": "#1f5fbf", "r": "#c0392b", "z": "#6d2c91", "brz": "#333333"}
#: colours of the task states of a production (gpuspec.launch.db.STATES)
STATE_COLORS = {"done": "#2e8b57", "failed": "#c0392b", "running": "#e67e22",
                "ready": "#3b7dd8", "waiting": "#b0b0b0"}


class MissingDependencyError(GpuspecError, ImportError):
    """matplotlib (the ``qa`` extra) is not installed."""


_PLT = None


def pyplot():
    """``matplotlib.pyplot`` with the Agg backend (imported once, on first use).

    Raises
    ------
    MissingDependencyError
        matplotlib is not installed: ``pip install 'gpuspec[qa]'``.

    Backends: host only (matplotlib).
    """
    global _PLT
    if _PLT is None:
        try:
            import matplotlib
        except ImportError as exc:
            raise MissingDependencyError(
                "QA pictures need matplotlib, which is not installed: install gpuspec[qa] "
                "(pip install 'gpuspec[qa]')") from exc
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "font.size": 9,
                             "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
                             "axes.grid": False, "image.origin": "lower"})
        _PLT = plt
    return _PLT


def new_figure(width: float, height: float, title: str | None = None):
    """A new figure (inches) with a suptitle; the caller lays out the axes.

    Backends: host only (matplotlib).
    """
    plt = pyplot()
    fig = plt.figure(figsize=(width, height), layout="constrained")
    if title:
        fig.suptitle(title, fontsize=11, fontweight="bold")
    return fig


def save_figure(fig, path: str) -> str:
    """Write ``fig`` as PNG to ``path`` atomically (temporary name, then rename); close it.

    Backends: host only (matplotlib).
    """
    from ..io.util import atomic_output

    plt = pyplot()
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return os.fspath(path)


def data_axes(fig) -> list:
    """The axes of ``fig`` that hold data (colour bars excluded).

    Backends: host only (matplotlib).
    """
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


def robust_range(values, lo: float = 0.5, hi: float = 99.5, pad: float = 0.08,
                 max_samples: int = 400_000):
    """(vmin, vmax) from percentiles of the finite ``values``, padded by ``pad`` of the span.

    Large arrays are subsampled (regular stride) for speed. Returns (0, 1) when
    there is no finite value. Host (NumPy) arrays.

    Backends: host only (NumPy).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size > max_samples:
        v = v[:: v.size // max_samples + 1]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    if not b > a:
        a, b = a - 0.5 * max(abs(a), 1.0), b + 0.5 * max(abs(b), 1.0)
    span = b - a
    return float(a - pad * span), float(b + pad * span)


def asinh_norm(values, good=None, max_samples: int = 400_000):
    """An arcsinh colour stretch for an image: linear within a few noise σ, logarithmic above.

    The background level and noise are the median and 1.4826·MAD of the (good)
    pixels; the stretch is linear within ±3σ of zero and compresses bright
    traces and cosmics logarithmically up to the 99.95th percentile.

    Returns
    -------
    matplotlib.colors.AsinhNorm

    Backends: host only (matplotlib).
    """
    pyplot()
    from matplotlib.colors import AsinhNorm

    v = np.asarray(values, dtype=np.float64)
    if good is not None:
        v = v[np.asarray(good, dtype=bool)]
    v = v.ravel()
    if v.size > max_samples:
        v = v[:: v.size // max_samples + 1]
    v = v[np.isfinite(v)]
    if v.size == 0:
        return AsinhNorm(linear_width=1.0, vmin=0.0, vmax=1.0)
    med = float(np.median(v))
    sig = 1.4826 * float(np.median(np.abs(v - med)))
    top = float(np.percentile(v, 99.95))
    if not sig > 0:
        sig = max(abs(top - med) / 100.0, 1e-6)
    vmin = med - 3.0 * sig
    vmax = max(top, med + 10.0 * sig)
    return AsinhNorm(linear_width=3.0 * sig, vmin=vmin, vmax=vmax)


def asinh_ticks(norm) -> list:
    """Readable colour-bar ticks of an :func:`asinh_norm`: 0 and powers of ten up to vmax.

    Backends: host only (NumPy).
    """
    lw = float(norm.linear_width)
    lo, hi = float(norm.vmin), float(norm.vmax)
    base = 10.0 ** np.floor(np.log10(max(lw, 1e-12)))
    ticks = [0.0] if lo <= 0 <= hi else []
    t = base
    while t <= hi:
        if t >= lo:
            ticks.append(t)
        t *= 10.0
    if lo < -base:
        ticks.insert(0, -base)
    # drop ticks that would print on top of each other (closer than 7% of the bar);
    # 0 is kept, then the others by growing distance from it
    pos = dict(zip(ticks, np.atleast_1d(np.asarray(norm(np.asarray(ticks, float)), float))))
    kept: list = []
    for t in sorted(ticks, key=lambda t: (t != 0.0, abs(t))):
        if all(abs(pos[t] - pos[k]) >= 0.07 for k in kept):
            kept.append(t)
    return sorted(kept)


def integer_ticks(ax, axis: str = "x") -> None:
    """Integer-only ticks (fiber numbers, ranks) on ``axis`` of ``ax``.

    Backends: host only (matplotlib).
    """
    pyplot()
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def note(ax, text: str) -> None:
    """Write ``text`` in the middle of an empty panel (e.g. "no CHI2PIX in this file").

    Backends: host only (matplotlib).
    """
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9,
            color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
