"""QA pictures of the calibration products: fiber flat, sky model, flux calibration.

They read desispec's layouts (:mod:`gpuspec.qa.calibfiles`), so they work on
files of desispec and of gpuspec's calibration steps alike.

- **fiber flat**: the flat (fiber × wavelength, centred on 1), its median and
  16–84 % range per fiber, and the mean spectrum of the flat exposure;
- **sky**: with the frame the model was fitted to, the residuals of the sky
  fibers (frame − sky model), as a spectrum, as χ (fiber × wavelength), as a
  χ histogram against a unit Gaussian and as χ rms per sky fiber;
- **flux calibration**: the calibration vector, the throughput it implies
  (calibration / (1e-17·λ/(hc)·A·EXPTIME), with the simulator's collecting area
  A = 8.678 m²) and each fiber's calibration relative to the median.

Host (NumPy).
"""

from __future__ import annotations

import numpy as np

from .frame import fiber_numbers, is_sky
from .mpl import integer_ticks, new_figure, note, pyplot, robust_range

__all__ = ["plot_fiberflat", "plot_sky", "plot_fluxcalib", "throughput_from_calib"]


def _title(kind, hdr, path, extra=""):
    return (f"{kind} {hdr.get('CAMERA', '?')}  EXPID {hdr.get('EXPID', '?')}  NIGHT "
            f"{hdr.get('NIGHT', '?')}{extra}" + (f"\n{path}" if path else ""))


def _fiber_image(fig, ax, data, wave, fibers, label, center=None, span=None, cmap="viridis"):
    if center is not None:
        lo, hi = center - span, center + span
    else:
        lo, hi = robust_range(data, 1, 99, pad=0.0)
    im = ax.imshow(data, aspect="auto", interpolation="nearest", cmap=cmap, vmin=lo, vmax=hi,
                   extent=(wave[0], wave[-1], fibers.min() - 0.5, fibers.max() + 0.5))
    cb = fig.colorbar(im, ax=ax, pad=0.01, extend="both")
    cb.set_label(label)
    ax.set_xlabel("wavelength [Å]")
    ax.set_ylabel("fiber")
    return im


def _percentile_band(ax, wave, data, good, color, label):
    d = np.where(good, data, np.nan)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p16, p50, p84 = np.nanpercentile(d, [16, 50, 84], axis=0)
    ax.fill_between(wave, p16, p84, color=color, alpha=0.25, lw=0,
                    label="16–84 % of fibers")
    ax.plot(wave, p50, color=color, lw=1.0, label=label)
    return p50


# --------------------------------------------------------------------------- fiber flat

def plot_fiberflat(fiberflat, title: str | None = None):
    """Draw the QA picture of a fiber flat (desispec layout).

    Parameters
    ----------
    fiberflat : dict or str
        :func:`gpuspec.qa.calibfiles.read_fiberflat_file` output, or a path.

    Returns
    -------
    matplotlib.figure.Figure
        Data axes: flat image, flat per fiber, mean spectrum.

    Backends: host only (matplotlib).
    """
    from .calibfiles import read_fiberflat_file

    pyplot()
    ff = read_fiberflat_file(fiberflat) if isinstance(fiberflat, str) else fiberflat
    flat, ivar, mask = ff["FIBERFLAT"], ff["IVAR"], ff["MASK"]
    wave, hdr = ff["WAVELENGTH"], ff["header"]
    nspec = flat.shape[0]
    fibers = fiber_numbers(ff.get("FIBERMAP"), nspec, int(hdr.get("SPECMIN", 0) or 0))
    good = (ivar > 0) & (mask == 0)
    fig = new_figure(14, 10, title or _title("fiber flat", hdr, ff.get("path")))
    gs = fig.add_gridspec(3, 1, height_ratios=[1.4, 1.0, 1.0])
    ax_im, ax_f, ax_m = (fig.add_subplot(gs[i]) for i in range(3))
    dev = np.abs(np.where(good, flat, np.nan) - 1.0)
    span = float(np.nanpercentile(dev, 99)) if np.isfinite(dev).any() else 0.1
    span = max(span, 0.01)
    _fiber_image(fig, ax_im, np.where(good, flat, np.nan), wave, fibers,
                 "fiber flat (1 = mean fiber)", center=1.0, span=span, cmap="RdBu_r")
    ax_im.set_title("fiber flat (white: masked or ivar = 0)", loc="left")
    d = np.where(good, flat, np.nan)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p16, p50, p84 = np.nanpercentile(d, [16, 50, 84], axis=1)
    ax_f.errorbar(fibers, p50, yerr=[p50 - p16, p84 - p50], fmt="o", ms=3.5, color="#4c78a8",
                  ecolor="0.6", elinewidth=0.8)
    ax_f.axhline(1.0, color="k", lw=0.6, ls="--")
    low = p50 < 0.5
    if low.any():
        ax_f.plot(fibers[low], p50[low], "x", color="#d62728", ms=7, label="flat < 0.5 (LOWFLAT)")
    ax_f.set_xlabel("fiber")
    ax_f.set_ylabel("fiber flat")
    ax_f.set_title("flat per fiber (relative throughput): median over wavelength, bars 16–84 %",
                   loc="left")
    integer_ticks(ax_f)
    if low.any():
        ax_f.legend(loc="best")
    ax_m.plot(wave, ff["MEANSPEC"], color="#333333", lw=0.8, drawstyle="steps-mid")
    ax_m.set_xlabel("wavelength [Å]")
    ax_m.set_ylabel("mean spectrum [e⁻/Å]")
    ax_m.set_title("mean spectrum of the flat exposure (MEANSPEC)", loc="left")
    return fig


# --------------------------------------------------------------------------- sky

def _sky_residuals(sky, frame, fiberflat, path):
    """(rows, resid, chi, wave) of the sky fibers, or raise naming the mismatch."""
    from ..errors import BadDataError

    flux = np.asarray(frame.flux, dtype=np.float64)
    fiv = np.asarray(frame.ivar, dtype=np.float64)
    if flux.shape != sky["SKY"].shape or not np.allclose(frame.wave, sky["WAVELENGTH"],
                                                         atol=1e-3):
        raise BadDataError(f"sky model {sky['SKY'].shape} does not match the frame "
                           f"{flux.shape} (rows and wavelengths must be the same)", path=path)
    if fiberflat is not None:
        ffl = fiberflat["FIBERFLAT"]
        ok = ffl > 0
        flux = np.where(ok, flux / np.where(ok, ffl, 1), 0.0)
        fiv = np.where(ok, fiv * ffl ** 2, 0.0)
    rows = np.nonzero(is_sky(frame.fibermap, flux.shape[0]))[0]
    resid = flux[rows] - sky["SKY"][rows]
    siv = sky["IVAR"][rows]
    fi = fiv[rows]
    good = (fi > 0) & (np.asarray(frame.mask)[rows] == 0 if frame.mask is not None else True)
    var = np.where(good, 1 / np.where(fi > 0, fi, 1), np.inf) + \
        np.where(siv > 0, 1 / np.where(siv > 0, siv, 1), 0.0)
    chi = np.where(good, resid / np.sqrt(var), np.nan)
    return rows, np.where(good, resid, np.nan), chi


def _chi_panels(ax_h, ax_r, chi, fibers):
    """χ histogram of the sky-fiber pixels against N(0, 1), and χ rms per sky fiber."""
    import warnings

    c = chi[np.isfinite(chi)]
    if c.size:
        rng = (-6, 6)
        ax_h.hist(np.clip(c, *rng), bins=60, range=rng, density=True, color="#9ecae1",
                  label=f"{c.size} pixels: mean {c.mean():.2f}, rms {np.sqrt(np.mean(c ** 2)):.2f}")
        x = np.linspace(*rng, 200)
        ax_h.plot(x, np.exp(-0.5 * x ** 2) / np.sqrt(2 * np.pi), "k", lw=1, label="N(0, 1)")
        ax_h.set_yscale("log")
        ax_h.set_ylim(1e-4, 1)
        ax_h.legend(loc="upper left", fontsize=7)
    ax_h.set_xlabel("χ (clipped at ±6)")
    ax_h.set_ylabel("density")
    ax_h.set_title("χ of all sky-fiber pixels", loc="left")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rms = np.sqrt(np.nanmean(chi ** 2, axis=1))
    ax_r.bar(fibers, rms, width=0.8, color="#f28e2b")
    ax_r.axhline(1, color="k", lw=0.6, ls="--", label="1 (noise only)")
    ax_r.set_xlabel("sky fiber")
    ax_r.set_ylabel("χ rms")
    ax_r.set_title("χ rms per sky fiber", loc="left")
    integer_ticks(ax_r)
    ax_r.legend(loc="upper right")


def plot_sky(sky, frame=None, fiberflat=None, title: str | None = None):
    """Draw the QA picture of a sky model, with the residuals of the sky fibers of ``frame``.

    Parameters
    ----------
    sky : dict or str
        :func:`gpuspec.qa.calibfiles.read_sky_file` output, or a path.
    frame : gpuspec.Frame or str, optional
        The frame the sky was fitted to (its fibermap says which fibers are sky).
        Without it only the sky model is drawn.
    fiberflat : dict or str, optional
        Fiber flat to divide the frame by first (desispec fits the sky on the
        flat-fielded frame).

    Returns
    -------
    matplotlib.figure.Figure
        Data axes: sky spectrum and residual, χ image, χ histogram, χ rms per sky fiber.

    Backends: host only (matplotlib).
    """
    from .calibfiles import read_fiberflat_file, read_sky_file

    pyplot()
    sk = read_sky_file(sky) if isinstance(sky, str) else sky
    if isinstance(frame, str):
        from ..io import read_frame

        frame = read_frame(frame)
    if isinstance(fiberflat, str):
        fiberflat = read_fiberflat_file(fiberflat)
    wave, hdr = sk["WAVELENGTH"], sk["header"]
    fig = new_figure(14, 12.5, title or _title("sky model", hdr, sk.get("path"),
                                               "" if frame is not None else "  (no frame given)"))
    gs = fig.add_gridspec(4, 2, height_ratios=[1.1, 0.9, 1.1, 1.0], width_ratios=[1.4, 1.0])
    ax_s = fig.add_subplot(gs[0, :])
    ax_d = fig.add_subplot(gs[1, :], sharex=ax_s)
    ax_im = fig.add_subplot(gs[2, :], sharex=ax_s)
    ax_h = fig.add_subplot(gs[3, 0])
    ax_r = fig.add_subplot(gs[3, 1])
    good = (sk["IVAR"] > 0) & (sk["MASK"] == 0)
    _percentile_band(ax_s, wave, sk["SKY"], good, "#1f77b4", "sky model, median over fibers")
    ax_s.set_ylabel("sky [e⁻/Å]")
    ax_s.set_title("sky model", loc="left")
    ax_s.legend(loc="upper left")
    ax_s.tick_params(labelbottom=False)
    if frame is None:
        for a, what in ((ax_d, "residuals"), (ax_im, "χ of the sky fibers"),
                        (ax_h, "χ histogram"), (ax_r, "χ rms per sky fiber")):
            note(a, f"{what}: give the frame the sky was fitted to\n"
                    "(gpuspec qa sky-….fits frame-….fits)")
        return fig
    rows, resid, chi = _sky_residuals(sk, frame, fiberflat, sk.get("path"))
    if rows.size == 0:
        for a in (ax_d, ax_im, ax_h, ax_r):
            note(a, "the frame's fibermap has no sky fiber (OBJTYPE SKY)")
        return fig
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(resid, axis=0)
        sig = np.nanmedian(np.abs(resid / np.where(np.isfinite(chi) & (chi != 0), chi, np.nan)),
                           axis=0) / np.sqrt(rows.size)
    ax_d.fill_between(wave, -sig, sig, color="0.85", lw=0, step="mid",
                      label="±1σ of a median of the sky fibers (noise)")
    ax_d.plot(wave, med, color="#d62728", lw=0.8, drawstyle="steps-mid",
              label=f"median residual of {rows.size} sky fibers (frame − model)")
    ax_d.axhline(0, color="k", lw=0.5)
    ax_d.set_ylim(*robust_range(np.concatenate([med[np.isfinite(med)], sig[np.isfinite(sig)],
                                                -sig[np.isfinite(sig)]]), 0.5, 99.5, 0.15))
    ax_d.set_ylabel("residual [e⁻/Å]")
    ax_d.set_title("residuals of the sky fibers", loc="left")
    ax_d.legend(loc="upper left", ncol=2)
    ax_d.tick_params(labelbottom=False)
    fibers = fiber_numbers(frame.fibermap, frame.flux.shape[0], frame.specmin)[rows]
    im = ax_im.imshow(chi, aspect="auto", interpolation="nearest", cmap="RdBu_r", vmin=-5,
                      vmax=5, extent=(wave[0], wave[-1], -0.5, rows.size - 0.5))
    cb = fig.colorbar(im, ax=ax_im, pad=0.01, extend="both")
    cb.set_label("χ = residual / σ")
    ax_im.set_yticks(np.arange(rows.size), [str(f) for f in fibers] if rows.size <= 40 else None)
    ax_im.set_ylabel("sky fiber")
    ax_im.set_xlabel("wavelength [Å]")
    ax_im.set_title("χ of the sky fibers (white: masked)", loc="left")
    _chi_panels(ax_h, ax_r, chi, fibers)
    return fig


# --------------------------------------------------------------------------- flux calibration

def throughput_from_calib(calib, wave, exptime: float):
    """System throughput implied by a flux calibration (e⁻/Å per 1e-17 erg/s/cm²/Å).

    ``T = calib / (1e-17 · λ / (h c) · A · EXPTIME)`` with the collecting area
    A of the simulator (:data:`gpuspec.sim.instrument.AREA_CM2`). Host (NumPy).

    Backends: host only (NumPy).
    """
    from ..sim.instrument import AREA_CM2, HC_ERG_AA

    w = np.asarray(wave, dtype=np.float64)
    return np.asarray(calib, dtype=np.float64) / (1e-17 * w / HC_ERG_AA * AREA_CM2 *
                                                  float(exptime))


def plot_fluxcalib(fluxcalib, truth=None, title: str | None = None):
    """Draw the QA picture of a flux calibration (desispec layout).

    Parameters
    ----------
    fluxcalib : dict or str
        :func:`gpuspec.qa.calibfiles.read_fluxcalib_file` output, or a path.
    truth : gpuspec.qa.truth.TruthCache, optional
        For simulated data: overlays the simulated calibration (fiber throughput 1).

    Returns
    -------
    matplotlib.figure.Figure
        Data axes: calibration vector, throughput, per-fiber calibration relative
        to the median. The median throughput line is labelled ``"median throughput"``.

    Backends: host only (matplotlib).
    """
    from .calibfiles import read_fluxcalib_file

    pyplot()
    fc = read_fluxcalib_file(fluxcalib) if isinstance(fluxcalib, str) else fluxcalib
    cal, ivar, mask = fc["FLUXCALIB"], fc["IVAR"], fc["MASK"]
    wave, hdr = fc["WAVELENGTH"], fc["header"]
    good = (ivar > 0) & (mask == 0)
    fig = new_figure(14, 10, title or _title("flux calibration", hdr, fc.get("path")))
    gs = fig.add_gridspec(3, 1)
    ax_c, ax_t, ax_f = (fig.add_subplot(gs[i]) for i in range(3))
    med = _percentile_band(ax_c, wave, cal, good, "#2ca02c", "median calibration")
    model = None
    if truth is not None and "EXPID" in hdr and "CAMERA" in hdr:
        model = truth.calib_per_angstrom(int(hdr["EXPID"]), str(hdr["CAMERA"]), wave)
    if model is not None:
        ax_c.plot(wave, model, "k--", lw=0.8, label="simulated (fiber throughput 1)")
    ax_c.set_ylabel("calibration\n[(e⁻/Å) / (1e-17 erg/s/cm²/Å)]")
    ax_c.set_title("flux calibration vector", loc="left")
    ax_c.legend(loc="best")
    exptime = hdr.get("EXPTIME")
    if isinstance(exptime, (int, float)) and exptime > 0:
        thr = throughput_from_calib(med, wave, exptime)
        ax_t.plot(wave, thr, color="#2ca02c", lw=1.0, label="median throughput")
        if model is not None:
            ax_t.plot(wave, throughput_from_calib(model, wave, exptime), "k--", lw=0.8,
                      label="simulated")
        ax_t.set_ylim(0, max(0.05, 1.25 * np.nanmax(thr)) if np.isfinite(thr).any() else 1)
        ax_t.set_ylabel("throughput")
        ax_t.set_title(f"system throughput implied (EXPTIME {exptime:g} s, collecting area "
                       "8.678 m²)", loc="left")
        ax_t.legend(loc="best")
    else:
        note(ax_t, "no EXPTIME in the header: throughput not computed")
    nspec = cal.shape[0]
    fibers = fiber_numbers(None, nspec, int(hdr.get("SPECMIN", 0) or 0))
    rel = np.where(good, cal / np.where(med > 0, med, np.nan), np.nan)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r50 = np.nanmedian(rel, axis=1)
    ax_f.plot(fibers, r50, "o", ms=3.5, color="#2ca02c")
    ax_f.axhline(1.0, color="k", lw=0.6, ls="--")
    ax_f.set_xlabel("fiber")
    ax_f.set_ylabel("calibration / median")
    ax_f.set_title("relative calibration per fiber (fiber throughput × positioning)",
                   loc="left")
    integer_ticks(ax_f)
    ax_c.set_xlabel("wavelength [Å]")
    ax_t.set_xlabel("wavelength [Å]")
    return fig
