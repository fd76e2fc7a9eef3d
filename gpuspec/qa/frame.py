"""QA picture of an extracted frame (``frame-*.fits``) or a flux-calibrated one (``cframe-*.fits``).

Panels: the flux image (fiber × wavelength, arcsinh stretch); the spectra of a
few chosen fibers with their ±1σ band (and, for simulated data, the truth seen
through each fiber's resolution); the median χ²/pixel of the extraction per
fiber; and the masked fraction per fiber. Host (NumPy).
"""

from __future__ import annotations

import numpy as np

from .mpl import asinh_norm, asinh_ticks, integer_ticks, new_figure, note, pyplot, robust_range

__all__ = ["plot_frame", "choose_fibers", "fiber_numbers", "is_sky"]


def _host(a):
    if a is None:
        return None
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def fiber_numbers(fibermap, nspec: int, specmin: int = 0):
    """FIBER of each row (fibermap column, else ``specmin + row``).

    Backends: host only (NumPy).
    """
    if fibermap is not None and "FIBER" in (fibermap.dtype.names or ()):
        return np.asarray(fibermap["FIBER"], dtype=np.int64)
    return specmin + np.arange(nspec)


def is_sky(fibermap, n: int):
    """Boolean per row: OBJTYPE is SKY (all False without a fibermap).

    Backends: host only (NumPy).
    """
    if fibermap is None or "OBJTYPE" not in (fibermap.dtype.names or ()):
        return np.zeros(n, dtype=bool)
    return np.char.strip(np.asarray(fibermap["OBJTYPE"]).astype(str)) == "SKY"


def choose_fibers(flux, ivar, sky, nmax: int = 3):
    """Rows to show: the brightest target, a median target and a sky fiber.

    Brightness is the median flux over good pixels; without targets or sky
    fibers the first, middle and last rows are used.

    Backends: host only (NumPy).
    """
    n = flux.shape[0]
    good = ivar > 0
    med = np.array([np.median(f[g]) if g.any() else -np.inf for f, g in zip(flux, good)])
    tgt = np.nonzero(~sky & np.isfinite(med))[0]
    rows = []
    if tgt.size:
        order = tgt[np.argsort(med[tgt])]
        rows += [int(order[-1]), int(order[order.size // 2])]
    skyrows = np.nonzero(sky)[0]
    if skyrows.size:
        rows.append(int(skyrows[0]))
    for r in (0, n // 2, n - 1):
        if len(rows) >= min(nmax, n):
            break
        if r not in rows:
            rows.append(r)
    return list(dict.fromkeys(rows))[:nmax]


def _per_fiber(ax, fibers, values, sky, ylabel, title, ref=None, log=False, bar=False):
    if bar:
        ax.bar(fibers[~sky], values[~sky], width=0.8, color="#4c78a8", label="targets")
        if sky.any():
            ax.bar(fibers[sky], values[sky], width=0.8, color="#f28e2b", label="sky fibers")
    else:
        ax.plot(fibers[~sky], values[~sky], "o", ms=4, color="#4c78a8", label="targets")
        if sky.any():
            ax.plot(fibers[sky], values[sky], "s", ms=4, color="#f28e2b", label="sky fibers")
    if ref is not None:
        ax.axhline(ref, color="k", lw=0.8, ls="--", label=f"{ref:g} (ideal fit)")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("fiber")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best")
    integer_ticks(ax)


def _flux_image(fig, ax_im, flux, ivar, mask, wave, fib, sky, ulabel):
    """Flux image fiber × wavelength with an arcsinh stretch; sky fibers marked."""
    good = (ivar > 0) & (mask == 0)
    norm = asinh_norm(flux, good)
    fmin, fmax = int(fib.min()), int(fib.max())
    im = ax_im.imshow(np.where(ivar > 0, flux, np.nan), norm=norm, cmap="viridis",
                      aspect="auto", interpolation="nearest",
                      extent=(wave[0], wave[-1], fmin - 0.5, fmax + 0.5))
    cb = fig.colorbar(im, ax=ax_im, pad=0.01, ticks=asinh_ticks(norm), format="%g")
    cb.minorticks_off()
    cb.set_label(ulabel.replace("flux ", "") + " (arcsinh)")
    ax_im.set_xlabel("wavelength [Å]")
    ax_im.set_ylabel("fiber")
    ax_im.set_title("flux (white: ivar = 0)")
    if sky.any():
        ax_im.plot(np.full(sky.sum(), wave[0]), fib[sky], ">", color="#f28e2b", ms=6,
                   clip_on=False, label="sky fibers")
        ax_im.legend(loc="upper right", fontsize=7)


def plot_frame(frame, fibers=None, truth=None, title: str | None = None):
    """Draw the QA picture of a frame or cframe.

    Parameters
    ----------
    frame : gpuspec.Frame or str
        The frame, or the path of a frame/cframe file.
    fibers : list of int, optional
        FIBER numbers to show (default: :func:`choose_fibers`, at most 3).
    truth : gpuspec.qa.truth.TruthCache, optional
        Truth of simulated data, overlaid on the chosen fibers.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Data axes: flux image, one per chosen fiber, χ²/pixel per fiber, masked
        fraction per fiber.

    Backends: numpy (cupy arrays are copied to the host).
    """
    pyplot()
    path = None
    if isinstance(frame, str):
        from ..io import read_frame

        path, frame = frame, read_frame(frame)
    meta = dict(frame.meta or {})
    flux, ivar = _host(frame.flux).astype(np.float64), _host(frame.ivar).astype(np.float64)
    wave = _host(frame.wave).astype(np.float64)
    mask = _host(frame.mask) if frame.mask is not None else np.zeros(flux.shape, np.int32)
    nspec = flux.shape[0]
    fib = fiber_numbers(frame.fibermap, nspec, int(meta.get("SPECMIN", 0) or 0))
    sky = is_sky(frame.fibermap, nspec)
    unit = str(meta.get("BUNIT", "electron/Angstrom"))
    calibrated = "erg" in unit.lower()
    ulabel = "flux [1e-17 erg/s/cm²/Å]" if calibrated else "flux [e⁻/Å]"
    if fibers is None:
        rows = choose_fibers(flux, ivar, sky)
    else:
        lookup = {int(f): i for i, f in enumerate(fib)}
        bad = [f for f in fibers if int(f) not in lookup]
        if bad:
            from ..errors import InputError

            raise InputError(f"fiber(s) {bad} not in this frame (fibers {fib.min()}-{fib.max()})",
                             path=path)
        rows = [lookup[int(f)] for f in fibers]
    cam = str(meta.get("CAMERA", "?"))
    kind = "cframe" if calibrated else "frame"
    title = title or (f"{kind} {cam}  EXPID {meta.get('EXPID', '?')}  NIGHT "
                      f"{meta.get('NIGHT', '?')}  ({nspec} fibers, {wave[0]:.1f}–{wave[-1]:.1f} Å)"
                      + (f"\n{path}" if path else ""))
    nf = len(rows)
    fig = new_figure(15, 4.2 + 2.3 * max(nf, 2), title)
    gs = fig.add_gridspec(1 + max(nf, 2), 2, width_ratios=[1.7, 1.0],
                          height_ratios=[1.6] + [1.0] * max(nf, 2))
    ax_im = fig.add_subplot(gs[0, :])
    _flux_image(fig, ax_im, flux, ivar, mask, wave, fib, sky, ulabel)
    ax0 = None
    for j, r in enumerate(rows):
        ax = fig.add_subplot(gs[1 + j, 0], sharex=ax0)
        ax0 = ax0 or ax
        _fiber_panel(ax, wave, flux[r], ivar[r], mask[r], frame, r, fib[r], sky[r], meta, truth,
                     ulabel)
        if j < nf - 1:
            ax.tick_params(labelbottom=False)
        else:
            ax.set_xlabel("wavelength [Å]")
    half = max(nf, 2) // 2
    ax_chi = fig.add_subplot(gs[1:1 + half, 1])
    ax_msk = fig.add_subplot(gs[1 + half:, 1], sharex=ax_chi)
    if frame.chi2pix is not None:
        c2 = _host(frame.chi2pix).astype(np.float64)
        med = np.array([np.median(c[g]) if g.any() else np.nan for c, g in zip(c2, ivar > 0)])
        _per_fiber(ax_chi, fib, med, sky, "median χ²/pixel", "extraction χ² per fiber", ref=1.0,
                   log=np.nanmax(med) > 10 * max(np.nanmin(med), 1e-3))
    else:
        note(ax_chi, "no CHI2PIX in this file")
        ax_chi.set_title("extraction χ² per fiber")
    frac = np.mean((mask != 0) | (ivar <= 0), axis=1)
    _per_fiber(ax_msk, fib, 100.0 * frac, sky, "masked pixels [%]",
               "masked fraction per fiber (mask ≠ 0 or ivar = 0)", bar=True)
    ax_msk.set_ylim(0, max(0.5, 120.0 * frac.max()))
    if not frac.any():
        ax_msk.text(0.5, 0.5, "no masked pixel", transform=ax_msk.transAxes, ha="center",
                    color="0.35")
    return fig


def _fiber_panel(ax, wave, f, iv, m, frame, row, fiber, sky, meta, truth, ulabel):
    sig = np.where(iv > 0, 1.0 / np.sqrt(np.where(iv > 0, iv, 1.0)), np.nan)
    ok = iv > 0
    ax.fill_between(wave, np.where(ok, f - sig, np.nan), np.where(ok, f + sig, np.nan),
                    color="#9ecae1", lw=0, label="±1σ", step="mid")
    ax.plot(wave, np.where(ok, f, np.nan), color="#08519c", lw=0.7, label="flux",
            drawstyle="steps-mid")
    bad = (m != 0) & ok
    if bad.any():
        ax.plot(wave[bad], f[bad], "x", color="#d62728", ms=4, label="masked")
    good = ok & (m == 0)
    # continuum and noise readable: 1st-97th percentile, bright (sky) lines run off the top
    v = f[good] if good.any() else f
    lo, hi = robust_range(v, lo=1.0, hi=97.0, pad=0.0)
    lo, hi = lo - 0.15 * (hi - lo), hi + 0.4 * (hi - lo)
    nclip = int(np.count_nonzero(v > hi))
    model = None
    if truth is not None and "EXPID" in meta and "CAMERA" in meta:
        rd = None if frame.resolution_data is None else _host(frame.resolution_data[row])
        model = truth.model(int(meta["EXPID"]), str(meta["CAMERA"]), int(fiber), wave, rd)
    if model is not None:
        ax.plot(wave, model, color="k", lw=0.6, alpha=0.8, label="truth (R·PHOT/DW)")
        chi = ((f - model) * np.sqrt(iv))[good]
        chi = chi[np.isfinite(chi)]
        if chi.size:
            rms = float(np.sqrt(np.mean(chi ** 2)))
            ax.text(0.01, 0.95, f"χ rms vs truth {rms:.2f}", transform=ax.transAxes,
                    va="top", fontsize=8, bbox=dict(fc="white", alpha=0.7, lw=0))
    ax.set_ylim(lo, hi)
    objtype = "sky fiber" if sky else "target"
    tid = ""
    if frame.fibermap is not None and "TARGETID" in frame.fibermap.dtype.names:
        tid = f", TARGETID {int(frame.fibermap['TARGETID'][row])}"
    ax.set_title(f"fiber {int(fiber)} ({objtype}{tid})" + (
        f"   [{nclip} pixels above the top: bright lines]" if nclip else ""), loc="left")
    ax.set_ylabel(ulabel)
    ax.legend(loc="upper right", ncol=4, fontsize=7)
