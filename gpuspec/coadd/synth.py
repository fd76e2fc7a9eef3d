"""Synthetic multi-exposure, multi-camera spectra for coadd tests and benchmarks.

Each target has a smooth continuum with emission lines (the truth, e⁻/Å), each
exposure/camera row a Gaussian resolution matrix (σ 0.9–1.4 pixels, banded,
columns normalised), an ivar from a read-noise + Poisson-like variance scaled by
a per-exposure depth, and ``flux = R·truth + N(0, 1/ivar)``. Camera grids use
DESI's 0.8 Å lattice (b 3600–5800, r 5760–7620, z 7520–9824 Å by default), so
neighbouring cameras overlap on common pixels.
"""

from __future__ import annotations

import os

import numpy as np

from ..grids import DESI_WAVE, WAVE_STEP, linear_grid
from ..resolution import apply as rapply
from ..spectra import Spectra

__all__ = ["camera_waves", "make_spectra", "write_frames"]

#: DESI's production grids (one home: :data:`gpuspec.grids.DESI_WAVE`)
DESI_RANGES = DESI_WAVE


#: short overlapping ranges for fast tests
SHORT_RANGES = {"b": (5000.0, 5800.0), "r": (5760.0, 6600.0), "z": (6560.0, 7400.0)}


def camera_waves(bands=("b", "r", "z"), step: float = WAVE_STEP, ranges=None):
    """Camera grids on a common 0.8 Å lattice (default DESI ranges; see SHORT_RANGES),
    each :func:`gpuspec.grids.linear_grid` rounded to 6 decimals (identical values where
    the arms overlap).

    Backends: host (numpy).
    """
    ranges = DESI_RANGES if ranges is None else ranges
    return {b: linear_grid(*ranges[b], step, decimals=6) for b in bands}


def _truth(wave, rng, ntarget):
    w = wave[None, :]
    cont = rng.uniform(20, 80, (ntarget, 1)) * (1 + 0.2 * np.sin(w / rng.uniform(300, 900,
                                                                                 (ntarget, 1))))
    out = cont.copy()
    for _ in range(6):
        c = rng.uniform(wave[0], wave[-1], (ntarget, 1))
        s = rng.uniform(0.8, 2.5, (ntarget, 1))
        a = rng.uniform(50, 600, (ntarget, 1))
        out += a / (np.sqrt(2 * np.pi) * s) * np.exp(-0.5 * ((w - c) / s) ** 2)
    return out


def _gauss_rdata(nrow, nwave, rng, ndiag=11):
    h = ndiag // 2
    sig = rng.uniform(0.9, 1.4, (nrow, 1, 1))
    d = (np.arange(ndiag) - h)[None, :, None]                        # row offset of each diagonal
    r = np.exp(-0.5 * (d / sig) ** 2) * np.ones((1, 1, nwave))
    k = np.arange(nwave)[None, None, :]
    r = np.where((k + d >= 0) & (k + d < nwave), r, 0.0)           # R[k+d, k] inside the matrix
    return r / r.sum(axis=1, keepdims=True)


def make_spectra(ntarget=20, nexp=3, bands=("b", "r", "z"), ranges=None, seed=1, depth=None,
                 same_resolution=False, spread=0.2):
    """Uncoadded Spectra (rows ordered exposure-major) and the truth per band.

    Parameters
    ----------
    same_resolution : bool
        Give all exposures of a target the same resolution (then the plain
        coadd of R·truth is exactly R·truth).

    Returns
    -------
    spectra : Spectra
    truth : dict
        band -> (ntarget, nwave) array; ``"wave"``/``"all"``: the union grid and
        the truth on it.

    Backends: host (numpy).
    """
    rng = np.random.default_rng(seed)
    waves = camera_waves(bands, ranges=ranges)
    depth = np.linspace(0.7, 1.3, nexp) if depth is None else np.asarray(depth)
    nrow = ntarget * nexp
    tgt = np.tile(np.arange(ntarget), nexp)
    exp = np.repeat(np.arange(nexp), ntarget)
    flux, ivar, mask, res, truth = {}, {}, {}, {}, {}
    wall = np.unique(np.concatenate([waves[b] for b in bands]))
    tall = _truth(wall, rng, ntarget)
    truth["wave"], truth["all"] = wall, tall
    for b in bands:
        w = waves[b]
        t = tall[:, np.searchsorted(wall, w)]
        truth[b] = t
        r = _gauss_rdata(ntarget if same_resolution else nrow, w.size, rng)
        if same_resolution:
            r = r[tgt]
        model = rapply(r, t[tgt])
        var = (np.clip(model, 0, None) + 9.0) / depth[exp][:, None]
        iv = 1.0 / var
        flux[b] = model + rng.normal(size=model.shape) / np.sqrt(iv)
        ivar[b], mask[b], res[b] = iv, np.zeros(model.shape, np.int32), r
    from ..io.fibermap import empty_fibermap

    fm = empty_fibermap(nrow, exposure_columns=True)
    fm["FIBER"] = tgt
    fm["TARGETID"] = 39630000000000 + tgt
    fm["OBJTYPE"] = "TGT"
    fm["TARGET_RA"] = 150.0 + spread * (tgt % 7)
    fm["TARGET_DEC"] = 2.0 + spread * (tgt // 7 % 5)
    fm["FIBER_RA"], fm["FIBER_DEC"] = fm["TARGET_RA"], fm["TARGET_DEC"]
    fm["TILEID"] = 1000
    fm["NIGHT"] = 20250101
    fm["EXPID"] = 100 + exp
    fm["MJD"] = 60676.0 + 0.01 * exp
    fm["EXPTIME"] = 900.0
    sp = Spectra(bands=list(bands), wave=waves, flux=flux, ivar=ivar, mask=mask,
                 resolution_data=res, fibermap=fm, meta={})
    return sp, truth


def write_frames(outdir, ntarget=20, nexp=3, bands=("b", "r", "z"), ranges=None, seed=1):
    """Write one frame per exposure and camera (``frame-{cam}0-{EXPID:08d}.fits``).

    Returns
    -------
    files : list of str
    spectra, truth : as :func:`make_spectra` (same_resolution=True)

    Backends: host (numpy, file I/O).
    """
    from ..frame import Frame
    from ..io.frame import write_frame

    sp, truth = make_spectra(ntarget, nexp, bands, ranges, seed, same_resolution=True)
    os.makedirs(outdir, exist_ok=True)
    files = []
    for e in range(nexp):
        rows = np.arange(e * ntarget, (e + 1) * ntarget)
        fm = sp.fibermap[rows]
        expid = int(fm["EXPID"][0])
        for b in bands:
            meta = {"CAMERA": f"{b}0", "NIGHT": int(fm["NIGHT"][0]), "EXPID": expid,
                    "TILEID": int(fm["TILEID"][0]), "EXPTIME": 900.0, "SPECMIN": 0}
            fr = Frame(wave=sp.wave[b], flux=sp.flux[b][rows], ivar=sp.ivar[b][rows],
                       mask=sp.mask[b][rows], resolution_data=sp.resolution_data[b][rows],
                       fibermap=fm, meta=meta)
            path = os.path.join(outdir, f"frame-{b}0-{expid:08d}.fits")
            files.append(write_frame(path, fr))
    return files, sp, truth
