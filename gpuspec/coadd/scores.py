"""SCORES table of a coadd (desispec ``compute_coadd_scores`` columns).

Per camera band X in b/r/z overlapping the fixed top-hat ranges
(b 4000–5800, r 5800–7600, z 7600–9800 Å):
``INTEG_COADD_FLUX_X`` (Σ flux·dλ), ``MEDIAN_COADD_FLUX_X`` and
``MEDIAN_COADD_SNR_X`` (median √ivar·flux/√dλ), float32; plus summed
``TSNR2_*`` columns when the input spectra had scores with them.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_host

__all__ = ["coadd_scores", "TOPHAT_WAVE"]

TOPHAT_WAVE = {"b": (4000.0, 5800.0), "r": (5800.0, 7600.0), "z": (7600.0, 9800.0)}


def _band_scores(wave, flux, ivar, band, out):
    wave = np.asarray(wave)
    sel = (wave >= TOPHAT_WAVE[band][0]) & (wave < TOPHAT_WAVE[band][1])
    if not sel.any():
        return
    dw = np.gradient(wave)
    f = np.asarray(flux)[:, sel]
    iv = np.clip(np.asarray(ivar)[:, sel], 0, None)
    B = band.upper()
    out[f"INTEG_COADD_FLUX_{B}"] = np.sum(f * dw[sel], axis=1)
    out[f"MEDIAN_COADD_FLUX_{B}"] = np.median(f, axis=1)
    out[f"MEDIAN_COADD_SNR_{B}"] = np.median(np.sqrt(iv) * f / np.sqrt(dw[sel]), axis=1)


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
    n = len(out["TARGETID"])
    dt = [(k, np.int64 if k == "TARGETID" else np.float32) for k in out]
    sc = np.zeros(n, dtype=dt)
    for k, v in out.items():
        sc[k] = v
    return sc

