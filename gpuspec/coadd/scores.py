"""SCORES tables of frames and coadds (desispec ``specscore`` columns).

Per camera band X in b/r/z overlapping the fixed top-hat ranges
(b 4000–5800, r 5800–7600, z 7600–9800 Å), for fluxes per Ångström:
``INTEG_{S}_FLUX_X`` (Σ flux·dλ), ``MEDIAN_{S}_FLUX_X`` and ``MEDIAN_{S}_SNR_X``
(median √ivar·flux/√dλ), float32, with the suffix S = ``RAW`` for extracted
frames (desispec's extraction scores) and ``COADD`` for coadds; coadds also get
summed ``TSNR2_*`` columns when the input spectra had scores with them.

Spectra files carry the frames' scores row by row: TARGETID, then the columns of
each band in b, r, z order (desispec ``frames2spectra``), see :func:`spectra_scores`.
Host-side NumPy (small per-spectrum reductions on written data).
"""

from __future__ import annotations

import numpy as np

from ..backend import to_host

__all__ = ["coadd_scores", "frame_scores", "spectra_scores", "frame_band", "TOPHAT_WAVE"]

TOPHAT_WAVE = {"b": (4000.0, 5800.0), "r": (5800.0, 7600.0), "z": (7600.0, 9800.0)}


def _band_scores(wave, flux, ivar, band, out, suffix="COADD"):
    wave = np.asarray(wave)
    sel = (wave >= TOPHAT_WAVE[band][0]) & (wave < TOPHAT_WAVE[band][1])
    if not sel.any():
        return
    dw = np.gradient(wave)
    f = np.asarray(flux)[:, sel]
    iv = np.clip(np.asarray(ivar)[:, sel], 0, None)
    B = band.upper()
    out[f"INTEG_{suffix}_FLUX_{B}"] = np.sum(f * dw[sel], axis=1)
    out[f"MEDIAN_{suffix}_FLUX_{B}"] = np.median(f, axis=1)
    out[f"MEDIAN_{suffix}_SNR_{B}"] = np.median(np.sqrt(iv) * f / np.sqrt(dw[sel]), axis=1)


def frame_band(wave, camera=None) -> str:
    """Camera arm of a frame: from CAMERA, else from the mean wavelength (desispec rule).

    Backends: host.
    """
    if camera and str(camera).strip()[:1].lower() in TOPHAT_WAVE:
        return str(camera).strip()[0].lower()
    m = float(np.mean(np.asarray(wave)))
    return "b" if m <= TOPHAT_WAVE["b"][1] else ("z" if m >= TOPHAT_WAVE["z"][0] else "r")


def _table(cols: dict, n: int) -> np.ndarray:
    dt = [(k, np.int64 if k == "TARGETID" else np.float32) for k in cols]
    out = np.zeros(n, dtype=dt)
    for k, v in cols.items():
        out[k] = v
    return out


def frame_scores(wave, flux, ivar, camera=None, suffix: str = "RAW") -> np.ndarray:
    """SCORES of an extracted frame (flux per Ångström), one row per spectrum.

    Columns ``INTEG_RAW_FLUX_X``, ``MEDIAN_RAW_FLUX_X``, ``MEDIAN_RAW_SNR_X`` for the
    frame's arm X; none when the wavelength grid misses the arm's top-hat range
    (desispec then has no scores either). No TARGETID: desispec adds it from the
    fibermap when it groups frames.

    Backends: host (numpy).
    """
    flux = np.asarray(to_host(flux))
    out: dict = {}
    _band_scores(to_host(wave), flux, to_host(ivar), frame_band(to_host(wave), camera), out,
                 suffix)
    return _table(out, flux.shape[0])


def spectra_scores(per_band: dict, targetids) -> np.ndarray | None:
    """SCORES of a spectra file: TARGETID then each band's frame score columns.

    Parameters
    ----------
    per_band : {band: structured array or None}
        Row-matched scores of each band (rows of missing frames zero-filled).
    targetids : (nrows,) array

    Backends: host (numpy).
    """
    cols = {"TARGETID": np.asarray(targetids)}
    for b in sorted(per_band, key=lambda x: "brz".find(x) if x in "brz" else 9):
        sc = per_band[b]
        if sc is None or sc.dtype.names is None:
            continue
        for c in sc.dtype.names:
            if c != "TARGETID":
                cols[c] = sc[c]
    return _table(cols, len(cols["TARGETID"]))


def coadd_scores(coadd, input_scores=None, input_targetids=None):
    """Scores of a coadded Spectra as a structured array (one row per target).

    Parameters
    ----------
    coadd : Spectra
        Coadd (host or device arrays).
    input_scores : structured ndarray, optional
        Scores of the uncoadded rows; their ``TSNR2_*_{B,R,Z}`` are summed per target.
    input_targetids : (nrows,) array, optional
        TARGETID of ``input_scores`` rows.

    Backends: host (numpy; the coadd arrays are host arrays).
    """
    out = {"TARGETID": np.asarray(coadd.fibermap["TARGETID"])}
    for b in coadd.bands:
        wave = to_host(coadd.wave[b])
        flux = to_host(coadd.flux[b])
        ivar = to_host(coadd.ivar[b])
        if b.lower() in TOPHAT_WAVE:
            _band_scores(wave, flux, ivar, b.lower(), out)
        elif len(b) > 1:
            for c in "brz":
                if c in b.lower():
                    _band_scores(wave, flux, ivar, c, out)
    if input_scores is not None and input_scores.dtype.names:
        tsnr = [c for c in input_scores.dtype.names
                if c.startswith("TSNR2_") and c.split("_")[-1] in ("b", "r", "z", "B", "R", "Z")
                and len(c.split("_")) == 3]
        if tsnr:
            tids = np.asarray(input_targetids)
            targets = out["TARGETID"]
            types = []
            for c in tsnr:
                s = np.zeros(len(targets), np.float32)
                for i, t in enumerate(targets):
                    s[i] = np.sum(input_scores[c][tids == t])
                out[c] = s
                tt = c.split("_")[1]
                if tt not in types:
                    types.append(tt)
            for tt in types:
                tot = np.zeros(len(targets), np.float32)
                for B in "BRZ":
                    if f"TSNR2_{tt}_{B}" in out:
                        tot += out[f"TSNR2_{tt}_{B}"]
                out[f"TSNR2_{tt}"] = tot
    return _table(out, len(out["TARGETID"]))

