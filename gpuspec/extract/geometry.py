"""Extraction geometry: bundles, subbundles, wavelength patches and their pixel boxes.

Everything here is host-side bookkeeping (small integers and a few PSF trace
evaluations); the arrays it describes live on the device.

The layout follows specter's ``ex2d`` exactly, because patch boundaries move the
extracted flux by up to ~0.3σ (see ``docs/extract.md``):

* a bundle of ``bundlesize`` fibers is split into ``nsubbundles`` subbundles
  (:func:`split_bundle`); each is solved together with its neighbouring fiber on
  each side that lies inside the bundle, and only the subbundle's own fibers are
  kept;
* the wavelength grid is cut into cores of ``nwavestep`` bins; a patch solves the
  core ``[wave[iwave], wave[iwave + nwavestep - 1]]`` plus ``nlo``/``nhi`` padding
  bins (older specter versions solved ``nwavestep + 1`` core bins; the reference
  outputs match the non-overlapping cores to 1e-8σ);
* the pixel box is ``psf.xyrange`` of the solved fibers over the core wavelengths,
  extended in y by ``round(pixpad_frac · ny)`` rows (ny = spot height); the padding
  wavelengths reach ``int(wavepad_frac · ny)`` rows beyond that box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..profiling import nvtx_range
from .defaults import SPECTER

__all__ = ["split_bundle", "Patch", "plan_bundle", "resolution_halfwidth", "check_wave"]


def split_bundle(bundlesize: int, n: int):
    """Split a bundle into ``n`` subbundles (specter's partition).

    Parameters
    ----------
    bundlesize : int
        Number of fibers in the bundle.
    n : int
        Number of subbundles.

    Returns
    -------
    subbundles : list of int arrays
        Fiber indices (bundle-relative) owned by each subbundle.
    extract : list of int arrays
        Fibers solved for each subbundle: its own plus one neighbour on each side
        that exists in the bundle.

    Examples
    --------
    >>> [list(s) for s in split_bundle(10, 3)[0]]
    [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]

    Backends: host only (NumPy).
    """
    n = max(1, min(int(n), int(bundlesize)))
    sizes = [len(a) for a in np.array_split(np.arange(bundlesize), n)]
    # array_split puts the larger ones first; bubble them to the end (specter does
    # one pass of adjacent swaps, leaving the smaller subbundles in the middle)
    for i in range(n - 1):
        if sizes[i] > sizes[i + 1]:
            sizes[i], sizes[i + 1] = sizes[i + 1], sizes[i]
    own, ext = [], []
    lo = 0
    for s in sizes:
        ii = np.arange(lo, lo + s)
        lo += s
        own.append(ii)
        pre = [ii[0] - 1] if ii[0] > 0 else []
        post = [ii[-1] + 1] if ii[-1] < bundlesize - 1 else []
        ext.append(np.concatenate([np.asarray(pre, int), ii, np.asarray(post, int)]))
    return own, ext


@dataclass
class Patch:
    """One extraction patch (all indices are host ints).

    Attributes
    ----------
    speclo, spechi : int
        Absolute fibers solved, ``[speclo, spechi)``.
    keep : bool ndarray (spechi - speclo,)
        Fibers whose results are kept.
    iwave : int
        Index in the output grid of the first core bin.
    ncore : int
        Core bins solved (``nwavestep`` except for the last patch).
    nout : int
        Core bins written to the output (= ``ncore``).
    nlo, nhi : int
        Padding bins below / above the core.
    box : tuple (xlo, xhi, ylo, yhi)
        CCD pixel box used, already clipped to the image and the CCD.

    Backends: host only (plain values).
    """

    speclo: int
    spechi: int
    keep: np.ndarray
    iwave: int
    ncore: int
    nout: int
    nlo: int
    nhi: int
    box: tuple

    @property
    def nspec(self) -> int:
        """Number of fibers of the patch.

        Backends: host only (plain values).
        """
        return self.spechi - self.speclo

    @property
    def nwave(self) -> int:
        """Number of unknown wavelengths per fiber (core + padding).

        Backends: host only (plain values).
        """
        return self.nlo + self.ncore + self.nhi

    @property
    def kfirst(self) -> int:
        """Index in the output grid of the first solved bin (may be negative).

        Backends: host only (plain values).
        """
        return self.iwave - self.nlo


def check_wave(wave) -> float:
    """Validate a linear wavelength grid and return its step.

    Raises
    ------
    InputError
        Fewer than two bins, non-increasing or non-linear grid.

    Backends: host only (NumPy).
    """
    w = np.asarray(wave, dtype=np.float64)
    if w.ndim != 1 or w.size < 2:
        raise InputError("wavelength grid needs at least 2 bins")
    dw = float(w[1] - w[0])
    if not dw > 0 or not np.allclose(np.diff(w), dw):
        raise InputError("extraction supports only increasing linear wavelength grids")
    return dw


def resolution_halfwidth(psf, dw: float) -> int:
    """Number of resolution diagonals on each side of the main one (specter's rule).

    ``round(9 · wdisp / dw)`` maximised over fibers (first, middle, last) and
    wavelengths (wmin, middle, wmax), capped at half the spot size.

    Backends: host only (NumPy).
    """
    fibers = [0, psf.nspec // 2, psf.nspec - 1]
    waves = [psf.wmin, 0.5 * (psf.wmin + psf.wmax), psf.wmax]
    try:
        wd = np.asarray(psf.wdisp(fibers, waves))
        nd = int(np.max(np.round(9.0 * wd / dw)))
    except Exception:  # a PSF without wdisp: use the spot size
        nd = 10 ** 6
    return int(min(nd, psf.hsizey, psf.hsizex))


@nvtx_range("extract:plan")
def plan_bundle(psf, wave, bspecmin: int, bspecmax: int, *,
                nsubbundles: int = SPECTER.nsubbundles, nwavestep: int = SPECTER.nwavestep,
                pixpad_frac: float = SPECTER.pixpad_frac,
                wavepad_frac: float = SPECTER.wavepad_frac,
                ndiag: int | None = None, image_box=None) -> list[Patch]:
    """All patches of one bundle, in specter's order (subbundle-major, then wavelength).

    Parameters
    ----------
    psf : GaussHermitePSF
    wave : array (nwave,)
        Linear output wavelength grid.
    bspecmin, bspecmax : int
        Absolute fibers of the bundle, ``[bspecmin, bspecmax)``.
    nsubbundles, nwavestep, pixpad_frac, wavepad_frac
        specter ``ex2d`` settings (``wavesize`` = nwavestep).
    ndiag : int, optional
        Resolution half-width; the padding is never smaller. Default
        :func:`resolution_halfwidth`.
    image_box : tuple (xmin, xmax, ymin, ymax), optional
        CCD region covered by the image; boxes are clipped to it (default: the CCD).

    Returns
    -------
    list of Patch

    Backends: host only (NumPy: integers and trace evaluations).
    """
    wave = np.asarray(wave, dtype=np.float64)
    dw = check_wave(wave)
    nwave = wave.size
    if ndiag is None:
        ndiag = resolution_halfwidth(psf, dw)
    if image_box is None:
        image_box = (0, psf.npix_x, 0, psf.npix_y)
    cx0 = max(0, int(image_box[0]))
    cx1 = min(psf.npix_x, int(image_box[1]))
    cy0 = max(0, int(image_box[2]))
    cy1 = min(psf.npix_y, int(image_box[3]))
    own, ext = split_bundle(bspecmax - bspecmin, nsubbundles)
    tr = _Traces(psf, bspecmin, bspecmax, wave)
    patches = []
    for ii_own, ii_ext in zip(own, ext):
        speclo = bspecmin + int(ii_ext[0])
        spechi = bspecmin + int(ii_ext[-1]) + 1
        keep = np.isin(ii_ext, ii_own)
        for iwave in range(0, nwave, nwavestep):
            wlo = wave[iwave]
            if iwave + nwavestep < nwave:
                whi = wave[iwave + nwavestep - 1]
                ncore = nwavestep
            else:
                whi = wave[-1]
                ncore = nwave - iwave
            xlo, xhi, ylo, yhi = tr.xyrange(speclo, spechi, wlo, whi)
            ny = tr.spot_height(speclo, wlo)
            extra = int(round(pixpad_frac * ny))
            ylo -= extra
            yhi += extra
            wpad = int(ny * wavepad_frac)
            wmin = tr.wavelength(speclo, ylo - wpad)
            wmax = tr.wavelength(speclo, yhi + wpad)
            nlo = max(int((wlo - wmin) / dw) - 1, ndiag)
            nhi = max(int((wmax - whi) / dw) - 1, ndiag)
            box = (max(xlo, cx0), min(xhi, cx1), max(ylo, cy0), min(yhi, cy1))
            if box[1] <= box[0] or box[3] <= box[2]:
                raise InputError(f"fibers {speclo}-{spechi - 1} at {wlo:.1f}-{whi:.1f} A fall "
                                 f"outside the image region {tuple(image_box)}")
            patches.append(Patch(speclo, spechi, keep, iwave, ncore, ncore, nlo, nhi, box))
    return patches


class _Traces:
    """Cached trace geometry of a bundle: ``psf.xyrange``, spot heights and
    ``psf.wavelength`` at CCD rows, with specter's semantics but without evaluating
    spots (a spot's pixel slice is its corner ``floor(X - HSIZE + 0.5)`` plus its size,
    clipped to the CCD).

    The trace x and y of the bundle's fibers are tabulated once at the wavelength of
    every CCD row and at every wavelength of ``wave`` (the output grid, where patch cores
    begin and end); other wavelengths are evaluated on demand. The series are evaluated
    element by element, so a table entry is the value ``psf.x``/``psf.y`` returns.
    """

    def __init__(self, psf, fmin, fmax, wave=None):
        self.psf = psf
        self.fmin = fmin
        self.nx = 2 * psf.hsizex + 1
        self.ny = 2 * psf.hsizey + 1
        fib = np.arange(fmin, fmax)
        grid = np.zeros(0) if wave is None else np.asarray(wave, dtype=np.float64)
        self._col = {float(w): i for i, w in enumerate(grid)}
        self.xgrid = np.asarray(psf.x(fib, grid)) if grid.size else None
        self.ygrid = np.asarray(psf.y(fib, grid)) if grid.size else None
        # rows tabulated: every row whose wavelength can lie on the grid, with margin
        # for the padded boxes (other rows are evaluated on demand)
        r0, r1 = 0, psf.npix_y
        if grid.size:
            pad = 4 * self.ny
            r0 = max(0, min(r1, int(np.floor(self.ygrid.min())) - pad))
            r1 = max(r0, min(r1, int(np.ceil(self.ygrid.max())) + pad))
        self.row0 = r0
        self.rows = np.arange(r0, r1, dtype=np.float64)
        self.wrows = np.asarray(psf.wavelength(fib, self.rows))
        self.xrows = np.asarray(psf.x(fib, self.wrows))
        self.yrows = np.asarray(psf.y(fib, self.wrows))

    def _xy(self, fibers, w):
        """(x, y) of the traces of ``fibers`` (absolute, array) at one wavelength."""
        i = self._col.get(float(w))
        if i is not None:
            f = np.asarray(fibers) - self.fmin
            return self.xgrid[f, i], self.ygrid[f, i]
        return (np.asarray(self.psf.x(fibers, [w]))[:, 0],
                np.asarray(self.psf.y(fibers, [w]))[:, 0])

    def _slices_at(self, x, y):
        """(x0, x1, y0, y1) of specter's ``xypix`` slices of a spot centred at (x, y)
        (all 0 when off the CCD)."""
        psf = self.psf
        xc = int(np.floor(float(x) - psf.hsizex + 0.5))
        yc = int(np.floor(float(y) - psf.hsizey + 0.5))
        if (xc >= psf.npix_x or xc + self.nx <= 0 or yc >= psf.npix_y or yc + self.ny <= 0):
            return 0, 0, 0, 0
        return (max(xc, 0), min(xc + self.nx, psf.npix_x), max(yc, 0),
                min(yc + self.ny, psf.npix_y))

    def _slices(self, fiber, w):
        """(x0, x1, y0, y1) of specter's ``xypix(fiber, w)`` slices (all 0 when off the CCD)."""
        x, y = self._xy([fiber], w)
        return self._slices_at(x[0], y[0])

    def spot_height(self, fiber, w) -> int:
        """Rows of the spot of ``fiber`` at ``w`` on the CCD (specter ``psf.pix(...).shape[0]``)."""
        s = self._slices(fiber, w)
        return (s[3] - s[2]) or self.ny

    def wavelength(self, fiber, y) -> float:
        """``psf.wavelength(fiber, y)`` (table lookup for rows on the CCD)."""
        y = int(y)
        if self.row0 <= y < self.row0 + self.wrows.shape[1]:
            return float(self.wrows[fiber - self.fmin, y - self.row0])
        return float(np.asarray(self.psf.wavelength([fiber], [float(y)]))[0, 0])

    def _trace_between(self, fiber, wlo, whi):
        """Wavelengths, x and y of ``fiber``'s trace at ``wlo``, ``whi`` and every CCD row
        between them, sorted by wavelength (specter's sampling of ``xyrange``)."""
        k = fiber - self.fmin
        ww = self.wrows[k]
        sel = (ww >= wlo) & (ww <= whi)
        xe, ye = zip(*(self._xy([fiber], w) for w in (wlo, whi)))
        w = np.concatenate([ww[sel], [wlo, whi]])
        x = np.concatenate([self.xrows[k][sel], np.concatenate(xe)])
        y = np.concatenate([self.yrows[k][sel], np.concatenate(ye)])
        o = np.argsort(w, kind="stable")
        return w[o], x[o], y[o]

    def xyrange(self, specmin, specmax, wlo, whi):
        """``psf.xyrange((specmin, specmax), (wlo, whi))``."""
        fib = np.arange(specmin, specmax)
        xlo_, ylo = self._xy(fib, wlo)
        xhi_, yhi = self._xy(fib, whi)
        a, b = int(np.argmin(ylo)), int(np.argmax(yhi))
        ymin = self._slices_at(xlo_[a], ylo[a])[2]
        ymax = self._slices_at(xhi_[b], yhi[b])[3]
        _, xa, ya = self._trace_between(specmin, wlo, whi)
        i = int(np.argmin(xa))
        xmin = self._slices_at(xa[i], ya[i])[0]
        _, xb, yb = self._trace_between(specmax - 1, wlo, whi)
        i = int(np.argmax(xb))
        xmax = self._slices_at(xb[i], yb[i])[1]
        return int(xmin), int(xmax), int(ymin), int(ymax)
