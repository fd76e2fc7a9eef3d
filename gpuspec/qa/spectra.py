"""QA picture of one target in a spectra or coadd file (``spectra-*.fits``, ``coadd-*.fits``).

Panels: the target's b/r/z spectra with ±1σ (every exposure of a spectra file;
the coadd of a coadd file) and, for simulated data, the truth seen through the
resolution; the inverse variance; and χ = (flux − truth)·√ivar.

The truth of a coadd is the coadd of the exposures' truths: when the spectra
file the coadd was made from lies beside it (``spectra-`` for ``coadd-``, the
production layout), the truths of its rows are coadded by
:func:`gpuspec.coadd.coadd` with the same per-exposure normalisation, so the χ is
exact; otherwise the exposures' truths are averaged with equal weights through
the coadd's resolution, and the panel says it is approximate. Host (NumPy).
"""

from __future__ import annotations

import os

import numpy as np

from .frame import is_sky
from .mpl import BAND_COLORS, new_figure, pyplot, robust_range

__all__ = ["plot_spectra", "choose_target", "truth_spectra"]

_LINESTYLES = ("-", "--", ":", "-.")


def _rows(fm, tid):
    return np.nonzero(np.asarray(fm["TARGETID"]) == tid)[0]


def choose_target(spectra) -> int:
    """TARGETID of the non-sky target with the highest median S/N (the first target if none).

    Backends: host only (NumPy).
    """
    fm = spectra.fibermap
    n = spectra.num_spectra
    snr = np.zeros(n)
    for b in spectra.bands:
        f, iv = np.asarray(spectra.flux[b], float), np.asarray(spectra.ivar[b], float)
        s = np.where(iv > 0, f * np.sqrt(np.clip(iv, 0, None)), np.nan)
        with np.errstate(all="ignore"):
            snr += np.nan_to_num(np.nanmedian(s, axis=1), nan=0.0)
    snr[is_sky(fm, n)] = -np.inf
    return int(fm["TARGETID"][int(np.argmax(snr))])


def _camera(band, fm_row):
    if "PETAL_LOC" in fm_row.dtype.names:
        petal = int(fm_row["PETAL_LOC"])
    else:
        petal = int(fm_row["FIBER"]) // 500
    return f"{band}{petal}"


def _row_models(spectra, rows, truth):
    """{band: [model or None per row]} of spectra rows (EXPID and FIBER from the fibermap)."""
    fm = spectra.fibermap
    out = {}
    for b in spectra.bands:
        if b not in "brz" or len(b) != 1:
            out[b] = [None] * len(rows)
            continue
        ms = []
        for r in rows:
            rd = None if spectra.resolution_data is None else spectra.resolution_data[b][r]
            ms.append(truth.model(int(fm["EXPID"][r]), _camera(b, fm[r]), int(fm["FIBER"][r]),
                                  spectra.wave[b], rd))
        out[b] = ms
    return out


def _subset(spectra, rows):
    from ..spectra import Spectra

    pick = lambda d: None if d is None else {b: np.asarray(d[b])[rows] for b in spectra.bands}
    return Spectra(bands=list(spectra.bands), wave=dict(spectra.wave), flux=pick(spectra.flux),
                   ivar=pick(spectra.ivar), mask=pick(spectra.mask),
                   resolution_data=pick(spectra.resolution_data),
                   fibermap=spectra.fibermap[rows], meta=dict(spectra.meta))


def _coadd_truth(co, tid, truth, spectra_path):
    """({band: model}, exact) for one target of a coadd, or ({}, False) when impossible."""
    from ..io import read_spectra

    if spectra_path and os.path.exists(spectra_path):
        sp = read_spectra(spectra_path)
        rows = _rows(sp.fibermap, tid)
        same_grid = all(b in sp.bands and np.array_equal(sp.wave[b], co.wave[b])
                        for b in co.bands)
        if rows.size and same_grid:
            models = _row_models(sp, rows, truth)
            if all(m is not None for ms in models.values() for m in ms):
                from ..coadd import coadd

                sub = _subset(sp, rows)
                sub.flux = {b: np.array(models[b]) for b in sp.bands}
                kw = {"no_normalize": True}
                efm = co.exp_fibermap
                if efm is not None and "COADD_NORM" in efm.dtype.names:
                    key = {(int(t), int(e), int(f)): float(n) for t, e, f, n in zip(
                        efm["TARGETID"], efm["EXPID"], efm["FIBER"], efm["COADD_NORM"])}
                    norm = [key.get((int(tid), int(e), int(f)), 1.0) for e, f in
                            zip(sub.fibermap["EXPID"], sub.fibermap["FIBER"])]
                    kw = {"coadd_norm": np.asarray(norm)}
                model = coadd(sub, cosmics_nsig=0, backend="numpy", **kw)
                return {b: np.asarray(model.flux[b][0], float) for b in co.bands}, True
    # approximation: equal-weight mean of the exposures' truths through the coadd's R
    from .. import resolution

    efm = co.exp_fibermap
    if efm is None:
        return {}, False
    erows = _rows(efm, tid)
    row = _rows(co.fibermap, tid)[0]
    out = {}
    for b in co.bands:
        if len(b) != 1:
            continue
        ts = [truth.photons_per_angstrom(int(efm["EXPID"][r]), _camera(b, efm[r]),
                                         int(efm["FIBER"][r]), co.wave[b]) for r in erows]
        ts = [t for t in ts if t is not None]
        if ts:
            t = np.mean(ts, axis=0)
            rd = None if co.resolution_data is None else co.resolution_data[b][row]
            if rd is None:
                out[b] = t
            else:
                rd = np.asarray(rd, float)
                m = np.asarray(resolution.apply(rd, t), float)
                h = rd.shape[0] // 2
                if h:
                    m[:h] = m[-h:] = np.nan
                out[b] = m
    return out, False


def truth_spectra(spectra, tid, truth, path=None):
    """Truth models of target ``tid``: ``({band: [model per row]}, rows, exact)``.

    For a spectra file one model per exposure row; for a coadd one row (see the
    module docstring). Models are None where the truth is unknown.

    Backends: host only (NumPy; file I/O).
    """
    is_coadd = spectra.exp_fibermap is not None
    rows = _rows(spectra.fibermap, tid)
    if not is_coadd:
        return _row_models(spectra, rows, truth), rows, True
    beside = None
    if path:
        d, base = os.path.split(path)
        if base.startswith("coadd-"):
            beside = os.path.join(d, "spectra-" + base[len("coadd-"):])
    models, exact = _coadd_truth(spectra, tid, truth, beside)
    return {b: [models.get(b)] for b in spectra.bands}, rows[:1], exact


def _draw_rows(ax_f, ax_i, ax_c, spectra, rows, models, is_coadd):
    """Flux ±1σ, ivar and (with a truth) χ of the target's rows; returns (fluxes, χ rms)."""
    fm = spectra.fibermap
    allf, chis = [], []
    for b in spectra.bands:
        w = np.asarray(spectra.wave[b], float)
        col = BAND_COLORS.get(b, "k")
        for j, r in enumerate(rows):
            f = np.asarray(spectra.flux[b][r], float)
            iv = np.asarray(spectra.ivar[b][r], float)
            ok = iv > 0
            ls = _LINESTYLES[j % len(_LINESTYLES)]
            expid = int(fm["EXPID"][r]) if not is_coadd and "EXPID" in fm.dtype.names else None
            sig = np.where(ok, 1 / np.sqrt(np.where(ok, iv, 1)), np.nan)
            ax_f.fill_between(w, np.where(ok, f - sig, np.nan), np.where(ok, f + sig, np.nan),
                              color=col, alpha=0.18, lw=0, step="mid")
            ax_f.plot(w, np.where(ok, f, np.nan), color=col, lw=0.7, ls=ls,
                      drawstyle="steps-mid")
            ax_i.plot(w, np.where(ok, iv, np.nan), color=col, lw=0.7, ls=ls)
            allf.append(f[ok])
            m = models.get(b, [None] * len(rows))[j] if j < len(models.get(b, [])) else None
            if m is not None:
                ax_f.plot(w, m, color="k", lw=0.5, alpha=0.75, ls=ls)
                good = ok & (np.asarray(spectra.mask[b][r]) == 0 if spectra.mask else ok)
                chi = np.where(good, (f - m) * np.sqrt(np.where(ok, iv, 0)), np.nan)
                ax_c.plot(w, chi, color=col, lw=0.6, ls=ls, drawstyle="steps-mid")
                inner = chi[np.isfinite(chi)]
                chis.append((b + (f" {expid}" if expid is not None else ""),
                             float(np.sqrt(np.mean(inner ** 2))) if inner.size else np.nan))
    return allf, chis


def _chi_panel(ax_c, chis, exact):
    ax_c.axhline(0, color="k", lw=0.6)
    for v in (-3, 3):
        ax_c.axhline(v, color="0.5", lw=0.5, ls=":")
    ax_c.set_ylim(-6, 6)
    ax_c.set_ylabel("χ = (flux − truth)·√ivar")
    txt = ", ".join(f"{b}: {v:.2f}" for b, v in chis)
    ax_c.set_title(f"χ vs truth (rms {txt})" + ("" if exact else
                   "  — approximate: equal-weight mean of the exposures' truths"), loc="left")


def _legend(ax, bands, expids, have_truth):
    from matplotlib.lines import Line2D

    hs = [Line2D([], [], color=BAND_COLORS.get(b, "k"), lw=1.5, label=f"{b} flux") for b in bands]
    hs += [Line2D([], [], color="0.4", ls=_LINESTYLES[j % len(_LINESTYLES)], label=f"EXPID {e}")
           for j, e in enumerate(expids)] if len(expids) > 1 else []
    if have_truth:
        hs.append(Line2D([], [], color="k", lw=1, label="truth"))
    ax.legend(handles=hs, loc="upper left", ncol=len(hs), framealpha=0.9)


def plot_spectra(spectra, targetid: int | None = None, truth=None, title: str | None = None,
                 path: str | None = None):
    """Draw the QA picture of one target of a spectra or coadd file.

    Parameters
    ----------
    spectra : gpuspec.Spectra or str
        The spectra/coadd, or the path of a file.
    targetid : int, optional
        Target to show (default: :func:`choose_target`).
    truth : gpuspec.qa.truth.TruthCache, optional
        Truth of simulated data: adds the truth curves and the χ panel.
    title : str, optional
    path : str, optional
        Path of the file ``spectra`` was read from (finds the spectra file of a coadd).

    Returns
    -------
    matplotlib.figure.Figure
        Data axes: flux, ivar, and χ when the truth is known.

    Backends: numpy.
    """
    pyplot()
    if isinstance(spectra, str):
        from ..io import read_spectra

        path, spectra = spectra, read_spectra(spectra)
    fm = spectra.fibermap
    if fm is None or "TARGETID" not in fm.dtype.names:
        from ..errors import InputError

        raise InputError("no FIBERMAP with TARGETID: cannot pick a target", path=path)
    is_coadd = spectra.exp_fibermap is not None
    tid = choose_target(spectra) if targetid is None else int(targetid)
    rows = _rows(fm, tid)
    if rows.size == 0:
        from ..errors import InputError

        raise InputError(f"TARGETID {tid} is not in this file", path=path)
    models, mrows, exact = ({}, rows, True)
    if truth is not None:
        models, mrows, exact = truth_spectra(spectra, tid, truth, path)
    have_truth = any(m is not None for ms in models.values() for m in ms)
    kind = "coadd" if is_coadd else "spectra"
    objtype = ""
    for col in ("OBJTYPE",):
        if col in fm.dtype.names:
            objtype = f" {str(fm[col][rows[0]]).strip()}"
    nexp = (len(_rows(spectra.exp_fibermap, tid)) if is_coadd else len(rows))
    title = title or (f"{kind}: TARGETID {tid}{objtype}, {nexp} exposure(s), bands "
                      f"{' '.join(spectra.bands)}" + (f"\n{path}" if path else ""))
    if truth is not None and not have_truth:
        title += "\n(simulated data, but the truth is not on this wavelength grid: no χ)"
    nax = 3 if have_truth else 2
    fig = new_figure(14, 3.2 + 2.6 * nax, title)
    gs = fig.add_gridspec(nax, 1, height_ratios=[2.2, 1.0, 1.0][:nax])
    ax_f = fig.add_subplot(gs[0])
    ax_i = fig.add_subplot(gs[1], sharex=ax_f)
    ax_c = fig.add_subplot(gs[2], sharex=ax_f) if have_truth else None
    unit = "1e-17 erg/s/cm²/Å" if "erg" in str(spectra.meta.get("BUNIT", "")).lower() else "e⁻/Å"
    allf, chis = _draw_rows(ax_f, ax_i, ax_c, spectra, rows, models, is_coadd)
    clipped = 0
    if allf:
        v = np.concatenate(allf)
        lo, hi = robust_range(v, lo=1.0, hi=99.0, pad=0.0)
        lo, hi = lo - 0.1 * (hi - lo), hi + 0.35 * (hi - lo)
        clipped = int(np.count_nonzero(v > hi))
        ax_f.set_ylim(lo, hi)
    ax_f.set_ylabel(f"flux [{unit}]")
    _legend(ax_f, spectra.bands, [] if is_coadd else [int(fm["EXPID"][r]) for r in rows]
            if "EXPID" in fm.dtype.names else [], have_truth)
    ax_f.set_title("flux ±1σ" + (" and truth (R·PHOT/DW)" if have_truth else "")
                   + (f"   [{clipped} pixels above the top of the plot: sky lines, not "
                      "subtracted yet]" if clipped and unit == "e⁻/Å" else
                      f"   [{clipped} pixels above the top]" if clipped else ""), loc="left")
    ax_i.set_yscale("log")
    ax_i.set_ylabel(f"ivar [({unit})⁻²]")
    ax_i.set_title("inverse variance", loc="left")
    last = ax_i
    if ax_c is not None:
        _chi_panel(ax_c, chis, exact)
        last = ax_c
    for a in fig.axes:
        if a is not last:
            a.tick_params(labelbottom=False)
    last.set_xlabel("wavelength [Å]")
    return fig
