"""Coadd across cameras (b, r, z → brz) on the union grid (desispec ``coadd_cameras``).

Non-overlapping pixels are copied; pixels present in two neighbouring bands
(within 1e-4 Å) are ivar-weighted: flux ``Σ ivar·f / Σ ivar``, ivar summed, mask
OR-ed (and cleared where ivar > 0), resolution averaged with the ivar of its row
pixel. Works on all targets at once (whole-array operations on ``xp``).
"""

from __future__ import annotations

import copy

import numpy as np

from ..backend import get_xp, to_device, to_host
from ..profiling import nvtx_range
from ..spectra import Spectra
from .plain import resolution_coadd

__all__ = ["coadd_cameras", "combined_wave"]

_TOL = 1e-4


def combined_wave(spectra, tol: float = _TOL):
    """Union of the band grids: bands sorted by mean wavelength, each band adding its pixels
    beyond the last one so far (desispec ``coadd_cameras``; pixels within ``tol`` Å shared).

    Backends: host (numpy).
    """
    wave = None
    for b in _sorted_bands(spectra):
        w = np.asarray(to_host(spectra.wave[b]), dtype=np.float64)
        wave = w.copy() if wave is None else np.append(wave, w[w > wave[-1] + tol])
    return wave


def _sorted_bands(spectra):
    return sorted(spectra.bands, key=lambda b: float(np.mean(to_host(spectra.wave[b]))))


def coadd_cameras(spectra: Spectra, backend="auto") -> Spectra:
    """Combine the bands of each spectrum into one band on the union grid.

    Parameters
    ----------
    spectra : Spectra
        Usually a coadd across exposures (one row per target); not modified.

    Returns
    -------
    Spectra
        Band ``"".join(bands sorted by wavelength)`` (e.g. ``"brz"``); host arrays;
        fibermap/exp_fibermap/scores copied. A single-band input is returned as is.

    Raises
    ------
    ValueError
        Band grids that are not aligned on a common grid.

    Backends: numpy, cupy.
    """
    bands = list(spectra.bands)
    if len(bands) == 1:
        return spectra
    xp = get_xp(backend)
    sbands = _sorted_bands(spectra)
    wave = combined_wave(spectra)
    start = _band_starts(spectra, wave)
    oflag = _overlap_flags(spectra)
    nt = spectra.flux[bands[0]].shape[0]
    acc = _Accumulator(spectra, nt, wave.size, xp)
    with nvtx_range("coadd.cameras"):
        for b in sbands:
            acc.add(spectra, b, start[b], oflag[b])
        norm_pix = np.zeros(wave.size, bool)
        for b in bands:
            norm_pix[start[b]:start[b] + spectra.wave[b].size] = oflag[b]
        flux, ivar, mask, rdata = acc.finish(xp.asarray(np.nonzero(norm_pix)[0]))
    name = "".join(sbands)
    return Spectra(bands=[name], wave={name: wave}, flux={name: to_host(flux)},
                   ivar={name: to_host(ivar)},
                   mask={name: to_host(mask)} if mask is not None else None,
                   resolution_data={name: to_host(rdata)} if rdata is not None else None,
                   fibermap=None if spectra.fibermap is None else spectra.fibermap.copy(),
                   exp_fibermap=None if spectra.exp_fibermap is None
                   else spectra.exp_fibermap.copy(),
                   meta=copy.deepcopy(spectra.meta),
                   scores=None if spectra.scores is None else spectra.scores.copy())


def _band_starts(spectra, wave):
    """Index of each band's first pixel in the union grid (ValueError if not aligned)."""
    start = {}
    for b in spectra.bands:
        w = np.asarray(to_host(spectra.wave[b]), dtype=np.float64)
        imin = int(np.argmin(np.abs(w[0] - wave)))
        if imin + w.size > wave.size or np.any(np.abs(w - wave[imin:imin + w.size]) > _TOL):
            raise ValueError(f"input wavelength grids (band {b!r}) are not aligned; resample "
                             "them to a common grid first (lin_step)")
        start[b] = imin
    return start


def _overlap_flags(spectra):
    """Pixels of each band shared with the previous or next band (desispec: in given order)."""
    bands = list(spectra.bands)
    oflag = {}
    for i, b in enumerate(bands):
        w = np.asarray(to_host(spectra.wave[b]), dtype=np.float64)
        f = np.zeros(w.size, bool)
        for j in (i - 1, i + 1):
            if 0 <= j < len(bands):
                o = np.asarray(to_host(spectra.wave[bands[j]]), dtype=np.float64)
                f |= _nearest_distance(w, o) <= _TOL
        oflag[b] = f
    return oflag


def _nearest_distance(w, o):
    """Distance from each ``w`` to the nearest value of ``o`` (sorted search: O(n log n),
    not the n × m distance table)."""
    so = np.sort(o)
    if so.size == 1:
        return np.abs(w - so[0])
    k = np.clip(np.searchsorted(so, w), 1, so.size - 1)
    return np.minimum(np.abs(w - so[k - 1]), np.abs(so[k] - w))


class _Accumulator:
    """Device sums of the camera combination: copied pixels, ivar-weighted shared ones."""

    def __init__(self, spectra, nt, nw, xp):
        self.xp = xp
        self.flux = xp.zeros((nt, nw))
        self.ivar = xp.zeros((nt, nw))
        self.mask = xp.zeros((nt, nw), dtype=np.int32) if spectra.mask is not None else None
        self.rdata = self.rnorm = None
        if spectra.resolution_data is not None:
            self.mnd = max(spectra.resolution_data[b].shape[1] for b in spectra.bands)
            self.rdata = xp.zeros((nt, self.mnd, nw))
            self.rnorm = xp.zeros((nt, self.mnd, nw))

    def add(self, spectra, b, s0, ov):
        xp = self.xp
        f = to_device(spectra.flux[b], xp, dtype=np.float64)
        iv = to_device(spectra.ivar[b], xp, dtype=np.float64)
        nox, oox = xp.asarray(np.nonzero(~ov)[0] + s0), xp.asarray(np.nonzero(ov)[0] + s0)
        ovx, noxl = xp.asarray(np.nonzero(ov)[0]), xp.asarray(np.nonzero(~ov)[0])
        self.flux[:, nox] = f[:, noxl]
        self.ivar[:, nox] = iv[:, noxl]
        self.flux[:, oox] += (iv * f)[:, ovx]
        self.ivar[:, oox] += iv[:, ovx]
        if self.mask is not None:
            m = to_device(spectra.mask[b], xp).astype(np.int32)
            self.mask[:, nox] = m[:, noxl]
            self.mask[:, oox] |= m[:, ovx]
        if self.rdata is not None:
            r = to_device(spectra.resolution_data[b], xp, dtype=np.float64)
            nd = r.shape[1]
            off = (self.mnd - nd) // 2
            racc, rn = resolution_coadd(r[:, None], iv[:, None], xp)
            self.rdata[:, off:off + nd, nox] = r[:, :, noxl]
            self.rnorm[:, off:off + nd, nox] = 1.0
            self.rdata[:, off:off + nd, oox] += racc[:, :, ovx]
            self.rnorm[:, off:off + nd, oox] += rn[:, :, ovx]

    def finish(self, npx):
        """Normalise the shared pixels ``npx``; clear the mask where ivar > 0."""
        xp = self.xp
        flux, ivar = self.flux, self.ivar
        flux[:, npx] = flux[:, npx] / (ivar[:, npx] + (ivar[:, npx] == 0))
        mask = None if self.mask is None else xp.where(ivar > 0, 0, self.mask)
        if self.rdata is not None:
            rn = self.rnorm[:, :, npx]
            self.rdata[:, :, npx] = self.rdata[:, :, npx] / (rn + (rn == 0))
        return flux, ivar, mask, self.rdata
