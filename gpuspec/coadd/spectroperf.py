"""Spectroperfectionism resampling and coadd (Kirkby, DESI-doc-1056; desispec
``spectroperf_resample_spectra``), batched on ``xp``.

For every input row (one fiber, one exposure, one camera) the banded inverse covariance
``Cinv = Σ RRᵀ diag(ivar) RR`` and ``Cinvf`` on the output grid are accumulated by
:mod:`gpuspec.coadd.cinv` (no dense n_out × n_out matrix is ever built), then
decorrelated block by block by :func:`gpuspec.coadd.decorrelate.decorrelate`.

:func:`spectroperf_resample` sums over the bands of each row (desispec
semantics: one output spectrum per input row); :func:`coadd_spectroperf` sums
over all rows and bands of each target (one decorrelated spectrum per target).
"""

from __future__ import annotations

import copy

import numpy as np

from ..backend import get_xp, to_device, to_host
from ..maskbits import specmask
from ..profiling import nvtx_range
from ..spectra import Spectra
from .cameras import combined_wave
from .cinv import accumulate_cinv, accumulate_upper, resampling_windows
from .decorrelate import decorrelate_upper
from .fibermap import coadd_fibermap, fiberstatus_column
from .groups import ordered_unique, use_for_coadd

__all__ = ["spectroperf_resample", "coadd_spectroperf", "accumulate_cinv", "resampling_windows",
           "min_wavebin", "combined_wave"]


def min_wavebin(wave_out) -> float:
    """Smallest positive ``np.gradient`` step of the output grid (desispec ``wavebin``).

    Backends: host (numpy).
    """
    dw = np.gradient(np.asarray(wave_out, dtype=np.float64))
    return float(np.min(dw[dw > 0]))


def _bands_data(spectra, xp, use_mask: bool):
    out = []
    for b in spectra.bands:
        iv = to_device(spectra.ivar[b], xp, dtype=np.float64)
        if use_mask and spectra.mask is not None:
            iv = iv * (to_device(spectra.mask[b], xp) == 0)
        out.append((np.asarray(to_host(spectra.wave[b]), dtype=np.float64),     # host grid
                    to_device(spectra.flux[b], xp, dtype=np.float64), iv,
                    to_device(spectra.resolution_data[b], xp, dtype=np.float64)))
    return out


def spectroperf_resample(spectra: Spectra, wave_out, backend="auto", **kw) -> Spectra:
    """Resample every row onto ``wave_out`` with a decorrelated resolution (desispec semantics).

    Each row (one fiber of one exposure) has its bands combined; the input mask
    is ignored (only ivar is used), as in desispec.

    Returns
    -------
    Spectra
        One band named ``"".join(bands)``; flux/ivar (nrow, nout), resolution
        (nrow, max ndiag, nout) on the host; mask zeros when the input had one;
        fibermap/meta copied.

    Backends: numpy, cupy.
    """
    xp = get_xp(backend)
    wave_out = np.asarray(wave_out, dtype=np.float64)
    nrow = spectra.flux[spectra.bands[0]].shape[0]
    ndiag = max(spectra.resolution_data[b].shape[1] for b in spectra.bands)
    with nvtx_range("coadd.spectroperf.accumulate"):
        U, cf = accumulate_upper(_bands_data(spectra, xp, False), wave_out, np.arange(nrow),
                                 nrow, xp)
    flux, ivar, rdata = decorrelate_upper(U, cf, min_wavebin(wave_out), ndiag=ndiag, xp=xp, **kw)
    name = "".join(spectra.bands)
    mask = {name: np.zeros((nrow, wave_out.size), np.int32)} if spectra.mask is not None else None
    return Spectra(bands=[name], wave={name: wave_out}, flux={name: to_host(flux)},
                   ivar={name: to_host(ivar)}, mask=mask,
                   resolution_data={name: to_host(rdata)},
                   fibermap=None if spectra.fibermap is None else spectra.fibermap.copy(),
                   meta=copy.deepcopy(spectra.meta), scores=spectra.scores)


def coadd_spectroperf(spectra: Spectra, wave_out=None, *, onetile: bool = False,
                      backend="auto", **kw) -> Spectra:
    """Spectroperfectionism coadd: one decorrelated spectrum per target.

    Cinv and Cinvf are summed over all exposures and bands of each target (rows
    with FIBERSTATUS bad for the band are left out; pixels with a non-zero mask
    get zero weight), then decorrelated on ``wave_out``.

    Parameters
    ----------
    spectra : Spectra
        Uncoadded spectra with FIBERMAP.
    wave_out : array, optional
        Output grid; default the union of the band grids (``combined_wave``).
    onetile : bool
        Passed to the fibermap coadd.

    Returns
    -------
    Spectra
        One band (``"".join(bands)`` sorted by wavelength), host arrays, coadded
        FIBERMAP/EXP_FIBERMAP.

    Backends: numpy, cupy.
    """
    xp = get_xp(backend)
    fm = spectra.fibermap
    targets, _ = ordered_unique(fm["TARGETID"])
    pos = {t: i for i, t in enumerate(targets.tolist())}
    grp = np.array([pos[t] for t in fm["TARGETID"].tolist()])
    wave_out = combined_wave(spectra) if wave_out is None else np.asarray(wave_out, np.float64)
    fskey = fiberstatus_column(fm.dtype.names)
    ndiag = max(spectra.resolution_data[b].shape[1] for b in spectra.bands)
    groups = [np.where(use_for_coadd(fm[fskey], b), grp, -1) for b in spectra.bands]
    with nvtx_range("coadd.spectroperf.accumulate"):
        U, cf = accumulate_upper(_bands_data(spectra, xp, True), wave_out, groups,
                                 targets.size, xp)
    flux, ivar, rdata = decorrelate_upper(U, cf, min_wavebin(wave_out), ndiag=ndiag, xp=xp, **kw)
    name = "".join(sorted(spectra.bands, key=lambda b: float(np.mean(to_host(spectra.wave[b])))))
    tfmap, efmap = coadd_fibermap(fm, onetile=onetile)
    ivar_h = to_host(ivar)
    mask = {name: np.where(ivar_h > 0, 0, specmask.ALLBADPIX).astype(np.int32)} \
        if spectra.mask is not None else None
    return Spectra(bands=[name], wave={name: wave_out}, flux={name: to_host(flux)},
                   ivar={name: ivar_h}, mask=mask, resolution_data={name: to_host(rdata)},
                   fibermap=tfmap, exp_fibermap=efmap, meta=copy.deepcopy(spectra.meta))
