"""QA picture of a preprocessed CCD image (``preproc-{camera}-{EXPID}.fits``).

Panels: the image with an arcsinh stretch and the amplifier boundaries; the same
image in grey with the ccdmask bits overlaid (each bit its colour, counts in the
legend; a displayed pixel shows a bit when any CCD pixel under it has it, so
single-pixel cosmics stay visible on a 4k × 4k CCD); per-amplifier overscan
level (ADU) and read noise (e⁻, measured in the overscan, with the raw header's
nominal value). Host (NumPy); a cupy image is copied to the host.
"""

from __future__ import annotations

import numpy as np

from ..maskbits import ccdmask
from .mpl import asinh_norm, asinh_ticks, new_figure, note, pyplot

__all__ = ["plot_preproc", "MASK_COLORS"]

#: display colour per ccdmask bit, in drawing priority (first wins where bits overlap)
MASK_COLORS = {
    "COSMIC": "#ff2a2a", "SATURATED": "#ffd400", "HOT": "#ff8c00", "DEAD": "#00e5ff",
    "BAD": "#2979ff", "PIXFLATZERO": "#d500f9", "PIXFLATLOW": "#f06292",
    "HIGHVAR": "#76ff03", "BADREADNOISE": "#8d6e63", "BADAMP": "#ffffff",
}

_MAX_DISPLAY = 900  # display pixels along the longer image axis


def _host(a):
    if a is None:
        return None
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _block(ny: int, nx: int) -> int:
    return max(1, int(np.ceil(max(ny, nx) / _MAX_DISPLAY)))


def _pool_any(m, k: int):
    """Block-OR of a boolean image over k × k blocks (edges padded with False)."""
    if k == 1:
        return m
    ny, nx = m.shape
    py, px = -ny % k, -nx % k
    m = np.pad(m, ((0, py), (0, px)))
    return m.reshape(m.shape[0] // k, k, m.shape[1] // k, k).any(axis=(1, 3))


def _mask_rgba(mask, k: int):
    """RGBA overlay (display resolution) and {bit name: pixel count} of a ccdmask image."""
    from matplotlib.colors import to_rgba

    ny, nx = mask.shape
    shape = (-(-ny // k), -(-nx // k), 4)
    rgba = np.zeros(shape, dtype=np.float32)
    counts = {}
    for name in reversed(list(MASK_COLORS)):  # lowest priority first, overwritten later
        hit = (mask & getattr(ccdmask, name)) != 0
        n = int(np.count_nonzero(hit))
        if n:
            counts[name] = n
            rgba[_pool_any(hit, k)] = to_rgba(MASK_COLORS[name])
    return rgba, {n: counts[n] for n in MASK_COLORS if n in counts}


def _amps(meta: dict):
    """[(amp, yslice, xslice)] from the CCDSECx keywords (empty when absent)."""
    from ..io.util import parse_sec

    out = []
    for a in "ABCD1234":
        sec = meta.get(f"CCDSEC{a}")
        if isinstance(sec, str):
            try:
                ys, xs = parse_sec(sec)
            except Exception:
                continue
            out.append((a, ys, xs))
    return out


def _draw_amps(ax, amps):
    from matplotlib.patches import Rectangle

    for a, ys, xs in amps:
        ax.add_patch(Rectangle((xs.start - 0.5, ys.start - 0.5), xs.stop - xs.start,
                               ys.stop - ys.start, fill=False, ec="white", lw=0.8, ls="--"))
        ax.text(xs.start + 0.03 * (xs.stop - xs.start), ys.start + 0.03 * (ys.stop - ys.start),
                f"amp {a}", color="white", fontsize=8, fontweight="bold",
                bbox=dict(fc="black", alpha=0.5, lw=0, pad=1))


def _amp_bars(ax, meta, prefix, nominal, ylabel, title):
    amps = [a for a in "ABCD1234" if isinstance(meta.get(prefix + a), (int, float))]
    if not amps:
        note(ax, f"no {prefix}x keywords in the header")
        ax.set_title(title)
        return
    vals = [float(meta[prefix + a]) for a in amps]
    x = np.arange(len(amps))
    if prefix == "OVERSCN":  # levels near 1000 ADU: points, not bars cut at the axis
        ax.plot(x, vals, "o", color="#4c78a8", ms=9, label="measured")
    else:
        ax.bar(x, vals, color="#4c78a8", width=0.6, label="measured")
    if nominal:
        nom = [meta.get(nominal + a) for a in amps]
        if all(isinstance(v, (int, float)) for v in nom):
            ax.plot(x, nom, "k_", ms=22, mew=2, label="nominal (raw header)")
            ax.legend(loc="lower right")
    for xi, v in zip(x, vals):
        ax.annotate(f"{v:.4g}", (xi, v), xytext=(0, 6), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"amp {a}" for a in amps])
    ax.set_xlim(-0.6, len(amps) - 0.4)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    lo, hi = min(vals), max(vals)
    if prefix == "OVERSCN" and hi > 0:  # levels near 1000 ADU: zoom on the differences
        span = max(hi - lo, 0.02 * hi)
        ax.set_ylim(lo - 0.6 * span, hi + 0.6 * span)
    elif hi > 0:
        ax.set_ylim(0, 1.3 * hi)


def plot_preproc(image, title: str | None = None):
    """Draw the QA picture of a preprocessed image.

    Parameters
    ----------
    image : gpuspec.Image or str
        The image, or the path of a preproc file (read with :func:`gpuspec.io.read_image`).
    title : str, optional
        Figure title (default: camera, EXPID, NIGHT).

    Returns
    -------
    matplotlib.figure.Figure
        Four data axes: image, mask overlay, overscan per amp, read noise per amp.

    Backends: numpy (cupy arrays are copied to the host).
    """
    pyplot()
    if isinstance(image, str):
        from ..io import read_image

        path, image = image, read_image(image)
    else:
        path = None
    pix, mask, ivar = _host(image.pix), _host(image.mask), _host(image.ivar)
    meta = dict(image.meta or {})
    cam = image.camera or meta.get("CAMERA", "?")
    title = title or (f"preproc {cam}  EXPID {meta.get('EXPID', '?')}  NIGHT "
                      f"{meta.get('NIGHT', '?')}" + (f"\n{path}" if path else ""))
    ny, nx = pix.shape
    fig = new_figure(15, 8.5, title)
    gs = fig.add_gridspec(2, 3, width_ratios=[1.0, 1.0, 0.75])
    ax_img = fig.add_subplot(gs[:, 0])
    ax_msk = fig.add_subplot(gs[:, 1], sharex=ax_img, sharey=ax_img)
    ax_os = fig.add_subplot(gs[0, 2])
    ax_rn = fig.add_subplot(gs[1, 2])
    good = (mask == 0) & (ivar > 0) if mask is not None else None
    norm = asinh_norm(pix, good)
    aspect = "equal" if 1 / 3 < ny / nx < 3 else "auto"
    extent = (-0.5, nx - 0.5, -0.5, ny - 0.5)
    im = ax_img.imshow(pix, norm=norm, cmap="viridis", aspect=aspect, extent=extent,
                       interpolation="antialiased")
    cb = fig.colorbar(im, ax=ax_img, location="bottom", shrink=0.9, pad=0.01, aspect=40,
                      ticks=asinh_ticks(norm), format="%g")
    cb.minorticks_off()
    cb.set_label("electrons / pixel (arcsinh stretch: linear near 0, logarithmic above)")
    amps = _amps(meta)
    _draw_amps(ax_img, amps)
    ax_img.set_title(f"image {ny} × {nx} (rows = wavelength, columns = fibers)")
    ax_img.set_xlabel("x [CCD column]")
    ax_img.set_ylabel("y [CCD row]")

    ax_msk.imshow(pix, norm=norm, cmap="gray", aspect=aspect, extent=extent, alpha=0.6,
                  interpolation="antialiased")
    if mask is not None:
        k = _block(ny, nx)
        rgba, counts = _mask_rgba(np.asarray(mask).astype(np.int64), k)
        ax_msk.imshow(rgba, aspect=aspect, extent=(-0.5, rgba.shape[1] * k - 0.5, -0.5,
                                                    rgba.shape[0] * k - 0.5),
                      interpolation="nearest")
        from matplotlib.patches import Patch

        total = int(np.count_nonzero(mask))
        handles = [Patch(color=MASK_COLORS[n], label=f"{n}: {c} px") for n, c in counts.items()]
        if handles:
            ax_msk.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.06),
                          ncol=3, frameon=False,
                          title=f"{total} masked pixels ({100.0 * total / mask.size:.3f}%)",
                          title_fontsize=8)
        ax_msk.set_title("ccdmask bits" + (f" (display pixel = {k}×{k} CCD pixels)"
                                           if k > 1 else ""))
    else:
        note(ax_msk, "no MASK")
    ax_msk.set_xlabel("x [CCD column]")
    ax_msk.set_xlim(extent[0], extent[1])
    ax_msk.set_ylim(extent[2], extent[3])
    _amp_bars(ax_os, meta, "OVERSCN", None, "overscan level [ADU]", "overscan per amp")
    _amp_bars(ax_rn, meta, "OBSRDN", "RDNOISE", "read noise [e⁻]",
              "read noise per amp (from the overscan)")
    return fig
